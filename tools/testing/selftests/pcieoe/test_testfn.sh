#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The test function end to end, as tools/testing/selftests/pci_endpoint
# does for pci-epf-test: a DI (pcieoe_dev) serves a test function on
# vethD and assigns it to the host (pcieoe_host, netdev=vethH); the host
# driver pcieoe_test.ko binds it and pcieoe_test.py drives its misc device
# (Documentation/test-function.rst).
#
# * Binding: the driver binds the function, /dev/pcieoe-test-<PCI name>
#   appears, INFO names the function, its 8 vectors and BAR sizes.
# * BAR0 (MAGIC, scratch registers) and BAR1..5 (seeded patterns over the
#   whole BAR, written and read back in blocks).
# * DMA READ, WRITE and COPY for sizes from 1 byte to 1 MiB, every byte and
#   the function's CRC-32 checked; completion by interrupt, by polling,
#   and on the last vector; no mapping left behind.
# * MSI-X vectors 1..8 each reach their handler; a vector that does not
#   exist is refused.
# * DMA outside a mapping (a freed buffer's IOVA, the guard page behind a
#   live one) is refused by the host's software IOMMU, which counts it,
#   and the function reports SRC_ADDR_INVALID.
# * Unbinding during a 1 MiB copy loop, an open file across the unbind,
#   surprise removal (vethD down) during a copy loop, and unloading
#   pcieoe_host while the driver is bound and copying all end cleanly:
#   the operation fails, nothing hangs, the kernel log stays clean.
#
# Printed as diagnostics: MMIO read round trip, DMA copy throughput at 64
# KiB and 1 MiB, MSI-X latency (COMMAND write to handler). The whole body
# runs twice: loss-free, then with netem on vethD and vethH.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
TEST_KO=$(ko pcieoe_test/pcieoe_test.ko)
T=(python3 "$(cd "$(dirname "$0")" && pwd)/pcieoe_test.py")
DBG=/sys/kernel/debug
CFGD=/sys/kernel/config/pcieoe_dev
DRV=/sys/bus/pci/drivers/pcieoe_test
WAIT_S=10
NETEM="loss 2% duplicate 1% reorder 25% delay 1ms"
SIZES=(1 2 3 4 5 7 8 15 16 63 64 65 255 256 257 1023 1024 4095 4096 4097 65536 1048576)
# The test function's BARs (rust/pcieoe/src/testfn.rs: BAR0_LEN, BAR_SIZES).
BARS="512 512 1024 16384 131072 1048576"

