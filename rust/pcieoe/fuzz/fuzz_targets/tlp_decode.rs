// SPDX-License-Identifier: GPL-2.0

//! Untrusted bytes through the TLP decoder: it must never panic, and
//! whatever it accepts must survive emit and decode again unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pcieoe::tlp::{Packet, Tlp, MAX_TLP_LEN};

fuzz_target!(|data: &[u8]| {
    // The checked view alone: every accessor is safe once it accepted.
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.header_len(), p.data_len(), p.total_len(), p.digest());
        let _ = (p.requester_id(), p.tag(), p.first_be(), p.last_be());
        let _ = p.needs_completion();
    }
    let Ok(tlp) = Tlp::decode(data) else {
        return;
    };
    let _ = tlp.name();
    let mut buf = [0xa5u8; MAX_TLP_LEN];
    let len = tlp
        .emit(&mut buf)
        .unwrap_or_else(|e| panic!("decoded TLP does not emit: {e} ({tlp:?})"));
    assert_eq!(len, tlp.buffer_len());
    let again = Tlp::decode(&buf[..len])
        .unwrap_or_else(|e| panic!("emitted TLP does not decode: {e} ({tlp:?})"));
    assert_eq!(again, tlp);
});
