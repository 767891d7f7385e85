#!/usr/bin/env python3
"""Guest tests: boot the project's freestanding test guests under vmrun and
check serial output, stderr and exit statuses.

Usage: guest_tests.py --vmrun PATH --guests DIR TEST [TEST...]
       guest_tests.py --list

Each TEST is one function below.  Exit 0 when all pass, 1 on a failure, 77
(ctest's skip code) when /dev/kvm is missing, with a message saying so.
Expected values come from the guests' documented contract
(tests/guest/README.md) and from independent computations here, never from
vmrun's own output.
"""
import argparse
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time

SKIP = 77
VMRUN = None
GUESTS = None
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 120


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def guest(name):
    path = os.path.join(GUESTS, name + ".elf")
    check(os.path.exists(path), f"guest {path} was not built")
    return path


def run_vmrun(args, stdin=subprocess.DEVNULL, input_bytes=None, timeout=HANG_GUARD_S):
    """Run vmrun to completion; returns (status, stdout, stderr) as text."""
    p = subprocess.run([VMRUN] + args, stdin=stdin if input_bytes is None else None,
                       input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def expect(args, status, stdout_has=(), stderr_has=(), **kw):
    rc, out, err = run_vmrun(args, **kw)
    ctx = f"\n--- command: vmrun {' '.join(args)}\n--- status {rc}\n--- stdout:\n{out}\n--- stderr:\n{err}"
    check(rc == status, f"expected exit status {status}, got {rc}{ctx}")
    for s in stdout_has:
        check(s in out, f"stdout lacks {s!r}{ctx}")
    for s in stderr_has:
        check(s in err, f"stderr lacks {s!r}{ctx}")
    return out, err


def debug_exit_status(v):
    """QEMU isa-debug-exit convention, from its documentation."""
    return ((v << 1) | 1) & 0xFF


# ---------------------------------------------------------------- basic boot

def test_hello_exit_code():
    out, _ = expect(["--kernel", guest("hello"), "--cmdline", "exit=5"], debug_exit_status(5),
                    stdout_has=["hello from vmrun test guest (entry=linux64)", "cmdline: exit=5"])


def test_hello_exit_zero():
    expect(["--kernel", guest("hello")], debug_exit_status(0),
           stdout_has=["hello from vmrun test guest"])


def test_hello_pvh_entry():
    expect(["--kernel", guest("hello"), "--boot", "pvh", "--cmdline", "exit=9 pvh test"],
           debug_exit_status(9),
           stdout_has=["hello from vmrun test guest (entry=pvh)", "cmdline: exit=9 pvh test"])


def test_hello_large_memory():
    # Above 3 GiB the RAM is split around the MMIO hole.
    expect(["--kernel", guest("hello"), "--mem", "5G", "--cmdline", "exit=2"],
           debug_exit_status(2), stdout_has=["hello from vmrun test guest"])


def test_console_file():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "console.log")
        out, _ = expect(["--kernel", guest("hello"), "--console", "file:" + path,
                         "--cmdline", "exit=1"], debug_exit_status(1))
        check("hello from vmrun test guest" not in out, "console file: output leaked to stdout")
        with open(path) as f:
            text = f.read()
        check("hello from vmrun test guest" in text, f"console file lacks the greeting: {text!r}")


def test_console_none():
    out, _ = expect(["--kernel", guest("hello"), "--console", "none"], debug_exit_status(0))
    check(out == "", f"--console none printed {out!r}")


def test_initrd_accepted():
    with tempfile.NamedTemporaryFile() as f:
        f.write(os.urandom(100000))
        f.flush()
        expect(["--kernel", guest("hello"), "--initrd", f.name, "--cmdline", "exit=4"],
               debug_exit_status(4))


# ---------------------------------------------------------------- exits

def test_triple_fault():
    _, err = expect(["--kernel", guest("triple_fault")], 8, stdout_has=["triple fault now"],
                    stderr_has=["triple fault", "rip="])
    check("triple fault FAILED" not in err, "guest continued after the fault")


def test_i8042_reset():
    expect(["--kernel", guest("hello"), "--cmdline", "action=reset"], 6,
           stdout_has=["hello from vmrun test guest"])


