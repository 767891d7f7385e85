#!/usr/bin/env bash
# Build with warnings as errors and run every test (unit, guest, example,
# benchmark smoke).  Guest tests need /dev/kvm; they skip, saying so, where
# it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DVMRUN_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
