#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The device interface's configfs tree (/sys/kernel/config/pcieoe_dev):
# functions with a type, IDs and enable; writes to an enabled function fail
# with EBUSY, bad values with EINVAL, each with a log line naming the
# rejected value and without changing anything; hosts named by MAC address
# (anything else is refused with EINVAL); symlinks assign functions to hosts
# (`assigned` lists them) and pin the function (rmdir: EBUSY); the tree pins
# the module (rmmod fails until it is removed). The kernel log stays clean.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

DEV_KO=$(ko pcieoe_dev/pcieoe_dev.ko)
CFG=/sys/kernel/config/pcieoe_dev
HOST=02:00:00:00:00:01

cleanup() {
	find "$CFG/hosts" -mindepth 3 -maxdepth 3 -type l -delete 2>/dev/null
	rmdir "$CFG"/hosts/* "$CFG"/functions/* 2>/dev/null
	loaded pcieoe_dev && rmmod pcieoe_dev
	ip link del cfgup0 2>/dev/null
	true
}
trap cleanup EXIT

log_has() {
	dmesg_new | grep -qF -- "$1" || { echo "no '$1' in the kernel log:"; dmesg_new | tail -n 5; return 1; }
}

# reads FILE WANT: FILE holds exactly WANT.
reads() {
	local got
	got=$(cat "$1") || return 1
	[[ $got == "$2" ]] || { echo "$1 is '$got', want '$2'"; return 1; }
}

# write_fails ERROR FILE VALUE: writing VALUE to FILE fails with the error
# message ERROR (e.g. "Invalid argument").
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

# rejected ERROR FILE VALUE LOGGED: the write fails, FILE reads as before
# and the log names the value (LOGGED).
rejected() {
	local before
	before=$(cat "$2") || return 1
	write_fails "$1" "$2" "$3" || return 1
	reads "$2" "$before" || return 1
	log_has "$4"
}

set_attr() { echo "$3" >"$CFG/functions/$1/$2"; }

dmesg_mark
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
check "configfs: module loads" insmod "$DEV_KO"
check "configfs: tree has functions/ and hosts/" test -d "$CFG/functions" -a -d "$CFG/hosts"

# Two functions: types, IDs, enable.
check "configfs: mkdir functions/f0 functions/f1" mkdir "$CFG/functions/f0" "$CFG/functions/f1"
check "configfs: a new function is a disabled test function" \
	bash -c "[[ \$(cat $CFG/functions/f0/type) == test && \$(cat $CFG/functions/f0/enable) == 0 ]]"
check "configfs: test function default vendor_id" reads "$CFG/functions/f0/vendor_id" 0xe0e0
check "configfs: set f0 type vnic" set_attr f0 type vnic
check "configfs: vnic default IDs" \
	bash -c "[[ \$(cat $CFG/functions/f0/vendor_id):\$(cat $CFG/functions/f0/device_id) == 0xe0e0:0x0002 ]]"
# A vnic needs an existing uplink before it can be enabled; its own
# attributes are checked (Documentation/configfs.rst).
check "configfs: vnic f0 without uplink: enable -> EINVAL, logged" \
	bash -c "$(declare -f write_fails); write_fails 'Invalid argument' $CFG/functions/f0/enable 1"
check "configfs: the log says the uplink is missing" log_has "function f0: a vnic needs its uplink set before enable"
check "configfs: uplink nosuch0 accepted while disabled" set_attr f0 uplink nosuch0
check "configfs: vnic f0 with a missing uplink: enable -> ENODEV" \
	bash -c "$(declare -f write_fails); write_fails 'No such device' $CFG/functions/f0/enable 1"
check "configfs: veth cfgup0 for the uplink" add_veth cfgup0 cfgup1
check "configfs: set f0 uplink cfgup0" set_attr f0 uplink cfgup0
check "configfs: uplink reads cfgup0" reads "$CFG/functions/f0/uplink" cfgup0
for bad in "mac 01:00:5e:00:00:01" "mac 00:00:00:00:00:00" "mac 02:00:00:00:01" "mtu 67" "mtu 9001" "queues 0" "queues 5" "uplink a/b"; do
	check "configfs: f0 ${bad% *} '${bad#* }' -> EINVAL" \
		bash -c "$(declare -f write_fails); write_fails 'Invalid argument' $CFG/functions/f0/${bad% *} '${bad#* }'"
done
check "configfs: set f0 mac 02:00:00:00:01:01, mtu 9000, queues 2" \
	bash -c "echo 02:00:00:00:01:01 >$CFG/functions/f0/mac && echo 9000 >$CFG/functions/f0/mtu && echo 2 >$CFG/functions/f0/queues"
check "configfs: f0 vnic attributes read back" \
	bash -c "[[ \$(cat $CFG/functions/f0/mac) == 02:00:00:00:01:01 && \$(cat $CFG/functions/f0/mtu) == 9000 && \$(cat $CFG/functions/f0/queues) == 2 ]]"
check "configfs: set f1 type vhba" set_attr f1 type vhba
check "configfs: set f1 vendor_id 0x1234" set_attr f1 vendor_id 0x1234
check "configfs: set f1 device_id abcd" set_attr f1 device_id abcd
check "configfs: f1 vendor_id reads 0x1234" reads "$CFG/functions/f1/vendor_id" 0x1234
check "configfs: f1 device_id reads 0xabcd" reads "$CFG/functions/f1/device_id" 0xabcd
check "configfs: f1 lun0 set (a vhba needs one to be enabled)" \
	bash -c "truncate -s 1M /tmp/pcieoe-configfs-lun0.img && echo /tmp/pcieoe-configfs-lun0.img >$CFG/functions/f1/lun0"
check "configfs: enable f0 and f1" bash -c "echo 1 >$CFG/functions/f0/enable && echo 1 >$CFG/functions/f1/enable"
check "configfs: f0 enable reads 1" reads "$CFG/functions/f0/enable" 1
dmesg_clean "configfs: functions"

# An enabled function is frozen.
check "configfs: type of enabled f0 -> EBUSY, unchanged, logged" \
	rejected "Device or resource busy" "$CFG/functions/f0/type" vhba '"vhba"'
check "configfs: the EBUSY log names function and attribute" \
	log_has "function f0: cannot set type to \"vhba\" while enabled"
check "configfs: mtu of enabled vnic f0 -> EBUSY, unchanged" \
	rejected "Device or resource busy" "$CFG/functions/f0/mtu" 1500 '"1500"'
check "configfs: vendor_id of enabled f1 -> EBUSY, unchanged" \
	rejected "Device or resource busy" "$CFG/functions/f1/vendor_id" 0x4321 '"0x4321"'
check "configfs: device_id of enabled f1 -> EBUSY, unchanged" \
	rejected "Device or resource busy" "$CFG/functions/f1/device_id" 0x4321 'set device_id to "0x4321"'
check "configfs: enable=2 -> EINVAL, unchanged, logged" \
	rejected "Invalid argument" "$CFG/functions/f0/enable" 2 'function f0: invalid enable "2"'

# Bad values on a disabled function.
check "configfs: disable f1" set_attr f1 enable 0
check "configfs: type bogus -> EINVAL, unchanged, logged" \
	rejected "Invalid argument" "$CFG/functions/f1/type" bogus 'function f1: invalid type "bogus"'
check "configfs: vendor_id xyz -> EINVAL, unchanged, logged" \
	rejected "Invalid argument" "$CFG/functions/f1/vendor_id" xyz 'invalid vendor_id "xyz"'
check "configfs: device_id 0x12345 -> EINVAL, unchanged, logged" \
	rejected "Invalid argument" "$CFG/functions/f1/device_id" 0x12345 'invalid device_id "0x12345"'
check "configfs: enable yes -> EINVAL, unchanged, logged" \
	rejected "Invalid argument" "$CFG/functions/f1/enable" yes 'invalid enable "yes"'
check "configfs: re-enable f1" set_attr f1 enable 1
dmesg_clean "configfs: rejected writes"

# Hosts and assignments.
check "configfs: mkdir hosts/not-a-mac -> EINVAL, logged" \
	bash -c "$(declare -f fails); fails 'Invalid argument' mkdir $CFG/hosts/not-a-mac"
check "configfs: the log names the bad host id" log_has 'invalid host id "not-a-mac"'
check "configfs: mkdir hosts/02:00:00:00:00:0g -> EINVAL" \
	bash -c "$(declare -f fails); fails 'Invalid argument' mkdir $CFG/hosts/02:00:00:00:00:0g"
check "configfs: mkdir hosts/$HOST" mkdir "$CFG/hosts/$HOST"
check "configfs: host has functions/ and assigned" \
	test -d "$CFG/hosts/$HOST/functions" -a -f "$CFG/hosts/$HOST/assigned"
check "configfs: a new host has nothing assigned" reads "$CFG/hosts/$HOST/assigned" ""
check "configfs: symlink f0 into the host" ln -s "$CFG/functions/f0" "$CFG/hosts/$HOST/functions/f0"
check "configfs: assigned lists f0" reads "$CFG/hosts/$HOST/assigned" f0
check "configfs: the log says f0 is assigned" log_has "function f0 assigned to host $HOST"
check "configfs: a second link to f0 -> EEXIST" \
	bash -c "$(declare -f fails); fails 'File exists' ln -s $CFG/functions/f0 $CFG/hosts/$HOST/functions/again"
check "configfs: rmdir of linked f0 -> EBUSY" \
	bash -c "$(declare -f fails); fails 'Device or resource busy' rmdir $CFG/functions/f0"
check "configfs: rmmod with the tree present -> in use" \
	bash -c "$(declare -f fails); fails 'in use' rmmod pcieoe_dev"
check "configfs: still loaded" loaded pcieoe_dev
check "configfs: unlink f0" rm "$CFG/hosts/$HOST/functions/f0"
check "configfs: assigned is empty again" reads "$CFG/hosts/$HOST/assigned" ""
check "configfs: the log says f0 is unassigned" log_has "function f0 unassigned from host $HOST"
dmesg_clean "configfs: hosts"

# Removing the tree releases the module.
check "configfs: rmdir host and functions" \
	rmdir "$CFG/hosts/$HOST" "$CFG/functions/f0" "$CFG/functions/f1"
check "configfs: rmmod after removing the tree" rmmod pcieoe_dev
check "configfs: subsystem gone" test ! -e "$CFG"
dmesg_clean "configfs: unload"

exit "$TAP_FAILED"
