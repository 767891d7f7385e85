#!/usr/bin/env python3
"""Confinement tests (src/core/sandbox.c, README "Confinement"): what a
running vmrun holds after set-up, read from /proc/PID/task/*/status of every
thread, and what happens when one of its threads makes a forbidden call.

Usage: sandbox_tests.py --vmrun PATH --guests DIR TEST [TEST...]

Expected values come from the kernel's documented /proc format
(proc(5): CapEff, CapBnd, NoNewPrivs, Seccomp 2 = filter mode) and the
documented contract (an empty capability set is 0000000000000000), never from
vmrun's own output.
"""
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (SKIP, LineClient, Proc, Skip, add_guest_args, check,  # noqa: E402
                     debug_exit_status, guest_elf, guest_setup, run_main)

VMRUN = None
GUESTS = None
HANG_GUARD_S = 120
TEST_ENV = "VMRUN_TEST_SECCOMP_VIOLATION"  # vmrun/sandbox.h's test-only hook
EMPTY_CAPS = "0000000000000000"


def guest(name):
    return guest_elf(GUESTS, name)


def thread_status(pid):
    """{tid: {field: value}} from /proc/PID/task/*/status."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    fields[k] = v.strip()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        out[int(tid)] = fields
    return out


def connect(sock, vm):
    """A LineClient on @sock once vmrun binds it (polled: the bind is vmrun's
    set-up, there is nothing to wait on before it)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        check(vm.p.poll() is None, f"vmrun ended{vm.ctx()}")
        try:
            return LineClient(sock)
        except OSError:
            check(time.monotonic() < deadline, f"no control socket{vm.ctx()}")
            time.sleep(0.05)  # poll for the bind, not a synchronisation with vmrun


def wait_parked(c, vm, n):
    """Until query-status shows @n vCPUs parked ("paused" per vCPU means the
    thread itself reached its pause, past its filter load)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        st = c.call(1, "query-status")["result"]
        if len(st["vcpus"]) == n and all(v["state"] == "paused" for v in st["vcpus"]):
            return st
        check(time.monotonic() < deadline, f"vCPUs never parked: {st}{vm.ctx()}")
        time.sleep(0.05)


def check_confined(pid, vm, seccomp="2", n_vcpus=2, uid=None):
    threads = thread_status(pid)
    names = sorted(t.get("Name", "") for t in threads.values())
    for i in range(n_vcpus):
        check(f"vcpu{i}" in names, f"no thread vcpu{i} among {names}{vm.ctx()}")
    for tid, f in threads.items():
        where = f"thread {tid} ({f.get('Name')})"
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            check(f.get(cap) == EMPTY_CAPS, f"{where}: {cap} {f.get(cap)}, want {EMPTY_CAPS}")
        check(f.get("NoNewPrivs") == "1", f"{where}: NoNewPrivs {f.get('NoNewPrivs')}")
        check(f.get("Seccomp") == seccomp, f"{where}: Seccomp {f.get('Seccomp')}, want {seccomp}")
        if uid is not None:
            check(f.get("Uid", "").split() == [str(uid)] * 4, f"{where}: Uid {f.get('Uid')}")
            check(f.get("Groups", "") == "", f"{where}: Groups {f.get('Groups')!r}, want none")
    return threads


def run_confined(extra, check_fn):
    """Start the echo guest with 2 vCPUs, --paused, and @extra; once every
    vCPU parked, call @check_fn(vm, client, dir), then resume, check again
    while it runs, and quit (status 0)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        sock = os.path.join(d, "api.sock")
        with Proc("vmrun", [VMRUN, "--kernel", guest("echo"), "--cpus", "2", "--paused",
                            "--api-sock", sock] + extra) as vm:
            c = connect(sock, vm)
            wait_parked(c, vm, 2)
            check_fn(vm, c, d)
            r = c.call(2, "resume")
            check(r.get("ok") and r["result"]["status"] == "running", f"resume: {r}")
            check(vm.wait_out(re.compile(rb"echo ready\n")), f"no 'echo ready'{vm.ctx()}")
            check_fn(vm, c, d)
            r = c.call(3, "quit")
            check(r.get("ok"), f"quit: {r}")
            rc = vm.p.wait(timeout=HANG_GUARD_S)
            check(rc == 0, f"status {rc} after quit{vm.ctx()}")


def test_sandbox_confined_root():
    """As root: every thread without capabilities, no_new_privs, a filter."""
    run_confined([], lambda vm, c, d: check_confined(vm.p.pid, vm))


def test_sandbox_confined_user():
    """--user nobody: the same, as nobody with no supplementary groups; a
    snapshot into a directory nobody may write fails with a clear error and
    the guest runs on; into one nobody may write, it works."""
    nobody = pwd.getpwnam("nobody")

    def checks(vm, c, d):
        check_confined(vm.p.pid, vm, uid=nobody.pw_uid)
        closed = os.path.join(d, "closed")
        os.mkdir(closed, 0o700)
        r = c.call(10, "save", {"path": os.path.join(closed, "snap")})
        check(r.get("ok") is False and "ermission denied" in r.get("error", ""),
              f"a save where nobody cannot write: {r}")
        check(vm.p.poll() is None, f"vmrun ended after a refused save{vm.ctx()}")
        open_dir = os.path.join(d, "open")
        if not os.path.exists(open_dir):
            os.mkdir(open_dir)
            os.chmod(open_dir, 0o777)
            r = c.call(11, "save", {"path": os.path.join(open_dir, "snap")})
            check(r.get("ok") is True, f"a save as nobody into a writable directory: {r}")
            check(os.stat(os.path.join(open_dir, "snap")).st_uid == nobody.pw_uid,
                  "the snapshot is not nobody's")
        os.rmdir(closed)

    run_confined(["--user", "nobody"], checks)


