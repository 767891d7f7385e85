#!/usr/bin/env python3
"""Whole-VM snapshot/restore tests: the snapcount and smptimer test guests
(tests/guest/README.md) saved through the control socket (`save path=DIR`)
and brought back with `vmrun --restore DIR` (docs/dev/snapshot-interface.md).

Usage: snapshot_tests.py --vmrun PATH --guests DIR TEST [TEST...]
       snapshot_tests.py --list

Each TEST is one function below (one ctest test, labels "guest" and
"snapshot").  Exit 0 when all pass, 1 on a failure, 77 (ctest's skip code)
when /dev/kvm is missing, with a message saying so.

Nothing sleeps to synchronise: every wait is for guest output, a control
reply or an event, or the control socket to answer, with a deadline.  The
expected output comes from the guests' contract: snapcount prints exactly
"count 1\\n" .. "count N\\n" and a line with the FNV-1a hash of those bytes,
computed here; a restored run must carry on at the byte after the last one
the saved run printed.
"""
import hashlib
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

VMRUN = None
GUESTS = None
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 120
MEM = "64M"
MEM_BYTES = 64 << 20
# snapcount: N lines, about 0.85 ms per character on the development
# machines (2.5 s in all); the save happens after line PAUSE_AT, which
# leaves about 2 s for the control commands to get there first.
COUNT_N = 300
COUNT_DELAY = 500000
PAUSE_AT = 50
# smptimer: 100 Hz timers, a line every 25 ticks, done at 300 (3 s).
TIMER_TICKS = 300
TIMER_EVERY = 25
TIMER_SAVE_AT = 50
NESTED_NOTICE = "nested KVM without VT-x/AMD-V detected"
FOOTER = struct.Struct("<8sIIQII")  # include/vmrun/state.h: struct state_footer
FOOTER_MAGIC = b"VMRUNST\0"
FDT_MAGIC = 0xD00DFEED


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (SKIP, LineClient, TestFailure, add_guest_args, check,  # noqa: E402
                     debug_exit_status, guest_elf, guest_setup, run_main, vmrun_ctl)


def guest(name):
    return guest_elf(GUESTS, name)


# ---------------------------------------------------------------- expectations

def fnv1a(data, h=0x811C9DC5):
    for c in data:
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    return h


def count_expected(n=COUNT_N):
    """snapcount's whole output for n=@n (tests/guest/README.md)."""
    lines = b"".join(b"count %d\n" % i for i in range(1, n + 1))
    return lines + b"count done %d sum %08x\n" % (n, fnv1a(lines))


def first_difference(a, b):
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return i


def check_bytes(got, want, what, ctx=""):
    """@got must be @want byte for byte; the failure shows where they part."""
    if got == want:
        return
    i = first_difference(got, want)
    raise TestFailure(f"{what}: differs at byte {i} of {len(got)} (want {len(want)}): got "
                      f"{got[max(0, i - 40):i + 40]!r}, want {want[max(0, i - 40):i + 40]!r}{ctx}")


# ---------------------------------------------------------------- processes