def test_halt_ends_run():
    # Every vCPU halted with interrupts off: no guest leaves that state
    # (Linux's halt, and its poweroff without ACPI); the run ends with 10.
    for cpus in ("1", "2"):
        expect(["--kernel", guest("hello"), "--cpus", cpus, "--cmdline", "action=halt",
                "--timeout", "60"], 10, stdout_has=["hello from vmrun test guest"])


def test_idle_guest_keeps_running():
    # Halted with interrupts on: an idle guest, which a timer or device may
    # still wake; only --timeout ends it.
    _, err = expect(["--kernel", guest("hello"), "--cmdline", "action=idle", "--timeout", "1.5"],
                    124, stdout_has=["hello from vmrun test guest"], stderr_has=["timeout"])


def test_timeout():
    # The echo guest waits for input forever; stdin is empty.
    _, err = expect(["--kernel", guest("echo"), "--timeout", "1"], 124,
                    stdout_has=["echo ready"], stderr_has=["timeout"])


def test_sigterm():
    p = subprocess.Popen([VMRUN, "--kernel", guest("echo")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_output(p.stdout, b"echo ready\n")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=HANG_GUARD_S)
        check(rc == 20, f"SIGTERM: expected status 20, got {rc}")
    finally:
        kill(p)


# ---------------------------------------------------------------- devices

def test_unclaimed_port_and_mmio():
    out, err = expect(["--kernel", guest("unclaimed")], debug_exit_status(0),
                      stdout_has=["unclaimed: ok"])
    port_lines = [l for l in err.splitlines() if "0x510" in l]
    mmio_lines = [l for l in err.splitlines() if "0xd0000000" in l]
    check(len(port_lines) == 1, f"port 0x510 should be logged once, got: {port_lines}")
    check(len(mmio_lines) == 1, f"mmio 0xd0000000 should be logged once, got: {mmio_lines}")


def test_rtc_clock():
    import datetime
    utc = datetime.timezone.utc
    before = datetime.datetime.now(utc).replace(microsecond=0) - datetime.timedelta(seconds=1)
    out, err = expect(["--kernel", guest("rtc")], debug_exit_status(0),
                      stdout_has=["rtc status: A=26 B=02 D=80", "rtc ram: a5"])
    after = datetime.datetime.now(utc) + datetime.timedelta(seconds=1)
    check("0x70" not in err and "0x71" not in err, f"RTC ports logged as unclaimed: {err}")
    for mode in ("bcd", "binary"):
        line = [l for l in out.splitlines() if l.startswith(f"rtc {mode}: ")]
        check(len(line) == 1, f"no 'rtc {mode}' line in {out!r}")
        stamp, wday = line[0].split(": ", 1)[1].rsplit(" wday=", 1)
        t = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=utc)
        check(before <= t <= after, f"rtc {mode} shows {t}, host UTC was {before}..{after}")
        # The MC146818 counts weekdays 1-7 from Sunday.
        check(int(wday) == t.isoweekday() % 7 + 1, f"rtc {mode}: weekday {wday} for {t}")


def test_serial_echo_interrupts():
    out, _ = expect(["--kernel", guest("echo")], debug_exit_status(3),
                    input_bytes=b"hello world\nsecond line\nexit 3\n",
                    stdout_has=["echo ready", "echo: hello world", "echo: second line"])
    irqs = [l for l in out.splitlines() if l.startswith("irqs: ")]
    check(irqs and int(irqs[0].split()[1]) > 0, f"no RX interrupts reported: {irqs}")


def test_serial_input_backpressure():
    # More input than the UART buffers (256 bytes): nothing may be lost.
    lines = [f"line {i:04d} " + "x" * 60 for i in range(40)]
    data = ("\n".join(lines) + "\nexit 0\n").encode()
    out, _ = expect(["--kernel", guest("echo")], debug_exit_status(0), input_bytes=data)
    for l in lines:
        check(f"echo: {l}" in out, f"line lost: {l!r}")


def test_smp_two_cpus():
    expect(["--kernel", guest("smp"), "--cpus", "2"], debug_exit_status(0),
           stdout_has=["mptable: 2 cpus", "cpu 0 online", "cpu 1 online", "smp: 2 of 2 cpus online"])


