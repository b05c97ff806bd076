// SPDX-License-Identifier: GPL-2.0

//! Configuration space emulation for device models.
//!
//! A [`ConfigSpace`] holds the 4 KiB configuration space of one function
//! together with two bit masks per byte: which bits a configuration write
//! may set (read-write) and which ones it clears by writing 1 (RW1C). All
//! other bits are read-only to the host; the device model changes them with
//! [`ConfigSpace::write_hw`]. BAR sizing falls out of the masks: the address
//! bits below a BAR's size are read-only zero, so writing all-ones and
//! reading back returns the size mask, as with real hardware.
//!
//! [`ConfigSpace::init_type0`] lays out a type-0 header, and
//! [`ConfigSpace::add_pcie`], [`ConfigSpace::add_msix`] and
//! [`ConfigSpace::add_sriov`] add the PCI Express, MSI-X and SR-IOV
//! capabilities; [`ConfigSpace::add_capability`] and
//! [`ConfigSpace::add_ext_capability`] let a model add others.
//!
//! Host accesses ([`ConfigSpace::read`], [`ConfigSpace::write`],
//! [`ConfigSpace::write_with_be`]) check size and alignment and return an
//! [`Error`] that the device interface answers with an Unsupported Request
//! completion.
//!
//! A [`ConfigSpace`] is 12 KiB plus a few words: allocate it (or the device
//! model holding it) on the heap rather than on a kernel stack, and reuse it
//! with [`ConfigSpace::reset`]. All its fields are integers or arrays of
//! them, so all-zero memory is a valid, empty configuration space.

use core::fmt;

/// The size of a PCI Express function's configuration space.
pub const SIZE: usize = 4096;

/// Offset of the Vendor ID register.
pub const VENDOR_ID: u16 = 0x00;
/// Offset of the Device ID register.
pub const DEVICE_ID: u16 = 0x02;
/// Offset of the Command register.
pub const COMMAND: u16 = 0x04;
/// Offset of the Status register.
pub const STATUS: u16 = 0x06;
/// Offset of the Revision ID register.
pub const REVISION_ID: u16 = 0x08;
/// Offset of the Class Code (three bytes, programming interface first).
pub const CLASS_CODE: u16 = 0x09;
/// Offset of the Cache Line Size register.
pub const CACHE_LINE_SIZE: u16 = 0x0c;
/// Offset of the Header Type register.
pub const HEADER_TYPE: u16 = 0x0e;
/// Offset of Base Address Register 0; BAR n is at `BAR0 + 4 * n`.
pub const BAR0: u16 = 0x10;
/// Offset of the Subsystem Vendor ID register.
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
/// Offset of the Subsystem ID register.
pub const SUBSYSTEM_ID: u16 = 0x2e;
/// Offset of the Capabilities Pointer.
pub const CAP_PTR: u16 = 0x34;
/// Offset of the Interrupt Line register.
pub const INTERRUPT_LINE: u16 = 0x3c;
/// Offset of the Interrupt Pin register.
pub const INTERRUPT_PIN: u16 = 0x3d;
/// Where the extended capabilities start.
pub const EXT_CAP_START: u16 = 0x100;

/// Command register: I/O Space Enable.
pub const CMD_IO: u16 = 1 << 0;
/// Command register: Memory Space Enable.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Command register: Bus Master Enable.
pub const CMD_BUS_MASTER: u16 = 1 << 2;
/// Command register: Parity Error Response.
pub const CMD_PARITY: u16 = 1 << 6;
/// Command register: SERR# Enable.
pub const CMD_SERR: u16 = 1 << 8;
/// Command register: Interrupt Disable.
pub const CMD_INTX_DISABLE: u16 = 1 << 10;

/// Status register: Interrupt Status (set by the device).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status register: Capabilities List.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Status register bits that software clears by writing 1: Master Data
/// Parity Error, Signaled/Received Target Abort, Received Master Abort,
/// Signaled System Error, Detected Parity Error.
pub const STATUS_RW1C: u16 = 0xf900;

/// Capability ID of the PCI Express capability.
pub const CAP_ID_PCIE: u8 = 0x10;
/// Capability ID of the MSI-X capability.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Extended capability ID of the SR-IOV capability.
pub const EXT_CAP_ID_SRIOV: u16 = 0x0010;

/// Length of the PCI Express capability (version 2).
pub const PCIE_CAP_LEN: u16 = 0x3c;
/// PCI Express capability: offset of Device Capabilities.
pub const PCIE_DEVCAP: u16 = 0x04;
/// PCI Express capability: offset of Device Control.
pub const PCIE_DEVCTL: u16 = 0x08;
/// PCI Express capability: offset of Device Status.
pub const PCIE_DEVSTA: u16 = 0x0a;
/// PCI Express capability: offset of Link Capabilities.
pub const PCIE_LNKCAP: u16 = 0x0c;
/// PCI Express capability: offset of Link Control.
pub const PCIE_LNKCTL: u16 = 0x10;
/// PCI Express capability: offset of Link Status.
pub const PCIE_LNKSTA: u16 = 0x12;
/// PCI Express capability: offset of Device Capabilities 2.
pub const PCIE_DEVCAP2: u16 = 0x24;
/// PCI Express capability: offset of Device Control 2.
pub const PCIE_DEVCTL2: u16 = 0x28;
/// PCI Express capability: offset of Link Capabilities 2.
pub const PCIE_LNKCAP2: u16 = 0x2c;
/// PCI Express capability: offset of Link Control 2.
pub const PCIE_LNKCTL2: u16 = 0x30;

/// Length of the MSI-X capability.
pub const MSIX_CAP_LEN: u16 = 12;
/// MSI-X capability: offset of Message Control.
pub const MSIX_CONTROL: u16 = 0x02;
/// MSI-X capability: offset of Table Offset/Table BIR.
pub const MSIX_TABLE: u16 = 0x04;
/// MSI-X capability: offset of PBA Offset/PBA BIR.
pub const MSIX_PBA: u16 = 0x08;
/// MSI-X Message Control: Function Mask.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// MSI-X Message Control: MSI-X Enable.
pub const MSIX_ENABLE: u16 = 1 << 15;

/// Length of the SR-IOV extended capability.
pub const SRIOV_CAP_LEN: u16 = 0x40;
/// SR-IOV capability: offset of SR-IOV Capabilities.
pub const SRIOV_CAPS: u16 = 0x04;
/// SR-IOV capability: offset of SR-IOV Control.
pub const SRIOV_CONTROL: u16 = 0x08;
/// SR-IOV capability: offset of SR-IOV Status.
pub const SRIOV_STATUS: u16 = 0x0a;
/// SR-IOV capability: offset of InitialVFs.
pub const SRIOV_INITIAL_VFS: u16 = 0x0c;
/// SR-IOV capability: offset of TotalVFs.
pub const SRIOV_TOTAL_VFS: u16 = 0x0e;
/// SR-IOV capability: offset of NumVFs.
pub const SRIOV_NUM_VFS: u16 = 0x10;
/// SR-IOV capability: offset of First VF Offset.
pub const SRIOV_VF_OFFSET: u16 = 0x14;
/// SR-IOV capability: offset of VF Stride.
pub const SRIOV_VF_STRIDE: u16 = 0x16;
/// SR-IOV capability: offset of VF Device ID.
pub const SRIOV_VF_DEVICE_ID: u16 = 0x1a;
/// SR-IOV capability: offset of Supported Page Sizes.
pub const SRIOV_SUPPORTED_PAGE_SIZES: u16 = 0x1c;
/// SR-IOV capability: offset of System Page Size.
pub const SRIOV_SYSTEM_PAGE_SIZE: u16 = 0x20;
/// SR-IOV capability: offset of VF BAR0; VF BAR n is at `+ 4 * n`.
pub const SRIOV_VF_BAR0: u16 = 0x24;
/// SR-IOV Control: VF Enable.
pub const SRIOV_VF_ENABLE: u16 = 1 << 0;
/// SR-IOV Control: VF Memory Space Enable.
pub const SRIOV_VF_MSE: u16 = 1 << 3;
/// SR-IOV Control: ARI Capable Hierarchy.
pub const SRIOV_ARI_HIERARCHY: u16 = 1 << 4;

/// How many standard capabilities a list walk follows at most (the
/// 192 bytes after the header hold at most 48 capabilities).
const MAX_CAPS: usize = 48;
/// How many extended capabilities a list walk follows at most.
const MAX_EXT_CAPS: usize = (SIZE - EXT_CAP_START as usize) / 4;

/// Why a host configuration access is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The access size is not 1, 2 or 4 bytes.
    BadSize {
        /// The size asked for.
        size: usize,
    },
    /// The offset is not a multiple of the access size.
    Misaligned {
        /// The offset.
        offset: u16,
        /// The access size.
        size: usize,
    },
    /// The access goes past the end of configuration space.
    OutOfRange {
        /// The offset.
        offset: u16,
        /// The access size.
        size: usize,
    },
    /// Byte enables wider than four bits.
    ByteEnables {
        /// The byte enables.
        be: u8,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadSize { size } => write!(f, "config access of {size} bytes"),
            Error::Misaligned { offset, size } => {
                write!(
                    f,
                    "config access of {size} bytes at misaligned offset {offset:#x}"
                )
            }
            Error::OutOfRange { offset, size } => {
                write!(
                    f,
                    "config access of {size} bytes at {offset:#x} is out of range"
                )
            }
            Error::ByteEnables { be } => write!(f, "invalid config byte enables {be:#x}"),
        }
    }
}

