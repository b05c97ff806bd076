#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The virtual NIC end to end (Documentation/vnic.rst): a DI (pcieoe_dev on
# vethD) serves a vnic function bridged to the uplink upl0; the host
# (pcieoe_host, netdev=vethH) gets it as a PCI Ethernet controller and
# pcieoe_vnic.ko registers a netdev for it. The uplink's other end, peer0,
# is in netns "peer" (10.99.0.2/24); the vNIC's netdev is moved into netns
# "vhost" (10.99.0.1/24), since in one kernel the local stack would
# otherwise short-circuit the traffic.
#
#   vhost: vn0 ~~ pcieoe_vnic ~~ pcieoe_host vethH <-> vethD pcieoe_dev
#                                                  DI bridge -> upl0 <-> peer0 :peer
#
# * Binding: one netdev, driver pcieoe_vnic, the configured MAC.
# * ping (5, then a burst of 200 at 10 ms) with no loss; iperf3 TCP both
#   ways (throughput as diagnostics); ethtool -S and the DI's counters move.
# * MTU 9000 (the function's mtu) works end to end; 9001 is refused.
# * Carrier follows the uplink on the DI.
# * A second vNIC on the same uplink (netns vhost1) reaches the first and
#   the peer; unassigning it removes its netdev.
# * rmmod pcieoe_vnic during an iperf3 run ends in bounded time; after an
#   insmod the netdev comes back and works.
# * With netem on the fabric (vethD, vethH): iperf3 and a 1 MiB transfer
#   whose SHA-256 is checked.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
VNIC_KO=$(ko vnic/pcieoe_vnic.ko)
DBG=/sys/kernel/debug
FUNCS=$DBG/pcieoe_dev/functions
CFGD=/sys/kernel/config/pcieoe_dev
DRV=/sys/bus/pci/drivers/pcieoe_vnic
WAIT_S=10
NETEM="loss 2% reorder 25% delay 1ms"
M0=02:00:00:00:01:01
M1=02:00:00:00:01:02
PEER=10.99.0.2
NSS=(vhost vhost1 peer)
TMPD=$(mktemp -d /tmp/pcieoe-vnic.XXXXXX)

# The guest sees the build machine's root file system; scripts/setup does
# not install iputils-ping, but busybox (busybox-static) has a ping. Its
# ping has no -M: without it the 8972-byte ping below is still sent
# unfragmented, as vn0's MTU is then 9000 (checked first).
if command -v ping >/dev/null; then
	PING=(ping)
else
	PING=(busybox ping)
fi
DF=()
ping -V 2>&1 | grep -q iputils && DF=(-M "do")

