# SPDX-License-Identifier: GPL-2.0
#
# pcieoe top-level targets. The kernel build itself is driven by Kbuild (see
# the file of that name); these targets wrap the scripts in scripts/.
#
#   make check    set up, test, lint, build and run the VM selftests
#   make demo     set up, build, and show the modules working in a VM
#   make setup    install what the project needs (idempotent)
#   make kernel   build the custom kernel (cached outside the repository)
#   make modules  build the four modules against it
#   make test     cargo tests of the engine and tools only
#   make vm-test  the VM selftests only (kernel and modules already built)
#   make bench-vnic  the vNIC against a plain veth pair, in a VM
#   make bench-vhba  the vHBA against its null_blk backing used locally, in a VM
#   make clean    remove build products from the tree

.PHONY: all check demo setup kernel modules test vm-test bench-vnic bench-vhba clean
all: modules

check:
	@scripts/check

demo:
	@scripts/demo

setup:
	@scripts/setup

kernel: setup
	@scripts/build-kernel >/dev/null

modules: kernel
	@scripts/build-modules

test: setup
	cargo test --workspace

vm-test:
	@scripts/vm -t 1800 -- tools/testing/selftests/pcieoe/run.sh

bench-vnic:
	@scripts/bench-vnic

bench-vhba:
	@scripts/bench-vhba

clean:
	@if [ -e "$${PCIEOE_CACHE:-$$HOME/.cache/pcieoe}/kernel/current" ]; then \
		scripts/build-modules clean; fi
	cargo clean
