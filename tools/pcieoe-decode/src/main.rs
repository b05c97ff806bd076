// SPDX-License-Identifier: GPL-2.0

//! pcieoe-decode: prints PCIe TLPs and PCIeoE frames field by field.
//!
//! Reads hex lines from standard input: one TLP a line, or with `--frames`
//! one Ethernet frame a line (destination MAC first, no FCS). With
//! `--pcap FILE` it reads the frames of a classic libpcap capture instead
//! and decodes those of the PCIeoE Ethertype. Prints each TLP field by
//! field, or one JSON object a line with `--json`. Input that does not
//! decode gets a line saying why, and decoding goes on; the exit status is
//! 1 if any input was invalid, 0 otherwise (2 for usage errors).

mod fields;
mod hex;
mod pcap;

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use pcieoe::ethertype::EtherType;
use pcieoe::frame::{flags, Frame, Kind as FrameKind};
use pcieoe::tlp::{Packet, Tlp};

use fields::{Fields, Val};

const USAGE: &str = "\
usage: pcieoe-decode [--json] [--frames] [--pcap FILE] [--ethertype N]

Decodes PCI Express TLPs, one hex-encoded TLP per line of standard input
(bytes as hex digit pairs, optionally separated by spaces or colons; '#'
starts a comment).

  --json          one JSON object per line instead of text
  --frames        each line is a whole Ethernet frame carrying PCIeoE
  --pcap FILE     read Ethernet frames from a classic libpcap file
  --ethertype N   the PCIeoE Ethertype (default 0x88b5)
  -h, --help      this text

Exit status: 0 if everything decoded, 1 if any input was invalid,
2 for usage errors.";

/// What to read and how to print.
struct Options {
    json: bool,
    frames: bool,
    pcap: Option<String>,
    ethertype: EtherType,
}

