#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""pcieoe_test.py: runs the tests of a pcieoe test function through its
misc device, as tools/pci/pcitest does for pci_endpoint_test.

The device is /dev/pcieoe-test-<PCI name> (pcieoe_test.ko); the ioctl ABI
is in Documentation/test-function.rst and pcieoe_test/abi.rs.

Examples:
  pcieoe_test.py -d /dev/pcieoe-test-10000:00:00.0 -i
  pcieoe_test.py -d ... -b 0            BAR0 registers
  pcieoe_test.py -d ... -r -s 65536     DMA read of 64 KiB
  pcieoe_test.py -d ... -c -s 1048576 -n 10   ten 1 MiB copies
  pcieoe_test.py -d ... -x 3            MSI-X vector 3
  pcieoe_test.py -d ... --outside       DMA outside a mapping, refused

Each test prints one line: "<test>: OKAY|NOT OKAY (<error>) ..." with the
status, checksums, elapsed time and throughput. --loop repeats until an
error (for the removal tests). Exit status 0 when every test passed.
"""

import argparse
import errno
import fcntl
import os
import struct
import sys

OP = struct.Struct("<8I2Q")  # struct pcieoe_test_op, 48 bytes
INFO = struct.Struct("<32s2I6Q")  # struct pcieoe_test_info, 88 bytes
assert OP.size == 48 and INFO.size == 88


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (ord("P") << 8) | nr


_IOWR, _IOR = 3, 2
BAR = _ioc(_IOWR, 0x40, OP.size)
READ = _ioc(_IOWR, 0x41, OP.size)
WRITE = _ioc(_IOWR, 0x42, OP.size)
COPY = _ioc(_IOWR, 0x43, OP.size)
MSIX = _ioc(_IOWR, 0x44, OP.size)
OUTSIDE = _ioc(_IOWR, 0x45, OP.size)
INFO_CMD = _ioc(_IOR, 0x46, INFO.size)

F_POLL = 0x1
F_GUARD = 0x2
NO_MISMATCH = (1 << 64) - 1


def op(fd, cmd, size=0, index=0, flags=0, seed=0):
    """Runs one op ioctl: returns (errno or 0, the fields written back)."""
    buf = bytearray(OP.pack(size, index, flags, seed, 0, 0, 0, 0, 0, NO_MISMATCH))
    err = 0
    try:
        fcntl.ioctl(fd, cmd, buf, True)
    except OSError as e:
        err = e.errno
    f = OP.unpack(bytes(buf))
    keys = ("size", "index", "flags", "seed", "status", "checksum",
            "host_checksum", "reserved", "elapsed_ns", "mismatch")
    return err, dict(zip(keys, f))


def info(fd):
    buf = bytearray(INFO.size)
    fcntl.ioctl(fd, INFO_CMD, buf, True)
    name, vectors, magic, *bars = INFO.unpack(bytes(buf))
    return name.split(b"\0", 1)[0].decode(), vectors, magic, bars


def fmt_rate(size, ns):
    if not ns:
        return ""
    mib = size / ns * 1e9 / (1 << 20)
    return f" {mib:.2f} MiB/s"


def report(name, err, r, size=None):
    ok = err == 0
    line = f"{name}: {'OKAY' if ok else 'NOT OKAY'}"
    if not ok:
        line += f" ({errno.errorcode.get(err, err)}: {os.strerror(err)})"
    line += (f" status {r['status']:#x} checksum {r['checksum']:#010x}"
             f" host {r['host_checksum']:#010x} seed {r['seed']:#010x}"
             f" elapsed_ns {r['elapsed_ns']}")
    if r["mismatch"] != NO_MISMATCH:
        line += f" mismatch_at {r['mismatch']}"
    if size:
        line += fmt_rate(size, r["elapsed_ns"])
    print(line, flush=True)
    return ok


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--device", required=True, help="/dev/pcieoe-test-<PCI name>")
    p.add_argument("-i", "--info", action="store_true", help="print the device's identity")
    p.add_argument("-b", "--bar", type=int, action="append", help="BAR test (0..5)")
    p.add_argument("-r", "--read", action="store_true", help="DMA read test")
    p.add_argument("-w", "--write", action="store_true", help="DMA write test")
    p.add_argument("-c", "--copy", action="store_true", help="DMA copy test")
    p.add_argument("-s", "--size", type=int, action="append",
                   help="DMA size in bytes (repeatable; default 4096)")
    p.add_argument("-x", "--msix", type=int, action="append", help="MSI-X vector (1..8)")
    p.add_argument("--outside", action="store_true",
                   help="DMA read outside a mapping: must be refused")
    p.add_argument("--guard", action="store_true",
                   help="--outside: read the guard page behind a live buffer")
    p.add_argument("--poll", action="store_true", help="poll STATUS instead of the interrupt")
    p.add_argument("-v", "--vector", type=int, default=0,
                   help="completion vector of DMA tests (1..8, default 1)")
    p.add_argument("--seed", type=lambda s: int(s, 0), default=0, help="pattern seed (0: random)")
    p.add_argument("-n", "--count", type=int, default=1, help="repeat each test N times")
    p.add_argument("--loop", action="store_true", help="repeat until a test fails")
    a = p.parse_args()

    try:
        fd = os.open(a.device, os.O_RDWR)
    except OSError as e:
        print(f"{a.device}: {e.strerror}", file=sys.stderr)
        return 1

    flags = F_POLL if a.poll else 0
    sizes = a.size or [4096]
    tests = []
    for bar in a.bar or []:
        tests.append((f"BAR{bar}", BAR, 0, bar, 0))
    for name, flag, cmd in (("READ", a.read, READ), ("WRITE", a.write, WRITE),
                            ("COPY", a.copy, COPY)):
        if flag:
            for s in sizes:
                tests.append((f"{name} {s} B", cmd, s, a.vector, flags))
    for v in a.msix or []:
        tests.append((f"MSI-X {v}", MSIX, 0, v, 0))
    if a.outside:
        tests.append(("OUTSIDE" + (" guard" if a.guard else ""), OUTSIDE, 0, a.vector,
                      flags | (F_GUARD if a.guard else 0)))

    failed = False
    try:
        if a.info:
            name, vectors, magic, bars = info(fd)
            print(f"pci {name} vectors {vectors} magic {magic:#010x} bars "
                  + " ".join(str(b) for b in bars))
        while True:
            for name, cmd, size, index, fl in tests:
                for _ in range(a.count):
                    err, r = op(fd, cmd, size, index, fl, a.seed)
                    shown = r["size"] if cmd in (READ, WRITE, COPY) else None
                    if not report(name, err, r, shown):
                        failed = True
                        if a.loop:
                            return 1
            if not a.loop or not tests:
                break
    except OSError as e:
        print(f"{a.device}: {e.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    finally:
        os.close(fd)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
