#!/usr/bin/env python3
"""vmrun snapshot benchmark: whole-VM save and restore of a guest with
256 MiB, 1 GiB and 4 GiB of touched memory, against a plain sequential
write of the same bytes (the floor) and QEMU's migration to a file.

The guest is tests/guest/memtouch.elf: it fills M MiB of its RAM with a
checkable pattern at CPL 3, prints "memtouch: touched", then prints a
heartbeat ("tick N") and, on a 'v' from its serial port, checks every byte.

  floor          write() the same M MiB to a new file on the same filesystem
                 in 16 MiB calls, then fdatasync()
  vmrun save     vmrun --kernel memtouch.elf --mem M+64M --api-sock S;
                 "pause", then "save" {"path": DIR} timed to its reply,
                 then an fdatasync() of every file the save left
  vmrun restore  vmrun --restore DIR --api-sock S2: from process start to
                 query-status saying "running" (and vmrun's own "restored
                 in X ms" line when it prints one), and to the guest's first
                 serial output
  QEMU save      the same guest under QEMU microvm; "stop", then "migrate"
                 to "exec:cat > FILE" timed to the MIGRATION event
                 "completed", then an fdatasync() of FILE
  QEMU restore   the same QEMU command with -incoming "exec:cat FILE": from
                 process start to "running" (QMP), and to the first output

Saves run --runs times on one VM (alternating with the floor), restores
--runs times from the last snapshot; the best of each counts.  After the
first restore of each snapshot the guest checks all its memory (unless
--no-verify), and its heartbeat must continue exactly where it stopped.

Exit status: 0 when every run worked, whatever the timings (a vmrun without
save/restore is reported and left out); 1 when a run failed; 2 on a usage
error; 77 when /dev/kvm cannot be opened.  See bench/README.md.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

from startup import host_description  # bench/startup.py: one description of the host

SKIP = 77
MIB = 1 << 20
GUEST_EXTRA_MIB = 64            # guest RAM beyond the touched memory
SAVE_TARGET = 1.2               # vmrun save <= 1.2x the floor (durable, best)
RESTORE_TARGET_MS = 5.0         # vmrun restore to running (reported only)
FLOOR_BUF = 16 * MIB
QEMU_CPU_FALLBACK = "host,-arch-capabilities"   # see startup.py
QEMU_MAX_BANDWIDTH = 1 << 40    # bytes/s: no migration throttling
# vmrun's own figure: "vmrun: restored from DIR: vCPUs running X ms after
# start" (measured from main()); also takes "restored in X ms".
RESTORED_RE = re.compile(rb"restored\b[^\n]*?\b([0-9]+(?:\.[0-9]+)?) ?ms")
TICK_RE = re.compile(rb"tick ([0-9]+)\n")
VERIFY_RE = re.compile(rb"memtouch: (verified [0-9]+ MiB|FAIL[^\n]*)\n")


class RunFailed(Exception):
    pass


class Unsupported(Exception):
    pass


def now():
    return time.monotonic()


# ---- child processes with timestamped output ----

class Stream:
    """Reads a pipe on a thread: everything it said, and when the first
    byte came."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.buf = bytearray()
        self.first_t = None
        self.eof = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:
                data = b""
            t = now()
            with self.cond:
                if not data:
                    self.eof = True
                    self.cond.notify_all()
                    return
                if self.first_t is None:
                    self.first_t = t
                self.buf += data
                self.cond.notify_all()

    def size(self):
        with self.cond:
            return len(self.buf)

    def wait_first(self, timeout):
        deadline = now() + timeout
        with self.cond:
            while self.first_t is None and not self.eof and now() < deadline:
                self.cond.wait(deadline - now())
            return self.first_t

    def wait_for(self, regex, start, timeout):
        """The first match of @regex at or after offset @start, or None at
        EOF or after @timeout seconds."""
        deadline = now() + timeout
        pos = start
        with self.cond:
            while True:
                m = regex.search(self.buf, pos)
                if m:
                    return m
                pos = max(start, len(self.buf) - 256)
                if self.eof or now() >= deadline:
                    return None
                self.cond.wait(min(1.0, deadline - now()))

    def settle(self, quiet=0.05, limit=2.0):
        """Wait until nothing new came for @quiet seconds (output still in
        the pipe after the producer stopped)."""
        end = now() + limit
        n = self.size()
        while now() < end:
            time.sleep(quiet)
            m = self.size()
            if m == n:
                return
            n = m

    def text(self, tail=2000):
        with self.cond:
            return bytes(self.buf[-tail:]).decode(errors="replace")


