// SPDX-License-Identifier: GPL-2.0

//! Runs the pcieoe-decode binary on fixtures.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use pcieoe::ethertype::EtherType;
use pcieoe::frame::{EthHeader, FrameBuilder, Header, Kind, Pcp, Vlan, DEFAULT_MTU};
use pcieoe::tlp::{Bdf, CompletionStatus, Tag, Tlp};

const BIN: &str = env!("CARGO_BIN_EXE_pcieoe-decode");

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn text_output_matches_fixture() {
    let out = run(&[], &fixture("tlps.txt"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), fixture("tlps.out"));
    let text = stdout(&out);
    assert!(text.contains("line 15: truncated TLP: need 12 bytes, have 6\n"));
    assert!(text.contains("line 17: unsupported: I/O request\n"));
    assert!(text.contains("line 19: invalid hex digit 'z'\n"));
}

#[test]
fn json_output_matches_fixture() {
    let out = run(&["--json"], &fixture("tlps.txt"));
    assert_eq!(out.status.code(), Some(1));
    let json = stdout(&out);
    assert_eq!(json, fixture("tlps.json"));
    let first = json.lines().next().unwrap();
    assert_eq!(
        first,
        "{\"line\":3,\"kind\":\"MRd\",\"fmt\":0,\"type\":0,\"tc\":0,\"attr\":0,\
         \"th\":false,\"td\":false,\"ep\":false,\"at\":0,\"length\":16,\
         \"requester_id\":\"01:00.0\",\"tag\":18,\"first_be\":15,\"last_be\":15,\
         \"address\":\"0x10000000\",\"payload\":\"\"}"
    );
    assert!(json.contains("{\"line\":15,\"error\":\"truncated TLP: need 12 bytes, have 6\"}"));
}

#[test]
fn valid_input_exits_zero() {
    let valid: String = fixture("tlps.txt")
        .lines()
        .take(13)
        .map(|l| format!("{l}\n"))
        .collect();
    let out = run(&[], &valid);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = run(&[], "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn every_tlp_the_codec_emits_decodes() {
    let data = [0x11u8; 8];
    let tlps = [
        Tlp::mem_read(
            Bdf::from_raw(0x0100),
            Tag::new(513).unwrap(),
            0x1_0000_0000,
            2,
            0xf,
            0xf,
        ),
        Tlp::mem_write(Bdf::from_raw(0x0100), 0x2000, 0xf, 0xf, &data),
        Tlp::cfg_write(
            Bdf::default(),
            Tag::from(3),
            Bdf::from_raw(0x0100),
            1,
            0x6,
            &[0, 6, 0, 0],
        ),
        Tlp::completion(
            Bdf::from_raw(0x0100),
            CompletionStatus::ConfigRetry,
            Bdf::default(),
            Tag::from(4),
            4,
            0,
            &[],
        ),
    ];
    let mut input = String::new();
    for t in &tlps {
        let mut buf = [0u8; 64];
        let n = t.emit(&mut buf).unwrap();
        input.push_str(&hex(&buf[..n]));
        input.push('\n');
    }
    let out = run(&["--json"], &input);
    assert_eq!(out.status.code(), Some(0));
    let json = stdout(&out);
    assert!(json.contains("\"kind\":\"MRd\",\"fmt\":1"));
    assert!(json.contains("\"tag\":513"));
    assert!(json.contains("\"address\":\"0x100000000\""));
    assert!(json.contains("\"kind\":\"CfgWr0\""));
    assert!(json.contains("\"status\":\"CRS\""));
}

fn eth() -> EthHeader {
    EthHeader {
        dst: [0x02, 0, 0, 0, 0, 1],
        src: [0x02, 0, 0, 0, 0, 2],
        vlan: Vlan::new(Pcp::new(3).unwrap(), 10),
        ethertype: EtherType::default(),
    }
}

fn data_frame(items: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut header = Header::new(Kind::Data);
    header.seq = 7;
    let mut b = FrameBuilder::new(&mut buf, &eth(), &header, DEFAULT_MTU).unwrap();
    for item in items {
        b.push(item).unwrap();
    }
    let n = b.finish();
    buf.truncate(n);
    buf
}

fn tlp_bytes(t: &Tlp<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; t.buffer_len()];
    t.emit(&mut buf).unwrap();
    buf
}

