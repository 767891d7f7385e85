"""What the Python test scripts share (tests/integration, tests/qcow2): the
failure and skip signals, check(), and the runner that makes each test_*
function of a script one ctest test.

A script calls run_main(globals(), add_args, setup): --list prints the test
names; otherwise each named test (all when none is named) runs in turn and
prints PASS, SKIP or FAIL with its time.  Exit status: 0 when all passed, 1
when one failed, SKIP (ctest's skip code) when every test skipped or
@setup said so.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import time

SKIP = 77
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 120


class TestFailure(Exception):
    pass


class Skip(Exception):
    """Raised by a test that cannot run here; the message says why."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def run_main(namespace, add_args=None, setup=None):
    """Parse the command line and run the tests of @namespace (a script's
    globals()).  @add_args(parser) adds the script's own options;
    @setup(args) runs before the tests and returns None to go on, or an
    exit status to end with (SKIP, with a message printed)."""
    ap = argparse.ArgumentParser()
    if add_args:
        add_args(ap)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("tests", nargs="*")
    a = ap.parse_args()
    names = sorted(n[5:] for n in namespace if n.startswith("test_"))
    if a.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in a.tests if n not in names]
    if unknown:
        ap.error(f"no such test: {' '.join(unknown)}")
    if setup:
        status = setup(a)
        if status is not None:
            return status
    failed = skipped = 0
    for n in a.tests or names:
        t0 = time.monotonic()
        try:
            if namespace["test_" + n]() == SKIP:
                raise Skip("the test says it cannot run here")
            print(f"PASS {n} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Skip as e:
            skipped += 1
            print(f"SKIP {n}: {e}", flush=True)
        except (TestFailure, subprocess.TimeoutExpired) as e:
            failed += 1
            print(f"FAIL {n}: {e}", flush=True)
    if failed:
        return 1
    return SKIP if skipped and skipped == len(a.tests or names) else 0


# ---- for the scripts that boot the test guests (tests/integration) ----

def add_guest_args(ap):
    """--vmrun (the binary) and --guests (the directory of the .elf guests)."""
    ap.add_argument("--vmrun")
    ap.add_argument("--guests")


def guest_setup(a, namespace):
    """Set the script's VMRUN and GUESTS globals from @a; 2 when one is
    missing, SKIP (with a message) where /dev/kvm is, else None."""
    if not a.vmrun or not a.guests:
        print("usage: --vmrun PATH and --guests DIR are required to run tests")
        return 2
    namespace["VMRUN"] = os.path.abspath(a.vmrun)
    namespace["GUESTS"] = os.path.abspath(a.guests)
    if not os.path.exists("/dev/kvm"):
        print("SKIP: /dev/kvm is missing on this machine: guest tests need KVM")
        return SKIP
    return None


def guest_elf(guests, name):
    """The path of test guest @name in directory @guests, which must exist."""
    path = os.path.join(guests, name + ".elf")
    check(os.path.exists(path), f"guest {path} was not built")
    return path


def debug_exit_status(v):
    """QEMU isa-debug-exit convention, from its documentation."""
    return ((v << 1) | 1) & 0xFF


def kill(p):
    """SIGKILL process @p (a Popen) if it still runs, and reap it."""
    if p.poll() is None:
        p.kill()
        p.wait()


def vmrun_ctl(vmrun, sock, *args, timeout=HANG_GUARD_S, errors="strict"):
    """`VMRUN ctl SOCK ARGS...`: (status, stdout, stderr), decoded with
    @errors."""
    p = subprocess.run([vmrun, "ctl", sock] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors=errors), p.stderr.decode(errors=errors)


class LineClient:
    """A raw control-socket client: one JSON object per line both ways.  The
    greeting line sent on connect is kept in .greeting, not returned."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
        self.greeting = None
        self.events = []

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def recv_json(self, timeout=HANG_GUARD_S):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            check(left > 0, "timed out waiting on the control socket")
            self.s.settimeout(left)
            chunk = self.s.recv(65536)
            check(chunk, "control socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if "greeting" in msg:  # the first line on connect
            self.greeting = msg["greeting"]
            return self.recv_json(timeout)
        return msg

    def call(self, req_id, cmd, args=None):
        """Send a command and return its reply; events on the way are kept."""
        req = {"id": req_id, "cmd": cmd}
        if args is not None:
            req["args"] = args
        self.s.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self.recv_json()
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == req_id:
                return msg

    def wait_event(self, name):
        for i, ev in enumerate(self.events):
            if ev["event"] == name:
                return self.events.pop(i)
        while True:
            msg = self.recv_json()
            if msg.get("event") == name:
                return msg
            if "event" in msg:
                self.events.append(msg)


# ---- qemu-img, the oracle for disk images ----

def qemu_img(*args, timeout=HANG_GUARD_S):
    """qemu-img (Debian qemu-utils, installed by scripts/test.sh): the oracle."""
    check(shutil.which("qemu-img"), "qemu-img is missing (scripts/test.sh installs qemu-utils)")
    p = subprocess.run(["qemu-img"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    check(p.returncode == 0, f"qemu-img {' '.join(args)}: {p.returncode} {p.stderr.decode()}")
    return p.stdout.decode()


def qemu_img_contents(path, d, timeout=HANG_GUARD_S):
    """What a guest sees in @path (through its backing chain), per qemu-img;
    a scratch file in directory @d holds it on the way."""
    out = os.path.join(d, "convert.raw")
    qemu_img("convert", "-O", "raw", path, out, timeout=timeout)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data
