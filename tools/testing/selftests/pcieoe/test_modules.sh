#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Each module: its modinfo is right, it loads and unloads cleanly, its
# parameters show in sysfs, and a bad parameter is refused with EINVAL and a
# log line that names it. The kernel log stays free of warnings throughout.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
TAP_FAILED=0

declare -A ko_path=(
	[pcieoe_host]=pcieoe_host/pcieoe_host.ko
	[pcieoe_dev]=pcieoe_dev/pcieoe_dev.ko
	[pcieoe_vnic]=vnic/pcieoe_vnic.ko
	[pcieoe_vhba]=vhba/pcieoe_vhba.ko
	[pcieoe_test]=pcieoe_test/pcieoe_test.ko
)
# Modules with the Ethertype parameter.
with_ethertype="pcieoe_host pcieoe_dev"

modinfo_ok() {
	local m=$1 f
	f=$(ko "${ko_path[$m]}")
	[[ $(modinfo -F license "$f") == GPL ]] || { echo "license: '$(modinfo -F license "$f")'"; return 1; }
	[[ $(modinfo -F description "$f") == "PCI Express over Ethernet: "* ]] ||
		{ echo "description: '$(modinfo -F description "$f")'"; return 1; }
	[[ $(modinfo -F vermagic "$f") == "$(uname -r) "* ]] ||
		{ echo "vermagic '$(modinfo -F vermagic "$f")' is not for $(uname -r)"; return 1; }
	if [[ " $with_ethertype " == *" $m "* ]]; then
		local parms
		parms=$(modinfo -F parm "$f")
		grep -qx "ethertype:Ethertype of PCIeoE frames.*(ushort)" <<<"$parms" ||
			{ echo "parm: '$parms'"; return 1; }
		grep -qx "netdev:Network interface to bind at load time.*(charp)" <<<"$parms" ||
			{ echo "parm: '$parms'"; return 1; }
	fi
}

log_has() { dmesg_new | grep -q "$1" || { echo "no '$1' in the kernel log:"; dmesg_new | tail -n 5; return 1; }; }

param_is() {
	local got
	got=$(cat "/sys/module/$1/parameters/$2") || return 1
	[[ $got == "$3" ]] || { echo "/sys/module/$1/parameters/$2 is '$got', want '$3'"; return 1; }
}

# refused MODULE ARGS... : insmod fails with EINVAL and leaves nothing
# loaded. (kmod's insmod words EINVAL as "Invalid parameters".)
refused() {
	local m=$1 out
	shift
	if out=$(insmod "$(ko "${ko_path[$m]}")" "$@" 2>&1); then
		rmmod "$m"
		echo "insmod $m $* succeeded"
		return 1
	fi
	[[ $out == *"Invalid parameters"* ]] || { echo "insmod said: $out (want EINVAL)"; return 1; }
	! loaded "$m" || { echo "$m is loaded"; return 1; }
}

dmesg_mark
for m in pcieoe_host pcieoe_dev pcieoe_vnic pcieoe_vhba pcieoe_test; do
	f=$(ko "${ko_path[$m]}")
	check "$m: modinfo license, description, vermagic, parameters" modinfo_ok "$m"
	check "$m: insmod" insmod "$f"
	check "$m: loaded and logged" bash -c "[[ -d /sys/module/$m ]] && dmesg | tail -n 20 | grep -q '$m: .* loaded'"
	if [[ " $with_ethertype " == *" $m "* ]]; then
		check "$m: ethertype parameter defaults to 0x88b5" param_is "$m" ethertype 34997
		check "$m: netdev parameter defaults to empty (nothing bound)" param_is "$m" netdev ""
	fi
	dmesg_clean "$m: insmod"
	check "$m: rmmod" rmmod "$m"
	check "$m: unloaded and logged" bash -c "[[ ! -d /sys/module/$m ]] && dmesg | tail -n 20 | grep -q '$m: .* unloaded'"
	dmesg_clean "$m: rmmod"
done

for m in $with_ethertype; do
	f=$(ko "${ko_path[$m]}")
	check "$m: insmod ethertype=0x88b6" insmod "$f" ethertype=0x88b6
	check "$m: ethertype parameter is 0x88b6" param_is "$m" ethertype 34998
	check "$m: rmmod after ethertype=0x88b6" rmmod "$m"
	dmesg_mark
	check "$m: ethertype=0x0800 (IPv4) refused with EINVAL" refused "$m" ethertype=0x0800
	check "$m: refusal names the value" log_has "invalid ethertype parameter: 0x0800 is the IPv4 Ethertype"
	check "$m: ethertype=1500 (a length) refused with EINVAL" refused "$m" ethertype=1500
	check "$m: ethertype=junk refused with EINVAL" refused "$m" ethertype=junk
	dmesg_clean "$m: bad parameters"
done
exit "$TAP_FAILED"