# Removes everything, in an order that works from any state: processes
# first, then the host's driver and modules (which take the netdevs with
# them), then the DI's configuration before its uplink goes.
cleanup() {
	local p
	# iperf3's pid files end without a newline: one at a time.
	for p in "$TMPD"/*.pid; do
		[[ -f $p ]] && BG_PIDS="${BG_PIDS:-} $(cat "$p")"
	done
	for p in ${BG_PIDS:-}; do
		kill "$p" 2>/dev/null
	done
	BG_PIDS=
	find "$CFGD/hosts" -mindepth 3 -maxdepth 3 -type l -delete 2>/dev/null
	loaded pcieoe_vnic && rmmod pcieoe_vnic
	loaded pcieoe_host && rmmod pcieoe_host
	for p in "$CFGD"/functions/*/enable; do
		[[ -e $p ]] && echo 0 >"$p" 2>/dev/null
	done
	rmdir "$CFGD"/hosts/* "$CFGD"/functions/* "$CFGD"/ports/* 2>/dev/null
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del vethD 2>/dev/null
	ip link del upl0 2>/dev/null
	for p in "${NSS[@]}"; do
		ip netns del "$p" 2>/dev/null
	done
	rm -rf "$TMPD"
	true
}
trap cleanup EXIT

stats() { echo "$DBG/$1/$2/stats"; }

both_open() {
	local h d
	h=$(kv "$(stats pcieoe_host "$2")" state)/$(kv "$(stats pcieoe_host "$2")" epoch)
	d=$(kv "$(stats pcieoe_dev "$1")" state)/$(kv "$(stats pcieoe_dev "$1")" epoch)
	[[ $h == open/* && $h == "$d" && $h != open/0x00000000 ]] && return 0
	echo "host: $h, device: $d (want open/<same epoch>)"
	return 1
}

# di FUNCTION KEY: a counter from FUNCTION's line in the DI's debugfs
# "functions" file ("function vnic0 host ... link 1 rx_frames 12 ...").
di() {
	awk -v n="$1" -v k="$2" '$1 == "function" && $2 == n {
		for (i = 3; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' "$FUNCS" 2>/dev/null
}
di_line() { grep "^function $1 " "$FUNCS" 2>&1 || echo "(no line for $1 in $FUNCS)"; }

# es NS DEV KEY: a counter of `ethtool -S DEV` in netns NS.
es() { ip netns exec "$1" ethtool -S "$2" 2>/dev/null | awk -v k="$3:" '$1 == k { print $2 }'; }

# grew WHAT OLD NOW: NOW is a number above OLD.
grew() {
	[[ $3 =~ ^[0-9]+$ ]] && (($3 > ${2:-0})) && return 0
	echo "$1 is ${3:-missing}, want more than ${2:-0}"
	return 1
}

# pci_vnics: the PCI names of the host's vnic functions, one a line.
pci_vnics() { lspci -D -n -d e0e0:0002 2>/dev/null | awk '{ print $1 }'; }

# vnic_by_mac MAC: the root namespace's pcieoe_vnic netdev with address MAC.
vnic_by_mac() {
	local d
	for d in "$DRV"/*/net/*; do
		[[ -e $d/address && $(cat "$d/address") == "$1" ]] && { basename "$d"; return 0; }
	done
	echo "no pcieoe_vnic netdev with address $1 (have: $(cat "$DRV"/*/net/*/address 2>/dev/null | xargs))"
	return 1
}

# place MAC NS NAME ADDR: the vNIC netdev with address MAC, moved into NS,
# renamed NAME, given ADDR and up. udev may rename a new netdev: wait for
# it first.
place() {
	local v
	command -v udevadm >/dev/null && udevadm settle -t 10 >/dev/null 2>&1
	v=$(vnic_by_mac "$1") || { echo "$v"; return 1; }
	ip link set dev "$v" netns "$2" &&
		ip -n "$2" link set dev "$v" name "$3" &&
		ip -n "$2" addr add "$4" dev "$3" &&
		ip -n "$2" link set dev "$3" up
}

# pings NS DST PING-ARGS...: ping from NS with no loss; prints the summary.
pings() {
	local ns=$1 dst=$2 out
	shift 2
	out=$(timeout 60 ip netns exec "$ns" "${PING[@]}" -q "$@" "$dst" 2>&1)
	if grep -q ', 0% packet loss' <<<"$out"; then
		grep -E 'min/avg' <<<"$out"
		return 0
	fi
	echo "${PING[*]} $* $dst in netns $ns:"
	tail -n 4 <<<"$out"
	return 1
}

# ping_check NAME NS DST PING-ARGS...: one TAP line; the RTT summary as a
# diagnostic.
ping_check() {
	local name=$1 out
	shift
	if out=$(pings "$@"); then
		tap_ok "$name"
		[[ -n $out ]] && echo "# $name: $out"
	else
		tap_fail "$name" "$out"
	fi
}

# iperf NS ARGS...: an iperf3 TCP run from NS to the peer's server; prints
# the receiver's throughput in Mbit/s, which must be above 0.
iperf() {
	local ns=$1 out bw
	shift
	if ! out=$(timeout 60 ip netns exec "$ns" iperf3 -c "$PEER" -f m --connect-timeout 10000 "$@" 2>&1); then
		echo "iperf3 -c $PEER $* in netns $ns failed:"
		tail -n 8 <<<"$out"
		return 1
	fi
	bw=$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") b = $i } END { print b }' <<<"$out")
	if [[ -z $bw ]] || ! awk -v b="$bw" 'BEGIN { exit !(b > 0) }'; then
		echo "iperf3 -c $PEER $*: no throughput in:"
		tail -n 8 <<<"$out"
		return 1
	fi
	echo "$bw"
}

# iperf_check NAME NS ARGS...: one TAP line, the throughput as a diagnostic.
iperf_check() {
	local name=$1 out
	shift
	if out=$(iperf "$@"); then
		tap_ok "$name"
		echo "# iperf3 $name: $out Mbit/s"
	else
		tap_fail "$name" "$out" "$(di_line vnic0)"
	fi
}

# bounded SECONDS COMMAND...: COMMAND ends within SECONDS, successfully;
# its output goes to $TMPD/bounded.out. (Not `timeout`: a command stuck in
# the kernel cannot be killed, and timeout would wait for it; nor in a
# command substitution, which would wait for its output to end.)
bounded() {
	local limit=$1 pid i
	shift
	"$@" >"$TMPD/bounded.out" 2>&1 &
	pid=$!
	for ((i = 0; i < limit * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid"; return; }
		sleep 0.1
	done
	echo "$* still runs after $limit s" >>"$TMPD/bounded.out"
	return 124
}

# transfer NS: 1 MiB of random bytes from NS to a TCP server in netns peer,
# compared by length and SHA-256 (python3 is there for pcieoe_test.py; no
# nc or socat is installed).
transfer() {
	local want got spid i
	head -c 1048576 /dev/urandom >"$TMPD/tx.bin"
	want="1048576 $(sha256sum "$TMPD/tx.bin" | awk '{ print $1 }')"
	ip netns exec peer python3 -c '
import hashlib, socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
s.settimeout(60)
c, _ = s.accept()
c.settimeout(60)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest())
' "$PEER" 5301 >"$TMPD/rx.sum" 2>&1 &
	spid=$!
	ip netns exec "$1" python3 -c '
import socket, sys, time
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
        break
    except (ConnectionRefusedError, OSError):
        time.sleep(0.1)
else:
    sys.exit("no connection")
with open(sys.argv[3], "rb") as f:
    c.sendall(f.read())
c.close()
' "$PEER" 5301 "$TMPD/tx.bin" || { kill "$spid" 2>/dev/null; echo "client failed"; return 1; }
	for ((i = 0; i < 600; i++)); do
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$spid" 2>/dev/null; then
		kill "$spid"
		echo "the server did not finish within 60 s: $(cat "$TMPD/rx.sum")"
		return 1
	fi
	wait "$spid"
	got=$(cat "$TMPD/rx.sum")
	[[ $got == "$want" ]] || { echo "sent $want, received $got"; return 1; }
}

# iperf3 servers in netns peer: 5201 for the checks, 5202 for the run the
# unload interrupts (an iperf3 server serves one test at a time, and an
# interrupted one keeps it busy).
iperf_server() {
	ip netns exec peer iperf3 -s -D -p "$1" -I "$TMPD/iperf3-$1.pid" --logfile "$TMPD/iperf3-$1.log" &&
		wait_until 5 bash -c "ip netns exec peer ss -ltn | grep -q ':$1 '"
}

iperf_servers() { iperf_server 5201 && iperf_server 5202; }

carrier_is() {
	local c
	c=$(ip netns exec vhost cat /sys/class/net/vn0/carrier 2>&1)
	[[ $c == "$1" ]] && return 0
	echo "carrier of vn0 is '$c', want $1; DI: $(di_line vnic0)"
	return 1
}
di_link_is() {
	[[ $(di vnic0 link) == "$1" ]] && return 0
	echo "DI link of vnic0 is '$(di vnic0 link)', want $1: $(di_line vnic0)"
	return 1
}

mtu_is() {
	ip -n vhost -o link show dev vn0 | grep -q " mtu $1 " && return 0
	echo "want mtu $1:"
	ip -n vhost -o link show dev vn0
	return 1
}

# same WHAT OLD NOW: NOW equals OLD.
same() {
	[[ $3 == "$2" ]] && return 0
	echo "$1 changed from '$2' to '$3'"
	return 1
}

# one_pci_vnic: the host's tree has exactly one vnic function.
one_pci_vnic() { [[ $(pci_vnics | wc -l) == 1 ]]; }

# driver_is V PCI: ethtool -i V names pcieoe_vnic and PCI.
driver_is() {
	local out
	out=$(ethtool -i "$1" 2>&1)
	grep -qx 'driver: pcieoe_vnic' <<<"$out" && grep -qx "bus-info: $2" <<<"$out" && return 0
	echo "$out"
	return 1
}

# mac_is V MAC: V has address MAC, and ip link shows it.
mac_is() {
	[[ $(cat "/sys/class/net/$1/address") == "$2" ]] &&
		ip -o link show dev "$1" | grep -q "link/ether $2 " && return 0
	ip -o link show dev "$1"
	return 1
}

# has_stats: ethtool -S vn0 has the device's counters.
has_stats() {
	local out
	out=$(ip netns exec vhost ethtool -S vn0 2>&1)
	grep -q 'dev_rx_frames:' <<<"$out" && grep -q 'dev_tx_frames:' <<<"$out" && return 0
	echo "$out"
	return 1
}

fabric_up() { add_veth vethD vethH && add_veth upl0 peer0; }

namespaces() {
	ip netns add vhost && ip netns add vhost1 && ip netns add peer &&
		ip link set peer0 netns peer && ip -n peer addr add "$PEER/24" dev peer0 &&
		ip -n peer link set peer0 up && ip -n peer link set lo up &&
		ip -n vhost link set lo up && ip -n vhost1 link set lo up
}

# vnic_fn NAME MAC [MTU]: a vnic function on upl0, enabled.
vnic_fn() {
	local f=$CFGD/functions/$1
	mkdir "$f" && echo vnic >"$f/type" && echo upl0 >"$f/uplink" && echo "$2" >"$f/mac" &&
		{ [[ -z ${3:-} ]] || echo "$3" >"$f/mtu"; } && echo "${4:-1}" >"$f/queues" && echo 1 >"$f/enable"
}

# two_queues NS DEV: DEV has two receive and two transmit queues.
two_queues() {
	local q
	q=$(ip netns exec "$1" ls "/sys/class/net/$2/queues" 2>&1)
	[[ $(wc -w <<<"$q") == 4 && $q == *rx-1* && $q == *tx-1* ]] && return 0
	echo "queues of $2: $q"
	return 1
}

# spread NS DEV: both queue pairs of DEV carried frames each way.
spread() {
	local k v bad=0
	for k in tx_q0_packets tx_q1_packets rx_q0_packets rx_q1_packets; do
		v=$(es "$1" "$2" "$k")
		((${v:-0} > 0)) || { echo "$k is '${v:-missing}'"; bad=1; }
	done
	((bad == 0)) || { ip netns exec "$1" ethtool -S "$2" | grep -E '_q[01]_'; return 1; }
}

assign() {
	{ [[ -d $CFGD/hosts/$1 ]] || mkdir "$CFGD/hosts/$1"; } &&
		ln -s "$CFGD/functions/$2" "$CFGD/hosts/$1/functions/$2"
}

mtu_set() { ip -n vhost link set dev vn0 mtu "$1" && mtu_is "$1"; }

vn1_gone() { ! ip -n vhost1 link show dev vn1 >/dev/null 2>&1 && one_pci_vnic; }

# refused COMMAND...: COMMAND fails.
refused() {
	if "$@" 2>&1; then
		echo "accepted: $*"
		return 1
	fi
	return 0
}

body() {
	local HMAC PCI V out n t0 r0 d0 e0 bgpid

	dmesg_mark
	# --- the fabric, the uplink and its peer ---
	check "vnic: veth pairs vethD/vethH and upl0/peer0" fabric_up
	check "vnic: netns vhost, vhost1, peer; peer0 in peer as $PEER/24" namespaces
	check "vnic: iperf3 servers in netns peer (ports 5201, 5202)" iperf_servers
	check "vnic: pcieoe_dev: insmod" insmod "$DEV_KO"
	check "vnic: DI port vethD enabled" bash -c "mkdir $CFGD/ports/vethD && echo 1 >$CFGD/ports/vethD/enable"
	check "vnic: pcieoe_host: insmod netdev=vethH" insmod "$HOST_KO" netdev=vethH
	if ! wait_until "$WAIT_S" both_open vethD vethH >/dev/null; then
		tap_fail "vnic: session open within ${WAIT_S}s" "$(both_open vethD vethH)" "$(dmesg_new | tail -n 20)"
		return
	fi
	tap_ok "vnic: session open within ${WAIT_S}s"

	# --- 1. binding ---
	HMAC=$(cat /sys/class/net/vethH/address)
	# mtu 9000 is the largest the host may set; the netdev starts at 1500.
	check "vnic: vnic0 (uplink upl0, mac $M0, mtu 9000, 1 queue) enabled" vnic_fn vnic0 "$M0" 9000
	check "vnic: vnic0 assigned to vethH ($HMAC)" assign "$HMAC" vnic0
	check "vnic: mac refused while enabled (EBUSY)" refused bash -c "echo $M1 >$CFGD/functions/vnic0/mac"
	if ! wait_until "$WAIT_S" one_pci_vnic; then
		tap_fail "vnic: one e0e0:0002 function in lspci within ${WAIT_S}s" \
			"$(lspci -D -n -d e0e0: 2>&1)" "$(di_line vnic0)" "$(dmesg_new | tail -n 10)"
		return
	fi
	PCI=$(pci_vnics)
	tap_ok "vnic: one e0e0:0002 function in lspci within ${WAIT_S}s ($PCI)"
	check "vnic: pcieoe_vnic: insmod" insmod "$VNIC_KO"
	if ! wait_until "$WAIT_S" bash -c "compgen -G '$DRV/$PCI/net/*' >/dev/null"; then
		tap_fail "vnic: pcieoe_vnic binds $PCI, a netdev appears within ${WAIT_S}s" \
			"$(ls -l "$DRV" 2>&1)" "$(dmesg_new | grep -E 'pcieoe_(vnic|dev)' | tail -n 10)"
		return
	fi
	tap_ok "vnic: pcieoe_vnic binds $PCI, a netdev appears within ${WAIT_S}s"
	command -v udevadm >/dev/null && udevadm settle -t 10 >/dev/null 2>&1
	n=$(find "$DRV/$PCI/net" -mindepth 1 -maxdepth 1 | wc -l)
	V=$(basename "$(find "$DRV/$PCI/net" -mindepth 1 -maxdepth 1 | head -n 1)")
	check "vnic: exactly one netdev ($V)" test "$n" -eq 1
	check "vnic: ethtool -i $V: driver pcieoe_vnic, bus-info $PCI" driver_is "$V" "$PCI"
	check "vnic: $V has the configured MAC $M0 (sysfs, ip link)" mac_is "$V" "$M0"
	check "vnic: $V into netns vhost as vn0, 10.99.0.1/24, up" place "$M0" vhost vn0 10.99.0.1/24
	check "vnic: vn0 starts at MTU 1500" mtu_is 1500
	check "vnic: carrier on within ${WAIT_S}s" wait_until "$WAIT_S" carrier_is 1
	dmesg_clean "vnic: bind"

	# --- 2. ping, 3. iperf3, 4. counters ---
	t0=$(es vhost vn0 tx_q0_packets)
	r0=$(es vhost vn0 rx_q0_packets)
	d0=$(di vnic0 tx_frames)
	e0=$(di vnic0 rx_frames)
	ping_check "vnic: ping -c 5 $PEER, no loss" vhost "$PEER" -c 5 -i 0.2
	ping_check "vnic: ping burst (200 at 10 ms), no loss" vhost "$PEER" -c 200 -i 0.01
	iperf_check "vnic: TCP vNIC -> peer, 3 s" vhost -t 3
	iperf_check "vnic: TCP peer -> vNIC (-R), 3 s" vhost -t 3 -R
	check "vnic: ethtool -S: tx_q0_packets grew" grew tx_q0_packets "$t0" "$(es vhost vn0 tx_q0_packets)"
	check "vnic: ethtool -S: rx_q0_packets grew" grew rx_q0_packets "$r0" "$(es vhost vn0 rx_q0_packets)"
	check "vnic: ethtool -S has dev_rx_frames and dev_tx_frames" has_stats
	check "vnic: DI tx_frames grew" grew "DI tx_frames" "$d0" "$(di vnic0 tx_frames)"
	check "vnic: DI rx_frames grew" grew "DI rx_frames" "$e0" "$(di vnic0 rx_frames)"
	echo "# DI: $(di_line vnic0 | sed 's/.* link /link /')"
	dmesg_clean "vnic: traffic"

	# --- 5. MTU 9000 ---
	check "vnic: upl0 and peer0 MTU 9000" bash -c "ip link set upl0 mtu 9000 && ip -n peer link set peer0 mtu 9000"
	check "vnic: vn0 MTU 9000" mtu_set 9000
	check "vnic: vn0 MTU 9001 refused (function mtu 9000)" refused ip -n vhost link set vn0 mtu 9001
	check "vnic: vn0 MTU still 9000" mtu_is 9000
	r0=$(di vnic0 rx_oversize)
	ping_check "vnic: ping -s 8972 ${DF[*]} (9000-byte packets), no loss" vhost "$PEER" -c 3 -i 0.2 -s 8972 "${DF[@]}"
	check "vnic: DI rx_oversize unchanged" same "DI rx_oversize" "$r0" "$(di vnic0 rx_oversize)"
	check "vnic: vn0 back to MTU 1500" mtu_set 1500
	dmesg_clean "vnic: MTU"

	# --- 6. carrier follows the uplink ---
	check "vnic: ip link set upl0 down" ip link set upl0 down
	check "vnic: carrier off within ${WAIT_S}s" wait_until "$WAIT_S" carrier_is 0
	check "vnic: DI shows link 0" di_link_is 0
	check "vnic: ip link set upl0 up" ip link set upl0 up
	check "vnic: carrier on within ${WAIT_S}s" wait_until "$WAIT_S" carrier_is 1
	check "vnic: DI shows link 1" di_link_is 1
	check "vnic: ping works again within ${WAIT_S}s" wait_until "$WAIT_S" pings vhost "$PEER" -c 1 -W 1
	ping_check "vnic: ping -c 5 after the carrier came back, no loss" vhost "$PEER" -c 5 -i 0.2
	dmesg_clean "vnic: carrier"

	# --- 7. two vNICs on one uplink ---
	check "vnic: vnic1 (uplink upl0, mac $M1, 2 queue pairs) enabled" vnic_fn vnic1 "$M1" "" 2
	check "vnic: vnic1 assigned to vethH" assign "$HMAC" vnic1
	if wait_until "$WAIT_S" vnic_by_mac "$M1" >/dev/null; then
		tap_ok "vnic: vnic1's netdev appears within ${WAIT_S}s"
		check "vnic: vnic1 into netns vhost1 as vn1, 10.99.0.12/24, up" place "$M1" vhost1 vn1 10.99.0.12/24
		ping_check "vnic: vn0 -> vn1, no loss" vhost 10.99.0.12 -c 5 -i 0.2
		ping_check "vnic: vn1 -> vn0, no loss" vhost1 10.99.0.1 -c 5 -i 0.2
		ping_check "vnic: vn1 -> peer, no loss" vhost1 "$PEER" -c 5 -i 0.2
		check "vnic: vn1 has 2 queue pairs" two_queues vhost1 vn1
		# 16 flows: the stack's transmit hash and the DI's receive hash
		# put them on both queue pairs (all on one: about 1 in 30000).
		iperf_check "vnic: vn1 -> peer, 16 TCP flows, 2 s" vhost1 -t 2 -P 16
		check "vnic: both queue pairs of vn1 carried frames each way" spread vhost1 vn1
		ping_check "vnic: vn0 -> peer while vn1 exists, no loss" vhost "$PEER" -c 5 -i 0.2
	else
		tap_fail "vnic: vnic1's netdev appears within ${WAIT_S}s" "$(vnic_by_mac "$M1")" \
			"$(lspci -D -n -d e0e0: 2>&1)" "$(dmesg_new | tail -n 10)"
	fi
	check "vnic: vnic1 unassigned" rm "$CFGD/hosts/$HMAC/functions/vnic1"
	if wait_until "$WAIT_S" vn1_gone >/dev/null 2>&1; then
		tap_ok "vnic: vnic1's function and netdev go within ${WAIT_S}s"
	else
		tap_fail "vnic: vnic1's function and netdev go within ${WAIT_S}s" \
			"$(ip -n vhost1 -o link 2>&1)" "$(lspci -D -n -d e0e0: 2>&1)"
	fi
	check "vnic: vnic1 disabled and removed" bash -c \
		"echo 0 >$CFGD/functions/vnic1/enable && rmdir $CFGD/functions/vnic1"
	ping_check "vnic: vn0 -> peer after vnic1 left, no loss" vhost "$PEER" -c 5 -i 0.2
	dmesg_clean "vnic: two vNICs"

	# --- 8. rmmod and insmod under traffic ---
	ip netns exec vhost iperf3 -c "$PEER" -p 5202 -t 60 --forceflush >"$TMPD/bg.log" 2>&1 &
	bgpid=$!
	BG_PIDS="$bgpid"
	if wait_until 20 grep -q 'bits/sec' "$TMPD/bg.log"; then
		tap_ok "vnic: iperf3 running through vn0"
	else
		tap_fail "vnic: iperf3 running through vn0" "$(tail -n 5 "$TMPD/bg.log")"
	fi
	if ! bounded 30 rmmod pcieoe_vnic; then
		tap_fail "vnic: rmmod pcieoe_vnic during iperf3 (within 30 s)" "$(cat "$TMPD/bounded.out")" \
			"$(dmesg_new | tail -n 20)"
		return
	fi
	tap_ok "vnic: rmmod pcieoe_vnic during iperf3 (within 30 s)"
	check "vnic: vn0 gone, $PCI still there" bash -c \
		"! ip -n vhost link show dev vn0 2>/dev/null && test -e /sys/bus/pci/devices/$PCI"
	kill "$bgpid" 2>/dev/null
	wait "$bgpid" 2>/dev/null
	BG_PIDS=
	check "vnic: pcieoe_vnic: insmod again" insmod "$VNIC_KO"
	check "vnic: the netdev returns in the root netns within ${WAIT_S}s" wait_until "$WAIT_S" vnic_by_mac "$M0"
	check "vnic: into netns vhost as vn0 again" place "$M0" vhost vn0 10.99.0.1/24
	check "vnic: carrier on within ${WAIT_S}s" wait_until "$WAIT_S" carrier_is 1
	check "vnic: ping works within ${WAIT_S}s" wait_until "$WAIT_S" pings vhost "$PEER" -c 1 -W 1
	ping_check "vnic: ping -c 5 after the reload, no loss" vhost "$PEER" -c 5 -i 0.2
	dmesg_clean "vnic: reload under traffic"

	# --- 9. netem on the fabric ---
	# shellcheck disable=SC2086
	check "vnic: netem on vethD ($NETEM)" tc qdisc add dev vethD root netem $NETEM
	# shellcheck disable=SC2086
	check "vnic: netem on vethH" tc qdisc add dev vethH root netem $NETEM
	iperf_check "vnic: netem: TCP vNIC -> peer, 3 s" vhost -t 3
	check "vnic: netem: 1 MiB to the peer, SHA-256 matches" transfer vhost
	check "vnic: netem removed" bash -c "tc qdisc del dev vethD root && tc qdisc del dev vethH root"
	ping_check "vnic: ping -c 5 after netem, no loss" vhost "$PEER" -c 5 -i 0.2
	dmesg_clean "vnic: netem"

	# --- 10. teardown ---
	check "vnic: pcieoe_vnic: rmmod" rmmod pcieoe_vnic
	check "vnic: DI: unassign, disable, rmdir" bash -c \
		"rm $CFGD/hosts/$HMAC/functions/vnic0 && echo 0 >$CFGD/functions/vnic0/enable &&
		 rmdir $CFGD/hosts/$HMAC $CFGD/functions/vnic0"
	check "vnic: pcieoe_host, pcieoe_dev: rmmod" bash -c \
		"rmmod pcieoe_host && rmdir $CFGD/ports/vethD && rmmod pcieoe_dev"
	check "vnic: ip link del vethD, upl0" bash -c "ip link del vethD && ip link del upl0"
	dmesg_clean "vnic: teardown"
}

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
for tool in iperf3 ethtool lspci python3 tc; do
	command -v "$tool" >/dev/null || tap_fail "vnic: $tool installed" "scripts/setup installs it; run it"
done
body
exit "$TAP_FAILED"
