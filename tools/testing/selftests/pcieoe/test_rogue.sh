#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# A malicious device interface against the host interface: pcieoe-rogue
# (tools/pcieoe-rogue, built by cargo) plays the DI in user space on vethR,
# pcieoe_host binds vethRH. The rogue gives the host device 0 (so the host
# adds 10000:00:00.0 and owns it, and no other device), then sends memory
# reads and writes of host memory as devices the host does not have and as
# 00:00.0 where nothing is mapped, MSI writes for vectors that are not the
# requester's or not set up, and malformed TLPs. The rogue itself checks
# that every read gets Unsupported Request and that the host's counters
# move exactly as they should after each attack (--host-pci); this file
# checks the totals, the IOMMU's faults for 00.0, that no interrupt fired,
# and that the kernel log holds no warning splat (the rate-limited refusal
# messages are expected).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
ROGUE=$PCIEOE_ROOT/target/debug/pcieoe-rogue
DBG=/sys/kernel/debug
CFGH=/sys/kernel/config/pcieoe_host
HPCI=$DBG/pcieoe_host/vethRH/pci
WAIT_S=10
# The rogue waits up to 15 s for the session and 20 s for the fetch.
ROGUE_S=45
tmp=$(mktemp -d)
OUT=$tmp/rogue.out
pid=

cleanup() {
	exec 3>&- 2>/dev/null
	[[ -n $pid ]] && kill "$pid" 2>/dev/null
	rmdir "$CFGH/ports/vethRH" 2>/dev/null
	[[ -d /sys/module/pcieoe_host ]] && rmmod pcieoe_host
	ip link del vethR 2>/dev/null
	rm -rf "$tmp"
	true
}
trap cleanup EXIT

# at_least KEY MIN / is KEY WANT: the host's pci counter KEY.
at_least() {
	local v
	v=$(kv "$HPCI" "$1")
	((${v:-0} >= $2)) || { echo "$1 is ${v:-missing}, want at least $2"; return 1; }
}
is() {
	local v
	v=$(kv "$HPCI" "$1")
	[[ $v == "$2" ]] || { echo "$1 is '${v:-missing}', want '$2'"; return 1; }
}

# iommu_faults DEV: the IOMMU line of DEV counts faults, no_mapping among
# them (nothing is mapped: no driver is bound).
iommu_faults() {
	local line
	line=$(grep "^iommu $1: " "$HPCI")
	[[ -n $line ]] || { echo "no iommu line for $1:"; cat "$HPCI"; return 1; }
	awk '{ for (i = 1; i < NF; i++) if ($i == "no_mapping") exit !($(i + 1) > 0); exit 1 }' <<<"$line" ||
		{ echo "no no_mapping faults: $line"; return 1; }
}

none_accepted() { is dma_reads 0 && is dma_writes 0 && is msi_rx 0 && is irqs_fired 0; }
session_open() { [[ $(kv "$HPCI" session_open) == 1 ]]; }
rogue_done() { grep -q "attacks done" "$OUT" || ! kill -0 "$pid" 2>/dev/null; }
dom_has() { lspci -D -n -s "$1" | grep -q " $2"; }
dom_empty() { [[ -z $(lspci -D -n | awk -v d="$1:" 'index($1, d) == 1') ]]; }

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
dmesg_mark

if [[ ! -x $ROGUE ]]; then
	tap_fail "rogue: $ROGUE exists" "build it first: cargo build -p pcieoe-rogue (make check does)"
	exit 1
fi
check "rogue: veth pair vethR/vethRH" \
	bash -c "ip link add vethR type veth peer name vethRH && ip link set vethR up && ip link set vethRH up"
check "rogue: pcieoe_host: insmod" insmod "$HOST_KO"
check "rogue: host port vethRH enabled" bash -c "mkdir $CFGH/ports/vethRH && echo 1 >$CFGH/ports/vethRH/enable"

# The rogue holds the session (and device 0) until its standard input,
# this fifo, is closed.
mkfifo "$tmp/hold"
"$ROGUE" --hold --host-pci "$HPCI" vethR <"$tmp/hold" >"$OUT" 2>&1 &
pid=$!
exec 3>"$tmp/hold"

check "rogue: session open within ${WAIT_S}s" wait_until "$WAIT_S" session_open
wait_until "$ROGUE_S" rogue_done >/dev/null
DOM=$(kv "$HPCI" domain)
check "rogue: host added $DOM:00:00.0 [e0e0:bad0]" dom_has "$DOM:00:00.0" e0e0:bad0
check "rogue: host present 0x00000001" is present 0x00000001
check "rogue: dma_refused_reads >= 3" at_least dma_refused_reads 3
check "rogue: dma_refused_writes >= 2" at_least dma_refused_writes 2
check "rogue: msi_refused >= 3" at_least msi_refused 3
check "rogue: unexpected_tlps > 0 (malformed TLPs counted)" at_least unexpected_tlps 1
check "rogue: nothing accepted: dma_reads, dma_writes, msi_rx, irqs_fired 0" none_accepted
check "rogue: IOMMU of 00.0 counts no_mapping faults" iommu_faults 00.0

exec 3>&-
rc=0
wait "$pid" || rc=$?
pid=
sed 's/^/# /' "$OUT"
if ((rc == 0)); then
	tap_ok "rogue: pcieoe-rogue exit 0 (every expectation held)"
else
	mapfile -t why < <(grep -E '^FAIL|pcieoe-rogue:' "$OUT")
	tap_fail "rogue: pcieoe-rogue exit 0 (every expectation held)" "exit $rc:" "${why[@]}"
fi
check "rogue: device gone after the rogue closed within ${WAIT_S}s" wait_until "$WAIT_S" dom_empty "$DOM"
dmesg_clean "rogue"

check "rogue: host: rmdir ports/vethRH" rmdir "$CFGH/ports/vethRH"
check "rogue: pcieoe_host: rmmod" rmmod pcieoe_host
check "rogue: veth pair removed" ip link del vethR
dmesg_clean "rogue: teardown"
exit "$TAP_FAILED"
