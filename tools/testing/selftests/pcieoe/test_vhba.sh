#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The virtual HBA end to end (Documentation/vhba.rst): a DI (pcieoe_dev on
# vethD) serves a vhba function whose LUNs are files under /tmp; the host
# (pcieoe_host, netdev=vethH) gets it as a PCI storage controller and
# pcieoe_vhba.ko registers one disk (/dev/vhd<n>) per LUN.
#
#   fio, ext4 -> /dev/vhdN ~~ pcieoe_vhba ~~ pcieoe_host vethH <-> vethD
#                                            pcieoe_dev -> /tmp/.../lun*.img
#
# * Binding: LUN 0 a 64 MiB file, LUN 1 a 16 MiB file read-only, 2 queues:
#   two disks with those sizes, the RO flag on the second, 512-byte blocks.
# * ext4: mkfs, mount, files written, umount, mount, SHA-256 round trip.
# * fio verify (crc32c, O_DIRECT, libaio): random 512 B, 4 KiB, 64 KiB
#   writes and a 70/30 4 KiB mix, each at iodepth 1 and 32.
# * Both disks at once: verified writes on LUN 0, reads on LUN 1.
# * The read-only LUN refuses writes and reads its backing file's bytes.
# * netem on the fabric (vethD, vethH): a fio verify run still succeeds.
# * Surprise removal: the DI's port goes down during fio; fio ends in
#   bounded time with an error, the disk goes, no task hangs in D state.
#   The port comes back, the function is hot-added with pcieoe_vhba
#   already loaded, and its disks work again (fio verify).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
HOST_KO=$(ko pcieoe_host/pcieoe_host.ko)
VHBA_KO=$(ko vhba/pcieoe_vhba.ko)
DBG=/sys/kernel/debug
FUNCS=$DBG/pcieoe_dev/functions
CFGD=/sys/kernel/config/pcieoe_dev
WAIT_S=10
NETEM="loss 2% reorder 25% delay 1ms"
TMPD=$(mktemp -d /tmp/pcieoe-vhba.XXXXXX)
MNT=$TMPD/mnt
FIO=(fio --ioengine=libaio --direct=1 --group_reporting --verify_state_save=0)