/// Why a configuration space layout cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildError {
    /// A BAR size that is not a power of two of at least 16 bytes (and
    /// at most 2 GiB for a 32-bit BAR).
    BarSize {
        /// BAR index.
        index: u8,
        /// The size refused.
        size: u64,
    },
    /// A 64-bit BAR in slot 5, or a BAR in the slot holding the upper half
    /// of a 64-bit BAR.
    BarSlot {
        /// BAR index.
        index: u8,
    },
    /// The Class Code does not fit in 24 bits.
    ClassCode {
        /// The value refused.
        class_code: u32,
    },
    /// An Interrupt Pin other than 0 (none) to 4 (INTD).
    InterruptPin {
        /// The value refused.
        pin: u8,
    },
    /// No room left for a capability of this length.
    NoRoom {
        /// The capability length.
        len: u16,
    },
    /// A Max_Payload_Size code above 5 (4096 bytes), a link speed code
    /// outside 1 to 6 or a link width outside 1 to 32.
    PcieField,
    /// An MSI-X table size outside 1 to 2048.
    MsixTableSize {
        /// The value refused.
        size: u16,
    },
    /// An MSI-X table or PBA in a BAR that is not a memory BAR of this
    /// function, misaligned, or not fitting in it.
    MsixPlacement {
        /// The BAR index.
        bir: u8,
        /// The offset in the BAR.
        offset: u32,
    },
    /// InitialVFs above TotalVFs, or VFs without an offset and stride.
    SriovVfs,
    /// Supported Page Sizes without 4 KiB.
    SriovPageSizes,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BuildError::BarSize { index, size } => write!(f, "BAR{index}: invalid size {size:#x}"),
            BuildError::BarSlot { index } => write!(f, "BAR{index}: slot not available"),
            BuildError::ClassCode { class_code } => {
                write!(f, "class code {class_code:#x} wider than 24 bits")
            }
            BuildError::InterruptPin { pin } => write!(f, "interrupt pin {pin} not 0 to 4"),
            BuildError::NoRoom { len } => write!(f, "no room for a capability of {len} bytes"),
            BuildError::PcieField => f.write_str("invalid PCI Express capability field"),
            BuildError::MsixTableSize { size } => {
                write!(f, "MSI-X table size {size} not 1 to 2048")
            }
            BuildError::MsixPlacement { bir, offset } => {
                write!(
                    f,
                    "MSI-X structure at BAR{bir} offset {offset:#x} does not fit"
                )
            }
            BuildError::SriovVfs => f.write_str("invalid SR-IOV VF counts"),
            BuildError::SriovPageSizes => f.write_str("SR-IOV page sizes without 4 KiB"),
        }
    }
}

/// A Base Address Register as the device model declares it.
///
/// `repr(C, u8)` with `Unused = 0` fixes the layout so that all-zero
/// memory is `Bar::Unused`: a tag byte of 0 followed by a payload that the
/// `Unused` variant does not read. That is what lets the kernel allocate a
/// [`ConfigSpace`] zeroed on the heap (see its `Zeroable` implementation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C, u8)]
pub enum Bar {
    /// Not implemented (reads 0, not writable); also the slot after a
    /// 64-bit BAR.
    #[default]
    Unused = 0,
    /// A 32-bit memory BAR of `size` bytes (a power of two, 16 to 2 GiB).
    Mem32 {
        /// Size in bytes.
        size: u32,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// A 64-bit memory BAR of `size` bytes, using this slot and the next.
    Mem64 {
        /// Size in bytes (a power of two, at least 16).
        size: u64,
        /// Prefetchable.
        prefetchable: bool,
    },
}

impl Bar {
    /// The BAR's size in bytes, 0 if unused.
    pub const fn size(self) -> u64 {
        match self {
            Bar::Unused => 0,
            Bar::Mem32 { size, .. } => size as u64,
            Bar::Mem64 { size, .. } => size,
        }
    }
}

/// The fields of a type-0 configuration header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Type0Header {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class Code: base class, sub-class, programming interface (24 bits).
    pub class_code: u32,
    /// Subsystem Vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Multi-function device (Header Type bit 7).
    pub multifunction: bool,
    /// Interrupt Pin: 0 for none, 1 to 4 for INTA to INTD.
    pub interrupt_pin: u8,
    /// BAR0 to BAR5.
    pub bars: [Bar; 6],
}

/// The device/port type of a PCI Express capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PortType {
    /// PCI Express Endpoint (0000b).
    #[default]
    Endpoint,
    /// Legacy PCI Express Endpoint (0001b).
    LegacyEndpoint,
    /// Root Complex Integrated Endpoint (1001b).
    RcIntegratedEndpoint,
}

impl PortType {
    const fn bits(self) -> u16 {
        match self {
            PortType::Endpoint => 0b0000,
            PortType::LegacyEndpoint => 0b0001,
            PortType::RcIntegratedEndpoint => 0b1001,
        }
    }
}

/// The fields of a PCI Express capability (version 2) for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PcieCap {
    /// The device/port type.
    pub port_type: PortType,
    /// Max_Payload_Size Supported: 0 = 128 bytes ... 5 = 4096 bytes.
    pub max_payload_supported: u8,
    /// Max Link Speed: 1 = 2.5 GT/s, 2 = 5, 3 = 8, 4 = 16, 5 = 32, 6 = 64.
    pub link_speed: u8,
    /// Maximum Link Width in lanes, 1 to 32; the link trains at it.
    pub link_width: u8,
    /// 10-Bit Tag Completer and Requester Supported.
    pub ten_bit_tags: bool,
}

impl Default for PcieCap {
    /// An endpoint with 256-byte payloads, an x8 link at 8 GT/s and 10-bit
    /// tags.
    fn default() -> Self {
        PcieCap {
            port_type: PortType::Endpoint,
            max_payload_supported: 1,
            link_speed: 3,
            link_width: 8,
            ten_bit_tags: true,
        }
    }
}

/// The fields of an MSI-X capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsixCap {
    /// Number of table entries, 1 to 2048.
    pub table_size: u16,
    /// BAR holding the table (BIR).
    pub table_bar: u8,
    /// Table offset in that BAR, 8-byte aligned.
    pub table_offset: u32,
    /// BAR holding the Pending Bit Array.
    pub pba_bar: u8,
    /// PBA offset in that BAR, 8-byte aligned.
    pub pba_offset: u32,
}

/// The fields of an SR-IOV extended capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SriovCap {
    /// InitialVFs.
    pub initial_vfs: u16,
    /// TotalVFs.
    pub total_vfs: u16,
    /// First VF Offset (routing ID of VF 1 minus the PF's).
    pub first_vf_offset: u16,
    /// VF Stride.
    pub vf_stride: u16,
    /// VF Device ID.
    pub vf_device_id: u16,
    /// Supported Page Sizes (bit n: 2^(n+12) bytes); must include 4 KiB.
    pub supported_page_sizes: u32,
    /// VF BAR0 to VF BAR5, sized per VF.
    pub vf_bars: [Bar; 6],
}

impl Default for SriovCap {
    fn default() -> Self {
        SriovCap {
            initial_vfs: 0,
            total_vfs: 0,
            first_vf_offset: 1,
            vf_stride: 1,
            vf_device_id: 0,
            supported_page_sizes: 0x553,
            vf_bars: [Bar::Unused; 6],
        }
    }
}

/// A BAR a memory address falls in, as found by [`ConfigSpace::bar_hit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BarHit {
    /// BAR index, 0 to 5.
    pub bar: u8,
    /// Offset from the start of the BAR.
    pub offset: u64,
}

/// Checks a host access and returns the byte range it covers.
fn access_range(offset: u16, size: usize) -> Result<core::ops::Range<usize>, Error> {
    if !matches!(size, 1 | 2 | 4) {
        return Err(Error::BadSize { size });
    }
    let start = usize::from(offset);
    if start % size != 0 {
        return Err(Error::Misaligned { offset, size });
    }
    let end = start + size;
    if end > SIZE {
        return Err(Error::OutOfRange { offset, size });
    }
    Ok(start..end)
}

/// Checks a BAR declaration and returns its register value (flags) and
/// the writable masks of its low and (for 64-bit) high registers.
fn bar_masks(index: u8, bar: Bar) -> Result<(u32, u32, Option<u32>), BuildError> {
    let bad = BuildError::BarSize {
        index,
        size: bar.size(),
    };
    match bar {
        Bar::Unused => Ok((0, 0, None)),
        Bar::Mem32 { size, prefetchable } => {
            if !size.is_power_of_two() || !(16..=0x8000_0000).contains(&size) {
                return Err(bad);
            }
            let flags = if prefetchable { 0b1000 } else { 0 };
            Ok((flags, !(size - 1) & !0xf, None))
        }
        Bar::Mem64 { size, prefetchable } => {
            if !size.is_power_of_two() || size < 16 {
                return Err(bad);
            }
            if index >= 5 {
                return Err(BuildError::BarSlot { index });
            }
            let flags = 0b0100 | if prefetchable { 0b1000 } else { 0 };
            let mask = !(size - 1);
            Ok((flags, (mask as u32) & !0xf, Some((mask >> 32) as u32)))
        }
    }
}