def test_smp_one_cpu():
    expect(["--kernel", guest("smp"), "--cpus", "1"], debug_exit_status(0),
           stdout_has=["mptable: 1 cpus", "smp: 1 of 1 cpus online"])


def lcg(seed, iters):
    """x = x * A + C mod 2^64 applied iters times, by affine jump-ahead."""
    a, c, m = 6364136223846793005, 1442695040888963407, 1 << 64
    # Compose the affine map (a, c) with itself by squaring.
    acc_a, acc_c = 1, 0
    while iters:
        if iters & 1:
            acc_a, acc_c = (acc_a * a) % m, (acc_c * a + c) % m
        a, c = (a * a) % m, (c * a + c) % m
        iters >>= 1
    return (acc_a * seed + acc_c) % m


def test_cpl3_compute():
    iters, seed = 200_000_000, 12345
    # The loop at CPL0 under an instruction emulator (~4 M instr/s) would
    # take minutes; at CPL3 it runs natively in well under a second.
    out, _ = expect(["--kernel", guest("cpl3"), "--cmdline", f"iters={iters} seed={seed}"],
                    debug_exit_status(0))
    want = f"cpl3: cpl=3 iters={iters} result=0x{lcg(seed, iters):016x}"
    check(want in out, f"expected {want!r} in:\n{out}")


def test_lcg_reference():
    # The jump-ahead must match the plain loop it replaces.
    x = 77
    for _ in range(1000):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    check(lcg(77, 1000) == x, "lcg jump-ahead is wrong")


# ---------------------------------------------------------------- nested hosts without VT-x

NESTED_NOTICE = ("vmrun: nested KVM without VT-x/AMD-V detected: instruction fallbacks on "
                 "(--no-nested-workarounds disables)")
NESTED_LINUX_ARGS = "noxsave no-kvmclock pty.legacy_count=0 tsc=reliable noreplace-smp clearcpuid=141,151,297,580"