class Vm:
    """One vmrun process: stdout collected as it comes, stderr in a file."""

    def __init__(self, args):
        self.err = tempfile.TemporaryFile()
        self.cmd = [VMRUN] + list(args)
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=self.err)
        self.out = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.err.close()
        return False

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def ctx(self):
        return (f"\n--- command: {' '.join(self.cmd)}\n--- status {self.p.poll()}\n"
                f"--- stdout:\n{self.out.decode(errors='replace')[-3000:]}\n"
                f"--- stderr:\n{self.stderr()[-3000:]}")

    def _read(self, timeout):
        """Read what stdout has within @timeout s; False once it is at EOF."""
        if self.eof:
            return False
        r, _, _ = select.select([self.p.stdout], [], [], max(timeout, 0))
        if r:
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                self.eof = True
                return False
            self.out += chunk
        return True

    def wait_until(self, cond, what, timeout=HANG_GUARD_S):
        """Read stdout until @cond(self.out) holds."""
        deadline = time.monotonic() + timeout
        while not cond(self.out):
            left = deadline - time.monotonic()
            check(left > 0, f"timed out waiting for {what}{self.ctx()}")
            if not self._read(left):
                try:
                    self.p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                raise TestFailure(f"vmrun's output ended while waiting for {what}{self.ctx()}")

    def wait_for(self, needle, timeout=HANG_GUARD_S):
        self.wait_until(lambda out: needle in out, repr(needle), timeout)

    def quiet_for(self, seconds):
        """True when stdout stays silent for @seconds (a bounded observation,
        not a synchronisation)."""
        r, _, _ = select.select([self.p.stdout], [], [], seconds)
        return not r

    def finish(self, timeout=HANG_GUARD_S):
        """Read stdout to EOF and reap vmrun; its exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            check(time.monotonic() < deadline, f"vmrun did not end{self.ctx()}")
        try:
            return self.p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise TestFailure(f"vmrun did not end{self.ctx()}")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.p.stdout.close()


def ctl(sock, *args):
    """`vmrun ctl SOCK ARGS...`: (status, stdout, stderr)."""
    return vmrun_ctl(VMRUN, sock, *args, timeout=HANG_GUARD_S, errors="replace")


def ctl_ok(sock, *args, vm=None):
    """The JSON result of a control command that must succeed."""
    rc, out, err = ctl(sock, *args)
    check(rc == 0, f"vmrun ctl {' '.join(args)}: status {rc}: {out} {err}"
          f"{vm.ctx() if vm else ''}")
    try:
        return json.loads(out)
    except ValueError:
        raise TestFailure(f"vmrun ctl {' '.join(args)}: not JSON: {out!r}")


def quit_vm(vm, sock):
    """`quit` through the control socket: vmrun ends with status 0."""
    rc, out, err = ctl(sock, "quit")
    check(rc == 0, f"vmrun ctl quit: status {rc}: {out} {err}{vm.ctx()}")
    rc = vm.finish()
    check(rc == 0, f"quit should end vmrun with status 0, got {rc}{vm.ctx()}")


def wait_socket(vm, sock, timeout=HANG_GUARD_S):
    """Wait until vmrun's control socket at @sock accepts a connection (the
    restored VM prints nothing while paused, so there is no line to wait
    for); fails at once if vmrun ends first."""
    deadline = time.monotonic() + timeout
    while True:
        check(vm.p.poll() is None, f"vmrun ended before its control socket answered{vm.ctx()}")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sock)
                return
            finally:
                s.close()
        except OSError:
            pass
        check(time.monotonic() < deadline, f"control socket {sock} never answered{vm.ctx()}")
        time.sleep(0.02)  # a poll for the socket, not a synchronisation by time


# ---------------------------------------------------------------- snapshots

def count_args(sock, cpus=1, n=COUNT_N):
    return ["--kernel", guest("snapcount"), "--cmdline", f"n={n} delay={COUNT_DELAY}",
            "--mem", MEM, "--cpus", str(cpus), "--api-sock", sock,
            "--timeout", str(HANG_GUARD_S)]


def check_save_reply(res, snap, vm=None):
    ctx = f"\n--- reply: {res}{vm.ctx() if vm else ''}"
    check(isinstance(res, dict), f"save reply is not an object{ctx}")
    check(os.path.realpath(res.get("path", "")) == os.path.realpath(snap),
          f"save reply names path {res.get('path')!r}, not {snap!r}{ctx}")
    names = {os.path.basename(f) for f in res.get("files", [])}
    check({"state.dtb", "memory.bin"} <= names,
          f"save reply's files lack state.dtb/memory.bin{ctx}")
    paused_ms = res.get("paused_ms")
    check(isinstance(paused_ms, (int, float)) and 0 <= paused_ms < HANG_GUARD_S * 1000,
          f"save reply's paused_ms is not a plausible number{ctx}")
    check(isinstance(res.get("bytes"), int) and res["bytes"] > 0, f"save reply's bytes{ctx}")
    check(isinstance(res.get("memory_bytes"), int) and 0 < res["memory_bytes"] <= MEM_BYTES,
          f"save reply's memory_bytes{ctx}")


def check_snapshot_files(snap):
    """DIR/state.dtb is an FDT with a footer; DIR/memory.bin covers the RAM
    and is sparse (the guest touched a few MiB of MEM)."""
    state = os.path.join(snap, "state.dtb")
    mem = os.path.join(snap, "memory.bin")
    check(os.path.isfile(state), f"{state} missing: {os.listdir(snap)}")
    check(os.path.isfile(mem), f"{mem} missing: {os.listdir(snap)}")
    with open(state, "rb") as f:
        blob = f.read()
    check(len(blob) > 40 + FOOTER.size, f"state.dtb is only {len(blob)} bytes")
    check(struct.unpack(">I", blob[:4])[0] == FDT_MAGIC, "state.dtb does not start with an FDT")
    magic, fmt, _, blob_len, _, _ = FOOTER.unpack(blob[-FOOTER.size:])
    check(magic == FOOTER_MAGIC and fmt == 1 and blob_len == len(blob) - FOOTER.size,
          f"state.dtb footer: magic {magic!r} format {fmt} blob_len {blob_len} (file {len(blob)})")
    st = os.stat(mem)
    check(st.st_size == MEM_BYTES, f"memory.bin is {st.st_size} bytes, the VM had {MEM_BYTES}")
    check(st.st_blocks * 512 < st.st_size,
          f"memory.bin is not sparse: {st.st_blocks * 512} bytes allocated of {st.st_size}")


def save_count(d, name="snap", cpus=1):
    """Run snapcount, pause after line PAUSE_AT, save into @d/@name, quit.
    Returns (snapshot dir, the bytes the guest printed before the pause)."""
    snap = os.path.join(d, name)
    sock = os.path.join(d, name + ".sock")
    with Vm(count_args(sock, cpus)) as vm:
        vm.wait_for(b"\ncount %d\n" % PAUSE_AT)
        st = ctl_ok(sock, "pause", vm=vm)
        check(st.get("status") == "paused", f"after pause: {st}{vm.ctx()}")
        res = ctl_ok(sock, "save", f"path={snap}", vm=vm)
        check_save_reply(res, snap, vm)
        quit_vm(vm, sock)
        out = vm.out
    want = count_expected()
    check(b"count done" not in out,
          f"the guest finished before the pause reached it: {len(out)} bytes printed")
    check_bytes(out, want[:len(out)], "output before the save")
    check_snapshot_files(snap)
    return snap, out


def restore(snap, *extra):
    """Restore @snap to the end: (status, stdout bytes, stderr text)."""
    with Vm(["--restore", snap, "--timeout", str(HANG_GUARD_S)] + list(extra)) as vm:
        rc = vm.finish()
        return rc, vm.out, vm.stderr()


def file_hashes(d):
    """{name: sha256} of every file in directory @d."""
    res = {}
    for name in sorted(os.listdir(d)):
        h = hashlib.sha256()
        with open(os.path.join(d, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        res[name] = h.hexdigest()
    return res


def check_restored_count(rc, out, err, before, what):
    """A restored snapcount: exit 0 from the guest, and its output carries
    on exactly where @before stopped."""
    ctx = f"\n--- status {rc}\n--- stderr:\n{err[-3000:]}"
    want = count_expected()
    check_bytes(before + out, want, f"{what}: saved output + restored output", ctx)
    check(rc == debug_exit_status(0), f"{what}: exit status {rc}, want 1 (guest exit 0){ctx}")


# ---------------------------------------------------------------- tests

def test_snapshot_count_continues():
    with tempfile.TemporaryDirectory() as d:
        snap, before = save_count(d)
        verdict = os.path.join(d, "exit.json")
        rc, out, err = restore(snap, "--exit-json", verdict)
        check_restored_count(rc, out, err, before, "restore")
        # --exit-json on a restore: the restored guest's verdict.
        with open(verdict) as f:
            data = json.load(f)
        check(data["status"] == rc and data["kind"] == "debug-exit" and
              data["debug_exit_value"] == 0 and data["ms_to_first_instruction"] is not None,
              f"restore's --exit-json: {data}")
        # A restore refused: vmrun-failure, status 4.
        rc, _, err = restore(os.path.join(d, "no-such-snapshot"), "--exit-json", verdict)
        with open(verdict) as f:
            data = json.load(f)
        check(rc == 4 and data["status"] == 4 and data["kind"] == "vmrun-failure" and
              data["ms_to_first_instruction"] is None, f"refused restore: {rc} {data} {err}")


def test_snapshot_restore_twice():
    with tempfile.TemporaryDirectory() as d:
        snap, before = save_count(d)
        hashes = file_hashes(snap)
        rc1, out1, err1 = restore(snap)
        check_restored_count(rc1, out1, err1, before, "first restore")
        rc2, out2, err2 = restore(snap)
        check_restored_count(rc2, out2, err2, before, "second restore")
        check_bytes(out2, out1, "second restore's output against the first's")
        check(file_hashes(snap) == hashes, "restoring changed the snapshot's files")


def test_snapshot_save_running():
    with tempfile.TemporaryDirectory() as d:
        snap = os.path.join(d, "snap")
        sock = os.path.join(d, "api.sock")
        with Vm(count_args(sock)) as vm:
            vm.wait_for(b"\ncount %d\n" % PAUSE_AT)
            seen_before = len(vm.out)
            watcher = LineClient(sock)
            try:
                reply = watcher.call(1, "save", {"path": snap})
                check(reply.get("ok") is True, f"save while running: {reply}{vm.ctx()}")
                check_save_reply(reply["result"], snap, vm)
                ev = watcher.wait_event("saved")
                check(ev.get("data") == reply["result"],
                      f"saved event {ev} differs from the reply {reply}")
                st = watcher.call(2, "query-status")
                check(st.get("ok") and st["result"]["status"] == "running",
                      f"the VM should run on after a save: {st}{vm.ctx()}")
                hashes = file_hashes(snap)
                again = watcher.call(3, "save", {"path": snap})
                check(again.get("ok") is False and again.get("error"),
                      f"a save into a non-empty directory must be refused: {again}")
                check(file_hashes(snap) == hashes, "the refused save changed the snapshot")
            finally:
                watcher.close()
            rc = vm.finish()
            check_bytes(vm.out, count_expected(), "output of the VM saved while running",
                        vm.ctx())
            check(rc == debug_exit_status(0), f"exit status {rc}{vm.ctx()}")
        check_snapshot_files(snap)
        # The saved point lies somewhere after what the test had read when
        # it asked: the restored output is the rest from there.
        rc, out, err = restore(snap)
        want = count_expected()
        start = len(want) - len(out)
        check(out and start >= seen_before and want.endswith(out),
              f"restored output is not the rest of the count from byte >= {seen_before}: "
              f"{out[:80]!r}...{out[-60:]!r} ({len(out)} bytes)\n--- stderr:\n{err}")
        check(rc == debug_exit_status(0), f"restored exit status {rc}\n--- stderr:\n{err}")


def test_snapshot_identical_saves():
    with tempfile.TemporaryDirectory() as d:
        snap1, snap2 = os.path.join(d, "s1"), os.path.join(d, "s2")
        sock = os.path.join(d, "api.sock")
        os.mkdir(snap2)  # an existing empty directory is fine
        with Vm(count_args(sock, cpus=2)) as vm:
            vm.wait_for(b"\ncount %d\n" % PAUSE_AT)
            ctl_ok(sock, "pause", vm=vm)
            check_save_reply(ctl_ok(sock, "save", f"path={snap1}", vm=vm), snap1, vm)
            check_save_reply(ctl_ok(sock, "save", f"path={snap2}", vm=vm), snap2, vm)
            quit_vm(vm, sock)
        for name in ("state.dtb", "memory.bin"):
            with open(os.path.join(snap1, name), "rb") as a:
                first = a.read()
            with open(os.path.join(snap2, name), "rb") as b:
                check_bytes(b.read(), first, f"{name} of two saves of one paused VM")
        check(sorted(os.listdir(snap1)) == sorted(os.listdir(snap2)),
              f"two saves wrote different files: {os.listdir(snap1)} {os.listdir(snap2)}")


def test_snapshot_restore_paused():
    with tempfile.TemporaryDirectory() as d:
        snap, before = save_count(d)
        sock = os.path.join(d, "restored.sock")
        with Vm(["--restore", snap, "--paused", "--api-sock", sock,
                 "--timeout", str(HANG_GUARD_S)]) as vm:
            wait_socket(vm, sock)
            st = ctl_ok(sock, "query-status", vm=vm)
            check(st.get("status") == "paused" and st.get("vcpus") and
                  all(v.get("state") == "paused" for v in st["vcpus"]),
                  f"a VM restored with --paused must be paused: {st}{vm.ctx()}")
            # Bounded observation: a paused guest prints nothing.
            check(vm.quiet_for(1.0) and not vm.out, f"output while paused{vm.ctx()}")
            st = ctl_ok(sock, "resume", vm=vm)
            check(st.get("status") == "running", f"after resume: {st}{vm.ctx()}")
            rc = vm.finish()
            check_restored_count(rc, vm.out, vm.stderr(), before, "paused restore")


TICK_RE = re.compile(rb"^tick cpu(\d+) lapic (\d+)(?: pit (\d+))?$", re.M)


def ticks(out):
    """{cpu: [(lapic, pit or None), ...]} from smptimer's complete lines."""
    res = {}
    for m in TICK_RE.finditer(out[:out.rfind(b"\n") + 1]):
        res.setdefault(int(m.group(1)), []).append(
            (int(m.group(2)), int(m.group(3)) if m.group(3) is not None else None))
    return res


