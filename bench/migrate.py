#!/usr/bin/env python3
"""vmrun live-migration benchmark: pre-copy migration over loopback of
three guests, side by side in one run with QEMU microvm migrating the same
guest the same way, against the loopback link's own throughput measured in
the same run.

  (a) idle   tests/guest/memtouch.elf, 1 GiB of RAM, 900 MiB touched, then
             only its heartbeat (touch=900, --mem 1024M)
  (b) 100    tests/guest/migdirty.elf dirtying 256 MiB at 100 MiB/s
             (mib=256 rate=100, --mem 320M)
  (c) max    migdirty dirtying its 256 MiB as fast as it can (rate=0):
             faster than the link, so it converges only by throttling

  link       a 1 GiB copy over a loopback TCP connection between two
             processes (send() of 1 MiB buffers, recv_into()): what the
             link itself carries
  vmrun      destination `vmrun --incoming tcp:127.0.0.1:0`, source
             `vmrun --kernel G --api-sock S`; `vmrun ctl S migrate
             uri=tcp:127.0.0.1:PORT` timed to its reply, and its statistics
  QEMU       the same guest under QEMU microvm; destination with -incoming
             tcp:127.0.0.1:PORT, source driven over QMP: capabilities
             events and auto-converge, max-bandwidth unlimited, downtime
             limit QEMU's default (300 ms) unless --qemu-downtime-ms; then
             "migrate" timed to the MIGRATION "completed" event, and
             query-migrate's figures

After each migration the destination must run the guest on: migdirty's pass
count goes on with no stale page and its final check ('q') passes; memtouch
checks every byte ('v').  Each figure is the best of --runs (total time).

The ideal total time is (bytes that must move) / (link throughput), where
the bytes that must move are the guest's non-zero memory when the migration
starts (the touched or dirtied region): the issue's target is total time
<= 1.2x that, and downtime <= 10 ms in (a) and (b).

Exit status: 0 when every migration worked, whatever the timings (a vmrun
without --incoming is reported and left out); 1 when one failed; 2 on a
usage error; 77 when /dev/kvm cannot be opened.  See bench/README.md.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from snapshot import Proc, Qmp, RunFailed, QEMU_CPU_FALLBACK  # bench/snapshot.py
from startup import host_description  # bench/startup.py

SKIP = 77
MIB = 1 << 20
GUEST_EXTRA_MIB = 64              # RAM beyond the dirtied region (migdirty)
TOTAL_TARGET = 1.2                # total <= 1.2x (must move / link)
DOWNTIME_TARGET_MS = 10.0         # in (a) and (b)
QEMU_MAX_BANDWIDTH = 1 << 40      # bytes/s: no throttling of the stream
LINK_BUF = MIB
LISTEN_RE = re.compile(rb"vmrun: migration: listening on (\S+):([0-9]+)\r?\n")
PASS_RE = re.compile(rb"^pass ([0-9]+)$", re.M)
TICK_RE = re.compile(rb"tick ([0-9]+)\n")
VERIFY_RE = re.compile(rb"memtouch: (verified [0-9]+ MiB|FAIL[^\n]*)\n")
DIRTY_END_RE = re.compile(rb"migdirty: (verified|STALE)[^\n]*\n")


def now():
    return time.monotonic()


class Case:
    def __init__(self, key, title, guest, cmdline, mem_mib, must_move_mib, ready_re, kind,
                 downtime_target):
        self.key = key
        self.title = title
        self.guest = guest              # "memtouch" or "migdirty"
        self.cmdline = cmdline
        self.mem_mib = mem_mib
        self.must_move = must_move_mib * MIB
        self.ready_re = ready_re        # guest output that says it is ready to migrate
        self.kind = kind
        self.downtime_target = downtime_target
        self.vmrun = []                 # samples
        self.qemu = []
        self.notes = []


def cases(quick):
    if quick:
        return [
            Case("a", "(a) idle, 64 MiB touched", "memtouch", "touch=64", 128, 64,
                 rb"memtouch: touched", "memtouch", True),
            Case("b", "(b) 32 MiB dirtied at 50 MiB/s", "migdirty", "mib=32 rate=50 every=1",
                 32 + GUEST_EXTRA_MIB, 32, rb"^pass 1$", "migdirty", True),
            Case("c", "(c) 32 MiB dirtied at full speed", "migdirty", "mib=32 rate=0 every=20",
                 32 + GUEST_EXTRA_MIB, 32, rb"^pass 20$", "migdirty", False),
        ]
    return [
        Case("a", "(a) 1 GiB, 900 MiB touched, idle", "memtouch", "touch=900", 1024, 900,
             rb"memtouch: touched", "memtouch", True),
        Case("b", "(b) 256 MiB dirtied at 100 MiB/s", "migdirty", "mib=256 rate=100 every=1",
             256 + GUEST_EXTRA_MIB, 256, rb"^pass 1$", "migdirty", True),
        Case("c", "(c) 256 MiB dirtied at full speed", "migdirty", "mib=256 rate=0 every=10",
             256 + GUEST_EXTRA_MIB, 256, rb"^pass 10$", "migdirty", False),
    ]


# ---- the link ----

def link_throughput(nbytes):
    """Bytes/s of one loopback TCP connection between two processes."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            buf = bytes(range(256)) * (LINK_BUF // 256)
            left = nbytes
            while left:
                n = s.send(buf[:min(left, LINK_BUF)])
                left -= n
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
            s.close()
        finally:
            os._exit(0)
    conn, _ = ls.accept()
    buf = bytearray(LINK_BUF)
    got = 0
    t0 = now()
    while got < nbytes:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    t = now() - t0
    conn.close()
    ls.close()
    os.waitpid(pid, 0)
    if got < nbytes:
        raise RunFailed(f"link: the copy stopped after {got} of {nbytes} bytes")
    return nbytes / t


