# SPDX-License-Identifier: GPL-2.0
# Shared by the scripts in scripts/: locations and output helpers.

PCIEOE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Everything built or installed outside the repository lives here, so a fresh
# clone reuses a kernel that was already built for the same inputs.
PCIEOE_CACHE=${PCIEOE_CACHE:-$HOME/.cache/pcieoe}
PCIEOE_TOOLS=${PCIEOE_TOOLS:-$PCIEOE_CACHE/tools}
export PCIEOE_ROOT PCIEOE_CACHE PCIEOE_TOOLS
export PATH="$PCIEOE_TOOLS/bin:$PCIEOE_TOOLS/venv/bin:$PATH"

step() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# Run a long command with its output in a log; print the log's tail if it fails.
run_logged() {
	local log
	log=$(mktemp "${TMPDIR:-/tmp}/pcieoe.XXXXXX.log")
	if ! "$@" >"$log" 2>&1; then
		printf 'error: "%s" failed; last lines of %s:\n' "$*" "$log" >&2
		tail -n 40 "$log" >&2
		return 1
	fi
	rm -f "$log"
}
