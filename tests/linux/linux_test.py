#!/usr/bin/env python3
"""Boot the repository's Linux kernel and busybox initramfs under vmrun.

usage:
  linux_test.py prepare --state FILE
      build (or find in the cache) the kernel and the initramfs, and write
      their paths to FILE as KEY=VALUE lines
  linux_test.py boot --vmrun PATH --state FILE --kernel bzimage|vmlinux
                     --cpus N [--end poweroff|reboot] [--boot linux64|pvh]
                     [--initrd-gzip] [--disk-test [--disk-qcow2]] [--net-test]
      boot once; pass when /init printed its marker, saw N processors and the
      expected command line, and the run ended the way asked for.
      --initrd-gzip hands vmrun the initramfs gzip-compressed (vmrun inflates
      it on the host).
      --disk-test adds a virtio-blk disk (vmrun --disk) that the guest
      kernel's own driver reads and writes: see disk_make() and the
      vmrun.test=blk mode of tests/linux/init.  With --disk-qcow2 the disk
      is a qcow2 overlay over a qcow2 base, and once the guest has read its
      file the test sends it an NMI (`vmrun ctl SOCK nmi`: the kernel must
      report an unknown NMI and carry on) and takes a live snapshot through
      the control socket while the guest goes on writing: see
      run_live_snapshot().
      --net-test (root only, else skipped; --net-queues N for N queue pairs
      on a multi-queue tap) runs vmrun in a fresh network
      namespace with --net tap=... on a tap at 10.0.2.1/24 there; the
      guest kernel's virtio-net driver takes 10.0.2.2/24 and pings the host
      while the host pings the guest (raw ICMP from this script), then the
      host tells the guest over TCP that it is done: see run_net() and the
      vmrun.test=net mode of tests/linux/init.
  linux_test.py boot ... --shell-test
      /init runs an interactive shell on the console (vmrun.test=shell in
      tests/linux/init), and SHELL_INPUT is piped into vmrun's stdin from
      the first instant, while the guest kernel has not even started: the
      shell must run it (print SHELL_WANT) and power off, not time out.
  linux_test.py boot ... --snapshot-test
      (root only, else skipped) one boot with the --disk-qcow2 disk and the
      --net-test network: the guest writes files and talks to the host over
      one TCP connection in a loop (the vmrun.test=snap mode of
      tests/linux/init); after its second step the VM is saved (`vmrun ctl
      SOCK pause`, `save path=DIR`, `quit`) and restored (`vmrun --restore
      DIR --restore-tap 0=TAP`), and the restored guest finishes the loop on
      the same connection: see snapshot_boot().
  linux_test.py boot ... --migrate-test
      (root only, else skipped) the same guest loop, on a Linux bridge at
      10.0.2.1/24 with two taps; after its second step the running guest is
      live-migrated (`vmrun ctl SOCK migrate`) to a second vmrun (`--incoming
      tcp:127.0.0.1:0 --restore-tap 0=<the other tap>`, the same qcow2 path:
      shared storage) while the host pings it every 50 ms, and finishes the
      loop there on the same connection.  The destination's RARP announce
      must come in through its tap and pings sent after the switch must be
      answered; the lost ones and the migration's total and downtime are
      reported: see migrate_boot().
  linux_test.py net-host --guest IP --count N --token T
      (run by --net-test inside the namespace) ping IP N times, send a line
      T and 256 KiB of data to IP's TCP port 5555, and check that the guest
      sends it all back to our port 5556.
  linux_test.py snap-host
      (run by --snapshot-test inside the namespace) accept one connection
      on our TCP port 5557 and print the lines it brings, up to "done ...".
  linux_test.py mig-ping --guest IP --tap TAP
      (run by --migrate-test inside the namespace) ping IP every 50 ms and
      watch TAP for RARP frames, printing both as they happen, until a line
      or the end of stdin: see mig_ping().

What is asserted comes from outside vmrun: the marker and the lines after it
are printed by the guest's /init (tests/linux/init), the processor count by
the guest kernel's /proc/cpuinfo, and whether the nested-host kernel
arguments must be there from this host's /proc/cpuinfo; the disk is made
and checked by sfdisk and e2fsprogs (mkfs.ext4, debugfs, dumpe2fs, e2fsck).
Exit 0 pass, 1 fail, 77 (ctest's skip code) only where /dev/kvm is missing
(or, for --net-test, --snapshot-test and --migrate-test, where this is not
root or has no `ip`), saying so.
"""
import argparse
import gzip
import hashlib
import json
import os
import random
import re
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77


def kernel_config_has(option):
    """Whether tests/linux/kernel.config (the test kernel's fragment) sets
    @option=y: the boots expect what that kernel can do."""
    with open(os.path.join(HERE, "kernel.config")) as f:
        return any(line.strip() == f"{option}=y" for line in f)


KERNEL_ACPI = kernel_config_has("CONFIG_ACPI")
KERNEL_PVPANIC = kernel_config_has("CONFIG_PVPANIC_PCI")
# vmrun's documented exit statuses (README): poweroff through ACPI's sleep
# control register (0), or, without ACPI, every vCPU halted (10); guest
# reset (ACPI's reset register or the i8042); a panic reported through
# pvpanic (16).
STATUS = {"poweroff": 0 if KERNEL_ACPI else 10, "reboot": 6, "panic": 16}
# The --exit-json reason of an end through ACPI's registers.
ACPI_REASON = {"poweroff": "ACPI poweroff (S5)", "reboot": "ACPI reset register"}
MARKER = "VMRUN-LINUX-INIT-OK"
NESTED_ARGS = "noxsave no-kvmclock pty.legacy_count=0 tsc=reliable"
# Generous: about 25 s on a nested host where guest kernel code is
# interpreted, a second with VT-x/AMD-V.
BOOT_TIMEOUT_S = 400
# The --disk-test image: an MBR with partition 1 from sector 2048 (1 MiB) to
# the end.  Small: the guest kernel's work on it is interpreted.
DISK_BYTES = 16 << 20
PART_START_SECTOR = 2048
# Debian packages of the host tools --disk-test runs; prepare installs them.
DISK_PACKAGES = ("e2fsprogs", "fdisk", "qemu-utils")
# --net-test: the host's end and the guest's address (tests/linux/init).
NET_HOST_IP = "10.0.2.1"
NET_GUEST_IP = "10.0.2.2"
NET_PINGS = 20
NET_PORT = 5555
NET_BACK_PORT = 5556  # the guest sends the data back here
NET_BULK_BYTES = 256 << 10
# --shell-test: what is piped into vmrun from the start, and the line the
# guest's shell must print (computed there: the typed text, which the
# terminal echoes, does not contain it).
SHELL_INPUT = b"echo hi-$((6*7))\npoweroff -f\n"
SHELL_WANT = "hi-42"
# --snapshot-test: the host's TCP port for the guest's step lines, the
# guest's steps, and the step after which the host saves the VM.
SNAP_PORT = 5557
SNAP_STEPS = 6
SNAP_SAVE_AFTER = 2
# --migrate-test: the guest's steps (vmrun.test=snap), the step after which
# the host migrates it, the host's ping interval, and how many pings sent
# after the switch must come back before the host stops pinging.
MIG_STEPS = 8
MIG_AFTER = 2
MIG_PING_INTERVAL_S = 0.05
MIG_PINGS_AFTER = 20
# A ping not answered this long after the host stopped sending counts as
# lost (a busy interpreted guest kernel answers in up to about 0.6 s).
MIG_PING_GRACE_S = 3


class HostToolError(Exception):
    pass


