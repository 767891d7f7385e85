#!/usr/bin/env bash
# Run one libFuzzer target for a while and keep what it found.
#
#   scripts/fuzz.sh TARGET [SECONDS]      (default 180 s)
#   scripts/fuzz.sh --list
#
# TARGET is a tests/fuzz/fuzz_TARGET.c (virtq, virtio_blk, virtio_net, virtio_pci, qcow2,
# img, boot, initrd, control, config, insn, state, migrate).  The script builds
# fuzz_TARGET with clang -fsanitize=fuzzer,address,undefined in $BUILD
# (default build-fuzz; configured on first use; NO_BUILD=1 runs the binary
# already there, as when the tree is mid-edit), fuzzes into a scratch copy
# of the corpus ($WORK/TARGET, default /tmp/vmrun-fuzz-work) with crash,
# leak and timeout files in $WORK/TARGET/crashes, then merges the inputs
# that reach new coverage into tests/fuzz/corpus/TARGET (-merge=1, so the
# committed corpus grows only by what adds coverage).  One job, one worker:
# the development machines have two cores.  Exit status 1 when the run left
# a crash, leak or timeout file (see tests/fuzz/README.md to reproduce it).
set -euo pipefail
cd "$(dirname "$0")/.."

targets() { ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||' | grep -v '^common$'; }

if [ "${1:-}" = "--list" ]; then
	targets
	exit 0
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: scripts/fuzz.sh TARGET [SECONDS] | --list" >&2
	exit 2
fi
target=$1
seconds=${2:-180}
if ! targets | grep -qx "$target"; then
	echo "fuzz.sh: no target '$target' (scripts/fuzz.sh --list)" >&2
	exit 2
fi
case "$seconds" in
	''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number" >&2; exit 2 ;;
esac
build=${BUILD:-build-fuzz}
work=${WORK:-/tmp/vmrun-fuzz-work}/$target
corpus=tests/fuzz/corpus/$target

if ! command -v clang >/dev/null; then
	echo "fuzz.sh: clang is missing (Debian: apt-get install clang)" >&2
	exit 2
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
	CC=clang cmake -S . -B "$build" -DVMRUN_FUZZ=ON -DVMRUN_BUILD_GUESTS=OFF \
		-DVMRUN_LINUX_TESTS=OFF >/dev/null
fi
# Findings of an earlier run go to crashes.old: the exit status is this run's.
if [ -d "$work/crashes" ] && [ -n "$(ls "$work/crashes")" ]; then
	mkdir -p "$work/crashes.old"
	mv "$work/crashes/"* "$work/crashes.old/"
fi
mkdir -p "$work/corpus" "$work/crashes" "$corpus"
# The targets' scratch files (images, kernels, sockets), removed at the end:
# libFuzzer's exit paths skip the targets' own clean-up.
rm -rf "$work/tmp"
mkdir -p "$work/tmp"
export TMPDIR=$work/tmp
trap 'rm -rf "$work/tmp"' EXIT
if [ -z "${NO_BUILD:-}" ] &&
	! cmake --build "$build" --target "fuzz_$target" -j"$(nproc)" >"$work/build.log" 2>&1; then
	tail -30 "$work/build.log" >&2
	exit 1
fi
bin=$build/tests/fuzz/fuzz_$target

# New inputs go to the first directory; the committed corpus is only read.
dict=()
if [ -f "tests/fuzz/$target.dict" ]; then
	dict=(-dict="tests/fuzz/$target.dict")
fi
set +e
"$bin" "$work/corpus" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-use_value_profile=1 -print_final_stats=1 -artifact_prefix="$work/crashes/" "${dict[@]}" \
	>"$work/log" 2>&1
status=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$work/log" | tail -2 || true
grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work/log" || true

# Minimise: the seeds (seed_*) and regression inputs (regress_*) stay; of
# everything else, committed or new, keep the fewest inputs that reach every
# edge they reach (-use_counters=0: edges, not hit counts, or the corpus
# grows by hundreds of files).  Kept finds are named by their SHA-1.
before=$(ls "$corpus" | wc -l)
rm -rf "$work/min" "$work/old"
mkdir -p "$work/min" "$work/old"
find "$corpus" -maxdepth 1 -type f \( -name 'seed_*' -o -name 'regress_*' \) -exec cp {} "$work/min/" \;
find "$corpus" -maxdepth 1 -type f ! -name 'seed_*' ! -name 'regress_*' -exec mv {} "$work/old/" \;
if ! "$bin" -merge=1 -use_counters=0 "$work/min" "$work/old" "$work/corpus" >"$work/merge.log" 2>&1; then
	echo "fuzz.sh: the merge failed (see $work/merge.log); the corpus is left as it was" >&2
	mv "$work/old/"* "$corpus/" 2>/dev/null || true
	exit 1
fi
find "$work/min" -maxdepth 1 -type f ! -name 'seed_*' ! -name 'regress_*' -exec cp {} "$corpus/" \;
echo "corpus $corpus: $before -> $(ls "$corpus" | wc -l) files, $(du -sk "$corpus" | cut -f1) KiB"

finds=$(ls "$work/crashes" 2>/dev/null | wc -l)
if [ "$status" -ne 0 ] || [ "$finds" -ne 0 ]; then
	echo "fuzz.sh: libFuzzer exited $status; findings in $work/crashes:" >&2
	ls -l "$work/crashes" >&2
	grep -m1 -A12 -E '^==[0-9]+==ERROR|^SUMMARY|runtime error|deadly signal' "$work/log" >&2 || true
	exit 1
fi
