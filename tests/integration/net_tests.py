#!/usr/bin/env python3
"""Network tests: the `net` test guest (tests/guest/net.c) on vmrun's
virtio-net over a tap, in a network namespace each test creates for itself.

Usage: net_tests.py --vmrun PATH --guests DIR TEST [TEST...]
       net_tests.py --list

Each TEST is one function below (one ctest test, labels "guest" and "net").
Exit 0 when all pass, 1 on a failure, 77 (ctest's skip code) when /dev/kvm is
missing or network namespaces cannot be created (not root, no
CAP_NET_ADMIN), with a message saying so.

A test makes the namespace vmrun-test-<pid>-<n>, taps (and a bridge) in it
with host addresses, starts vmrun through `ip netns exec`, and deletes the
namespace at the end whatever happened.  The test process itself joins the
namespace (setns) for its sockets.  Nothing sleeps to synchronise: every
wait is on a guest output line or a socket, with a timeout.  Expected values
come from the guest's contract (tests/guest/README.md, "net") and from
computations here (checksums, payloads), never from vmrun's output.
"""
import ctypes
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

VMRUN = None
GUESTS = None
# The virtio transport of the --net devices (--transport).
TRANSPORT = "mmio"
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 120
REPLY_TIMEOUT_S = 5  # one round trip with the interpreted guest (ping -W 5)
CLONE_NEWNET = 0x40000000
HOST_IP = "10.0.3.1"
ECHO_PORT = 7
CTL_PORT = 9


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (SKIP, Skip, TestFailure, add_guest_args, check,  # noqa: E402
                     guest_elf, guest_setup, run_main, add_transport_arg, with_transport)


def guest(name):
    return guest_elf(GUESTS, name)


def sh(*args):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=HANG_GUARD_S)
    check(p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}): {p.stdout.decode()}")


_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


_ns_count = 0


