#!/usr/bin/env python3
"""Live-migration tests: `vmrun --incoming tcp:ADDR:PORT` on one side,
`vmrun ctl SOCK migrate uri=tcp:HOST:PORT` on the other (README, "Live
migration"), with the migdirty and memtouch test guests (tests/guest/README.md).

Usage: migrate_tests.py --vmrun PATH --guests DIR TEST [TEST...]
       migrate_tests.py --list

Each TEST is one function below (one ctest test, labels "guest" and
"migrate").  Most come twice: *_lo migrates over loopback, *_ns between two
network namespaces the test makes (a veth pair, 10.78.n.1 and 10.78.n.2),
the source in one and the destination in the other.  Exit 0 when all pass,
1 on a failure, 77 (ctest's skip code) when /dev/kvm is missing; an *_ns
test skips, saying why, where namespaces cannot be made (not root).

What they cover: (a) migdirty dirtying memory during the migration (paced,
and as fast as it can: once over a capped link, where only throttling
converges), (b) memtouch's every byte, exact serial output (snapcount), two
vCPUs' timers (smptimer) and virtio-blk I/O in flight on shared storage
(blksnap); (c) failures: the destination killed before the accept, after
the handshake and mid-transfer, the connection cut before each protocol
step up to the commit, migrate-cancel, wrong, missing and short keys, each
followed by a migration that succeeds; (d) hostile input to --incoming:
hand-made records, a recorded real stream cut short and corrupted, a keyed
stream replayed, an idle peer.

Nothing sleeps to synchronise: every wait is for a line of guest output or of
vmrun's stderr, a control reply (query-migrate polled on a control
connection), an event or a process exit, each with a deadline.  What the
guests print comes from their contract: migdirty's "pass <n>" lines follow
one another across the switch (the source's output, then the destination's)
and a stale page prints "migdirty: STALE"; memtouch checks every byte on 'v'.
"""
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

VMRUN = None
GUESTS = None
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 120
MIGRATE_GUARD_S = 300
NS_PREFIX = "vmrun-mig"
LISTEN_RE = re.compile(rb"vmrun: migration: listening on (\S+):([0-9]+)\r?\n")
PASS_RE = re.compile(rb"^pass ([0-9]+)$", re.M)
TICK_RE = re.compile(rb"tick ([0-9]+)\n")
STATS_KEYS = ("status", "total_ms", "downtime_ms", "bytes", "pages", "zero_pages", "rounds",
              "dirty_rate", "throttle_percent", "bandwidth", "setup_ms")
QUERY_KEYS = ("status", "round", "remaining_pages", "dirty_rate", "bandwidth",
              "expected_downtime_ms", "bytes", "pages", "throttle_percent")
QUERY_STATES = ("none", "setup", "active", "completing", "completed", "failed", "cancelled")
# The stream's record types (src/migrate/wire.h): an 8-byte header
# {u32 type, u32 length}, little-endian, then the payload.
REC = struct.Struct("<II")
MIG_HELLO, MIG_PAGES, MIG_STATE = 2, 5, 6

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (SKIP, LineClient, NetnsPair, Proc, Skip, TestFailure,  # noqa: E402
                     add_guest_args, check, debug_exit_status, guest_elf, guest_setup,
                     remove_stale_netns, run_main)


def guest(name):
    return guest_elf(GUESTS, name)


# ---------------------------------------------------------------- the two hosts

class Hosts:
    """Where the source and the destination run: loopback (@ns None) or
    the two namespaces of a NetnsPair, the source in a, the destination in
    b.  Control sockets are paths: reachable from here either way."""

    def __init__(self, ns, d):
        self.ns = ns
        self.d = d
        self.dst_addr = ns.ip_b if ns else "127.0.0.1"
        self.n = 0

    def path(self, name):
        return os.path.join(self.d, name)

    def argv(self, side, argv):
        return self.ns.argv(side, argv) if self.ns else list(argv)

    def client_socket(self):
        """A TCP socket on the source's side, for talking to a destination."""
        if self.ns:
            return self.ns.socket("a")
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def source(self, kernel, cmdline, mem="128M", key=None, extra=()):
        """Start a source vmrun; returns (Proc, control socket path)."""
        self.n += 1
        sock = self.path(f"src{self.n}.sock")
        argv = [VMRUN, "--kernel", kernel, "--mem", mem, "--cmdline", cmdline,
                "--api-sock", sock, "--console", "stdio"]
        if key:
            argv += ["--migration-key", key]
        return Proc(f"source {self.n}", self.argv("a", argv + list(extra))), sock

    def destination(self, key=None, extra=()):
        """Start `vmrun --incoming tcp:ADDR:0` and wait for its listening
        line; returns (Proc, "tcp:HOST:PORT" for the source)."""
        self.n += 1
        argv = [VMRUN, "--incoming", f"tcp:{self.dst_addr}:0", "--console", "stdio"]
        if key:
            argv += ["--migration-key", key]
        p = Proc(f"destination {self.n}", self.argv("b", argv + list(extra)))
        try:
            m = p.wait_err(LISTEN_RE, timeout=HANG_GUARD_S, what="'vmrun: migration: listening on'")
        except BaseException:
            p.kill()
            raise
        port = int(m.group(2))
        check(0 < port < 65536, f"listening on port {port}?{p.ctx()}")
        return p, f"tcp:{self.dst_addr}:{port}"


def run_variant(ns, body):
    """Run @body(hosts) over loopback (@ns False) or between two fresh
    namespaces (@ns True)."""
    with tempfile.TemporaryDirectory() as d:
        if not ns:
            return body(Hosts(None, d))
        with NetnsPair(NS_PREFIX) as pair:
            return body(Hosts(pair, d))


