// SPDX-License-Identifier: GPL-2.0

//! The per-device state and the test operations behind the ioctls.
//!
//! Every operation programs the function's BAR0 registers
//! (`testfn.rs`) through [`Mmio`], starts one command, and waits for its
//! completion: for the completion vector's handler (FLAGS bit 0), which
//! records the time, then STATUS; or, with [`abi::F_POLL`], by reading
//! STATUS until BUSY clears. Timings run from just before the COMMAND
//! write to the handler's timestamp (or the STATUS read that saw the
//! end). DMA buffers are coherent buffers of the function, which the
//! host's software IOMMU maps; they live only inside an operation.

use kernel::{
    device,
    dma_coherent::CoherentBuffer,
    irq, miscdev, new_condvar, new_mutex, new_spinlock_irq,
    pci_host::{Mmio, Vectors},
    pr_warn_ratelimited,
    prelude::*,
    random,
    spinlock_irq::SpinLockIrq,
    str::{CStr, CString},
    sync::{Arc, CondVar, CondVarTimeoutResult, Mutex},
    time::{msecs_to_jiffies, Ktime},
    types::ARef,
    uaccess::UserSlice,
};

use crate::abi::{self, Info, Op, INFO_LEN, OP_LEN};
use crate::pcieoe::{
    dma::MAX_DMA_LEN,
    testfn::{
        crc32, fill_pattern, CMD_COPY, CMD_RAISE_MSIX, CMD_READ, CMD_WRITE, FLAG_IRQ, MAGIC_VALUE,
        MSIX_VECTORS, REG_CHECKSUM, REG_COMMAND, REG_DST_ADDR_HI, REG_DST_ADDR_LO, REG_FLAGS,
        REG_IRQ_NUMBER, REG_MAGIC, REG_SCRATCH0, REG_SCRATCH1, REG_SEED, REG_SIZE, REG_SRC_ADDR_HI,
        REG_SRC_ADDR_LO, REG_STATUS, STATUS_BUSY, STATUS_COPY_FAIL, STATUS_COPY_SUCCESS,
        STATUS_IRQ_FAIL, STATUS_IRQ_RAISED, STATUS_READ_FAIL, STATUS_READ_SUCCESS,
        STATUS_SRC_ADDR_INVALID, STATUS_WRITE_FAIL, STATUS_WRITE_SUCCESS,
    },
};

/// How long a command may take: 1 MiB under netem's loss and the test
/// VM's software emulation takes seconds.
pub(crate) const COMPLETION_MS: u32 = 10_000;
/// How long an abandoned command may take to stop ([`Ctx::quiesce`]).
const QUIESCE_MS: u32 = 2_000;
/// BAR tests move the memory in pieces of this size (and check for
/// removal between pieces).
const BAR_CHUNK: usize = 64 << 10;
/// Largest BAR the BAR test fills.
const BAR_MAX: u64 = 16 << 20;
/// Bytes after a destination buffer, filled with [`POISON`], that a
/// command must leave alone.
const TAIL: usize = 64;
/// What destination buffers hold before a command.
const POISON: u8 = 0xa5;
/// What the OUTSIDE test reads by default.
const OUTSIDE_LEN: usize = 64;
/// A page: the IOMMU's guard behind a mapping is at least this long.
const PAGE: u64 = 4096;

/// `ETIMEDOUT`, which 6.12's `error::code` lacks.
fn etimedout() -> Error {
    Error::from_errno(-(kernel::bindings::ETIMEDOUT as i32))
}

fn now_ns() -> i64 {
    Ktime::ktime_get().to_ns()
}

/// What the vector handlers record, under [`Irqs::state`].
struct IrqState {
    /// The device was removed: waiters give up.
    gone: bool,
    /// Interrupts taken per vector.
    count: [u64; MSIX_VECTORS],
    /// `CLOCK_MONOTONIC` ns of each vector's latest interrupt.
    at_ns: [i64; MSIX_VECTORS],
}

