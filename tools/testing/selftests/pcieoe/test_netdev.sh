#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The bound netdev's lifetime and orderly close. The two ends sit on veth
# pairs joined by a bridge (vethD - vethDb = pcieoebr0 = vethHb - vethH), so
# that the DI's netdev can go away while the host's stays:
#
# * link down/up of the bound netdev is logged;
# * `ip link del vethD` while pcieoe_dev is bound completes at once (no
#   "waiting for vethD to become free"), the DI logs the unbind, its debugfs
#   directory goes, the module stays loaded, the host declares the peer
#   dead, and rmmod afterwards is clean;
# * moving vethD to another network namespace unbinds it the same way;
# * unloading pcieoe_dev (then pcieoe_host) with the session open sends the
#   engine's Close: the peer reports the session down as a close
#   (PeerClose), not PeerDead.
#
# The kernel log stays clean throughout.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
DBG=/sys/kernel/debug
HOST_STATS=$DBG/pcieoe_host/vethH/stats
DEV_STATS=$DBG/pcieoe_dev/vethD/stats
NS=pcieoe-netdev-test
# The engine's dead-peer timeout (SessionConfig::new) and a generous wait
# for the test VM's software emulation.
DEAD_TIMEOUT_S=1
WAIT_S=10

log_has() { dmesg_new | grep -qE "$1" || { echo "no '$1' in the kernel log:"; dmesg_new | tail -n 8; return 1; }; }

cleanup() {
	loaded pcieoe_host && rmmod pcieoe_host
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del vethD 2>/dev/null
	ip link del vethH 2>/dev/null
	ip link del pcieoebr0 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	true
}
trap cleanup EXIT

setup_bridge() {
	ip link add pcieoebr0 type bridge &&
		ip link set pcieoebr0 up &&
		ip link add vethH type veth peer name vethHb &&
		ip link set vethHb master pcieoebr0 &&
		ip link set vethHb up && ip link set vethH up
}

# add_vethD: (re)creates the DI's end and plugs it into the bridge.
add_vethD() {
	ip link add vethD type veth peer name vethDb &&
		ip link set vethDb master pcieoebr0 &&
		ip link set vethDb up && ip link set vethD up
}