def write_key(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------- control

class Migration:
    """`vmrun ctl SOCK migrate uri=URI ...` running in the background."""

    def __init__(self, sock, uri, *args):
        self.argv = [VMRUN, "ctl", f"--timeout={MIGRATE_GUARD_S}", sock, "migrate", f"uri={uri}"]
        self.argv += list(args)
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self, ctx=lambda: ""):
        """(exit status, the JSON object printed, stdout+stderr text)."""
        try:
            out, err = self.p.communicate(timeout=MIGRATE_GUARD_S + 30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
            raise TestFailure(f"{' '.join(self.argv)} did not return in {MIGRATE_GUARD_S} s{ctx()}")
        text = out.decode(errors="replace") + err.decode(errors="replace")
        obj = None
        for line in out.decode(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    pass
        if obj is None:
            raise TestFailure(f"{' '.join(self.argv)}: status {self.p.returncode}, no JSON object "
                              f"in its output: {text!r}{ctx()}")
        return self.p.returncode, obj, text

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def migrate(sock, uri, *args, ctx=lambda: ""):
    """A whole `vmrun ctl migrate`: (status, JSON object, text)."""
    return Migration(sock, uri, *args).result(ctx)


class Control(LineClient):
    """A control connection to the source; replies to commands."""

    def __init__(self, path, proc):
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            try:
                super().__init__(path)
                break
            except OSError:
                self.s.close()
                check(proc.p.poll() is None, f"vmrun exited before its control socket answered"
                      f"{proc.ctx()}")
                check(time.monotonic() < deadline, f"control socket {path} never answered"
                      f"{proc.ctx()}")
                # The socket appears once vmrun is set up: a bounded poll
                # on its existence, not a synchronisation by time.
                threading.Event().wait(0.01)
        self.proc = proc
        self.next_id = 1

    def cmd(self, name, args=None):
        rid = self.next_id
        self.next_id += 1
        r = self.call(rid, name, args)
        check(r.get("ok"), f"{name}: {r.get('error')}{self.proc.ctx()}")
        return r.get("result") or {}

    def query_migrate(self):
        """query-migrate's result: every field of QUERY_KEYS once a
        migration has begun; before, a status "none" is enough."""
        q = self.cmd("query-migrate")
        missing = [k for k in QUERY_KEYS if k not in q and q.get("status") != "none"]
        check(not missing, f"query-migrate lacks {missing}: {q}{self.proc.ctx()}")
        check(q["status"] in QUERY_STATES, f"query-migrate status {q['status']!r}{self.proc.ctx()}")
        return q

    def wait_migrate(self, pred, what, mig, timeout=HANG_GUARD_S):
        """Poll query-migrate until @pred(result) for the Migration @mig;
        fails when it ended first (completed, failed, cancelled) or after
        @timeout.  Until @mig's migration shows a state of its own, the
        previous migration's end state may still answer."""
        deadline = time.monotonic() + timeout
        seen = []
        begun = False
        while True:
            q = self.query_migrate()
            if not seen or seen[-1]["status"] != q["status"]:
                seen.append(q)
            ended = q["status"] in ("completed", "failed", "cancelled", "none")
            begun = begun or not ended
            if begun and pred(q):
                return q
            check(not ended or (not begun and mig.p.poll() is None),
                  f"the migration ended ({q}) before {what}; states seen: {seen}{self.proc.ctx()}")
            check(time.monotonic() < deadline,
                  f"no {what} in {timeout} s: last {q}{self.proc.ctx()}")


def wait_source_alive(src, sock, start):
    """After a failed migration: the source's query-status says running and
    the guest prints a new "pass" line after offset @start of its output.
    Returns the offset after that line."""
    r = subprocess.run([VMRUN, "ctl", sock, "query-status"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
    check(r.returncode == 0, f"query-status after the failure: status {r.returncode}: "
          f"{r.stdout!r} {r.stderr!r}{src.ctx()}")
    st = json.loads(r.stdout)
    check(st.get("status") == "running", f"the source is {st.get('status')!r} after a failed "
          f"migration, not running{src.ctx()}")
    m = src.wait_out(PASS_RE, start, what="a new 'pass' line on the source after the failure")
    return m.end()


def check_stats(obj, status, ctx):
    missing = [k for k in STATS_KEYS if k not in obj]
    check(not missing, f"the migrate result lacks {missing}: {obj}{ctx}")
    check(obj["status"] == status, f"migrate status {obj['status']!r}, want {status!r}: {obj}{ctx}")


def check_failed_migration(rc, obj, text, words, ctx):
    """A migrate that must fail: status 1, "failed" (or "cancelled") with an
    error naming one of @words (lower case)."""
    check(rc == 1, f"a failed migrate should exit 1, got {rc}: {text}{ctx}")
    check(obj.get("status") in ("failed", "cancelled"), f"status {obj.get('status')!r}: {obj}{ctx}")
    if words:
        err = str(obj.get("error", "")).lower() + text.lower()
        check(any(w in err for w in words), f"the error should mention {' or '.join(words)}: "
              f"{obj}{ctx}")


def check_destination_failed(dst, timeout=HANG_GUARD_S):
    """A destination whose migration failed exits by itself, with status 4
    and an error line, never a signal."""
    rc = dst.wait(timeout)
    check(rc >= 0, f"the destination died of signal {-rc}{dst.ctx()}")
    check(rc == 4, f"the destination should exit 4 after a failed migration, got {rc}{dst.ctx()}")
    check(b"error" in dst.stderr().lower(), f"the destination said no error line{dst.ctx()}")


# ---------------------------------------------------------------- migdirty

def dirty_cmdline(mib=64, every=1, rate=0):
    return f"mib={mib} every={every} rate={rate}"


def pass_numbers(out):
    return [int(n) for n in PASS_RE.findall(out)]


def check_passes_continue(src_out, dst_out, every, ctx):
    """migdirty's output across the switch: the source's bytes then the
    destination's make one run of "pass K", "pass 2K", ... with no STALE and
    no second start-up line."""
    both = src_out + dst_out
    check(b"STALE" not in both, f"a stale page after the migration{ctx}")
    check(b" MiB from 0x" not in dst_out and src_out.count(b" MiB from 0x") == 1,
          f"migdirty's start-up line twice: the guest started again{ctx}")
    ns = pass_numbers(both)
    check(ns, f"no pass lines{ctx}")
    want = list(range(ns[0], ns[0] + every * len(ns), every))
    if ns != want:
        i = next(i for i, (a, b) in enumerate(zip(ns, want)) if a != b)
        raise TestFailure(f"the pass count does not carry on across the switch: ... "
                          f"{ns[max(0, i - 3):i + 3]} (want {want[i]} at {i}){ctx}")


def finish_on_destination(dst, src_out, every, ctx_extra=""):
    """The destination runs the migrated migdirty: its pass count goes on
    past the source's last by two more lines, then 'q' checks every page
    and ends it (exit status 1, guest code 0)."""
    last_src = max(pass_numbers(src_out) or [0])
    dst.wait_out(re.compile(rb"^pass ([0-9]+)$", re.M), 0,
                 what="a pass line on the destination")

    def far_enough(out):
        ns = pass_numbers(src_out + out)
        return ns and ns[-1] >= last_src + 2 * every
    deadline = time.monotonic() + HANG_GUARD_S
    pos = 0
    while not far_enough(dst.stdout()):
        m = dst.wait_out(PASS_RE, pos, timeout=max(1, deadline - time.monotonic()),
                         what="the pass count going on on the destination")
        pos = m.end()
        check(b"STALE" not in dst.stdout(), f"a stale page on the destination{dst.ctx()}")
    dst.send(b"q")
    m = dst.wait_out(rb"migdirty: (verified|STALE)[^\n]*\n", 0, what="migdirty's final check")
    check(m.group(1) == b"verified", f"the final check failed: {m.group(0)!r}{dst.ctx()}")
    rc = dst.wait()
    check(rc == debug_exit_status(0), f"the destination should end with the guest's exit "
          f"status {debug_exit_status(0)}, got {rc}{dst.ctx()}{ctx_extra}")
    check_passes_continue(src_out, dst.stdout(), every, dst.ctx() + ctx_extra)


def source_completed(src):
    """After a successful migration the source exits 0 and says so."""
    rc = src.wait()
    check(rc == 0, f"the source should exit 0 after the migration, got {rc}{src.ctx()}")
    check(re.search(rb"^vmrun: migration completed", src.stderr(), re.M),
          f"no 'vmrun: migration completed' line on the source's stderr{src.ctx()}")


def successful_migration(h, src, sock, every, key=None, extra=(), events=None):
    """Migrate @src to a fresh destination and check both ends; returns the
    stats object."""
    dst, uri = h.destination(key=key)
    with dst:
        rc, obj, text = migrate(sock, uri, *extra, ctx=lambda: src.ctx() + dst.ctx())
        ctx = f"\n--- migrate: {text}{src.ctx()}{dst.ctx()}"
        check(rc == 0, f"migrate should succeed, status {rc}{ctx}")
        check_stats(obj, "completed", ctx)
        check(obj["rounds"] >= 1 and obj["pages"] >= 1, f"rounds and pages: {obj}{ctx}")
        check(obj["downtime_ms"] >= 0 and obj["total_ms"] >= obj["downtime_ms"],
              f"times: {obj}{ctx}")
        if events is not None:
            ev = events.wait_event("migration")
            check(ev.get("data", {}).get("status") == "completed",
                  f"the migration event: {ev}{ctx}")
            for k in STATS_KEYS:
                check(k in ev["data"], f"the migration event lacks {k}: {ev}{ctx}")
        source_completed(src)
        finish_on_destination(dst, src.stdout(), every, f"\n--- migrate: {text}")
        return obj


# ---------------------------------------------------------------- (a) migdirty

def dirty_body(rate, mib=64, every=1):
    def body(h):
        src, sock = h.source(guest("migdirty"), dirty_cmdline(mib, every, rate))
        with src:
            src.wait_out(rb"^pass %d$" % (2 * every), what="two passes on the source")
            events = Control(sock, src)
            events.cmd("query-status")  # connected and answering: will get the event
            obj = successful_migration(h, src, sock, every, events=events)
            # No zero page: every page of the region holds a word.
            check(obj["bytes"] >= mib << 20, f"{obj['bytes']} bytes sent for a {mib} MiB region: "
                  f"{obj}")
            print(f"note: {obj}", flush=True)
    return body


def test_migrate_dirty_lo():
    """(a) migdirty dirtying 64 MiB at 200 MiB/s migrates over loopback:
    the destination continues the pass count, no page is stale, every
    client gets the migration event, the source exits 0."""
    run_variant(False, dirty_body(200))


def test_migrate_dirty_ns():
    """(a) between two network namespaces."""
    run_variant(True, dirty_body(200))


def test_migrate_dirty_fast_lo():
    """(a) migdirty dirtying 64 MiB as fast as it can (faster than the link
    under dirty logging): the migration must still converge (auto-converge
    throttling) and lose nothing."""
    run_variant(False, dirty_body(0, every=10))


# ---------------------------------------------------------------- (b) memtouch

def memtouch_body(h):
    mib = 64
    src, sock = h.source(guest("memtouch"), f"touch={mib}", mem=f"{mib + 64}M")
    with src:
        m = src.wait_out(rb"memtouch: touched", what="'memtouch: touched'", timeout=HANG_GUARD_S)
        src.wait_out(TICK_RE, m.end(), what="a heartbeat")
        dst, uri = h.destination()
        with dst:
            rc, obj, text = migrate(sock, uri, ctx=lambda: src.ctx() + dst.ctx())
            ctx = f"\n--- migrate: {text}{src.ctx()}{dst.ctx()}"
            check(rc == 0, f"migrate should succeed, status {rc}{ctx}")
            check_stats(obj, "completed", ctx)
            source_completed(src)
            before = src.stdout()
            dst.wait_out(TICK_RE, 0, what="the heartbeat on the destination")
            dst.send(b"v")
            m = dst.wait_out(rb"memtouch: (verified [0-9]+ MiB|FAIL[^\n]*)\n", 0,
                             what="memtouch's check", timeout=HANG_GUARD_S)
            check(m.group(1) == b"verified %d MiB" % mib, f"memory check: {m.group(0)!r}{ctx}")
            after = dst.stdout()
            check(b"memtouch: touching" not in after, f"the guest booted again{ctx}")
            # The heartbeat carries on: the source's last complete tick line,
            # its unfinished tail and the destination's first bytes.
            nl = before.rfind(b"\n")
            ticks = TICK_RE.findall(before[:nl + 1])
            check(ticks, f"no heartbeat on the source{ctx}")
            expect = b"tick %d\n" % (int(ticks[-1]) + 1)
            tail = before[nl + 1:]
            got = tail + after[:max(0, len(expect) - len(tail))]
            check(got == expect, f"the heartbeat did not carry on: source ended with "
                  f"{before[-40:]!r}, destination began with {after[:40]!r}{ctx}")
            dst.send(b"q")
            rc = dst.wait()
            check(rc == debug_exit_status(0), f"destination status {rc} after 'q'{dst.ctx()}")


def test_migrate_memtouch_lo():
    """(b) memtouch with 64 MiB filled migrates over loopback; 'v' on the
    destination checks every byte, and its heartbeat carries on."""
    run_variant(False, memtouch_body)


def test_migrate_memtouch_ns():
    """(b) between two network namespaces."""
    run_variant(True, memtouch_body)


# ---------------------------------------------------------------- exact state

def migrate_ok(h, src, sock):
    """One migration to a fresh destination that must complete; returns
    the destination (running) after the source exited 0."""
    dst, uri = h.destination()
    try:
        rc, obj, text = migrate(sock, uri, ctx=lambda: src.ctx() + dst.ctx())
        ctx = f"\n--- migrate: {text}{src.ctx()}{dst.ctx()}"
        check(rc == 0, f"migrate should succeed, status {rc}{ctx}")
        check_stats(obj, "completed", ctx)
        source_completed(src)
    except BaseException:
        dst.kill()
        raise
    return dst


def fnv1a(data, h=0x811C9DC5):
    for c in data:
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    return h


def snapcount_body(h):
    """snapcount (tests/guest/README.md) migrated after line 50: the
    source's output then the destination's are its exact output, byte for
    byte (the serial port's state moved with the guest), and the hash of
    the lines it kept in memory matches."""
    n = 300
    lines = b"".join(b"count %d\n" % i for i in range(1, n + 1))
    want = lines + b"count done %d sum %08x\n" % (n, fnv1a(lines))
    src, sock = h.source(guest("snapcount"), f"n={n} delay=500000", mem="64M")
    with src:
        src.wait_out(rb"^count 50$", what="count 50")
        with migrate_ok(h, src, sock) as dst:
            rc = dst.wait()
            got = src.stdout() + dst.stdout()
            ctx = src.ctx() + dst.ctx()
            check(rc == debug_exit_status(0), f"the destination should end with status "
                  f"{debug_exit_status(0)}, got {rc}{ctx}")
            if got != want:
                i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
                lo, hi = max(0, i - 30), i + 30
                raise TestFailure(f"the output across the switch differs at byte {i} (source "
                                  f"printed {len(src.stdout())}): got {got[lo:hi]!r}, "
                                  f"want {want[lo:hi]!r}{ctx}")


def test_migrate_snapcount_lo():
    """Exact output and memory across the switch (snapcount)."""
    run_variant(False, snapcount_body)


SMP_TICK_RE = re.compile(rb"^tick cpu([0-9]+) lapic ([0-9]+)", re.M)


def smp_body(h):
    """smptimer on 2 vCPUs (LAPIC timers on both, the PIT on the boot CPU)
    migrated mid-way: both CPUs' timers carry on at the destination and the
    guest finishes; it never starts over."""
    ticks, every = 400, 25
    src, sock = h.source(guest("smptimer"), f"cpus=2 ticks={ticks} every={every}", mem="64M",
                         extra=("--cpus", "2"))
    with src:
        def both_at(out, n):
            seen = {}
            for cpu, t in SMP_TICK_RE.findall(out):
                seen[int(cpu)] = max(seen.get(int(cpu), 0), int(t))
            return all(seen.get(c, 0) >= n for c in (0, 1))
        deadline = time.monotonic() + HANG_GUARD_S
        pos = 0
        while not both_at(src.stdout(), 2 * every):
            pos = src.wait_out(SMP_TICK_RE, pos, timeout=max(1, deadline - time.monotonic()),
                               what="both CPUs' timers ticking").end()
        check(b"smptimer done" not in src.stdout(), f"finished before the migration{src.ctx()}")
        with migrate_ok(h, src, sock) as dst:
            rc = dst.wait()
            out = dst.stdout()
            ctx = src.ctx() + dst.ctx()
            check(rc == debug_exit_status(0) and out.endswith(b"smptimer done\n"),
                  f"the migrated smptimer should finish (status {debug_exit_status(0)}), got "
                  f"{rc}{ctx}")
            check(b"smptimer: cpus" not in out, f"the guest started over{ctx}")
            check(both_at(out, ticks), f"a CPU's timer fell short on the destination{ctx}")


def test_migrate_smp_timers_lo():
    """Two vCPUs with their LAPIC timers and the PIT across the switch."""
    run_variant(False, smp_body)


def blk_body(h):
    """blksnap (virtio-blk writes and flushes in flight, 12 at a time) on a
    qcow2 disk, migrated mid-I/O to a destination on the same host (the
    same path: shared storage): every request completes exactly once, the
    guest reads its data back, and qemu-img finds the disk consistent and
    as the guest's contract says."""
    import blksnap_tests as bt
    from testkit import qemu_img, qemu_img_contents
    requests = 16 * bt.ROUND
    img = os.path.join(h.d, "disk.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, str(bt.DISK_BYTES))
    src, sock = h.source(guest("blksnap"), f"blksnap.requests={requests}", mem="64M",
                         extra=("--disk", img))
    with src:
        src.wait_out(rb"^blksnap round 2$", what="blksnap round 2")
        with migrate_ok(h, src, sock) as dst:
            rc = dst.wait()
            out = src.stdout() + dst.stdout()
            ctx = src.ctx() + dst.ctx()
            check(rc == debug_exit_status(0) and b"blksnap ok %d\n" % requests in out and
                  b"FAIL" not in out, f"blksnap should finish with 'blksnap ok {requests}'{ctx}")
            check(b"blksnap round 2\n" in src.stdout() and
                  b"blksnap ok" not in src.stdout(), f"the I/O was not mid-way at the switch{ctx}")
    qemu_img("check", img)
    got = qemu_img_contents(img, h.d)
    want = bt.expected_disk(requests)
    if got != want:
        bad = next((i for i in range(0, len(want), 512) if got[i:i + 512] != want[i:i + 512]), -1)
        raise TestFailure(f"the disk after the migration: sector {bad // 512} holds the wrong "
                          f"data ({len(got)} bytes, want {len(want)})")


def test_migrate_blk_mid_io_lo():
    """virtio-blk requests in flight across the switch, shared storage."""
    run_variant(False, blk_body)


def bandwidth_body(h):
    """max_bandwidth=16 MiB/s and downtime_ms=50 are taken: memtouch's 32
    MiB do not move faster than the cap allows (a lower bound on the time,
    which a slow machine cannot break), and the guest arrives whole."""
    cap = 16 << 20
    src, sock = h.source(guest("memtouch"), "touch=32", mem="96M")
    with src:
        m = src.wait_out(rb"memtouch: touched", what="'memtouch: touched'")
        src.wait_out(TICK_RE, m.end(), what="a heartbeat")
        dst, uri = h.destination()
        with dst:
            rc, obj, text = migrate(sock, uri, f"max_bandwidth={cap}", "downtime_ms=50",
                                    ctx=lambda: src.ctx() + dst.ctx())
            ctx = f"\n--- migrate: {text}{src.ctx()}{dst.ctx()}"
            check(rc == 0, f"migrate should succeed, status {rc}{ctx}")
            check_stats(obj, "completed", ctx)
            floor_ms = 0.8 * obj["bytes"] / cap * 1000
            check(obj["total_ms"] >= floor_ms, f"{obj['bytes']} bytes in {obj['total_ms']} ms: "
                  f"faster than max_bandwidth={cap} allows (at least {floor_ms:.0f} ms){ctx}")
            check(obj["bandwidth"] <= 1.25 * cap, f"bandwidth {obj['bandwidth']} over the cap "
                  f"{cap}{ctx}")
            source_completed(src)
            dst.wait_out(TICK_RE, 0, what="the heartbeat on the destination")
            dst.send(b"v")
            m = dst.wait_out(rb"memtouch: (verified [0-9]+ MiB|FAIL[^\n]*)\n", 0,
                             what="memtouch's check")
            check(m.group(1) == b"verified 32 MiB", f"memory check: {m.group(0)!r}{ctx}")
            dst.send(b"q")
            check(dst.wait() == debug_exit_status(0), f"destination status{dst.ctx()}")


def autoconverge_body(h):
    """migdirty rewriting 64 MiB as fast as it can over a link capped at
    32 MiB/s (max_bandwidth): it dirties faster than the stream moves, so
    the migration can only end by throttling the vCPU (auto-converge) or
    by failing cleanly at its round and time cap.  It must converge with
    query-migrate showing a throttle on the way, lose no page, and the
    guest run on at the destination."""
    cap = 32 << 20
    every = 10
    src, sock = h.source(guest("migdirty"), dirty_cmdline(64, every, 0))
    with src:
        src.wait_out(rb"^pass %d$" % (2 * every), what="two pass lines on the source")
        ctl = Control(sock, src)
        dst, uri = h.destination()
        with dst:
            mig = Migration(sock, uri, f"max_bandwidth={cap}")
            most = 0
            try:
                deadline = time.monotonic() + MIGRATE_GUARD_S
                while mig.p.poll() is None and time.monotonic() < deadline:
                    try:
                        q = ctl.query_migrate()
                    except OSError:
                        # The source exits once the migration completed:
                        # the result below says how it ended.
                        break
                    most = max(most, q.get("throttle_percent", 0))
                    if q["status"] in ("completed", "failed", "cancelled"):
                        break
                    # A polling interval, not a synchronisation: the
                    # loop ends on the migration's own end.
                    time.sleep(0.05)
                rc, obj, text = mig.result(lambda: src.ctx() + dst.ctx())
                # The last throttle, if the polls missed it.
                most = max(most, obj.get("throttle_percent", 0) if obj else 0)
            finally:
                mig.kill()
            ctx = f"\n--- migrate: {text}{src.ctx()}{dst.ctx()}"
            check(rc == 0, f"migrate should converge and succeed, status {rc}{ctx}")
            check_stats(obj, "completed", ctx)
            print(f"note: most throttle seen {most}%; final {obj}", flush=True)
            check(most > 0, f"converged without throttling a guest that dirties faster than "
                  f"{cap} bytes/s?{ctx}")
            source_completed(src)
            finish_on_destination(dst, src.stdout(), every, f"\n--- migrate: {text}")


def test_migrate_autoconverge_lo():
    """A guest dirtying faster than the (capped) link converges by throttling."""
    run_variant(False, autoconverge_body)


def test_migrate_bandwidth_cap_lo():
    """max_bandwidth and downtime_ms on the migrate command."""
    run_variant(False, bandwidth_body)


def key_errors_body(h):
    """Key files that cannot serve: a destination with a missing or too
    short key file refuses to start (non-zero status, the file named, no
    listening line); a source with a missing key file either refuses to
    start naming it, or cannot migrate (the error names the key)."""
    short = write_key(h.path("short.key"), b"short")
    missing = h.path("missing.key")
    for what, key in (("a missing key file", missing), ("a 5-byte key file", short)):
        argv = h.argv("b", [VMRUN, "--incoming", f"tcp:{h.dst_addr}:0", "--migration-key", key])
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        err = p.stderr.decode(errors="replace")
        check(p.returncode > 0 and key in err and "listening on" not in err,
              f"a destination with {what}: status {p.returncode}, stderr {err!r}")
    good = write_key(h.path("good.key"), os.urandom(32))
    src, sock = h.source(guest("migdirty"), dirty_cmdline(16, 1, 64), key=missing)
    with src:
        m = src.out.wait(PASS_RE, 0, HANG_GUARD_S)
        if not m:
            rc = src.wait()
            check(rc > 0 and missing.encode() in src.stderr(),
                  f"a source with a missing key file: status {rc}{src.ctx()}")
            return
        pos = m.end()
        dst, uri = h.destination(key=good)
        with dst:
            # Refused before it starts (an error reply, no statistics) or
            # failed: either way status 1 and the key named.
            r = subprocess.run([VMRUN, "ctl", sock, "migrate", f"uri={uri}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=MIGRATE_GUARD_S)
            text = r.stdout.decode(errors="replace")
            check(r.returncode == 1 and ("key" in text.lower() or "authenticat" in text.lower()),
                  f"migrate from a source whose key file is missing: status {r.returncode}: "
                  f"{text!r}{src.ctx()}{dst.ctx()}")
        wait_source_alive(src, sock, pos)


def test_migrate_key_file_errors_lo():
    """Missing and short key files on either side."""
    run_variant(False, key_errors_body)


# ---------------------------------------------------------------- (c) failures

SLOW = 8 << 20  # max_bandwidth for a first pass that takes seconds


def kill_body(h):
    """The destination SIGKILLed before the source connects, once the
    handshake is done (query-migrate "active" with little sent), and during
    the transfer (round >= 1 or more than 8 MiB sent): each time the migrate
    fails, the source runs on; then a migration to a fresh destination
    succeeds and loses no page."""
    every = 1
    src, sock = h.source(guest("migdirty"), dirty_cmdline(32, every, 64))
    with src:
        pos = src.wait_out(rb"^pass 1$", what="a pass on the source").end()
        ctl = Control(sock, src)
        q = ctl.query_migrate()
        check(q["status"] == "none", f"query-migrate before any migration: {q}{src.ctx()}")

        # 1. Before the accept: the destination is gone, the port refuses.
        dst, uri = h.destination()
        dst.kill()
        rc, obj, text = migrate(sock, uri, ctx=src.ctx)
        check_failed_migration(rc, obj, text, (), src.ctx())
        ev = ctl.wait_event("migration")
        check(ev.get("data", {}).get("status") == "failed", f"the event: {ev}")
        pos = wait_source_alive(src, sock, pos)

        stages = (("right after the handshake",
                   lambda q: q["status"] in ("active", "completing")),
                  ("during the transfer",
                   lambda q: q["status"] in ("active", "completing") and
                   (q["round"] >= 1 or q["bytes"] > 8 << 20)))
        for what, when in stages:
            dst, uri = h.destination()
            with dst:
                mig = Migration(sock, uri, f"max_bandwidth={SLOW}")
                try:
                    q = ctl.wait_migrate(when, f"the moment {what}", mig,
                                         timeout=MIGRATE_GUARD_S)
                    dst.kill()
                    print(f"note: destination killed {what}: {q}", flush=True)
                    rc, obj, text = mig.result(src.ctx)
                finally:
                    mig.kill()
                check_failed_migration(rc, obj, text, (), f"\n(killed {what} at {q}){src.ctx()}")
                q = ctl.query_migrate()
                check(q["status"] == "failed", f"query-migrate after the failure: {q}{src.ctx()}")
                ev = ctl.wait_event("migration")
                check(ev.get("data", {}).get("status") == "failed", f"the event: {ev}")
                pos = wait_source_alive(src, sock, pos)
        ctl.close()
        successful_migration(h, src, sock, every)


def test_migrate_kill_destination_lo():
    """(c) destination killed at three stages over loopback, then a good migration."""
    run_variant(False, kill_body)


def test_migrate_kill_destination_ns():
    """(c) the same between two network namespaces."""
    run_variant(True, kill_body)


def cancel_body(h):
    """migrate-cancel in the middle of a slow transfer: the migrate returns
    "cancelled" (exit 1), the destination exits 4 by itself, the source runs
    on; then a migration succeeds."""
    every = 1
    src, sock = h.source(guest("migdirty"), dirty_cmdline(32, every, 64))
    with src:
        pos = src.wait_out(rb"^pass 1$", what="a pass on the source").end()
        ctl = Control(sock, src)
        dst, uri = h.destination()
        with dst:
            mig = Migration(sock, uri, f"max_bandwidth={SLOW}")
            try:
                q = ctl.wait_migrate(lambda q: q["status"] == "active" and q["bytes"] > 0,
                                     "an active migration", mig, timeout=MIGRATE_GUARD_S)
                check(q["remaining_pages"] > 0 and q["bandwidth"] >= 0,
                      f"query-migrate while active: {q}{src.ctx()}")
                r = subprocess.run([VMRUN, "ctl", sock, "migrate-cancel"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=HANG_GUARD_S)
                check(r.returncode == 0, f"migrate-cancel: status {r.returncode}: {r.stdout!r}"
                      f"{src.ctx()}")
                rc, obj, text = mig.result(src.ctx)
            finally:
                mig.kill()
            check(rc == 1 and obj.get("status") == "cancelled",
                  f"a cancelled migrate: status {rc}, {obj}{src.ctx()}")
            q = ctl.query_migrate()
            check(q["status"] == "cancelled", f"query-migrate after the cancel: {q}{src.ctx()}")
            ev = ctl.wait_event("migration")
            check(ev.get("data", {}).get("status") == "cancelled", f"the event: {ev}")
            check_destination_failed(dst)
        pos = wait_source_alive(src, sock, pos)
        ctl.close()
        successful_migration(h, src, sock, every)


def test_migrate_cancel_lo():
    """(c) migrate-cancel over loopback, then a good migration."""
    run_variant(False, cancel_body)


def test_migrate_cancel_ns():
    """(c) the same between two network namespaces."""
    run_variant(True, cancel_body)


def wrong_key_body(h):
    """A destination with another key refuses the source (its migrate fails
    naming authentication; the destination exits 4); so does a keyed
    destination a source without a key; then the right key succeeds."""
    every = 1
    key_a = write_key(h.path("a.key"), os.urandom(32))
    key_b = write_key(h.path("b.key"), os.urandom(32))
    words = ("authenticat",)

    # A source without any key against a keyed destination.
    src0, sock0 = h.source(guest("migdirty"), dirty_cmdline(16, every, 64))
    with src0:
        pos = src0.wait_out(rb"^pass 1$", what="a pass on the keyless source").end()
        dst, uri = h.destination(key=key_a)
        with dst:
            rc, obj, text = migrate(sock0, uri, ctx=lambda: src0.ctx() + dst.ctx())
            check_failed_migration(rc, obj, text, words, src0.ctx() + dst.ctx())
            check_destination_failed(dst)
        wait_source_alive(src0, sock0, pos)
        subprocess.run([VMRUN, "ctl", sock0, "quit"], capture_output=True, timeout=HANG_GUARD_S)
        check(src0.wait() == 0, f"quit should end the keyless source with status 0{src0.ctx()}")

    src, sock = h.source(guest("migdirty"), dirty_cmdline(32, every, 64), key=key_a)
    with src:
        pos = src.wait_out(rb"^pass 1$", what="a pass on the source").end()
        dst, uri = h.destination(key=key_b)
        with dst:
            rc, obj, text = migrate(sock, uri, ctx=lambda: src.ctx() + dst.ctx())
            check_failed_migration(rc, obj, text, words, src.ctx() + dst.ctx())
            check_destination_failed(dst)
        pos = wait_source_alive(src, sock, pos)
        successful_migration(h, src, sock, every, key=key_a)


def test_migrate_wrong_key_lo():
    """(c) authentication over loopback."""
    run_variant(False, wrong_key_body)


def test_migrate_wrong_key_ns():
    """(c) authentication between two network namespaces."""
    run_variant(True, wrong_key_body)


# ---------------------------------------------------------------- (d) hostile streams

def recv_some(s, timeout):
    """What the destination sends within @timeout s (its challenge), or b""."""
    s.settimeout(timeout)
    data = b""
    try:
        while len(data) < REC.size:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if len(data) >= REC.size:
            _, n = REC.unpack_from(data)
            while len(data) < REC.size + min(n, 1 << 16):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (socket.timeout, OSError):
        pass
    return data


def feed(h, payload, key=None, read_first=True):
    """Connect to a fresh destination, read its opening, send @payload and
    close the sending side; the destination must exit 4 with an error line
    and never by a signal.  Returns its stderr."""
    dst, uri = h.destination(key=key)
    with dst:
        port = int(uri.rsplit(":", 1)[1])
        s = h.client_socket()
        try:
            s.connect((h.dst_addr, port))
            if read_first:
                recv_some(s, 10)
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the destination may close on the first bad byte
            check_destination_failed(dst)
        finally:
            s.close()
        return dst.stderr()


def hostile_body(h):
    rng = random.Random(12)
    hello_magic = b"VMRUNMIG" + struct.pack("<II", 1, 0) + bytes(32) + bytes(32)
    cases = [
        ("connect and close", b""),
        ("garbage", bytes(rng.getrandbits(8) for _ in range(65536))),
        ("a 5-byte header", REC.pack(MIG_HELLO, 1000)[:5]),
        ("a HELLO claiming 4 GiB", REC.pack(MIG_HELLO, 0xFFFFFFF0) + hello_magic),
        ("an unknown record type", REC.pack(0x7FFFFFFF, 16) + bytes(16)),
        ("PAGES before HELLO", REC.pack(MIG_PAGES, 8 + 8) + struct.pack("<IIQ", 1, 0, 0x1000)),
        ("a truncated HELLO", REC.pack(MIG_HELLO, len(hello_magic) + 4096) + hello_magic),
        ("a HELLO with a wrong magic", REC.pack(MIG_HELLO, len(hello_magic)) +
         b"VMRUNMIX" + hello_magic[8:]),
        ("a HELLO of version 99", REC.pack(MIG_HELLO, len(hello_magic)) +
         b"VMRUNMIG" + struct.pack("<II", 99, 0) + hello_magic[16:]),
        ("a HELLO with a garbage description",
         REC.pack(MIG_HELLO, len(hello_magic) + 4096) + hello_magic +
         bytes(rng.getrandbits(8) for _ in range(4096))),
    ]
    for what, payload in cases:
        try:
            feed(h, payload, read_first=what != "connect and close")
        except TestFailure as e:
            raise TestFailure(f"hostile stream '{what}': {e}")
    # The same, to a destination with a key: nothing is built before the
    # proof of the key.
    try:
        feed(h, cases[9][1], key=write_key(h.path("k.key"), os.urandom(32)))
    except TestFailure as e:
        raise TestFailure(f"hostile stream 'garbage HELLO to a keyed destination': {e}")


def test_migrate_hostile_stream_lo():
    """(d) hand-made hostile streams to `--incoming` over loopback: garbage,
    truncated and oversized headers, unknown types, records out of order, bad
    magic and version, a garbage machine description: the destination exits
    4 with an error line each time, never by a signal."""
    run_variant(False, hostile_body)


def test_migrate_hostile_stream_ns():
    """(d) the same between two network namespaces."""
    run_variant(True, hostile_body)


def idle_body(h):
    """A peer that connects and then sends nothing: the destination does not
    wait for it forever but ends (status 4, an error line) within the hang
    guard."""
    dst, uri = h.destination()
    with dst:
        s = h.client_socket()
        try:
            s.connect((h.dst_addr, int(uri.rsplit(":", 1)[1])))
            t0 = time.monotonic()
            check_destination_failed(dst, timeout=HANG_GUARD_S)
            print(f"note: the destination gave up on an idle peer after "
                  f"{time.monotonic() - t0:.1f} s", flush=True)
        finally:
            s.close()


def test_migrate_idle_peer_lo():
    """(d) a connection that never sends: the destination ends by itself."""
    run_variant(False, idle_body)


class Relay:
    """A TCP relay between a source and a destination on loopback that
    keeps every byte the source sent."""

    def __init__(self, dst_port):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.dst_port = dst_port
        self.sent = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _pump(self, a, b, keep):
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                if keep:
                    self.sent += data
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _run(self):
        self.ls.settimeout(HANG_GUARD_S)
        try:
            a, _ = self.ls.accept()
        except OSError:
            return
        b = socket.create_connection(("127.0.0.1", self.dst_port))
        t = threading.Thread(target=self._pump, args=(b, a, False), daemon=True)
        t.start()
        self._pump(a, b, True)
        t.join(HANG_GUARD_S)
        a.close()
        b.close()

    def close(self):
        self.ls.close()
        self.thread.join(HANG_GUARD_S)


class CutRelay:
    """A TCP relay on loopback between a source and a destination that
    forwards whole records (REC headers) and, at the first record of type
    @rtype going in direction @direction ("to_dst" or "to_src"), forwards
    nothing more: it calls @on_cut() (which kills the destination) and
    closes both connections.  .cut says whether it got there."""

    def __init__(self, dst_port, direction, rtype, on_cut):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.dst_port = dst_port
        self.direction, self.rtype, self.on_cut = direction, rtype, on_cut
        self.cut = False
        self.lock = threading.Lock()
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _cut(self):
        with self.lock:
            if self.cut:
                return
            self.cut = True
            self.on_cut()
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _pump(self, a, b, direction):
        buf = b""
        try:
            while not self.cut:
                data = a.recv(1 << 16)
                if not data:
                    break
                buf += data
                while len(buf) >= REC.size:
                    t, n = REC.unpack_from(buf)
                    if direction == self.direction and t == self.rtype:
                        self._cut()
                        return
                    if len(buf) < REC.size + n:
                        break
                    b.sendall(buf[:REC.size + n])
                    buf = buf[REC.size + n:]
        except OSError:
            pass
        if not self.cut:
            try:
                b.sendall(buf)
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _run(self):
        self.ls.settimeout(HANG_GUARD_S)
        try:
            a, _ = self.ls.accept()
        except OSError:
            return
        b = socket.create_connection(("127.0.0.1", self.dst_port))
        self.conns = [a, b]
        t = threading.Thread(target=self._pump, args=(b, a, "to_src"), daemon=True)
        t.start()
        self._pump(a, b, "to_dst")
        t.join(HANG_GUARD_S)
        a.close()
        b.close()

    def close(self):
        self.ls.close()
        self.thread.join(HANG_GUARD_S)


# The stream's other record types (src/migrate/wire.h), for the cuts.
MIG_READY, MIG_LOADED, MIG_RELEASED, MIG_TAKEN = 3, 7, 8, 9


def cut_body(h):
    """The connection cut (and the destination killed) at each step of the
    protocol, the relay withholding the record that would have come next:
    the destination's READY, the source's first PAGES, its STATE (the source
    paused in stop-and-copy), the destination's LOADED, the source's
    RELEASED, the destination's TAKEN (the last step before the source
    commits).  Each time the migrate fails and the guest runs on at the
    source; then a migration succeeds and loses no page."""
    every = 1
    src, sock = h.source(guest("migdirty"), dirty_cmdline(32, every, 64))
    with src:
        pos = src.wait_out(rb"^pass 1$", what="a pass on the source").end()
        for direction, rtype, what in (("to_src", MIG_READY, "READY"),
                                       ("to_dst", MIG_PAGES, "the first PAGES"),
                                       ("to_dst", MIG_STATE, "STATE"),
                                       ("to_src", MIG_LOADED, "LOADED"),
                                       ("to_dst", MIG_RELEASED, "RELEASED"),
                                       ("to_src", MIG_TAKEN, "TAKEN")):
            dst, uri = h.destination()
            with dst:
                relay = CutRelay(int(uri.rsplit(":", 1)[1]), direction, rtype, dst.kill)
                try:
                    rc, obj, text = migrate(sock, f"tcp:127.0.0.1:{relay.port}",
                                            ctx=lambda: src.ctx() + dst.ctx())
                finally:
                    relay.close()
                ctx = f"\n(cut before {what}; the relay cut: {relay.cut}){src.ctx()}{dst.ctx()}"
                check(relay.cut, f"the stream never came to {what}: migrate status {rc}: {text}"
                      f"{ctx}")
                check_failed_migration(rc, obj, text, (), ctx)
                check(src.p.poll() is None, f"the source exited after a failed migration{ctx}")
                pos = wait_source_alive(src, sock, pos)
                print(f"note: cut before {what}: {obj.get('error')}", flush=True)
        successful_migration(h, src, sock, every)


def test_migrate_cut_connection_lo():
    """(c) the connection cut and the destination killed before each
    protocol step up to the commit, then a good migration."""
    run_variant(False, cut_body)


def record_stream(h, key=None):
    """A whole migration of a small memtouch through a Relay; returns the
    source's bytes as a list of (type, header+payload) records."""
    src, sock = h.source(guest("memtouch"), "touch=4", mem="32M", key=key)
    with src:
        src.wait_out(TICK_RE, what="a heartbeat")
        dst, uri = h.destination(key=key)
        with dst:
            relay = Relay(int(uri.rsplit(":", 1)[1]))
            rc, obj, text = migrate(sock, f"tcp:127.0.0.1:{relay.port}",
                                    ctx=lambda: src.ctx() + dst.ctx())
            relay.close()
            check(rc == 0, f"the recorded migration failed: {text}{src.ctx()}{dst.ctx()}")
            dst.wait_out(TICK_RE, 0, what="the migrated heartbeat")
            dst.send(b"q")
            dst.wait()
        src.wait()
    data = bytes(relay.sent)
    recs, off = [], 0
    while off < len(data):
        check(off + REC.size <= len(data), f"the recorded stream ends inside a header at {off}")
        t, n = REC.unpack_from(data, off)
        check(off + REC.size + n <= len(data), f"record type {t} at {off} runs past the stream")
        recs.append((t, data[off:off + REC.size + n]))
        off += REC.size + n
    types = [t for t, _ in recs]
    check(types and types[0] == MIG_HELLO and MIG_PAGES in types and MIG_STATE in types,
          f"the recorded stream is not HELLO, PAGES..., STATE, ... (src/migrate/wire.h): "
          f"types {types[:20]}")
    return recs


def hostile_replay_body(h):
    """Truncated and corrupted copies of a real migration stream (recorded
    through a relay), each to a fresh destination: it exits 4 with an error
    line, never by a signal and never running the guest."""
    recs = record_stream(h)
    types = [t for t, _ in recs]
    i_pages = types.index(MIG_PAGES)
    i_state = types.index(MIG_STATE)
    whole = b"".join(r for _, r in recs)
    upto = lambda i: b"".join(r for _, r in recs[:i])  # noqa: E731
    pages = recs[i_pages][1]
    after_pages = b"".join(r for _, r in recs[i_pages + 1:])
    state = recs[i_state][1]
    count = struct.unpack_from("<I", pages, REC.size)[0]
    bad_addr = bytearray(pages)
    struct.pack_into("<Q", bad_addr, REC.size + 8, 0xFFFFFFFFF000)  # far beyond RAM
    unaligned = bytearray(pages)
    struct.pack_into("<Q", unaligned, REC.size + 8,
                     (struct.unpack_from("<Q", pages, REC.size + 8)[0] & ~0xFFF) | 0x800)
    big_count = bytearray(pages)
    struct.pack_into("<I", big_count, REC.size, count + 1000)
    flipped = bytearray(state)
    for k in range(REC.size + 64, len(flipped), max(1, (len(flipped) - REC.size) // 16)):
        flipped[k] ^= 0x5A
    cases = [
        ("half the HELLO", recs[0][1][:len(recs[0][1]) // 2]),
        ("the HELLO only", upto(1)),
        ("cut inside the first PAGES", upto(i_pages) + pages[:len(pages) // 2]),
        ("everything before STATE", upto(i_state)),
        ("cut inside STATE", upto(i_state) + state[:len(state) // 2]),
        ("a page beyond RAM", upto(i_pages) + bytes(bad_addr) + after_pages),
        ("an unaligned page", upto(i_pages) + bytes(unaligned) + after_pages),
        ("a PAGES count larger than its data", upto(i_pages) + bytes(big_count)),
        ("STATE with bytes flipped", upto(i_state) + bytes(flipped)),
        ("STATE twice", upto(i_state + 1) + state),
    ]
    for what, payload in cases:
        try:
            err = feed(h, payload)
        except TestFailure as e:
            raise TestFailure(f"replayed stream '{what}' ({len(payload)} of {len(whole)} bytes, "
                              f"record types {types[:8]}...): {e}")
        print(f"note: '{what}': {err.decode(errors='replace').strip().splitlines()[-1:]}",
              flush=True)
    # A keyed migration replayed to a destination with the same key: the
    # challenge's nonce is new, so the old proof must not pass.
    key = write_key(h.path("replay.key"), os.urandom(32))
    krecs = record_stream(h, key=key)
    try:
        feed(h, b"".join(r for _, r in krecs), key=key)
    except TestFailure as e:
        raise TestFailure(f"a keyed stream replayed to a keyed destination: {e}")


def test_migrate_hostile_replay_lo():
    """(d) a recorded real stream cut short at each stage and corrupted
    (addresses, counts, state bytes), and a keyed stream replayed."""
    run_variant(False, hostile_replay_body)


def test_migrate_example_script():
    """examples/migrate-netns.sh (as root: it makes two namespaces) moves
    migdirty between them and ends with PASS."""
    if os.geteuid() != 0:
        raise Skip("examples/migrate-netns.sh makes network namespaces: needs root")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                          "migrate-netns.sh")
    r = subprocess.run(["bash", script, VMRUN, guest("migdirty")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=MIGRATE_GUARD_S)
    out = r.stdout.decode(errors="replace")
    check(r.returncode == 0 and out.rstrip().endswith("PASS"),
          f"examples/migrate-netns.sh: status {r.returncode}\n{out}")


def on_sigterm(signum, frame):
    # Unwind through the with-blocks: every vmrun killed, namespaces deleted.
    raise TestFailure(f"killed by signal {signum}")


def main():
    def setup(a):
        status = guest_setup(a, globals())
        if status is not None:
            return status
        signal.signal(signal.SIGTERM, on_sigterm)
        r = subprocess.run([VMRUN, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=HANG_GUARD_S)
        if b"--incoming" not in r.stdout:
            print("SKIP: this vmrun has no --incoming (live migration not built yet)")
            return SKIP
        if os.geteuid() == 0:
            try:
                remove_stale_netns(NS_PREFIX)
            except (OSError, subprocess.TimeoutExpired):
                pass
        return None

    return run_main(globals(), add_guest_args, setup)


if __name__ == "__main__":
    sys.exit(main())
