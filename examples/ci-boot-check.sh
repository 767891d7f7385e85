#!/usr/bin/env bash
# A CI-style check: boot a guest, keep its serial output in a file, and turn
# the guest's own verdict (written to the debug-exit port) into a pass/fail.
#
#   examples/ci-boot-check.sh [VMRUN] [GUEST]
#
# Works from any directory: VMRUN defaults to $VMRUN_BUILD/vmrun and GUEST to
# $VMRUN_BUILD/tests/guest/hello.elf, where VMRUN_BUILD defaults to the
# build/ folder of the repository this script is in.
#
# The guest writes V to port 0xf4; vmrun exits with (V << 1) | 1.  Even exit
# statuses are vmrun's own (8 triple fault, 124 timeout, ...: see README).
set -uo pipefail
build=${VMRUN_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build}
vmrun=${1:-$build/vmrun}
guest=${2:-$build/tests/guest/hello.elf}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

"$vmrun" --kernel "$guest" --cmdline "exit=0" --mem 64M --timeout 60 \
	--console "file:$log"
status=$?

if (( status % 2 == 1 )); then
	verdict=$(( status >> 1 ))
	echo "guest finished, verdict $verdict"
	grep -q "hello from vmrun test guest" "$log" || { echo "FAIL: no greeting in the log"; exit 1; }
	(( verdict == 0 )) && echo PASS && exit 0
	echo "FAIL: guest reported $verdict"; exit 1
fi
echo "FAIL: vmrun ended the run itself with status $status"
cat "$log"
exit 1
