#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Remote functions in the host's PCI tree, end to end over a veth pair: the
# device interface (pcieoe_dev) serves test functions on vethD, the host
# interface (pcieoe_host) binds vethH, both through configfs ports/.
#
# * Assigning a function on the DI (a symlink) makes it appear in the
#   host's PCI domain (10000) with no host action; the time it takes is
#   printed. lspci shows its IDs, class, the six 32-bit BARs with their
#   sizes, the PCI Express capability and MSI-X.
# * Configuration writes (setpci) reach the DI's copy of the function's
#   configuration space: a writable register changes on both sides, a
#   read-only one on neither; the BARs the host assigned are the DI's.
# * Real configuration read round trips (cfg_rtt) all complete; their
#   latency is printed. A read of a device number the host was not given
#   gets Unsupported Request and the DI counts it.
# * Hot-plug: a second assignment adds 00:01.0, its removal removes it;
#   disabling a function removes it, enabling it brings it back. The
#   DI's link going down removes the host's devices (surprise removal); when
#   it comes back the session reopens and the device returns.
# * configfs refuses a bad type (EINVAL), an unknown netdev on either side
#   (ENODEV, logged), changing an enabled function's IDs (EBUSY).
# * A second host (vethD2/vethH2, domain 10001) sees only what is assigned
#   to it, and its writes to its device 00 reach its own function, not the
#   first host's device 00; a function already assigned to the first host
#   is refused (EBUSY).
#
# The whole body runs twice: loss-free, then with netem (loss, duplication,
# reordering, delay) on vethD and vethH. The kernel log stays clean.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
DBG=/sys/kernel/debug
CFGD=/sys/kernel/config/pcieoe_dev
CFGH=/sys/kernel/config/pcieoe_host
FUNCS=$DBG/pcieoe_dev/functions
# The engine's dead-peer timeout (SessionConfig::new) and a generous wait
# for the test VM's software emulation.
DEAD_TIMEOUT_S=1
WAIT_S=10
NETEM="loss 2% duplicate 1% reorder 25% delay 1ms"
# The test function's BARs (rust/pcieoe/src/function.rs,
# FunctionKind::bars), as lspci prints their sizes.
BAR_SIZES=(512 512 1K 16K 128K 1M)

log_has() { dmesg_new | grep -qF -- "$1" || { echo "no '$1' in the kernel log:"; dmesg_new | tail -n 8; return 1; }; }

# write_fails ERROR FILE VALUE: writing VALUE to FILE fails with the error
# message ERROR (e.g. "Invalid argument"). As in test_configfs.sh.
write_fails() {
	local out
	if out=$( (echo "$3" >"$2") 2>&1); then
		echo "writing '$3' to $2 succeeded"
		return 1
	fi
	[[ $out == *"$1"* ]] || { echo "writing '$3' to $2: $out (want $1)"; return 1; }
}

# fails ERROR COMMAND...: COMMAND fails with the error message ERROR.
fails() {
	local want=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "$* succeeded"
		return 1
	fi
	[[ $out == *"$want"* ]] || { echo "$*: $out (want $want)"; return 1; }
}