class Netns:
    """A network namespace for one test; the process joins it while inside
    the with-block, and it is deleted on the way out whatever happened."""

    def __enter__(self):
        global _ns_count
        _ns_count += 1
        self.name = f"vmrun-test-{os.getpid()}-{_ns_count}"
        try:
            p = subprocess.run(["ip", "netns", "add", self.name], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=HANG_GUARD_S)
        except FileNotFoundError:
            raise TestFailure("`ip` (iproute2) is missing: scripts/install-deps.sh installs it")
        if p.returncode != 0:
            msg = p.stdout.decode().strip()
            if os.geteuid() != 0 or "ermission" in msg or "not permitted" in msg:
                raise Skip(f"cannot create a network namespace (needs root or CAP_NET_ADMIN): {msg}")
            raise TestFailure(f"ip netns add {self.name}: {msg}")
        self.orig = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                setns(fd)
            finally:
                os.close(fd)
            sh("ip", "link", "set", "lo", "up")
        except BaseException:
            self._leave()
            raise
        return self

    def _leave(self):
        try:
            setns(self.orig)
        finally:
            os.close(self.orig)
            subprocess.run(["ip", "netns", "del", self.name], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=HANG_GUARD_S)

    def __exit__(self, *exc):
        self._leave()
        return False

    def add_tap(self, tap, addr=None, bridge=None):
        sh("ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
        # No IPv6 chatter (router solicitations, MLD) for the guest to wade through.
        with open(f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6", "w") as f:
            f.write("1")
        if bridge:
            sh("ip", "link", "set", tap, "master", bridge)
        if addr:
            sh("ip", "addr", "add", addr, "dev", tap)
        sh("ip", "link", "set", tap, "up")

    def add_bridge(self, br, addr):
        sh("ip", "link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        with open(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6", "w") as f:
            f.write("1")
        sh("ip", "addr", "add", addr, "dev", br)
        sh("ip", "link", "set", br, "up")


class Guest:
    """One vmrun running the net guest on a tap of namespace @ns."""

    def __init__(self, ns, tap, ip, extra="", mac=None, stdin=subprocess.DEVNULL, queues=1,
                 vmrun_args=None):
        """@vmrun_args: vmrun's arguments instead of a first boot of the net
        guest on @tap (a restore)."""
        self.ip = ip
        self.err = tempfile.TemporaryFile()
        net = f"tap={tap}" + (f",mac={mac}" if mac else "") + (f",queues={queues}" if queues > 1 else "")
        if vmrun_args is None:
            vmrun_args = ["--kernel", guest("net"), "--cmdline", f"net.ip={ip} {extra}".strip(),
                          "--net", net]
        self.cmd = ["ip", "netns", "exec", ns.name, VMRUN,
                    *with_transport(vmrun_args, TRANSPORT), "--timeout", str(HANG_GUARD_S + 30)]
        self.p = subprocess.Popen(self.cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=self.err)
        self.out = b""

    def ctx(self):
        self.err.seek(0)
        return (f"\n--- command: {' '.join(self.cmd)}\n--- status {self.p.poll()}\n"
                f"--- stdout:\n{self.out.decode(errors='replace')}\n"
                f"--- stderr:\n{self.err.read().decode(errors='replace')}")

    def wait_line(self, prefix, timeout=HANG_GUARD_S, poke=None, poke_every=3.0):
        """The first complete stdout line starting with @prefix; @poke() is
        called at once and then every @poke_every seconds until it shows."""
        deadline = time.monotonic() + timeout
        next_poke = time.monotonic()
        fd = self.p.stdout.fileno()
        while True:
            for line in self.out.split(b"\n")[:-1]:
                if line.startswith(prefix.encode()):
                    return line.decode()
            now = time.monotonic()
            check(now < deadline, f"timed out waiting for {prefix!r}{self.ctx()}")
            if poke and now >= next_poke:
                poke()
                next_poke = now + poke_every
            wait = min(deadline, next_poke if poke else deadline) - now
            r, _, _ = select.select([fd], [], [], max(wait, 0.01))
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise TestFailure(f"vmrun ended while waiting for {prefix!r}{self.wait_ctx()}")
                self.out += chunk

    def wait_ctx(self):
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return self.ctx()

    def ready(self):
        line = self.wait_line("net: ready")
        # A first boot says which transport its driver found the NIC on.
        check(b"net: transport" not in self.out or
              f"net: transport {TRANSPORT}\n".encode() in self.out,
              f"the guest's NIC is not on {TRANSPORT}{self.ctx()}")
        f = line.split()
        check(len(f) == 16 and f[2] == "mac" and f[4] == "ip" and f[5] == self.ip and
              f[6] == "mtu" and f[8] == "csum" and f[10] == "guest_csum" and f[12] == "tso" and
              f[14] == "link", f"bad ready line {line!r}{self.ctx()}")
        self.mac = f[3]
        self.mtu = int(f[7])
        self.offload = int(f[9])
        self.tso = int(f[13])
        check(f[11] == f[9], f"csum and guest_csum differ: {line!r}")
        check(f[15] == "up", f"link not up: {line!r}")
        return line

    def quit(self, sock):
        """Send "quit" to the control port until the stats line shows; check
        the exit status (guest exit 0) and return the counters."""
        line = self.wait_line("net: stats", poke=lambda: sock.sendto(b"quit", (self.ip, CTL_PORT)))
        try:
            rc = self.p.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"vmrun did not end after the stats line{self.ctx()}")
        check(rc == 1, f"expected exit status 1 (guest exit 0), got {rc}{self.ctx()}")
        f = line.split()[2:]
        stats = {f[i]: int(f[i + 1]) for i in range(0, len(f) - 1, 2)}
        for k in ("bad_csum", "bad_frame", "bad_hdr", "bad_used", "tx_full"):
            check(stats[k] == 0, f"guest counted {k} {stats[k]}{self.ctx()}")
        return stats

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    return s


def inet_sum(data):
    """The 16-bit ones'-complement sum of @data (RFC 1071), not inverted."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def recv_matching(sock, match, timeout=REPLY_TIMEOUT_S):
    """Receive until match(data, addr) is true; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([sock], [], [], left)
        if r:
            data, addr = sock.recvfrom(70000)
            if match(data, addr):
                return data


def ctl(g, sock, cmd, line_prefix=None):
    """Send control command @cmd to guest @g and wait for its "ok" (and the
    guest line @line_prefix, if given); resent every 3 s until answered."""
    if line_prefix:
        return g.wait_line(line_prefix, poke=lambda: sock.sendto(cmd, (g.ip, CTL_PORT)))
    for _ in range(HANG_GUARD_S // 3):
        sock.sendto(cmd, (g.ip, CTL_PORT))
        if recv_matching(sock, lambda d, a: a == (g.ip, CTL_PORT) and d == b"ok", 3):
            return
    raise TestFailure(f"no ok for control command {cmd!r}{g.ctx()}")


def ping(ip, n, first_timeout=HANG_GUARD_S / 4):
    """@n ICMP echo requests from a raw socket, each sent when the previous
    reply arrived (an adaptive interval); every reply must come within
    REPLY_TIMEOUT_S (the first: @first_timeout, which covers ARP) with the
    request's id, sequence and payload, and valid IP and ICMP checksums."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = random.randrange(1, 0xFFFF)
    got = 0
    try:
        for seq in range(n):
            payload = os.urandom(56)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            c = 0xFFFF - inet_sum(hdr + payload)
            s.sendto(struct.pack("!BBHHH", 8, 0, c, ident, seq) + payload, (ip, 0))

            def match(d, a):
                ihl = (d[0] & 15) * 4
                return (a[0] == ip and len(d) >= ihl + 8 and d[ihl] == 0 and
                        struct.unpack("!HH", d[ihl + 4:ihl + 8]) == (ident, seq))
            d = recv_matching(s, match, first_timeout if seq == 0 else REPLY_TIMEOUT_S)
            check(d is not None, f"echo request {seq}: no reply within the timeout "
                                 f"({got} of {n} replies so far)")
            ihl = (d[0] & 15) * 4
            check(inet_sum(d[:ihl]) == 0xFFFF, f"echo reply {seq}: bad IP header checksum")
            tot = struct.unpack("!H", d[2:4])[0]
            icmp = d[ihl:tot]
            check(inet_sum(icmp) == 0xFFFF, f"echo reply {seq}: bad ICMP checksum")
            check(icmp[1] == 0 and icmp[8:] == payload, f"echo reply {seq}: payload differs")
            got += 1
    finally:
        s.close()
    return got


def udp_echo(sock, g, sizes):
    """One datagram of random bytes per size to @g's echo port; each must
    come back whole from that port within REPLY_TIMEOUT_S."""
    for n in sizes:
        data = os.urandom(n)
        sock.sendto(data, (g.ip, ECHO_PORT))
        d = recv_matching(sock, lambda d, a: a == (g.ip, ECHO_PORT), REPLY_TIMEOUT_S)
        check(d is not None, f"UDP echo of {n} bytes: no reply{g.ctx()}")
        check(d == data, f"UDP echo of {n} bytes: got {len(d)} bytes, "
                         f"{'same length, content differs' if len(d) == n else 'length differs'}")


def single(ns, extra=""):
    """A namespace with tap0 (host 10.0.3.1/24) and the net guest at .2."""
    ns.add_tap("tap0", HOST_IP + "/24")
    g = Guest(ns, "tap0", "10.0.3.2", extra)
    g.ready()
    return g


# ---------------------------------------------------------------- tests

def test_net_ping_100():
    with Netns() as ns:
        g = single(ns)
        sock = udp_socket()
        try:
            got = ping(g.ip, 100)
            check(got == 100, f"{got} of 100 replies")
            st = g.quit(sock)
        finally:
            g.kill()
        check(st["icmp"] == 100, f"guest answered {st['icmp']} echo requests, want 100")
        check(st["arp"] >= 1, "guest answered no ARP request")


UDP_SIZES = list(range(1, 65)) + [65, 100, 127, 128, 255, 256, 511, 512, 513, 1000, 1024,
                                  1400, 1470, 1471, 1472]


def test_net_udp_echo_sizes():
    with Netns() as ns:
        g = single(ns)
        sock = udp_socket()
        try:
            check(g.mtu == 1500, f"guest reports MTU {g.mtu}, want 1500")
            udp_echo(sock, g, UDP_SIZES)
            # Past the MTU the host must refuse (DF, path MTU 1500), not fragment.
            try:
                sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
                sock.sendto(b"x" * 1473, (g.ip, ECHO_PORT))
                raise TestFailure("a 1473-byte datagram with DF was accepted on a 1500 MTU")
            except OSError:
                pass
            st = g.quit(sock)
        finally:
            g.kill()
        check(st["udp"] == len(UDP_SIZES), f"guest echoed {st['udp']} datagrams, "
                                           f"want {len(UDP_SIZES)}")


def two_guests(ns, a_extra, b_extra):
    ns.add_bridge("br0", HOST_IP + "/24")
    ns.add_tap("tapa", bridge="br0")
    ns.add_tap("tapb", bridge="br0")
    b = Guest(ns, "tapb", "10.0.3.3", b_extra, mac="52:54:00:12:34:03")
    a = Guest(ns, "tapa", "10.0.3.2", f"net.peer=10.0.3.3 net.count=5 {a_extra}",
              mac="52:54:00:12:34:02")
    return a, b


def test_net_two_guests_bridge():
    """Guest A resolves B by ARP through the bridge and exchanges UDP echo
    and ICMP echo with it.  A sends with the checksum offload (NEEDS_CSUM);
    B negotiated none, so the host completed A's checksums and B verified
    them in software (a wrong partial checksum is a bad_csum there)."""
    with Netns() as ns:
        a, b = two_guests(ns, "net.offload=1", "net.offload=0")
        sock = udp_socket()
        try:
            check(a.ready() and a.mac == "52:54:00:12:34:02", f"A has MAC {a.mac}{a.ctx()}")
            check(b.ready() and b.mac == "52:54:00:12:34:03", f"B has MAC {b.mac}{b.ctx()}")
            check(a.offload == 1 and b.offload == 0, "offload negotiation as asked")
            line = ctl(a, sock, b"go", "net: peer ")
            want = "net: peer 10.0.3.3 mac 52:54:00:12:34:03 udp 5/5 icmp 5/5"
            check(line == want, f"A printed {line!r}, want {want!r}{a.ctx()}")
            sa = a.quit(sock)
            sb = b.quit(sock)
        finally:
            a.kill()
            b.kill()
        check(sb["arp"] >= 1 and sb["udp"] >= 5 and sb["icmp"] >= 5,
              f"B answered arp {sb['arp']} udp {sb['udp']} icmp {sb['icmp']}")
        check(sa["csum_tx"] >= 5, f"A sent {sa['csum_tx']} NEEDS_CSUM frames, want >= 5")
        check(sb["csum_tx"] == 0 and sb["rx_needs_csum"] == 0 and sb["rx_data_valid"] == 0,
              f"B negotiated no offload but counted {sb}")
        check(sb["rx_checked"] >= 10, f"B verified {sb['rx_checked']} checksums, want >= 10")


PACKET_VNET_HDR = 15
ETH_P_ALL = 3


def capture_socket(ifname):
    """An AF_PACKET socket on @ifname that returns each frame after a
    struct virtio_net_hdr (10 bytes) describing its offload state."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(263, PACKET_VNET_HDR, 1)  # SOL_PACKET
    s.bind((ifname, ETH_P_ALL))
    return s


def check_guest_udp_csums(cap, guest_ip, n_want):
    """Read the frames captured so far; for each UDP datagram from
    @guest_ip's echo port, finish the checksum as the header asks and
    compare it with one computed here from scratch.  Returns how many
    carried NEEDS_CSUM; at least @n_want datagrams must be seen."""
    seen = partial = 0
    src = socket.inet_aton(guest_ip)
    while True:
        r, _, _ = select.select([cap], [], [], 0)
        if not r:
            break
        d = cap.recv(70000)
        flags, gso, hdr_len, gso_size, cstart, coff = struct.unpack("<BBHHHH", d[:10])
        f = bytearray(d[10:])
        if len(f) < 42 or f[12:14] != b"\x08\x00" or f[23] != 17 or f[26:30] != src:
            continue
        ihl = (f[14] & 15) * 4
        udp = 14 + ihl
        if struct.unpack("!H", f[udp:udp + 2])[0] != ECHO_PORT:
            continue
        seen += 1
        ulen = struct.unpack("!H", f[udp + 4:udp + 6])[0]
        pseudo = f[26:34] + struct.pack("!BBH", 0, 17, ulen)
        zeroed = f[udp:udp + 6] + b"\0\0" + f[udp + 8:udp + ulen]
        want = 0xFFFF - inet_sum(bytes(pseudo + zeroed)) or 0xFFFF
        if flags & 1:
            partial += 1
            check(cstart == udp and coff == 6,
                  f"NEEDS_CSUM with csum_start {cstart} csum_offset {coff}, want {udp} 6")
            c = 0xFFFF - inet_sum(bytes(f[cstart:udp + ulen]))
            got = c or 0xFFFF
        else:
            got = struct.unpack("!H", f[udp + 6:udp + 8])[0]
        check(got == want, f"UDP checksum of a {ulen - 8}-byte echo: 0x{got:04x}, want 0x{want:04x}"
                           f" ({'partial' if flags & 1 else 'complete'})")
    check(seen >= n_want, f"captured {seen} echo replies, want >= {n_want}")
    return partial


def test_net_checksum_offload():
    """CSUM and GUEST_CSUM: the guest's UDP echo replies carry NEEDS_CSUM and
    only the pseudo-header sum; finished as the header asks they must give
    the checksum computed here, and they reach a normal UDP socket.  The
    host's datagrams reach the guest marked NEEDS_CSUM or DATA_VALID.  With
    net.offload=0 the guest checksums everything itself and sees no flags."""
    sizes = [1, 2, 3, 17, 64, 333, 1000, 1472]
    for offload in (1, 0):
        with Netns() as ns:
            g = single(ns, f"net.offload={offload}")
            sock = udp_socket()
            cap = capture_socket("tap0")
            try:
                check(g.offload == offload, f"guest reports csum {g.offload}, want {offload}")
                udp_echo(sock, g, sizes)
                partial = check_guest_udp_csums(cap, g.ip, len(sizes))
                st = g.quit(sock)
            finally:
                cap.close()
                g.kill()
            if offload:
                check(partial >= len(sizes), f"{partial} of {len(sizes)} echo replies "
                                             "carried NEEDS_CSUM")
                check(st["csum_tx"] >= len(sizes), f"guest counted csum_tx {st['csum_tx']}")
                check(st["rx_needs_csum"] + st["rx_data_valid"] >= len(sizes),
                      f"guest got {st['rx_needs_csum']} NEEDS_CSUM and {st['rx_data_valid']} "
                      f"DATA_VALID frames, want >= {len(sizes)}")
            else:
                check(partial == 0, f"{partial} NEEDS_CSUM frames without the offload")
                check(st["csum_tx"] == 0 and st["rx_needs_csum"] == 0 and
                      st["rx_data_valid"] == 0, f"offload counters without offload: {st}")
                check(st["rx_checked"] >= len(sizes), f"guest verified {st['rx_checked']}")


def test_net_malformed_tx_chains():
    """TX chains no driver may send (a 8-byte header, a 70000-byte frame, a
    device-writable buffer, a 2-byte frame) are handed back; vmrun keeps
    running and the guest still answers pings and UDP."""
    with Netns() as ns:
        g = single(ns)
        sock = udp_socket()
        cap = None
        try:
            check(ping(g.ip, 3) == 3, "pings before")
            cap = capture_socket("tap0")
            line = ctl(g, sock, b"bad", "net: malformed ")
            check(line == "net: malformed 4 sent, 4 returned", f"got {line!r}{g.ctx()}")
            check(recv_matching(sock, lambda d, a: d == b"ok", REPLY_TIMEOUT_S), "no ok for bad")
            check(g.p.poll() is None, f"vmrun ended{g.ctx()}")
            # Nothing of the four may have reached the host: from the guest,
            # only the "ok" datagrams (and ARP) were sent meanwhile.
            while select.select([cap], [], [], 0)[0]:
                d, addr = cap.recvfrom(70000)
                f = d[10:]
                if addr[2] == socket.PACKET_OUTGOING or f[12:14] == b"\x08\x06":
                    continue
                check(len(f) >= 38 and f[12:14] == b"\x08\x00" and f[23] == 17 and
                      f[34:36] == struct.pack("!H", CTL_PORT),
                      f"a {len(f)}-byte frame from the guest reached the host: {f[:64].hex()}")
            check(ping(g.ip, 20, REPLY_TIMEOUT_S) == 20, "pings after")
            udp_echo(sock, g, [1, 1472])
            st = g.quit(sock)
        finally:
            if cap:
                cap.close()
            g.kill()
        check(st["icmp"] == 23, f"guest answered {st['icmp']} echo requests, want 23")


def thread_cpu_s(pid, tid):
    """CPU time (user + system, seconds) thread @tid of process @pid used."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_net_rx_backpressure():
    """A guest that posts no RX buffer: the frames wait in the tap while
    vmrun's device thread sleeps (it must not poll the tap); once the
    guest posts buffers, every one of them arrives, none lost."""
    with Netns() as ns:
        ns.add_tap("tap0", HOST_IP + "/24")
        g = Guest(ns, "tap0", "10.0.3.2", "net.rxwait=1", stdin=subprocess.PIPE)
        sock = udp_socket()
        try:
            g.ready()
            # The guest cannot answer ARP yet.
            sh("ip", "neigh", "replace", g.ip, "lladdr", g.mac, "dev", "tap0", "nud", "permanent")
            payloads = {n: os.urandom(n) for n in range(1, 1472, 15)}
            for d in payloads.values():
                sock.sendto(d, (g.ip, ECHO_PORT))
            # vmrun's pid is that of `ip netns exec`, which execs it; its
            # main thread runs the event loop.  A measuring window, not a
            # synchronisation: a thread polling the tap would use most of it.
            pid = g.p.pid
            check(os.path.exists(f"/proc/{pid}/task/{pid}"), "vmrun is gone")
            c0, t0 = thread_cpu_s(pid, pid), time.monotonic()
            time.sleep(1.0)
            used, wall = thread_cpu_s(pid, pid) - c0, time.monotonic() - t0
            check(used < 0.25 * wall, f"vmrun's event loop used {used:.2f} s of CPU in {wall:.2f} s "
                                      "while the guest posted no RX buffer")
            g.p.stdin.write(b"x")
            g.p.stdin.flush()
            g.wait_line("net: rx buffers posted")
            while payloads:
                d = recv_matching(sock, lambda d, a: a == (g.ip, ECHO_PORT), REPLY_TIMEOUT_S)
                check(d is not None, f"{len(payloads)} datagrams never came back, sizes "
                                     f"{sorted(payloads)[:10]}...{g.ctx()}")
                check(payloads.pop(len(d), None) == d, f"an echo of {len(d)} bytes differs "
                                                       "or came twice")
            check(ping(g.ip, 3) == 3, "pings after")
            st = g.quit(sock)
        finally:
            g.kill()
        check(st["udp"] == len(range(1, 1472, 15)), f"guest echoed {st['udp']}")


def test_net_tap_deleted():
    """The tap is deleted under a running guest: vmrun stops watching it
    (a detached tap reports EPOLLERR forever; a loop that kept it would
    spin a core and log without end), says so once, tells the guest the
    link is down, and keeps running."""
    with Netns() as ns:
        ns.add_tap("tap0", HOST_IP + "/24")
        g = Guest(ns, "tap0", "10.0.3.2")
        try:
            g.ready()
            check(ping(g.ip, 3) == 3, f"pings before{g.ctx()}")
            sh("ip", "link", "del", "tap0")
            # A measuring window, not a synchronisation (as above).
            pid = g.p.pid
            c0, t0 = thread_cpu_s(pid, pid), time.monotonic()
            time.sleep(1.0)
            used, wall = thread_cpu_s(pid, pid) - c0, time.monotonic() - t0
            check(g.p.poll() is None, f"vmrun ended when its tap went away{g.ctx()}")
            check(used < 0.25 * wall, f"vmrun's event loop used {used:.2f} s of CPU in "
                                      f"{wall:.2f} s after its tap was deleted{g.ctx()}")
            g.err.seek(0)
            err = g.err.read().decode(errors="replace")
            check(err.count("tap tap0 was deleted; the link is down") == 1 and
                  err.count("warning") == 1, f"want one warning about the tap:\n{err}")
        finally:
            g.kill()


def tap_queues(tap):
    """(numqueues, numdisabled) of a multi-queue tap, from `ip -d link`."""
    p = subprocess.run(["ip", "-d", "link", "show", tap], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=HANG_GUARD_S)
    m = re.search(r"multi_queue numqueues (\d+) numdisabled (\d+)", p.stdout)
    check(m, f"{tap} is not a multi-queue tap:\n{p.stdout}")
    return int(m.group(1)), int(m.group(2))


def test_net_mq_tap():
    """queues=N: an existing single-queue tap is refused with a hint; a tap
    vmrun creates is a multi-queue one with N queues, of which a driver
    without MQ (the net guest) uses one, the other detached, as the
    kernel reports it; traffic flows on that pair."""
    with Netns() as ns:
        ns.add_tap("tap0", HOST_IP + "/24")
        p = subprocess.run(["ip", "netns", "exec", ns.name, VMRUN] + with_transport(
                           ["--kernel", guest("net"), "--cmdline", "net.ip=10.0.3.2",
                            "--net", "tap=tap0,queues=2"], TRANSPORT),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=HANG_GUARD_S)
        check(p.returncode == 4 and "multi_queue" in p.stderr,
              f"queues=2 on a single-queue tap: status {p.returncode}, stderr {p.stderr!r}")
        sh("ip", "link", "del", "tap0")
        g = Guest(ns, "tapmq", "10.0.3.2", queues=3)
        sock = udp_socket()
        try:
            g.ready()
            check(tap_queues("tapmq") == (1, 2), f"queues in use: {tap_queues('tapmq')}, "
                                                 f"wanted 1 attached and 2 detached")
            with open("/proc/sys/net/ipv6/conf/tapmq/disable_ipv6", "w") as f:
                f.write("1")
            sh("ip", "addr", "add", HOST_IP + "/24", "dev", "tapmq")
            sh("ip", "link", "set", "tapmq", "up")
            check(ping(g.ip, 20) == 20, f"pings over pair 0 of a 3-queue tap{g.ctx()}")
            udp_echo(sock, g, [1, 100, 1472])
            g.quit(sock)
        finally:
            g.kill()


def tcp_pattern(off, n):
    """Bytes [off, off + n) of the guest's TCP stream pattern (both ways):
    byte i is (i * 131 + (i >> 8)) mod 256."""
    return bytes(((i * 131 + (i >> 8)) & 0xFF) for i in range(off, off + n))


def recv_exactly(conn, n, timeout):
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        check(left > 0, f"TCP: {len(buf)} of {n} bytes within {timeout} s")
        r, _, _ = select.select([conn], [], [], left)
        if r:
            chunk = conn.recv(n - len(buf))
            check(chunk, f"TCP: connection closed after {len(buf)} of {n} bytes")
            buf += chunk
    return bytes(buf)


TCP_PORT = 5001
TCP_TO_GUEST = 256 << 10


def tso_run(tso):
    """Connect to the guest's TCP responder: it sends one segment of the
    window's size (with net.tso one GSO frame, gso_type TCPV4) which must
    arrive byte for byte; then the host sends TCP_TO_GUEST bytes, which the
    guest checks, and closes.  Returns the guest's counters and its two
    TCP lines."""
    with Netns() as ns:
        g = single(ns, f"net.tso={tso}")
        sock = udp_socket()
        try:
            check(g.tso == tso, f"guest reports tso {g.tso}, want {tso}")
            conn = socket.create_connection((g.ip, TCP_PORT), timeout=HANG_GUARD_S / 4)
            sent = g.wait_line("net: tcp sent ")
            f = sent.split()
            check(f[4] == "bytes" and f[8] == "gso" and f[10] == "mss", f"bad line {sent!r}")
            n = int(f[3])
            check(n > 1500, f"the guest sent {n} bytes only: the window is that small?")
            data = recv_exactly(conn, n, HANG_GUARD_S / 4)
            check(data == tcp_pattern(0, n), f"TCP: the {n} bytes from the guest differ")
            conn.sendall(tcp_pattern(0, TCP_TO_GUEST))
            conn.shutdown(socket.SHUT_WR)
            closed = g.wait_line("net: tcp closed ")
            check(conn.recv(1) == b"", "TCP: no FIN from the guest")
            conn.close()
            st = g.quit(sock)
        finally:
            g.kill()
    want = f"net: tcp closed rx {TCP_TO_GUEST} bytes ok"
    check(closed.startswith(want + " "), f"guest printed {closed!r}, want {want!r}...")
    return st, f, closed


def test_net_tso():
    """HOST_TSO4: the guest's 64 KiB segment goes out as one GSO frame that
    the host splits; GUEST_TSO4 (with MRG_RXBUF): the host's data arrives
    in frames larger than the MTU.  Without net.tso the same exchange
    works with no GSO frame either way."""
    st, sent, closed = tso_run(1)
    check(sent[6] == "1" and sent[9] == "tcpv4" and int(sent[11]) == 1460,
          f"sent as {' '.join(sent)}")
    check(st["gso_tx"] == 1, f"guest counted gso_tx {st['gso_tx']}")
    check(st["gso_rx"] >= 1 and st["max_rx_frame"] > 1514,
          f"no GSO frame over the MTU reached the guest: {closed!r}")
    st, sent, closed = tso_run(0)
    check(sent[9] == "none" and int(sent[6]) == (int(sent[3]) + 1459) // 1460,
          f"sent as {' '.join(sent)} without TSO")
    check(st["gso_tx"] == 0 and st["gso_rx"] == 0 and st["max_rx_frame"] <= 1514,
          f"GSO without net.tso: {st}")


def remove_stale_namespaces():
    """Namespaces this script left behind when it was killed (SIGKILL, a
    ctest timeout): vmrun-test-<pid>-<n> whose process is gone."""
    p = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=HANG_GUARD_S)
    for line in p.stdout.decode().splitlines():
        m = re.match(r"(vmrun-test-(\d+)-\d+)\b", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            subprocess.run(["ip", "netns", "del", m.group(1)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=HANG_GUARD_S)


def on_sigterm(signum, frame):
    # Unwind through the finally blocks: vmrun killed, namespace deleted.
    raise TestFailure(f"killed by signal {signum}")


def drain(sock):
    """Every datagram already waiting on @sock, without waiting for more."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recvfrom(65536)[0])
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return got


def test_net_snapshot_restore():
    """A guest saved while the host talks to it, restored on another tap of the
    same namespace: its counters (guest memory) carry on, the restored device
    receives and sends, and the MAC address stays the saved one."""
    with Netns() as ns, tempfile.TemporaryDirectory() as d:
        ns.add_tap("tap0", HOST_IP + "/24")
        api = os.path.join(d, "api.sock")
        snap = os.path.join(d, "snap")
        g = Guest(ns, "tap0", "10.0.3.2",
                  vmrun_args=["--kernel", guest("net"), "--cmdline", "net.ip=10.0.3.2",
                              "--net", "tap=tap0", "--api-sock", api])
        sock = udp_socket()
        try:
            g.ready()
            mac = g.mac
            check(ping(g.ip, 10) == 10, f"first run: not every ping answered{g.ctx()}")
            # A datagram in flight towards the guest while it is saved: the
            # receive buffers it had posted are handed back, not lost.
            sock.sendto(b"in flight", (g.ip, ECHO_PORT))
            # Paused first, and quit without running again: a first run that
            # went on after the save could answer a datagram the snapshot
            # also holds in its receive ring, and the two runs would both
            # reply, as a cloned machine would.
            r = subprocess.run([VMRUN, "ctl", api, "pause"], capture_output=True,
                               text=True, timeout=HANG_GUARD_S)
            check(r.returncode == 0, f"pause failed: {r.stdout}{r.stderr}{g.ctx()}")
            r = subprocess.run([VMRUN, "ctl", api, "save", f"path={snap}"], capture_output=True,
                               text=True, timeout=HANG_GUARD_S)
            check(r.returncode == 0, f"save failed: {r.stdout}{r.stderr}{g.ctx()}")
            r = subprocess.run([VMRUN, "ctl", api, "quit"], capture_output=True, text=True,
                               timeout=HANG_GUARD_S)
            g.p.wait(timeout=HANG_GUARD_S)
        finally:
            g.kill()
        # The reply to "in flight" comes from the first run (before the pause),
        # or (when the frame was in the guest's receive ring at the save) from
        # the restored guest, or not at all (a frame the device had read but
        # not delivered goes with the old process, as a network may drop it):
        # never twice.
        replies = drain(sock)
        # The guest's ARP cache holds the host's MAC: the new tap takes the
        # old one's address, as the same network would look after a move.
        host_mac = subprocess.run(["ip", "-br", "link", "show", "tap0"], capture_output=True,
                                  text=True, check=True).stdout.split()[2]
        sh("ip", "link", "del", "tap0")
        ns.add_tap("tap1", HOST_IP + "/24")
        sh("ip", "link", "set", "tap1", "address", host_mac)
        g2 = Guest(ns, "tap1", "10.0.3.2", vmrun_args=["--restore", snap, "--restore-tap", "0=tap1",
                                                        "--api-sock", api])
        try:
            # The restored guest prints nothing of its own: its control socket
            # answering means the tap is open and the vCPUs run.
            deadline = time.monotonic() + HANG_GUARD_S
            while subprocess.run([VMRUN, "ctl", api, "query-status"], capture_output=True,
                                 timeout=HANG_GUARD_S).returncode != 0:
                check(g2.p.poll() is None and time.monotonic() < deadline,
                      f"the restored vmrun never answered on its control socket{g2.wait_ctx()}")
                select.select([], [], [], 0.05)
            check(ping(g2.ip, 10) == 10, f"restored: not every ping answered{g2.ctx()}")
            # The guest answers in the order frames arrived: a reply to "in
            # flight" from the restored guest left before the ping replies.
            replies += drain(sock)
            check(all(r == b"in flight" for r in replies) and len(replies) <= 1,
                  f"replies to the datagram sent during the save: {replies!r}")
            udp_echo(sock, g2, [1, 100, 1472])
            out = subprocess.run(["ip", "neigh", "show", "10.0.3.2"], capture_output=True,
                                 text=True).stdout
            check(mac in out, f"the restored guest answers ARP with another MAC: {out!r}, saved {mac}")
            st = g2.quit(sock)
        finally:
            g2.kill()
        # The guest's own counters: 10 before the save, 10 after.
        check(st["icmp"] == 20, f"guest answered {st['icmp']} echo requests in both runs, want 20")


def main():
    def setup(a):
        globals()["TRANSPORT"] = a.transport
        status = guest_setup(a, globals())
        if status is not None:
            return status
        signal.signal(signal.SIGTERM, on_sigterm)
        if os.geteuid() == 0:
            try:
                remove_stale_namespaces()
            except (OSError, subprocess.TimeoutExpired):
                pass
        return None

    def add_args(ap):
        add_guest_args(ap)
        add_transport_arg(ap)

    return run_main(globals(), add_args, setup)


if __name__ == "__main__":
    sys.exit(main())