fn parse_number(s: &str) -> Option<u16> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        json: false,
        frames: false,
        pcap: None,
        ethertype: EtherType::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--frames" => opts.frames = true,
            "--pcap" => opts.pcap = Some(args.next().ok_or("--pcap needs a file name")?),
            "--ethertype" => {
                let v = args.next().ok_or("--ethertype needs a value")?;
                let n = parse_number(&v).ok_or_else(|| format!("bad Ethertype {v:?}"))?;
                opts.ethertype = EtherType::new(n).map_err(|e| e.to_string())?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// Decodes one TLP into fields.
fn decode_tlp(bytes: &[u8]) -> Result<Fields, String> {
    let packet = Packet::new_checked(bytes).map_err(|e| e.to_string())?;
    let tlp = Tlp::parse(&packet).map_err(|e| e.to_string())?;
    Ok(fields::tlp(&packet, &tlp))
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn flag_names(f: u16) -> String {
    let names = [
        (flags::ACK, "ACK"),
        (flags::NAK, "NAK"),
        (flags::CREDIT, "CREDIT"),
        (flags::PROBE, "PROBE"),
        (flags::REPLAY, "REPLAY"),
        (flags::REPLY, "REPLY"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "(none)".into()
    } else {
        set.join("|")
    }
}

/// What became of a frame.
enum Decoded {
    /// Its fields, and whether all its TLPs decoded.
    Frame(Fields, bool),
    /// Another Ethertype than PCIeoE's.
    Other(u16),
}

/// Decodes one Ethernet frame into fields.
fn decode_frame(bytes: &[u8], ethertype: EtherType) -> Result<Decoded, String> {
    use Val::*;
    let frame = match Frame::new_checked(bytes, ethertype) {
        Ok(f) => f,
        Err(pcieoe::frame::Error::WrongEthertype(t)) => return Ok(Decoded::Other(t)),
        Err(e) => return Err(e.to_string()),
    };
    let eth = frame.eth();
    let h = frame.header();
    let c = &h.credits;
    let mut f: Fields = vec![("dst", Str(mac(&eth.dst))), ("src", Str(mac(&eth.src)))];
    if let Some(vlan) = eth.vlan {
        f.push(("vid", Num(vlan.vid().into())));
        f.push(("pcp", Num(vlan.pcp().get().into())));
    }
    f.extend([
        ("ethertype", Hex(eth.ethertype.get().into())),
        ("frame_kind", Str(format!("{:?}", h.kind))),
        (
            "flags",
            Str(format!("{:#06x} {}", h.flags, flag_names(h.flags))),
        ),
        ("epoch", Num(h.epoch.into())),
        ("seq", Num(h.seq.into())),
        ("ack", Num(h.ack.into())),
        ("nak", Num(h.nak.into())),
        (
            "credits",
            Str(format!(
                "PH {} PD {} NPH {} NPD {} CPLH {} CPLD {}",
                c.posted.header,
                c.posted.data,
                c.non_posted.header,
                c.non_posted.data,
                c.completion.header,
                c.completion.data
            )),
        ),
        ("count", Num(h.count.into())),
    ]);
    let mut ok = true;
    if h.kind == FrameKind::Data {
        let tlps = frame
            .pdu()
            .items()
            .map(|item| {
                decode_tlp(item).unwrap_or_else(|e| {
                    ok = false;
                    vec![("error", Str(e)), ("bytes", Bytes(item.to_vec()))]
                })
            })
            .collect();
        f.push(("tlp", List(tlps)));
    } else if let Some(body) = frame.pdu().body() {
        f.push(("body", Bytes(body.to_vec())));
    }
    Ok(Decoded::Frame(f, ok))
}

/// Prints a decoded record or an error for input number `n`.
struct Printer<'a> {
    out: io::StdoutLock<'a>,
    json: bool,
    what: &'static str,
}

impl Printer<'_> {
    fn record(&mut self, n: usize, mut f: Fields) -> io::Result<()> {
        if self.json {
            f.insert(0, (self.what, Val::Num(n as u64)));
            writeln!(self.out, "{}", fields::json(&f))
        } else {
            writeln!(self.out, "{} {n}:", self.what)?;
            write!(self.out, "{}", fields::text(&f, 2))
        }
    }

    fn error(&mut self, n: usize, e: &str) -> io::Result<()> {
        if self.json {
            let f = vec![
                (self.what, Val::Num(n as u64)),
                ("error", Val::Str(e.into())),
            ];
            writeln!(self.out, "{}", fields::json(&f))
        } else {
            writeln!(self.out, "{} {n}: {e}", self.what)
        }
    }
}

/// Decodes one input (a TLP or a frame); returns whether it was valid.
///
/// `time` is the capture timestamp of a pcap record.
fn decode_one(
    p: &mut Printer<'_>,
    n: usize,
    bytes: &[u8],
    time: Option<String>,
    opts: &Options,
) -> io::Result<bool> {
    if !opts.frames && opts.pcap.is_none() {
        return match decode_tlp(bytes) {
            Ok(f) => p.record(n, f).map(|_| true),
            Err(e) => p.error(n, &e).map(|_| false),
        };
    }
    match decode_frame(bytes, opts.ethertype) {
        Ok(Decoded::Frame(mut f, ok)) => {
            if let Some(t) = time {
                f.insert(0, ("time", Val::Str(t)));
            }
            p.record(n, f).map(|_| ok)
        }
        // Other traffic in a capture is skipped; a hex line is meant to be
        // a PCIeoE frame.
        Ok(Decoded::Other(_)) if opts.pcap.is_some() => Ok(true),
        Ok(Decoded::Other(t)) => p
            .error(n, &format!("Ethertype {t:#06x} is not PCIeoE"))
            .map(|_| false),
        Err(e) => p.error(n, &e).map(|_| false),
    }
}

fn run(opts: &Options) -> io::Result<Result<bool, String>> {
    let stdout = io::stdout();
    let mut p = Printer {
        out: stdout.lock(),
        json: opts.json,
        what: if opts.pcap.is_some() {
            "packet"
        } else {
            "line"
        },
    };
    let mut all_ok = true;
    if let Some(path) = &opts.pcap {
        let file = match std::fs::read(path) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("{path}: {e}"))),
        };
        let cap = match pcap::Capture::new(&file) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("{path}: {e}"))),
        };
        if cap.linktype != pcap::LINKTYPE_ETHERNET {
            return Ok(Err(format!(
                "{path}: link type {} is not Ethernet",
                cap.linktype
            )));
        }
        for (i, rec) in cap.enumerate() {
            let n = i + 1;
            match rec {
                Ok(r) if r.data.len() < r.orig_len as usize => {
                    let e = format!(
                        "captured {} of {} bytes (snap length too small)",
                        r.data.len(),
                        r.orig_len
                    );
                    p.error(n, &e)?;
                    all_ok = false;
                }
                Ok(r) => {
                    let time = if r.nanos {
                        format!("{}.{:09}", r.sec, r.frac)
                    } else {
                        format!("{}.{:06}", r.sec, r.frac)
                    };
                    all_ok &= decode_one(&mut p, n, r.data, Some(time), opts)?;
                }
                Err(e) => {
                    p.error(n, &e)?;
                    all_ok = false;
                }
            }
        }
        return Ok(Ok(all_ok));
    }
    for (i, line) in io::stdin().lock().lines().enumerate() {
        let n = i + 1;
        let line = line?;
        if hex::is_blank(&line) {
            continue;
        }
        match hex::parse(&line) {
            Ok(bytes) => all_ok &= decode_one(&mut p, n, &bytes, None, opts)?,
            Err(e) => {
                p.error(n, &e)?;
                all_ok = false;
            }
        }
    }
    Ok(Ok(all_ok))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pcieoe-decode: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::from(1),
        Ok(Err(e)) => {
            eprintln!("pcieoe-decode: {e}");
            ExitCode::from(2)
        }
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcieoe-decode: {e}");
            ExitCode::from(2)
        }
    }
}
