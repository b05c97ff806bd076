// SPDX-License-Identifier: GPL-2.0

//! A reader for classic libpcap capture files (not pcapng).
//!
//! The file is a 24-byte global header (magic number 0xa1b2c3d4 for
//! microsecond or 0xa1b23c4d for nanosecond timestamps, written in the
//! capturing machine's byte order; version; time zone; accuracy; snap
//! length; link type) followed by records, each a 16-byte header (seconds,
//! sub-seconds, captured length, original length) and the captured bytes.

/// Link type of Ethernet captures (`LINKTYPE_ETHERNET`).
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured packet.
pub struct Record<'a> {
    /// Timestamp seconds.
    pub sec: u32,
    /// Timestamp fraction, in microseconds or nanoseconds.
    pub frac: u32,
    /// Whether `frac` is in nanoseconds.
    pub nanos: bool,
    /// Length on the wire.
    pub orig_len: u32,
    /// The bytes captured.
    pub data: &'a [u8],
}

/// A parsed capture: its link type and records.
pub struct Capture<'a> {
    /// The link type of every record.
    pub linktype: u32,
    little: bool,
    nanos: bool,
    rest: &'a [u8],
}

impl<'a> Capture<'a> {
    /// Checks the global header.
    pub fn new(file: &'a [u8]) -> Result<Capture<'a>, String> {
        let header = file
            .get(..24)
            .ok_or_else(|| format!("pcap: file of {} bytes is too short", file.len()))?;
        let magic = [header[0], header[1], header[2], header[3]];
        let (little, nanos) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                return Err("pcap: this is a pcapng file; convert it with \
                            `editcap -F pcap IN OUT`"
                    .into())
            }
            _ => return Err(format!("pcap: bad magic number {:02x?}", magic)),
        };
        let cap = Capture {
            linktype: 0,
            little,
            nanos,
            rest: &file[24..],
        };
        let linktype = cap.u32_at(header, 20);
        Ok(Capture { linktype, ..cap })
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let raw = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    }
}

impl<'a> Iterator for Capture<'a> {
    type Item = Result<Record<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(header) = self.rest.get(..16) else {
            let n = self.rest.len();
            self.rest = &[];
            return Some(Err(format!(
                "pcap: record header truncated ({n} bytes left)"
            )));
        };
        let sec = self.u32_at(header, 0);
        let frac = self.u32_at(header, 4);
        let incl = self.u32_at(header, 8) as usize;
        let orig_len = self.u32_at(header, 12);
        let Some(data) = self.rest.get(16..16 + incl) else {
            let n = self.rest.len() - 16;
            self.rest = &[];
            return Some(Err(format!(
                "pcap: record of {incl} bytes truncated ({n} bytes left)"
            )));
        };
        self.rest = &self.rest[16 + incl..];
        Some(Ok(Record {
            sec,
            frac,
            nanos: self.nanos,
            orig_len,
            data,
        }))
    }
}

/// Writes a classic little-endian microsecond pcap file of Ethernet frames
/// (for tests and fixtures).
#[cfg(test)]
pub fn write(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let file = write(&[&[1, 2, 3], &[4]]);
        let cap = Capture::new(&file).unwrap();
        assert_eq!(cap.linktype, LINKTYPE_ETHERNET);
        let recs: Vec<_> = cap.map(|r| r.unwrap().data.to_vec()).collect();
        assert_eq!(recs, vec![vec![1, 2, 3], vec![4]]);
    }

    #[test]
    fn truncated_and_bad_files() {
        let file = write(&[&[1, 2, 3]]);
        let cut = &file[..file.len() - 1];
        let mut cap = Capture::new(cut).unwrap();
        assert!(cap.next().unwrap().is_err());
        assert!(cap.next().is_none());
        assert!(Capture::new(&file[..10]).is_err());
        assert!(Capture::new(&[0; 24]).is_err());
    }
}
