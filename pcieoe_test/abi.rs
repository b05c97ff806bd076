// SPDX-License-Identifier: GPL-2.0

//! The user-space ABI of `/dev/pcieoe-test-<PCI name>`: ioctl numbers and
//! their argument, as a C header would declare them (what
//! `tools/testing/selftests/pcieoe/pcieoe_test.py` packs with `struct`,
//! and `Documentation/test-function.rst` describes):
//!
//! ```c
//! struct pcieoe_test_op {          /* 48 bytes, little-endian */
//!         __u32 size;              /* in: bytes (DMA ops; OUTSIDE: 0 = 64) */
//!         __u32 index;             /* in: BAR 0..5 (BAR), vector 1..8 (MSIX),
//!                                   *     completion vector 1..8 (DMA ops, 0 = 1) */
//!         __u32 flags;             /* in: PCIEOE_TEST_F_* */
//!         __u32 seed;              /* in: pattern seed, 0 = random; out: seed used */
//!         __u32 status;            /* out: STATUS at completion */
//!         __u32 checksum;          /* out: the device's CHECKSUM */
//!         __u32 host_checksum;     /* out: CRC-32 the host computed */
//!         __u32 reserved;          /* in: 0 */
//!         __u64 elapsed_ns;        /* out: COMMAND write -> completion */
//!         __u64 mismatch;          /* out: first differing byte, or ~0 */
//! };
//!
//! struct pcieoe_test_info {        /* 88 bytes */
//!         char  pci_name[32];      /* "10000:00:00.0", NUL-terminated */
//!         __u32 vectors;           /* MSI-X vectors set up */
//!         __u32 magic;             /* MAGIC as read at probe */
//!         __u64 bar_len[6];        /* BAR sizes */
//! };
//!
//! #define PCIEOE_TEST_F_POLL   0x1 /* poll STATUS instead of waiting for the vector */
//! #define PCIEOE_TEST_F_GUARD  0x2 /* OUTSIDE: past the end of a live buffer
//!                                   * (default: a buffer just freed) */
//!
//! #define PCIEOE_TEST_BAR     _IOWR('P', 0x40, struct pcieoe_test_op)
//! #define PCIEOE_TEST_READ    _IOWR('P', 0x41, struct pcieoe_test_op)
//! #define PCIEOE_TEST_WRITE   _IOWR('P', 0x42, struct pcieoe_test_op)
//! #define PCIEOE_TEST_COPY    _IOWR('P', 0x43, struct pcieoe_test_op)
//! #define PCIEOE_TEST_MSIX    _IOWR('P', 0x44, struct pcieoe_test_op)
//! #define PCIEOE_TEST_OUTSIDE _IOWR('P', 0x45, struct pcieoe_test_op)
//! #define PCIEOE_TEST_INFO    _IOR('P', 0x46, struct pcieoe_test_info)
//! ```
//!
//! Every op ioctl returns 0 when the test passed. Otherwise it fails with
//! an errno, and still writes the structure back when it got that far:
//! `EIO` data, checksum or status wrong (see `status`, `mismatch`),
//! `ETIMEDOUT` no completion within [`super::ops::COMPLETION_MS`],
//! `EINVAL` bad argument, `ENODEV` the device was removed, `EINTR` a
//! signal, `ENOMEM`.

use kernel::{ioctl::_IOR, ioctl::_IOWR, prelude::*};

/// Length of [`Op`] in user memory.
pub(crate) const OP_LEN: usize = 48;
/// Length of [`Info`] in user memory.
pub(crate) const INFO_LEN: usize = 88;
/// Length of [`Info::pci_name`].
pub(crate) const NAME_LEN: usize = 32;

/// Only used to size the ioctl numbers: the ABI's layout of `struct
/// pcieoe_test_op`.
#[repr(C)]
#[allow(dead_code)]
pub(crate) struct OpLayout([u32; 8], [u64; 2]);

/// Only used to size the ioctl numbers: `struct pcieoe_test_info`.
#[repr(C)]
#[allow(dead_code)]
pub(crate) struct InfoLayout([u8; NAME_LEN], [u32; 2], [u64; 6]);

