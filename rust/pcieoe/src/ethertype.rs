// SPDX-License-Identifier: GPL-2.0

//! The Ethertype that PCIeoE frames are sent under.
//!
//! IEEE 802 reserves 0x88B5 and 0x88B6 for local experimental use, so a
//! deployment can run PCIeoE without a registered Ethertype; either may be
//! chosen (the modules take it as a parameter) so that two fabrics can share
//! one Ethernet segment.

use core::fmt;

/// The Ethertype used when none is configured (IEEE 802 local experimental 1).
pub const DEFAULT: u16 = 0x88B5;

/// The second IEEE 802 local experimental Ethertype.
pub const EXPERIMENTAL_2: u16 = 0x88B6;

/// Values below this are IEEE 802.3 length fields, not Ethertypes.
const MIN_ETHERTYPE: u16 = 0x0600;

/// Ethertypes that would collide with traffic the kernel already handles.
const RESERVED: [(u16, &str); 5] = [
    (0x0800, "IPv4"),
    (0x0806, "ARP"),
    (0x86DD, "IPv6"),
    (0x8100, "802.1Q VLAN tag"),
    (0x88A8, "802.1ad service tag"),
];

/// A validated Ethertype for PCIeoE frames.
///
/// # Invariants
///
/// The value is at least 0x0600 and is not one of the Ethertypes the kernel
/// uses for IP, ARP or VLAN tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtherType(u16);

/// Why a value cannot be used as the PCIeoE Ethertype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Below 0x0600: an 802.3 length, not an Ethertype.
    IsLength(u16),
    /// Already used by the named protocol.
    Reserved(u16, &'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::IsLength(v) => write!(f, "{v:#06x} is an 802.3 length, not an Ethertype"),
            Error::Reserved(v, who) => write!(f, "{v:#06x} is the {who} Ethertype"),
        }
    }
}

impl EtherType {
    /// Checks that `value` can carry PCIeoE frames.
    ///
    /// # Errors
    ///
    /// [`Error::IsLength`] below 0x0600, [`Error::Reserved`] for IPv4, ARP,
    /// IPv6 and the VLAN tag Ethertypes.
    ///
    /// # Examples
    ///
    /// ```
    /// use pcieoe::ethertype::{EtherType, Error, DEFAULT};
    /// assert_eq!(EtherType::new(DEFAULT).map(|e| e.get()), Ok(0x88B5));
    /// assert_eq!(EtherType::new(0x05dc), Err(Error::IsLength(0x05dc)));
    /// ```
    pub fn new(value: u16) -> Result<Self, Error> {
        if value < MIN_ETHERTYPE {
            return Err(Error::IsLength(value));
        }
        if let Some(&(_, who)) = RESERVED.iter().find(|(v, _)| *v == value) {
            return Err(Error::Reserved(value, who));
        }
        // INVARIANT: checked just above.
        Ok(EtherType(value))
    }

    /// The Ethertype as a number, in host order.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for EtherType {
    fn default() -> Self {
        EtherType(DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experimental_ethertypes_are_accepted() {
        assert_eq!(EtherType::new(DEFAULT), Ok(EtherType::default()));
        assert_eq!(
            EtherType::new(EXPERIMENTAL_2).map(EtherType::get),
            Ok(0x88B6)
        );
    }

    #[test]
    fn lengths_are_refused() {
        assert_eq!(EtherType::new(0), Err(Error::IsLength(0)));
        assert_eq!(EtherType::new(0x05ff), Err(Error::IsLength(0x05ff)));
        assert!(EtherType::new(0x0600).is_ok());
    }

    #[test]
    fn kernel_protocols_are_refused() {
        for (v, who) in RESERVED {
            assert_eq!(EtherType::new(v), Err(Error::Reserved(v, who)));
        }
    }
}
