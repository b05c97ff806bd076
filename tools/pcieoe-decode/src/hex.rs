// SPDX-License-Identifier: GPL-2.0

//! Hex text to bytes and back.

use std::fmt::Write as _;

/// Parses a line of hex bytes. Bytes are pairs of hex digits; pairs may
/// run together or be separated by whitespace or colons. A `#` starts a
/// comment that runs to the end of the line.
pub fn parse(line: &str) -> Result<Vec<u8>, String> {
    let text = line.split('#').next().unwrap_or("");
    let mut bytes = Vec::new();
    for token in text.split(|c: char| c.is_whitespace() || c == ':') {
        if token.is_empty() {
            continue;
        }
        if token.len() % 2 != 0 {
            return Err(format!("invalid hex: odd number of digits in \"{token}\""));
        }
        let digits = token.as_bytes();
        for pair in digits.chunks(2) {
            let hi = digit(pair[0])?;
            let lo = digit(pair[1])?;
            bytes.push((hi << 4) | lo);
        }
    }
    Ok(bytes)
}

fn digit(c: u8) -> Result<u8, String> {
    (c as char)
        .to_digit(16)
        .map(|d| d as u8)
        .ok_or_else(|| format!("invalid hex digit {:?}", c as char))
}

/// Whether a line holds nothing but whitespace and a comment.
pub fn is_blank(line: &str) -> bool {
    line.split('#').next().unwrap_or("").trim().is_empty()
}

/// Bytes as lower-case hex without separators.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_comments() {
        assert_eq!(parse("00 01:0a0B  ff # x"), Ok(vec![0, 1, 10, 11, 255]));
        assert_eq!(parse(""), Ok(vec![]));
        assert!(parse("0 1").is_err());
        assert!(parse("zz").is_err());
        assert!(is_blank("  # comment"));
        assert_eq!(encode(&[0xde, 0xad]), "dead");
    }
}