def host_lacks_hw_virt():
    """A nested KVM such as kvm_pvm: the CPU flags name neither vmx nor svm."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                words = line.split(":", 1)[1].split()
                return "vmx" not in words and "svm" not in words
    return False


def test_emul_fallbacks():
    # Where the fallback is on, it finishes what KVM cannot; elsewhere the
    # CPU runs it all.  The guest's verdict is the same.
    out, err = expect(["--kernel", guest("emul")], debug_exit_status(0),
                      stdout_has=["emul: popcnt ok", "emul: fwait ok", "emul: int3 ok", "emul: ok"])
    check(("emul: clac/stac ok" in out) or ("emul: clac/stac skipped (no SMAP)" in out),
          f"no clac/stac verdict:\n{out}")
    check(("emul: syscall ok" in out and "emul: sysret ok" in out) or
          ("emul: syscall skipped (no SMAP)" in out), f"no syscall/sysret verdict:\n{out}")
    want = 1 if host_lacks_hw_virt() else 0
    check(err.count(NESTED_NOTICE) == want, f"notice printed {err.count(NESTED_NOTICE)} times, want {want}:\n{err}")


def test_emul_without_workarounds():
    args = ["--kernel", guest("emul"), "--no-nested-workarounds"]
    if not host_lacks_hw_virt():
        expect(args, debug_exit_status(0), stdout_has=["emul: ok"])
        return
    # The first POPCNT at CPL 0 is where KVM gives up: status 12, as before.
    _, err = expect(args, 12, stderr_has=["instruction emulation failed", "rip="])
    check(NESTED_NOTICE not in err, f"notice printed with --no-nested-workarounds:\n{err}")


def test_emul_unknown_instruction():
    # CRC32 at CPL 0: neither KVM's emulator here nor the fallback has it.
    if not host_lacks_hw_virt():
        expect(["--kernel", guest("emul"), "--cmdline", "action=crc32"], debug_exit_status(0),
               stdout_has=["emul: crc32 ran"])
        return
    _, err = expect(["--kernel", guest("emul"), "--cmdline", "action=crc32"], 12,
                    stderr_has=["instruction emulation failed", "unknown instruction",
                                "instruction bytes f2 0f 38 f1", "rip="])


def test_nested_linux_args():
    # The test guests are no Linux kernels: their command line stays as given.
    expect(["--kernel", guest("hello"), "--cmdline", "exit=0"], debug_exit_status(0),
           stdout_has=["cmdline: exit=0\n"])
    # The same guest with the Linux banner in its file counts as Linux.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "linuxish.elf")
        with open(path, "wb") as f:
            f.write(open(guest("hello"), "rb").read() + b"Linux version 6.1.0 (vmrun test)\0")
        nested = host_lacks_hw_virt()
        out, _ = expect(["--kernel", path, "--cmdline", "exit=0 tsc=unstable"], debug_exit_status(0))
        want = ("exit=0 tsc=unstable noxsave no-kvmclock pty.legacy_count=0 noreplace-smp "
                "clearcpuid=141,151,297,580"
                if nested else "exit=0 tsc=unstable")
        check(f"cmdline: {want}\n" in out, f"want 'cmdline: {want}' in:\n{out}")
        out, _ = expect(["--kernel", path, "--cmdline", "exit=0", "--no-nested-workarounds"],
                        debug_exit_status(0))
        check("cmdline: exit=0\n" in out, f"--no-nested-workarounds changed the command line:\n{out}")


# ---------------------------------------------------------------- CLI / setup errors

def test_usage_errors():
    for args, needle in [
        (["--bogus"], "unknown option '--bogus'"),
        (["--kernel"], "--kernel needs a value"),
        (["--kernel", "x", "--mem", "12Q"], "--mem: invalid size '12Q'"),
        (["--kernel", "x", "--cpus", "0"], "--cpus"),
        (["--kernel", "x", "--console", "tty"], "--console"),
        (["--mem", "64M"], "--kernel PATH is required"),
    ]:
        rc, out, err = run_vmrun(args)
        check(rc == 2, f"{args}: expected status 2, got {rc} ({err})")
        lines = err.strip().splitlines()
        check(len(lines) == 1 and needle in lines[0], f"{args}: want one line with {needle!r}, got {err!r}")


def test_disk_not_supported_yet():
    rc, _, err = run_vmrun(["--kernel", "bzImage", "--disk", "img.qcow"])
    check(rc == 2 and "not supported yet" in err, f"--disk: status {rc}, stderr {err!r}")


def test_help_and_version():
    rc, out, _ = run_vmrun(["--help"])
    check(rc == 0 and "--kernel PATH" in out, "--help")
    rc, out, _ = run_vmrun(["--version"])
    check(rc == 0 and out.startswith("vmrun "), "--version")


def test_bad_kernel_files():
    with tempfile.TemporaryDirectory() as d:
        text = os.path.join(d, "notelf")
        with open(text, "w") as f:
            f.write("this is not a kernel\n")
        hello = open(guest("hello"), "rb").read()
        # Cut the file inside its last loadable segment's data (from the
        # ELF64 program headers, per the ELF specification).
        phoff, = struct.unpack_from("<Q", hello, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hello, 0x36)
        seg_ends = []
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", hello, phoff + i * phentsize)
            if p_type == 1 and p_filesz:
                seg_ends.append(p_offset + p_filesz)
        trunc = os.path.join(d, "truncated.elf")
        with open(trunc, "wb") as f:
            f.write(hello[: max(seg_ends) - 1])
        empty = os.path.join(d, "empty")
        open(empty, "w").close()
        for path, needle in [(text, "not an ELF file"), (trunc, "truncated"),
                             (empty, "empty file"), (os.path.join(d, "missing"), "No such file")]:
            rc, _, err = run_vmrun(["--kernel", path])
            check(rc == 4 and needle in err, f"{path}: status {rc}, stderr {err!r}, want {needle!r}")
        # Too little RAM for a segment: --mem 8M with a kernel linked above it.
        rc, _, err = run_vmrun(["--kernel", guest("hello"), "--boot", "pvh", "--mem", "8M",
                                "--cmdline", "exit=0"])
        check(rc == 1, f"hello in 8M should still run, got {rc}: {err}")


def in_mount_namespace(script):
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=HANG_GUARD_S)


def test_kvm_missing():
    if os.geteuid() != 0:
        print("SKIP: needs root to hide /dev/kvm in a mount namespace")
        return SKIP
    p = in_mount_namespace(f"mount -t tmpfs none /dev && exec {VMRUN} --kernel {guest('hello')}")
    err = p.stderr.decode()
    if "unshare:" in err:
        # Inside a chroot whose root is no mount point, a private mount
        # namespace cannot be made; nothing here can hide /dev/kvm safely.
        print(f"SKIP: cannot create a private mount namespace here: {err.strip()}")
        return SKIP
    check(p.returncode == 4 and "/dev/kvm does not exist" in err,
          f"no /dev/kvm: status {p.returncode}, {err!r}")


def test_kvm_forbidden():
    if os.geteuid() != 0:
        print("SKIP: needs root to drop to an unprivileged user")
        return SKIP
    # The checkout may sit where the unprivileged user cannot reach it
    # (/root is 0700): run copies from a world-readable directory.
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        vmrun, hello = os.path.join(d, "vmrun"), os.path.join(d, "hello.elf")
        shutil.copy(VMRUN, vmrun)
        shutil.copy(guest("hello"), hello)
        os.chmod(hello, 0o644)
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", vmrun,
                            "--kernel", hello], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
    err = p.stderr.decode()
    check(p.returncode == 4 and "permission denied opening /dev/kvm" in err,
          f"no permission: status {p.returncode}, {err!r}")


def test_cpus_above_recommended():
    # This host's KVM recommends 2 vCPUs (KVM_CAP_NR_VCPUS); more still run,
    # with one warning line.  Where the recommendation is higher, no warning.
    rc, out, err = run_vmrun(["--kernel", guest("hello"), "--cpus", "4", "--cmdline", "exit=0"])
    check(rc == debug_exit_status(0), f"--cpus 4: status {rc}: {err}")
    warned = [l for l in err.splitlines() if "recommends" in l]
    check(len(warned) <= 1, f"warning repeated: {warned}")


# ---------------------------------------------------------------- bzImage

def zstd_compress(data):
    """One zstd frame, through libzstd (vmrun's own build dependency)."""
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                  ctypes.c_size_t, ctypes.c_int]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    cap = lib.ZSTD_compressBound(len(data))
    out = ctypes.create_string_buffer(cap)
    n = lib.ZSTD_compress(out, cap, data, len(data), 19)
    check(not lib.ZSTD_isError(n), "ZSTD_compress failed")
    return out.raw[:n]