/// Checks six BAR declarations: sizes, and no 64-bit BAR in slot 5 or
/// BAR in the upper half of a 64-bit one.
fn check_bars(bars: &[Bar; 6]) -> Result<(), BuildError> {
    let mut upper_of_previous = false;
    for (index, bar) in (0u8..).zip(bars.iter()) {
        if upper_of_previous {
            if *bar != Bar::Unused {
                return Err(BuildError::BarSlot { index });
            }
            upper_of_previous = false;
            continue;
        }
        upper_of_previous = bar_masks(index, *bar)?.2.is_some();
    }
    Ok(())
}

/// A capability length rounded up to whole double words, at least one.
fn cap_len(len: u16) -> u32 {
    u32::from(len.max(4)).div_ceil(4) * 4
}

/// One function's configuration space with its write masks.
///
/// # Invariants
///
/// `cap_last` is 0 or the offset of the last capability in the list from
/// [`CAP_PTR`], and `cap_next` is where the next one may go (DW aligned, at
/// most 0x100); `ext_last` and `ext_next` are the same for extended
/// capabilities (0 before the first, which goes at [`EXT_CAP_START`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpace {
    data: [u8; SIZE],
    writable: [u8; SIZE],
    w1c: [u8; SIZE],
    cap_last: u16,
    cap_next: u16,
    ext_last: u16,
    ext_next: u16,
    bars: [Bar; 6],
    vf_bars: [Bar; 6],
    sriov: u16,
}

impl Default for ConfigSpace {
    fn default() -> Self {
        ConfigSpace::new()
    }
}

// The kernel allocates a `ConfigSpace` (over 12 KiB, too big for a 16 KiB
// kernel stack) directly on the heap with `Box::init(kernel::init::zeroed())`,
// which needs this marker.
#[cfg(pcieoe_kernel)]
#[allow(unsafe_code)]
// SAFETY: every bit pattern of zeros is a valid `ConfigSpace`, and it is the
// one `ConfigSpace::new()` builds:
// - `data`, `writable` and `w1c` are arrays of `u8`, and `cap_last`,
//   `cap_next`, `ext_last`, `ext_next` and `sriov` are `u16`: integers are
//   valid as zeros, and `new()` sets them all to 0;
// - `bars` and `vf_bars` are arrays of `Bar`, which is `#[repr(C, u8)]` with
//   `Unused = 0`: a zero tag byte is `Bar::Unused`, whose (empty) payload
//   reads none of the following bytes, and `new()` sets every slot to
//   `Bar::Unused`;
// - the struct invariants hold: `cap_last == 0` and `ext_last == 0` mean no
//   capability list, which is what an all-zero space holds.
// There are no references, `NonZero`s, `bool`s or other niches in the type.
unsafe impl kernel::init::Zeroable for ConfigSpace {}

impl ConfigSpace {
    /// An empty configuration space: all zero, all read-only.
    pub const fn new() -> ConfigSpace {
        ConfigSpace {
            data: [0; SIZE],
            writable: [0; SIZE],
            w1c: [0; SIZE],
            cap_last: 0,
            cap_next: 0,
            ext_last: 0,
            ext_next: 0,
            bars: [Bar::Unused; 6],
            vf_bars: [Bar::Unused; 6],
            sriov: 0,
        }
    }

    /// Empties the configuration space in place.
    pub fn reset(&mut self) {
        self.data.fill(0);
        self.writable.fill(0);
        self.w1c.fill(0);
        self.cap_last = 0;
        self.cap_next = 0;
        self.ext_last = 0;
        self.ext_next = 0;
        self.bars = [Bar::Unused; 6];
        self.vf_bars = [Bar::Unused; 6];
        self.sriov = 0;
    }

    /// Reads `size` (1, 2 or 4) bytes at `offset` as a host would,
    /// little-endian.
    ///
    /// # Errors
    ///
    /// [`Error::BadSize`], [`Error::Misaligned`], [`Error::OutOfRange`].
    pub fn read(&self, offset: u16, size: usize) -> Result<u32, Error> {
        let range = access_range(offset, size)?;
        let bytes = self
            .data
            .get(range)
            .ok_or(Error::OutOfRange { offset, size })?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
    }

    /// Reads the double word at `offset` (DW aligned) as the four bytes of
    /// a configuration read completion.
    ///
    /// # Errors
    ///
    /// As [`ConfigSpace::read`].
    pub fn read_dw_bytes(&self, offset: u16) -> Result<[u8; 4], Error> {
        Ok(self.read(offset, 4)?.to_le_bytes())
    }

    /// Writes `size` (1, 2 or 4) bytes of `value` at `offset` as a host
    /// would: read-write bits take the new value, RW1C bits written as 1
    /// are cleared, read-only bits do not change.
    ///
    /// # Errors
    ///
    /// [`Error::BadSize`], [`Error::Misaligned`], [`Error::OutOfRange`].
    pub fn write(&mut self, offset: u16, size: usize, value: u32) -> Result<(), Error> {
        let range = access_range(offset, size)?;
        self.write_masked(range.start, &value.to_le_bytes(), 0xf)
    }

    /// Writes the bytes of a configuration write request: `data` is the
    /// double word at `offset` (DW aligned), `be` its First DW Byte
    /// Enables; only enabled bytes are written, with the masks applied.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`], [`Error::OutOfRange`], [`Error::ByteEnables`].
    pub fn write_with_be(&mut self, offset: u16, be: u8, data: [u8; 4]) -> Result<(), Error> {
        if be > 0xf {
            return Err(Error::ByteEnables { be });
        }
        let range = access_range(offset, 4)?;
        self.write_masked(range.start, &data, be)
    }

    fn write_masked(&mut self, start: usize, bytes: &[u8], be: u8) -> Result<(), Error> {
        let end = start + bytes.len();
        let oor = Error::OutOfRange {
            offset: start as u16,
            size: bytes.len(),
        };
        let data = self.data.get_mut(start..end).ok_or(oor)?;
        let writable = self.writable.get(start..end).ok_or(oor)?;
        let w1c = self.w1c.get(start..end).ok_or(oor)?;
        let lanes = data.iter_mut().zip(writable).zip(w1c).zip(bytes);
        for (i, (((old, &rw), &clear), &new)) in lanes.enumerate() {
            if be & (1 << i) == 0 {
                continue;
            }
            *old = (*old & !rw & !(clear & new)) | (new & rw);
        }
        Ok(())
    }

    /// Writes `size` bytes of `value` at `offset` as the device does:
    /// masks do not apply.
    ///
    /// # Errors
    ///
    /// [`Error::BadSize`], [`Error::Misaligned`], [`Error::OutOfRange`].
    pub fn write_hw(&mut self, offset: u16, size: usize, value: u32) -> Result<(), Error> {
        let range = access_range(offset, size)?;
        let bytes = value.to_le_bytes();
        let data = self
            .data
            .get_mut(range)
            .ok_or(Error::OutOfRange { offset, size })?;
        data.iter_mut().zip(bytes).for_each(|(d, b)| *d = b);
        Ok(())
    }

    /// Sets which bits of the `size` bytes at `offset` a host may write
    /// (`writable`) and clear by writing 1 (`w1c`); a bit in both is RW1C.
    ///
    /// # Errors
    ///
    /// [`Error::BadSize`], [`Error::Misaligned`], [`Error::OutOfRange`].
    pub fn set_masks(
        &mut self,
        offset: u16,
        size: usize,
        writable: u32,
        w1c: u32,
    ) -> Result<(), Error> {
        let range = access_range(offset, size)?;
        let oor = Error::OutOfRange { offset, size };
        let rw = self.writable.get_mut(range.clone()).ok_or(oor)?;
        rw.iter_mut()
            .zip((writable & !w1c).to_le_bytes())
            .for_each(|(d, b)| *d = b);
        let c = self.w1c.get_mut(range).ok_or(oor)?;
        c.iter_mut()
            .zip(w1c.to_le_bytes())
            .for_each(|(d, b)| *d = b);
        Ok(())
    }

    /// The raw write masks of the `len` bytes at `offset`: read-write bits
    /// and RW1C bits, exactly as stored. The device interface sends them to
    /// the host (with [`ConfigSpace::set_raw_masks`] at the other end) so that
    /// a host-side shadow applies [`ConfigSpace::write`] exactly as the
    /// device's copy does. `None` if the range goes past 4 KiB.
    pub fn raw_masks(&self, offset: u16, len: usize) -> Option<(&[u8], &[u8])> {
        let start = usize::from(offset);
        let end = start.checked_add(len)?;
        Some((self.writable.get(start..end)?, self.w1c.get(start..end)?))
    }

