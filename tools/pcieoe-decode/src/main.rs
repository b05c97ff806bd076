// SPDX-License-Identifier: GPL-2.0

//! pcieoe-decode: prints PCIeoE frames and TLPs field by field.

fn main() {
    eprintln!("pcieoe-decode: not implemented yet");
    std::process::exit(2);
}