def make_bzimage(elf, codec):
    """Wrap @elf in a bzImage per Linux's Documentation/arch/x86/boot.rst:
    4 setup sectors after the boot sector, a protocol 2.15 setup header, and a
    protected-mode part whose payload is @elf compressed as Linux's build
    does it (the uncompressed size appended; gzip's own trailer is that)."""
    import gzip
    if codec == "gzip":
        payload = gzip.compress(elf, compresslevel=9, mtime=0)
    elif codec == "zstd":
        payload = zstd_compress(elf) + struct.pack("<I", len(elf))
    else:
        payload = codec  # raw bytes, for the error cases
    setup_sects = 4
    code = b"\xf4" * 0x400  # stands in for the kernel's decompressor
    pm = code + payload + b"\0" * 4  # the build's CRC32 at the end
    pm += b"\0" * (-len(pm) % 16)
    img = bytearray((setup_sects + 1) * 512) + pm
    struct.pack_into("<B", img, 0x1f1, setup_sects)
    struct.pack_into("<I", img, 0x1f4, len(pm) // 16)          # syssize
    struct.pack_into("<H", img, 0x1fe, 0xaa55)                 # boot_flag
    struct.pack_into("<BB4sH", img, 0x200, 0xeb, 0x6a, b"HdrS", 0x020f)
    struct.pack_into("<B", img, 0x211, 0x01)                   # loadflags: LOADED_HIGH
    struct.pack_into("<I", img, 0x214, 0x100000)               # code32_start
    struct.pack_into("<IIBBHI", img, 0x22c, 0x7fffffff, 0x200000, 1, 21, 0x1, 2047)
    struct.pack_into("<II", img, 0x248, len(code), len(payload))
    struct.pack_into("<QI", img, 0x258, 0x1000000, 0x800000)   # pref_address, init_size
    return bytes(img)


def test_bzimage_gzip_zstd():
    elf = open(guest("hello"), "rb").read()
    with tempfile.TemporaryDirectory() as d:
        for codec, status in [("gzip", 3), ("zstd", 5)]:
            path = os.path.join(d, f"hello-{codec}.bzImage")
            with open(path, "wb") as f:
                f.write(make_bzimage(elf, codec))
            expect(["--kernel", path, "--cmdline", f"exit={status} {codec}"],
                   debug_exit_status(status),
                   stdout_has=["hello from vmrun test guest (entry=linux64)",
                               f"cmdline: exit={status} {codec}"])
        # The decompressed ELF keeps its PVH note.
        expect(["--kernel", path, "--boot", "pvh", "--cmdline", "exit=6"],
               debug_exit_status(6), stdout_has=["hello from vmrun test guest (entry=pvh)"])
        # A payload vmrun cannot decode is named, with the way out.
        path = os.path.join(d, "lzo.bzImage")
        with open(path, "wb") as f:
            f.write(make_bzimage(elf, b"\x89LZO\0\r\n\x1a\n" + b"\0" * 64))
        expect(["--kernel", path], 4, stderr_has=["unknown format", "--kernel-decompress=guest"])


# ---------------------------------------------------------------- terminal

def test_terminal_escape_and_restore():
    pid, master = pty.fork()
    if pid == 0:
        os.execv(VMRUN, [VMRUN, "--kernel", guest("echo")])
    try:
        before = termios.tcgetattr(master)
        wait_for_fd(master, b"echo ready")
        raw = termios.tcgetattr(master)
        check(not (raw[3] & termios.ICANON) and not (raw[3] & termios.ECHO),
              "terminal not in raw mode while the guest runs")
        os.write(master, b"typed\r")
        wait_for_fd(master, b"echo: typed")
        os.write(master, b"\x01x")
        _, status = os.waitpid(pid, 0)
        pid = 0
        check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
              f"Ctrl-A x: status {status}")
        after = termios.tcgetattr(master)
        check(after[3] == before[3] and after[0] == before[0],
              "terminal modes not restored after exit")
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)