    /// Stores raw write masks from [`ConfigSpace::raw_masks`] as they are
    /// (unlike [`ConfigSpace::set_masks`], a bit in both arrays stays in
    /// both), so that a shadow copy is identical to the original. Data bytes
    /// do not change.
    ///
    /// # Errors
    ///
    /// [`Error::BadSize`] if the two slices differ in length,
    /// [`Error::OutOfRange`] if they go past 4 KiB; nothing is written then.
    pub fn set_raw_masks(&mut self, offset: u16, writable: &[u8], w1c: &[u8]) -> Result<(), Error> {
        let size = writable.len();
        if w1c.len() != size {
            return Err(Error::BadSize { size: w1c.len() });
        }
        let start = usize::from(offset);
        let oor = Error::OutOfRange { offset, size };
        let end = start.checked_add(size).ok_or(oor)?;
        if end > SIZE {
            return Err(oor);
        }
        self.writable
            .get_mut(start..end)
            .ok_or(oor)?
            .copy_from_slice(writable);
        self.w1c
            .get_mut(start..end)
            .ok_or(oor)?
            .copy_from_slice(w1c);
        Ok(())
    }

    /// Sets the value and masks of a register the layout code knows fits.
    fn init(&mut self, offset: u16, size: usize, value: u32, writable: u32, w1c: u32) {
        // The callers pass fixed offsets inside the header or inside a
        // capability that was allocated whole, so neither can fail.
        let _ = self.write_hw(offset, size, value);
        let _ = self.set_masks(offset, size, writable, w1c);
    }

    fn get(&self, offset: u16, size: usize) -> u32 {
        self.read(offset, size).unwrap_or(0)
    }

    /// Lays out a type-0 header, replacing whatever was there: IDs, class,
    /// Command (Memory Space, Bus Master, Parity Error Response, SERR#,
    /// Interrupt Disable writable), Status (error bits RW1C), Cache Line
    /// Size and Interrupt Line writable, BARs with their size masks.
    ///
    /// # Errors
    ///
    /// [`BuildError::ClassCode`], [`BuildError::InterruptPin`],
    /// [`BuildError::BarSize`], [`BuildError::BarSlot`]; the space is left
    /// empty.
    pub fn init_type0(&mut self, h: &Type0Header) -> Result<(), BuildError> {
        self.reset();
        if h.class_code > 0xff_ffff {
            return Err(BuildError::ClassCode {
                class_code: h.class_code,
            });
        }
        if h.interrupt_pin > 4 {
            return Err(BuildError::InterruptPin {
                pin: h.interrupt_pin,
            });
        }
        self.set_bars(BAR0, &h.bars)?;
        self.bars = h.bars;
        self.init(VENDOR_ID, 2, u32::from(h.vendor_id), 0, 0);
        self.init(DEVICE_ID, 2, u32::from(h.device_id), 0, 0);
        let cmd_mask = CMD_MEMORY | CMD_BUS_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE;
        self.init(COMMAND, 2, 0, u32::from(cmd_mask), 0);
        self.init(STATUS, 2, 0, 0, u32::from(STATUS_RW1C));
        self.init(
            REVISION_ID,
            4,
            (h.class_code << 8) | u32::from(h.revision),
            0,
            0,
        );
        self.init(CACHE_LINE_SIZE, 1, 0, 0xff, 0);
        self.init(HEADER_TYPE, 1, if h.multifunction { 0x80 } else { 0 }, 0, 0);
        self.init(
            SUBSYSTEM_VENDOR_ID,
            2,
            u32::from(h.subsystem_vendor_id),
            0,
            0,
        );
        self.init(SUBSYSTEM_ID, 2, u32::from(h.subsystem_id), 0, 0);
        self.init(INTERRUPT_LINE, 1, 0, 0xff, 0);
        self.init(INTERRUPT_PIN, 1, u32::from(h.interrupt_pin), 0, 0);
        self.cap_next = 0x40;
        Ok(())
    }

    /// Writes six BAR registers at `base` (the header's or SR-IOV's).
    ///
    /// # Errors
    ///
    /// As [`check_bars`]; nothing is written then.
    fn set_bars(&mut self, base: u16, bars: &[Bar; 6]) -> Result<(), BuildError> {
        check_bars(bars)?;
        let mut reg = base;
        let mut upper_of_previous = false;
        for (index, bar) in (0u8..).zip(bars.iter()) {
            if upper_of_previous {
                upper_of_previous = false;
            } else {
                let (flags, low, high) = bar_masks(index, *bar)?;
                self.init(reg, 4, flags, low, 0);
                if let Some(high) = high {
                    self.init(reg + 4, 4, 0, high, 0);
                    upper_of_previous = true;
                }
            }
            reg += 4;
        }
        Ok(())
    }

    /// The Command register.
    pub fn command(&self) -> u16 {
        self.get(COMMAND, 2) as u16
    }

    /// Whether the host enabled memory decoding (Memory Space Enable).
    pub fn memory_enabled(&self) -> bool {
        self.command() & CMD_MEMORY != 0
    }