/// The vector handlers' side: shared by the handlers and the device.
#[pin_data]
pub(crate) struct Irqs {
    #[pin]
    state: SpinLockIrq<IrqState>,
    #[pin]
    cv: CondVar,
}

impl Irqs {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Irqs {
                state <- new_spinlock_irq!(IrqState {
                    gone: false,
                    count: [0; MSIX_VECTORS],
                    at_ns: [0; MSIX_VECTORS],
                }),
                cv <- new_condvar!("pcieoe_test_irq"),
            }),
            GFP_KERNEL,
        )
    }

    /// Marks the device removed and wakes every waiter.
    pub(crate) fn set_gone(&self) {
        self.state.lock().gone = true;
        self.cv.notify_all();
    }

    fn check_live(&self) -> Result {
        if self.state.lock().gone {
            Err(ENODEV)
        } else {
            Ok(())
        }
    }

    fn count(&self, vector: usize) -> u64 {
        self.state.lock().count.get(vector).copied().unwrap_or(0)
    }

    /// Waits until vector `vector` has had an interrupt after the first
    /// `seen`, or until `deadline` (ns); returns the time of the latest.
    fn wait(&self, vector: usize, seen: u64, deadline: i64) -> Result<i64> {
        let mut s = self.state.lock();
        loop {
            if s.gone {
                return Err(ENODEV);
            }
            if s.count.get(vector).copied().unwrap_or(0) != seen {
                return Ok(s.at_ns.get(vector).copied().unwrap_or(0));
            }
            let left = deadline.saturating_sub(now_ns());
            if left <= 0 {
                return Err(etimedout());
            }
            let ms = u32::try_from(left / 1_000_000 + 1).unwrap_or(COMPLETION_MS);
            // The handler updates the state under the lock, and the wait
            // enqueues before dropping it: no wake-up is lost.
            if let CondVarTimeoutResult::Signal { .. } = self
                .cv
                .wait_interruptible_timeout(&mut s, msecs_to_jiffies(ms))
            {
                return Err(EINTR);
            }
        }
    }
}

/// The handler of one vector: hard-irq context, so a timestamp, a count
/// and a wake-up.
pub(crate) struct VectorHandler {
    pub(crate) irqs: Arc<Irqs>,
    pub(crate) index: usize,
}

impl irq::Handler for VectorHandler {
    fn handle(&self) -> irq::Return {
        let now = now_ns();
        {
            let mut s = self.irqs.state.lock();
            if let Some(c) = s.count.get_mut(self.index) {
                *c = c.wrapping_add(1);
            }
            if let Some(t) = s.at_ns.get_mut(self.index) {
                *t = now;
            }
        }
        self.irqs.cv.notify_all();
        irq::Return::Handled
    }
}

/// What a bound device owns; dropped (in field order: handlers before
/// their vectors) by `remove`, or when `probe` fails.
pub(crate) struct Hw {
    /// Kept for their `Drop` (`free_irq()`), which must come first.
    pub(crate) _handlers: KVec<irq::Registration<VectorHandler>>,
    pub(crate) vectors: Vectors,
    pub(crate) mmio: Mmio,
    /// The function, for its DMA buffers.
    pub(crate) dev: ARef<device::Device>,
    pub(crate) bar_len: [u64; 6],
    pub(crate) magic: u32,
}

/// A bound test function, behind its misc device.
#[pin_data]
pub(crate) struct TestDev {
    /// `None` once removed. Held across a whole operation, and by
    /// `remove` to tear down, so the two never overlap.
    #[pin]
    hw: Mutex<Option<Hw>>,
    pub(crate) irqs: Arc<Irqs>,
    /// The PCI name, for messages and `INFO`.
    name: CString,
    /// Vectors set up.
    vectors: u32,
}

