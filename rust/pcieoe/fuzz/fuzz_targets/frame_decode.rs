// SPDX-License-Identifier: GPL-2.0

//! Untrusted bytes through the frame parsers: no panic on any input; a
//! header that parses emits back to the same fields; every item of an
//! accepted frame goes through the TLP decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pcieoe::ethertype::EtherType;
use pcieoe::frame::{EthHeader, Frame, Header, Pdu, HEADER_LEN};
use pcieoe::tlp::Tlp;

fuzz_target!(|data: &[u8]| {
    if let Ok((eth, off)) = EthHeader::parse(data) {
        assert_eq!(off, eth.len());
        let mut buf = [0xa5u8; 32];
        let n = eth.emit(&mut buf).expect("parsed Ethernet header emits");
        assert_eq!(EthHeader::parse(&buf[..n]).map(|(e, _)| e), Ok(eth));
    }
    if let Ok(h) = Header::parse(data) {
        let mut buf = [0xa5u8; HEADER_LEN];
        h.emit(&mut buf).expect("parsed header emits");
        assert_eq!(Header::parse(&buf), Ok(h));
    }
    if let Ok(pdu) = Pdu::new_checked(data) {
        let h = pdu.header();
        assert_eq!(pdu.items().count(), usize::from(h.count));
        assert_eq!(pdu.item_area().len(), usize::from(h.item_bytes));
    }
    let ethertype = EtherType::default();
    if let Ok(frame) = Frame::new_checked(data, ethertype) {
        let _ = frame.eth();
        for item in frame.pdu().items() {
            let _ = Tlp::decode(item);
        }
    }
});