def saved_enough(out):
    t = ticks(out)
    return all(t.get(c) and t[c][-1][0] >= TIMER_SAVE_AT for c in (0, 1))


def test_snapshot_smp_timers():
    with tempfile.TemporaryDirectory() as d:
        snap = os.path.join(d, "snap")
        sock = os.path.join(d, "api.sock")
        args = ["--kernel", guest("smptimer"), "--cpus", "2", "--mem", MEM,
                "--cmdline", f"cpus=2 ticks={TIMER_TICKS} every={TIMER_EVERY}",
                "--api-sock", sock, "--timeout", str(HANG_GUARD_S)]
        with Vm(args) as vm:
            vm.wait_until(saved_enough, f"both CPUs at {TIMER_SAVE_AT} ticks")
            ctl_ok(sock, "pause", vm=vm)
            check_save_reply(ctl_ok(sock, "save", f"path={snap}", vm=vm), snap, vm)
            quit_vm(vm, sock)
            before = vm.out
        check(b"smptimer done" not in before, f"the guest finished before the save:\n{before}")
        check_snapshot_files(snap)
        t0 = ticks(before)
        rc, out, err = restore(snap)
        ctx = (f"\n--- saved run:\n{before.decode(errors='replace')}\n"
               f"--- restored run (status {rc}):\n{out.decode(errors='replace')}\n"
               f"--- stderr:\n{err}")
        check(b"smptimer: cpus" not in out, f"the restored guest started over{ctx}")
        t1 = ticks(before + out)
        for cpu in (0, 1):
            after = t1.get(cpu, [])[len(t0[cpu]):]
            check(after, f"no tick line from cpu{cpu} after the restore{ctx}")
            lapic = [v[0] for v in t1[cpu]]
            check(all(a < b for a, b in zip(lapic, lapic[1:])),
                  f"cpu{cpu}'s LAPIC ticks do not keep rising across the restore{ctx}")
            check(after[-1][0] >= TIMER_TICKS, f"cpu{cpu}'s LAPIC timer fell short{ctx}")
        pit = [v[1] for v in t1[0]]
        check(all(a <= b for a, b in zip(pit, pit[1:])), f"PIT ticks went backwards{ctx}")
        check(pit[-1] > t0[0][-1][1] and pit[-1] >= TIMER_TICKS,
              f"the PIT stopped after the restore{ctx}")
        check(out.endswith(b"smptimer done\n"), f"no 'smptimer done' after the restore{ctx}")
        check(rc == debug_exit_status(0), f"restored exit status {rc}{ctx}")