impl TestDev {
    pub(crate) fn new(hw: Hw, irqs: Arc<Irqs>, name: &CStr) -> Result<Arc<Self>> {
        let vectors = u32::try_from(hw.vectors.len()).unwrap_or(0);
        let name = name.to_cstring()?;
        Arc::pin_init(
            pin_init!(TestDev {
                hw <- new_mutex!(Some(hw)),
                irqs,
                name,
                vectors,
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn vectors(&self) -> u32 {
        self.vectors
    }

    /// Tears the hardware side down, after waiting for a running
    /// operation (which [`Irqs::set_gone`] has cut short).
    pub(crate) fn shutdown(&self) {
        let hw = self.hw.lock().take();
        drop(hw);
    }

    fn info(&self, arg: usize) -> Result<isize> {
        let guard = self.hw.lock();
        let hw = guard.as_ref().ok_or(ENODEV)?;
        let info = Info {
            pci_name: self.name.as_bytes(),
            vectors: self.vectors(),
            magic: hw.magic,
            bar_len: hw.bar_len,
        };
        let b = info.encode();
        drop(guard);
        UserSlice::new(arg, INFO_LEN).writer().write_slice(&b)?;
        Ok(0)
    }

    fn op(&self, cmd: u32, arg: usize) -> Result<isize> {
        let (mut reader, mut writer) = UserSlice::new(arg, OP_LEN).reader_writer();
        let mut b = [0u8; OP_LEN];
        reader.read_slice(&mut b)?;
        let mut op = Op::decode(&b)?;
        let result = {
            let guard = self.hw.lock();
            let hw = guard.as_ref().ok_or(ENODEV)?;
            let c = Ctx {
                hw,
                irqs: &self.irqs,
                name: &self.name,
            };
            match cmd {
                abi::BAR => c.bar(&mut op),
                abi::READ => c.read(&mut op),
                abi::WRITE => c.write(&mut op),
                abi::COPY => c.copy(&mut op),
                abi::MSIX => c.msix(&mut op),
                _ => c.outside(&mut op),
            }
        };
        writer.write_slice(&op.encode())?;
        result.map(|()| 0)
    }
}

impl miscdev::MiscDevice for TestDev {
    const OWNER: &'static ThisModule = &crate::THIS_MODULE;

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::INFO => self.info(arg),
            abi::BAR | abi::READ | abi::WRITE | abi::COPY | abi::MSIX | abi::OUTSIDE => {
                self.op(cmd, arg)
            }
            _ => Err(ENOTTY),
        }
    }
}

/// The first offset where `a` and `b` differ (or where one ends).
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

/// A DMA size from user space: 1 byte to 1 MiB.
fn dma_size(size: u32) -> Result<usize> {
    match usize::try_from(size) {
        Ok(s) if (1..=MAX_DMA_LEN).contains(&s) => Ok(s),
        _ => Err(EINVAL),
    }
}

/// The seed to use: the caller's, or a random one for 0.
fn seed(op: &mut Op) -> u32 {
    if op.seed == 0 {
        op.seed = random::u32() | 1;
    }
    op.seed
}

/// A zeroed staging buffer (vmalloc: up to 1 MiB).
fn staging(len: usize) -> Result<VVec<u8>> {
    Ok(VVec::from_elem(0u8, len, GFP_KERNEL)?)
}

/// One operation on a live device.
struct Ctx<'a> {
    hw: &'a Hw,
    irqs: &'a Irqs,
    name: &'a CStr,
}

impl Ctx<'_> {
    fn r(&self, reg: u32) -> Result<u32> {
        self.hw.mmio.read32(0, reg.into())
    }

    fn w(&self, reg: u32, value: u32) -> Result {
        self.hw.mmio.write32(0, reg.into(), value)
    }

    fn w64(&self, lo: u32, hi: u32, value: u64) -> Result {
        self.w(lo, value as u32)?;
        self.w(hi, (value >> 32) as u32)
    }

    fn buffer(&self, len: usize) -> Result<CoherentBuffer> {
        CoherentBuffer::alloc(&self.hw.dev, len, GFP_KERNEL).inspect_err(|e| {
            pr_warn_ratelimited!("{}: DMA buffer of {} bytes: {:?}\n", self.name, len, e);
        })
    }