# Removes everything this file sets up, in an order that works from any
# state: the links first (a linked function cannot be removed); the host's
# ports and module before the DI's (its devices leave while the session
# can still carry their last configuration writes); configfs directories
# before their module (they pin it); the veths last (deleting one end
# deletes the pair and its qdiscs). Also run between the passes, so that
# the second starts from nothing whatever the first left behind.
cleanup() {
	find "$CFGD/hosts" -mindepth 3 -maxdepth 3 -type l -delete 2>/dev/null
	rmdir "$CFGH"/ports/* 2>/dev/null
	loaded pcieoe_host && rmmod pcieoe_host
	rmdir "$CFGD"/hosts/* "$CFGD"/functions/* "$CFGD"/ports/* 2>/dev/null
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del vethD 2>/dev/null
	ip link del vethD2 2>/dev/null
	true
}
trap cleanup EXIT

# port_on TREE IFNAME: configfs port IFNAME of TREE created and enabled.
port_on() { mkdir "$1/ports/$2" && echo 1 >"$1/ports/$2/enable"; }

stats() { echo "$DBG/$1/$2/stats"; }
hpci() { echo "$DBG/pcieoe_host/$1/pci"; }
mac() { cat "/sys/class/net/$1/address"; }
epoch() { kv "$(stats pcieoe_host "$1")" epoch; }

# both_open DI_IF HOST_IF: both ends report an open session with the same,
# nonzero epoch.
both_open() {
	local h d
	h=$(kv "$(stats pcieoe_host "$2")" state)/$(kv "$(stats pcieoe_host "$2")" epoch)
	d=$(kv "$(stats pcieoe_dev "$1")" state)/$(kv "$(stats pcieoe_dev "$1")" epoch)
	if [[ $h == open/* && $h == "$d" && $h != open/0x00000000 ]]; then
		return 0
	fi
	echo "host: $h, device: $d (want open/<same epoch>)"
	return 1
}

# open_with_new_epoch DI_IF HOST_IF OLD: both open in an epoch other than OLD.
open_with_new_epoch() {
	both_open "$1" "$2" || return 1
	[[ $(epoch "$2") != "$3" ]] || { echo "epoch is still $3"; return 1; }
}

# dom_devs DOM: "slot vendor:device" of every device lspci shows in PCI
# domain DOM (all vendors: a stray device must show too).
dom_devs() { lspci -D -n | awk -v d="$1:" 'index($1, d) == 1 { print $1, $3 }'; }

# dom_is DOM [LINE...]: the domain holds exactly these devices (dom_devs
# lines, in order), in lspci and in sysfs.
dom_is() {
	local dom=$1 got want sys
	shift
	got=$(dom_devs "$dom")
	want=$(printf '%s\n' "$@" | sed '/^$/d')
	sys=$(cd /sys/bus/pci/devices && ls -d "$dom":* 2>/dev/null)
	if [[ $got == "$want" && $sys == "$(echo "$want" | awk '{ print $1 }')" ]]; then
		return 0
	fi
	echo "domain $dom in lspci: ${got:-(nothing)}"
	echo "in /sys/bus/pci/devices: ${sys:-(nothing)}"
	echo "want: ${want:-(nothing)}"
	return 1
}

# doms_empty DOM...: no device in any of these domains.
doms_empty() {
	local d
	for d in "$@"; do
		dom_is "$d" || return 1
	done
}

# fval NAME KEY: the value after KEY in the DI's `functions` line of
# function NAME ("function f0 host M dev 00 id V:D command 0x.. bar0 ...").
fval() {
	awk -v n="$1" -v k="$2" '$1 == "function" && $2 == n {
		for (i = 1; i < NF; i += 2) if ($i == k) print $(i + 1) }' "$FUNCS"
}

# fis NAME KEY WANT: the DI's line of NAME has KEY WANT.
fis() {
	local got
	got=$(fval "$1" "$2")
	[[ $got == "$3" ]] || { echo "DI: function $1 $2 is '$got', want '$3':"; cat "$FUNCS"; return 1; }
}

# above FILE KEY OLD: counter KEY of FILE is above OLD.
above() {
	local now
	now=$(kv "$1" "$2")
	((${now:-0} > $3)) || { echo "$2 in $1 is ${now:-missing}, want more than $3"; return 1; }
}

# is FILE KEY WANT: KEY of FILE is WANT.
is() {
	local got
	got=$(kv "$1" "$2")
	[[ $got == "$3" ]] || { echo "$2 in $1 is '$got', want '$3'"; cat "$1"; return 1; }
}

# has TEXT REGEX: TEXT has a line matching the extended REGEX.
has() { grep -qE -- "$2" <<<"$1" || { echo "no /$2/ in:"; echo "${1:-(nothing)}" | head -n 60; return 1; }; }

# lacks TEXT REGEX: no line of TEXT matches REGEX.
lacks() { ! grep -E -- "$2" <<<"$1" || { echo "(unwanted: /$2/)"; return 1; }; }

# keys_are FILE KEY WANT [KEY WANT]...: each KEY of FILE is its WANT.
keys_are() {
	local f=$1
	shift
	while (($# >= 2)); do
		is "$f" "$1" "$2" || return 1
		shift 2
	done
}

# serves NAME MAC DEV: the DI serves function NAME to host MAC as device DEV.
serves() { fis "$1" host "$2" && fis "$1" dev "$3"; }

# rtt_ok TEXT: cfg_rtt's output says 100 reads, no timeout.
rtt_ok() { has "$1" "^reads: 100$" && has "$1" "^timeouts: 0$"; }

# reg DEV NAME WANT: setpci reads register NAME of DEV (the host's view) as
# WANT.
reg() {
	local got
	got=$(setpci -s "$1" "$2") || return 1
	[[ $got == "$3" ]] || { echo "setpci -s $1 $2 reads '$got', want '$3'"; return 1; }
}

# bars_match DEV NAME: each BAR register the host reads equals the DI's
# copy of function NAME, and is assigned (nonzero).
bars_match() {
	local i h d bad=0
	for i in 0 1 2 3 4 5; do
		h=0x$(setpci -s "$1" "BASE_ADDRESS_$i")
		d=$(fval "$2" "bar$i")
		if [[ $h != "$d" || $((h & ~0xf)) == 0 ]]; then
			echo "BAR$i: host $h, DI $d"
			bad=1
		fi
	done
	return "$bad"
}

# ms_until T0 SECONDS COMMAND...: polls COMMAND every 10 ms; when it
# succeeds prints the milliseconds since T0 (microseconds, as
# ${EPOCHREALTIME/./}: the clock without a fork, which costs milliseconds
# under the VM's emulation). After SECONDS it fails with the command's
# output.
ms_until() {
	local t0=$1 limit=$2 end
	shift 2
	end=$((${EPOCHREALTIME/./} + limit * 1000000))
	until "$@" >/dev/null 2>&1; do
		((${EPOCHREALTIME/./} < end)) || { "$@"; return 1; }
		sleep 0.01
	done
	echo $(((${EPOCHREALTIME/./} - t0) / 1000))
}

# klat NAME DEV: milliseconds from the DI's "function NAME assigned" to the
# host's "DEV: added" in the kernel log since the mark ("?" without them).
klat() {
	local a b
	a=$(dmesg_new | sed -n "s/^\[ *\([0-9.]*\)\] pcieoe_dev: function $1 assigned to host .*/\1/p" | head -n 1)
	b=$(dmesg_new | sed -n "s/^\[ *\([0-9.]*\)\] pcieoe_host: $2: added .*/\1/p" | head -n 1)
	if [[ -n $a && -n $b ]]; then
		awk -v a="$a" -v b="$b" 'BEGIN { printf "%d", (b - a) * 1000 }'
	else
		echo "?"
	fi
}