# Removes everything, in an order that works from any state (see
# test_pci.sh); also run between the passes.
cleanup() {
	[[ -n ${LOOP_PID:-} ]] && kill "$LOOP_PID" 2>/dev/null
	LOOP_PID=
	find "$CFGD/hosts" -mindepth 3 -maxdepth 3 -type l -delete 2>/dev/null
	loaded pcieoe_host && rmmod pcieoe_host
	loaded pcieoe_test && rmmod pcieoe_test
	rmdir "$CFGD"/hosts/* "$CFGD"/functions/* "$CFGD"/ports/* 2>/dev/null
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del vethD 2>/dev/null
	true
}
trap cleanup EXIT

stats() { echo "$DBG/$1/$2/stats"; }
epoch() { kv "$(stats pcieoe_host "$1")" epoch; }

both_open() {
	local h d
	h=$(kv "$(stats pcieoe_host "$2")" state)/$(kv "$(stats pcieoe_host "$2")" epoch)
	d=$(kv "$(stats pcieoe_dev "$1")" state)/$(kv "$(stats pcieoe_dev "$1")" epoch)
	[[ $h == open/* && $h == "$d" && $h != open/0x00000000 ]] && return 0
	echo "host: $h, device: $d (want open/<same epoch>)"
	return 1
}

# new_epoch OLD: both ends open in an epoch other than OLD.
new_epoch() { both_open vethD vethH && [[ $(epoch vethH) != "$1" ]]; }

# has TEXT REGEX: TEXT has a line matching the extended REGEX.
has() { grep -qE -- "$2" <<<"$1" || { echo "no /$2/ in:"; echo "${1:-(nothing)}" | head -n 40; return 1; }; }

# above FILE KEY OLD: counter KEY of FILE is above OLD.
above() {
	local now
	now=$(kv "$1" "$2")
	((${now:-0} > $3)) || { echo "$2 in $1 is ${now:-missing}, want more than $3"; return 1; }
}

# iommu KEY: field KEY of the host's "iommu 00.0:" line (the function's
# software IOMMU counters).
iommu() { awk -v k="$1" '$1 == "iommu" && $2 == "00.0:" { for (i = 3; i < NF; i++) if ($i == k) print $(i + 1) }' "$HPCI" 2>/dev/null; }

# iommu_is KEY WANT / iommu_above KEY OLD
iommu_is() {
	local got
	got=$(iommu "$1")
	[[ $got == "$2" ]] || { echo "iommu $1 is '${got:-missing}', want $2:"; grep '^iommu' "$HPCI"; return 1; }
}
iommu_above() {
	local got
	got=$(iommu "$1")
	((${got:-0} > $2)) || { echo "iommu $1 is '${got:-missing}', want more than $2:"; grep '^iommu' "$HPCI"; return 1; }
}

# tap_lines PREFIX WANT COMMAND...: one TAP line per result line of
# pcieoe_test.py ("NAME: OKAY ..." / "NAME: NOT OKAY ..."), and a failure
# if there are not WANT of them.
tap_lines() {
	local prefix=$1 want=$2 out line n=0
	shift 2
	out=$("$@" 2>&1)
	while IFS= read -r line; do
		case $line in
		*": NOT OKAY"*)
			tap_fail "$prefix ${line%%: NOT OKAY*}" "$line"
			n=$((n + 1))
			;;
		*": OKAY"*)
			tap_ok "$prefix ${line%%: OKAY*}"
			n=$((n + 1))
			;;
		esac
	done <<<"$out"
	((n == want)) || tap_fail "$prefix: $want results" "got $n:" "$(tail -n 10 <<<"$out")"
}

# stat_ns LABEL OUTPUT NAME: "min/mean/max" of elapsed_ns of NAME's OKAY
# lines, in microseconds, as a diagnostic.
stat_us() {
	awk -v p="$1" -v n="$3: OKAY" 'index($0, n) == 1 {
		for (i = 1; i < NF; i++) if ($i == "elapsed_ns") { v = $(i + 1) / 1000; s += v; c++
			if (c == 1 || v < lo) lo = v; if (v > hi) hi = v } }
		END { if (c) printf "# %s: mean %.1f us (min %.1f us, max %.1f us, %d samples)\n", p, s / c, lo, hi, c
		      else printf "# %s: no samples\n", p }' <<<"$2"
}

# rate LABEL OUTPUT NAME BYTES: mean throughput of NAME's OKAY lines.
rate() {
	awk -v p="$1" -v n="$3: OKAY" -v b="$4" 'index($0, n) == 1 {
		for (i = 1; i < NF; i++) if ($i == "elapsed_ns") { s += $(i + 1); c++ } }
		END { if (c && s) printf "# %s: %.2f MiB/s (mean of %d, %.1f ms each)\n", p, b * c / s * 1e9 / 1048576, c, s / c / 1e6
		      else printf "# %s: no samples\n", p }' <<<"$2"
}

# bound: the driver has the function and its node exists.
bound() { [[ -e $DRV/$DEV0 && -c $NODE ]]; }
unbound() { [[ ! -e $DRV/$DEV0 && ! -e $NODE ]]; }

# bound_check NAME: the driver binds $DEV0 by itself (probe at insmod or
# hot-add), one TAP line. If it did not, the failure shows the driver's
# messages, and one bind through sysfs is tried so that the rest of the
# pass still runs; fails only if that does not bind either.
bound_check() {
	if wait_until "$WAIT_S" bound >/dev/null; then
		tap_ok "$1"
		return 0
	fi
	tap_fail "$1" "$(dmesg_new | grep -E 'pcieoe_test|pcieoe_dev: .*UR' | tail -n 6)"
	echo "$DEV0" >"$DRV/bind" 2>/dev/null
	if wait_until "$WAIT_S" bound >/dev/null; then
		echo "# bound after a bind through sysfs; continuing"
		return 0
	fi
	echo "# a bind through sysfs failed too; the rest of the pass is skipped"
	return 1
}

# start_loop NAME: a 1 MiB copy loop on the node in the background, once
# its first copy passed; one TAP line. LOOP_OUT gets its output. (Not
# through `check`, whose subshell would lose LOOP_PID.)
start_loop() {
	LOOP_OUT=$(mktemp /tmp/pcieoe-loop.XXXXXX)
	"${T[@]}" -d "$NODE" -c -s 1048576 --loop >"$LOOP_OUT" 2>&1 &
	LOOP_PID=$!
	if wait_until 30 grep -q ": OKAY" "$LOOP_OUT"; then
		tap_ok "$1"
	else
		tap_fail "$1" "$(tail -n 5 "$LOOP_OUT")"
	fi
}

# loop_failed NAME SECONDS: the loop ended within SECONDS, with an error;
# one TAP line.
loop_failed() {
	local i rc
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$LOOP_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$LOOP_PID" 2>/dev/null; then
		tap_fail "$1" "the copy loop still runs after $2 s:" "$(tail -n 3 "$LOOP_OUT")"
		kill "$LOOP_PID"
		wait "$LOOP_PID"
	else
		wait "$LOOP_PID"
		rc=$?
		if ((rc != 0)); then
			tap_ok "$1"
			echo "# $(tail -n 1 "$LOOP_OUT")"
		else
			tap_fail "$1" "the copy loop exited 0:" "$(tail -n 3 "$LOOP_OUT")"
		fi
	fi
	LOOP_PID=
	rm -f "$LOOP_OUT"
}

# enodev_after_unbind: a file opened before the unbind gets ENODEV after.
enodev_after_unbind() {
	python3 - "$NODE" "$DRV" "$DEV0" "$(dirname "${T[1]}")" <<-'EOF'
		import errno, os, sys
		node, drv, dev, tooldir = sys.argv[1:]
		sys.path.insert(0, tooldir)
		import pcieoe_test as t
		fd = os.open(node, os.O_RDWR)
		err, _ = t.op(fd, t.READ, 64)
		assert err == 0, f"READ before unbind: {os.strerror(err)}"
		with open(f"{drv}/unbind", "w") as f:
		    f.write(dev)
		err, _ = t.op(fd, t.READ, 64)
		assert err == errno.ENODEV, f"READ after unbind: {os.strerror(err) if err else 'passed'}"
		try:
		    t.info(fd)
		    sys.exit("INFO after unbind passed")
		except OSError as e:
		    assert e.errno == errno.ENODEV, f"INFO after unbind: {e.strerror}"
		os.close(fd)
	EOF
}

# pass LABEL NETEM
pass() {
	local P=$1 HMAC out n0 r0 s0 E i args
	HPCI=$DBG/pcieoe_host/vethH/pci
	DEV0=10000:00:00.0
	NODE=/dev/pcieoe-test-$DEV0

	dmesg_mark
	check "$P: veth pair vethD/vethH" add_veth vethD vethH
	if [[ $2 == netem ]]; then
		# shellcheck disable=SC2086
		check "$P: netem on vethD" tc qdisc add dev vethD root netem $NETEM
		# shellcheck disable=SC2086
		check "$P: netem on vethH" tc qdisc add dev vethH root netem $NETEM
	fi
	check "$P: pcieoe_dev: insmod" insmod "$DEV_KO"
	check "$P: DI port vethD enabled" bash -c "mkdir $CFGD/ports/vethD && echo 1 >$CFGD/ports/vethD/enable"
	# The host binds vethH through its parameter, not configfs: then
	# nothing but its devices' drivers stands in the way of rmmod.
	check "$P: pcieoe_host: insmod netdev=vethH" insmod "$HOST_KO" netdev=vethH
	if ! wait_until "$WAIT_S" both_open vethD vethH >/dev/null; then
		tap_fail "$P: session open within ${WAIT_S}s" "$(both_open vethD vethH)" "$(dmesg_new | tail -n 20)"
		return
	fi
	tap_ok "$P: session open within ${WAIT_S}s"
	HMAC=$(cat /sys/class/net/vethH/address)
	check "$P: test function f0 assigned to vethH" bash -c \
		"mkdir $CFGD/functions/f0 && echo 1 >$CFGD/functions/f0/enable &&
		 mkdir $CFGD/hosts/$HMAC && ln -s $CFGD/functions/f0 $CFGD/hosts/$HMAC/functions/f0"
	check "$P: $DEV0 appears within ${WAIT_S}s" wait_until "$WAIT_S" test -e "/sys/bus/pci/devices/$DEV0"
	check "$P: pcieoe_test: insmod" insmod "$TEST_KO"
	bound_check "$P: pcieoe_test binds $DEV0, $NODE appears within ${WAIT_S}s" || return
	out=$("${T[@]}" -d "$NODE" -i 2>&1)
	check "$P: INFO: $DEV0, 8 vectors, MAGIC, BAR sizes $BARS" \
		has "$out" "^pci $DEV0 vectors 8 magic 0x50434f45 bars $BARS\$"
	check "$P: misc device's parent is the function" test -d "/sys/bus/pci/devices/$DEV0/misc/pcieoe-test-$DEV0"
	dmesg_clean "$P: bind"

	# --- BARs ---
	out=$(cat "$DBG/pcieoe_host/vethH/mmio_rtt" 2>&1)
	echo "$out" | awk -v p="$P" '$1 ~ /_ns:$/ { v[$1] = $2 / 1000 } $1 == "failed:" { f = $2 }
		END { if ("mean_ns:" in v) printf "# %s: MMIO read RTT: mean %.1f us (min %.1f us, max %.1f us, %d failed)\n",
			p, v["mean_ns:"], v["min_ns:"], v["max_ns:"], f
		      else print "# " p ": MMIO read RTT: no data" }'
	args=()
	for i in 0 1 2 3 4 5; do args+=(-b "$i"); done
	tap_lines "$P:" 6 "${T[@]}" -d "$NODE" "${args[@]}"
	dmesg_clean "$P: BARs"

	# --- DMA ---
	args=()
	for i in "${SIZES[@]}"; do args+=(-s "$i"); done
	tap_lines "$P: DMA" "${#SIZES[@]}" "${T[@]}" -d "$NODE" -r "${args[@]}"
	tap_lines "$P: DMA" "${#SIZES[@]}" "${T[@]}" -d "$NODE" -w "${args[@]}"
	tap_lines "$P: DMA" "${#SIZES[@]}" "${T[@]}" -d "$NODE" -c "${args[@]}"
	tap_lines "$P: DMA polling STATUS:" 3 "${T[@]}" -d "$NODE" --poll -r -w -c -s 4097
	tap_lines "$P: DMA completing on vector 8:" 1 "${T[@]}" -d "$NODE" -v 8 -c -s 65536
	check "$P: no DMA mapping left (iommu live 0)" iommu_is live 0
	out=$("${T[@]}" -d "$NODE" -c -s 65536 -s 1048576 -n 5 2>&1)
	check "$P: 5 copies of 64 KiB and of 1 MiB" has "$(grep -c ': OKAY' <<<"$out")" "^10$"
	rate "$P: DMA copy throughput, 64 KiB" "$out" "COPY 65536 B" 65536
	rate "$P: DMA copy throughput, 1 MiB" "$out" "COPY 1048576 B" 1048576
	dmesg_clean "$P: DMA"

	# --- MSI-X ---
	args=()
	for i in 1 2 3 4 5 6 7 8; do args+=(-x "$i"); done
	tap_lines "$P:" 8 "${T[@]}" -d "$NODE" "${args[@]}"
	out=$("${T[@]}" -d "$NODE" -x 9 2>&1)
	check "$P: MSI-X 9 refused (EINVAL)" has "$out" "NOT OKAY \(EINVAL"
	out=$("${T[@]}" -d "$NODE" -x 1 -n 20 2>&1)
	check "$P: 20 interrupts on vector 1" has "$(grep -c ': OKAY' <<<"$out")" "^20$"
	stat_us "$P: MSI-X latency (COMMAND write -> handler)" "$out" "MSI-X 1"
	dmesg_clean "$P: MSI-X"

	# --- DMA outside a mapping ---
	r0=$(kv "$HPCI" dma_refused_reads)
	n0=$(iommu no_mapping)
	tap_lines "$P: DMA read of a freed buffer's IOVA refused:" 1 "${T[@]}" -d "$NODE" --outside
	tap_lines "$P: DMA read past a live buffer refused:" 1 "${T[@]}" -d "$NODE" --outside --guard
	check "$P: host counted the refused reads (dma_refused_reads)" above "$HPCI" dma_refused_reads "${r0:-0}"
	check "$P: IOMMU counted them (no_mapping)" iommu_above no_mapping "${n0:-0}"
	tap_lines "$P: DMA after the refusals:" 1 "${T[@]}" -d "$NODE" -c -s 4096
	dmesg_clean "$P: outside a mapping"

	# --- unbind during DMA, an open file across the unbind ---
	start_loop "$P: 1 MiB copy loop running"
	check "$P: unbind $DEV0 during the copy loop (within 20 s)" \
		timeout 20 bash -c "echo $DEV0 >$DRV/unbind"
	loop_failed "$P: the copy loop ends with an error" 15
	check "$P: unbound, $NODE gone" unbound
	check "$P: no DMA mapping left (iommu live 0)" iommu_is live 0
	check "$P: bind $DEV0 again" bash -c "echo $DEV0 >$DRV/bind"
	check "$P: bound again within ${WAIT_S}s" wait_until "$WAIT_S" bound
	check "$P: a file open across an unbind gets ENODEV" enodev_after_unbind
	check "$P: bind $DEV0 again" bash -c "echo $DEV0 >$DRV/bind"
	check "$P: bound again within ${WAIT_S}s" wait_until "$WAIT_S" bound
	tap_lines "$P: after unbind and bind:" 1 "${T[@]}" -d "$NODE" -c -s 1048576
	dmesg_clean "$P: unbind during DMA"

	# --- surprise removal during DMA ---
	s0=$(kv "$HPCI" surprise_removals)
	E=$(epoch vethH)
	start_loop "$P: 1 MiB copy loop running"
	check "$P: ip link set vethD down" ip link set vethD down
	loop_failed "$P: the copy loop ends with an error" 20
	check "$P: $DEV0 removed within ${WAIT_S}s" wait_until "$WAIT_S" test ! -e "/sys/bus/pci/devices/$DEV0"
	check "$P: $NODE gone" unbound
	check "$P: surprise_removals grew" above "$HPCI" surprise_removals "${s0:-0}"
	check "$P: ip link set vethD up" ip link set vethD up
	check "$P: session reopens with a new epoch within ${WAIT_S}s" wait_until "$WAIT_S" new_epoch "$E"
	check "$P: $DEV0 returns within ${WAIT_S}s" wait_until "$WAIT_S" test -e "/sys/bus/pci/devices/$DEV0"
	bound_check "$P: pcieoe_test binds the returned $DEV0 within ${WAIT_S}s" || return
	tap_lines "$P: after the return:" 1 "${T[@]}" -d "$NODE" -c -s 1048576
	dmesg_clean "$P: surprise removal"

	# --- unloading pcieoe_host while the driver is bound and busy ---
	start_loop "$P: 1 MiB copy loop running"
	check "$P: rmmod pcieoe_host while bound (within 30 s)" timeout 30 rmmod pcieoe_host
	loop_failed "$P: the copy loop ends with an error" 15
	check "$P: $NODE gone, pcieoe_test still loaded" bash -c "[[ ! -e $NODE && -d /sys/module/pcieoe_test ]]"
	check "$P: pcieoe_test: rmmod" rmmod pcieoe_test
	dmesg_clean "$P: rmmod pcieoe_host"

	check "$P: DI: unassign, rmdir, rmmod" bash -c \
		"rm $CFGD/hosts/$HMAC/functions/f0 && rmdir $CFGD/hosts/$HMAC $CFGD/functions/f0 $CFGD/ports/vethD &&
		 rmmod pcieoe_dev && ip link del vethD"
	dmesg_clean "$P: teardown"
}

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
pass testfn plain
cleanup
pass "testfn netem" netem
exit "$TAP_FAILED"
