#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs every pcieoe selftest (test_*.sh here, or those named) inside the
# test VM and prints one TAP stream. Exit status: 0 when every test passed.
set -uo pipefail

dir=$(cd "$(dirname "$0")" && pwd)
export TAP_COUNTER
TAP_COUNTER=$(mktemp /tmp/pcieoe-tap.XXXXXX)
echo 0 >"$TAP_COUNTER"

if (($#)); then
	tests=("$@")
else
	tests=("$dir"/test_*.sh)
fi

echo "TAP version 13"
echo "# kernel $(uname -r), $(nproc) CPUs"
failed=0
for t in "${tests[@]}"; do
	echo "# $(basename "$t")"
	bash "$t" || failed=1
done
n=$(cat "$TAP_COUNTER")
echo "1..$n"
exit "$failed"