both_open() {
	local h d
	h=$(kv "$HOST_STATS" state)/$(kv "$HOST_STATS" epoch)
	d=$(kv "$DEV_STATS" state)/$(kv "$DEV_STATS" epoch)
	if [[ $h == open/* && $h == "$d" && $h != open/0x00000000 ]]; then
		return 0
	fi
	echo "host: $h, device: $d (want open/<same epoch>)"
	return 1
}

epoch() { kv "$HOST_STATS" epoch; }

# host_dead N: the host is not open and has declared N dead peers.
host_dead() {
	local s
	s=$(kv "$HOST_STATS" state)
	[[ $s != open && $(kv "$HOST_STATS" dead_peers) -ge $1 ]] ||
		{ echo "host state $s, dead_peers $(kv "$HOST_STATS" dead_peers) (want $1)"; return 1; }
}

# timed_ok SECONDS COMMAND...: COMMAND succeeds under `timeout 20` and takes
# less than SECONDS.
timed_ok() {
	local limit=$1 t0 t1
	shift
	t0=$(date +%s%N)
	timeout 20 "$@" || { echo "'$*' failed or hung (exit $?)"; return 1; }
	t1=$(date +%s%N)
	(((t1 - t0) / 1000000 < limit * 1000)) ||
		{ echo "'$*' took $(((t1 - t0) / 1000000)) ms (limit ${limit}s)"; return 1; }
}

dev_unbound() {
	[[ ! -e $DBG/pcieoe_dev/vethD ]] || { echo "$DBG/pcieoe_dev/vethD still exists"; return 1; }
	loaded pcieoe_dev || { echo "pcieoe_dev is not loaded"; return 1; }
}

# not_open STATS: the session of STATS is no longer open. Checked right
# after rmmod returns, without waiting: the unloading side waits for the
# peer's answer to its Close, so the peer has already ended its session. No
# check here measures time: a slow machine must not fail them.
not_open() {
	local s
	s=$(kv "$1" state)
	[[ -n $s && $s != open ]] || { echo "state '$s'"; return 1; }
}

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
dmesg_mark
check "netdev: bridge with vethH" setup_bridge
check "netdev: vethD on the bridge" add_vethD
check "netdev: pcieoe_dev: insmod netdev=vethD" insmod "$DEV_KO" netdev=vethD
check "netdev: pcieoe_host: insmod netdev=vethH" insmod "$HOST_KO" netdev=vethH
check "netdev: session open within ${WAIT_S}s" wait_until "$WAIT_S" both_open
dmesg_clean "netdev: open over a bridge"

check "netdev: ip link set vethD down" ip link set vethD down
check "netdev: link down logged" log_has "pcieoe_dev: vethD: link down"
check "netdev: ip link set vethD up" ip link set vethD up
check "netdev: link up logged" log_has "pcieoe_dev: vethD: link up"
check "netdev: session open again within ${WAIT_S}s" wait_until "$WAIT_S" both_open
dmesg_clean "netdev: link down and up"

# --- ip link del of the bound netdev ---
E1=$(epoch)
DEAD0=$(kv "$HOST_STATS" dead_peers)
check "unregister: ip link del vethD completes within 5s (timeout 20)" timed_ok 5 ip link del vethD
check "unregister: DI logs the unbind" log_has "pcieoe_dev: vethD: unbound: device unregistered"
check "unregister: DI debugfs dir removed, module still loaded" dev_unbound
check "unregister: host declares the peer dead within $((DEAD_TIMEOUT_S + 2))s" \
	wait_until $((DEAD_TIMEOUT_S + 2)) host_dead $((DEAD0 + 1))
check "unregister: peer death logged" log_has "pcieoe_host: vethH: session down, epoch $E1, .*PeerDead"
check "unregister: no 'waiting for vethD to become free'" bash -c "! dmesg | grep -q 'waiting for vethD'"
dmesg_clean "unregister: ip link del"
check "unregister: pcieoe_dev: rmmod afterwards" rmmod pcieoe_dev
check "unregister: unload logged" log_has "pcieoe_dev: device interface unloaded"
check "unregister: debugfs dir gone" bash -c "[[ ! -e $DBG/pcieoe_dev ]]"
dmesg_clean "unregister: rmmod"

# --- move the bound netdev to another network namespace ---
check "netns: vethD re-created" add_vethD
check "netns: pcieoe_dev: insmod netdev=vethD" insmod "$DEV_KO" netdev=vethD
check "netns: session re-opened within ${WAIT_S}s" wait_until "$WAIT_S" both_open
E2=$(epoch)
DEAD0=$(kv "$HOST_STATS" dead_peers)
check "netns: ip netns add $NS" ip netns add "$NS"
check "netns: ip link set vethD netns $NS completes within 5s (timeout 20)" \
	timed_ok 5 ip link set vethD netns "$NS"
check "netns: DI logs the unbind" log_has "pcieoe_dev: vethD: unbound: device unregistered"
check "netns: DI debugfs dir removed, module still loaded" dev_unbound
check "netns: host declares the peer dead within $((DEAD_TIMEOUT_S + 2))s" \
	wait_until $((DEAD_TIMEOUT_S + 2)) host_dead $((DEAD0 + 1))
check "netns: peer death logged" log_has "pcieoe_host: vethH: session down, epoch $E2, .*PeerDead"
check "netns: pcieoe_dev: rmmod afterwards" rmmod pcieoe_dev
check "netns: vethD deleted in $NS, ip netns del $NS" \
	bash -c "ip -n $NS link del vethD && ip netns del $NS"
dmesg_clean "netns: move"

# --- orderly close on unload ---
check "close: vethD re-created" add_vethD
check "close: pcieoe_dev: insmod netdev=vethD" insmod "$DEV_KO" netdev=vethD
check "close: session re-opened within ${WAIT_S}s" wait_until "$WAIT_S" both_open
E3=$(epoch)
DEAD0=$(kv "$HOST_STATS" dead_peers)
dmesg_mark
check "close: pcieoe_dev: rmmod with the session open" timeout 20 rmmod pcieoe_dev
check "close: host's session is down as soon as rmmod returns" not_open "$HOST_STATS"
check "close: host logs the peer's Close" \
	log_has "pcieoe_host: vethH: session down, epoch $E3, .*PeerClose"
check "close: DI logs its close answered" log_has "pcieoe_dev: vethD: session down, epoch $E3, .*LocalClose"
check "close: host did not declare the peer dead" \
	bash -c "[[ \$(awk '\$1 == \"dead_peers:\" { print \$2 }' $HOST_STATS) == $DEAD0 ]]"
dmesg_clean "close: DI unload"

# The host looks for the DI again, and opens a new session with it when it
# returns; then the host unloads with the session open.
check "close: host is discovering the DI again" \
	bash -c "[[ \$(awk '\$1 == \"state:\" { print \$2 }' $HOST_STATS) == discovering ]]"
check "close: pcieoe_dev: insmod netdev=vethD" insmod "$DEV_KO" netdev=vethD
check "close: host re-opens with the returned DI within ${WAIT_S}s" wait_until "$WAIT_S" both_open
E4=$(epoch)
check "close: the new session has a new epoch" test "$E4" != "$E3"
dmesg_mark
check "close: pcieoe_host: rmmod with the session open" timeout 20 rmmod pcieoe_host
check "close: DI's session is down as soon as rmmod returns" not_open "$DEV_STATS"
check "close: DI logs the peer's Close" \
	log_has "pcieoe_dev: vethD: session down, epoch $E4, .*PeerClose"
check "close: DI back to listening" bash -c "[[ \$(awk '\$1 == \"state:\" { print \$2 }' $DEV_STATS) == listening ]]"
check "close: pcieoe_dev: rmmod" rmmod pcieoe_dev
dmesg_clean "close: host unload"

check "netdev: bridge and veth pairs removed" \
	bash -c "ip link del vethD && ip link del vethH && ip link del pcieoebr0"
exit "$TAP_FAILED"