class Proc:
    def __init__(self, name, argv):
        self.name = name
        self.argv = argv
        self.t0 = now()
        self.t0_real = time.time()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.out = Stream(self.p.stdout)
        self.err = Stream(self.p.stderr)

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def failure(self, why):
        return RunFailed(f"{self.name}: {why}\n  command: {shlex.join(self.argv)}\n"
                         f"  exit status: {self.p.poll()}\n"
                         f"  stdout (end): {self.out.text(600)!r}\n"
                         f"  stderr (end): {self.err.text(2000)!r}")

    def wait_output(self, regex, start, timeout, what):
        m = self.out.wait_for(regex, start, timeout)
        if not m:
            raise self.failure(f"no {what} within {timeout:.0f} s")
        return m

    def finish(self, timeout=30, expect=None):
        """Wait for the exit (killing it after @timeout); checks the status
        against @expect when given."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise self.failure(f"did not exit within {timeout} s of quit: killed")
        self.out.thread.join(5)
        self.err.thread.join(5)
        if expect is not None and rc != expect:
            raise self.failure(f"exit status {rc}, expected {expect}")
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        try:
            self.p.stdin.close()
        except OSError:
            pass


# ---- control sockets ----

class JsonLines:
    """One JSON object per line over a unix socket."""

    def __init__(self, path, proc, timeout):
        deadline = now() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if proc.p.poll() is not None:
                    raise proc.failure(f"exited before its socket {path} answered")
                if now() >= deadline:
                    raise proc.failure(f"socket {path} not answering after {timeout} s")
                time.sleep(0.0005)
        self.sock = s
        self.proc = proc
        self.rbuf = b""
        self.events = []   # (monotonic time received, object)

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        while b"\n" not in self.rbuf:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                raise self.proc.failure(f"no answer on the control socket in {timeout} s")
            if not data:
                raise self.proc.failure("control socket closed")
            self.rbuf += data
        line, self.rbuf = self.rbuf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.sock.close()


class VmrunCtl(JsonLines):
    """vmrun's control protocol (what `vmrun ctl` speaks)."""

    def __init__(self, path, proc, timeout=10):
        super().__init__(path, proc, timeout)
        self.next_id = 1

    def cmd(self, name, timeout=600, **args):
        rid = self.next_id
        self.next_id += 1
        self.send({"id": rid, "cmd": name, "args": args})
        while True:
            msg = self.recv(timeout)
            if "greeting" in msg:  # the first line on connect
                continue
            if "event" in msg:
                self.events.append((now(), msg))
            elif msg.get("id") == rid:
                return msg


class Qmp(JsonLines):
    def __init__(self, path, proc, timeout=10):
        super().__init__(path, proc, timeout)
        self.next_id = 1
        greeting = self.recv(timeout)
        if "QMP" not in greeting:
            raise proc.failure(f"not a QMP greeting: {greeting}")
        self.cmd("qmp_capabilities")

    def _take(self, msg):
        if "event" in msg:
            self.events.append((now(), msg))
            return True
        return False

    def cmd(self, name, timeout=600, **args):
        rid = self.next_id
        self.next_id += 1
        req = {"execute": name, "id": rid}
        if args:
            req["arguments"] = args
        self.send(req)
        while True:
            msg = self.recv(timeout)
            if not self._take(msg) and msg.get("id") == rid:
                if "error" in msg:
                    raise self.proc.failure(f"QMP {name}: {msg['error']}")
                return msg.get("return")

    def wait_event(self, pred, timeout):
        """The first stored or new event for which @pred is true:
        (monotonic time received, event)."""
        deadline = now() + timeout
        while True:
            for i, (t, ev) in enumerate(self.events):
                if pred(ev):
                    del self.events[i]
                    return t, ev
            left = deadline - now()
            if left <= 0:
                return None
            try:
                self._take(self.recv(left))
            except RunFailed:
                if now() >= deadline:
                    return None
                raise


# ---- files ----

def fsync_path(path):
    """fdatasync() every file under @path; returns the seconds it took."""
    t = now()
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    return now() - t