# Removes everything, in an order that works from any state: processes,
# the mount, the host's driver and modules (which take the disks with
# them), then the DI's configuration and port.
cleanup() {
	local p
	for p in ${BG_PIDS:-}; do
		kill "$p" 2>/dev/null
	done
	BG_PIDS=
	mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
	tc qdisc del dev vethD root 2>/dev/null
	tc qdisc del dev vethH root 2>/dev/null
	find "$CFGD/hosts" -mindepth 3 -maxdepth 3 -type l -delete 2>/dev/null
	loaded pcieoe_vhba && rmmod pcieoe_vhba
	loaded pcieoe_host && rmmod pcieoe_host
	for p in "$CFGD"/functions/*/enable; do
		[[ -e $p ]] && echo 0 >"$p" 2>/dev/null
	done
	rmdir "$CFGD"/hosts/* "$CFGD"/functions/* "$CFGD"/ports/* 2>/dev/null
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del vethD 2>/dev/null
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
# "functions" file.
di() {
	awk -v n="$1" -v k="$2" '$1 == "function" && $2 == n {
		for (i = 3; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' "$FUNCS" 2>/dev/null
}
di_line() { grep "^function $1 " "$FUNCS" 2>&1 || echo "(no line for $1 in $FUNCS)"; }

grew() {
	[[ $3 =~ ^[0-9]+$ ]] && (($3 > ${2:-0})) && return 0
	echo "$1 is ${3:-missing}, want more than ${2:-0}"
	return 1
}

# pci_vhbas: the PCI names of the host's vhba functions, one a line.
pci_vhbas() { lspci -D -n -d e0e0:0003 2>/dev/null | awk '{ print $1 }'; }
one_pci_vhba() { [[ $(pci_vhbas | wc -l) == 1 ]]; }
no_pci_vhba() { [[ -z $(pci_vhbas) ]]; }

# disks PCI: the disks of PCI function PCI, in the order of their numbers
# (the LUNs' order), one a line.
disks() { ls "/sys/bus/pci/devices/$1/block" 2>/dev/null | sort -V; }
# has_disks PCI N: PCI has N disks, and their device nodes exist.
has_disks() {
	local d n=0
	for d in $(disks "$1"); do
		[[ -b /dev/$d ]] && n=$((n + 1))
	done
	((n == $2)) && return 0
	echo "$1 has disks '$(disks "$1" | xargs)' ($n with a node), want $2"
	return 1
}

# geometry DISK SECTORS RO: /sys/block/DISK has SECTORS 512-byte sectors,
# ro RO, 512-byte logical blocks; blockdev agrees.
geometry() {
	local s=/sys/block/$1 got
	got="size $(cat "$s/size") ro $(cat "$s/ro") lbs $(cat "$s/queue/logical_block_size") getro $(blockdev --getro "/dev/$1") getss $(blockdev --getss "/dev/$1")"
	[[ $got == "size $2 ro $3 lbs 512 getro $3 getss 512" ]] && return 0
	echo "$1: $got; want size $2 ro $3 lbs 512"
	lsblk -o NAME,SIZE,RO,LOG-SEC "/dev/$1"
	return 1
}

# fio_ok NAME ARGS...: one fio run must exit 0 and report "err= 0" for
# every job; the summary line as a diagnostic.
fio_ok() {
	local out rc
	out=$(timeout 300 "${FIO[@]}" --name="$1" "${@:2}" 2>&1)
	rc=$?
	if ((rc == 0)) && grep -q 'err= 0' <<<"$out" && ! grep -qE 'err= *[1-9]' <<<"$out"; then
		grep -E '^ *(read|write):' <<<"$out" | sed 's/^ */# /'
		return 0
	fi
	echo "fio $* exited $rc:"
	grep -E 'err=|verify|error|fio:' <<<"$out" | head -n 10
	tail -n 5 <<<"$out"
	return 1
}

# fio_check NAME ARGS...: one TAP line for fio_ok, its bandwidth lines as
# diagnostics.
fio_check() {
	local name=$1 out
	shift
	if out=$(fio_ok "$@"); then
		tap_ok "$name"
		[[ -n $out ]] && echo "$out"
	else
		tap_fail "$name" "$out" "$(di_line hba0)" "$(dmesg_new | tail -n 10)"
	fi
}

# bounded SECONDS COMMAND...: as in test_vnic.sh.
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

# refused COMMAND...: COMMAND fails; its error as output.
refused() {
	if "$@" 2>&1; then
		echo "accepted: $*"
		return 1
	fi
	return 0
}

# no_d_state: no task is in uninterruptible sleep (D), other than kernel
# threads idling in it (those have no command line).
no_d_state() {
	local out
	out=$(ps -eo stat=,pid=,comm=,wchan:32= | awk '$1 ~ /^D/' |
		while read -r st pid comm wchan; do
			[[ -s /proc/$pid/cmdline ]] && echo "$st $pid $comm $wchan"
		done)
	[[ -z $out ]] && return 0
	echo "tasks in D state:"
	echo "$out"
	return 1
}

fabric_up() { add_veth vethD vethH; }

# vhba_fn NAME QUEUES LUN...: a vhba function with these LUNs, enabled.
vhba_fn() {
	local f=$CFGD/functions/$1 q=$2 i=0 l
	shift 2
	mkdir "$f" && echo vhba >"$f/type" || return 1
	for l in "$@"; do
		echo "$l" >"$f/lun$i" || return 1
		i=$((i + 1))
	done
	echo "$q" >"$f/queues" && echo 1 >"$f/enable"
}