# ---------------------------------------------------------------- control socket

def wait_for_fd(fd, needle, timeout=HANG_GUARD_S):
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        check(left > 0, f"timed out waiting for {needle!r}; got {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            check(chunk, f"EOF waiting for {needle!r}; got {buf!r}")
            buf += chunk
    return buf


def wait_for_output(pipe, needle):
    return wait_for_fd(pipe.fileno(), needle)


def kill(p):
    if p.poll() is None:
        p.kill()
        p.wait()


def ctl(sock, *args):
    p = subprocess.run([VMRUN, "ctl", sock] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class LineClient:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv_json(self, timeout=HANG_GUARD_S):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.s.recv(65536)
            check(chunk, "control socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def wait_event(self, name):
        while True:
            msg = self.recv_json()
            if msg.get("event") == name:
                return msg


def test_control_socket():
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--cpus", "2", "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            watcher = LineClient(sock)  # stays connected for events

            rc, out, err = ctl(sock, "query-status")
            check(rc == 0, f"query-status failed: {err}")
            st = json.loads(out)
            check(st["status"] == "running" and len(st["vcpus"]) == 2, f"status: {st}")

            rc, out, err = ctl(sock, "pause")
            check(rc == 0, f"pause failed: {err}")
            st = json.loads(out)
            check(st["status"] == "paused", f"after pause: {st}")
            check(all(v["state"] == "paused" for v in st["vcpus"]),
                  f"every vCPU must acknowledge the pause: {st}")
            check(watcher.wait_event("paused")["event"] == "paused", "no paused event")

            # A paused guest cannot echo.  Bounded observation, not a sync.
            p.stdin.write(b"while paused\n")
            p.stdin.flush()
            r, _, _ = select.select([p.stdout], [], [], 1.0)
            check(not r, "the guest produced output while paused")

            # Misbehaving clients must not disturb the guest.
            bad = LineClient(sock)
            bad.send(b"{not json\n")
            reply = bad.recv_json()
            check(reply["ok"] is False and "malformed" in reply["error"], f"bad line: {reply}")
            bad.send(b'["array"]\n{"cmd": 5}\n{"id": "x", "cmd": "frobnicate"}\n')
            for _ in range(3):
                reply = bad.recv_json()
                check(reply["ok"] is False, f"should fail: {reply}")
            check(reply["id"] == "x", f"id not echoed: {reply}")
            bad.send(b'{"id": 1, "cmd": "query-st')  # vanish mid-line
            bad.s.close()

            rc, out, err = ctl(sock, "resume")
            check(rc == 0 and json.loads(out)["status"] == "running", f"resume: {out} {err}")
            check(watcher.wait_event("resumed")["event"] == "resumed", "no resumed event")
            wait_for_output(p.stdout, b"echo: while paused")

            rc, _, err = ctl(sock, "no-such-command")
            check(rc == 1 and "unknown command" in err, f"unknown command: {rc} {err}")

            waiter = subprocess.Popen([VMRUN, "ctl", sock, "wait-exit"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            wait_for_output(waiter.stderr, b"waiting for the guest to exit")
            watcher.send(b'{"id": 42, "cmd": "query-status"}\n')
            reply = watcher.recv_json()
            while "event" in reply:
                reply = watcher.recv_json()
            check(reply["id"] == 42 and reply["ok"], f"reply: {reply}")

            p.stdin.write(b"exit 6\n")
            p.stdin.flush()
            rc = p.wait(timeout=HANG_GUARD_S)
            check(rc == debug_exit_status(6), f"guest exit status {rc}")
            ev = watcher.wait_event("guest-exit")
            check(ev["data"]["status"] == debug_exit_status(6) and ev["data"]["kind"] == "debug-exit",
                  f"guest-exit event: {ev}")
            wout, _ = waiter.communicate(timeout=HANG_GUARD_S)
            check(json.loads(wout)["status"] == debug_exit_status(6), f"wait-exit: {wout!r}")
            check(not os.path.exists(sock), "socket file left behind")
        finally:
            kill(p)


def test_control_quit():
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            rc, _, err = ctl(sock, "quit")
            check(rc == 0, f"quit: {err}")
            check(p.wait(timeout=HANG_GUARD_S) == 0, "quit should exit 0")
        finally:
            kill(p)
        # A second vmrun on a live socket is refused; a stale one is reused.
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(sock)
        holder.listen(1)
        rc, _, err = run_vmrun(["--kernel", guest("hello"), "--api-sock", sock])
        check(rc == 4 and "another process is listening" in err, f"live socket: {rc} {err}")
        holder.close()
        rc, _, err = run_vmrun(["--kernel", guest("hello"), "--api-sock", sock])
        check(rc == debug_exit_status(0), f"stale socket should be replaced: {rc} {err}")
        rc, _, err = ctl(os.path.join(d, "nothing.sock"), "query-status")
        check(rc == 3 and "cannot connect" in err, f"ctl without vmrun: {rc} {err}")


# ---------------------------------------------------------------- examples

def test_example_script():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run(["bash", os.path.join(root, "examples", "ci-boot-check.sh"), VMRUN,
                        guest("hello")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=HANG_GUARD_S)
    check(p.returncode == 0, f"example failed: {p.stdout.decode()}")


def main():
    global VMRUN, GUESTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmrun")
    ap.add_argument("--guests")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("tests", nargs="*")
    a = ap.parse_args()
    names = sorted(n[5:] for n in globals() if n.startswith("test_"))
    if a.list:
        print("\n".join(names))
        return 0
    VMRUN, GUESTS = os.path.abspath(a.vmrun), os.path.abspath(a.guests)
    if not os.path.exists("/dev/kvm"):
        print("SKIP: /dev/kvm is missing on this machine: guest tests need KVM")
        return SKIP
    failed = 0
    skipped = 0
    for n in a.tests or names:
        try:
            r = globals()["test_" + n]()
            if r == SKIP:
                skipped += 1
                print(f"SKIP {n}")
            else:
                print(f"PASS {n}")
        except (TestFailure, subprocess.TimeoutExpired) as e:
            failed += 1
            print(f"FAIL {n}: {e}")
    if failed:
        return 1
    return SKIP if skipped and skipped == len(a.tests or names) else 0


if __name__ == "__main__":
    sys.exit(main())