    /// Whether the host let the function issue requests (Bus Master).
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & CMD_BUS_MASTER != 0
    }

    /// Whether the host disabled INTx (Interrupt Disable).
    pub fn intx_disabled(&self) -> bool {
        self.command() & CMD_INTX_DISABLE != 0
    }

    /// Sets or clears the Status register's Interrupt Status bit.
    pub fn set_interrupt_status(&mut self, pending: bool) {
        let status = self.get(STATUS, 2) as u16;
        let status = if pending {
            status | STATUS_INTERRUPT
        } else {
            status & !STATUS_INTERRUPT
        };
        let _ = self.write_hw(STATUS, 2, u32::from(status));
    }

    /// The BARs declared by [`ConfigSpace::init_type0`].
    pub fn bars(&self) -> &[Bar; 6] {
        &self.bars
    }

    fn bar_address_at(&self, base: u16, bars: &[Bar; 6], index: usize) -> Option<u64> {
        // Look the BAR up before computing its register: `index` comes from
        // the caller, and `4 * index` overflowed a u16 (a panic with
        // overflow checks) for an index of 16384 or more.
        let bar = bars.get(index)?;
        let reg = u16::try_from(index)
            .ok()?
            .checked_mul(4)?
            .checked_add(base)?;
        match bar {
            Bar::Unused => None,
            Bar::Mem32 { .. } => Some(u64::from(self.get(reg, 4) & !0xf)),
            Bar::Mem64 { .. } => {
                let low = u64::from(self.get(reg, 4) & !0xf);
                let high = u64::from(self.get(reg + 4, 4));
                Some((high << 32) | low)
            }
        }
    }

    /// The address the host programmed into BAR `index`; `None` if the
    /// BAR is unused or the upper half of a 64-bit BAR.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bar_address_at(BAR0, &self.bars, index)
    }

    /// Which BAR the `len` bytes at `address` fall in, if memory decoding
    /// is enabled and they fall in one BAR entirely.
    pub fn bar_hit(&self, address: u64, len: u64) -> Option<BarHit> {
        if !self.memory_enabled() {
            return None;
        }
        hit(&self.bars, |i| self.bar_address(i), address, len)
    }

    /// Reserves `len` bytes for a capability with this ID, links it at the
    /// end of the list from [`CAP_PTR`], sets the Capabilities List status
    /// bit and returns its offset. The body is zero and read-only.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoRoom`] when it does not fit below 0x100 (or no
    /// header was laid out).
    pub fn add_capability(&mut self, id: u8, len: u16) -> Result<u16, BuildError> {
        let at = self.cap_next;
        let end = u32::from(at) + cap_len(len);
        if at < 0x40 || end > u32::from(EXT_CAP_START) {
            return Err(BuildError::NoRoom { len });
        }
        // `end` is at most 0x100.
        let end = end as u16;
        self.init(at, 2, u32::from(id), 0, 0);
        for dw in (at + 4..end).step_by(4) {
            self.init(dw, 4, 0, 0, 0);
        }
        if self.cap_last == 0 {
            self.init(CAP_PTR, 1, u32::from(at), 0, 0);
        } else {
            self.init(self.cap_last + 1, 1, u32::from(at), 0, 0);
        }
        let status = self.get(STATUS, 2) as u16 | STATUS_CAP_LIST;
        let _ = self.write_hw(STATUS, 2, u32::from(status));
        // INVARIANT: `at` is linked last and `end` is DW aligned and at
        // most 0x100.
        self.cap_last = at;
        self.cap_next = end;
        Ok(at)
    }

    /// Reserves `len` bytes for an extended capability with this ID and
    /// version, links it at the end of the list from [`EXT_CAP_START`] and
    /// returns its offset. The body is zero and read-only.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoRoom`] when it does not fit below 4 KiB.
    pub fn add_ext_capability(
        &mut self,
        id: u16,
        version: u8,
        len: u16,
    ) -> Result<u16, BuildError> {
        let at = if self.ext_next == 0 {
            EXT_CAP_START
        } else {
            self.ext_next
        };
        let end = u32::from(at) + cap_len(len);
        if end > SIZE as u32 {
            return Err(BuildError::NoRoom { len });
        }
        // `end` is at most 4 KiB.
        let end = end as u16;
        let header = u32::from(id) | (u32::from(version & 0xf) << 16);
        self.init(at, 4, header, 0, 0);
        for dw in (at + 4..end).step_by(4) {
            self.init(dw, 4, 0, 0, 0);
        }
        if self.ext_last != 0 {
            let prev = self.get(self.ext_last, 4) & 0x000f_ffff;
            self.init(self.ext_last, 4, prev | (u32::from(at) << 20), 0, 0);
        }
        // INVARIANT: `at` is linked last, `end` is DW aligned and at most
        // 4 KiB.
        self.ext_last = at;
        self.ext_next = end;
        Ok(at)
    }

    /// Adds a PCI Express capability and returns its offset. Device
    /// Control (error reporting enables, Relaxed Ordering, Max_Payload_Size,
    /// Extended Tag, No Snoop, Max_Read_Request_Size), Device Status error
    /// bits (RW1C), Link Control (ASPM, RCB, Common Clock, Extended Synch)
    /// and Device Control 2 are writable; the link reports itself trained
    /// at its maximum speed and width.
    ///
    /// # Errors
    ///
    /// [`BuildError::PcieField`], [`BuildError::NoRoom`].
    pub fn add_pcie(&mut self, cap: &PcieCap) -> Result<u16, BuildError> {
        if cap.max_payload_supported > 5
            || !(1..=6).contains(&cap.link_speed)
            || !(1..=32).contains(&cap.link_width)
        {
            return Err(BuildError::PcieField);
        }
        let at = self.add_capability(CAP_ID_PCIE, PCIE_CAP_LEN)?;
        // PCI Express Capabilities: version 2, device/port type.
        self.init(at + 2, 2, u32::from(2 | (cap.port_type.bits() << 4)), 0, 0);
        // Device Capabilities: MPS supported, Extended Tag Field supported,
        // Role-Based Error Reporting.
        let devcap = u32::from(cap.max_payload_supported) | (1 << 5) | (1 << 15);
        self.init(at + PCIE_DEVCAP, 4, devcap, 0, 0);
        // Device Control: Relaxed Ordering and No Snoop enabled, 128-byte
        // payloads, 512-byte read requests, as after reset.
        self.init(at + PCIE_DEVCTL, 2, 0x2810, 0x79ff, 0);
        self.init(at + PCIE_DEVSTA, 2, 0, 0, 0x000f);
        let speed = u32::from(cap.link_speed);
        let width = u32::from(cap.link_width);
        // Link Capabilities: speed, width, L0s and L1 ASPM supported.
        self.init(at + PCIE_LNKCAP, 4, speed | (width << 4) | (3 << 10), 0, 0);
        self.init(at + PCIE_LNKCTL, 2, 0, 0x00cb, 0);
        // Link Status: trained at speed and width, Slot Clock Configuration.
        self.init(at + PCIE_LNKSTA, 2, speed | (width << 4) | (1 << 12), 0, 0);
        // Device Capabilities 2: completion timeout ranges A-D and disable
        // supported; 10-bit tag completer and requester.
        let tags = if cap.ten_bit_tags { 3 << 16 } else { 0 };
        self.init(at + PCIE_DEVCAP2, 4, 0xf | (1 << 4) | tags, 0, 0);
        // Device Control 2: completion timeout value and disable, IDO
        // request/completion enable, 10-bit tag requester enable.
        let tag_enable = if cap.ten_bit_tags { 1 << 12 } else { 0 };
        self.init(at + PCIE_DEVCTL2, 2, 0, 0x031f | tag_enable, 0);
        // Link Capabilities 2: every speed up to the maximum.
        let speeds = ((1u32 << (speed + 1)) - 1) & !1;
        self.init(at + PCIE_LNKCAP2, 4, speeds, 0, 0);
        self.init(at + PCIE_LNKCTL2, 2, speed, 0, 0);
        Ok(at)
    }

    /// Adds an MSI-X capability and returns its offset. MSI-X Enable and
    /// Function Mask are writable; the table and PBA must lie in memory
    /// BARs declared by [`ConfigSpace::init_type0`].
    ///
    /// # Errors
    ///
    /// [`BuildError::MsixTableSize`], [`BuildError::MsixPlacement`],
    /// [`BuildError::NoRoom`].
    pub fn add_msix(&mut self, cap: &MsixCap) -> Result<u16, BuildError> {
        if !(1..=2048).contains(&cap.table_size) {
            return Err(BuildError::MsixTableSize {
                size: cap.table_size,
            });
        }
        let table_len = u64::from(cap.table_size) * 16;
        let pba_len = u64::from(cap.table_size).div_ceil(64) * 8;
        self.check_in_bar(cap.table_bar, cap.table_offset, table_len)?;
        self.check_in_bar(cap.pba_bar, cap.pba_offset, pba_len)?;
        let at = self.add_capability(CAP_ID_MSIX, MSIX_CAP_LEN)?;
        let control = u32::from(cap.table_size - 1);
        let writable = u32::from(MSIX_ENABLE | MSIX_FUNCTION_MASK);
        self.init(at + MSIX_CONTROL, 2, control, writable, 0);
        let table = cap.table_offset | u32::from(cap.table_bar);
        self.init(at + MSIX_TABLE, 4, table, 0, 0);
        self.init(
            at + MSIX_PBA,
            4,
            cap.pba_offset | u32::from(cap.pba_bar),
            0,
            0,
        );
        Ok(at)
    }

    fn check_in_bar(&self, bir: u8, offset: u32, len: u64) -> Result<(), BuildError> {
        let bad = BuildError::MsixPlacement { bir, offset };
        let size = self.bars.get(usize::from(bir)).ok_or(bad)?.size();
        if offset % 8 != 0 || u64::from(offset) + len > size {
            return Err(bad);
        }
        Ok(())
    }

    /// The MSI-X Message Control register, if there is an MSI-X capability.
    pub fn msix_control(&self) -> Option<u16> {
        let at = self.find_cap(CAP_ID_MSIX)?;
        Some(self.get(at + MSIX_CONTROL, 2) as u16)
    }

    /// Adds an SR-IOV extended capability and returns its offset (0x100 if
    /// it is the first extended capability). VF Enable, VF MSE, ARI
    /// Capable Hierarchy, NumVFs, System Page Size and the VF BAR address
    /// bits are writable; VF BARs size like BARs.
    ///
    /// # Errors
    ///
    /// [`BuildError::SriovVfs`], [`BuildError::SriovPageSizes`],
    /// [`BuildError::BarSize`], [`BuildError::BarSlot`],
    /// [`BuildError::NoRoom`].
    pub fn add_sriov(&mut self, cap: &SriovCap) -> Result<u16, BuildError> {
        if cap.initial_vfs > cap.total_vfs
            || (cap.total_vfs > 0 && (cap.first_vf_offset == 0 || cap.vf_stride == 0))
        {
            return Err(BuildError::SriovVfs);
        }
        if cap.supported_page_sizes & 1 == 0 {
            return Err(BuildError::SriovPageSizes);
        }
        check_bars(&cap.vf_bars)?;
        let at = self.add_ext_capability(EXT_CAP_ID_SRIOV, 1, SRIOV_CAP_LEN)?;
        self.set_bars(at + SRIOV_VF_BAR0, &cap.vf_bars)?;
        self.vf_bars = cap.vf_bars;
        self.sriov = at;
        let control = SRIOV_VF_ENABLE | SRIOV_VF_MSE | SRIOV_ARI_HIERARCHY;
        self.init(at + SRIOV_CONTROL, 2, 0, u32::from(control), 0);
        self.init(at + SRIOV_INITIAL_VFS, 2, u32::from(cap.initial_vfs), 0, 0);
        self.init(at + SRIOV_TOTAL_VFS, 2, u32::from(cap.total_vfs), 0, 0);
        self.init(at + SRIOV_NUM_VFS, 2, 0, 0xffff, 0);
        self.init(
            at + SRIOV_VF_OFFSET,
            2,
            u32::from(cap.first_vf_offset),
            0,
            0,
        );
        self.init(at + SRIOV_VF_STRIDE, 2, u32::from(cap.vf_stride), 0, 0);
        self.init(
            at + SRIOV_VF_DEVICE_ID,
            2,
            u32::from(cap.vf_device_id),
            0,
            0,
        );
        self.init(
            at + SRIOV_SUPPORTED_PAGE_SIZES,
            4,
            cap.supported_page_sizes,
            0,
            0,
        );
        self.init(at + SRIOV_SYSTEM_PAGE_SIZE, 4, 1, 0xffff_ffff, 0);
        Ok(at)
    }

    /// The SR-IOV Control register, if there is an SR-IOV capability.
    pub fn sriov_control(&self) -> Option<u16> {
        (self.sriov != 0).then(|| self.get(self.sriov + SRIOV_CONTROL, 2) as u16)
    }

    /// NumVFs as the host programmed it, if there is an SR-IOV capability.
    pub fn sriov_num_vfs(&self) -> Option<u16> {
        (self.sriov != 0).then(|| self.get(self.sriov + SRIOV_NUM_VFS, 2) as u16)
    }

    /// The address the host programmed into VF BAR `index` (VF 1's BAR;
    /// VF n's is `(n - 1) * size` further).
    pub fn vf_bar_address(&self, index: usize) -> Option<u64> {
        if self.sriov == 0 {
            return None;
        }
        self.bar_address_at(self.sriov + SRIOV_VF_BAR0, &self.vf_bars, index)
    }

    /// The standard capabilities, as (ID, offset), walking the list from
    /// [`CAP_PTR`] as a host would (at most 48, so a loop ends).
    pub fn caps(&self) -> impl Iterator<Item = (u8, u16)> + '_ {
        let first = if self.get(STATUS, 2) as u16 & STATUS_CAP_LIST != 0 {
            self.get(CAP_PTR, 1) as u16 & 0xfc
        } else {
            0
        };
        let mut next = first;
        core::iter::from_fn(move || {
            if next < 0x40 {
                return None;
            }
            let at = next;
            next = self.get(at + 1, 1) as u16 & 0xfc;
            Some((self.get(at, 1) as u8, at))
        })
        .take(MAX_CAPS)
    }

    /// The offset of the first standard capability with this ID.
    pub fn find_cap(&self, id: u8) -> Option<u16> {
        self.caps().find(|&(i, _)| i == id).map(|(_, at)| at)
    }

    /// The extended capabilities, as (ID, version, offset), walking the
    /// list from [`EXT_CAP_START`] (bounded, so a loop ends).
    pub fn ext_caps(&self) -> impl Iterator<Item = (u16, u8, u16)> + '_ {
        let mut next = EXT_CAP_START;
        core::iter::from_fn(move || {
            if next < EXT_CAP_START {
                return None;
            }
            let at = next;
            let header = self.get(at, 4);
            if header == 0 {
                return None;
            }
            next = (header >> 20) as u16 & 0xffc;
            Some((header as u16, ((header >> 16) & 0xf) as u8, at))
        })
        .take(MAX_EXT_CAPS)
    }

    /// The offset of the first extended capability with this ID.
    pub fn find_ext_cap(&self, id: u16) -> Option<u16> {
        self.ext_caps()
            .find(|&(i, _, _)| i == id)
            .map(|(_, _, at)| at)
    }
}