def fresh_memory_rate(nbytes):
    """Bytes/s of writing @nbytes into freshly mapped anonymous memory (1
    MiB copies): what a destination pays to receive pages into RAM it has
    never touched.  On a host that is itself a VM every first touch is a
    fault in the outer host too, and this, not the link, can be the
    floor."""
    import mmap
    m = mmap.mmap(-1, nbytes)
    try:
        buf = bytes(range(1, 256)) * (LINK_BUF // 255 + 1)
        buf = buf[:LINK_BUF]
        t0 = now()
        for off in range(0, nbytes, LINK_BUF):
            m[off:off + LINK_BUF] = buf
        return nbytes / (now() - t0)
    finally:
        m.close()


# ---- checks on the destination ----

def ready_timeout(case):
    # memtouch: about 8 s per GiB of host faults on the development machines.
    return 60 + 30 * case.mem_mib / 1024


def check_destination(proc, case, src_out):
    """The migrated guest runs on and its memory is right; then it quits.
    Returns the seconds from the first destination output to the check."""
    if case.kind == "memtouch":
        proc.wait_output(TICK_RE, 0, 60, "heartbeat on the destination")
        if b"memtouch: touching" in bytes(proc.out.buf):
            raise proc.failure("the guest booted again on the destination")
        proc.send(b"v")
        m = proc.wait_output(VERIFY_RE, 0, 60 + 60 * case.mem_mib / 1024, "memory check")
        if not m.group(1).startswith(b"verified"):
            raise proc.failure(f"memory check failed: {m.group(0).decode().strip()}")
        proc.send(b"q")
    else:
        last = max([int(n) for n in PASS_RE.findall(src_out)] or [0])
        pos = 0
        while True:
            m = proc.wait_output(PASS_RE, pos, 120, "the pass count going on")
            pos = m.end()
            if int(m.group(1)) > last:
                break
        if b"STALE" in bytes(proc.out.buf):
            raise proc.failure("a stale page after the migration")
        proc.send(b"q")
        m = proc.wait_output(DIRTY_END_RE, 0, 120, "migdirty's final check")
        if m.group(1) != b"verified":
            raise proc.failure(f"final check: {m.group(0).decode().strip()}")
    proc.finish(60, expect=1)


# ---- vmrun ----

def vmrun_once(a, case, scratch):
    sock = os.path.join(scratch, "vmrun-src.sock")
    if os.path.lexists(sock):
        os.unlink(sock)
    dst = Proc("vmrun (destination)", [a.vmrun, "--incoming", "tcp:127.0.0.1:0",
                                       "--console", "stdio"])
    src = None
    try:
        m = dst.err.wait_for(LISTEN_RE, 0, 60)
        if not m:
            raise dst.failure("no 'vmrun: migration: listening on' line")
        port = int(m.group(2))
        src = Proc("vmrun (source)", [a.vmrun, "--kernel", a.guests[case.guest],
                                      "--mem", f"{case.mem_mib}M", "--cmdline", case.cmdline,
                                      "--api-sock", sock, "--console", "stdio"])
        src.wait_output(re.compile(case.ready_re, re.M), 0, ready_timeout(case), "guest ready")
        argv = [a.vmrun, "ctl", "--timeout=0", sock, "migrate", f"uri=tcp:127.0.0.1:{port}"]
        t = now()
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
        wall = now() - t
        text = r.stdout.decode(errors="replace")
        stats = None
        for line in text.splitlines():
            if line.strip().startswith("{"):
                stats = json.loads(line)
        if r.returncode != 0 or not stats or stats.get("status") != "completed":
            raise src.failure(f"migrate failed (status {r.returncode}): {text} "
                              f"{r.stderr.decode(errors='replace')}")
        if src.finish(60) != 0:
            raise src.failure("the source did not exit 0 after the migration")
        check_destination(dst, case, bytes(src.out.buf))
        return {"wall_ms": wall * 1e3, "total_ms": stats.get("total_ms"),
                "downtime_ms": stats.get("downtime_ms"), "bytes": stats.get("bytes"),
                "rounds": stats.get("rounds"), "pages": stats.get("pages"),
                "zero_pages": stats.get("zero_pages"),
                "throttle_percent": stats.get("throttle_percent"),
                "bandwidth": stats.get("bandwidth"), "setup_ms": stats.get("setup_ms"),
                "dirty_rate": stats.get("dirty_rate"), "stats": stats}
    finally:
        dst.kill()
        if src:
            src.kill()


# ---- QEMU ----

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def qemu_argv(a, case, cpu, qmp_sock, extra=()):
    return [a.qemu, "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on",
            "-enable-kvm", "-cpu", cpu, "-m", str(case.mem_mib),
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", a.guests[case.guest], "-append", case.cmdline,
            "-qmp", f"unix:{qmp_sock},server=on,wait=off", *extra]


def qemu_source(a, case, scratch, state):
    """Start the source QEMU (with the -cpu fallback, see startup.py) and
    wait until the guest is ready."""
    sock = os.path.join(scratch, "qemu-src.qmp")
    for cpu in ([a.qemu_cpu] if a.qemu_cpu else [state.get("cpu", "host"), QEMU_CPU_FALLBACK]):
        if os.path.lexists(sock):
            os.unlink(sock)
        proc = Proc("qemu (source)", qemu_argv(a, case, cpu, sock))
        m = proc.out.wait_for(re.compile(case.ready_re, re.M), 0, ready_timeout(case))
        if m:
            state["cpu"] = cpu
            return proc, sock, cpu
        proc.kill()
        proc.finish(5)
        if "MSR 0x10a" not in proc.err.text() or cpu == QEMU_CPU_FALLBACK:
            raise proc.failure("guest not ready")
        state["note"] = (f"qemu: -cpu host cannot start on this KVM (MSR 0x10a): "
                         f"ran with -cpu {QEMU_CPU_FALLBACK}")
    raise RunFailed("qemu: no CPU model worked")


def qemu_once(a, case, scratch, state):
    src, src_sock, cpu = qemu_source(a, case, scratch, state)
    dst = None
    try:
        port = free_port()
        dst_sock = os.path.join(scratch, "qemu-dst.qmp")
        if os.path.lexists(dst_sock):
            os.unlink(dst_sock)
        dst = Proc("qemu (destination)", qemu_argv(a, case, cpu, dst_sock,
                                                   ("-incoming", f"tcp:127.0.0.1:{port}")))
        dq = Qmp(dst_sock, dst, timeout=30)
        qmp = Qmp(src_sock, src)
        caps = [{"capability": "events", "state": True},
                {"capability": "auto-converge", "state": True}]
        qmp.cmd("migrate-set-capabilities", capabilities=caps)
        params = {"max-bandwidth": QEMU_MAX_BANDWIDTH}
        if a.qemu_downtime_ms is not None:
            params["downtime-limit"] = a.qemu_downtime_ms
        qmp.cmd("migrate-set-parameters", **params)
        limit = qmp.cmd("query-migrate-parameters").get("downtime-limit")
        state["downtime_limit_ms"] = limit
        # The destination listens once QMP answers (-incoming is set up
        # before the monitor loop runs).
        dq.cmd("query-status")
        qmp.events.clear()
        t = now()
        qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        ev = qmp.wait_event(lambda e: e["event"] == "MIGRATION" and
                            e["data"]["status"] in ("completed", "failed", "cancelled"), 900)
        wall = now() - t
        if not ev or ev[1]["data"]["status"] != "completed":
            raise src.failure(f"QEMU migration did not complete: {ev}")
        # The MIGRATION event comes before QEMU has filled in its totals
        # (migration_calculate_complete() runs after the state change).
        deadline = now() + 10
        while True:
            info = qmp.cmd("query-migrate") or {}
            if info.get("total-time") or now() > deadline:
                break
            time.sleep(0.005)
        ram = info.get("ram", {})
        src_out = bytes(src.out.buf)
        qmp.cmd("quit")
        src.finish(30)
        check_destination(dst, case, src_out)
        return {"wall_ms": wall * 1e3, "total_ms": info.get("total-time"),
                "downtime_ms": info.get("downtime"), "bytes": ram.get("transferred"),
                "rounds": ram.get("dirty-sync-count"), "pages": ram.get("normal"),
                "zero_pages": ram.get("duplicate"),
                "throttle_percent": info.get("cpu-throttle-percentage", 0),
                "bandwidth": (ram.get("mbps") or 0) * 1e6 / 8, "setup_ms": info.get("setup-time"),
                "dirty_rate": ram.get("dirty-pages-rate", 0) * 4096}
    finally:
        src.kill()
        if dst:
            dst.kill()


# ---- report ----

def best(samples):
    ok = [s for s in samples if s.get("total_ms") is not None]
    return min(ok, key=lambda s: s["total_ms"]) if ok else None


def fmt(v, spec=".1f", width=9):
    return f"{v:{width}{spec}}" if v is not None else f"{'-':>{width}}"


def ratio(x, y):
    if x is None or not y:
        return None
    return x / y


def report(results, link, mem, a, notes, state, host):
    print(f"vmrun live migration over loopback: best of {a.runs} (by total time), "
          f"{'quick' if a.quick else 'full'} sizes")
    print(f"host: Linux {host['kernel']}, {host['cpu']}, {host['cpus']} CPUs"
          + (", no vmx/svm flag (nested KVM)" if host["no_vmx_svm_flag"] else ""))
    print(f"link: {link / MIB:.0f} MiB/s ({link * 8 / 1e9:.2f} Gbit/s) for "
          f"{a.link_mib} MiB over one loopback TCP connection")
    print(f"memory: {mem / MIB:.0f} MiB/s writing {a.link_mib} MiB into fresh anonymous memory "
          f"(what receiving pages costs the destination)")
    if state.get("downtime_limit_ms") is not None:
        print(f"qemu: downtime limit {state['downtime_limit_ms']} ms, auto-converge on, "
              f"max-bandwidth unlimited")
    print()
    print(f"{'case':<36} {'who':<6} {'total ms':>9} {'down ms':>8} {'MiB sent':>9} "
          f"{'rounds':>6} {'thrott%':>7} {'MiB/s':>7} {'ideal ms':>9} {'tot/ideal':>9} "
          f"{'floor ms':>9} {'tot/floor':>9}")
    summary = {}
    for c in results:
        ideal_ms = c.must_move / link * 1e3
        floor_ms = c.must_move / min(link, mem) * 1e3
        row = {"ideal_ms": ideal_ms, "floor_ms": floor_ms}
        for who, samples in (("vmrun", c.vmrun), ("qemu", c.qemu)):
            b = best(samples)
            row[who] = b
            if not b:
                print(f"{c.title:<36} {who:<6} {'(not run)':>9}")
                continue
            mib = b["bytes"] / MIB if b.get("bytes") is not None else None
            rate = (b["bytes"] / MIB) / (b["total_ms"] / 1e3) if b.get("bytes") and \
                b.get("total_ms") else None
            print(f"{c.title:<36} {who:<6} {fmt(b['total_ms'])} {fmt(b['downtime_ms'], width=8)} "
                  f"{fmt(mib)} {fmt(b.get('rounds'), 'd', 6)} "
                  f"{fmt(b.get('throttle_percent'), 'd', 7)} {fmt(rate, '.0f', 7)} "
                  f"{fmt(ideal_ms)} {fmt(ratio(b['total_ms'], ideal_ms), '.2f')} "
                  f"{fmt(floor_ms)} {fmt(ratio(b['total_ms'], floor_ms), '.2f')}")
        if a.runs > 1:
            for who, samples in (("vmrun", c.vmrun), ("qemu", c.qemu)):
                downs = sorted(x["downtime_ms"] for x in samples
                               if x.get("downtime_ms") is not None)
                if downs:
                    print(f"{'':<36} {who:<6} downtime over the runs: "
                          + ", ".join(f"{d:.1f}" for d in downs) + " ms")
        v, q = row["vmrun"], row["qemu"]
        if v and q:
            print(f"{'':<36} {'vmrun/qemu:':<12} "
                  f"total {fmt(ratio(v['total_ms'], q['total_ms']), '.2f', 5)}"
                  f"  downtime {fmt(ratio(v['downtime_ms'], q['downtime_ms']), '.2f', 5)}"
                  f"  bytes {fmt(ratio(v['bytes'], q['bytes']), '.2f', 5)}")
        summary[c.key] = row
    print()
    for c in results:
        v = summary[c.key]["vmrun"]
        if not v:
            continue
        r = ratio(v["total_ms"], summary[c.key]["ideal_ms"])
        print(f"target {c.key}: total <= {TOTAL_TARGET:.1f}x (must move / link): "
              f"{'met' if r is not None and r <= TOTAL_TARGET else 'MISSED'} ({r:.2f}x)")
        if c.downtime_target:
            d = v["downtime_ms"]
            print(f"target {c.key}: downtime <= {DOWNTIME_TARGET_MS:g} ms: "
                  f"{'met' if d is not None and d <= DOWNTIME_TARGET_MS else 'MISSED'} "
                  f"({fmt(d, '.1f', 0)} ms)")
        for n in c.notes:
            print(f"note {c.key}: {n}")
    for n in notes + [state.get("note")]:
        if n:
            print(n)
    if a.runs < 3:
        print(f"(only {a.runs} run(s) per case: noisy on a shared 2-core machine)")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmrun", required=True, help="the vmrun binary")
    ap.add_argument("--guests", required=True,
                    help="the directory of memtouch.elf and migdirty.elf (build/tests/guest)")
    ap.add_argument("--runs", type=int, default=1, help="migrations per case and VMM (default 1)")
    ap.add_argument("--cases", default="a,b,c", help="which of a, b, c (default all)")
    ap.add_argument("--quick", action="store_true",
                    help="small guests (64 MiB touched, 32 MiB dirtied), a 256 MiB link copy: "
                    "keeps the script working")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"),
                    help="QEMU binary (default: qemu-system-x86_64 from PATH)")
    ap.add_argument("--no-qemu", action="store_true", help="leave QEMU out")
    ap.add_argument("--no-vmrun", action="store_true", help="leave vmrun out")
    ap.add_argument("--qemu-cpu", help=f"QEMU -cpu (default host, or {QEMU_CPU_FALLBACK} "
                    "where host fails)")
    ap.add_argument("--qemu-downtime-ms", type=int,
                    help="QEMU's downtime-limit (default: QEMU's own, 300 ms)")
    ap.add_argument("--link-mib", type=int, help="MiB copied to measure the link "
                    "(default 1024, 256 with --quick)")
    ap.add_argument("--dir", default=None, help="scratch directory for sockets (default a "
                    "new one under /tmp)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    keys = [k.strip() for k in a.cases.split(",") if k.strip()]
    if not keys or any(k not in ("a", "b", "c") for k in keys):
        ap.error("--cases takes a comma-separated subset of a,b,c")
    if a.link_mib is None:
        a.link_mib = 256 if a.quick else 1024
    a.guests = {g: os.path.abspath(os.path.join(a.guests, g + ".elf"))
                for g in ("memtouch", "migdirty")}
    for g, path in a.guests.items():
        if not os.path.isfile(path):
            print(f"migrate.py: {path}: no such file (build the {g} guest)", file=sys.stderr)
            return 2
    if not os.access(a.vmrun, os.X_OK):
        print(f"migrate.py: --vmrun {a.vmrun}: not an executable", file=sys.stderr)
        return 2
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"SKIP: cannot open /dev/kvm ({e.strerror}): the benchmark needs KVM")
        return SKIP
    a.vmrun = os.path.abspath(a.vmrun)
    notes = []
    help_text = subprocess.run([a.vmrun, "--help"], capture_output=True, text=True).stdout
    vmrun_ok = not a.no_vmrun and "--incoming" in help_text
    if a.no_vmrun:
        notes.append("vmrun: left out (--no-vmrun)")
    elif not vmrun_ok:
        notes.append("vmrun: no --incoming in --help (live migration not built): vmrun left out")
    if a.no_qemu:
        a.qemu = None
        notes.append("qemu: left out (--no-qemu)")
    elif not a.qemu or not os.access(a.qemu, os.X_OK):
        a.qemu = None
        notes.append("qemu: not installed (apt-get install qemu-system-x86): left out")

    import tempfile
    scratch = tempfile.mkdtemp(prefix="vmrun-bench-migrate-", dir=a.dir)
    results = [c for c in cases(a.quick) if c.key in keys]
    state = {}
    failed = None
    link = None
    mem = None
    try:
        link = link_throughput(a.link_mib * MIB)
        mem = fresh_memory_rate(a.link_mib * MIB)
        for c in results:
            for _ in range(a.runs):
                if vmrun_ok:
                    c.vmrun.append(vmrun_once(a, c, scratch))
                if a.qemu:
                    c.qemu.append(qemu_once(a, c, scratch, state))
        # The link again at the end: the figure both ran against.
        link2 = link_throughput(a.link_mib * MIB)
        if abs(link2 - link) / link > 0.2:
            notes.append(f"link: {link / MIB:.0f} MiB/s before, {link2 / MIB:.0f} MiB/s after "
                         "the migrations: a noisy host")
        link = max(link, link2)
        mem = max(mem, fresh_memory_rate(a.link_mib * MIB))
    except RunFailed as e:
        failed = e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    host = host_description()
    summary = report(results, link, mem, a, notes, state, host) if link and mem else {}
    if a.json:
        doc = {"host": host, "runs": a.runs, "quick": a.quick, "link_bytes_per_s": link,
               "fresh_memory_bytes_per_s": mem,
               "qemu_cpu": state.get("cpu"),
               "qemu_downtime_limit_ms": state.get("downtime_limit_ms"),
               "targets": {"total_ratio_max": TOTAL_TARGET, "downtime_ms_max": DOWNTIME_TARGET_MS},
               "notes": [n for n in notes + [state.get("note")] if n],
               "failure": str(failed) if failed else None,
               "cases": [{"case": c.key, "title": c.title, "cmdline": c.cmdline,
                          "mem_mib": c.mem_mib, "must_move_bytes": c.must_move,
                          "vmrun": c.vmrun, "qemu": c.qemu,
                          "best": summary.get(c.key)} for c in results]}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    if failed:
        print(f"\nFAIL: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