#[test]
fn frames_mode() {
    let rd = tlp_bytes(&Tlp::cfg_read(
        Bdf::default(),
        Tag::from(1),
        Bdf::from_raw(0x0100),
        0,
        0xf,
    ));
    let intx = tlp_bytes(&Tlp::intx(
        Bdf::from_raw(0x0100),
        pcieoe::tlp::IntxPin::A,
        true,
    ));
    let frame = data_frame(&[&rd, &intx]);
    let out = run(&["--frames"], &format!("{}\n", hex(&frame)));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("frame_kind          Data"), "{text}");
    assert!(text.contains("vid                 10"));
    assert!(text.contains("seq                 7"));
    assert!(
        text.contains("tlp 1:\n    kind                CfgRd0"),
        "{text}"
    );
    assert!(text.contains("tlp 2:\n    kind                Msg"));

    let out = run(&["--frames", "--json"], &format!("{}\n", hex(&frame)));
    let json = stdout(&out);
    assert!(
        json.starts_with("{\"line\":1,\"dst\":\"02:00:00:00:00:01\""),
        "{json}"
    );
    assert!(json.contains("\"tlp\":[{\"kind\":\"CfgRd0\""));

    // A frame whose TLP is malformed, and a frame of another Ethertype.
    let bad = data_frame(&[&[0x00, 0, 0, 1, 0, 0]]);
    let mut ipv4 = frame.clone();
    ipv4[16..18].copy_from_slice(&[0x08, 0x00]);
    let input = format!("{}\n{}\n{}\n", hex(&bad), hex(&ipv4), hex(&frame[..30]));
    let out = run(&["--frames"], &input);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("error               truncated TLP: need 12 bytes, have 6"),
        "{text}"
    );
    assert!(
        text.contains("line 2: Ethertype 0x0800 is not PCIeoE"),
        "{text}"
    );
    assert!(text.contains("line 3: frame truncated"), "{text}");
}

fn pcap(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes());
        out.extend_from_slice(&250u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pcieoe-decode-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn pcap_mode() {
    let data = [0xabu8; 4];
    let wr = tlp_bytes(&Tlp::mem_write(
        Bdf::from_raw(0x0100),
        0xfee0_0000,
        0xf,
        0,
        &data,
    ));
    let frame = data_frame(&[&wr]);
    let mut arp = frame.clone();
    arp[16..18].copy_from_slice(&[0x08, 0x06]);
    let file = pcap(&[&frame, &arp, &frame]);
    let path = temp_file("ok.pcap", &file);
    let out = run(&["--pcap", path.to_str().unwrap(), "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let json = stdout(&out);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 2, "{json}");
    assert!(
        lines[0].starts_with("{\"packet\":1,\"time\":\"1700000000.000250\""),
        "{json}"
    );
    assert!(lines[1].starts_with("{\"packet\":3,"));
    assert!(lines[0].contains("\"kind\":\"MWr\""));
    assert!(lines[0].contains("\"payload\":\"abababab\""));

    // A truncated last record is reported, the rest still decoded.
    let cut = &file[..file.len() - 5];
    let path2 = temp_file("cut.pcap", cut);
    let out = run(&["--pcap", path2.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("packet 3: pcap: record of"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("packet 1:\n  time"));

    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path2);
}

#[test]
fn usage_errors() {
    let out = run(&["--bogus"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--pcap", "/nonexistent/file.pcap"], "");
    assert_eq!(out.status.code(), Some(2));
    let path = temp_file("bad.pcap", b"not a pcap file at all, sorry");
    let out = run(&["--pcap", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad magic"));
    let _ = std::fs::remove_file(path);
    let out = run(&["--ethertype", "0x0800"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--help"], "");
    assert_eq!(out.status.code(), Some(0));
}
