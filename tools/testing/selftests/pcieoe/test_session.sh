#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# A session over real Ethernet frames: the device interface (pcieoe_dev)
# bound to one end of a veth pair, the host interface (pcieoe_host) to the
# other. They discover each other and open a session (same epoch on both
# sides, in debugfs); heartbeats flow; bringing the DI's end down makes the
# host declare the peer dead within the dead-peer timeout, and bringing it
# up re-opens a session with a new epoch. An unknown netdev is refused with
# ENODEV. Then again under netem (loss, duplication, reordering, delay): the
# session opens and stays up. The kernel log stays clean throughout.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
DBG=/sys/kernel/debug
# The engine's defaults (rust/pcieoe/src/session.rs, SessionConfig::new):
# a heartbeat every 100 ms, a peer silent for 1 s is dead. Waits allow for
# the test VM's software emulation.
DEAD_TIMEOUT_S=1
WAIT_S=10

stats() { echo "$DBG/$1/$2/stats"; }
HOST_STATS=$(stats pcieoe_host vethH)
DEV_STATS=$(stats pcieoe_dev vethD)

# kv FILE KEY: the value of "KEY: value" in a stats file.

cleanup() {
	loaded pcieoe_host && rmmod pcieoe_host
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del vethD 2>/dev/null
	true
}
trap cleanup EXIT

setup_veth() {
	ip link add vethD type veth peer name vethH &&
		ip link set vethD up && ip link set vethH up
}

# both_open: both sides report an open session with the same, nonzero epoch.
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

# open_with_new_epoch OLD: both open with an epoch other than OLD.
open_with_new_epoch() {
	both_open || return 1
	[[ $(epoch) != "$1" ]] || { echo "epoch is still $1"; return 1; }
}

# grows FILE KEY: the counter increases within two seconds.
grows() {
	local before after i
	before=$(kv "$1" "$2")
	for ((i = 0; i < 20; i++)); do
		sleep 0.1
		after=$(kv "$1" "$2")
		((after > before)) && return 0
	done
	echo "$2 in $1 stayed at $before"
	return 1
}

host_dead() {
	local s
	s=$(kv "$HOST_STATS" state)
	[[ $s != open && $(kv "$HOST_STATS" dead_peers) -ge 1 ]] ||
		{ echo "host state $s, dead_peers $(kv "$HOST_STATS" dead_peers)"; return 1; }
}

log_has() { dmesg_new | grep -qE "$1" || { echo "no '$1' in the kernel log:"; dmesg_new | tail -n 8; return 1; }; }

# stays_open SECONDS EPOCH: the session stays open in epoch EPOCH throughout.
stays_open() {
	local i
	for ((i = 0; i < $1 * 4; i++)); do
		both_open || return 1
		[[ $(epoch) == "$2" ]] || { echo "epoch changed from $2 to $(epoch)"; return 1; }
		sleep 0.25
	done
	[[ $(kv "$HOST_STATS" dead_peers) == 0 ]] ||
		{ echo "host declared $(kv "$HOST_STATS" dead_peers) dead peers"; return 1; }
}

# refused_enodev KO NAME: insmod with netdev=nope0 fails with ENODEV, names it.
refused_enodev() {
	local out
	if out=$(insmod "$1" netdev=nope0 2>&1); then
		rmmod "$2"
		echo "insmod $2 netdev=nope0 succeeded"
		return 1
	fi
	[[ $out == *"No such device"* ]] || { echo "insmod said: $out (want ENODEV)"; return 1; }
	! loaded "$2" || { echo "$2 is loaded"; return 1; }
	log_has "$2: no network device named 'nope0'"
}

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
dmesg_mark
check "session: veth pair vethD/vethH" setup_veth

for m in pcieoe_dev pcieoe_host; do
	check "$m: netdev=nope0 refused with ENODEV, logged" refused_enodev "$(ko "$m/$m.ko")" "$m"
done
dmesg_clean "session: unknown netdev"

check "pcieoe_dev: insmod netdev=vethD" insmod "$DEV_KO" netdev=vethD
check "pcieoe_host: insmod netdev=vethH" insmod "$HOST_KO" netdev=vethH
check "session: open on both sides with the same epoch within ${WAIT_S}s" wait_until "$WAIT_S" both_open
E1=$(epoch)
check "session: open logged with epoch and peer MAC" \
	log_has "pcieoe_host: vethH: session open, epoch $E1, peer $(cat /sys/class/net/vethD/address)"
check "session: host heartbeats flow (frames_tx grows)" grows "$HOST_STATS" frames_tx
check "session: device receives heartbeats (heartbeats_rx grows)" grows "$DEV_STATS" heartbeats_rx
check "session: host receives frames (frames_rx grows)" grows "$HOST_STATS" frames_rx
dmesg_clean "session: open"

check "session: ip link set vethD down" ip link set vethD down
check "session: host declares the peer dead within $((DEAD_TIMEOUT_S + 2))s" \
	wait_until $((DEAD_TIMEOUT_S + 2)) host_dead
check "session: peer death logged" log_has "pcieoe_host: vethH: session down, epoch $E1, .*PeerDead"
check "session: ip link set vethD up" ip link set vethD up
check "session: re-opened with a new epoch within ${WAIT_S}s" wait_until "$WAIT_S" open_with_new_epoch "$E1"
dmesg_clean "session: link down and up"

check "pcieoe_host: rmmod" rmmod pcieoe_host
check "pcieoe_dev: rmmod" rmmod pcieoe_dev
check "session: debugfs entries removed" bash -c "[[ ! -e $DBG/pcieoe_host && ! -e $DBG/pcieoe_dev ]]"
dmesg_clean "session: rmmod"

NETEM="loss 2% duplicate 1% reorder 25% delay 1ms"
# shellcheck disable=SC2086
check "netem: tc qdisc add dev vethH root netem $NETEM" tc qdisc add dev vethH root netem $NETEM
check "netem: pcieoe_dev: insmod netdev=vethD" insmod "$DEV_KO" netdev=vethD
check "netem: pcieoe_host: insmod netdev=vethH" insmod "$HOST_KO" netdev=vethH
check "netem: session open within ${WAIT_S}s" wait_until "$WAIT_S" both_open
check "netem: session stays open in one epoch for 5s" stays_open 5 "$(epoch)"
check "netem: pcieoe_host: rmmod" rmmod pcieoe_host
check "netem: pcieoe_dev: rmmod" rmmod pcieoe_dev
dmesg_clean "netem: session"

check "session: veth pair removed" ip link del vethD
exit "$TAP_FAILED"