def host_tool(args, stdin=None):
    """Run a host tool (looked up in PATH and the sbin directories, which a
    user's PATH may lack); return its stdout, raise HostToolError when it
    fails."""
    path = shutil.which(args[0], path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise HostToolError(f"{args[0]} not found: `linux_test.py prepare` installs "
                            f"{' and '.join(DISK_PACKAGES)}")
    p = subprocess.run([path] + args[1:], input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise HostToolError(f"{' '.join(args)}: status {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


def disk_make(tmp, host_text):
    """Write tmp/disk.img for --disk-test: a DOS partition table (sfdisk)
    with one Linux partition; in it an ext4 filesystem (mkfs.ext4, on a
    separate file then copied in: no loop device, no root) holding /host.txt
    = host_text (debugfs write).  Return (path, partition's first byte, its
    length), the geometry as sfdisk reads the table back."""
    disk = os.path.join(tmp, "disk.img")
    with open(disk, "wb") as f:
        f.truncate(DISK_BYTES)
    host_tool(["sfdisk", "--quiet", disk], stdin=f"label: dos\nstart={PART_START_SECTOR}, type=83\n")
    table = json.loads(host_tool(["sfdisk", "--json", disk]))["partitiontable"]
    sector = table.get("sectorsize", 512)
    if table["label"] != "dos" or len(table["partitions"]) != 1:
        raise HostToolError(f"sfdisk made an unexpected table: {table}")
    start = table["partitions"][0]["start"] * sector
    size = table["partitions"][0]["size"] * sector
    part = os.path.join(tmp, "part.img")
    with open(part, "wb") as f:
        f.truncate(size)
    # Inode tables and journal zeroed now, so the guest kernel starts no
    # ext4lazyinit thread writing them in the background.
    host_tool(["mkfs.ext4", "-q", "-F", "-L", "vmrun", "-E",
               "lazy_itable_init=0,lazy_journal_init=0", part])
    src = os.path.join(tmp, "host.txt")
    with open(src, "w") as f:
        f.write(host_text + "\n")
    host_tool(["debugfs", "-w", "-R", f"write {src} host.txt", part])
    # debugfs exits 0 whatever a request did: read the file back.
    got = host_tool(["debugfs", "-R", "cat /host.txt", part])
    if got != host_text + "\n":
        raise HostToolError(f"debugfs did not write /host.txt: read back {got!r}")
    with open(part, "rb") as f:
        data = f.read()
    with open(disk, "r+b") as f:
        f.seek(start)
        f.write(data)
    os.unlink(part)
    return disk, start, size


def disk_check(tmp, disk, start, size, head, token):
    """The host's checks of the disk after the guest ran: the bytes before
    partition 1 (MBR and gap) unchanged, and partition 1 (copied out: the
    e2fsprogs tools take no offset) cleanly unmounted, passing e2fsck -fn,
    with /guest.txt holding token.  Return a list of failures."""
    failures = []
    with open(disk, "rb") as f:
        if f.read(start) != head:
            failures.append("the bytes before partition 1 (MBR, gap) changed")
        data = f.read(size)
    if len(data) != size:
        return failures + [f"the disk image shrank: partition 1 has {len(data)} of {size} bytes"]
    part = os.path.join(tmp, "part-after.img")
    with open(part, "wb") as f:
        f.write(data)
    try:
        got = host_tool(["debugfs", "-R", "cat /guest.txt", part])
        if got != token + "\n":
            failures.append(f"debugfs reads /guest.txt as {got!r}, wanted {token + chr(10)!r}")
        sb = host_tool(["dumpe2fs", "-h", part])
        state = re.search(r"^Filesystem state:\s*(.*)$", sb, re.M)
        features = re.search(r"^Filesystem features:\s*(.*)$", sb, re.M)
        if not state or state.group(1).strip() != "clean":
            failures.append(f"filesystem state {state.group(1) if state else '?'!r}, wanted clean")
        if not features or "needs_recovery" in features.group(1).split():
            failures.append("the journal needs recovery: the guest did not unmount")
        host_tool(["e2fsck", "-fn", part])
    except HostToolError as e:
        failures.append(str(e))
    return failures


def icmp_checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def net_host(a):
    """The host's side of --net-test, run inside the test's namespace:
    count ICMP echo replies from the guest to a.count requests (one at a
    time, 5 s each), then send a.token to the guest's TCP port, retrying
    while the guest's nc is not listening yet."""
    ident = os.getpid() & 0xffff
    received = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sk:
        for seq in range(a.count):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vmrun-net-test" * 4
            pkt = body[:2] + struct.pack("!H", icmp_checksum(body)) + body[4:]
            sk.sendto(pkt, (a.guest, 0))
            deadline = time.monotonic() + 5
            while (left := deadline - time.monotonic()) > 0:
                sk.settimeout(left)
                try:
                    data, addr = sk.recvfrom(2048)
                except socket.timeout:
                    break
                icmp = data[(data[0] & 15) * 4:]
                if (addr[0] == a.guest and len(icmp) >= 8 and icmp[0] == 0 and
                        struct.unpack("!HH", icmp[4:8]) == (ident, seq) and
                        icmp[8:] == body[8:]):
                    received += 1
                    break
    print(f"host: ping: {a.count} transmitted, {received} received", flush=True)
    data = f"{a.token}\n".encode() + random.Random(a.token).randbytes(NET_BULK_BYTES)
    print(f"host: md5 {hashlib.md5(data).hexdigest()}", flush=True)
    back = socket.create_server((NET_HOST_IP, NET_BACK_PORT))
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection((a.guest, NET_PORT), timeout=5) as c:
                c.settimeout(300)
                c.sendall(data)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"host: error: the guest's port {NET_PORT}: {e}", flush=True)
                return 1
            time.sleep(0.2)  # its nc is not listening yet: try again
    print("host: sent", flush=True)
    back.settimeout(300)
    try:
        c, _ = back.accept()
        with c:
            c.settimeout(300)
            got = bytearray()
            while len(got) < len(data):
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError as e:
        print(f"host: error: receiving the data back: {e}", flush=True)
        return 1
    if got != data:
        print(f"host: error: got {len(got)} bytes back, not the {len(data)} sent", flush=True)
        return 1
    print(f"host: got back {len(got)} bytes intact", flush=True)
    return 0


def ip_cmd(*args):
    p = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if p.returncode != 0:
        raise HostToolError(f"ip {' '.join(args)}: status {p.returncode}: {p.stdout.strip()}")


def run_net(args, token, queues, tmp, transport=""):
    """Run vmrun (args) with --net in a new network namespace holding a tap
    at NET_HOST_IP/24 (multi-queue, with @queues pairs, when @queues > 1);
    once the guest listens, ask vmrun's control socket for the NIC's state
    (query-status), then run net_host() in the namespace.  Return (status,
    console, stderr, host output, the NIC's query-status entry or None);
    the namespace and its tap are removed whatever happens."""
    ns = f"vmrun-net-{os.getpid()}"
    tap = "vmrtap0"
    sock = os.path.join(tmp, "api.sock")
    host_out, nic = "", None
    ip_cmd("netns", "add", ns)
    try:
        ip_cmd("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap",
               *(["multi_queue"] if queues > 1 else []))
        ip_cmd("-n", ns, "addr", "add", f"{NET_HOST_IP}/24", "dev", tap)
        ip_cmd("-n", ns, "link", "set", tap, "up")
        net = f"tap={tap}" + (f",queues={queues}" if queues > 1 else "") + transport
        p = subprocess.Popen(["ip", "netns", "exec", ns] + args +
                             ["--net", net, "--api-sock", sock],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        lines, listening, heard = [], threading.Event(), []
        errbuf = []

        def read_console():
            for raw in p.stdout:
                line = raw.decode(errors="replace")
                lines.append(line)
                if line.startswith("net: listening"):
                    heard.append(True)
                    listening.set()
            listening.set()  # the guest ended: stop waiting

        def read_err():
            errbuf.append(p.stderr.read().decode(errors="replace"))

        readers = [threading.Thread(target=read_console), threading.Thread(target=read_err)]
        for t in readers:
            t.start()
        try:
            listening.wait(BOOT_TIMEOUT_S)
            if heard:
                c = subprocess.run([args[0], "ctl", sock, "query-status"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=60)
                if c.returncode == 0:
                    nic = (json.loads(c.stdout).get("nets") or [None])[0]
                if nic is not None and queues > 1:
                    # The kernel's view: tap queues attached and detached.
                    d = subprocess.run(["ip", "-n", ns, "-d", "link", "show", tap],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, timeout=60).stdout
                    m = re.search(r"numqueues (\d+) numdisabled (\d+)", d)
                    nic["tap_queues"] = [int(m.group(1)), int(m.group(2))] if m else d
                h = subprocess.run(["ip", "netns", "exec", ns, sys.executable,
                                    os.path.abspath(__file__), "net-host", "--guest",
                                    NET_GUEST_IP, "--count", str(NET_PINGS), "--token", token],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   timeout=300)
                host_out = h.stdout
            p.wait(timeout=BOOT_TIMEOUT_S + 60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for t in readers:
                t.join()
        return p.returncode, "".join(lines), "".join(errbuf), host_out, nic
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", tap], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def run_live_snapshot(args, tmp):
    """Run vmrun (@args) with a control socket; once the guest has read its
    file (`blk: read`) send it an NMI, then take a live snapshot of its disk
    while the guest goes on to write.  The NMI rides on this boot rather
    than a boot of its own: on a host without VT-x the kernel's NMI entry
    runs `lsl` (no RDPID), which only vmrun's instruction fallback finishes,
    and the guest must then report an unknown NMI and carry on to its end.
    Returns (status, console, stderr, the snapshot's result or {"error":
    ...}, the nmi command's error or None)."""
    sock = os.path.join(tmp, "api.sock")
    p = subprocess.Popen(args + ["--api-sock", sock], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, snap = b"", {"error": "the guest never printed 'blk: read'"}
    nmi_err = "the guest never printed 'blk: read'"
    deadline = time.monotonic() + BOOT_TIMEOUT_S + 60
    try:
        while b"blk: read" not in out and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(p.stdout.fileno(), 65536) if r else b""
            if not chunk:
                break
            out += chunk
        if b"blk: read" in out:
            c = subprocess.run([args[0], "ctl", sock, "nmi"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=60)
            nmi_err = None if c.returncode == 0 else f"status {c.returncode}: {c.stderr.strip()}"
            c = subprocess.run([args[0], "ctl", sock, "snapshot", "disk=0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=120)
            snap = json.loads(c.stdout) if c.returncode == 0 else {"error": c.stderr.strip()}
        rest, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        rest, err = p.communicate()
    return (p.returncode, (out + rest).decode(errors="replace"), err.decode(errors="replace"),
            snap, nmi_err)


def snap_host():
    """The host's side of --snapshot-test, run inside the test's namespace:
    print "host: listening" once the port is open, accept one connection on
    SNAP_PORT, print every line it brings as "host: got <line>" until the
    guest's "done ..." line or the end of the stream, then close it."""
    srv = socket.create_server((NET_HOST_IP, SNAP_PORT))
    srv.settimeout(3 * BOOT_TIMEOUT_S)
    print("host: listening", flush=True)
    try:
        c, addr = srv.accept()
    except OSError as e:
        print(f"host: error: no connection: {e}", flush=True)
        return 1
    print(f"host: connection from {addr[0]}", flush=True)
    buf = b""
    with c:
        c.settimeout(3 * BOOT_TIMEOUT_S)
        try:
            while not re.search(rb"^done .*\n", buf, re.M):
                chunk = c.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError as e:
            print(f"host: error: receiving: {e}", flush=True)
    for line in buf.decode(errors="replace").splitlines():
        print(f"host: got {line}", flush=True)
    return 0


def read_until(p, out, needle, deadline):
    """Read @p's stdout onto @out (bytes) until the regular expression
    @needle (bytes, multi-line) matches, the stream ends or @deadline
    passes; return the bytes read so far."""
    while not re.search(needle, out, re.M) and time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], max(0, deadline - time.monotonic()))
        chunk = os.read(p.stdout.fileno(), 65536) if r else b""
        if not chunk:
            break
        out += chunk
    return out


def snapshot_boot(a, tmp):
    """--snapshot-test: boot with the qcow2 ext4 disk and the network, save
    the VM after step SNAP_SAVE_AFTER of /init's snap loop, quit it, restore
    it in the same namespace and let it finish.  The host's checks: the step
    lines on the two consoles together are 1..SNAP_STEPS once each, in
    order; the one TCP connection brought every step line and the done line
    once, in order; the restored overlay (qemu-img check) over the frozen
    base holds every step's file and the guest's token, in a clean ext4
    (debugfs, dumpe2fs, e2fsck); the frozen base stayed read-only and
    unchanged."""
    with open(a.state) as f:
        state = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    kernel = state["VMRUN_LINUX_BZIMAGE" if a.kernel == "bzimage" else "VMRUN_LINUX_VMLINUX"]
    token = secrets.token_hex(8)
    host_text = "from-host-" + secrets.token_hex(8)
    top = os.path.join(tmp, "top.qcow2")
    try:
        raw, part_start, part_size = disk_make(tmp, host_text)
        with open(raw, "rb") as f:
            head = f.read(part_start)
        host_tool(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, top])
        os.unlink(raw)
    except HostToolError as e:
        print(f"FAIL: making the disk image: {e}")
        return 1
    cmdline = (f"console=ttyS0 vmrun.test=snap vmrun.snap_token={token} "
               f"vmrun.snap_steps={SNAP_STEPS}")
    ns, tap = f"vmrun-snap-{os.getpid()}", "vmrtap0"
    sock = os.path.join(tmp, "api.sock")
    snap_dir = os.path.join(tmp, "snap")
    args = [a.vmrun, "--kernel", kernel, "--initrd", state["VMRUN_LINUX_INITRAMFS"],
            "--boot", a.boot, "--cpus", str(a.cpus), "--mem", "128M", "--cmdline", cmdline,
            "--timeout", str(BOOT_TIMEOUT_S), "--disk", top + ",format=qcow2",
            "--net", f"tap={tap}", "--api-sock", sock]
    rargs = [a.vmrun, "--restore", snap_dir, "--restore-tap", f"0={tap}",
             "--timeout", str(BOOT_TIMEOUT_S)]
    failures, log = [], []
    out1 = out2 = b""
    status1 = status2 = None
    saved, host_out, base, hashes = {}, "", None, {}
    start = time.monotonic()
    try:
        ip_cmd("netns", "add", ns)
    except HostToolError as e:
        print(f"FAIL: setting up the network namespace: {e}")
        return 1
    procs = []
    try:
        ip_cmd("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
        ip_cmd("-n", ns, "addr", "add", f"{NET_HOST_IP}/24", "dev", tap)
        ip_cmd("-n", ns, "link", "set", tap, "up")
        host = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                 os.path.abspath(__file__), "snap-host"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        procs.append(host)
        if b"host: listening" not in read_until(host, b"", rb"^host: listening$",
                                                time.monotonic() + 60):
            raise HostToolError("the host's listener did not start")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(p)
        needle = f"^snap: step {SNAP_SAVE_AFTER}\r?$".encode()
        out1 = read_until(p, b"", needle, time.monotonic() + BOOT_TIMEOUT_S + 60)
        if re.search(needle, out1, re.M):
            for cmd in (["pause"], ["save", f"path={snap_dir}"], ["quit"]):
                c = subprocess.run([a.vmrun, "ctl", sock] + cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, timeout=300)
                log.append(f"ctl {' '.join(cmd)}: status {c.returncode} {c.stdout.strip()} "
                           f"{c.stderr.strip()}")
                if c.returncode != 0:
                    failures.append(f"vmrun ctl {' '.join(cmd)}: status {c.returncode}: "
                                    f"{c.stderr.strip()}")
                    p.kill()
                    break
                if cmd[0] == "save":
                    saved = json.loads(c.stdout)
        else:
            failures.append(f"the guest never printed 'snap: step {SNAP_SAVE_AFTER}'")
        rest, err1 = p.communicate(timeout=BOOT_TIMEOUT_S + 60)
        out1 += rest
        status1 = p.returncode
        log.append(f"first VM: status {status1}, stderr:\n{err1.decode(errors='replace')}")
        if saved and not failures:
            base = top + ".base-1"
            disks = saved.get("disks") or [{}]
            if (saved.get("path") != snap_dir or len(disks) != 1 or
                    (disks[0].get("disk"), disks[0].get("base")) != (0, base)):
                failures.append(f"save reply {saved}: want path {snap_dir} and disk 0's "
                                f"base {base}")
            if status1 != 0:
                failures.append(f"the saved VM ended with status {status1} after quit, want 0")
            hashes = {path: sha256_file(path) for path in (base, top)}
            if os.stat(base).st_mode & 0o222:
                failures.append(f"the frozen base {base} is writable")
            r = subprocess.Popen(["ip", "netns", "exec", ns] + rargs, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(r)
            out2, err2 = r.communicate(timeout=BOOT_TIMEOUT_S + 60)
            status2 = r.returncode
            log.append(f"restored VM: status {status2}, stderr:\n{err2.decode(errors='replace')}")
        host_out = host.communicate(timeout=60)[0].decode(errors="replace") \
            if status2 is not None else ""
    except (HostToolError, subprocess.TimeoutExpired) as e:
        failures.append(str(e))
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
                q.wait()
        subprocess.run(["ip", "-n", ns, "link", "del", tap], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    took = time.monotonic() - start
    c1, c2 = out1.decode(errors="replace"), out2.decode(errors="replace")
    ctx = (f"\n--- command: {' '.join(args)}\n--- then: {' '.join(rargs)}\n--- "
           + "\n--- ".join(log) + "\n--- first console (last 30 lines):\n"
           + "\n".join(c1.splitlines()[-30:]) + "\n--- restored console:\n" + c2
           + f"\n--- host side:\n{host_out}")
    if status2 is not None:
        both = c1 + c2
        if MARKER not in c1:
            failures.append(f"no {MARKER} on the console: /init never ran")
        if MARKER in c2:
            failures.append("the restored guest booted again")
        if not re.search(rf"^snap: read {re.escape(host_text)}\r?$", c1, re.M):
            failures.append("the guest did not read /host.txt before the save")
        for m in re.finditer(r"^snap: error: .*?\r?$", both, re.M):
            failures.append(f"guest: {m.group(0).rstrip()}")
        steps = [int(n) for n in re.findall(r"^snap: step (\d+)\r?$", both, re.M)]
        if steps != list(range(1, SNAP_STEPS + 1)):
            failures.append(f"the guest's steps over both consoles: {steps}, want 1.."
                            f"{SNAP_STEPS} once each")
        after = [int(n) for n in re.findall(r"^snap: step (\d+)\r?$", c2, re.M)]
        if not after or after[-1] != SNAP_STEPS or after[0] <= SNAP_SAVE_AFTER:
            failures.append(f"steps after the restore: {after}")
        if not re.search(r"^snap: done\r?$", c2, re.M):
            failures.append("the restored guest did not finish ('snap: done')")
        if "Kernel panic" in both:
            failures.append("the guest kernel panicked")
        if status2 != STATUS["poweroff"]:
            failures.append(f"the restored VM ended with status {status2}, want "
                            f"{STATUS['poweroff']} (poweroff)")
        got = re.findall(r"^host: got (.*)$", host_out, re.M)
        want = [f"step {i} {token}" for i in range(1, SNAP_STEPS + 1)] + [f"done {token}"]
        if got != want or host_out.count("host: connection from") != 1:
            failures.append(f"the host's one TCP connection brought {got}, want {want}")
        failures += snapshot_disk_check(tmp, snap_dir, base, hashes, head, part_start,
                                        part_size, token)
    if failures:
        print("FAIL: " + "; ".join(failures) + ctx)
        return 1
    print(f"PASS: {a.kernel}, {a.cpus} vCPU(s): saved after step {SNAP_SAVE_AFTER} of "
          f"{SNAP_STEPS} with the qcow2 ext4 disk and one TCP connection busy "
          f"({saved.get('memory_bytes')} bytes of memory saved), restored, "
          f"finished: {took:.1f} s wall")
    return 0


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot_disk_check(tmp, snap_dir, base, hashes, head, part_start, part_size, token):
    """The disk checks of --snapshot-test: one new overlay in @snap_dir over
    @base, passing qemu-img check; its raw view passes disk_check() and holds
    /step-<i>.txt for every step; @base and the first VM's top image
    (@hashes) unchanged, @base still read-only.  Returns the failures."""
    failures = []
    overlays = sorted(f for f in os.listdir(snap_dir) if re.fullmatch(r"disk0-\d+\.qcow2", f))
    if len(overlays) != 1:
        return [f"the restore left {sorted(os.listdir(snap_dir))} in {snap_dir}, want one "
                f"disk0-<K>.qcow2"]
    overlay = os.path.join(snap_dir, overlays[0])
    try:
        host_tool(["qemu-img", "check", "-q", overlay])
        chain = json.loads(host_tool(["qemu-img", "info", "--backing-chain", "--output=json",
                                      overlay]))
        if len(chain) != 2 or os.path.realpath(chain[1]["filename"]) != os.path.realpath(base):
            failures.append(f"backing chain of {overlay}: "
                            f"{[i['filename'] for i in chain]}, want it over {base}")
        raw = os.path.join(tmp, "restored.raw")
        host_tool(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", overlay, raw])
        failures += disk_check(tmp, raw, part_start, part_size, head, token)
        with open(raw, "rb") as f:
            f.seek(part_start)
            data = f.read(part_size)
        part = os.path.join(tmp, "restored-part.img")
        with open(part, "wb") as f:
            f.write(data)
        for i in range(1, SNAP_STEPS + 1):
            got = host_tool(["debugfs", "-R", f"cat /step-{i}.txt", part])
            if got != f"{token}-{i}\n":
                failures.append(f"debugfs reads /step-{i}.txt as {got!r}")
    except HostToolError as e:
        failures.append(str(e))
    for path, digest in hashes.items():
        if sha256_file(path) != digest:
            failures.append(f"the restore changed {path}")
    if base and os.stat(base).st_mode & 0o222:
        failures.append(f"{base} became writable")
    return failures


class StreamWatch:
    """Collect a child's output stream (bytes) in a thread, so that a test
    can wait on several children at once: wait() returns once @pred(buffer)
    is true, the stream ended or @deadline (time.monotonic()) passed."""

    def __init__(self, stream):
        self.buf, self.ended = b"", False
        self.cond = threading.Condition()
        self.stream = stream
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                chunk = os.read(self.stream.fileno(), 65536)
            except OSError:
                chunk = b""
            with self.cond:
                if not chunk:
                    self.ended = True
                else:
                    self.buf += chunk
                self.cond.notify_all()
            if not chunk:
                return

    def wait(self, pred, deadline):
        with self.cond:
            while not pred(self.buf) and not self.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return pred(self.buf)

    def wait_re(self, pattern, deadline):
        return self.wait(lambda b: re.search(pattern, b, re.M) is not None, deadline)

    def text(self):
        with self.cond:
            return self.buf.decode(errors="replace")


def mig_ping(a):
    """The host's side of --migrate-test's pings, run inside the test's
    namespace: an ICMP echo request to a.guest every MIG_PING_INTERVAL_S
    (raw ICMP, as net_host()), and a packet socket on a.tap (the
    destination's tap) watching for RARP frames coming in from the guest's
    side.  Prints, as they happen, with time.monotonic() stamps (the same
    clock as the test's):
      sent <seq> <t>
      reply <seq> <t>
      rarp <source MAC> <sender MAC> <target MAC> <opcode> <t>
    until a line or the end of stdin, then waits MIG_PING_GRACE_S more for
    late replies and prints "end"."""
    ident = os.getpid() & 0xffff
    payload = b"vmrun-migrate-test" * 3
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    pkt.bind((a.tap, 0x0003))
    seq, stop_at = 0, None
    next_send = time.monotonic()
    answered = set()

    def mac(b):
        return ":".join(f"{x:02x}" for x in b)

    while True:
        now = time.monotonic()
        if stop_at is None and now >= next_send:
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xffff) + payload
            icmp.sendto(body[:2] + struct.pack("!H", icmp_checksum(body)) + body[4:],
                        (a.guest, 0))
            print(f"sent {seq} {time.monotonic():.4f}", flush=True)
            seq += 1
            next_send += MIG_PING_INTERVAL_S
            if next_send < now:  # we were late: do not send a burst
                next_send = now + MIG_PING_INTERVAL_S
        if stop_at is not None and now >= stop_at:
            break
        wake = stop_at if stop_at is not None else next_send
        watch = [icmp, pkt] + ([sys.stdin] if stop_at is None else [])
        r, _, _ = select.select(watch, [], [], max(0, wake - time.monotonic()))
        if sys.stdin in r:
            sys.stdin.readline()  # a line or EOF: stop sending
            stop_at = time.monotonic() + MIG_PING_GRACE_S
        if icmp in r:
            data, addr = icmp.recvfrom(2048)
            m = data[(data[0] & 15) * 4:]
            if (addr[0] == a.guest and len(m) >= 8 and m[0] == 0 and m[8:] == payload and
                    struct.unpack("!H", m[4:6])[0] == ident):
                s = struct.unpack("!H", m[6:8])[0]  # no wrap: 55 min at 20/s
                if s not in answered:
                    answered.add(s)
                    print(f"reply {s} {time.monotonic():.4f}", flush=True)
        if pkt in r:
            data, addr = pkt.recvfrom(2048)
            # addr[2]: packet type; 4 (PACKET_OUTGOING) is what the bridge
            # sends out through the tap, not what comes in from the guest.
            if len(data) >= 42 and data[12:14] == b"\x80\x35" and addr[2] != 4:
                op = struct.unpack("!H", data[20:22])[0]
                print(f"rarp {mac(data[6:12])} {mac(data[22:28])} {mac(data[32:38])} {op} "
                      f"{time.monotonic():.4f}", flush=True)
    print("end", flush=True)
    return 0


def migrate_boot(a, tmp):
    """--migrate-test: boot as --snapshot-test does (qcow2 ext4 disk, the
    vmrun.test=snap loop of /init, one TCP connection), but on a Linux
    bridge at NET_HOST_IP/24 with two taps, the source's and the
    destination's.  After step MIG_AFTER a destination vmrun (--incoming on
    127.0.0.1, --restore-tap 0=<the second tap>, the same qcow2 path: shared
    storage) takes the running guest over (`vmrun ctl SOCK migrate`) while
    the host pings the guest every MIG_PING_INTERVAL_S (mig_ping()).  The
    host's checks: migrate answers status completed and the source exits 0;
    the step lines on the two consoles together are 1..MIG_STEPS once each,
    in order, with at least one on the destination's; the one TCP
    connection brought every step line and the done line once, in order;
    the destination announced the guest's MAC (a RARP frame in through its
    tap) and pings sent after the switch were answered (the lost ones are
    counted and reported); the destination's guest powered off; the qcow2
    image passes qemu-img check and holds every step's file and the token
    in a clean ext4 (debugfs, dumpe2fs, e2fsck)."""
    with open(a.state) as f:
        state = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    kernel = state["VMRUN_LINUX_BZIMAGE" if a.kernel == "bzimage" else "VMRUN_LINUX_VMLINUX"]
    token = secrets.token_hex(8)
    host_text = "from-host-" + secrets.token_hex(8)
    top = os.path.join(tmp, "disk.qcow2")
    try:
        raw, part_start, part_size = disk_make(tmp, host_text)
        with open(raw, "rb") as f:
            head = f.read(part_start)
        host_tool(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, top])
        os.unlink(raw)
    except HostToolError as e:
        print(f"FAIL: making the disk image: {e}")
        return 1
    key = os.path.join(tmp, "migration.key")
    with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(secrets.token_bytes(32))
    cmdline = (f"console=ttyS0 vmrun.test=snap vmrun.snap_token={token} "
               f"vmrun.snap_steps={MIG_STEPS}")
    ns, br = f"vmrun-mig-{os.getpid()}", "vmrbr0"
    src_tap, dst_tap = "vmrtap0", "vmrtap1"
    ssock, dsock = os.path.join(tmp, "src.sock"), os.path.join(tmp, "dst.sock")
    args = [a.vmrun, "--kernel", kernel, "--initrd", state["VMRUN_LINUX_INITRAMFS"],
            "--boot", a.boot, "--cpus", str(a.cpus), "--mem", "128M", "--cmdline", cmdline,
            "--timeout", str(BOOT_TIMEOUT_S), "--disk", top + ",format=qcow2",
            "--net", f"tap={src_tap}", "--api-sock", ssock, "--migration-key", key]
    dargs = [a.vmrun, "--incoming", "tcp:127.0.0.1:0", "--restore-tap", f"0={dst_tap}",
             "--migration-key", key, "--api-sock", dsock, "--timeout", str(BOOT_TIMEOUT_S)]
    failures, log = [], []
    stats, status_src, status_dst, guest_mac = {}, None, None, None
    t_mig = t_switch = t_stop = None
    watches = {}
    start = time.monotonic()
    try:
        ip_cmd("netns", "add", ns)
    except HostToolError as e:
        print(f"FAIL: setting up the network namespace: {e}")
        return 1
    procs = []

    def spawn(name, cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE):
        p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdin=stdin,
                             stdout=subprocess.PIPE, stderr=stderr)
        procs.append(p)
        watches[name] = StreamWatch(p.stdout)
        if stderr == subprocess.PIPE:
            watches[name + "-err"] = StreamWatch(p.stderr)
        return p

    try:
        ip_cmd("-n", ns, "link", "set", "lo", "up")
        ip_cmd("-n", ns, "link", "add", br, "type", "bridge")
        ip_cmd("-n", ns, "addr", "add", f"{NET_HOST_IP}/24", "dev", br)
        ip_cmd("-n", ns, "link", "set", br, "up")
        for tap in (src_tap, dst_tap):
            ip_cmd("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
            ip_cmd("-n", ns, "link", "set", tap, "master", br)
            ip_cmd("-n", ns, "link", "set", tap, "up")
        host = spawn("host", [sys.executable, os.path.abspath(__file__), "snap-host"],
                     stderr=subprocess.STDOUT)
        if not watches["host"].wait_re(rb"^host: listening$", time.monotonic() + 60):
            raise HostToolError("the host's listener did not start")
        dst = spawn("dst", dargs)
        if not watches["dst-err"].wait_re(rb"migration: listening on \S+:\d+$",
                                         time.monotonic() + 60):
            raise HostToolError("the destination vmrun never said where it listens")
        port = re.search(r"migration: listening on \S+:(\d+)$", watches["dst-err"].text(),
                         re.M).group(1)
        src = spawn("src", args)
        needle = f"^snap: step {MIG_AFTER}\r?$".encode()
        if not watches["src"].wait_re(needle, time.monotonic() + BOOT_TIMEOUT_S + 60):
            raise HostToolError(f"the guest never printed 'snap: step {MIG_AFTER}'")
        pinger = spawn("ping", [sys.executable, os.path.abspath(__file__), "mig-ping",
                                "--guest", NET_GUEST_IP, "--tap", dst_tap],
                       stdin=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not watches["ping"].wait_re(rb"^reply ", time.monotonic() + 60):
            raise HostToolError("the guest answered no ping before the migration")
        neigh = subprocess.run(["ip", "-n", ns, "neigh", "show", NET_GUEST_IP],
                               stdout=subprocess.PIPE, text=True).stdout
        m = re.search(r"lladdr (\S+)", neigh)
        guest_mac = m.group(1).lower() if m else None
        t_mig = time.monotonic()
        c = subprocess.run([a.vmrun, "ctl", ssock, "migrate", f"uri=tcp:127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=300)
        t_switch = time.monotonic()
        log.append(f"ctl migrate: status {c.returncode} {c.stdout.strip()} {c.stderr.strip()}")
        try:
            stats = json.loads(c.stdout)
        except ValueError:
            stats = {}
        if c.returncode != 0 or stats.get("status") != "completed":
            raise HostToolError(f"vmrun ctl migrate: status {c.returncode}: "
                                f"{c.stdout.strip()} {c.stderr.strip()}")
        status_src = src.wait(timeout=120)
        # Pings go on until MIG_PINGS_AFTER of those sent after the switch
        # came back, the guest is about to power off, or 30 s passed.
        def n_answered_after(buf):
            sent = {int(s): float(t) for s, t in
                    re.findall(rb"^sent (\d+) ([\d.]+)$", buf, re.M)}
            return sum(1 for s in re.findall(rb"^reply (\d+) ", buf, re.M)
                       if sent.get(int(s), 0) > t_switch)
        deadline = time.monotonic() + 30
        while (time.monotonic() < deadline and
               not watches["ping"].wait(lambda b: n_answered_after(b) >= MIG_PINGS_AFTER,
                                        time.monotonic() + 0.5)
               and not re.search(rb"^snap: done\r?$", watches["dst"].buf, re.M)
               and dst.poll() is None and pinger.poll() is None):
            pass
        t_stop = time.monotonic()
        pinger.stdin.close()
        pinger.wait(timeout=30)
        # A guest the host cannot reach waits forever for its own pings:
        # do not sit out the destination's --timeout then.
        reached = n_answered_after(watches["ping"].buf) > 0
        try:
            status_dst = dst.wait(timeout=BOOT_TIMEOUT_S + 60 if reached else 30)
        except subprocess.TimeoutExpired:
            failures.append("the destination's guest did not finish (its vmrun was killed)")
            dst.kill()
            host.kill()
        host.wait(timeout=60)
    except (HostToolError, subprocess.TimeoutExpired) as e:
        failures.append(str(e))
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
                q.wait()
        for w in watches.values():
            w.thread.join(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    took = time.monotonic() - start
    text = {k: w.text() for k, w in watches.items()}
    c1, c2 = text.get("src", ""), text.get("dst", "")
    host_out, ping_out = text.get("host", ""), text.get("ping", "")
    ctx = (f"\n--- source: {' '.join(args)}\n--- destination: {' '.join(dargs)}\n--- "
           + "\n--- ".join(log)
           + f"\n--- source: status {status_src}, stderr:\n{text.get('src-err', '')}"
           + f"\n--- destination: status {status_dst}, stderr:\n{text.get('dst-err', '')}"
           + "\n--- source console (last 30 lines):\n" + "\n".join(c1.splitlines()[-30:])
           + "\n--- destination console:\n" + c2 + f"\n--- host side:\n{host_out}"
           + "\n--- pings (last 20 lines):\n" + "\n".join(ping_out.splitlines()[-20:])
           + f"\n--- migrate sent at {t_mig}, answered at {t_switch}, pings stopped at "
           f"{t_stop}")
    ping = {"sent": 0}
    if t_stop is not None:
        if status_src != 0:
            failures.append(f"the source vmrun ended with status {status_src}, want 0")
        if MARKER not in c1:
            failures.append(f"no {MARKER} on the console: /init never ran")
        if MARKER in c2:
            failures.append("the migrated guest booted again")
        if not re.search(rf"^snap: read {re.escape(host_text)}\r?$", c1, re.M):
            failures.append("the guest did not read /host.txt before the migration")
        for m in re.finditer(r"^snap: error: .*?\r?$", c1 + c2, re.M):
            failures.append(f"guest: {m.group(0).rstrip()}")
        steps = [int(n) for n in re.findall(r"^snap: step (\d+)\r?$", c1 + c2, re.M)]
        if steps != list(range(1, MIG_STEPS + 1)):
            failures.append(f"the guest's steps over both consoles: {steps}, want 1.."
                            f"{MIG_STEPS} once each")
        moved = [int(n) for n in re.findall(r"^snap: step (\d+)\r?$", c2, re.M)]
        if not moved or moved[-1] != MIG_STEPS:
            failures.append(f"steps on the destination: {moved}, want some, up to {MIG_STEPS}")
        if not re.search(r"^snap: done\r?$", c2, re.M):
            failures.append("the migrated guest did not finish ('snap: done')")
        if "Kernel panic" in c1 + c2:
            failures.append("the guest kernel panicked")
        if status_dst != STATUS["poweroff"]:
            failures.append(f"the destination vmrun ended with status {status_dst}, want "
                            f"{STATUS['poweroff']} (poweroff)")
        got = re.findall(r"^host: got (.*)$", host_out, re.M)
        want = [f"step {i} {token}" for i in range(1, MIG_STEPS + 1)] + [f"done {token}"]
        if got != want or host_out.count("host: connection from") != 1:
            failures.append(f"the host's one TCP connection brought {got}, want {want}")
        # The announce: a RARP request from the guest's MAC, about itself,
        # in through the destination's tap once the migration began.
        rarps = [m for m in re.finditer(r"^rarp (\S+) (\S+) (\S+) (\d+) ([\d.]+)$", ping_out,
                                        re.M)
                 if float(m.group(5)) > t_mig]
        if not guest_mac or not any(m.group(1) == m.group(2) == m.group(3) == guest_mac and
                                    m.group(4) == "3" for m in rarps):
            failures.append(f"no RARP announce of the guest's MAC {guest_mac} came in through "
                            f"the destination's tap {dst_tap}: "
                            f"{[m.group(0) for m in rarps]}")
        sent = {int(s): float(t) for s, t in re.findall(r"^sent (\d+) ([\d.]+)$", ping_out, re.M)}
        replied = {int(s): float(t) for s, t in
                   re.findall(r"^reply (\d+) ([\d.]+)$", ping_out, re.M)}
        before = [s for s, t in sent.items() if t < t_mig]
        during = sorted(s for s, t in sent.items() if t >= t_mig)
        lost = [s for s in during if s not in replied]
        after_switch = [s for s in during if sent[s] > t_switch]
        answered_after = [s for s in after_switch if s in replied]
        run = longest = 0
        for s in during:
            run = run + 1 if s not in replied else 0
            longest = max(longest, run)

        def ms(t):  # relative to the end of the migrate command
            return round((t - t_switch) * 1000)
        ping = {"before": len(before),
                "lost_before": sum(1 for s in before if s not in replied),
                "max_rtt_before_ms": round(max((replied[s] - sent[s] for s in before
                                                if s in replied), default=0) * 1000),
                "during": len(during), "lost": len(lost),
                # runs of consecutive lost pings: [first sent, last sent, count]
                "lost_sent_at_ms": [[ms(sent[r[0]]), ms(sent[r[-1]]), len(r)] for r in
                                    lost_runs(lost)],
                "after_switch": len(after_switch), "answered_after": len(answered_after),
                "first_answer_after_ms": ms(sent[answered_after[0]]) if answered_after else None,
                "max_rtt_after_ms": round(max((replied[s] - sent[s] for s in answered_after),
                                              default=0) * 1000),
                "longest_gap_ms": round(longest * MIG_PING_INTERVAL_S * 1000),
                "migrate_ms": ms(t_mig), "rarp_at_ms": [ms(float(m.group(5))) for m in rarps]}
        if not answered_after:
            failures.append(f"no ping sent after the switch was answered ({len(after_switch)} "
                            f"sent): the guest is unreachable at the destination")
        if not os.path.exists(top):
            failures.append(f"{top} is gone")
        else:
            failures += migrate_disk_check(tmp, top, head, part_start, part_size, token)
    if failures:
        print("FAIL: " + "; ".join(failures) + ctx + f"\n--- pings: {json.dumps(ping)}")
        return 1
    print(f"PASS: {a.kernel}, {a.cpus} vCPU(s): migrated after step {MIG_AFTER} of {MIG_STEPS} "
          f"(steps {moved} on the destination) with the qcow2 ext4 disk and one TCP "
          f"connection busy: total_ms {stats.get('total_ms')}, downtime_ms "
          f"{stats.get('downtime_ms')}, {stats.get('rounds')} rounds, {stats.get('bytes')} "
          f"bytes; pings every {MIG_PING_INTERVAL_S * 1000:.0f} ms: {ping['during']} from the "
          f"migrate on, {ping['lost']} lost (longest gap {ping['longest_gap_ms']} ms), "
          f"{ping['answered_after']} of {ping['after_switch']} sent after the switch "
          f"answered; {took:.1f} s wall\n  migrate: {json.dumps(stats)}"
          f"\n  pings (ms from the end of the migrate command): {json.dumps(ping)}")
    return 0


def lost_runs(seqs):
    """Split sorted sequence numbers into runs of consecutive ones."""
    runs = []
    for s in seqs:
        if runs and runs[-1][-1] == s - 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def migrate_disk_check(tmp, image, head, part_start, part_size, token):
    """The disk checks of --migrate-test: @image passes qemu-img check, its
    raw view passes disk_check() and holds /step-<i>.txt for every step.
    Returns the failures."""
    failures = []
    try:
        host_tool(["qemu-img", "check", "-q", image])
        raw = os.path.join(tmp, "migrated.raw")
        host_tool(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw])
        failures += disk_check(tmp, raw, part_start, part_size, head, token)
        with open(raw, "rb") as f:
            f.seek(part_start)
            data = f.read(part_size)
        part = os.path.join(tmp, "migrated-part.img")
        with open(part, "wb") as f:
            f.write(data)
        for i in range(1, MIG_STEPS + 1):
            got = host_tool(["debugfs", "-R", f"cat /step-{i}.txt", part])
            if got != f"{token}-{i}\n":
                failures.append(f"debugfs reads /step-{i}.txt as {got!r}")
    except HostToolError as e:
        failures.append(str(e))
    return failures


def host_lacks_hw_virt():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return "vmx" not in flags and "svm" not in flags
    return False


def run_script(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"{args[0]} failed with status {p.returncode}")
    out = dict(line.split("=", 1) for line in p.stdout.split("\n") if "=" in line)
    return out


def prepare(a):
    if not os.path.exists("/dev/kvm"):
        # Nothing will boot it: do not spend minutes building a kernel.
        print("SKIP: /dev/kvm is missing on this machine: the Linux tests will skip")
        open(a.state, "w").close()
        return 0
    start = time.monotonic()
    # The host tools of --disk-test.
    p = subprocess.run(["bash", "-c", '. "$1" && ensure_packages "${@:2}"', "linux_test.py",
                        os.path.join(HERE, "lib.sh"), *DISK_PACKAGES])
    if p.returncode != 0:
        sys.exit(f"installing {' '.join(DISK_PACKAGES)} failed with status {p.returncode}")
    kernel = run_script([os.path.join(HERE, "build-kernel.sh")])
    initramfs = run_script([os.path.join(HERE, "build-initramfs.sh"),
                            kernel["VMRUN_LINUX_GEN_INIT_CPIO"]])
    # The same archive gzip-compressed, for --initrd-gzip.
    gz = initramfs["VMRUN_LINUX_INITRAMFS"] + ".gz"
    if not os.path.exists(gz):
        with open(initramfs["VMRUN_LINUX_INITRAMFS"], "rb") as src:
            data = gzip.compress(src.read(), compresslevel=9, mtime=0)
        with open(gz + ".tmp", "wb") as dst:
            dst.write(data)
        os.replace(gz + ".tmp", gz)
    initramfs["VMRUN_LINUX_INITRAMFS_GZ"] = gz
    with open(a.state + ".tmp", "w") as f:
        for k, v in sorted({**kernel, **initramfs}.items()):
            f.write(f"{k}={v}\n")
    os.replace(a.state + ".tmp", a.state)
    print(f"kernel and initramfs ready in {time.monotonic() - start:.1f} s")
    return 0


def boot(a):
    if not os.path.exists("/dev/kvm"):
        print("SKIP: /dev/kvm is missing on this machine: Linux boot tests need KVM")
        return SKIP
    if a.snapshot_test and (os.geteuid() != 0 or shutil.which("ip") is None):
        print("SKIP: --snapshot-test needs root (CAP_NET_ADMIN) and iproute2's `ip` for its "
              "network namespace and tap")
        return SKIP
    if a.snapshot_test:
        with tempfile.TemporaryDirectory(prefix="vmrun-linux-") as tmp:
            return snapshot_boot(a, tmp)
    if a.migrate_test and (os.geteuid() != 0 or shutil.which("ip") is None):
        print("SKIP: --migrate-test needs root (CAP_NET_ADMIN) and iproute2's `ip` for its "
              "network namespace, bridge and taps")
        return SKIP
    if a.migrate_test:
        with tempfile.TemporaryDirectory(prefix="vmrun-linux-") as tmp:
            return migrate_boot(a, tmp)
    if a.net_test and os.geteuid() != 0:
        print("SKIP: --net-test needs root (CAP_NET_ADMIN) for its network namespace and tap")
        return SKIP
    if a.net_test and shutil.which("ip") is None:
        print("SKIP: --net-test needs iproute2's `ip` (apt-get install iproute2)")
        return SKIP
    with tempfile.TemporaryDirectory(prefix="vmrun-linux-") as tmp:
        return boot_in(a, tmp)


def boot_in(a, tmp):
    with open(a.state) as f:
        state = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    kernel = state["VMRUN_LINUX_BZIMAGE" if a.kernel == "bzimage" else "VMRUN_LINUX_VMLINUX"]
    if a.end == "panic" and not KERNEL_PVPANIC:
        print("SKIP: the test kernel's config (tests/linux/kernel.config) lacks "
              "CONFIG_PVPANIC_PCI: no way for its panic to reach vmrun")
        return SKIP
    acpi = KERNEL_ACPI and a.acpi == "on"
    want_status = 10 if a.end == "poweroff" and not acpi else STATUS[a.end]
    cmdline = "console=ttyS0" + (f" vmrun.exit={a.end}" if a.end != "poweroff" else "")
    disk_args = []
    transport = f",transport={a.transport}"  # explicit: each test names its transport
    if a.disk_test:
        token = secrets.token_hex(16)
        host_text = "from-host-" + secrets.token_hex(8)
        try:
            disk, part_start, part_size = disk_make(tmp, host_text)
        except HostToolError as e:
            print(f"FAIL: making the disk image: {e}")
            return 1
        with open(disk, "rb") as f:
            head = f.read(part_start)
        cmdline += f" vmrun.test=blk vmrun.blk_token={token}"
        disk_args = ["--disk", disk + transport]
        if a.disk_qcow2:
            # The same disk as a qcow2 base (qemu-img's own) under a qcow2
            # overlay that vmrun writes; the base must not change.
            base = os.path.join(tmp, "base.qcow2")
            top = os.path.join(tmp, "top.qcow2")
            try:
                host_tool(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk, base])
                host_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2",
                           "-F", "qcow2", top])
            except HostToolError as e:
                print(f"FAIL: making the qcow2 images: {e}")
                return 1
            with open(base, "rb") as f:
                base_sha = hashlib.sha256(f.read()).hexdigest()
            disk_args = ["--disk", top + ",format=qcow2" + transport]
    if a.net_test:
        net_token = "done-" + secrets.token_hex(8)
        cmdline += " vmrun.test=net"
    if a.shell_test:
        cmdline += " vmrun.test=shell"
    initrd = state["VMRUN_LINUX_INITRAMFS_GZ" if a.initrd_gzip else "VMRUN_LINUX_INITRAMFS"]
    args = [a.vmrun, "--kernel", kernel, "--initrd", initrd, "--boot", a.boot,
            "--cpus", str(a.cpus), "--mem", "128M", "--cmdline", cmdline,
            "--timeout", str(BOOT_TIMEOUT_S), "--acpi", a.acpi,
            "--exit-json", os.path.join(tmp, "exit.json")] + disk_args
    start = time.monotonic()
    host_out = ""
    if a.net_test:
        try:
            status, out, err, host_out, nic = run_net(args, net_token, a.net_queues, tmp,
                                                      transport)
        except HostToolError as e:
            print(f"FAIL: setting up the network namespace: {e}")
            return 1
    elif a.disk_qcow2:
        status, out, err, snap, nmi_err = run_live_snapshot(args, tmp)
    else:
        # --shell-test: all of SHELL_INPUT is in the pipe before vmrun
        # starts (it fits the pipe buffer), so vmrun reads it at once.
        p = subprocess.run(args, stdin=None if a.shell_test else subprocess.DEVNULL,
                           input=SHELL_INPUT if a.shell_test else None,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=BOOT_TIMEOUT_S + 60)
        status = p.returncode
        out = p.stdout.decode(errors="replace")
        err = p.stderr.decode(errors="replace")
    took = time.monotonic() - start
    ctx = (f"\n--- command: {' '.join(args)}\n--- status {status} after {took:.1f} s"
           f"\n--- stderr:\n{err}\n--- console (last 40 lines):\n"
           + "\n".join(out.splitlines()[-40:])
           + (f"\n--- host side:\n{host_out}" if a.net_test else ""))
    failures = []
    if MARKER not in out:
        failures.append(f"no {MARKER} on the console: /init never ran")
    m = re.search(r"^cpus: (\d+)\r?$", out, re.M)
    if not m or int(m.group(1)) != a.cpus:
        failures.append(f"/proc/cpuinfo in the guest: {m.group(0) if m else 'no cpus line'}, "
                        f"wanted {a.cpus}")
    m = re.search(r"^cmdline: (.*?)\r?$", out, re.M)
    guest_cmdline = m.group(1) if m else ""
    if not guest_cmdline.startswith(cmdline):
        failures.append(f"guest command line {guest_cmdline!r} does not start with {cmdline!r}")
    nested = host_lacks_hw_virt()
    if nested != (NESTED_ARGS in guest_cmdline):
        failures.append(f"host {'lacks' if nested else 'has'} VT-x/AMD-V, yet the nested "
                        f"arguments are {'missing' if nested else 'there'}: {guest_cmdline!r}")
    if a.initrd_gzip and "Unpacking initramfs" in out and "initramfs unpacking failed" in out:
        failures.append("the guest could not unpack the initramfs")
    if "Kernel panic" in out and a.end != "panic":
        failures.append("the guest kernel panicked")
    if a.end == "panic":
        # /init printed the PCI function with the driver bound to it
        # (/proc/bus/pci/devices names it), then made the kernel panic.
        if not re.search(r"^pvpanic: .*\bpvpanic-pci\r?$", out, re.M):
            failures.append("the guest's /proc/bus/pci/devices shows no pvpanic-pci driver")
        # sysrq announces the crash before it panics; the panic line itself
        # may still sit in the kernel's log buffer when pvpanic ends the run.
        if "Trigger a crash" not in out and "sysrq triggered crash" not in out:
            failures.append("the guest kernel never triggered the crash")
    try:
        with open(os.path.join(tmp, "exit.json")) as f:
            verdict = json.load(f)
    except (OSError, ValueError) as e:
        verdict = {}
        failures.append(f"--exit-json: {e}")
    if acpi and a.end in ACPI_REASON and verdict.get("reason") != ACPI_REASON[a.end]:
        failures.append(f"the run ended with reason {verdict.get('reason')!r}, not through "
                        f"ACPI ({ACPI_REASON[a.end]!r})")
    if a.end == "panic" and verdict.get("kind") != "panic":
        failures.append(f"--exit-json kind {verdict.get('kind')!r}, wanted 'panic'")
    if a.disk_test:
        # The kernel's partition scan, then /init's lines (tests/linux/init).
        if not re.search(r"^(\[[ \d.]+\] )? vda: vda1\r?$", out, re.M):
            failures.append("the guest kernel did not find partition 1 (no ' vda: vda1' line)")
        for m in re.finditer(r"^blk: error: .*?\r?$", out, re.M):
            failures.append(f"guest: {m.group(0).rstrip()}")
        m = re.search(r"^blk: read (.*?)\r?$", out, re.M)
        if not m or m.group(1) != host_text:
            failures.append(f"guest read /host.txt as {m.group(1) if m else None!r}, "
                            f"wanted {host_text!r}")
        if not re.search(r"^blk: wrote\r?$", out, re.M):
            failures.append("no 'blk: wrote' line from the guest")
        # Over virtio-pci the kernel's driver takes MSI-X: its vectors show
        # in /proc/interrupts as PCI-MSI (config and request queue).
        msi = re.findall(r"^irq: .*PCI-MSI.*virtio.*?\r?$", out, re.M)
        if a.transport == "pci" and len(msi) < 2:
            failures.append(f"/proc/interrupts in the guest shows {len(msi)} PCI-MSI virtio "
                            f"lines, wanted 2 or more: "
                            f"{re.findall(r'^irq: .*?$', out, re.M)}")
        if a.disk_qcow2:
            # qemu-img is the oracle: the overlay and the live snapshot's
            # base check clean, the original base is untouched, the chain is
            # top -> top.base-1 -> base, the snapshot's base still holds the
            # host's file, and the raw view of the chain the guest's file.
            # The NMI sent with it: Linux finds no handler that claims it
            # and says so (arch/x86/kernel/nmi.c, unknown_nmi_error()),
            # then goes on; the checks above and below see it carry on.
            if nmi_err:
                failures.append(f"vmrun ctl nmi: {nmi_err}")
            elif not re.search(r"NMI received for unknown reason", out):
                failures.append("the guest kernel never reported the NMI (no 'Uhhuh. NMI "
                                "received for unknown reason' line)")
            try:
                snap_base = top + ".base-1"
                if snap.get("error") or snap.get("base") != snap_base:
                    failures.append(f"live snapshot while the guest ran: {snap}")
                host_tool(["qemu-img", "check", "-q", top])
                host_tool(["qemu-img", "check", "-q", snap_base])
                chain = json.loads(host_tool(["qemu-img", "info", "--backing-chain",
                                              "--output=json", top]))
                names = [os.path.basename(i["filename"]) for i in chain]
                if names != ["top.qcow2", "top.qcow2.base-1", "base.qcow2"]:
                    failures.append(f"backing chain after the live snapshot: {names}")
                snap_raw = os.path.join(tmp, "snap.raw")
                host_tool(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", snap_base,
                           snap_raw])
                with open(snap_raw, "rb") as f:
                    f.seek(part_start)
                    part = f.read(part_size)
                with open(snap_raw, "wb") as f:
                    f.write(part)
                got = host_tool(["debugfs", "-R", "cat /host.txt", snap_raw])
                if got != host_text + "\n":
                    failures.append(f"the snapshot's base reads /host.txt as {got!r}")
                with open(base, "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() != base_sha:
                        failures.append("vmrun changed the qcow2 base image")
                os.unlink(disk)
                host_tool(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", top, disk])
            except HostToolError as e:
                failures.append(str(e))
        failures += disk_check(tmp, disk, part_start, part_size, head, token)
    net_summary = ""
    if a.net_test:
        for m in re.finditer(r"^net: error: .*?\r?$", out, re.M):
            failures.append(f"guest: {m.group(0).rstrip()}")
        m = re.search(r"^net: ping: (\d+) packets transmitted, (\d+) packets received", out, re.M)
        if not m or int(m.group(1)) != NET_PINGS or int(m.group(2)) != NET_PINGS:
            failures.append(f"guest ping of the host: {m.group(0) if m else 'no net: ping line'}"
                            f", wanted {NET_PINGS} of {NET_PINGS}")
        h = re.search(r"^host: ping: (\d+) transmitted, (\d+) received", host_out, re.M)
        if not h or int(h.group(2)) != NET_PINGS:
            failures.append(f"host ping of the guest: {h.group(0) if h else 'did not run'}, "
                            f"wanted {NET_PINGS} of {NET_PINGS}")
        g = re.search(r"^net: host says (.*?)\r?$", out, re.M)
        if not g or g.group(1) != net_token:
            failures.append(f"the guest heard {g.group(1) if g else None!r} from the host, "
                            f"wanted {net_token!r}")
        hm = re.search(r"^host: md5 (\w+)", host_out, re.M)
        gm = re.search(r"^net: md5 (\w+)", out, re.M)
        if not hm or not gm or hm.group(1) != gm.group(1):
            failures.append(f"the guest received data with md5 {gm.group(1) if gm else None}, "
                            f"the host sent {hm.group(1) if hm else None}")
        if not re.search(r"^host: got back \d+ bytes intact", host_out, re.M):
            failures.append("the host did not get the data back intact from the guest")
        # The guest kernel's driver set the queue pairs it wants (one per
        # vCPU, at most what the device offers) by the time it listens.
        want_pairs = min(a.net_queues, a.cpus)
        if (not nic or nic.get("queue_pairs") != a.net_queues or
                nic.get("queue_pairs_active") != want_pairs or not nic.get("link_up") or
                (a.net_queues > 1 and
                 nic.get("tap_queues") != [want_pairs, a.net_queues - want_pairs])):
            failures.append(f"query-status while the guest listened: NIC {nic}, wanted "
                            f"{a.net_queues} queue pairs, {want_pairs} in use (as many tap "
                            f"queues attached), link up")
        net_summary = (f", virtio-net ({a.net_queues} queue pair(s), "
                       f"{nic.get('queue_pairs_active') if nic else '?'} in use): "
                       f"{NET_PINGS} pings each way, "
                       f"{NET_BULK_BYTES >> 10} KiB over TCP each way")
    if a.shell_test and not re.search(rf"^{SHELL_WANT}\r?$", out, re.M):
        failures.append(f"the guest's shell never printed {SHELL_WANT!r}: the input piped "
                        f"in at start-up was lost")
    if status != want_status:
        failures.append(f"exit status {status}, wanted {want_status} ({a.end}"
                        f"{', ACPI' if acpi else ''})")
    if failures:
        print("FAIL: " + "; ".join(failures) + ctx)
        return 1
    init_at = next((line for line in out.splitlines() if "Run /init" in line), "")
    print(f"PASS: {a.kernel} ({a.boot} entry), {a.cpus} vCPU(s), {a.end}"
          f"{' through ACPI' if acpi and a.end in ACPI_REASON else ''}"
          f"{', gzip initramfs' if a.initrd_gzip else ''}"
          f"{', virtio-blk ext4 read/write' if a.disk_test else ''}{net_summary}"
          f"{' over virtio-pci (MSI-X)' if a.transport == 'pci' else ''}"
          f"{', shell ran the input piped in at start-up' if a.shell_test else ''}: "
          f"{took:.1f} s wall ({init_at.strip()})"
          # virtio-net's counters, which vmrun prints with VMRUN_DEBUG set
          + "".join(f"\n  {line}" for line in err.splitlines() 
                   if "virtio-net" in line and "debug" in line))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--state", required=True)
    bp = sub.add_parser("boot")
    bp.add_argument("--vmrun", required=True)
    bp.add_argument("--state", required=True)
    bp.add_argument("--kernel", choices=("bzimage", "vmlinux"), required=True)
    bp.add_argument("--cpus", type=int, required=True)
    bp.add_argument("--end", choices=tuple(STATUS), default="poweroff")
    bp.add_argument("--boot", choices=("linux64", "pvh"), default="linux64")
    bp.add_argument("--acpi", choices=("on", "off"), default="on",
                    help="vmrun --acpi: off boots the kernel on the MP table alone")
    bp.add_argument("--initrd-gzip", action="store_true")
    bp.add_argument("--disk-test", action="store_true")
    bp.add_argument("--disk-qcow2", action="store_true",
                    help="with --disk-test: the disk is a qcow2 overlay over a qcow2 base, "
                         "snapshotted live while the guest runs")
    bp.add_argument("--net-test", action="store_true")
    bp.add_argument("--transport", choices=("mmio", "pci"), default="mmio",
                    help="the virtio transport of the --disk-test and --net-test devices")
    bp.add_argument("--net-queues", type=int, default=1,
                    help="with --net-test: queue pairs (a multi-queue tap when more than 1)")
    bp.add_argument("--shell-test", action="store_true",
                    help="a shell on the console runs commands piped in from the start")
    bp.add_argument("--snapshot-test", action="store_true",
                    help="save the VM mid-work (qcow2 ext4 disk and network busy) and "
                         "finish from a restore")
    bp.add_argument("--migrate-test", action="store_true",
                    help="live-migrate the VM mid-work (qcow2 ext4 disk and network busy, "
                         "the host pinging it) to a second vmrun and finish there")
    sub.add_parser("snap-host")
    mp = sub.add_parser("mig-ping")
    mp.add_argument("--guest", required=True)
    mp.add_argument("--tap", required=True)
    hp = sub.add_parser("net-host")
    hp.add_argument("--guest", required=True)
    hp.add_argument("--count", type=int, required=True)
    hp.add_argument("--token", required=True)
    a = ap.parse_args()
    if a.cmd == "net-host":
        return net_host(a)
    if a.cmd == "snap-host":
        return snap_host()
    if a.cmd == "mig-ping":
        return mig_ping(a)
    return prepare(a) if a.cmd == "prepare" else boot(a)


if __name__ == "__main__":
    sys.exit(main())