    /// The 0-based vector of a 1-based `index` (0 means 1 for DMA ops).
    fn vector(&self, index: u32, default_first: bool) -> Result<usize> {
        let index = if index == 0 && default_first {
            1
        } else {
            index
        };
        let v = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .ok_or(EINVAL)?;
        if v >= self.hw.vectors.len() {
            return Err(EINVAL);
        }
        Ok(v)
    }

    /// Starts command `cmd` with completion vector `vector` and waits for
    /// its end; fills `op.status`, `op.checksum` and `op.elapsed_ns`.
    fn run(&self, op: &mut Op, cmd: u32, vector: usize) -> Result {
        let poll = op.flags & abi::F_POLL != 0;
        let status = self.r(REG_STATUS)?;
        if status & STATUS_BUSY != 0 {
            // A command that timed out earlier is still running.
            pr_warn_ratelimited!("{}: the function is still busy\n", self.name);
            return Err(EBUSY);
        }
        self.w(REG_IRQ_NUMBER, vector as u32)?;
        self.w(REG_FLAGS, if poll { 0 } else { FLAG_IRQ })?;
        let mut seen = self.irqs.count(vector);
        let t0 = now_ns();
        let deadline = t0.saturating_add(i64::from(COMPLETION_MS) * 1_000_000);
        self.w(REG_COMMAND, cmd)?;
        let (status, at) = loop {
            let at = if poll {
                if let Err(e) = self.irqs.check_live() {
                    break Err(e);
                }
                if now_ns() > deadline {
                    break Err(etimedout());
                }
                None
            } else {
                match self.irqs.wait(vector, seen, deadline) {
                    Ok(at) => Some(at),
                    Err(e) => break Err(e),
                }
            };
            let status = self.r(REG_STATUS)?;
            if status & STATUS_BUSY == 0 {
                break Ok((status, at.unwrap_or_else(now_ns)));
            }
            // Polling, or an interrupt of an earlier command.
            seen = self.irqs.count(vector);
        }
        .inspect_err(|e| {
            if *e == etimedout() {
                pr_warn_ratelimited!(
                    "{}: command {:#x} not done within {} ms\n",
                    self.name,
                    cmd,
                    COMPLETION_MS
                );
            }
            self.quiesce();
        })?;
        op.status = status;
        op.elapsed_ns = u64::try_from(at.saturating_sub(t0)).unwrap_or(0);
        op.checksum = self.r(REG_CHECKSUM)?;
        Ok(())
    }

    /// After giving up on a command (removal, a signal, a timeout):
    /// waits up to [`QUIESCE_MS`] for the function to leave BUSY, so that
    /// the buffers freed next are no longer in use. (The software IOMMU
    /// would refuse and count late accesses anyway; this keeps them for
    /// real faults.) On removal Bus Master Enable is already cleared, so
    /// the function abandons the command at its next step.
    fn quiesce(&self) {
        let deadline = now_ns().saturating_add(i64::from(QUIESCE_MS) * 1_000_000);
        while now_ns() < deadline {
            match self.r(REG_STATUS) {
                Ok(status) if status & STATUS_BUSY != 0 => {}
                _ => return,
            }
        }
    }

    /// Whether a command ended with `good` and none of `bad`, and the
    /// checksums agree; logs what went wrong.
    fn verdict(&self, what: &str, op: &Op, good: u32, bad: u32) -> Result {
        if op.status & good == 0 || op.status & bad != 0 {
            pr_warn_ratelimited!(
                "{}: {} of {} bytes: STATUS {:#x}\n",
                self.name,
                what,
                op.size,
                op.status
            );
            return Err(EIO);
        }
        if op.checksum != op.host_checksum {
            pr_warn_ratelimited!(
                "{}: {} of {} bytes: CHECKSUM {:#010x}, host {:#010x}\n",
                self.name,
                what,
                op.size,
                op.checksum,
                op.host_checksum
            );
            return Err(EIO);
        }
        if op.mismatch != u64::MAX {
            pr_warn_ratelimited!(
                "{}: {} of {} bytes: data differ at byte {}\n",
                self.name,
                what,
                op.size,
                op.mismatch
            );
            return Err(EIO);
        }
        Ok(())
    }