def flip(path, offset, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        check(len(b) == 1, f"{path} has no byte {offset}")
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def put(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path, size):
    os.truncate(path, size)


def test_snapshot_refusals():
    with tempfile.TemporaryDirectory() as d:
        snap, before = save_count(d)
        state_len = os.path.getsize(os.path.join(snap, "state.dtb"))
        with open(os.path.join(snap, "state.dtb"), "rb") as f:
            hdr = struct.unpack(">10I", f.read(40))
        off_struct, off_strings, size_strings, size_struct = hdr[2], hdr[3], hdr[8], hdr[9]
        footer = state_len - FOOTER.size
        st, mem = "state.dtb", "memory.bin"
        cases = [
            ("state.dtb truncated to half", lambda p: truncate(p(st), state_len // 2)),
            ("state.dtb short of its last byte", lambda p: truncate(p(st), state_len - 1)),
            ("state.dtb empty", lambda p: truncate(p(st), 0)),
            ("state.dtb missing", lambda p: os.unlink(p(st))),
            ("a byte of the FDT header flipped", lambda p: flip(p(st), 0x0b)),
            ("a byte of the FDT struct block flipped",
             lambda p: flip(p(st), off_struct + size_struct // 2)),
            ("a byte of the FDT strings block flipped",
             lambda p: flip(p(st), off_strings + size_strings // 2)),
            ("a byte of the footer's CRC flipped", lambda p: flip(p(st), footer + 24)),
            ("a byte of the footer's length flipped", lambda p: flip(p(st), footer + 16)),
            ("wrong footer magic", lambda p: put(p(st), footer, b"VMRUNSX\0")),
            ("footer format version 99", lambda p: put(p(st), footer + 8, struct.pack("<I", 99))),
            ("memory.bin missing", lambda p: os.unlink(p(mem))),
            ("memory.bin truncated to half", lambda p: truncate(p(mem), MEM_BYTES // 2)),
            ("memory.bin short of one page", lambda p: truncate(p(mem), MEM_BYTES - 4096)),
        ]
        # The undamaged copy restores: the copy itself is sound, so each
        # refusal below is down to its damage.
        good = os.path.join(d, "good")
        subprocess.run(["cp", "-a", "--sparse=always", snap, good], check=True)
        rc, out, err = restore(good)
        check_restored_count(rc, out, err, before, "undamaged copy")
        for i, (what, damage) in enumerate(cases):
            case = os.path.join(d, f"case{i}")
            subprocess.run(["cp", "-a", "--sparse=always", snap, case], check=True)
            damage(lambda name: os.path.join(case, name))
            hashes = file_hashes(case)
            rc, out, err = restore(case)
            ctx = f"\n--- case: {what}\n--- status {rc}\n--- stdout:\n{out!r}\n--- stderr:\n{err}"
            check(rc == 4, f"a damaged snapshot must be refused with status 4{ctx}")
            lines = [ln for ln in err.splitlines() if NESTED_NOTICE not in ln]
            check(len(lines) == 1 and lines[0].startswith("vmrun: ") and len(lines[0]) > 12,
                  f"want one line on stderr starting 'vmrun: '{ctx}")
            for bad in ("Traceback", "AddressSanitizer", "LeakSanitizer", "runtime error",
                        "Segmentation", "core dumped"):
                check(bad not in err, f"stderr shows {bad!r}{ctx}")
            if "version" in what:
                check("version" in lines[0] or "format" in lines[0],
                      f"the message should name the format version{ctx}")
            check(not out, f"the guest ran from a damaged snapshot{ctx}")
            check(file_hashes(case) == hashes, f"the refused restore changed the snapshot{ctx}")
            shutil.rmtree(case)
        # Machine options come from the snapshot: giving them is a usage error.
        for extra in (["--kernel", guest("hello")], ["--mem", "128M"], ["--cpus", "2"],
                      ["--cmdline", "n=5"]):
            with Vm(["--restore", snap] + extra) as vm:
                rc = vm.finish()
                check(rc == 2,
                      f"--restore with {extra[0]} must be refused with 2, got {rc}{vm.ctx()}")
                check(not vm.out, f"the guest ran{vm.ctx()}")


def refooter(path):
    """Give @path (an FDT that dtc's fdtput rewrote, footer dropped) a new
    footer with the right length and CRC, as include/vmrun/state.h lays it
    out: the edit is then only caught by what it changed."""
    with open(path, "rb") as f:
        blob = f.read()
    size = struct.unpack(">I", blob[4:8])[0]
    blob = blob[:size]
    with open(path, "wb") as f:
        f.write(blob + FOOTER.pack(FOOTER_MAGIC, 1, 0, size, zlib.crc32(blob), 0))


def fdt_edit(path, node, prop, *values, kind="u"):
    """Set @node's @prop to @values with fdtput, then refooter."""
    os.chmod(path, 0o644)
    subprocess.run(["fdtput", "-t", kind, path, node, prop, *[str(v) for v in values]],
                   check=True)
    refooter(path)


def fdt_get(path, node, prop, kind="u"):
    return subprocess.run(["fdtget", "-t", kind, path, node, prop], capture_output=True,
                          text=True, check=True).stdout.split()


def expect_refused(snap, what, needle, extra=()):
    """Restoring @snap must fail with status 4, one line naming @needle, and
    leave the snapshot's files as they were."""
    hashes = file_hashes(snap)
    rc, out, err = restore(snap, *extra)
    ctx = f"\n--- case: {what}\n--- status {rc}\n--- stdout:\n{out!r}\n--- stderr:\n{err}"
    lines = [ln for ln in err.splitlines() if NESTED_NOTICE not in ln]
    check(rc == 4, f"must be refused with status 4{ctx}")
    check(len(lines) == 1 and needle in lines[0], f"want one line naming {needle!r}{ctx}")
    check(not out, f"the guest ran{ctx}")
    check(file_hashes(snap) == hashes, f"the refused restore changed the snapshot{ctx}")


def test_snapshot_refusals_edited():
    """A well-formed stream (valid structure and CRC) whose content this host or
    this vmrun cannot take: every such edit is refused before the guest runs.
    The edits go through dtc's fdtput, so the format is also shown editable by
    the standard tools; an edit that changes nothing restores fine."""
    if not shutil.which("fdtput"):
        print("SKIP: fdtput (device-tree-compiler) is not installed")
        return SKIP
    with tempfile.TemporaryDirectory() as d:
        snap, before = save_count(d)

        def case(name):
            c = os.path.join(d, name)
            subprocess.run(["cp", "-a", "--sparse=always", snap, c], check=True)
            return c, os.path.join(c, "state.dtb")

        c, st = case("same")
        fdt_edit(st, "/devices/serial@3f8", "irq", 4)
        rc, out, err = restore(c)
        check_restored_count(rc, out, err, before, "a snapshot re-footered without a change")

        # A CPU feature no x86 CPU has (leaf 1 ECX bit 16 is reserved): a
        # feature this host lacks.
        c, st = case("cpuid")
        funcs = [int(v, 16) for v in fdt_get(st, "/cpus", "cpuid-function", "x")]
        idx = [int(v, 16) for v in fdt_get(st, "/cpus", "cpuid-index", "x")]
        ecx = [int(v, 16) for v in fdt_get(st, "/cpus", "cpuid-ecx", "x")]
        k = next(i for i in range(len(funcs)) if funcs[i] == 1 and idx[i] == 0)
        ecx[k] |= 1 << 16
        fdt_edit(st, "/cpus", "cpuid-ecx", *[hex(v) for v in ecx], kind="x")
        expect_refused(c, "a CPU feature the host lacks", "0x1")

        c, st = case("node-version")
        fdt_edit(st, "/devices/serial@3f8", "version", 99)
        expect_refused(c, "a device node from a newer vmrun", "version 99")

        c, st = case("moved")
        fdt_edit(st, "/devices/serial@3f8", "irq", 5)
        expect_refused(c, "a device on another IRQ", "IRQ")

        c, st = case("cpus")
        fdt_edit(st, "/config", "cpus", 2)
        expect_refused(c, "a configuration with more vCPUs than saved", "vCPU")

        c, st = case("tsc")
        khz = int(fdt_get(st, "/cpus/cpu@0", "tsc-khz")[0])
        fdt_edit(st, "/cpus/cpu@0", "tsc-khz", khz + khz // 50)
        expect_refused(c, "a TSC 2% faster than this host's", "TSC")

        c, st = case("region")
        fdt_edit(st, "/memory/region@0", "reg", 0, 0x1000, 0, MEM_BYTES - 0x1000)
        expect_refused(c, "RAM moved", "memory region")

        c, st = case("queue")
        fdt_edit(st, "/devices/serial@3f8", "rx-fifo", *([0x41] * 300), kind="bx")
        expect_refused(c, "more unread input than a UART holds", "rx-fifo")


def test_snapshot_platform_shape():
    """ACPI and pvpanic are part of the machine's shape: a snapshot records
    them in /config (and pvpanic's PCI configuration space as a device), and
    a snapshot from before them (no such properties, no pvpanic node) still
    restores, as the machine it was: neither."""
    if not shutil.which("fdtput"):
        print("SKIP: fdtput (device-tree-compiler) is not installed")
        return SKIP
    with tempfile.TemporaryDirectory() as d:
        snap, before = save_count(d)
        st = os.path.join(snap, "state.dtb")
        check(fdt_get(st, "/config", "acpi") == ["1"], f"/config acpi: {fdt_get(st, '/config', 'acpi')}")
        check(fdt_get(st, "/config", "pvpanic") == ["1"], "/config pvpanic")
        check(fdt_get(st, "/devices/pvpanic", "version") == ["1"], "/devices/pvpanic")

        old = os.path.join(d, "old")
        subprocess.run(["cp", "-a", "--sparse=always", snap, old], check=True)
        st = os.path.join(old, "state.dtb")
        os.chmod(st, 0o644)
        subprocess.run(["fdtput", "-d", st, "/config", "acpi"], check=True)
        subprocess.run(["fdtput", "-d", st, "/config", "pvpanic"], check=True)
        subprocess.run(["fdtput", "-r", st, "/devices/pvpanic"], check=True)
        refooter(st)
        rc, out, err = restore(old)
        check_restored_count(rc, out, err, before, "a snapshot from before ACPI and pvpanic")

        # Saying pvpanic=1 without its node is a broken stream: refused.
        bad = os.path.join(d, "bad")
        subprocess.run(["cp", "-a", "--sparse=always", old, bad], check=True)
        fdt_edit(os.path.join(bad, "state.dtb"), "/config", "pvpanic", 1)
        expect_refused(bad, "pvpanic without its state", "pvpanic")
        # And a value out of range.
        bad2 = os.path.join(d, "bad2")
        subprocess.run(["cp", "-a", "--sparse=always", snap, bad2], check=True)
        fdt_edit(os.path.join(bad2, "state.dtb"), "/config", "acpi", 2)
        expect_refused(bad2, "acpi = 2", "acpi")


def test_snapshot_disk_refusals():
    """The disks a snapshot froze: a restore runs on an overlay of its own
    over the frozen base, never writing it; a missing or changed base is
    refused; --restore-disk finds a base that moved."""
    with tempfile.TemporaryDirectory() as d:
        disk = os.path.join(d, "disk.raw")
        with open(disk, "wb") as f:
            f.truncate(8 << 20)
        snap = os.path.join(d, "snap")
        sock = os.path.join(d, "s.sock")
        with Vm(count_args(sock) + ["--disk", disk + ",format=raw"]) as vm:
            vm.wait_for(b"\ncount %d\n" % PAUSE_AT)
            # What its guest could write into a disk run as raw: a qcow2
            # header naming a host file as its backing file.  The restore
            # must take the frozen base as raw all the same (as the save
            # recorded it), never probe it.
            secret = os.path.join(d, "host-secret")
            with open(secret, "wb") as f:
                f.write(b"not for the guest\n" * 100)
            hdr = os.path.join(d, "hdr.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw",
                            hdr, "1M"], check=True, timeout=HANG_GUARD_S)
            with open(hdr, "rb") as f, open(disk, "r+b") as g:
                g.write(f.read())
            ctl_ok(sock, "pause", vm=vm)
            res = ctl_ok(sock, "save", f"path={snap}", vm=vm)
            quit_vm(vm, sock)
            before = vm.out
        base = res["disks"][0]["base"]
        check(os.path.isabs(base) and os.path.exists(base) and os.stat(base).st_mode & 0o222 == 0,
              f"the frozen base {base} must be an absolute, read-only file: {res}")
        def base_hash():
            with open(base, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()

        before_hash = base_hash()
        # Twice from one snapshot, each on an overlay of its own.
        for k in (1, 2):
            rc, out, err = restore(snap)
            check_restored_count(rc, out, err, before, f"restore {k} with a disk")
            check(os.path.exists(os.path.join(snap, f"disk0-{k}.qcow2")),
                  f"restore {k} made no overlay: {os.listdir(snap)}")
        check(base_hash() == before_hash, "a restore wrote the base")
        r = subprocess.run(["qemu-img", "info", "--output=json",
                            os.path.join(snap, "disk0-1.qcow2")], capture_output=True, text=True)
        check(r.returncode == 0, f"qemu-img info on the restore's overlay: {r.stderr}")
        info = json.loads(r.stdout)
        check(info.get("backing-filename") == base and
              info.get("backing-filename-format") == "raw",
              f"the overlay's backing file is not the frozen base, as raw: {r.stdout}")
        # The base moved: refused, then found with --restore-disk.
        moved = os.path.join(d, "moved.raw")
        os.rename(base, moved)
        expect_refused(snap, "the frozen base missing", "--restore-disk")
        rc, out, err = restore(snap, "--restore-disk", f"0={moved}")
        check_restored_count(rc, out, err, before, "restore with --restore-disk")
        # The base changed (one byte, in its first 64 KiB): refused.
        os.chmod(moved, 0o644)
        with open(moved, "r+b") as f:
            f.seek(4096)
            f.write(b"x")
        expect_refused(snap, "the frozen base changed", "changed", ("--restore-disk", f"0={moved}"))


def test_snapshot_show():
    with tempfile.TemporaryDirectory() as d:
        snap, _ = save_count(d, cpus=2)
        p = subprocess.run([VMRUN, "snapshot", "show", snap], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        text = p.stdout.decode(errors="replace")
        ctx = f"\n--- stdout:\n{text[:4000]}\n--- stderr:\n{p.stderr.decode(errors='replace')}"
        check(p.returncode == 0, f"snapshot show: status {p.returncode}{ctx}")
        for want in ("cpu@0", "cpu@1", "ioapic"):
            check(want in text, f"snapshot show does not show {want}{ctx}")

        p = subprocess.run([VMRUN, "snapshot", "show", snap, "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        jctx = (f"\n--- stdout:\n{p.stdout.decode(errors='replace')[:4000]}\n"
                f"--- stderr:\n{p.stderr.decode(errors='replace')}")
        check(p.returncode == 0, f"snapshot show --json: status {p.returncode}{jctx}")
        try:
            info = json.loads(p.stdout)
        except ValueError as e:
            raise TestFailure(f"snapshot show --json is not JSON: {e}{jctx}")
        check(info.get("format_version") == 1, f"format_version{jctx}")
        check(info.get("mem_bytes") == MEM_BYTES, f"mem_bytes should be {MEM_BYTES}{jctx}")
        check(info.get("cpus") == 2, f"cpus should be 2{jctx}")
        check(info.get("disks") == [] and info.get("nics") == [], f"no disks, no NICs{jctx}")
        check(isinstance(info.get("vmrun_version"), str) and info["vmrun_version"],
              f"vmrun_version{jctx}")
        nodes = info.get("nodes")
        check(isinstance(nodes, list) and nodes, f"nodes{jctx}")
        names = [n if isinstance(n, str) else n.get("node", "") for n in nodes]
        for want in ("/cpus/cpu@0", "/cpus/cpu@1", "ioapic", "pit", "serial@3f8", "/memory"):
            check(any(want in n for n in names), f"no {want} node in {names}{jctx}")
        for n in names:
            leaf = n.rstrip("/").rsplit("/", 1)[-1]
            check(leaf in text, f"node {n} is in --json but not in the text{ctx}")

        if shutil.which("dtc"):
            p = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", os.path.join(snap, "state.dtb")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
            dts = p.stdout.decode(errors="replace")
            check(p.returncode == 0 and "cpu@1" in dts,
                  f"dtc -I dtb -O dts state.dtb: status {p.returncode}\n{dts[:2000]}\n"
                  f"{p.stderr.decode(errors='replace')}")
        else:
            print("note: dtc is not installed; state.dtb not checked with it", flush=True)


def main():
    return run_main(globals(), add_guest_args, lambda a: guest_setup(a, globals()))


if __name__ == "__main__":
    sys.exit(main())