def disk_usage(path):
    """(allocated bytes, apparent bytes) of @path, a file or a tree."""
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    alloc = apparent = 0
    for p in paths:
        st = os.stat(p)
        alloc += st.st_blocks * 512
        apparent += st.st_size
    return alloc, apparent


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def settle_io():
    """Right before each timed write: flush what earlier steps left (dirty
    pages, the discards of deleted files) so that it does not land in the
    measurement.  No pause after it: see save_rounds()."""
    os.sync()


_floor_buf = None


def floor_write(path, nbytes):
    """The floor: write @nbytes to a new file in 16 MiB write() calls, then
    fdatasync().  Returns (write seconds, fdatasync seconds)."""
    global _floor_buf
    if _floor_buf is None:
        _floor_buf = memoryview(bytes(range(1, 256)) * (FLOOR_BUF // 255 + 1))[:FLOOR_BUF]
    remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        t0 = now()
        left = nbytes
        while left:
            left -= os.write(fd, _floor_buf[:min(left, FLOOR_BUF)])
        t1 = now()
        os.fdatasync(fd)
        t2 = now()
    finally:
        os.close(fd)
        os.unlink(path)
    return t1 - t0, t2 - t1


# ---- the runs ----

def touch_timeout(mib):
    # About 8 s per GiB on the development machines (host page faults).
    return 60 + 30 * mib / 1024


def guest_cmdline(mib):
    return f"touch={mib}"


def check_continuity(before, after, who):
    """@before: the source's output up to the pause; @after: the restored
    guest's output.  The heartbeat must go on from the next number, with
    the interrupted line (if any) completed, and nothing from a new boot."""
    nl = before.rfind(b"\n")
    partial = before[nl + 1:]
    ticks = TICK_RE.findall(before[:nl + 1])
    if not ticks:
        raise RunFailed(f"{who}: no heartbeat before the save")
    expect = b"tick %d\n" % (int(ticks[-1]) + 1)
    got = partial + after[:len(expect) - len(partial)] if len(partial) < len(expect) else partial
    if got != expect:
        raise RunFailed(f"{who}: the restored guest did not continue its heartbeat: "
                        f"last line before the save {b'tick ' + ticks[-1]!r}, "
                        f"then {partial!r} + {after[:40]!r}")
    if b"memtouch: touching" in after:
        raise RunFailed(f"{who}: the guest booted again after the restore")


def verify_guest(proc, start, mib, who):
    """Ask the guest to check its memory ('v') and wait for the verdict."""
    proc.send(b"v")
    m = proc.wait_output(VERIFY_RE, start, 60 + 60 * mib / 1024, "memory check verdict")
    if not m.group(1).startswith(b"verified"):
        raise proc.failure(f"{who}: guest memory check failed: {m.group(0).decode().strip()}")


class SizeResult:
    def __init__(self, mib):
        self.mib = mib
        self.floor = []          # {"write_ms", "sync_ms", "total_ms"}
        self.vmrun_save = []     # {"save_ms", "sync_ms", "total_ms", "reply", "alloc", ...}
        self.vmrun_restore = []  # {"running_ms", "own_ms", "first_output_ms", "verified"}
        self.qemu_save = []
        self.qemu_restore = []
        self.notes = []


def run_floor(res, path):
    settle_io()
    w, s = floor_write(path, res.mib * MIB)
    res.floor.append({"write_ms": w * 1e3, "sync_ms": s * 1e3, "total_ms": (w + s) * 1e3})


def save_rounds(a, res, scratch, save_one):
    """--runs rounds of floor, then save_one(i) (which returns the path it
    wrote); returns the last save's path, the others are deleted.

    Every timed write starts right after a file of the same size was
    deleted: the floor after the previous save's (or, first, after an
    untimed floor write), the save after the floor's.  On a host that is
    itself a VM with a balloon, memory freed for a few seconds is handed
    back to the hypervisor, and the page cache then pays a host fault per
    page (3x slower here); this way both writers find the memory the
    deleted file freed an instant before, as on a host of its own."""
    floor_path = os.path.join(scratch, "floor.bin")
    floor_write(floor_path, res.mib * MIB)
    last = None
    for i in range(a.runs):
        if last:
            remove(last)
        run_floor(res, floor_path)
        last = save_one(i)
    return last


def vmrun_save(a, res, scratch):
    """Boot, touch, pause, save --runs times; returns the last snapshot's
    directory and the source's output up to the pause."""
    sock = os.path.join(scratch, "vmrun.sock")
    remove(sock)
    mem = res.mib + GUEST_EXTRA_MIB
    proc = Proc("vmrun (save)", [a.vmrun, "--kernel", a.guest, "--mem", f"{mem}M",
                                 "--cmdline", guest_cmdline(res.mib), "--api-sock", sock,
                                 "--console", "stdio"])
    last = None
    try:
        m = proc.wait_output(re.compile(rb"memtouch: touched"), 0, touch_timeout(res.mib),
                             "'memtouch: touched'")
        proc.wait_output(TICK_RE, m.end(), 30, "heartbeat")
        ctl = VmrunCtl(sock, proc)
        r = ctl.cmd("pause")
        if not r.get("ok"):
            raise proc.failure(f"pause: {r.get('error')}")
        proc.out.settle()
        before = bytes(proc.out.buf)

        def save_one(i):
            nonlocal last
            d = last = os.path.join(scratch, f"vmrun-snap-{i}")
            remove(d)
            settle_io()
            t = now()
            r = ctl.cmd("save", path=d)
            save_s = now() - t
            if not r.get("ok"):
                err = str(r.get("error"))
                if "unknown command" in err:
                    raise Unsupported(f"vmrun answers save with: {err}")
                raise proc.failure(f"save: {err}")
            sync_s = fsync_path(d)
            alloc, apparent = disk_usage(d)
            res.vmrun_save.append({"save_ms": save_s * 1e3, "sync_ms": sync_s * 1e3,
                                   "total_ms": (save_s + sync_s) * 1e3,
                                   "alloc_bytes": alloc, "apparent_bytes": apparent,
                                   "reply": r.get("result")})
            return d

        last = save_rounds(a, res, scratch, save_one)
        r = ctl.cmd("quit")
        ctl.close()
        proc.finish(expect=0)
        return last, before
    except BaseException:
        proc.kill()
        if last:
            remove(last)
        raise


def vmrun_restore(a, res, snap, before, verify):
    sock = os.path.join(os.path.dirname(snap), "vmrun-restored.sock")
    remove(sock)
    proc = Proc("vmrun (restore)", [a.vmrun, "--restore", snap, "--api-sock", sock,
                                    "--console", "stdio"])
    try:
        ctl = VmrunCtl(sock, proc, timeout=60 + res.mib / 64)
        running_t = None
        deadline = now() + 60
        while now() < deadline:
            r = ctl.cmd("query-status", timeout=30)
            t = now()
            status = (r.get("result") or {}).get("status") if r.get("ok") else None
            if status == "running":
                running_t = t
                break
            if status not in ("paused", "restoring", "starting", "loading", None):
                raise proc.failure(f"query-status says {status!r} after the restore")
            time.sleep(0.0005)
        if running_t is None:
            raise proc.failure("not running 60 s after the restore")
        first = proc.out.wait_first(30)
        if first is None:
            raise proc.failure("no guest output within 30 s of the restore")
        start = 0
        # vmrun's own figure, printed around the time the vCPUs start.
        m = proc.err.wait_for(RESTORED_RE, 0, 0.5)
        own = float(m.group(1)) if m else None
        proc.wait_output(TICK_RE, start, 30, "heartbeat after the restore")
        check_continuity(before, bytes(proc.out.buf), "vmrun")
        if verify:
            verify_guest(proc, start, res.mib, "vmrun")
        r = ctl.cmd("quit")
        ctl.close()
        proc.finish(expect=0)
        res.vmrun_restore.append({"running_ms": (running_t - proc.t0) * 1e3,
                                  "own_ms": own,
                                  "first_output_ms": (first - proc.t0) * 1e3,
                                  "verified": verify})
    except BaseException:
        proc.kill()
        raise


def qemu_argv(a, mib, cpu, qmp_sock, extra=(), wait=False):
    return [a.qemu, "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on",
            "-enable-kvm", "-cpu", cpu, "-m", str(mib + GUEST_EXTRA_MIB),
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", a.guest, "-append", guest_cmdline(mib),
            "-qmp", f"unix:{qmp_sock},server=on,wait={'on' if wait else 'off'}", *extra]


def qemu_save(a, res, scratch, state):
    """Boot under QEMU, touch, stop, migrate to a file --runs times."""
    sock = os.path.join(scratch, "qemu.qmp")
    # Without the global state the destination starts the guest at once
    # after loading, as vmrun --restore does (with it, a source stopped
    # before the migration leaves the destination paused).
    extra = ("-global", "migration.store-global-state=off")
    proc = None
    for cpu in ([a.qemu_cpu] if a.qemu_cpu else [state.get("cpu", "host"), QEMU_CPU_FALLBACK]):
        remove(sock)
        proc = Proc("qemu (save)", qemu_argv(a, res.mib, cpu, sock, extra))
        m = proc.out.wait_for(re.compile(rb"memtouch: touched"), 0, touch_timeout(res.mib))
        if m:
            state["cpu"] = cpu
            proc.wait_output(TICK_RE, m.end(), 30, "heartbeat")
            break
        proc.kill()
        proc.finish(5)
        if "MSR 0x10a" not in proc.err.text() or cpu == QEMU_CPU_FALLBACK:
            raise proc.failure("no 'memtouch: touched'")
        state["note"] = (f"qemu: -cpu host cannot start on this KVM (MSR 0x10a): "
                         f"ran with -cpu {QEMU_CPU_FALLBACK}")
    last = None
    try:
        qmp = Qmp(sock, proc)
        qmp.cmd("migrate-set-capabilities",
                capabilities=[{"capability": "events", "state": True}])
        qmp.cmd("migrate-set-parameters", **{"max-bandwidth": QEMU_MAX_BANDWIDTH})
        before = None

        def save_one(i):
            nonlocal last, before
            if i:
                # QEMU migrates a VM once: a stopped source stays
                # "postmigrate".  Let the guest run again briefly.
                qmp.cmd("cont")
                proc.wait_output(TICK_RE, proc.out.size(), 30, "heartbeat after cont")
            qmp.cmd("stop")
            proc.out.settle()
            before = bytes(proc.out.buf)
            f = last = os.path.join(scratch, f"qemu-state-{i}")
            remove(f)
            settle_io()
            qmp.events.clear()
            t = now()
            qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(f)}")
            ev = qmp.wait_event(lambda e: e["event"] == "MIGRATION" and
                                e["data"]["status"] in ("completed", "failed", "cancelled"),
                                600)
            save_s = now() - t
            if not ev or ev[1]["data"]["status"] != "completed":
                raise proc.failure(f"migration did not complete: {ev}")
            info = qmp.cmd("query-migrate")
            sync_s = fsync_path(f)
            alloc, apparent = disk_usage(f)
            ram = info.get("ram", {}) if info else {}
            res.qemu_save.append({"save_ms": save_s * 1e3, "sync_ms": sync_s * 1e3,
                                  "total_ms": (save_s + sync_s) * 1e3,
                                  "alloc_bytes": alloc, "apparent_bytes": apparent,
                                  "qemu_total_time_ms": info.get("total-time") if info else None,
                                  "qemu_ram_transferred": ram.get("transferred")})
            return f

        last = save_rounds(a, res, scratch, save_one)
        qmp.cmd("quit")
        qmp.close()
        proc.finish()
        return last, before
    except BaseException:
        proc.kill()
        if last:
            remove(last)
        raise


def qemu_restore(a, res, state_file, before, state, verify):
    sock = os.path.join(os.path.dirname(state_file), "qemu-restored.qmp")
    remove(sock)
    cpu = state.get("cpu", "host")
    # wait=on: QEMU waits for this script's QMP connection before it sets
    # up the machine, so the RESUME event (which carries QEMU's own
    # timestamp) is not missed; polling query-status is the fallback.
    proc = Proc("qemu (restore)", qemu_argv(a, res.mib, cpu, sock,
                                            ("-incoming", f"exec:cat {shlex.quote(state_file)}"),
                                            wait=True))
    try:
        qmp = Qmp(sock, proc, timeout=30)
        running_t = None
        how = None
        deadline = now() + 120 + res.mib / 64
        while now() < deadline:
            ev = [e for _, e in qmp.events if e["event"] == "RESUME"]
            if ev:
                ts = ev[0]["timestamp"]
                running_t = proc.t0 + (ts["seconds"] + ts["microseconds"] / 1e6 - proc.t0_real)
                how = "RESUME event"
                break
            if running_t is not None:
                break
            st = qmp.cmd("query-status", timeout=60)
            if st["status"] == "running":
                running_t = now()
                how = "query-status"
                # The event may be in the same read: prefer its timestamp.
                continue
            if st["status"] in ("paused", "postmigrate"):
                raise proc.failure(f"QEMU stays {st['status']} after the incoming migration")
            time.sleep(0.0005)
        if running_t is None:
            raise proc.failure("not running after the incoming migration")
        first = proc.out.wait_first(30)
        if first is None:
            raise proc.failure("no guest output within 30 s of the restore")
        proc.wait_output(TICK_RE, 0, 30, "heartbeat after the restore")
        check_continuity(before, bytes(proc.out.buf), "qemu")
        if verify:
            verify_guest(proc, 0, res.mib, "qemu")
        qmp.cmd("quit")
        qmp.close()
        proc.finish()
        res.qemu_restore.append({"running_ms": (running_t - proc.t0) * 1e3,
                                 "running_from": how,
                                 "first_output_ms": (first - proc.t0) * 1e3,
                                 "verified": verify})
    except BaseException:
        proc.kill()
        raise


# ---- report ----

def best(samples, key):
    vals = [s[key] for s in samples if s.get(key) is not None]
    return min(vals) if vals else None


def fmt_ms(v, width=9):
    return f"{v:{width}.1f}" if v is not None else f"{'-':>{width}}"


def fmt_ratio(num, den):
    if num is None or not den:
        return "-"
    r = num / den
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def size_name(mib):
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def report(results, a, vmrun_note, qemu_note, state, host):
    print(f"vmrun snapshot: memtouch guest, touched memory + {GUEST_EXTRA_MIB} MiB of RAM, "
          f"best of {a.runs}, files in {a.dir}")
    print(f"host: Linux {host['kernel']}, {host['cpu']}, {host['cpus']} CPUs"
          + (", no vmx/svm flag (nested KVM)" if host["no_vmx_svm_flag"] else ""))
    print()
    print("save: ms to write M MiB of touched memory (durable = the time until "
          "the reply + an fdatasync of the files after it)")
    print(f"{'size':<8} {'floor':>9} {'(write':>9} {'+sync)':>8} {'vmrun':>9} {'(reply':>9} "
          f"{'+sync)':>8} {'qemu':>9} {'(reply':>9} {'+sync)':>8} {'vmrun/':>7} {'qemu/':>7} "
          f"{'vmrun/':>7}")
    print(f"{'':<8} {'durable':>9} {'':>9} {'':>8} {'durable':>9} {'':>9} {'':>8} "
          f"{'durable':>9} {'':>9} {'':>8} {'floor':>7} {'floor':>7} {'qemu':>7}")
    summary = {}
    for r in results:
        fl = min(r.floor, key=lambda s: s["total_ms"]) if r.floor else None
        vs = min(r.vmrun_save, key=lambda s: s["total_ms"]) if r.vmrun_save else None
        qs = min(r.qemu_save, key=lambda s: s["total_ms"]) if r.qemu_save else None
        g = lambda s, k: s[k] if s else None
        print(f"{size_name(r.mib):<8} {fmt_ms(g(fl, 'total_ms'))} {fmt_ms(g(fl, 'write_ms'))} "
              f"{fmt_ms(g(fl, 'sync_ms'), 8)} {fmt_ms(g(vs, 'total_ms'))} "
              f"{fmt_ms(g(vs, 'save_ms'))} {fmt_ms(g(vs, 'sync_ms'), 8)} "
              f"{fmt_ms(g(qs, 'total_ms'))} {fmt_ms(g(qs, 'save_ms'))} "
              f"{fmt_ms(g(qs, 'sync_ms'), 8)} "
              f"{fmt_ratio(g(vs, 'total_ms'), g(fl, 'total_ms')):>7} "
              f"{fmt_ratio(g(qs, 'total_ms'), g(fl, 'total_ms')):>7} "
              f"{fmt_ratio(g(vs, 'total_ms'), g(qs, 'total_ms')):>7}")
        summary[r.mib] = {"floor": fl, "vmrun_save": vs, "qemu_save": qs}
    for r in results:
        vs = summary[r.mib]["vmrun_save"]
        if vs and vs.get("reply"):
            rep = vs["reply"]
            print(f"  vmrun {size_name(r.mib)}: reply bytes {rep.get('bytes')}, memory_bytes "
                  f"{rep.get('memory_bytes')}, paused_ms {rep.get('paused_ms')}; on disk "
                  f"{vs['alloc_bytes'] / MIB:.1f} MiB allocated, "
                  f"{vs['apparent_bytes'] / MIB:.1f} MiB apparent")
        qs = summary[r.mib]["qemu_save"]
        if qs:
            print(f"  qemu  {size_name(r.mib)}: migration stream {qs['apparent_bytes'] / MIB:.1f} MiB")
    print()
    print("restore: ms from process start (fork+exec) to the vCPUs running, and to the "
          "guest's first serial output")
    print(f"{'size':<8} {'vmrun':>9} {'(own':>9} {'vmrun':>9} {'qemu':>9} {'qemu':>9} "
          f"{'vmrun/':>7} {'vmrun/':>7}")
    print(f"{'':<8} {'running':>9} {'figure)':>9} {'output':>9} {'running':>9} "
          f"{'output':>9} {'qemu':>7} {'qemu out':>7}")
    for r in results:
        vr, vo = best(r.vmrun_restore, "running_ms"), best(r.vmrun_restore, "first_output_ms")
        own = best(r.vmrun_restore, "own_ms")
        qr, qo = best(r.qemu_restore, "running_ms"), best(r.qemu_restore, "first_output_ms")
        print(f"{size_name(r.mib):<8} {fmt_ms(vr)} {fmt_ms(own)} {fmt_ms(vo)} {fmt_ms(qr)} "
              f"{fmt_ms(qo)} {fmt_ratio(vr, qr):>7} {fmt_ratio(vo, qo):>7}")
        summary[r.mib].update({"vmrun_restore_running_ms": vr, "vmrun_restore_own_ms": own,
                               "vmrun_restore_first_output_ms": vo,
                               "qemu_restore_running_ms": qr,
                               "qemu_restore_first_output_ms": qo})
    print()
    for r in results:
        s = summary[r.mib]
        if s["vmrun_save"] and s["floor"]:
            ratio = s["vmrun_save"]["total_ms"] / s["floor"]["total_ms"]
            s["save_ratio"] = ratio
            print(f"target {size_name(r.mib)}: save <= {SAVE_TARGET:.1f}x floor: "
                  f"{'met' if ratio <= SAVE_TARGET else 'MISSED'} ({ratio:.2f}x)")
        rt = s["vmrun_restore_own_ms"] if s["vmrun_restore_own_ms"] is not None \
            else s["vmrun_restore_running_ms"]
        if rt is not None:
            print(f"target {size_name(r.mib)}: restore <= {RESTORE_TARGET_MS:g} ms: "
                  f"{'met' if rt <= RESTORE_TARGET_MS else 'MISSED'} ({rt:.1f} ms, "
                  f"{'vmrun' if s['vmrun_restore_own_ms'] is not None else 'socket'} figure)")
        for n in r.notes:
            print(f"note {size_name(r.mib)}: {n}")
    for n in (vmrun_note, qemu_note, state.get("note")):
        if n:
            print(n)
    if a.runs < 3:
        print(f"(only {a.runs} run(s): a smoke test, not a measurement)")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmrun", required=True, help="the vmrun binary")
    ap.add_argument("--guest", required=True, help="tests/guest/memtouch.elf")
    ap.add_argument("--sizes", default="256,1024,4096",
                    help="touched memory per point, MiB, comma-separated (default 256,1024,4096)")
    ap.add_argument("--runs", type=int, default=3, help="saves and restores per point (default 3)")
    ap.add_argument("--dir", default="/var/tmp/vmrun-bench-snapshot",
                    help="scratch directory for snapshots and floor files (removed at the end; "
                    "default /var/tmp/vmrun-bench-snapshot)")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"),
                    help="QEMU binary (default: qemu-system-x86_64 from PATH)")
    ap.add_argument("--no-qemu", action="store_true", help="leave QEMU out")
    ap.add_argument("--qemu-cpu", help=f"QEMU -cpu (default host, or {QEMU_CPU_FALLBACK} "
                    "where host fails)")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the guest's memory check after the first restore")
    ap.add_argument("--smoke", action="store_true",
                    help="one 32 MiB point, one run each, memory checked: keeps the script working")
    ap.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    a = ap.parse_args()
    if a.smoke:
        a.sizes, a.runs = "32", 1
    try:
        sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error("--sizes takes MiB numbers, e.g. 256,1024")
    if not sizes or any(s < 1 or s > 60 * 1024 for s in sizes) or a.runs < 1:
        ap.error("--sizes must be 1 to 61440 MiB each, --runs at least 1")
    if not os.access(a.vmrun, os.X_OK):
        print(f"snapshot.py: --vmrun {a.vmrun}: not an executable", file=sys.stderr)
        return 2
    if not os.path.isfile(a.guest):
        print(f"snapshot.py: --guest {a.guest}: no such file", file=sys.stderr)
        return 2
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"SKIP: cannot open /dev/kvm ({e.strerror}): the benchmark needs KVM")
        return SKIP
    a.vmrun = os.path.abspath(a.vmrun)
    a.guest = os.path.abspath(a.guest)

    help_text = subprocess.run([a.vmrun, "--help"], capture_output=True, text=True).stdout
    vmrun_ok = "--restore" in help_text
    vmrun_note = None if vmrun_ok else \
        "vmrun: save/restore not supported by this build (no --restore in --help): vmrun left out"
    qemu_note = None
    if a.no_qemu:
        qemu_note = "qemu: left out (--no-qemu)"
    elif not a.qemu or not os.access(a.qemu, os.X_OK):
        qemu_note = "qemu: not installed (apt-get install qemu-system-x86): left out"
        a.qemu = None
    if a.no_qemu:
        a.qemu = None

    os.makedirs(a.dir, exist_ok=True)
    scratch = os.path.join(a.dir, f"run-{os.getpid()}")
    os.makedirs(scratch)
    results = []
    qstate = {}
    failed = None
    try:
        for mib in sizes:
            res = SizeResult(mib)
            results.append(res)
            st = os.statvfs(scratch)
            free_mib = st.f_bavail * st.f_frsize // MIB
            need_disk = 2 * mib + 512
            need_mem = mib + GUEST_EXTRA_MIB + 1024
            avail = mem_available_mib()
            if free_mib < need_disk or avail < need_mem:
                res.notes.append(f"skipped: needs {need_disk} MiB free in {a.dir} (has {free_mib}) "
                                 f"and {need_mem} MiB of available memory (has {avail}); "
                                 "pick smaller --sizes or another --dir")
                continue
            if vmrun_ok:
                try:
                    snap, before = vmrun_save(a, res, scratch)
                    for i in range(a.runs):
                        vmrun_restore(a, res, snap, before, i == 0 and not a.no_verify)
                    remove(snap)
                except Unsupported as e:
                    vmrun_ok = False
                    vmrun_note = f"vmrun: save/restore not supported yet ({e}): vmrun left out"
            if a.qemu:
                f, before = qemu_save(a, res, scratch, qstate)
                for i in range(a.runs):
                    qemu_restore(a, res, f, before, qstate, i == 0 and not a.no_verify)
                remove(f)
            if not res.floor:
                save_rounds(a, res, scratch, lambda i: None)
    except RunFailed as e:
        failed = e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    host = host_description()
    summary = report(results, a, vmrun_note, qemu_note, qstate, host)
    if a.json:
        doc = {"host": host, "runs": a.runs, "guest": a.guest, "dir": a.dir,
               "guest_extra_mib": GUEST_EXTRA_MIB,
               "targets": {"save_ratio_max": SAVE_TARGET, "restore_ms_max": RESTORE_TARGET_MS},
               "notes": [n for n in (vmrun_note, qemu_note, qstate.get("note")) if n],
               "qemu_cpu": qstate.get("cpu"),
               "failure": str(failed) if failed else None,
               "points": [{"mib": r.mib, "floor": r.floor, "vmrun_save": r.vmrun_save,
                           "vmrun_restore": r.vmrun_restore, "qemu_save": r.qemu_save,
                           "qemu_restore": r.qemu_restore, "notes": r.notes,
                           "best": summary.get(r.mib)} for r in results]}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    if failed:
        print(f"\nFAIL: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