const _: () = assert!(core::mem::size_of::<OpLayout>() == OP_LEN);
const _: () = assert!(core::mem::size_of::<InfoLayout>() == INFO_LEN);

const TYPE: u32 = b'P' as u32;

/// BAR test.
pub(crate) const BAR: u32 = _IOWR::<OpLayout>(TYPE, 0x40);
/// The device DMA-reads a host buffer.
pub(crate) const READ: u32 = _IOWR::<OpLayout>(TYPE, 0x41);
/// The device DMA-writes a host buffer.
pub(crate) const WRITE: u32 = _IOWR::<OpLayout>(TYPE, 0x42);
/// The device copies a host buffer into another.
pub(crate) const COPY: u32 = _IOWR::<OpLayout>(TYPE, 0x43);
/// The device raises an MSI-X vector.
pub(crate) const MSIX: u32 = _IOWR::<OpLayout>(TYPE, 0x44);
/// The device reads an address with no mapping and must be refused.
pub(crate) const OUTSIDE: u32 = _IOWR::<OpLayout>(TYPE, 0x45);
/// Which device this is.
pub(crate) const INFO: u32 = _IOR::<InfoLayout>(TYPE, 0x46);

/// [`Op::flags`]: poll STATUS instead of waiting for the vector.
pub(crate) const F_POLL: u32 = 1 << 0;
/// [`Op::flags`] of OUTSIDE: read past the end of a live buffer.
pub(crate) const F_GUARD: u32 = 1 << 1;
/// The flags defined.
const F_ALL: u32 = F_POLL | F_GUARD;

/// `struct pcieoe_test_op`, decoded.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Op {
    pub(crate) size: u32,
    pub(crate) index: u32,
    pub(crate) flags: u32,
    pub(crate) seed: u32,
    pub(crate) status: u32,
    pub(crate) checksum: u32,
    pub(crate) host_checksum: u32,
    pub(crate) elapsed_ns: u64,
    pub(crate) mismatch: u64,
}

/// Little-endian `u32` at `at` of `b` (0 past the end; callers pass
/// fixed-size arrays, where it never is).
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

impl Op {
    /// Decodes what user space passed.
    ///
    /// # Errors
    ///
    /// `EINVAL` for unknown flags or a nonzero `reserved`.
    pub(crate) fn decode(b: &[u8; OP_LEN]) -> Result<Self> {
        let op = Op {
            size: le32(b, 0),
            index: le32(b, 4),
            flags: le32(b, 8),
            seed: le32(b, 12),
            mismatch: u64::MAX,
            ..Op::default()
        };
        if op.flags & !F_ALL != 0 || le32(b, 28) != 0 {
            return Err(EINVAL);
        }
        Ok(op)
    }

    /// Encodes the structure for user space.
    pub(crate) fn encode(&self) -> [u8; OP_LEN] {
        let mut b = [0u8; OP_LEN];
        for (i, v) in [
            self.size,
            self.index,
            self.flags,
            self.seed,
            self.status,
            self.checksum,
            self.host_checksum,
            0,
        ]
        .iter()
        .enumerate()
        {
            put(&mut b, i * 4, &v.to_le_bytes());
        }
        put(&mut b, 32, &self.elapsed_ns.to_le_bytes());
        put(&mut b, 40, &self.mismatch.to_le_bytes());
        b
    }
}

/// `struct pcieoe_test_info`.
pub(crate) struct Info<'a> {
    pub(crate) pci_name: &'a [u8],
    pub(crate) vectors: u32,
    pub(crate) magic: u32,
    pub(crate) bar_len: [u64; 6],
}

impl Info<'_> {
    /// Encodes the structure for user space; the name is cut to 31 bytes.
    pub(crate) fn encode(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        let n = self.pci_name.len().min(NAME_LEN - 1);
        put(&mut b, 0, self.pci_name.get(..n).unwrap_or(&[]));
        put(&mut b, 32, &self.vectors.to_le_bytes());
        put(&mut b, 36, &self.magic.to_le_bytes());
        for (i, len) in self.bar_len.iter().enumerate() {
            put(&mut b, 40 + i * 8, &len.to_le_bytes());
        }
        b
    }
}