assign() {
	{ [[ -d $CFGD/hosts/$1 ]] || mkdir "$CFGD/hosts/$1"; } &&
		ln -s "$CFGD/functions/$2" "$CFGD/hosts/$1/functions/$2"
}

# same_bytes A B LEN: the first LEN bytes of A and B are equal.
same_bytes() {
	local a b
	a=$(head -c "$3" "$1" | sha256sum | awk '{ print $1 }')
	b=$(head -c "$3" "$2" | sha256sum | awk '{ print $1 }')
	[[ $a == "$b" ]] && return 0
	echo "$1: $a, $2: $b"
	return 1
}

# files_write: a few files of random bytes on the mounted file system, and
# their sums in $TMPD/files.sha256.
files_write() {
	local i
	mkdir -p "$MNT/d" || return 1
	for i in 1 2 3 4; do
		head -c $((i * 700000 + 123)) /dev/urandom >"$MNT/d/f$i" || return 1
	done
	(cd "$MNT/d" && sha256sum f1 f2 f3 f4 >"$TMPD/files.sha256") && sync
}
files_verify() { (cd "$MNT/d" && sha256sum -c --quiet "$TMPD/files.sha256") 2>&1; }

# ext4_check DISK: mkfs, mount, files written, umount, mount, sums checked.
ext4_round_trip() {
	mkdir -p "$MNT" &&
		mkfs.ext4 -q -F "/dev/$1" &&
		mount "/dev/$1" "$MNT" &&
		files_write &&
		umount "$MNT" &&
		echo 3 >/proc/sys/vm/drop_caches &&
		mount "/dev/$1" "$MNT" &&
		files_verify &&
		umount "$MNT"
}

# reads_above N: the DI has served more than N reads for hba0.
reads_above() { (($(di hba0 reads) > $1)); }

# errors_since E: the DI's error counters of hba0 ("errors/dma_errors/
# io_errors") are still E.
errors_since() {
	local now
	now=$(di hba0 errors)/$(di hba0 dma_errors)/$(di hba0 io_errors)
	[[ $now == "$1" ]] && return 0
	echo "errors/dma_errors/io_errors went from $1 to $now: $(di_line hba0)"
	return 1
}

# a disk named $1 no longer exists.
disk_gone() { [[ ! -e /sys/block/$1 ]] && no_pci_vhba; }