/// Finds the BAR holding `len` bytes at `address`.
fn hit(
    bars: &[Bar; 6],
    address_of: impl Fn(usize) -> Option<u64>,
    address: u64,
    len: u64,
) -> Option<BarHit> {
    bars.iter().enumerate().find_map(|(i, bar)| {
        let base = address_of(i)?;
        let offset = address.checked_sub(base)?;
        let end = offset.checked_add(len)?;
        if end > bar.size() || base == 0 {
            return None;
        }
        Some(BarHit {
            bar: i as u8,
            offset,
        })
    })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn header() -> Type0Header {
        Type0Header {
            vendor_id: 0x1af4,
            device_id: 0x10f1,
            revision: 2,
            class_code: 0x02_00_00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x0001,
            multifunction: false,
            interrupt_pin: 1,
            bars: [
                Bar::Mem32 {
                    size: 0x1000,
                    prefetchable: false,
                },
                Bar::Mem32 {
                    size: 0x10_0000,
                    prefetchable: true,
                },
                Bar::Mem64 {
                    size: 0x4000,
                    prefetchable: true,
                },
                Bar::Unused,
                Bar::Mem64 {
                    size: 0x2_0000_0000,
                    prefetchable: false,
                },
                Bar::Unused,
            ],
        }
    }

    fn space() -> Box<ConfigSpace> {
        let mut cs = Box::new(ConfigSpace::new());
        cs.init_type0(&header()).unwrap();
        cs
    }

    #[test]
    fn identity_registers_are_read_only() {
        let mut cs = space();
        assert_eq!(cs.read(VENDOR_ID, 4), Ok(0x10f1_1af4));
        assert_eq!(cs.read(REVISION_ID, 4), Ok(0x0200_0002));
        assert_eq!(cs.read(SUBSYSTEM_VENDOR_ID, 4), Ok(0x0001_1af4));
        assert_eq!(cs.read(INTERRUPT_PIN, 1), Ok(1));
        assert_eq!(cs.read(HEADER_TYPE, 1), Ok(0));
        for off in [VENDOR_ID, REVISION_ID, SUBSYSTEM_VENDOR_ID, CAP_PTR] {
            let before = cs.read(off, 4).unwrap();
            cs.write(off, 4, 0xdead_beef).unwrap();
            assert_eq!(cs.read(off, 4), Ok(before), "offset {off:#x}");
        }
        // Interrupt Line and Cache Line Size are read-write.
        cs.write(INTERRUPT_LINE, 2, 0xff0b).unwrap();
        assert_eq!(cs.read(INTERRUPT_LINE, 2), Ok(0x010b));
        cs.write(CACHE_LINE_SIZE, 1, 0x10).unwrap();
        assert_eq!(cs.read(CACHE_LINE_SIZE, 1), Ok(0x10));
    }

    #[test]
    fn command_bits_writable_per_spec() {
        let mut cs = space();
        cs.write(COMMAND, 2, 0xffff).unwrap();
        assert_eq!(cs.read(COMMAND, 2), Ok(0x0546));
        assert!(cs.memory_enabled() && cs.bus_master_enabled() && cs.intx_disabled());
        cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
        assert!(cs.memory_enabled() && !cs.bus_master_enabled() && !cs.intx_disabled());
    }

    #[test]
    fn status_error_bits_are_rw1c() {
        let mut cs = space();
        cs.write_hw(STATUS, 2, 0xf900 | u32::from(STATUS_INTERRUPT))
            .unwrap();
        // Writing 0 changes nothing.
        cs.write(STATUS, 2, 0).unwrap();
        assert_eq!(cs.read(STATUS, 2), Ok(0xf908));
        // Writing 1 clears just that bit; Interrupt Status is read-only.
        cs.write(STATUS, 2, 0x0100 | u32::from(STATUS_INTERRUPT))
            .unwrap();
        assert_eq!(cs.read(STATUS, 2), Ok(0xf808));
        cs.write(STATUS, 2, 0xffff).unwrap();
        assert_eq!(cs.read(STATUS, 2), Ok(0x0008));
        cs.set_interrupt_status(false);
        assert_eq!(cs.read(STATUS, 2), Ok(0));
        // A dword write to Command+Status touches both with their masks.
        cs.write_hw(STATUS, 2, 0x2000).unwrap();
        cs.write(COMMAND, 4, 0x2000_0006).unwrap();
        assert_eq!(cs.read(COMMAND, 4), Ok(0x0000_0006));
    }

    #[test]
    fn bar_sizing_returns_size_masks() {
        let mut cs = space();
        let bar = |i: u16| BAR0 + 4 * i;
        let expect = [
            0xffff_f000u32, // 4 KiB, 32-bit
            0xfff0_0008,    // 1 MiB, 32-bit prefetchable
            0xffff_c00c,    // 16 KiB, 64-bit prefetchable, low
            0xffff_ffff,    // ... high
            0x0000_0004,    // 8 GiB, 64-bit, low
            0xffff_fffe,    // ... high
        ];
        // Before sizing, BARs read their flags.
        assert_eq!(cs.read(bar(1), 4), Ok(0x8));
        assert_eq!(cs.read(bar(2), 4), Ok(0xc));
        for (i, want) in (0..6).zip(expect) {
            cs.write(bar(i), 4, 0xffff_ffff).unwrap();
            assert_eq!(cs.read(bar(i), 4), Ok(want), "BAR{i}");
        }
        // Unused slots stay zero; the ROM BAR is not implemented.
        cs.write(0x30, 4, 0xffff_ffff).unwrap();
        assert_eq!(cs.read(0x30, 4), Ok(0));
        // Programming addresses.
        cs.write(bar(0), 4, 0xfe00_0000).unwrap();
        cs.write(bar(2), 4, 0x0000_8000).unwrap();
        cs.write(bar(3), 4, 0x0000_0001).unwrap();
        cs.write(bar(4), 4, 0).unwrap();
        cs.write(bar(5), 4, 0x0000_0004).unwrap();
        assert_eq!(cs.bar_address(0), Some(0xfe00_0000));
        assert_eq!(cs.bar_address(2), Some(0x1_0000_8000));
        assert_eq!(cs.bar_address(3), None);
        assert_eq!(cs.bar_address(4), Some(0x4_0000_0000));
        assert_eq!(cs.bar_address(6), None);
        // Decoding needs Memory Space Enable.
        assert_eq!(cs.bar_hit(0xfe00_0010, 4), None);
        cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
        assert_eq!(
            cs.bar_hit(0xfe00_0010, 4),
            Some(BarHit {
                bar: 0,
                offset: 0x10
            })
        );
        assert_eq!(cs.bar_hit(0xfe00_0ffc, 8), None);
        assert_eq!(
            cs.bar_hit(0x1_0000_bffc, 4),
            Some(BarHit {
                bar: 2,
                offset: 0x3ffc
            })
        );
        assert_eq!(
            cs.bar_hit(0x4_0000_0000, 4096),
            Some(BarHit { bar: 4, offset: 0 })
        );
        assert_eq!(cs.bar_hit(0x10, 4), None);
    }

    #[test]
    fn invalid_bars_are_refused() {
        let mut cs = Box::new(ConfigSpace::new());
        let mut h = header();
        h.bars[0] = Bar::Mem32 {
            size: 100,
            prefetchable: false,
        };
        assert_eq!(
            cs.init_type0(&h),
            Err(BuildError::BarSize {
                index: 0,
                size: 100
            })
        );
        let mut h = header();
        h.bars[3] = Bar::Mem32 {
            size: 4096,
            prefetchable: false,
        };
        assert_eq!(cs.init_type0(&h), Err(BuildError::BarSlot { index: 3 }));
        let mut h = header();
        h.bars[4] = Bar::Unused;
        h.bars[5] = Bar::Mem64 {
            size: 4096,
            prefetchable: false,
        };
        assert_eq!(cs.init_type0(&h), Err(BuildError::BarSlot { index: 5 }));
        let mut h = header();
        h.bars[0] = Bar::Mem32 {
            size: 0x1_0000_0000u64 as u32,
            prefetchable: false,
        };
        assert!(cs.init_type0(&h).is_err());
        let mut h = header();
        h.class_code = 0x100_0000;
        assert!(matches!(
            cs.init_type0(&h),
            Err(BuildError::ClassCode { .. })
        ));
        let mut h = header();
        h.interrupt_pin = 5;
        assert_eq!(cs.init_type0(&h), Err(BuildError::InterruptPin { pin: 5 }));
        // A failed build leaves an empty space.
        assert_eq!(cs.read(VENDOR_ID, 4), Ok(0));
    }

    #[test]
    fn access_checks() {
        let mut cs = space();
        assert_eq!(cs.read(1, 2), Err(Error::Misaligned { offset: 1, size: 2 }));
        assert_eq!(cs.read(2, 4), Err(Error::Misaligned { offset: 2, size: 4 }));
        assert_eq!(cs.read(0, 3), Err(Error::BadSize { size: 3 }));
        assert_eq!(
            cs.read(4096, 1),
            Err(Error::OutOfRange {
                offset: 4096,
                size: 1
            })
        );
        assert_eq!(
            cs.write(0xffff, 1, 0),
            Err(Error::OutOfRange {
                offset: 0xffff,
                size: 1
            })
        );
        assert_eq!(
            cs.write(3, 2, 0),
            Err(Error::Misaligned { offset: 3, size: 2 })
        );
        assert_eq!(cs.read(4095, 1), Ok(0));
        assert_eq!(cs.read(4092, 4), Ok(0));
        assert_eq!(
            cs.write_with_be(4, 0x10, [0; 4]),
            Err(Error::ByteEnables { be: 0x10 })
        );
        assert_eq!(
            cs.write_with_be(6, 0xf, [0; 4]),
            Err(Error::Misaligned { offset: 6, size: 4 })
        );
    }

    #[test]
    fn byte_enables_select_bytes() {
        let mut cs = space();
        // Write Interrupt Line only, though the DW holds four bytes.
        cs.write_with_be(INTERRUPT_LINE, 0b0001, [0x0a, 0xff, 0xff, 0xff])
            .unwrap();
        assert_eq!(cs.read(INTERRUPT_LINE, 4), Ok(0x0000_010a));
        // No byte enabled: nothing written.
        cs.write_with_be(INTERRUPT_LINE, 0, [0x0b, 0, 0, 0])
            .unwrap();
        assert_eq!(cs.read(INTERRUPT_LINE, 1), Ok(0x0a));
        // Command high byte only.
        cs.write_with_be(COMMAND, 0b0010, [0x06, 0x04, 0, 0])
            .unwrap();
        assert_eq!(cs.read(COMMAND, 2), Ok(0x0400));
        assert_eq!(cs.read_dw_bytes(VENDOR_ID), Ok([0xf4, 0x1a, 0xf1, 0x10]));
    }

    fn full_space() -> Box<ConfigSpace> {
        let mut cs = space();
        assert_eq!(cs.add_pcie(&PcieCap::default()), Ok(0x40));
        let msix = MsixCap {
            table_size: 64,
            table_bar: 0,
            table_offset: 0,
            pba_bar: 0,
            pba_offset: 0x800,
        };
        assert_eq!(cs.add_msix(&msix), Ok(0x7c));
        let sriov = SriovCap {
            initial_vfs: 8,
            total_vfs: 8,
            first_vf_offset: 0x80,
            vf_stride: 1,
            vf_device_id: 0x10f2,
            supported_page_sizes: 0x553,
            vf_bars: [
                Bar::Mem64 {
                    size: 0x4000,
                    prefetchable: true,
                },
                Bar::Unused,
                Bar::Mem32 {
                    size: 0x1000,
                    prefetchable: false,
                },
                Bar::Unused,
                Bar::Unused,
                Bar::Unused,
            ],
        };
        assert_eq!(cs.add_sriov(&sriov), Ok(0x100));
        cs
    }

    /// Walks the list as Linux's `pci_find_capability` does, from the
    /// host side only.
    fn host_walk(cs: &ConfigSpace) -> Vec<(u8, u16)> {
        let mut found = Vec::new();
        assert_ne!(cs.read(STATUS, 2).unwrap() & u32::from(STATUS_CAP_LIST), 0);
        let mut at = cs.read(CAP_PTR, 1).unwrap() as u16;
        while at != 0 && found.len() < 48 {
            let hdr = cs.read(at, 2).unwrap();
            found.push((hdr as u8, at));
            at = (hdr >> 8) as u16;
        }
        found
    }

    #[test]
    fn capability_walk() {
        let cs = full_space();
        let list = [(CAP_ID_PCIE, 0x40), (CAP_ID_MSIX, 0x7c)];
        assert_eq!(host_walk(&cs), list);
        assert_eq!(cs.caps().collect::<Vec<_>>(), list);
        assert_eq!(cs.find_cap(CAP_ID_PCIE), Some(0x40));
        assert_eq!(cs.find_cap(CAP_ID_MSIX), Some(0x7c));
        assert_eq!(cs.find_cap(0x05), None);
        // Extended capability header at 0x100: ID 0x10, version 1, end.
        assert_eq!(cs.read(EXT_CAP_START, 4), Ok(0x0001_0010));
        assert_eq!(
            cs.ext_caps().collect::<Vec<_>>(),
            [(EXT_CAP_ID_SRIOV, 1, 0x100)]
        );
        assert_eq!(cs.find_ext_cap(EXT_CAP_ID_SRIOV), Some(0x100));
    }

    #[test]
    fn no_capabilities_and_loops() {
        let mut cs = space();
        assert_eq!(cs.read(STATUS, 2), Ok(0));
        assert_eq!(cs.caps().count(), 0);
        assert_eq!(cs.ext_caps().count(), 0);
        // A list pointing to itself ends.
        let at = cs.add_capability(0x09, 8).unwrap();
        cs.write_hw(at, 2, 0x4009).unwrap();
        assert_eq!(cs.caps().count(), 48);
        let ext = cs.add_ext_capability(0x0b, 1, 8).unwrap();
        cs.write_hw(ext, 4, 0x1001_000b).unwrap();
        assert!(cs.ext_caps().count() <= (SIZE - 0x100) / 4);
    }

    #[test]
    fn extended_capabilities_chain() {
        let mut cs = full_space();
        let next = cs.add_ext_capability(0x000b, 1, 0x14).unwrap();
        assert_eq!(next, 0x140);
        assert_eq!(cs.read(0x100, 4), Ok(0x1401_0010));
        assert_eq!(cs.find_ext_cap(0x000b), Some(0x140));
        assert_eq!(
            cs.add_ext_capability(0x000c, 1, 0xf00),
            Err(BuildError::NoRoom { len: 0xf00 })
        );
    }

    #[test]
    fn capability_space_runs_out() {
        let mut cs = space();
        let mut added = 0;
        while cs.add_capability(0x09, 16).is_ok() {
            added += 1;
        }
        assert_eq!(added, (0x100 - 0x40) / 16);
        assert_eq!(
            cs.add_capability(0x09, 4),
            Err(BuildError::NoRoom { len: 4 })
        );
        let mut empty = Box::new(ConfigSpace::new());
        assert_eq!(
            empty.add_capability(0x09, 4),
            Err(BuildError::NoRoom { len: 4 })
        );
    }

    #[test]
    fn pcie_capability_registers() {
        let mut cs = full_space();
        let at = cs.find_cap(CAP_ID_PCIE).unwrap();
        assert_eq!(cs.read(at + 2, 2), Ok(0x0002));
        assert_eq!(cs.read(at + PCIE_DEVCAP, 4).map(|v| v & 7), Ok(1));
        // Reset values: RO and NS enabled, MPS 128, MRRS 512.
        assert_eq!(cs.read(at + PCIE_DEVCTL, 2), Ok(0x2810));
        // MPS 256 (001b at bits 7:5), MRRS 4096 (101b at bits 14:12).
        cs.write(at + PCIE_DEVCTL, 2, 0x5020 | 0x0810).unwrap();
        assert_eq!(cs.read(at + PCIE_DEVCTL, 2), Ok(0x5830));
        // Initiate FLR (bit 15) is not kept.
        cs.write(at + PCIE_DEVCTL, 2, 0xffff).unwrap();
        assert_eq!(cs.read(at + PCIE_DEVCTL, 2), Ok(0x79ff));
        // Device Status error bits are RW1C.
        cs.write_hw(at + PCIE_DEVSTA, 2, 0x0009).unwrap();
        cs.write(at + PCIE_DEVSTA, 2, 0x0001).unwrap();
        assert_eq!(cs.read(at + PCIE_DEVSTA, 2), Ok(0x0008));
        // Link: x8 at 8 GT/s, trained; status read-only.
        assert_eq!(cs.read(at + PCIE_LNKCAP, 4).map(|v| v & 0x3ff), Ok(0x83));
        assert_eq!(cs.read(at + PCIE_LNKSTA, 2), Ok(0x1083));
        cs.write(at + PCIE_LNKSTA, 2, 0).unwrap();
        assert_eq!(cs.read(at + PCIE_LNKSTA, 2), Ok(0x1083));
        cs.write(at + PCIE_LNKCTL, 2, 0xffff).unwrap();
        assert_eq!(cs.read(at + PCIE_LNKCTL, 2), Ok(0x00cb));
        assert_eq!(cs.read(at + PCIE_LNKCAP2, 4), Ok(0b1110));
        // 10-bit tags supported and enable writable.
        assert_eq!(cs.read(at + PCIE_DEVCAP2, 4).map(|v| v >> 16 & 3), Ok(3));
        cs.write(at + PCIE_DEVCTL2, 2, 0xffff).unwrap();
        assert_eq!(cs.read(at + PCIE_DEVCTL2, 2), Ok(0x131f));
        let mut bad = space();
        let cap = PcieCap {
            max_payload_supported: 6,
            ..PcieCap::default()
        };
        assert_eq!(bad.add_pcie(&cap), Err(BuildError::PcieField));
    }

    #[test]
    fn msix_capability_registers() {
        let mut cs = full_space();
        let at = cs.find_cap(CAP_ID_MSIX).unwrap();
        assert_eq!(cs.read(at + MSIX_CONTROL, 2), Ok(63));
        assert_eq!(cs.read(at + MSIX_TABLE, 4), Ok(0));
        assert_eq!(cs.read(at + MSIX_PBA, 4), Ok(0x800));
        cs.write(at + MSIX_CONTROL, 2, 0xffff).unwrap();
        assert_eq!(cs.msix_control(), Some(0xc000 | 63));
        cs.write(at + MSIX_CONTROL, 2, u32::from(MSIX_ENABLE))
            .unwrap();
        assert_eq!(cs.msix_control(), Some(0x8000 | 63));
        cs.write(at + MSIX_TABLE, 4, 0xffff_ffff).unwrap();
        assert_eq!(cs.read(at + MSIX_TABLE, 4), Ok(0));
        // Misplaced structures are refused.
        let mut cs = space();
        let mut cap = MsixCap {
            table_size: 257,
            table_bar: 0,
            table_offset: 0,
            pba_bar: 1,
            pba_offset: 0,
        };
        assert_eq!(
            cs.add_msix(&cap),
            Err(BuildError::MsixPlacement { bir: 0, offset: 0 })
        );
        cap.table_size = 256;
        assert!(cs.add_msix(&cap).is_ok());
        let mut cs = space();
        cap.pba_bar = 3;
        assert_eq!(
            cs.add_msix(&cap),
            Err(BuildError::MsixPlacement { bir: 3, offset: 0 })
        );
        cap.pba_bar = 7;
        assert_eq!(
            cs.add_msix(&cap),
            Err(BuildError::MsixPlacement { bir: 7, offset: 0 })
        );
        cap.pba_bar = 1;
        cap.pba_offset = 4;
        assert_eq!(
            cs.add_msix(&cap),
            Err(BuildError::MsixPlacement { bir: 1, offset: 4 })
        );
        cap.table_size = 0;
        assert_eq!(
            cs.add_msix(&cap),
            Err(BuildError::MsixTableSize { size: 0 })
        );
        assert_eq!(cs.find_cap(CAP_ID_MSIX), None);
    }

    #[test]
    fn sriov_capability_registers() {
        let mut cs = full_space();
        let at = cs.find_ext_cap(EXT_CAP_ID_SRIOV).unwrap();
        assert_eq!(cs.read(at + SRIOV_TOTAL_VFS, 2), Ok(8));
        assert_eq!(cs.read(at + SRIOV_INITIAL_VFS, 2), Ok(8));
        cs.write(at + SRIOV_TOTAL_VFS, 2, 64).unwrap();
        assert_eq!(cs.read(at + SRIOV_TOTAL_VFS, 2), Ok(8));
        cs.write(at + SRIOV_NUM_VFS, 2, 4).unwrap();
        assert_eq!(cs.sriov_num_vfs(), Some(4));
        assert_eq!(cs.read(at + SRIOV_VF_OFFSET, 4), Ok(0x0001_0080));
        assert_eq!(cs.read(at + SRIOV_VF_DEVICE_ID, 2), Ok(0x10f2));
        assert_eq!(cs.read(at + SRIOV_SUPPORTED_PAGE_SIZES, 4), Ok(0x553));
        cs.write(at + SRIOV_SYSTEM_PAGE_SIZE, 4, 0x10).unwrap();
        assert_eq!(cs.read(at + SRIOV_SYSTEM_PAGE_SIZE, 4), Ok(0x10));
        // VF Enable and VF MSE are writable, migration bits are not.
        cs.write(at + SRIOV_CONTROL, 2, 0xffff).unwrap();
        assert_eq!(cs.sriov_control(), Some(0x0019));
        // VF BAR sizing.
        let vf_bar = |i: u16| at + SRIOV_VF_BAR0 + 4 * i;
        for (i, want) in [(0, 0xffff_c00c), (1, 0xffff_ffff), (2, 0xffff_f000), (3, 0)] {
            cs.write(vf_bar(i), 4, 0xffff_ffff).unwrap();
            assert_eq!(cs.read(vf_bar(i), 4), Ok(want), "VF BAR{i}");
        }
        cs.write(vf_bar(0), 4, 0x8000_0000).unwrap();
        cs.write(vf_bar(1), 4, 0x2).unwrap();
        assert_eq!(cs.vf_bar_address(0), Some(0x2_8000_0000));
        assert_eq!(cs.vf_bar_address(1), None);
        // Bad counts.
        let mut cs = space();
        let bad = SriovCap {
            initial_vfs: 9,
            total_vfs: 8,
            ..SriovCap::default()
        };
        assert_eq!(cs.add_sriov(&bad), Err(BuildError::SriovVfs));
        let bad = SriovCap {
            total_vfs: 8,
            vf_stride: 0,
            ..SriovCap::default()
        };
        assert_eq!(cs.add_sriov(&bad), Err(BuildError::SriovVfs));
        let bad = SriovCap {
            supported_page_sizes: 2,
            ..SriovCap::default()
        };
        assert_eq!(cs.add_sriov(&bad), Err(BuildError::SriovPageSizes));
        let mut bad = SriovCap::default();
        bad.vf_bars[1] = Bar::Mem64 {
            size: 4096,
            prefetchable: false,
        };
        bad.vf_bars[2] = Bar::Mem32 {
            size: 4096,
            prefetchable: false,
        };
        assert_eq!(cs.add_sriov(&bad), Err(BuildError::BarSlot { index: 2 }));
        assert_eq!(cs.sriov_control(), None);
        assert_eq!(cs.ext_caps().count(), 0);
    }

    #[test]
    fn bar_address_of_huge_index_is_none() {
        // Regression: `4 * index` used to overflow a u16 (and panic) before
        // the index was checked against the six BARs.
        let cs = full_space();
        for index in [6, 16383, 16384, 65535, 65536, usize::MAX] {
            assert_eq!(cs.bar_address(index), None, "BAR {index}");
            assert_eq!(cs.vf_bar_address(index), None, "VF BAR {index}");
        }
    }

    #[test]
    fn raw_masks_round_trip() {
        let src = full_space();
        let mut dst = Box::new(ConfigSpace::new());
        for offset in (0..SIZE as u16).step_by(256) {
            let (rw, c) = src.raw_masks(offset, 256).unwrap();
            dst.set_raw_masks(offset, rw, c).unwrap();
        }
        assert_eq!(src.raw_masks(0, SIZE), dst.raw_masks(0, SIZE));
        assert_eq!(src.raw_masks(4095, 1).map(|m| m.0.len()), Some(1));
        assert_eq!(src.raw_masks(4095, 2), None);
        assert_eq!(src.raw_masks(0xffff, usize::MAX), None);
        assert_eq!(
            dst.set_raw_masks(4094, &[0; 4], &[0; 4]),
            Err(Error::OutOfRange {
                offset: 4094,
                size: 4
            })
        );
        assert_eq!(
            dst.set_raw_masks(0, &[0; 4], &[0; 2]),
            Err(Error::BadSize { size: 2 })
        );
        // Stored as-is: a bit in both masks stays in both.
        dst.set_raw_masks(0x40, &[0xff], &[0x0f]).unwrap();
        assert_eq!(dst.raw_masks(0x40, 1), Some((&[0xff][..], &[0x0f][..])));
    }

    #[test]
    fn zeroed_space_is_new() {
        // The kernel allocates a `ConfigSpace` zeroed (`Zeroable`); check
        // without unsafe code that `new()` is indeed all zeros as far as
        // every field goes (`Bar::Unused` is tag 0 by its explicit
        // discriminant).
        let cs = ConfigSpace::new();
        assert!(cs
            .data
            .iter()
            .chain(&cs.writable)
            .chain(&cs.w1c)
            .all(|&b| b == 0));
        assert_eq!(
            (cs.cap_last, cs.cap_next, cs.ext_last, cs.ext_next, cs.sriov),
            (0, 0, 0, 0, 0)
        );
        assert_eq!(cs.bars, [Bar::Unused; 6]);
        assert_eq!(cs.vf_bars, [Bar::Unused; 6]);
        assert_eq!(Bar::default(), Bar::Unused);
    }

    #[test]
    fn reset_empties() {
        let mut cs = full_space();
        cs.reset();
        assert_eq!(*cs, ConfigSpace::new());
    }
}
