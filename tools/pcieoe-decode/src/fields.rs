// SPDX-License-Identifier: GPL-2.0

//! Decoded TLPs and frames as lists of named fields, printed as text or
//! JSON. Field names follow the PCIe Base Specification.

use std::fmt::Write as _;

use pcieoe::tlp::{Kind, MessageCode, Packet, Routing, Tlp};

use super::hex;

/// A field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A number.
    Num(u64),
    /// A bit field of this width: binary in text, a number in JSON.
    Bits(u64, usize),
    /// A number shown in hex: a string in JSON (64-bit addresses do not
    /// fit a JSON number exactly).
    Hex(u64),
    /// A flag.
    Bool(bool),
    /// Text.
    Str(String),
    /// Bytes, as hex.
    Bytes(Vec<u8>),
    /// A list of records (the TLPs of a frame).
    List(Vec<Fields>),
}

/// A record: named fields in print order.
pub type Fields = Vec<(&'static str, Val)>;

/// The name the specification gives a message code.
fn message_name(code: MessageCode) -> String {
    let pin = |p: pcieoe::tlp::IntxPin| format!("{p:?}");
    match code {
        MessageCode::Unlock => "Unlock".into(),
        MessageCode::Ltr => "LTR".into(),
        MessageCode::Obff => "OBFF".into(),
        MessageCode::PmActiveStateNak => "PM_Active_State_Nak".into(),
        MessageCode::PmPme => "PM_PME".into(),
        MessageCode::PmeTurnOff => "PME_Turn_Off".into(),
        MessageCode::PmeToAck => "PME_TO_Ack".into(),
        MessageCode::AssertIntx(p) => format!("Assert_INT{}", pin(p)),
        MessageCode::DeassertIntx(p) => format!("Deassert_INT{}", pin(p)),
        MessageCode::ErrCor => "ERR_COR".into(),
        MessageCode::ErrNonFatal => "ERR_NONFATAL".into(),
        MessageCode::ErrFatal => "ERR_FATAL".into(),
        MessageCode::SetSlotPowerLimit => "Set_Slot_Power_Limit".into(),
        MessageCode::PtmRequest => "PTM_Request".into(),
        MessageCode::PtmResponse => "PTM_Response".into(),
        MessageCode::VendorDefinedType0 => "Vendor_Defined_Type_0".into(),
        MessageCode::VendorDefinedType1 => "Vendor_Defined_Type_1".into(),
        MessageCode::Unknown(raw) => format!("unknown {raw:#04x}"),
    }
}

/// The fields of a decoded TLP. `packet` is the checked view it was
/// parsed from.
pub fn tlp(packet: &Packet<&[u8]>, t: &Tlp<'_>) -> Fields {
    use Val::*;
    let mut f: Fields = vec![
        ("kind", Str(t.name().into())),
        ("fmt", Bits(packet.fmt().into(), 3)),
        ("type", Bits(packet.ty().into(), 5)),
        ("tc", Num(t.tc.into())),
        ("attr", Bits(t.attr.bits().into(), 3)),
    ];
    if let Kind::MemRead(r) | Kind::MemWrite(r) = &t.kind {
        f.push(("th", Bool(r.ph.is_some())));
    }
    f.push(("td", Bool(t.digest.is_some())));
    f.push(("ep", Bool(t.ep)));
    if let Kind::MemRead(_) | Kind::MemWrite(_) = &t.kind {
        f.push(("at", Bits(t.at.bits().into(), 2)));
    }
    f.push(("length", Num(t.length_dw().into())));
    match &t.kind {
        Kind::MemRead(r) | Kind::MemWrite(r) => {
            f.push(("requester_id", Str(r.requester.to_string())));
            f.push(("tag", Num(r.tag.get().into())));
            f.push(("first_be", Bits(r.first_be.into(), 4)));
            f.push(("last_be", Bits(r.last_be.into(), 4)));
            f.push(("address", Hex(r.address)));
            if let Some(ph) = r.ph {
                f.push(("ph", Bits(ph.into(), 2)));
            }
        }
        Kind::CfgRead(c) | Kind::CfgWrite(c) => {
            f.push(("requester_id", Str(c.requester.to_string())));
            f.push(("tag", Num(c.tag.get().into())));
            f.push(("first_be", Bits(c.first_be.into(), 4)));
            f.push(("last_be", Bits(0, 4)));
            f.push(("completer_id", Str(c.target.to_string())));
            f.push(("ext_register_number", Num((c.register >> 6).into())));
            f.push(("register_number", Num((c.register & 0x3f).into())));
            f.push(("offset", Hex(c.offset().into())));
        }
        Kind::Completion(c) => {
            f.push(("completer_id", Str(c.completer.to_string())));
            f.push(("status", Str(c.status.to_string())));
            f.push(("bcm", Bool(c.bcm)));
            f.push(("byte_count", Num(c.byte_count.into())));
            f.push(("requester_id", Str(c.requester.to_string())));
            f.push(("tag", Num(c.tag.get().into())));
            f.push(("lower_address", Num(c.lower_address.into())));
        }
        Kind::Message(m) => {
            f.push(("requester_id", Str(m.requester.to_string())));
            f.push(("tag", Num(m.tag.get().into())));
            f.push(("routing", Bits(u8::from(m.routing).into(), 3)));
            f.push(("message_code", Hex(u8::from(m.code).into())));
            f.push(("message", Str(message_name(m.code))));
            match m.routing {
                Routing::ByAddress => f.push(("address", Hex(m.address()))),
                Routing::ById => f.push(("target_id", Str(m.target().to_string()))),
                _ => {}
            }
            if m.code.is_vendor_defined() {
                f.push(("vendor_id", Hex(m.vendor_id().into())));
                f.push(("vendor_data", Hex(m.vendor_data().into())));
            }
        }
    }
    if let Some(d) = t.digest {
        f.push(("digest", Hex(d.into())));
    }
    f.push(("payload", Bytes(t.payload.to_vec())));
    f
}

/// JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One JSON object, on one line.
pub fn json(fields: &[(&'static str, Val)]) -> String {
    let mut out = String::from("{");
    for (i, (name, val)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_str(name));
        out.push(':');
        match val {
            Val::Num(n) | Val::Bits(n, _) => {
                let _ = write!(out, "{n}");
            }
            Val::Hex(n) => out.push_str(&json_str(&format!("{n:#x}"))),
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Str(s) => out.push_str(&json_str(s)),
            Val::Bytes(b) => out.push_str(&json_str(&hex::encode(b))),
            Val::List(items) => {
                out.push('[');
                let parts: Vec<String> = items.iter().map(|r| json(r)).collect();
                out.push_str(&parts.join(","));
                out.push(']');
            }
        }
    }
    out.push('}');
    out
}

/// Text, one field a line, indented by `indent` spaces.
pub fn text(fields: &[(&'static str, Val)], indent: usize) -> String {
    let mut out = String::new();
    let pad = " ".repeat(indent);
    for (name, val) in fields {
        match val {
            Val::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let _ = writeln!(out, "{pad}{name} {}:", i + 1);
                    out.push_str(&text(item, indent + 2));
                }
                continue;
            }
            Val::Bytes(b) if b.is_empty() => continue,
            _ => {}
        }
        let _ = write!(out, "{pad}{name:<20}");
        match val {
            Val::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Bits(n, width) => {
                let _ = write!(out, "{n:0width$b}");
            }
            Val::Hex(n) => {
                let _ = write!(out, "{n:#x}");
            }
            Val::Bool(b) => {
                let _ = write!(out, "{}", u8::from(*b));
            }
            Val::Str(s) => out.push_str(s),
            Val::Bytes(b) => {
                for (i, chunk) in b.chunks(16).enumerate() {
                    if i > 0 {
                        let _ = write!(out, "\n{pad}{:<20}", "");
                    }
                    let words: Vec<String> = chunk.chunks(4).map(hex::encode).collect();
                    out.push_str(&words.join(" "));
                }
            }
            Val::List(_) => {}
        }
        out.push('\n');
    }
    out
}
