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


def add_transport_arg(ap):
    """--transport mmio|pci: the virtio transport the script's --disk and
    --net devices get (with_transport())."""
    ap.add_argument("--transport", choices=["mmio", "pci"], default="mmio")


def with_transport(cmd, transport):
    """@cmd (a vmrun argument list) with transport=@transport added to every
    --disk and --net value that names none, so that each transport is chosen
    explicitly, whatever vmrun's default."""
    out = list(cmd)
    for i in range(1, len(out)):
        if out[i - 1] in ("--disk", "--net") and "transport=" not in out[i]:
            out[i] = f"{out[i]},transport={transport}"
    return out


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


# ---- child processes whose output a test waits on (migrate_tests.py) ----

class Proc:
    """A child process with stdin a pipe and stdout and stderr each read by
    a thread into a buffer, so that a test can wait for a line on either
    without a sleep and without the pipes filling up.  @argv[0] is the
    program (prefix it with `ip netns exec NS` to run it in a namespace)."""

    class _Stream:
        def __init__(self, pipe):
            import threading
            self.fd = pipe.fileno()
            self.buf = bytearray()
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
                with self.cond:
                    if not data:
                        self.eof = True
                        self.cond.notify_all()
                        return
                    self.buf += data
                    self.cond.notify_all()

        def wait(self, regex, start, timeout):
            """The first match of @regex (bytes) at or after offset @start,
            or None at EOF or after @timeout s."""
            deadline = time.monotonic() + timeout
            with self.cond:
                while True:
                    m = regex.search(self.buf, start)
                    if m or self.eof:
                        return m
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.cond.wait(min(left, 1.0))

        def data(self):
            with self.cond:
                return bytes(self.buf)

    def __init__(self, name, argv, env=None):
        self.name = name
        self.argv = list(argv)
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.out = Proc._Stream(self.p.stdout)
        self.err = Proc._Stream(self.p.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def stdout(self):
        return self.out.data()

    def stderr(self):
        return self.err.data()

    def ctx(self):
        """What a failure message shows of this process."""
        return (f"\n--- {self.name}: {' '.join(self.argv)}\n--- status {self.p.poll()}\n"
                f"--- stdout (end):\n{self.stdout()[-2000:].decode(errors='replace')}\n"
                f"--- stderr (end):\n{self.stderr()[-3000:].decode(errors='replace')}")

    def wait_out(self, regex, start=0, timeout=HANG_GUARD_S, what=None):
        """The match of @regex (a compiled pattern, or bytes or str compiled
        here with re.M) in stdout at or after @start; fails after @timeout s
        or at EOF."""
        return self._wait(self.out, regex, start, timeout, what, "stdout")

    def wait_err(self, regex, start=0, timeout=HANG_GUARD_S, what=None):
        return self._wait(self.err, regex, start, timeout, what, "stderr")

    def _wait(self, stream, regex, start, timeout, what, where):
        import re
        if isinstance(regex, str):
            regex = regex.encode()
        if isinstance(regex, bytes):
            regex = re.compile(regex, re.M)  # ^ and $ at every line
        m = stream.wait(regex, start, timeout)
        if not m:
            ended = "its output ended" if stream.eof else f"{timeout:.0f} s passed"
            raise TestFailure(f"{self.name}: no {what or regex.pattern!r} on {where} "
                              f"({ended}){self.ctx()}")
        return m

    def send(self, data):
        """Write @data to the process's stdin."""
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def wait(self, timeout=HANG_GUARD_S):
        """Wait for the exit; its status (negative: killed by that signal).
        Fails after @timeout s."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"{self.name}: still running after {timeout:.0f} s{self.ctx()}")
        self.out.thread.join(10)
        self.err.thread.join(10)
        return rc

    def kill(self):
        """SIGKILL it if it still runs, and reap it."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for f in (self.p.stdin, ):
            try:
                f.close()
            except OSError:
                pass


# ---- two network namespaces joined by a veth pair (migrate_tests.py) ----

_CLONE_NEWNET = 0x40000000
_netns_pairs = 0


def setns_net(fd):
    """Move the calling thread into the network namespace open at @fd."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class NetnsPair:
    """Namespaces <prefix>-<pid>-<n>-a and -b, joined by a veth pair whose
    ends are up with addresses .ip_a and .ip_b (a /24 of 10.78.n.0), and
    lo up in both; deleted on the way out whatever happened.  Raises Skip
    where namespaces cannot be made (not root, no CAP_NET_ADMIN, no `ip`).
    The test process itself stays in its own namespace: run programs in one
    with .argv(), make sockets in one with .socket()."""

    def __init__(self, prefix="vmrun-mig"):
        global _netns_pairs
        _netns_pairs += 1
        n = _netns_pairs % 250 + 1
        base = f"{prefix}-{os.getpid()}-{_netns_pairs}"
        self.a, self.b = base + "-a", base + "-b"
        self.ip_a, self.ip_b = f"10.78.{n}.1", f"10.78.{n}.2"
        self.made = []

    def _ip(self, *args):
        p = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=HANG_GUARD_S)
        return p.returncode, p.stdout.decode(errors="replace").strip()

    def __enter__(self):
        if not shutil.which("ip"):
            raise Skip("`ip` (iproute2) is missing: cannot make network namespaces")
        try:
            for ns in (self.a, self.b):
                rc, msg = self._ip("netns", "add", ns)
                if rc != 0:
                    if os.geteuid() != 0 or "ermission" in msg or "not permitted" in msg:
                        raise Skip("cannot create a network namespace (needs root or "
                                   f"CAP_NET_ADMIN): {msg}")
                    raise TestFailure(f"ip netns add {ns}: {msg}")
                self.made.append(ns)
            steps = [("link", "add", "veth-a", "netns", self.a, "type", "veth", "peer",
                      "name", "veth-b", "netns", self.b)]
            for ns, dev, ip in ((self.a, "veth-a", self.ip_a), (self.b, "veth-b", self.ip_b)):
                steps += [("-n", ns, "link", "set", "lo", "up"),
                          ("-n", ns, "addr", "add", ip + "/24", "dev", dev),
                          ("-n", ns, "link", "set", dev, "up")]
            for s in steps:
                rc, msg = self._ip(*s)
                if rc != 0:
                    if "ermission" in msg or "not supported" in msg.lower():
                        raise Skip(f"cannot make a veth pair between namespaces: ip {' '.join(s)}: "
                                   f"{msg}")
                    raise TestFailure(f"ip {' '.join(s)}: {msg}")
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, *exc):
        self._delete()
        return False

    def _delete(self):
        for ns in self.made:
            self._ip("netns", "del", ns)
        self.made = []

    def argv(self, side, argv):
        """@argv run inside namespace @side ("a" or "b")."""
        return ["ip", "netns", "exec", self.a if side == "a" else self.b] + list(argv)

    def socket(self, side, family=socket.AF_INET, kind=socket.SOCK_STREAM):
        """A socket made inside namespace @side (the thread goes there and
        comes back; the socket stays in the namespace)."""
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            fd = os.open(f"/run/netns/{self.a if side == 'a' else self.b}", os.O_RDONLY)
            try:
                setns_net(fd)
            finally:
                os.close(fd)
            try:
                return socket.socket(family, kind)
            finally:
                setns_net(orig)
        finally:
            os.close(orig)


def remove_stale_netns(prefix):
    """Namespaces <prefix>-<pid>-... that a killed run of a test left behind
    (its process is gone)."""
    import re
    p = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=HANG_GUARD_S)
    for line in p.stdout.decode().splitlines():
        m = re.match(re.escape(prefix) + r"-(\d+)-\S+", line)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", m.group(0)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=HANG_GUARD_S)
