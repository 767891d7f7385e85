#!/usr/bin/env bash
# Quick start: install dependencies, build vmrun and the example guest, and
# boot the guest.  It prints its greeting through the serial console and
# exits through the debug-exit port; vmrun exits with the guest's status.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target vmrun guest_hello >/dev/null
echo "+ build/vmrun --kernel build/tests/guest/hello.elf --cmdline 'exit=0'"
set +e
build/vmrun --kernel build/tests/guest/hello.elf --cmdline 'exit=0'
status=$?
set -e
echo "vmrun exited with status $status (the guest wrote 0 to the debug-exit port: (0 << 1) | 1 = 1)"
[[ $status -eq 1 ]]