    /// A destination buffer of `size` bytes plus [`TAIL`], all poison.
    fn poisoned(&self, size: usize) -> Result<CoherentBuffer> {
        let len = size.checked_add(TAIL).ok_or(EINVAL)?;
        let mut buf = self.buffer(len)?;
        let mut poison = staging(len)?;
        poison.fill(POISON);
        buf.write(0, &poison)?;
        Ok(buf)
    }

    /// Compares what a command left in `dst` with `want`, and checks that
    /// the tail is still poison; records the first difference.
    fn check_dst(&self, op: &mut Op, dst: &CoherentBuffer, want: &[u8]) -> Result {
        let mut got = staging(dst.len())?;
        dst.read(0, &mut got)?;
        let (body, tail) = got.split_at(want.len().min(got.len()));
        let diff = first_diff(body, want).or_else(|| {
            tail.iter()
                .position(|&b| b != POISON)
                .map(|i| want.len() + i)
        });
        if let Some(at) = diff {
            op.mismatch = at as u64;
        }
        Ok(())
    }

    /// BAR test: BAR0's MAGIC and scratch registers, or BAR1 to BAR5
    /// filled with a seeded pattern and read back.
    /// [`Mmio::post`], retried while the link is backlogged (for up to
    /// [`COMPLETION_MS`]).
    fn post(&self, bar: u8, at: u64, data: &[u8]) -> Result {
        for _ in 0..COMPLETION_MS {
            match self.hw.mmio.post(bar, at, data) {
                Err(e) if e == EAGAIN => kernel::delay::msleep(1),
                r => return r,
            }
        }
        Err(Error::from_errno(-(kernel::bindings::ETIMEDOUT as i32)))
    }

    fn bar(&self, op: &mut Op) -> Result {
        let bar = u8::try_from(op.index).map_err(|_| EINVAL)?;
        let len = *self.hw.bar_len.get(usize::from(bar)).ok_or(EINVAL)?;
        let seed = seed(op);
        let t0 = now_ns();
        if bar == 0 {
            self.bar0(op, seed)?;
        } else {
            if len == 0 || len > BAR_MAX {
                return Err(EINVAL);
            }
            let len = usize::try_from(len).map_err(|_| EINVAL)?;
            op.size = len as u32;
            let mut want = staging(len)?;
            fill_pattern(seed, &mut want);
            op.host_checksum = crc32(&want);
            // Every other chunk goes by the non-sleeping path drivers use
            // on their data path (Mmio::post), so both are tested, and in
            // order with each other.
            let mut at = 0;
            for (i, chunk) in want.chunks(BAR_CHUNK).enumerate() {
                self.irqs.check_live()?;
                if i % 2 == 1 {
                    self.post(bar, at as u64, chunk)?;
                } else {
                    self.hw.mmio.write(bar, at as u64, chunk)?;
                }
                at += chunk.len();
            }
            let mut got = staging(len)?;
            let mut at = 0;
            for chunk in got.chunks_mut(BAR_CHUNK) {
                self.irqs.check_live()?;
                self.hw.mmio.read(bar, at as u64, chunk)?;
                at += chunk.len();
            }
            op.checksum = crc32(&got);
            if let Some(d) = first_diff(&got, &want) {
                op.mismatch = d as u64;
            }
        }
        op.elapsed_ns = u64::try_from(now_ns().saturating_sub(t0)).unwrap_or(0);
        if op.mismatch != u64::MAX || op.checksum != op.host_checksum {
            pr_warn_ratelimited!(
                "{}: BAR{} differs at byte {:#x}\n",
                self.name,
                bar,
                op.mismatch
            );
            return Err(EIO);
        }
        Ok(())
    }

