#!/usr/bin/env bash
# Live-migrate a running guest from one network namespace to another: two
# "hosts" on one machine, joined by a veth pair, as two real hosts would be
# joined by a network.  Run as root (namespaces need CAP_NET_ADMIN):
#
#   sudo examples/migrate-netns.sh [VMRUN] [GUEST]
#
# VMRUN defaults to $VMRUN_BUILD/vmrun and GUEST to
# $VMRUN_BUILD/tests/guest/migdirty.elf, where VMRUN_BUILD defaults to the
# build/ folder of the repository this script is in.  The guest, migdirty,
# rewrites every page of 64 MiB at 100 MiB/s and checks each page before it
# writes it again, printing "pass <n>" after each pass: a page the
# migration lost shows as "migdirty: STALE ...".  Exit status 0 when the
# guest moved and runs on at the destination with no stale page.
set -euo pipefail
build=${VMRUN_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build}
vmrun=$(realpath "${1:-$build/vmrun}")
guest=$(realpath "${2:-$build/tests/guest/migdirty.elf}")
src_ns=vmrun-ex-src-$$
dst_ns=vmrun-ex-dst-$$
src_ip=10.79.0.1
dst_ip=10.79.0.2
work=$(mktemp -d)
src_pid=
dst_pid=

cleanup() {
	# Whatever happened: both vmruns stopped, both namespaces gone.
	set +e
	[[ -n $src_pid ]] && kill -KILL "$src_pid" 2>/dev/null
	[[ -n $dst_pid ]] && kill -KILL "$dst_pid" 2>/dev/null
	ip netns del "$src_ns" 2>/dev/null
	ip netns del "$dst_ns" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE REGEX SECONDS PID: until a line of FILE matches REGEX, while
# process PID (the vmrun writing FILE) still runs.
wait_for() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -Eq "$2" "$1" 2>/dev/null && return 0
		if ! kill -0 "$4" 2>/dev/null; then
			grep -Eq "$2" "$1" 2>/dev/null && return 0
			echo "FAIL: vmrun exited before '$2' appeared in $1" >&2
			cat "$1" "$work"/*.err >&2 || true
			return 1
		fi
		sleep 0.1
	done
	echo "FAIL: no '$2' in $1 after $3 s" >&2
	cat "$1" >&2 || true
	return 1
}

# 1. Two namespaces, one veth pair between them: src_ip <-> dst_ip.
ip netns add "$src_ns"
ip netns add "$dst_ns"
ip link add veth0 netns "$src_ns" type veth peer name veth0 netns "$dst_ns"
ip -n "$src_ns" addr add "$src_ip/24" dev veth0
ip -n "$dst_ns" addr add "$dst_ip/24" dev veth0
for ns in "$src_ns" "$dst_ns"; do
	ip -n "$ns" link set lo up
	ip -n "$ns" link set veth0 up
done

# 2. The shared secret.  Both sides read it; the destination accepts a
# stream only from a source that proves it holds the same bytes.  The
# stream itself is not encrypted: on a real network, use a trusted one or
# a tunnel.
head -c 32 /dev/urandom > "$work/key"
chmod 600 "$work/key"

# 3. The destination: waits for one migration on dst_ip.  Port 0 lets the
# kernel pick a free port, which vmrun prints on stderr:
#   vmrun: migration: listening on 10.79.0.2:PORT
# It needs no machine options: the machine comes with the stream.
ip netns exec "$dst_ns" "$vmrun" --incoming "tcp:$dst_ip:0" --migration-key "$work/key" \
	--api-sock "$work/dst.sock" --console "file:$work/dst.log" 2> "$work/dst.err" &
dst_pid=$!
wait_for "$work/dst.err" "listening on" 30 "$dst_pid"
port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$work/dst.err" | head -n 1)
echo "destination: listening on $dst_ip:$port in namespace $dst_ns"

# 4. The source: the guest, running in the other namespace, with a control
# socket for the migrate command.
ip netns exec "$src_ns" "$vmrun" --kernel "$guest" --mem 128M \
	--cmdline "mib=64 rate=100 every=1" --migration-key "$work/key" \
	--api-sock "$work/src.sock" --console "file:$work/src.log" 2> "$work/src.err" &
src_pid=$!
wait_for "$work/src.log" "^pass 2$" 60 "$src_pid"
echo "source: guest running in namespace $src_ns"

# 5. Migrate.  `vmrun ctl ... migrate` returns when the migration ended
# and prints its statistics as one JSON object (status, total_ms,
# downtime_ms, bytes, pages, rounds, ...); it exits 1 when it failed, and
# then the guest runs on at the source.
if ! "$vmrun" ctl "$work/src.sock" migrate "uri=tcp:$dst_ip:$port" > "$work/stats.json"; then
	echo "FAIL: migration failed: $(cat "$work/stats.json")" >&2
	exit 1
fi
echo "migrated: $(cat "$work/stats.json")"

# 6. The source vmrun exits 0 after a migration that completed.
wait "$src_pid" && status=0 || status=$?
src_pid=
if ((status != 0)); then
	echo "FAIL: the source exited with $status" >&2
	exit 1
fi
grep "migration completed" "$work/src.err" || true

# 7. The guest runs on at the destination: its pass count goes on from
# where the source's output stopped.
last=$(grep -E '^pass [0-9]+$' "$work/src.log" | tail -n 1 | cut -d' ' -f2)
wait_for "$work/dst.log" "^pass $((last + 2))$" 60 "$dst_pid"
if grep -q STALE "$work/src.log" "$work/dst.log"; then
	echo "FAIL: a stale page after the migration" >&2
	grep STALE "$work/dst.log" >&2
	exit 1
fi
echo "destination: the guest carried on from pass $last to pass $((last + 2))"

# 8. Stop it at the destination.
"$vmrun" ctl "$work/dst.sock" quit > /dev/null
wait "$dst_pid" && status=0 || status=$?
dst_pid=
echo "destination: vmrun exited with $status"
((status == 0)) && echo PASS