# pass LABEL NETEM: the whole test; NETEM is "netem" to run it under netem.
pass() {
	local P=$1 DOM DOM2 DEV0 DEV1 HMAC HMAC2 VID DID t0 ms out E r0 s0 u0 w0 c0 i HPCI HPCI2 regions caps
	HPCI=$(hpci vethH)
	HPCI2=$(hpci vethH2)

	dmesg_mark
	check "$P: veth pair vethD/vethH" add_veth vethD vethH
	if [[ $2 == netem ]]; then
		# shellcheck disable=SC2086
		check "$P: tc qdisc add dev vethD root netem $NETEM" tc qdisc add dev vethD root netem $NETEM
		# shellcheck disable=SC2086
		check "$P: tc qdisc add dev vethH root netem $NETEM" tc qdisc add dev vethH root netem $NETEM
	fi
	check "$P: pcieoe_dev: insmod" insmod "$DEV_KO"
	check "$P: pcieoe_host: insmod" insmod "$HOST_KO"
	check "$P: DI port vethD enabled" port_on "$CFGD" vethD
	check "$P: host port vethH enabled" port_on "$CFGH" vethH
	# Nothing below means anything without a session: stop the pass here
	# (cleanup removes what is set up).
	if ! wait_until "$WAIT_S" both_open vethD vethH >/dev/null; then
		tap_fail "$P: session open within ${WAIT_S}s" "$(both_open vethD vethH)" "$(dmesg_new | tail -n 20)"
		return
	fi
	tap_ok "$P: session open within ${WAIT_S}s"
	DOM=$(kv "$HPCI" domain)
	check "$P: vethH's port is PCI domain 10000" is "$HPCI" domain 10000
	check "$P: the domain is empty before any assignment" dom_is "$DOM"
	dmesg_clean "$P: setup"

	# --- assignment: the host follows with no action of its own ---
	check "$P: mkdir functions/f0 functions/f1" mkdir "$CFGD/functions/f0" "$CFGD/functions/f1"
	check "$P: enable f0 and f1" \
		bash -c "echo 1 >$CFGD/functions/f0/enable && echo 1 >$CFGD/functions/f1/enable"
	# The IDs are the type's defaults (Documentation/configfs.rst); what
	# the host must see is what the DI says.
	VID=$(cat "$CFGD/functions/f0/vendor_id")
	VID=${VID#0x}
	DID=$(cat "$CFGD/functions/f0/device_id")
	DID=${DID#0x}
	check "$P: f0 is a test function with device ID 0x0001" \
		bash -c "[[ \$(cat $CFGD/functions/f0/type):$DID == test:0001 ]]"
	HMAC=$(mac vethH)
	check "$P: mkdir hosts/<vethH's MAC>" mkdir "$CFGD/hosts/$HMAC"
	DEV0=$DOM:00:00.0
	DEV1=$DOM:00:01.0
	t0=${EPOCHREALTIME/./}
	check "$P: assign f0 to vethH" ln -s "$CFGD/functions/f0" "$CFGD/hosts/$HMAC/functions/f0"
	# The appearance is timed in sysfs, where lspci finds devices: under
	# the VM's emulation one lspci run takes longer than the hot-add.
	if ms=$(ms_until "$t0" "$WAIT_S" test -e "/sys/bus/pci/devices/$DEV0"); then
		ms="$ms ms"
	else
		ms="not within ${WAIT_S}s"
	fi
	check "$P: f0 alone in domain $DOM as $DEV0 [$VID:$DID] within ${WAIT_S}s" \
		wait_until "$WAIT_S" dom_is "$DOM" "$DEV0 $VID:$DID"
	echo "# $P: assign -> lspci: $ms (kernel log: assigned -> added $(klat f0 "$DEV0") ms)"
	check "$P: DI serves f0 to vethH's MAC as device 00" serves f0 "$HMAC" 00
	check "$P: host pci: assigned and present 0x00000001" \
		keys_are "$HPCI" assigned 0x00000001 present 0x00000001
	dmesg_clean "$P: assign"

	# --- what lspci shows ---
	# Each check looks at its part of the output, so that a failure shows
	# the lines that matter.
	out=$(lspci -D -nn -vvv -s "$DEV0" 2>&1)
	regions=$(grep -E 'Region|Expansion ROM' <<<"$out")
	caps=$(grep -E 'Capabilities:' <<<"$out")
	check "$P: lspci: $DEV0 unassigned class [ff00], [$VID:$DID]" \
		has "$(head -n 1 <<<"$out")" "^$DEV0 Unassigned class \[ff00\]: .*$VID:$DID"
	for i in 0 1 2 3 4 5; do
		check "$P: lspci: Region $i: 32-bit non-prefetchable memory, size ${BAR_SIZES[i]}" \
			has "$regions" "Region $i: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\) (\[disabled\] )?\[size=${BAR_SIZES[i]}\]"
	done
	check "$P: lspci: no other region" lacks "$regions" "Region [6-9]|I/O ports at|Expansion ROM"
	# PcieCap: version 2 (cfgspace.rs, add_pcie), an endpoint.
	check "$P: lspci: Express (v2) Endpoint" has "$caps" "Capabilities: \[[0-9a-f]+\] Express \(v2\) Endpoint"
	check "$P: lspci: MSI-X: Enable- Count=8" has "$caps" "Capabilities: \[[0-9a-f]+\] MSI-X: Enable- Count=8"

	# --- configuration writes: the shadow and the DI's copy stay equal ---
	# The write travels asynchronously (queued by the accessor, sent by
	# the worker), so the DI's side is waited for.
	check "$P: setpci COMMAND=0x0002" setpci -s "$DEV0" COMMAND=0x0002
	check "$P: host reads COMMAND 0002" reg "$DEV0" COMMAND 0002
	check "$P: DI's copy has command 0x0002 within ${WAIT_S}s" wait_until "$WAIT_S" fis f0 command 0x0002
	w0=$(kv "$FUNCS" cfg_writes)
	check "$P: setpci VENDOR_ID=0x1234 (read-only)" setpci -s "$DEV0" VENDOR_ID=0x1234
	check "$P: host still reads VENDOR_ID $VID" reg "$DEV0" VENDOR_ID "$VID"
	check "$P: the write reached the DI (cfg_writes grows) within ${WAIT_S}s" \
		wait_until "$WAIT_S" above "$FUNCS" cfg_writes "$w0"
	check "$P: DI's copy still has id $VID:$DID" fis f0 id "$VID:$DID"
	check "$P: BARs as the host assigned them equal the DI's bar0..bar5" bars_match "$DEV0" f0
	check "$P: no configuration write refused or lost" \
		keys_are "$HPCI" cfg_write_errors 0 cfg_writes_lost 0
	dmesg_clean "$P: config writes"

	# --- real round trips ---
	out=$(cat "$DBG/pcieoe_host/vethH/cfg_rtt" 2>&1)
	check "$P: cfg_rtt: 100 reads, 0 timeouts" rtt_ok "$out"
	echo "$out" | awk -v p="$P" '$1 ~ /_ns:$/ { v[$1] = $2 / 1000 }
		END { if ("mean_ns:" in v) printf "# %s: config read RTT: mean %.1f us (min %.1f us, max %.1f us)\n",
			p, v["mean_ns:"], v["min_ns:"], v["max_ns:"] }'
	u0=$(kv "$FUNCS" ur_unassigned)
	out=$(cat "$DBG/pcieoe_host/vethH/cfg_probe_unassigned" 2>&1)
	check "$P: cfg_probe_unassigned: device 0x01" has "$out" "^device: 0x01$"
	check "$P: cfg_probe_unassigned: status UR" has "$out" "^status: UR$"
	check "$P: DI counted it in ur_unassigned" above "$FUNCS" ur_unassigned "${u0:-0}"
	dmesg_clean "$P: round trips"

	# --- hot-plug of a second function ---
	r0=$(kv "$HPCI" removed)
	check "$P: assign f1 to vethH" ln -s "$CFGD/functions/f1" "$CFGD/hosts/$HMAC/functions/f1"
	check "$P: f1 appears as $DEV1 within ${WAIT_S}s" \
		wait_until "$WAIT_S" dom_is "$DOM" "$DEV0 $VID:$DID" "$DEV1 $VID:$DID"
	check "$P: DI serves f1 as device 01" fis f1 dev 01
	check "$P: host pci: present 0x00000003" is "$HPCI" present 0x00000003
	check "$P: unassign f1" rm "$CFGD/hosts/$HMAC/functions/f1"
	check "$P: $DEV1 leaves lspci and sysfs within ${WAIT_S}s" wait_until "$WAIT_S" dom_is "$DOM" "$DEV0 $VID:$DID"
	check "$P: host's removed counter grew" above "$HPCI" removed "${r0:-0}"
	check "$P: DI no longer serves f1" bash -c "! grep -q '^function f1 ' $FUNCS"
	# Serving follows enable too (Documentation/configfs.rst).
	check "$P: disable f0" bash -c "echo 0 >$CFGD/functions/f0/enable"
	check "$P: $DEV0 leaves within ${WAIT_S}s" wait_until "$WAIT_S" dom_is "$DOM"
	check "$P: enable f0" bash -c "echo 1 >$CFGD/functions/f0/enable"
	check "$P: $DEV0 returns within ${WAIT_S}s" wait_until "$WAIT_S" dom_is "$DOM" "$DEV0 $VID:$DID"
	dmesg_clean "$P: hot-plug"

	# --- the DI's link goes down and comes back ---
	s0=$(kv "$HPCI" surprise_removals)
	E=$(epoch vethH)
	check "$P: ip link set vethD down" ip link set vethD down
	check "$P: host's devices gone within ${WAIT_S}s (dead timeout ${DEAD_TIMEOUT_S}s)" \
		wait_until "$WAIT_S" dom_is "$DOM"
	check "$P: surprise_removals grew" above "$HPCI" surprise_removals "${s0:-0}"
	check "$P: ip link set vethD up" ip link set vethD up
	check "$P: session reopens with a new epoch within ${WAIT_S}s" \
		wait_until "$WAIT_S" open_with_new_epoch vethD vethH "$E"
	check "$P: f0 back as $DEV0 within ${WAIT_S}s" wait_until "$WAIT_S" dom_is "$DOM" "$DEV0 $VID:$DID"
	# Fetched anew: the returned device's BARs, as the PCI core assigned
	# them again, reach the DI too.
	check "$P: BARs of the returned f0 equal the DI's within ${WAIT_S}s" \
		wait_until "$WAIT_S" bars_match "$DEV0" f0
	dmesg_clean "$P: link down and up"

	# --- configfs refusals ---
	check "$P: mkdir functions/fx" mkdir "$CFGD/functions/fx"
	check "$P: type bogus -> EINVAL" write_fails "Invalid argument" "$CFGD/functions/fx/type" bogus
	check "$P: fx is still a test function" bash -c "[[ \$(cat $CFGD/functions/fx/type) == test ]]"
	check "$P: rmdir functions/fx" rmdir "$CFGD/functions/fx"
	check "$P: vendor_id of enabled f0 -> EBUSY" write_fails "Device or resource busy" "$CFGD/functions/f0/vendor_id" 0x1234
	check "$P: f0 vendor_id unchanged" bash -c "[[ \$(cat $CFGD/functions/f0/vendor_id) == 0x$VID ]]"
	check "$P: DI: mkdir ports/nosuch" mkdir "$CFGD/ports/nosuch"
	check "$P: DI: enable of unknown netdev -> ENODEV" write_fails "No such device" "$CFGD/ports/nosuch/enable" 1
	check "$P: DI: the log names nosuch" log_has "pcieoe_dev: no network device named 'nosuch'"
	check "$P: DI: ports/nosuch reads enable 0" bash -c "[[ \$(cat $CFGD/ports/nosuch/enable) == 0 ]]"
	check "$P: DI: rmdir ports/nosuch" rmdir "$CFGD/ports/nosuch"
	check "$P: host: mkdir ports/nosuch" mkdir "$CFGH/ports/nosuch"
	check "$P: host: enable of unknown netdev -> ENODEV" write_fails "No such device" "$CFGH/ports/nosuch/enable" 1
	check "$P: host: the log names nosuch" log_has "pcieoe_host: no network device named 'nosuch'"
	check "$P: host: rmdir ports/nosuch" rmdir "$CFGH/ports/nosuch"
	check "$P: vethH's domain unchanged by the refusals" dom_is "$DOM" "$DEV0 $VID:$DID"
	dmesg_clean "$P: configfs refusals"

	# --- a second host on its own link ---
	check "$P: veth pair vethD2/vethH2" add_veth vethD2 vethH2
	check "$P: DI port vethD2 enabled" port_on "$CFGD" vethD2
	check "$P: host port vethH2 enabled" port_on "$CFGH" vethH2
	check "$P: second session open within ${WAIT_S}s" wait_until "$WAIT_S" both_open vethD2 vethH2
	DOM2=$(kv "$HPCI2" domain)
	check "$P: vethH2's port is PCI domain 10001" is "$HPCI2" domain 10001
	HMAC2=$(mac vethH2)
	check "$P: mkdir hosts/<vethH2's MAC>" mkdir "$CFGD/hosts/$HMAC2"
	check "$P: assign f1 to vethH2" ln -s "$CFGD/functions/f1" "$CFGD/hosts/$HMAC2/functions/f1"
	check "$P: domain $DOM2 shows exactly $DOM2:00:00.0 [$VID:$DID] within ${WAIT_S}s" \
		wait_until "$WAIT_S" dom_is "$DOM2" "$DOM2:00:00.0 $VID:$DID"
	check "$P: DI serves f1 to vethH2's MAC as device 00" serves f1 "$HMAC2" 00
	check "$P: vethH's domain still shows only f0" dom_is "$DOM" "$DEV0 $VID:$DID"
	# Both hosts have a device 00: the DI tells them apart by the host's
	# MAC, so what vethH2 writes to its 00:00.0 lands in f1, not f0.
	check "$P: BARs of vethH2's 00:00.0 equal f1's on the DI within ${WAIT_S}s" \
		wait_until "$WAIT_S" bars_match "$DOM2:00:00.0" f1
	c0=$(fval f0 command)
	check "$P: setpci COMMAND=0x0004 on $DOM2:00:00.0" setpci -s "$DOM2:00:00.0" COMMAND=0x0004
	check "$P: the DI's f1 has command 0x0004 within ${WAIT_S}s" wait_until "$WAIT_S" fis f1 command 0x0004
	check "$P: the DI's f0 keeps its command register" fis f0 command "$c0"
	check "$P: vethH still reads f0's COMMAND ${c0#0x}" reg "$DEV0" COMMAND "${c0#0x}"
	check "$P: host pci of vethH still present 0x00000001" is "$HPCI" present 0x00000001
	check "$P: assign f0 to vethH2 too -> EBUSY" \
		fails "Device or resource busy" ln -s "$CFGD/functions/f0" "$CFGD/hosts/$HMAC2/functions/f0"
	check "$P: vethH2's host has only f1 assigned" bash -c "[[ \$(cat $CFGD/hosts/$HMAC2/assigned) == f1 ]]"
	check "$P: domain $DOM2 unchanged" dom_is "$DOM2" "$DOM2:00:00.0 $VID:$DID"
	dmesg_clean "$P: second host"

	# --- orderly teardown ---
	check "$P: unassign everything" rm "$CFGD/hosts/$HMAC/functions/f0" "$CFGD/hosts/$HMAC2/functions/f1"
	check "$P: both domains empty within ${WAIT_S}s" \
		wait_until "$WAIT_S" doms_empty "$DOM" "$DOM2"
	check "$P: host: rmdir ports/vethH ports/vethH2" rmdir "$CFGH/ports/vethH" "$CFGH/ports/vethH2"
	check "$P: pcieoe_host: rmmod" rmmod pcieoe_host
	check "$P: DI: rmdir hosts, functions, ports" \
		rmdir "$CFGD/hosts/$HMAC" "$CFGD/hosts/$HMAC2" "$CFGD/functions/f0" "$CFGD/functions/f1" \
		"$CFGD/ports/vethD" "$CFGD/ports/vethD2"
	check "$P: pcieoe_dev: rmmod" rmmod pcieoe_dev
	check "$P: veth pairs removed" bash -c "ip link del vethD && ip link del vethD2"
	dmesg_clean "$P: teardown"
}

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
pass pci plain
cleanup
pass netem netem
exit "$TAP_FAILED"
