# SPDX-License-Identifier: GPL-2.0
#
# TAP helpers for the pcieoe selftests (kselftest style). Sourced by each
# test file; every check prints one "ok N name" or "not ok N name" line and,
# when it fails, the reason as TAP diagnostics ("# ...").

: "${PCIEOE_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)}"
# The test number is shared by all files of one run through this file.
: "${TAP_COUNTER:=/tmp/pcieoe-tap-counter}"
export PCIEOE_ROOT TAP_COUNTER

ko() { echo "$PCIEOE_ROOT/$1"; }

tap_next() {
	local n
	n=$(($(cat "$TAP_COUNTER" 2>/dev/null || echo 0) + 1))
	echo "$n" >"$TAP_COUNTER"
	echo "$n"
}

tap_ok() { echo "ok $(tap_next) $*"; }

# tap_fail NAME REASON...
tap_fail() {
	local name=$1
	shift
	echo "not ok $(tap_next) $name"
	printf '# %s\n' "$@"
	TAP_FAILED=1
}

# check NAME COMMAND...: one TAP line for the command's success; on failure
# its output becomes the diagnostics.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		tap_ok "$name"
	else
		local rc=$?
		# shellcheck disable=SC2086
		tap_fail "$name" "command failed (exit $rc): $*" ${out:+"$(printf '%s' "$out" | tail -n 15)"}
	fi
}

# The kernel log since the last dmesg_mark.
dmesg_mark() { DMESG_LINES=$(dmesg | wc -l); }
dmesg_new() { dmesg | tail -n +$((${DMESG_LINES:-0} + 1)); }

# dmesg_clean NAME: the kernel log since the mark holds no warning, bug,
# oops or stack trace.
dmesg_clean() {
	local bad
	bad=$(dmesg_new | grep -E 'WARNING:|BUG:|Oops|Call Trace|general protection|kernel panic|UBSAN|KASAN|refcount_t:|rust_panic|panicked at' || true)
	if [[ -z $bad ]]; then
		tap_ok "$1: dmesg clean"
	else
		tap_fail "$1: dmesg clean" "kernel log has:" "$(dmesg_new | tail -n 40)"
	fi
	dmesg_mark
}

# kv FILE KEY: the value after "KEY:" in a debugfs counters file.
kv() { awk -v k="$2:" '$1 == k { print $2 }' "$1" 2>/dev/null; }

# wait_until SECONDS COMMAND...: poll COMMAND every 100 ms until it
# succeeds; after SECONDS, run it once more for its output and status.
wait_until() {
	local limit=$1 i
	shift
	for ((i = 0; i < limit * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	"$@"
}

# loaded MODULE: the module is loaded.
loaded() { [[ -d /sys/module/$1 ]]; }

# add_veth A B: a veth pair A-B, both up.
add_veth() { ip link add "$1" type veth peer name "$2" && ip link set "$1" up && ip link set "$2" up; }