    /// BAR0: MAGIC reads right and ignores writes; SCRATCH0/1 keep what
    /// is written, whole or byte-wise. `op.mismatch` is the register's
    /// offset on failure, `op.checksum` what it read, `host_checksum` what
    /// was expected.
    fn bar0(&self, op: &mut Op, seed: u32) -> Result {
        let mut want = |reg: u32, want: u32, got: u32| {
            if want != got && op.mismatch == u64::MAX {
                op.mismatch = reg.into();
                op.checksum = got;
                op.host_checksum = want;
            }
        };
        want(REG_MAGIC, MAGIC_VALUE, self.r(REG_MAGIC)?);
        self.w(REG_MAGIC, !MAGIC_VALUE)?;
        want(REG_MAGIC, MAGIC_VALUE, self.r(REG_MAGIC)?);
        let patterns = [
            0xa0a0_a0a0,
            0x0a0a_0a0a,
            0xa5a5_a5a5,
            0x5a5a_5a5a,
            0xffff_ffff,
            0,
            seed,
            !seed,
        ];
        for reg in [REG_SCRATCH0, REG_SCRATCH1] {
            for p in patterns {
                self.w(reg, p)?;
                want(reg, p, self.r(reg)?);
            }
        }
        // Both scratch registers in one 8-byte write and read.
        let mut both = [0u8; 8];
        fill_pattern(seed, &mut both);
        self.hw.mmio.write(0, REG_SCRATCH0.into(), &both)?;
        let mut back = [0u8; 8];
        self.hw.mmio.read(0, REG_SCRATCH0.into(), &mut back)?;
        let word = |b: &[u8; 8], i: usize| {
            b.get(i..i + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map_or(0, u32::from_le_bytes)
        };
        want(REG_SCRATCH0, word(&both, 0), word(&back, 0));
        want(REG_SCRATCH1, word(&both, 4), word(&back, 4));
        // Two bytes in the middle of SCRATCH0 (byte enables 0b0110).
        self.w(REG_SCRATCH0, 0x1122_3344)?;
        self.hw
            .mmio
            .write(0, u64::from(REG_SCRATCH0) + 1, &[0xaa, 0xbb])?;
        want(REG_SCRATCH0, 0x11bb_aa44, self.r(REG_SCRATCH0)?);
        if op.mismatch == u64::MAX {
            op.checksum = MAGIC_VALUE;
            op.host_checksum = MAGIC_VALUE;
        }
        op.size = 8;
        Ok(())
    }

    /// READ: the function reads `size` bytes of a host buffer; its
    /// CHECKSUM must be the CRC of what the host put there.
    fn read(&self, op: &mut Op) -> Result {
        let size = dma_size(op.size)?;
        let vector = self.vector(op.index, true)?;
        let seed = seed(op);
        let mut data = staging(size)?;
        fill_pattern(seed, &mut data);
        op.host_checksum = crc32(&data);
        let mut src = self.buffer(size)?;
        src.write(0, &data)?;
        self.w64(REG_SRC_ADDR_LO, REG_SRC_ADDR_HI, src.dma_handle())?;
        self.w(REG_SIZE, op.size)?;
        self.run(op, CMD_READ, vector)?;
        self.verdict("READ", op, STATUS_READ_SUCCESS, STATUS_READ_FAIL)
    }

    /// WRITE: the function writes `fill_pattern(seed)` into a host buffer;
    /// the buffer must hold exactly that, and CHECKSUM be its CRC.
    fn write(&self, op: &mut Op) -> Result {
        let size = dma_size(op.size)?;
        let vector = self.vector(op.index, true)?;
        let seed = seed(op);
        let mut want = staging(size)?;
        fill_pattern(seed, &mut want);
        op.host_checksum = crc32(&want);
        let dst = self.poisoned(size)?;
        self.w64(REG_DST_ADDR_LO, REG_DST_ADDR_HI, dst.dma_handle())?;
        self.w(REG_SIZE, op.size)?;
        self.w(REG_SEED, seed)?;
        self.run(op, CMD_WRITE, vector)?;
        self.check_dst(op, &dst, &want)?;
        self.verdict("WRITE", op, STATUS_WRITE_SUCCESS, STATUS_WRITE_FAIL)
    }

    /// COPY: the function copies one host buffer into another.
    fn copy(&self, op: &mut Op) -> Result {
        let size = dma_size(op.size)?;
        let vector = self.vector(op.index, true)?;
        let seed = seed(op);
        let mut data = staging(size)?;
        fill_pattern(seed, &mut data);
        op.host_checksum = crc32(&data);
        let mut src = self.buffer(size)?;
        src.write(0, &data)?;
        let dst = self.poisoned(size)?;
        self.w64(REG_SRC_ADDR_LO, REG_SRC_ADDR_HI, src.dma_handle())?;
        self.w64(REG_DST_ADDR_LO, REG_DST_ADDR_HI, dst.dma_handle())?;
        self.w(REG_SIZE, op.size)?;
        self.run(op, CMD_COPY, vector)?;
        self.check_dst(op, &dst, &data)?;
        self.verdict("COPY", op, STATUS_COPY_SUCCESS, STATUS_COPY_FAIL)
    }

    /// MSIX: the function raises vector `index` (1-based); the latency
    /// runs from the COMMAND write to that vector's handler.
    fn msix(&self, op: &mut Op) -> Result {
        let vector = self.vector(op.index, false)?;
        self.w(REG_FLAGS, 0)?;
        self.w(REG_IRQ_NUMBER, vector as u32)?;
        let seen = self.irqs.count(vector);
        let t0 = now_ns();
        let deadline = t0.saturating_add(i64::from(COMPLETION_MS) * 1_000_000);
        self.w(REG_COMMAND, CMD_RAISE_MSIX)?;
        let at = self.irqs.wait(vector, seen, deadline);
        op.status = self.r(REG_STATUS)?;
        let at = at.inspect_err(|e| {
            pr_warn_ratelimited!(
                "{}: MSI-X vector {}: {:?} (STATUS {:#x})\n",
                self.name,
                op.index,
                e,
                op.status
            );
        })?;
        op.elapsed_ns = u64::try_from(at.saturating_sub(t0)).unwrap_or(0);
        if op.status & STATUS_IRQ_RAISED == 0 || op.status & STATUS_IRQ_FAIL != 0 {
            return Err(EIO);
        }
        Ok(())
    }

    /// OUTSIDE: the function reads an IOVA with no mapping (a buffer just
    /// freed, or with [`abi::F_GUARD`] the guard page behind a live one);
    /// the host must refuse, so the command fails with SRC_ADDR_INVALID.
    fn outside(&self, op: &mut Op) -> Result {
        if op.size == 0 {
            op.size = OUTSIDE_LEN as u32;
        }
        dma_size(op.size)?;
        let vector = self.vector(op.index, true)?;
        let buf = self.buffer(PAGE as usize)?;
        let (addr, _live) = if op.flags & abi::F_GUARD != 0 {
            (buf.dma_handle().wrapping_add(PAGE), Some(buf))
        } else {
            let addr = buf.dma_handle();
            drop(buf);
            (addr, None)
        };
        self.w64(REG_SRC_ADDR_LO, REG_SRC_ADDR_HI, addr)?;
        self.w(REG_SIZE, op.size)?;
        self.run(op, CMD_READ, vector)?;
        let want = STATUS_READ_FAIL | STATUS_SRC_ADDR_INVALID;
        if op.status & want != want || op.status & STATUS_READ_SUCCESS != 0 {
            pr_warn_ratelimited!(
                "{}: a read at unmapped {:#x} ended with STATUS {:#x}\n",
                self.name,
                addr,
                op.status
            );
            return Err(EIO);
        }
        Ok(())
    }
}