body() {
	local HMAC PCI D0 D1 bs qd w0 r0 e0 out pid rc t0 i fiolog

	dmesg_mark
	# --- the backing files, the fabric, the session ---
	check "vhba: backing files: lun0 64 MiB (sparse), lun1 16 MiB (random bytes)" bash -c \
		"truncate -s 64M $TMPD/lun0.img && head -c 16777216 /dev/urandom >$TMPD/lun1.img"
	check "vhba: veth pair vethD/vethH" fabric_up
	check "vhba: pcieoe_dev: insmod" insmod "$DEV_KO"
	check "vhba: DI port vethD enabled" bash -c "mkdir $CFGD/ports/vethD && echo 1 >$CFGD/ports/vethD/enable"
	check "vhba: pcieoe_host: insmod netdev=vethH" insmod "$HOST_KO" netdev=vethH
	if ! wait_until "$WAIT_S" both_open vethD vethH >/dev/null; then
		tap_fail "vhba: session open within ${WAIT_S}s" "$(both_open vethD vethH)" "$(dmesg_new | tail -n 20)"
		return
	fi
	tap_ok "vhba: session open within ${WAIT_S}s"

	# --- 1. binding ---
	HMAC=$(cat /sys/class/net/vethH/address)
	check "vhba: hba0 (lun0 64 MiB, lun1 16 MiB ro, 2 queues) enabled" \
		vhba_fn hba0 2 "$TMPD/lun0.img" "$TMPD/lun1.img ro"
	check "vhba: hba0 assigned to vethH ($HMAC)" assign "$HMAC" hba0
	check "vhba: DI counts 2 LUNs" wait_until "$WAIT_S" bash -c "grep '^function hba0 ' $FUNCS | grep -q ' luns 2 '"
	if ! wait_until "$WAIT_S" one_pci_vhba; then
		tap_fail "vhba: one e0e0:0003 function in lspci within ${WAIT_S}s" \
			"$(lspci -D -n -d e0e0: 2>&1)" "$(di_line hba0)" "$(dmesg_new | tail -n 10)"
		return
	fi
	PCI=$(pci_vhbas)
	tap_ok "vhba: one e0e0:0003 function in lspci within ${WAIT_S}s ($PCI)"
	check "vhba: pcieoe_vhba: insmod" insmod "$VHBA_KO"
	if ! wait_until "$WAIT_S" has_disks "$PCI" 2; then
		tap_fail "vhba: two disks under $PCI within ${WAIT_S}s" "$(has_disks "$PCI" 2)" \
			"$(dmesg_new | grep -E 'pcieoe_(vhba|dev)' | tail -n 10)"
		return
	fi
	D0=$(disks "$PCI" | sed -n 1p)
	D1=$(disks "$PCI" | sed -n 2p)
	tap_ok "vhba: two disks under $PCI within ${WAIT_S}s ($D0, $D1)"
	echo "# $(lsblk -n -o NAME,SIZE,RO "/dev/$D0" "/dev/$D1" | xargs)"
	check "vhba: $D0: 64 MiB, writable, 512-byte blocks" geometry "$D0" 131072 0
	check "vhba: $D1: 16 MiB, read-only, 512-byte blocks" geometry "$D1" 32768 1
	check "vhba: the log names LUN 0 $D0 and LUN 1 $D1" bash -c \
		"dmesg | grep -q 'LUN 0: $D0' && dmesg | grep -q 'LUN 1: $D1'"
	dmesg_clean "vhba: bind"

	# --- 2. ext4 ---
	check "vhba: ext4 on $D0: mkfs, mount, 4 files, umount, mount, SHA-256 match" ext4_round_trip "$D0"
	check "vhba: the DI wrote to the backing file (ext4 superblock magic)" bash -c \
		"[[ \$(od -An -tx2 -j 1080 -N 2 $TMPD/lun0.img | tr -d ' ') == ef53 ]]"
	dmesg_clean "vhba: ext4"

	# --- 3. fio verify ---
	w0=$(di hba0 writes)
	r0=$(di hba0 reads)
	for bs in 512 4k 64k; do
		for qd in 1 32; do
			fio_check "vhba: fio randwrite bs=$bs iodepth=$qd, verify crc32c, err=0" "rw$bs-$qd" \
				--filename="/dev/$D0" --rw=randwrite --bs="$bs" --iodepth="$qd" \
				--size="$([[ $bs == 512 ]] && echo 1M || echo 4M)" \
				--verify=crc32c --verify_fatal=1 --do_verify=1
		done
	done
	for qd in 1 32; do
		fio_check "vhba: fio randrw 70/30 bs=4k iodepth=$qd, verify crc32c, err=0" "mix-$qd" \
			--filename="/dev/$D0" --rw=randrw --rwmixread=70 --bs=4k --iodepth="$qd" --size=4M \
			--verify=crc32c --verify_fatal=1
	done
	check "vhba: DI writes grew" grew "DI writes" "$w0" "$(di hba0 writes)"
	check "vhba: DI reads grew" grew "DI reads" "$r0" "$(di hba0 reads)"
	check "vhba: DI errors, dma_errors, io_errors 0" errors_since 0/0/0
	echo "# DI: $(di_line hba0 | sed 's/.* luns /luns /')"
	dmesg_clean "vhba: fio verify"

	# --- 4. both disks at once ---
	cat >"$TMPD/two.fio" <<-EOF
		[global]
		ioengine=libaio
		direct=1
		bs=4k
		iodepth=16
		size=4M
		[lun0]
		filename=/dev/$D0
		rw=randwrite
		verify=crc32c
		verify_fatal=1
		[lun1]
		filename=/dev/$D1
		rw=randread
	EOF
	if out=$(timeout 300 fio "$TMPD/two.fio" 2>&1) && [[ $(grep -c 'err= 0' <<<"$out") == 2 ]]; then
		tap_ok "vhba: fio on $D0 (verified writes) and $D1 (reads) at once, err=0"
		grep -E '^ *(read|write):' <<<"$out" | sed 's/^ */# /'
	else
		tap_fail "vhba: fio on $D0 (verified writes) and $D1 (reads) at once, err=0" \
			"$(grep -E 'err=|verify|error' <<<"$out" | head)" "$(tail -n 5 <<<"$out")" "$(dmesg_new | tail -n 10)"
	fi
	dmesg_clean "vhba: two LUNs"

	# --- 5. the read-only LUN ---
	w0=$(di hba0 writes)
	check "vhba: $D1: blockdev --getro is 1" test "$(blockdev --getro "/dev/$D1")" == 1
	check "vhba: $D1: dd oflag=direct write refused" refused \
		dd if=/dev/zero of="/dev/$D1" bs=4k count=1 oflag=direct status=none
	check "vhba: $D1: no write reached the DI" test "$(di hba0 writes)" == "$w0"
	check "vhba: $D1: dd iflag=direct 4 MiB reads the backing file's bytes" bash -c \
		"dd if=/dev/$D1 of=$TMPD/ro.bin bs=64k count=64 iflag=direct status=none &&
		 cmp $TMPD/ro.bin <(head -c 4194304 $TMPD/lun1.img)"
	check "vhba: $D1: the backing file unchanged at offset 0" same_bytes "$TMPD/lun1.img" "/dev/$D1" 4096
	dmesg_clean "vhba: read-only LUN"

	# --- 6. netem on the fabric ---
	e0=$(di hba0 errors)/$(di hba0 dma_errors)/$(di hba0 io_errors)
	# shellcheck disable=SC2086
	check "vhba: netem on vethD ($NETEM)" tc qdisc add dev vethD root netem $NETEM
	# shellcheck disable=SC2086
	check "vhba: netem on vethH" tc qdisc add dev vethH root netem $NETEM
	fio_check "vhba: netem: fio randrw 4k iodepth 8 size 2M, verify crc32c, err=0" "netem" \
		--filename="/dev/$D0" --rw=randrw --bs=4k --iodepth=8 --size=2M --verify=crc32c --verify_fatal=1
	check "vhba: netem removed" bash -c "tc qdisc del dev vethD root && tc qdisc del dev vethH root"
	check "vhba: DI error counters unchanged by netem ($e0)" errors_since "$e0"
	dmesg_clean "vhba: netem"

	# --- 7. surprise removal during I/O (last: the fabric goes and returns) ---
	fiolog=$TMPD/surprise.log
	fio --name=surprise --filename="/dev/$D0" --ioengine=libaio --direct=1 --rw=randrw --bs=4k \
		--iodepth=16 --time_based --runtime=30 >"$fiolog" 2>&1 &
	pid=$!
	BG_PIDS=$pid
	e0=$(di hba0 reads)
	if wait_until 20 reads_above $((e0 + 100)); then
		tap_ok "vhba: fio running on $D0"
	else
		tap_fail "vhba: fio running on $D0" "$(tail -n 5 "$fiolog")" "$(di_line hba0)"
	fi
	t0=$SECONDS
	check "vhba: ip link set vethD down during fio" ip link set vethD down
	rc=
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid"; rc=$?; break; }
		sleep 0.1
	done
	if [[ -z $rc ]]; then
		tap_fail "vhba: fio ends within 60 s of the fabric going away" \
			"$(tail -n 5 "$fiolog")" "$(ps -o stat,pid,wchan:32,cmd -p "$pid")" "$(dmesg_new | tail -n 20)"
	else
		tap_ok "vhba: fio ends within 60 s of the fabric going away ($((SECONDS - t0)) s)"
		if ((rc != 0)) || grep -qE 'err= *[1-9]' "$fiolog"; then
			tap_ok "vhba: fio reports the I/O error (exit $rc)"
			grep -E 'err=|error' "$fiolog" | head -n 3 | sed 's/^ */# /'
		else
			tap_fail "vhba: fio reports the I/O error (exit $rc)" "$(tail -n 10 "$fiolog")"
		fi
	fi
	BG_PIDS=
	check "vhba: $D0 and the function are removed within ${WAIT_S}s" wait_until "$WAIT_S" disk_gone "$D0"
	check "vhba: no task in D state" no_d_state
	dmesg_clean "vhba: surprise removal"
	check "vhba: ip link set vethD up" ip link set vethD up
	check "vhba: session open again within ${WAIT_S}s" wait_until "$WAIT_S" both_open vethD vethH
	if wait_until 15 one_pci_vhba && PCI=$(pci_vhbas) && wait_until "$WAIT_S" has_disks "$PCI" 2; then
		D0=$(disks "$PCI" | sed -n 1p)
		D1=$(disks "$PCI" | sed -n 2p)
		tap_ok "vhba: the function and its two disks come back ($PCI: $D0, $D1)"
	else
		tap_fail "vhba: the function and its two disks come back" "$(lspci -D -n -d e0e0: 2>&1)" \
			"$(has_disks "${PCI:-none}" 2)" "$(dmesg_new | tail -n 10)"
		return
	fi
	# The function came back with pcieoe_vhba loaded: its probe ran from
	# the host's hot-add, not from an insmod.
	fio_check "vhba: fio randrw 4k iodepth 8 verify after the return (hot-add, driver loaded), err=0" "again" \
		--filename="/dev/$D0" --rw=randrw --bs=4k --iodepth=8 --size=2M --verify=crc32c --verify_fatal=1
	dmesg_clean "vhba: return"
	# The same function bound by an insmod instead.
	check "vhba: pcieoe_vhba: rmmod, insmod" bash -c "rmmod pcieoe_vhba && insmod $VHBA_KO"
	if wait_until "$WAIT_S" has_disks "$PCI" 2; then
		D0=$(disks "$PCI" | sed -n 1p)
		tap_ok "vhba: two disks again after the insmod ($(disks "$PCI" | xargs))"
	else
		tap_fail "vhba: two disks again after the insmod" "$(has_disks "$PCI" 2)" "$(dmesg_new | tail -n 10)"
	fi
	fio_check "vhba: fio randrw 4k iodepth 8 verify after the reload, err=0" "reload" \
		--filename="/dev/$D0" --rw=randrw --bs=4k --iodepth=8 --size=2M --verify=crc32c --verify_fatal=1
	dmesg_clean "vhba: reload"

	# --- 8. teardown ---
	check "vhba: pcieoe_vhba: rmmod" rmmod pcieoe_vhba
	check "vhba: the disks are gone" bash -c "! compgen -G '/sys/block/vhd*' >/dev/null"
	check "vhba: DI: unassign, disable, rmdir" bash -c \
		"rm $CFGD/hosts/$HMAC/functions/hba0 && echo 0 >$CFGD/functions/hba0/enable &&
		 rmdir $CFGD/hosts/$HMAC $CFGD/functions/hba0"
	check "vhba: pcieoe_host, pcieoe_dev: rmmod" bash -c \
		"rmmod pcieoe_host && rmdir $CFGD/ports/vethD && rmmod pcieoe_dev"
	check "vhba: ip link del vethD" ip link del vethD
	dmesg_clean "vhba: teardown"
}

mountpoint -q "$DBG" || mount -t debugfs none "$DBG"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
for tool in fio mkfs.ext4 lsblk blockdev lspci tc; do
	command -v "$tool" >/dev/null || tap_fail "vhba: $tool installed" "scripts/setup installs it; run it"
done
body
exit "$TAP_FAILED"