def test_sandbox_user_disk_snapshot():
    """--user nobody and live disk snapshots: beside an image in a directory
    nobody cannot enter, a clear error and the guest runs on; in one nobody
    may write, the overlay is made (and is nobody's), under the filters."""
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        closed, open_dir = os.path.join(d, "closed"), os.path.join(d, "open")
        os.mkdir(closed, 0o700)
        os.mkdir(open_dir)
        os.chmod(open_dir, 0o777)
        imgs = [os.path.join(closed, "a.raw"), os.path.join(open_dir, "b.raw")]
        for img in imgs:
            with open(img, "wb") as f:
                f.truncate(16 << 20)
        os.chmod(imgs[1], 0o666)
        sock = os.path.join(d, "api.sock")
        with Proc("vmrun", [VMRUN, "--kernel", guest("echo"), "--api-sock", sock, "--user",
                            "nobody", "--disk", imgs[0] + ",format=raw",
                            "--disk", imgs[1] + ",format=raw"]) as vm:
            c = connect(sock, vm)
            r = c.call(1, "snapshot", {"disk": 0})
            check(r.get("ok") is False and "ermission denied" in r.get("error", ""),
                  f"a snapshot where nobody cannot write: {r}{vm.ctx()}")
            r = c.call(2, "snapshot", {"disk": 1})
            check(r.get("ok") is True, f"a snapshot where nobody may write: {r}{vm.ctx()}")
            check(os.stat(imgs[1]).st_uid == nobody.pw_uid, "the overlay is not nobody's")
            st = c.call(3, "query-status")["result"]
            check(st["status"] == "running" and st["disks"][1]["format"] == "qcow2",
                  f"after the snapshots: {st}")
            check(c.call(4, "quit").get("ok"), "quit")
            rc = vm.p.wait(timeout=HANG_GUARD_S)
            check(rc == 0, f"status {rc} after quit{vm.ctx()}")


def test_sandbox_seccomp_off():
    """--seccomp=off: no filter, capabilities dropped all the same."""
    run_confined(["--seccomp=off"], lambda vm, c, d: check_confined(vm.p.pid, vm, seccomp="0"))


def violation(kind, mode):
    env = dict(os.environ)
    env[TEST_ENV] = kind
    p = subprocess.run([VMRUN, "--kernel", guest("hello"), "--cmdline", "exit=0",
                        f"--seccomp={mode}"], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
    return p.returncode, p.stderr.decode(errors="replace")


def check_killed(kind, name):
    rc, err = violation(kind, "on")
    check(rc == -signal.SIGSYS, f"{kind}: status {rc}, want killed by SIGSYS\n{err}")
    want = (f"vmrun: error: seccomp: the {kind} thread '{name}' made a forbidden system call: "
            f"socket (41)")
    check(want in err, f"stderr lacks {want!r}:\n{err}")


def test_sandbox_violation_vcpu():
    """A forbidden call from a vCPU thread kills vmrun with one line."""
    check_killed("vcpu", "vcpu0")


def test_sandbox_violation_main():
    """The same from the main (event loop) thread."""
    check_killed("main", os.path.basename(VMRUN)[:15])


def test_sandbox_log_mode():
    """--seccomp=log: the forbidden call is let through (the kernel logs it)
    and the guest runs to its end."""
    for kind in ("vcpu", "main"):
        rc, err = violation(kind, "log")
        check(rc == debug_exit_status(0), f"{kind}: status {rc}\n{err}")
        check("forbidden" not in err, f"{kind}: {err}")


def test_sandbox_option_errors():
    """Bad --seccomp and --user values: one line, usage or set-up status."""
    for args, status, msg in (
            (["--seccomp=maybe"], 2, "--seccomp: 'maybe' is not on, log or off"),
            (["--user", "nobody:"], 2, "--user: 'nobody:' is not USER[:GROUP]"),
            (["--user", "no-such-user-vmrun"], 4, "--user: no user 'no-such-user-vmrun'"),
            (["--user", "nobody:no-such-group-vmrun"], 4,
             "--user: no group 'no-such-group-vmrun'")):
        p = subprocess.run([VMRUN, "--kernel", guest("hello")] + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        err = p.stderr.decode(errors="replace")
        check(p.returncode == status, f"{args}: status {p.returncode}, want {status}\n{err}")
        check(msg in err, f"{args}: stderr lacks {msg!r}:\n{err}")


def main():
    def setup(a):
        r = guest_setup(a, globals())
        if r is None and os.geteuid() != 0:
            print("SKIP: the confinement tests run as root (--user, the capability sets)")
            return SKIP
        return r

    return run_main(globals(), add_guest_args, setup)


if __name__ == "__main__":
    sys.exit(main())
