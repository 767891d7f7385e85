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
import json
import os
import pty
import re
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

VMRUN = None
GUESTS = None
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 120


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (SKIP, LineClient, Skip, TestFailure, add_guest_args,  # noqa: E402
                     check, debug_exit_status, guest_elf, guest_setup, kill, qemu_img,
                     qemu_img_contents, run_main, vmrun_ctl, add_transport_arg, with_transport)


def guest(name):
    return guest_elf(GUESTS, name)


# The virtio transport of the --disk devices (--transport; the blk_* tests
# run once per transport).
TRANSPORT = "mmio"


def run_vmrun(args, stdin=subprocess.DEVNULL, input_bytes=None, timeout=HANG_GUARD_S):
    """Run vmrun to completion; returns (status, stdout, stderr) as text."""
    p = subprocess.run([VMRUN] + with_transport(args, TRANSPORT), stdin=stdin if input_bytes is None else None,
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


def test_hello_elf32_pvh():
    # An ELF32 (i386) file with the PVH note: entered through PVH without
    # --boot, and refused with --boot linux64.
    elf32 = guest("hello32")
    with open(elf32, "rb") as f:
        check(f.read(5) == b"\x7fELF\x01", f"{elf32} is not a 32-bit ELF file")
    expect(["--kernel", elf32, "--cmdline", "exit=5 elf32"], debug_exit_status(5),
           stdout_has=["hello from vmrun test guest (entry=pvh)", "cmdline: exit=5 elf32"])
    expect(["--kernel", elf32, "--boot", "linux64"], 4)


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


def test_console_stdio_log():
    """--console stdio,log=PATH: stdout and the log get the same bytes, the
    guest's input still comes from stdin, and an old log is truncated."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "console.log")
        with open(path, "wb") as f:
            f.write(b"stale content that must go\n" * 100)
        p = subprocess.run([VMRUN, "--kernel", guest("echo"), "--console", "stdio,log=" + path],
                           input=b"first line\nexit 4\n", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        ctx = f"\n--- status {p.returncode}\n--- stdout:\n{p.stdout!r}\n--- stderr:\n{p.stderr!r}"
        check(p.returncode == debug_exit_status(4), f"status {p.returncode}{ctx}")
        check(b"echo: first line" in p.stdout, f"stdout lacks the echo{ctx}")
        with open(path, "rb") as f:
            log = f.read()
        check(log == p.stdout, f"the log differs from stdout: {log!r}{ctx}")
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "no", "such", "console.log")
        expect(["--kernel", guest("hello"), "--console", "stdio,log=" + bad], 4,
               stderr_has=["--console stdio,log=" + bad])


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


# ---------------------------------------------------------------- ACPI and pvpanic
# The acpi guest finds the tables itself (RSDP scan, XSDT, FADT, \_S5 in the
# DSDT) and uses the registers they name; the statuses are README's.

def _acpi_run(action, status, kind, reason_has, extra=()):
    rc, out, err, path, d = run_exit_json(["--kernel", guest("acpi"), "--cmdline",
                                           f"action={action}", "--timeout", "60", *extra])
    try:
        ctx = f"\n--- action={action} status {rc}\n--- stdout:\n{out}\n--- stderr:\n{err}"
        check(rc == status, f"expected status {status}{ctx}")
        check("still running" not in out and "FAIL" not in out, f"guest output{ctx}")
        data = check_exit_json(path, rc, kind, ctx)
        check(reason_has in data["reason"], f"reason {data['reason']!r}{ctx}")
        return out
    finally:
        shutil.rmtree(d)


def test_acpi_tables():
    out, _ = expect(["--kernel", guest("acpi"), "--cmdline", "action=tables"],
                    debug_exit_status(0), stdout_has=[
                        "acpi: rsdp rev 2, fadt rev 6, hw-reduced 0, reset-reg 1, sci 9, "
                        "pm1a_cnt port 0x604, reset port 0x606 value 0xf, S5 5",
                        "acpi: ok"])
    # --acpi off: the MP table only, no RSDP to find.
    expect(["--kernel", guest("acpi"), "--acpi", "off"], debug_exit_status(2),
           stdout_has=["acpi: no RSDP"])
    expect(["--kernel", guest("acpi"), "--acpi", "maybe"], 2, stderr_has=["--acpi"])


def test_acpi_poweroff():
    out = _acpi_run("poweroff", 0, "poweroff", "ACPI")
    check("still alive after the wrong sleep writes" in out, f"wrong writes ended the run:\n{out}")


def test_acpi_reset():
    out = _acpi_run("reset", 6, "reboot", "ACPI")
    check("still alive after a wrong reset value" in out, f"a wrong value reset:\n{out}")


def test_pvpanic_pci():
    out = _acpi_run("pvpanic-pci", 16, "panic", "guest reported a crash")
    check("events 0x3" in out, f"events byte:\n{out}")
    # Without the device the guest finds no function (and exits 1: status 3).
    expect(["--kernel", guest("acpi"), "--no-pvpanic", "--cmdline", "action=pvpanic-pci"],
           debug_exit_status(1), stdout_has=["acpi: FAIL no pvpanic PCI function"])


def test_pvpanic_isa():
    out = _acpi_run("pvpanic-isa", 16, "panic", "guest reported a crash")
    check("still alive after a word write and CRASH_LOADED" in out, f"output:\n{out}")


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


# ---------------------------------------------------------------- --exit-json, --quiet

EXIT_JSON_KEYS = {"status", "kind", "debug_exit_value", "reason", "ms_to_first_instruction",
                  "ms_to_first_output", "ms_total", "vmrun_version"}


def vmrun_version():
    rc, out, _ = run_vmrun(["--version"])
    check(rc == 0, "--version failed")
    return out.split()[-1]


def check_exit_json(path, rc, kind, ctx="", ran=True):
    """The --exit-json file at @path for a run that ended with @rc: every
    key, the status, @kind, and times in order (@ran: the guest started)."""
    with open(path) as f:
        data = json.load(f)
    ctx = f"{ctx}\n--- exit json: {data}"
    check(set(data) == EXIT_JSON_KEYS, f"keys {sorted(data)}{ctx}")
    check(data["status"] == rc, f"status {data['status']}, process exited {rc}{ctx}")
    check(data["kind"] == kind, f"kind {data['kind']!r}, want {kind!r}{ctx}")
    check(isinstance(data["reason"], str), f"reason{ctx}")
    check(data["vmrun_version"] == vmrun_version(), f"version{ctx}")
    total = data["ms_total"]
    check(isinstance(total, (int, float)) and total > 0, f"ms_total{ctx}")
    first = data["ms_to_first_instruction"]
    if ran:
        check(isinstance(first, (int, float)) and 0 < first <= total, f"first instruction{ctx}")
        out = data["ms_to_first_output"]
        check(out is None or first <= out <= total, f"first output{ctx}")
    else:
        check(first is None and data["ms_to_first_output"] is None, f"the guest never ran{ctx}")
    check(not [n for n in os.listdir(os.path.dirname(path)) if ".tmp" in n],
          f"a temporary file was left beside it{ctx}")
    return data


def run_exit_json(args, **kw):
    """vmrun @args with --exit-json into a new directory: (rc, out, err, path, d)."""
    d = tempfile.mkdtemp()
    path = os.path.join(d, "exit.json")
    rc, out, err = run_vmrun(args + ["--exit-json", path], **kw)
    return rc, out, err, path, d


def test_exit_json_debug_exit():
    # The raw value written, beside the status that keeps only 7 bits of it:
    # 128 (status 1) and 0 (status 1) are told apart.
    for v in (0, 1, 127, 128, 255):
        rc, out, err, path, d = run_exit_json(["--kernel", guest("hello"), "--cmdline", f"exit={v}"])
        try:
            ctx = f"\n--- exit={v} status {rc}\n--- stderr:\n{err}"
            check(rc == debug_exit_status(v), f"status {rc}{ctx}")
            data = check_exit_json(path, rc, "debug-exit", ctx)
            check(data["debug_exit_value"] == v, f"debug_exit_value {data['debug_exit_value']}{ctx}")
            check(data["reason"] == "debug-exit", f"reason{ctx}")
            check(data["ms_to_first_output"] is not None, f"the guest printed a greeting{ctx}")
        finally:
            shutil.rmtree(d)


def test_exit_json_timeout():
    rc, _, err, path, d = run_exit_json(["--kernel", guest("echo"), "--timeout", "1"])
    try:
        check(rc == 124, f"status {rc}: {err}")
        data = check_exit_json(path, rc, "timeout", err)
        check(data["debug_exit_value"] is None and data["reason"] == "timeout", f"{data}")
        check(data["ms_total"] >= 1000, f"ended before the timeout: {data}")
    finally:
        shutil.rmtree(d)


def test_exit_json_signal():
    # SIGTERM ends the run with 20, one line saying so, and the verdict file.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "exit.json")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--exit-json", path],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=HANG_GUARD_S)
            err = err.decode(errors="replace")
            check(p.returncode == 20, f"status {p.returncode}: {err}")
            check("vmrun: stopped by SIGTERM\n" in err, f"no line saying why:\n{err}")
            data = check_exit_json(path, 20, "signal", err)
            check(data["reason"] == "signal SIGTERM", f"{data}")
        finally:
            kill(p)


def test_exit_json_triple_fault():
    rc, _, err, path, d = run_exit_json(["--kernel", guest("triple_fault")])
    try:
        check(rc == 8, f"status {rc}: {err}")
        data = check_exit_json(path, rc, "triple-fault", err)
        check("triple fault" in data["reason"] and data["debug_exit_value"] is None, f"{data}")
    finally:
        shutil.rmtree(d)


def test_exit_json_halt():
    rc, _, err, path, d = run_exit_json(["--kernel", guest("hello"), "--cmdline", "action=halt",
                                         "--timeout", "60"])
    try:
        check(rc == 10, f"status {rc}: {err}")
        check("vmrun: stopped: every vCPU halted" in err, f"no line saying why:\n{err}")
        check_exit_json(path, rc, "halt", err)
    finally:
        shutil.rmtree(d)


def test_exit_json_quit():
    # A quit ends with 0 like a poweroff, and is named for what it is.
    with tempfile.TemporaryDirectory() as d:
        sock, path = os.path.join(d, "api.sock"), os.path.join(d, "exit.json")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--api-sock", sock,
                              "--exit-json", path],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            rc, _, err = ctl(sock, "quit")
            check(rc == 0, f"quit: {err}")
            check(p.wait(timeout=HANG_GUARD_S) == 0, "quit should exit 0")
            check_exit_json(path, 0, "quit")
        finally:
            kill(p)


def test_exit_json_vmrun_failure():
    # The VM cannot be built: status 4, kind vmrun-failure, the error as the
    # reason, one line on stderr (no banner before it), no guest times.
    with tempfile.TemporaryDirectory() as d:
        missing = os.path.join(d, "missing-kernel")
        rc, out, err, path, d2 = run_exit_json(["--kernel", missing])
        try:
            check(rc == 4, f"status {rc}: {err}")
            lines = err.splitlines()
            check(len(lines) == 1 and missing in lines[0] and lines[0].startswith("vmrun: error:"),
                  f"want one error line naming the kernel:\n{err}")
            data = check_exit_json(path, rc, "vmrun-failure", err, ran=False)
            check(missing in data["reason"] and data["debug_exit_value"] is None, f"{data}")
        finally:
            shutil.rmtree(d2)
        # Where the file cannot be written: an error line, the status stays.
        rc, _, err = run_vmrun(["--kernel", guest("hello"), "--exit-json",
                                os.path.join(d, "no", "exit.json")])
        check(rc == debug_exit_status(0) and "--exit-json" in err, f"status {rc}: {err}")


def test_not_a_kernel():
    """An ordinary program given as the kernel: refused before the guest
    runs, with one line and status 4.  /bin/true is position-independent;
    the hello guest with its PVH note turned into a TLS header stands for a
    statically linked program (busybox): no PVH note, and what only
    programs have."""
    hello = bytearray(open(guest("hello"), "rb").read())
    phoff, = struct.unpack_from("<Q", hello, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", hello, 0x36)
    for i in range(phnum):
        if struct.unpack_from("<I", hello, phoff + i * phentsize)[0] == 4:  # PT_NOTE
            struct.pack_into("<I", hello, phoff + i * phentsize, 7)  # PT_TLS
    with tempfile.TemporaryDirectory() as d:
        static = os.path.join(d, "static-program")
        with open(static, "wb") as f:
            f.write(hello)
        programs = [static, "/bin/true"]
        busybox = shutil.which("busybox")
        if busybox:
            programs.append(busybox)
        for path in programs:
            rc, out, err = run_vmrun(["--kernel", path, "--timeout", "30"])
            lines = err.splitlines()
            check(rc == 4 and len(lines) == 1 and "not a kernel" in lines[0] and path in lines[0],
                  f"--kernel {path}: status {rc}, want 4 and one line saying 'not a kernel':\n{err}")
            check(not out, f"--kernel {path}: the guest ran: {out!r}")


def test_quiet():
    # No warnings (the unclaimed port), no notices (the nested-host banner):
    # the guest's console only.  Errors stay.
    out, err = expect(["--kernel", guest("unclaimed"), "--quiet"], debug_exit_status(0),
                      stdout_has=["unclaimed: ok"])
    check(err == "", f"--quiet printed on stderr:\n{err}")
    rc, _, err = run_vmrun(["--kernel", guest("hello"), "--cmdline", "action=halt", "--quiet",
                            "--timeout", "60"])
    check(rc == 10 and err == "", f"--quiet halt: status {rc}, stderr {err!r}")
    _, err = expect(["--kernel", guest("echo"), "--timeout", "1", "--quiet"], 124)
    check(err.startswith("vmrun: error: timeout") and len(err.splitlines()) == 1,
          f"--quiet keeps errors: {err!r}")


def test_probe_ports_silent():
    # The ports every PC guest probes read as all-ones without a warning;
    # an unclaimed port still warns.
    _, err = expect(["--kernel", guest("unclaimed")], debug_exit_status(0),
                    stdout_has=["unclaimed: ok"])
    ports = [line for line in err.splitlines() if "unclaimed port" in line]
    check(len(ports) == 1 and "0x510" in ports[0], f"want only port 0x510 logged:\n{err}")


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
NESTED_LINUX_ARGS = ("noxsave no-kvmclock pty.legacy_count=0 tsc=reliable noreplace-smp "
                     "clearcpuid=129,137,141,147,148,151,153,297,580 mitigations=off "
                     "cryptomgr.notests initcall_blacklist=ftrace_check_for_weak_functions,"
                     "trace_eval_init,tracer_init_tracefs,blake2s_mod_init,crypto_kdf108_init")


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
                      stdout_has=["emul: popcnt ok", "emul: fwait ok", "emul: sse ok", "emul: int3 ok",
                                  "emul: ok"])
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
    # ANDN (VEX-encoded BMI1) at CPL 0: neither KVM's emulator here nor the fallback has it.
    if not host_lacks_hw_virt():
        expect(["--kernel", guest("emul"), "--cmdline", "action=andn"], debug_exit_status(0),
               stdout_has=["emul: andn ran"])
        return
    _, err = expect(["--kernel", guest("emul"), "--cmdline", "action=andn"], 12,
                    stderr_has=["instruction emulation failed", "unknown instruction",
                                "instruction bytes c4 e2 78 f2", "rip="])
    # CRC32 at CPL 0: KVM's emulator lacks it, the fallback computes CRC-32C (checked in the guest).
    expect(["--kernel", guest("emul"), "--cmdline", "action=crc32"], debug_exit_status(0),
           stdout_has=["emul: crc32 ran: 0xfa745634"])


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
                "clearcpuid=129,137,141,147,148,151,153,297,580 mitigations=off cryptomgr.notests "
                "initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init,"
                "tracer_init_tracefs,blake2s_mod_init,crypto_kdf108_init"
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


def test_disk_errors():
    # A malformed --disk is a usage error (2); a disk that cannot be opened
    # stops the start (4), naming the file; neither leaves anything behind.
    rc, _, err = run_vmrun(["--kernel", guest("hello"), "--disk", "x.img,bogus"])
    check(rc == 2 and "unknown option 'bogus'" in err, f"--disk x,bogus: status {rc}, {err!r}")
    with tempfile.TemporaryDirectory() as d:
        missing = os.path.join(d, "missing.img")
        rc, _, err = run_vmrun(["--kernel", guest("hello"), "--disk", missing])
        errors = [line for line in err.splitlines() if line.startswith("vmrun: error:")]
        check(rc == 4 and len(errors) == 1 and missing in errors[0],
              f"missing disk: status {rc}, {err!r}")
        check(not os.path.exists(missing), "vmrun created the missing disk")
        rc, _, err = run_vmrun(["--kernel", guest("hello"), "--disk", d])
        check(rc == 4 and d in err, f"directory as disk: status {rc}, {err!r}")


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

class PtyVmrun:
    """vmrun with @args on a new pseudo-terminal (its stdin, stdout and
    stderr); .master is the terminal's master side.  On leaving the with
    block a vmrun still running is killed and the master closed."""

    def __init__(self, args):
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.execv(VMRUN, [VMRUN] + args)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.master)

    def quit(self):
        """Ctrl-A x; the exit status (os.waitpid's) once vmrun has ended."""
        os.write(self.master, b"\x01x")
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return status


def test_terminal_escape_and_restore():
    with PtyVmrun(["--kernel", guest("echo")]) as t:
        master = t.master
        before = termios.tcgetattr(master)
        wait_for_fd(master, b"echo ready")
        raw = termios.tcgetattr(master)
        check(not (raw[3] & termios.ICANON) and not (raw[3] & termios.ECHO),
              "terminal not in raw mode while the guest runs")
        os.write(master, b"typed\r")
        wait_for_fd(master, b"echo: typed")
        status = t.quit()
        check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
              f"Ctrl-A x: status {status}")
        after = termios.tcgetattr(master)
        check(after[3] == before[3] and after[0] == before[0],
              "terminal modes not restored after exit")


def test_terminal_escape_help():
    """Ctrl-A h on a terminal prints the escape keys (on stderr, here the
    same terminal) and is not passed to the guest: the bytes around it are."""
    with PtyVmrun(["--kernel", guest("echo")]) as t:
        master = t.master
        wait_for_fd(master, b"echo ready")
        os.write(master, b"ab\x01hcd\r")
        got = wait_for_fd(master, b"echo: ")
        got += wait_for_fd(master, b"\n") if b"\n" not in got.split(b"echo: ", 1)[1] else b""
        check(b"escape keys" in got and b"quit" in got, f"no escape key list: {got!r}")
        line = got.split(b"echo: ", 1)[1].split(b"\r")[0].split(b"\n")[0]
        check(line == b"abcd", f"the guest got {line!r}, wanted b'abcd'")
        status = t.quit()
        check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"Ctrl-A x: status {status}")


def test_terminal_escape_file_console():
    """With --console file:PATH (and none) the guest's console is not on the
    terminal, yet Ctrl-A h and Ctrl-A x work there; the terminal's modes are
    restored afterwards."""
    for kind in ("file", "none"):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "console.log")
            console = "file:" + path if kind == "file" else "none"
            with PtyVmrun(["--kernel", guest("echo"), "--console", console]) as t:
                master = t.master
                before = termios.tcgetattr(master)
                os.write(master, b"\x01h")
                wait_for_fd(master, b"escape keys")
                status = t.quit()
                check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                      f"--console {kind}: Ctrl-A x: status {status}")
                after = termios.tcgetattr(master)
                check(after[3] == before[3] and after[0] == before[0],
                      f"--console {kind}: terminal modes not restored after exit")


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


def ctl(sock, *args):
    return vmrun_ctl(VMRUN, sock, *args, timeout=HANG_GUARD_S)


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
            check(ev["data"]["status"] == debug_exit_status(6) and ev["data"]["kind"] == "debug-exit"
                  and ev["data"]["debug_exit_value"] == 6, f"guest-exit event: {ev}")
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


def test_control_nmi():
    """`nmi` reaches the guest's IDT vector 2 (the echo guest counts each
    one), at once while it runs, and after `resume` when it is paused."""
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            rc, _, err = ctl(sock, "nmi")
            check(rc == 0, f"nmi: {rc} {err}")
            wait_for_output(p.stdout, b"echo: nmi 1\n")
            for cmd in ("pause", "nmi", "resume"):
                rc, _, err = ctl(sock, cmd)
                check(rc == 0, f"{cmd}: {rc} {err}")
            wait_for_output(p.stdout, b"echo: nmi 2\n")
            p.stdin.write(b"exit 0\n")
            p.stdin.flush()
            check(p.wait(timeout=HANG_GUARD_S) == debug_exit_status(0),
                  f"exit status {p.returncode}")
        finally:
            kill(p)


def test_control_greeting_help():
    """The greeting (version, protocol, commands), `help`, event timestamps,
    query-status's memory size, vCPU count and millisecond uptime."""
    rc, version, _ = run_vmrun(["--version"])
    version = version.split()[-1]
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--cpus", "2", "--mem", "64M",
                              "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            c = LineClient(sock)
            c.s.settimeout(HANG_GUARD_S)
            while b"\n" not in c.buf:
                c.buf += c.s.recv(65536)
            first = json.loads(c.buf.split(b"\n", 1)[0])
            g = first.get("greeting")
            check(g and g["vmrun"] == version and g["protocol"] == 1, f"greeting: {first}")
            check({"query-status", "pause", "resume", "quit", "help"} <= set(g["commands"]),
                  f"greeting commands: {g}")

            rc, out, err = ctl(sock, "help")
            check(rc == 0, f"help: {rc} {err}")
            cmds = json.loads(out)["commands"]
            check(set(cmds) == set(g["commands"]) and all(isinstance(v, str) and v
                                                          for v in cmds.values()),
                  f"help: {out}")

            rc, out, err = ctl(sock, "query-status")
            check(rc == 0, f"query-status: {err}")
            st = json.loads(out)
            check(st["mem_bytes"] == 64 << 20 and st["cpus"] == 2, f"query-status: {out}")
            check(isinstance(st["uptime_ms"], int), f"uptime_ms: {out}")
            m = re.search(r'"uptime_s":([0-9.eE+-]+)', out)
            check(m and len(m.group(1).partition(".")[2]) <= 3,
                  f"uptime_s at more than millisecond precision: {out}")

            before = time.time()
            c.s.sendall(b'{"id": 1, "cmd": "pause"}\n')
            ev = c.wait_event("paused")
            after = time.time()
            ts = ev.get("timestamp", {})
            stamp = ts.get("seconds", 0) + ts.get("microseconds", -1) / 1e6
            check(before - 1 <= stamp <= after + 1 and 0 <= ts["microseconds"] < 1000000,
                  f"event timestamp {ts} outside [{before}, {after}]")
            rc, _, err = ctl(sock, "quit")
            check(rc == 0, f"quit: {err}")
            p.wait(timeout=HANG_GUARD_S)
        finally:
            kill(p)


def test_control_resume_running():
    """resume answers "running" only once every vCPU runs (it used to answer
    with the vCPUs still "paused"); started --paused, then pause/resume
    rounds."""
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        p = subprocess.Popen([VMRUN, "--kernel", guest("echo"), "--cpus", "2", "--paused",
                              "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            c = None
            deadline = time.monotonic() + HANG_GUARD_S
            while c is None:
                check(p.poll() is None, f"vmrun ended: {p.returncode}")
                try:
                    c = LineClient(sock)
                except OSError:
                    check(time.monotonic() < deadline, "no control socket")
                    select.select([], [], [], 0.05)  # the socket is not bound yet: poll
            for i in range(20):
                if i:
                    c.s.sendall(json.dumps({"id": 100 + i, "cmd": "pause"}).encode() + b"\n")
                    reply = c.recv_json()
                    while "event" in reply:
                        reply = c.recv_json()
                    check(reply["ok"] and reply["result"]["status"] == "paused", f"pause: {reply}")
                c.s.sendall(json.dumps({"id": i, "cmd": "resume"}).encode() + b"\n")
                reply = c.recv_json()
                while "event" in reply:
                    reply = c.recv_json()
                st = reply["result"]
                check(reply["ok"] and st["status"] == "running" and
                      all(v["state"] == "running" for v in st["vcpus"]),
                      f"round {i}: resume answered {st}")
            wait_for_output(p.stdout, b"echo ready\n")
            rc, _, err = ctl(sock, "quit")
            check(rc == 0, f"quit: {err}")
            p.wait(timeout=HANG_GUARD_S)
        finally:
            kill(p)


def test_sd_notify_ready():
    """READY=1 to NOTIFY_SOCKET once the guest runs: a path and the abstract
    namespace ('@NAME')."""
    with tempfile.TemporaryDirectory() as d:
        for abstract in (False, True):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            if abstract:
                name = f"vmrun-test-notify-{os.getpid()}"
                listener.bind("\0" + name)
                env_value = "@" + name
            else:
                env_value = os.path.join(d, "notify.sock")
                listener.bind(env_value)
            env = dict(os.environ, NOTIFY_SOCKET=env_value)
            p = subprocess.Popen([VMRUN, "--kernel", guest("echo")], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                listener.settimeout(HANG_GUARD_S)
                msg = listener.recv(4096)
                check(msg == b"READY=1", f"NOTIFY_SOCKET={env_value}: got {msg!r}")
                wait_for_output(p.stdout, b"echo ready\n")
                p.stdin.write(b"exit 3\n")
                p.stdin.flush()
                check(p.wait(timeout=HANG_GUARD_S) == debug_exit_status(3), "exit status")
                err = p.stderr.read().decode()
                check("NOTIFY_SOCKET" not in err, f"warning: {err}")
            finally:
                kill(p)
                listener.close()
        # A socket nobody listens on: a warning, the guest runs all the same.
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d, "nobody.sock"))
        p = subprocess.run([VMRUN, "--kernel", guest("hello")], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        check(p.returncode == debug_exit_status(0) and b"READY=1" in p.stderr,
              f"no listener: {p.returncode} {p.stderr!r}")


def test_config_file():
    """--config FILE boots the machine it describes; the command line
    overrides it; its errors are one line each, exit 2."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "vm.json")
        with open(path, "w") as f:
            json.dump({"kernel": guest("hello"), "mem": "64M", "cpus": 1,
                       "cmdline": "exit=5 from the file", "console": "stdio"}, f)
        expect(["--config", path], debug_exit_status(5), stdout_has=["cmdline: exit=5 from the file"])
        expect(["--config", path, "--cmdline", "exit=7"], debug_exit_status(7),
               stdout_has=["cmdline: exit=7"])
        # The example in examples/ is a valid file (its paths aside).
        example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                               "vm.json")
        with open(example) as f:
            json.load(f)
        for text, needle in (('{"kernel": "k", "cpu": 2}', "unknown key 'cpu'"),
                             ('{"kernel": "k", "cpus": "2x"}', "--cpus"),
                             ('{"kernel": "k", "cpus": [2]}', "key 'cpus'"),
                             ('{"kernel": ', "line 1")):
            with open(path, "w") as f:
                f.write(text)
            _, err = expect(["--config", path], 2, stderr_has=[needle, path])
            check(err.count("\n") == 1, f"more than one line: {err!r}")
        expect(["--config", os.path.join(d, "missing.json")], 2, stderr_has=["missing.json"])


# ---------------------------------------------------------------- virtio-blk

# The blk guest's disk contents (tests/guest/blk.c): the little-endian word
# at byte offset o of a disk is x ^ (x >> 29), x = (seed ^ o) * K mod 2^64.
BLK_K = 0x9E3779B97F4A7C15
BLK_MASK = (1 << 64) - 1
BLK_SECTOR = 512
BLK_MB = 1 << 20
# Feature bits the device offers (virtio 1.2, sections 6 and 5.2.3).
BLK_FEATURES = {"SIZE_MAX": 1, "SEG_MAX": 2, "RO": 5, "BLK_SIZE": 6, "FLUSH": 9, "TOPOLOGY": 10,
                "DISCARD": 13, "WRITE_ZEROES": 14, "INDIRECT_DESC": 28, "EVENT_IDX": 29,
                "VERSION_1": 32}
BLK_IRQS = [5, 6, 7, 9, 10, 11, 12, 13]


def blk_pattern(seed, off, n):
    out = bytearray(n)
    for o in range(0, n - n % 8, 8):
        x = ((seed ^ (off + o)) * BLK_K) & BLK_MASK
        struct.pack_into("<Q", out, o, x ^ (x >> 29))
    return out


def blk_image(d, name, size, seed):
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(blk_pattern(seed, 0, size))
    return path


def blk_write_expected(img, sector, count, wseed):
    """@img (a bytearray) with sectors [sector, sector + count) as the guest writes them."""
    a = sector * BLK_SECTOR
    img[a:a + count * BLK_SECTOR] = blk_pattern(wseed, a, count * BLK_SECTOR)


def blk_check_image(path, want, what):
    """The external oracle: the image file read back with plain reads."""
    with open(path, "rb") as f:
        got = f.read()
    check(len(got) == len(want), f"{what}: {path} is {len(got)} bytes, want {len(want)}")
    if got != want:
        i = next(i for i in range(len(want)) if got[i] != want[i])
        check(False, f"{what}: {path} differs from byte {i} (sector {i // BLK_SECTOR}): "
                     f"{got[i:i + 16].hex()}, want {bytes(want[i:i + 16]).hex()}")


def blk_run(disks, cmdline, stdout_has=(), **kw):
    """Run the blk guest on @disks (--disk values); it must pass."""
    args = ["--kernel", guest("blk"), "--mem", "256M", "--timeout", "60", "--cmdline", cmdline]
    for d in disks:
        args += ["--disk", d]
    return expect(args, debug_exit_status(0),
                  stdout_has=list(stdout_has) + ["blk: all ok", f"blk: transport {TRANSPORT}\n"],
                  **kw)


def blk_direct_dir():
    """A directory whose filesystem takes O_DIRECT (cache=none), or None."""
    for d in (tempfile.gettempdir(), os.path.dirname(VMRUN)):
        with tempfile.NamedTemporaryFile(dir=d) as f:
            f.write(bytes(4096))
            f.flush()
            try:
                os.close(os.open(f.name, os.O_RDONLY | os.O_DIRECT))
                return d
            except OSError:
                pass
    return None


def blk_caches():
    """(cache mode, directory) pairs to run a test under: the page cache in
    the temp dir, and O_DIRECT where some filesystem here takes it."""
    d = blk_direct_dir()
    if d is None:
        print("note: no filesystem here takes O_DIRECT: cache=none not tested")
        return [("writeback", None)]
    return [("writeback", None), ("none", d)]


def blk_punch_probe(d, off, n):
    """Whether the filesystem of @d punches holes (FALLOC_FL_PUNCH_HOLE of
    bytes [@off, @off + @n) reads back as zeroes) and lseek(SEEK_HOLE)
    finds that one."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    with tempfile.TemporaryFile(dir=d) as f:
        f.write(b"\xff" * (off + n + 65536))
        f.flush()
        if libc.fallocate(f.fileno(), 3, off, n) != 0:  # PUNCH_HOLE | KEEP_SIZE
            return False, False
        f.seek(off)
        punched = f.read(n) == bytes(n)
        try:
            seek_hole = os.lseek(f.fileno(), 0, os.SEEK_HOLE) == off
        except OSError:
            seek_hole = False
        return punched, seek_hole


def test_blk_read():
    # Pattern reads of several shapes; the image ends mid-sector in one run
    # (the tail reads as zeroes, the capacity rounds up).
    for cache, where in blk_caches():
        for size in (BLK_MB, BLK_MB + 256):
            with tempfile.TemporaryDirectory(dir=where) as d:
                img = blk_image(d, "disk.img", size, 0x5eed)
                out, err = blk_run([f"{img},cache={cache}"],
                                   f"blk.test=read blk.seed=0x5eed blk.bytes={size}",
                                   stdout_has=["blk: read ok"])
                check(f"blk: capacity {(size + BLK_SECTOR - 1) // BLK_SECTOR}\n" in out,
                      f"cache={cache} size {size}: wrong capacity:\n{out}")
                line = [l for l in out.splitlines() if l.startswith("blk: features ")]
                check(len(line) == 1, f"no features line:\n{out}")
                line = line[0].split()
                feats, cfg = int(line[2], 16), dict(zip(line[3::2], map(int, line[4::2])))
                want = ["VERSION_1", "INDIRECT_DESC", "EVENT_IDX", "SIZE_MAX", "SEG_MAX",
                        "BLK_SIZE", "TOPOLOGY", "FLUSH", "WRITE_ZEROES"]
                for name in want:
                    check(feats >> BLK_FEATURES[name] & 1, f"feature {name} not offered: {line}")
                check(not feats >> BLK_FEATURES["RO"] & 1, f"RO offered on a writable disk: {line}")
                check(feats >> BLK_FEATURES["DISCARD"] & 1 or not blk_punch_probe(d, 0, 4096)[0],
                      f"DISCARD not offered, yet the file can punch holes: {line}")
                bs = cfg["blk_size"]
                check(bs >= BLK_SECTOR and bs & (bs - 1) == 0 and (cache != "writeback" or bs == 512),
                      f"cache={cache}: blk_size {bs}")
                check(cfg["seg_max"] >= 1 and cfg["size_max"] >= 4096, f"limits: {cfg}")
                blk_check_image(img, blk_pattern(0x5eed, 0, size), f"read, cache={cache}")


def test_blk_write():
    # The guest writes [S, S+C) and S+C+1; the file holds exactly that.
    for cache, where in blk_caches():
        with tempfile.TemporaryDirectory(dir=where) as d:
            img = blk_image(d, "disk.img", BLK_MB, 7)
            blk_run([f"{img},cache={cache}"],
                    "blk.test=write blk.seed=7 blk.wseed=0xabc blk.sector=100 blk.count=24",
                    stdout_has=["blk: write ok"])
            want = blk_pattern(7, 0, BLK_MB)
            blk_write_expected(want, 100, 24, 0xabc)
            blk_write_expected(want, 125, 1, 0xabc)
            blk_check_image(img, want, f"write, cache={cache}")


def test_blk_flush():
    for cache in ("writeback", "unsafe"):
        with tempfile.TemporaryDirectory() as d:
            img = blk_image(d, "disk.img", BLK_MB, 3)
            blk_run([f"{img},cache={cache}"], "blk.test=flush blk.seed=3 blk.wseed=4 blk.sector=8",
                    stdout_has=["blk: write ok", "blk: flush ok"])
            want = blk_pattern(3, 0, BLK_MB)
            blk_write_expected(want, 8, 8, 4)
            blk_check_image(img, want, f"flush, cache={cache}")


def test_blk_durable_after_sigkill():
    # What the guest saw acknowledged (a write, then FLUSH) is in the file
    # even when vmrun dies at once: SIGKILL as soon as the guest says so.
    runs = [("writeback", None)] + [c for c in blk_caches() if c[0] == "none"]
    for cache, where in runs:
        with tempfile.TemporaryDirectory(dir=where) as d:
            img = blk_image(d, "disk.img", BLK_MB, 5)
            p = subprocess.Popen(with_transport(
                                 [VMRUN, "--kernel", guest("blk"), "--disk", f"{img},cache={cache}",
                                  "--cmdline", "blk.test=durable blk.seed=5 blk.wseed=0xd0 "
                                  "blk.sector=1000 blk.count=16"], TRANSPORT),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                out = wait_for_output(p.stdout, b"blk: flushed\n")
                check(p.poll() is None, f"vmrun ended before the kill: {p.returncode}")
                p.send_signal(signal.SIGKILL)
                rc = p.wait(timeout=HANG_GUARD_S)
                err = p.stderr.read().decode(errors="replace")
            finally:
                kill(p)
            check(rc == -signal.SIGKILL, f"status {rc}")
            check(b"blk: flush ok" in out and b"FAIL" not in out, f"guest output {out!r}")
            check("O_DIRECT" not in err, f"cache=none fell back to the page cache: {err}")
            want = blk_pattern(5, 0, BLK_MB)
            blk_write_expected(want, 1000, 16, 0xd0)
            blk_check_image(img, want, f"after SIGKILL, cache={cache}")


def test_blk_get_id():
    for serial in ("abc-123", "ABCDEFGHIJ0123456789", None):
        with tempfile.TemporaryDirectory() as d:
            img = blk_image(d, "disk.img", 65536, 1)
            spec = img if serial is None else f"{img},serial={serial}"
            out, _ = blk_run([spec], "blk.test=get_id", stdout_has=["blk: get_id ok"])
            # Default serial per include/vmrun/virtio_blk.h; NUL padding up
            # to the 20 bytes, none when the serial fills them.
            raw = (serial or "vmrun-disk0").encode().ljust(20, b"\0")
            check(f"blk: id {raw.hex()}\n" in out, f"serial {serial!r}: want id {raw.hex()}:\n{out}")


def test_blk_discard_write_zeroes():
    for cache, where in blk_caches():
        with tempfile.TemporaryDirectory(dir=where) as d:
            s, c = 64, 8
            punch, seek_hole = blk_punch_probe(d, s * BLK_SECTOR, c * BLK_SECTOR)
            img = blk_image(d, "disk.img", BLK_MB, 9)
            # DISCARD is offered where the file can punch holes.
            out, _ = blk_run([f"{img},cache={cache}"],
                             f"blk.test=discard blk.seed=9 blk.sector={s} blk.count={c} "
                             f"blk.punch={int(punch)}",
                             stdout_has=["blk: write_zeroes ok"] +
                             (["blk: discard offered", "blk: discard ok"] if punch else []))
            check("blk: discard offered" not in out or "blk: discard ok" in out,
                  f"no discard verdict:\n{out}")
            with open(img, "rb") as f:
                got = f.read()
            want = blk_pattern(9, 0, BLK_MB)
            zero = bytes(c * BLK_SECTOR)
            for first in (s + 2 * c, s + 4 * c):  # WRITE_ZEROES, then with UNMAP
                want[first * BLK_SECTOR:(first + c) * BLK_SECTOR] = zero
            a, b = s * BLK_SECTOR, (s + c) * BLK_SECTOR
            if punch:
                want[a:b] = zero
                if seek_hole:
                    with open(img, "rb") as f:
                        hole = os.lseek(f.fileno(), a, os.SEEK_HOLE)
                    check(a <= hole < b, f"no hole in the discarded range: SEEK_HOLE gives {hole}")
            elif got[a:b] == bytes(b - a):
                want[a:b] = zero  # a hint: either the old data or zeroes
            blk_check_image(img, want, f"discard, cache={cache}")


def test_blk_readonly():
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "ro.img", 262144, 0x77)
        os.utime(img, (1_000_000_000, 1_000_000_000))
        out, _ = blk_run([f"{img},readonly"], "blk.test=readonly blk.seed=0x77 blk.sector=20",
                         stdout_has=["blk: readonly ok", "blk: capacity 512\n"])
        blk_check_image(img, blk_pattern(0x77, 0, 262144), "read-only disk")
        check(os.stat(img).st_mtime == 1_000_000_000, "the read-only image was modified")


def test_blk_multiple_disks():
    # The most disks vmrun takes, each its own size, content and serial;
    # one read-only.  Requests go to all of them at once.
    with tempfile.TemporaryDirectory() as d:
        specs, imgs, lines = [], [], []
        for i in range(8):
            size = 32768 * (i + 1)
            imgs.append(blk_image(d, f"d{i}.img", size, 100 + i))
            spec, ident, ro = imgs[-1], f"vmrun-disk{i}", i == 3
            if i % 2 == 0:
                ident = f"serial{i}"
                spec += f",serial={ident}"
            if ro:
                spec += ",readonly"
            specs.append(spec)
            # virtio-mmio: 4 KiB windows from 0xd0000000 on ISA IRQs; virtio-pci:
            # BAR0 (common configuration) every 32 KiB from 0xe0000000, INTA#
            # of slot i + 1 on IOAPIC pin 16 + i.
            at, irq = ((0xd0000000 + i * 0x1000, BLK_IRQS[i]) if TRANSPORT == "mmio"
                       else (0xe0000000 + i * 0x8000, 16 + i))
            lines.append(f"blk: disk {i} at 0x{at:x} irq {irq} "
                         f"capacity {size // BLK_SECTOR} id {ident}{' ro' if ro else ''}\n")
        blk_run(specs, "blk.test=multi blk.seed=100 blk.wseed=200",
                stdout_has=lines + ["blk: 8 disks ok"])
        for i, img in enumerate(imgs):
            want = blk_pattern(100 + i, 0, 32768 * (i + 1))
            if i != 3:
                blk_write_expected(want, 1, 1, 200 + i)
            blk_check_image(img, want, f"disk {i}")
        rc, _, err = run_vmrun(["--kernel", guest("blk")] + [a for s in specs + [imgs[0]]
                                                             for a in ("--disk", s)])
        check(rc == 2 and "at most 8 disks" in err, f"a 9th disk: status {rc}, {err!r}")


def test_blk_queue_full():
    # Every avail slot filled (indirect chains) before one notification;
    # several rounds wrap the rings.  A chain may not be longer than the
    # queue (virtio 1.2, 2.7.5.3.1), so the smallest queue here holds the
    # three buffers of a request.
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", BLK_MB, 0xf)
        for size, rounds in ((256, 2), (4, 5)):
            blk_run([img], f"blk.test=full blk.seed=0xf blk.qsize={size} blk.rounds={rounds}",
                    stdout_has=[f"blk: queue full size={size} rounds={rounds} ok"])
        blk_check_image(img, blk_pattern(0xf, 0, BLK_MB), "queue full")


def test_blk_indirect():
    # A table of exactly queue-size entries with uneven segments, written
    # and read back; a direct and an indirect chain in one notification.
    for cache, where in blk_caches():
        for qsize in (16, 4):
            with tempfile.TemporaryDirectory(dir=where) as d:
                img = blk_image(d, "disk.img", BLK_MB, 0x1d)
                blk_run([f"{img},cache={cache}"],
                        f"blk.test=indirect blk.seed=0x1d blk.wseed=0x2d blk.sector=33 "
                        f"blk.qsize={qsize}", stdout_has=["blk: indirect ok"])
                want = blk_pattern(0x1d, 0, BLK_MB)
                blk_write_expected(want, 33, 8, 0x2d)
                blk_check_image(img, want, f"indirect, cache={cache}, queue {qsize}")


def test_blk_event_idx_intx():
    # virtio-pci only: the same with INTx (level, through the IOAPIC pin the
    # MP table names) instead of MSI-X, as a driver without MSI-X runs.
    if TRANSPORT != "pci":
        return SKIP
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", 65536, 0xe)
        blk_run([img], "blk.test=event_idx blk.seed=0xe blk.qsize=16 virtio.intx=1",
                stdout_has=["blk: event_idx ok", "vpci: slot 1 intx pin 16\n"])


def test_blk_bus_master():
    # virtio-pci only: with Bus Master Enable cleared the disk leaves a
    # notified request alone; set again, the request completes (the
    # notification that came meanwhile is not lost).
    if TRANSPORT != "pci":
        return SKIP
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", 65536, 0xb3)
        blk_run([img], "blk.test=bus_master blk.seed=0xb3",
                stdout_has=["blk: bus master off: request held\n",
                            "blk: bus master on: request done\n"])
        blk_check_image(img, blk_pattern(0xb3, 0, 65536), "bus master")


def test_blk_event_idx():
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", 65536, 0xe)
        out, _ = blk_run([img], "blk.test=event_idx blk.seed=0xe blk.qsize=16")
        check("blk: event_idx ok (" in out, f"no event_idx verdict:\n{out}")
        # Over PCI the guest's driver takes MSI-X.
        check(TRANSPORT != "pci" or "vpci: slot 1 msix 2 vectors\n" in out,
              f"the guest did not use MSI-X:\n{out}")


def test_blk_out_of_range():
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", 131072, 0x0e)
        blk_run([img], "blk.test=range blk.seed=0x0e blk.wseed=0x1e",
                stdout_has=["blk: out of range ok"])
        # Nothing written, the file not extended.
        blk_check_image(img, blk_pattern(0x0e, 0, 131072), "out of range")


BLK_MALFORMED = [
    "buffer in the MMIO hole", "buffer across the end of RAM", "descriptor loop",
    "next index out of range", "zero-length buffer", "readable after writable", "no header",
    "indirect not negotiated", "avail idx too far ahead", "head out of range", "nested indirect",
    "indirect with next", "indirect table length", "indirect table too long",
    "descriptor table in the MMIO hole", "misaligned descriptor table",
    "queue size not a power of two", "queue size above the maximum"]


def test_blk_malformed_chain():
    # Each chain or queue only a broken driver makes: the device reports
    # NEEDS_RESET, vmrun keeps running, and a reset brings the device back.
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", 65536, 0xbad)
        out, err = blk_run([img], "blk.test=malformed blk.seed=0xbad blk.qsize=8",
                           stdout_has=[f"blk: malformed {m}: needs reset ok\n" for m in BLK_MALFORMED]
                           + ["blk: recovered"])
        check("needs a reset" in err, f"no warning on stderr:\n{err}")
        blk_check_image(img, blk_pattern(0xbad, 0, 65536), "malformed chains")


def test_blk_feature_negotiation():
    with tempfile.TemporaryDirectory() as d:
        img = blk_image(d, "disk.img", 65536, 0x4e)
        blk_run([img], "blk.test=negotiate blk.seed=0x4e",
                stdout_has=["blk: features refused ok",
                            "blk: malformed DRIVER_OK without FEATURES_OK: needs reset ok",
                            "blk: negotiate ok"])


def test_blk_reset_in_flight():
    # 63 writes of 64 KiB and a FLUSH in flight when the driver resets the
    # device, at once and after the device took them: the ones the guest saw complete
    # are in the file, the others hold the old or the new data, nothing
    # else changed.  Each write carries the same bytes (blk.c).
    q, r, start, size = 64, 128, 200, 16 * BLK_MB
    chunk = bytes(blk_pattern(0x4e, 0, r * BLK_SECTOR))
    old = bytes(r * BLK_SECTOR)
    for cache, where in blk_caches():
        with tempfile.TemporaryDirectory(dir=where) as d:
            img = os.path.join(d, "disk.img")
            with open(img, "wb") as f:
                f.truncate(size)
            out, _ = blk_run([f"{img},cache={cache}"],
                             f"blk.test=reset blk.seed=0 blk.wseed=0x4e blk.sector={start} "
                             f"blk.qsize={q} blk.rsize={r}",
                             stdout_has=["blk: reset at once with",
                                         "blk: reset after the device took them with"])
            done = [l.split()[2:] for l in out.splitlines() if l.startswith("blk: completed ")]
            check([int(s) for s, _ in done] == [start, start + q * r], f"completed lines: {done}")
            with open(img, "rb") as f:
                got = f.read()
            want = bytearray(size)
            for first, bits in done:
                check(len(bits) == q, f"completed line: {bits}")
                for i, bit in enumerate(bits[:-1]):  # the last is a FLUSH
                    a = (int(first) + i * r) * BLK_SECTOR
                    region = got[a:a + r * BLK_SECTOR]
                    check(region == chunk or (bit == "0" and region == old),
                          f"cache={cache}: write {i} at sector {a // BLK_SECTOR} (completed: "
                          f"{bit}) holds neither the acknowledged nor the old data")
                    want[a:a + r * BLK_SECTOR] = region
            blk_check_image(img, want, f"reset in flight, cache={cache}")


# ---------------------------------------------------------------- live disk snapshots

def snapshot_run(d, fmt, sock, extra_args=(), wrapper=()):
    """Start the blk guest's snapshot scenario (three phases) on disk.<fmt>
    in @d, with a read-only second disk; returns (process, image path)."""
    raw = blk_image(d, "seed.raw", BLK_MB, 5)
    img = os.path.join(d, "disk." + fmt)
    if fmt == "qcow2":
        qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, img)
        os.unlink(raw)
    else:
        os.rename(raw, img)
    ro = blk_image(d, "ro.img", BLK_MB, 9)
    args = list(wrapper) + [VMRUN, "--kernel", guest("blk"), "--mem", "256M", "--timeout", "120",
                            "--api-sock", sock, "--disk", img, "--disk", ro + ",readonly",
                            "--cmdline", "blk.test=snapshot blk.seed=5 blk.wseed=0x50 "
                                         "blk.sector=64 blk.count=16 blk.rounds=2"]
    p = subprocess.Popen(with_transport(args + list(extra_args), TRANSPORT),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    return p, img


def snapshot_expected(phases):
    """The disk after phases 0..@phases-1 of the snapshot scenario."""
    want = blk_pattern(5, 0, BLK_MB)
    for k in range(phases):
        blk_write_expected(want, 64 + k * 8, 16, 0x50 + k)
    return want


def snapshot_finish(p, img, d, bases):
    """Let the guest finish; check its status and every image of the chain."""
    out, err = p.communicate(timeout=HANG_GUARD_S)
    out, err = out.decode(), err.decode()
    check(p.returncode == debug_exit_status(0) and "blk: snapshot ok" in out,
          f"guest status {p.returncode}:\n{out}\n{err}")
    chain = bases + [img]
    for i, path in enumerate(chain):
        if json.loads(qemu_img("info", "--output=json", path))["format"] == "qcow2":
            qemu_img("check", path)
        got = qemu_img_contents(path, d)
        want = snapshot_expected(i + 1)
        check(got == want, f"{os.path.basename(path)} (after phase {i}) holds the wrong data")
    for path in bases:
        check(os.stat(path).st_mode & 0o222 == 0, f"{path} was left writable")
    for i, path in enumerate(chain[1:]):
        info = json.loads(qemu_img("info", "--output=json", path))
        check(info.get("format") == "qcow2" and
              info.get("backing-filename") == os.path.basename(chain[i]),
              f"{path}: backing {info.get('backing-filename')}, want {os.path.basename(chain[i])}")
    left = sorted(f for f in os.listdir(d) if ".tmp-" in f)
    check(not left, f"temporary files left behind: {left}")
    return out


def test_blk_live_snapshot():
    # The guest writes phase 0, the host snapshots the running disk (the
    # guest keeps reading meanwhile), phase 1, another snapshot, phase 2.
    # Each base holds exactly the phases before its snapshot (qemu-img reads
    # it), the top holds them all, every image passes qemu-img check.
    # From a qcow2 disk and from a raw one (the overlays are qcow2).
    for fmt in ("qcow2", "raw"):
        with tempfile.TemporaryDirectory() as d:
            sock = os.path.join(d, "api.sock")
            p, img = snapshot_run(d, fmt, sock)
            try:
                bases = []
                for k in range(2):
                    wait_for_output(p.stdout, f"blk: phase {k} written\n".encode())
                    which = "disk=0" if k == 0 else "disk=" + img
                    rc, out, err = ctl(sock, "snapshot", which)
                    check(rc == 0, f"{fmt}: snapshot {k}: {rc} {err}")
                    res = json.loads(out)
                    base = f"{img}.base-{k + 1}"
                    check(res == {"disk": 0, "image": img, "base": base}, f"snapshot reply {res}")
                    bases.append(base)
                    rc, out, err = ctl(sock, "query-status")
                    check(rc == 0, f"query-status after snapshot {k}: status {rc}, {err!r}")
                    disks = json.loads(out)["disks"]
                    check(disks[0]["format"] == "qcow2" and not disks[0]["readonly"] and
                          disks[1]["readonly"], f"query-status disks: {disks}")
                    if k == 0:
                        # Refusals change nothing and leave the guest alone.
                        rc, _, err = ctl(sock, "snapshot", "disk=1")
                        check(rc == 1 and "read-only" in err, f"read-only disk: {rc} {err}")
                        rc, _, err = ctl(sock, "snapshot", "disk=2")
                        check(rc == 1 and "disk index" in err, f"disk=2: {rc} {err}")
                        rc, _, err = ctl(sock, "snapshot")
                        check(rc == 1 and "disk index" in err, f"no disk with two: {rc} {err}")
                        check(not os.path.exists(os.path.join(d, "ro.img.base-1")),
                              "a refused snapshot left a base behind")
                    p.stdin.write(b"s")
                    p.stdin.flush()
                snapshot_finish(p, img, d, bases)
            finally:
                kill(p)


def test_blk_live_snapshot_failure():
    # The rename that puts the overlay in place fails once (strace injects
    # EIO): the snapshot is refused, undone (no base, no temporary file),
    # the guest goes on with its disk; the next snapshot works.
    if not shutil.which("strace"):
        check(False, "strace is missing (scripts/test.sh installs it)")
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        wrapper = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null",
                   "-e", "trace=rename,renameat,renameat2",
                   "-e", "inject=rename,renameat,renameat2:error=EIO:when=1"]
        p, img = snapshot_run(d, "qcow2", sock, wrapper=wrapper)
        try:
            bases = []
            for k in range(2):
                wait_for_output(p.stdout, f"blk: phase {k} written\n".encode())
                if k == 0:
                    rc, _, err = ctl(sock, "snapshot", "disk=0")
                    check(rc == 1 and "Input/output error" in err, f"injected failure: {rc} {err}")
                    left = sorted(f for f in os.listdir(d) if ".base-" in f or ".tmp-" in f)
                    check(not left, f"a failed snapshot left {left}")
                    # The guest still reads and writes its disk, and the old
                    # image keeps its exclusive lock.
                    lock = subprocess.run([VMRUN, "img", "snapshot", img], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
                    check(lock.returncode == 4 and b"in use" in lock.stderr,
                          f"the disk's lock after the undo: {lock.returncode} {lock.stderr!r}")
                else:
                    rc, out, err = ctl(sock, "snapshot", "disk=0")
                    check(rc == 0, f"snapshot after the failure: {rc} {err}")
                    bases.append(json.loads(out)["base"])
                p.stdin.write(b"s")
                p.stdin.flush()
            # One snapshot, after phase 1: the base holds phases 0 and 1.
            out, err = p.communicate(timeout=HANG_GUARD_S)
            check(p.returncode == debug_exit_status(0) and b"blk: snapshot ok" in out,
                  f"guest status {p.returncode}:\n{out.decode()}\n{err.decode()}")
            qemu_img("check", bases[0])
            qemu_img("check", img)
            check(qemu_img_contents(bases[0], d) == snapshot_expected(2), "base after phase 1")
            check(qemu_img_contents(img, d) == snapshot_expected(3), "top after phase 2")
        finally:
            kill(p)


def test_blk_live_snapshot_raw_stays_raw():
    # A disk run as format=raw whose guest wrote a qcow2 header naming a
    # backing file into it (here the host writes the same bytes): the live
    # snapshot's overlay must name its base as raw, the format it ran as.
    # A probe would record qcow2, and the next start would open the file
    # the guest named (a host file) as the base's backing file.
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        img = os.path.join(d, "disk.raw")
        secret = os.path.join(d, "host-secret")
        with open(secret, "wb") as f:
            f.write(b"not for the guest\n" * 1000)
        with open(img, "wb") as f:
            f.truncate(BLK_MB)
        p = subprocess.Popen(with_transport([VMRUN, "--kernel", guest("echo"), "--api-sock", sock,
                                             "--disk", img + ",format=raw"], TRANSPORT),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            hdr = os.path.join(d, "hdr.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw",
                            hdr, "1M"], check=True, timeout=HANG_GUARD_S)
            with open(hdr, "rb") as f:
                header = f.read()
            check(len(header) < BLK_MB, f"qemu-img made a {len(header)}-byte image")
            with open(img, "r+b") as f:
                f.write(header)
            rc, out, err = ctl(sock, "snapshot", "disk=0")
            check(rc == 0, f"snapshot: {rc} {err}")
            rc, _, err = ctl(sock, "quit")
            check(rc == 0 and p.wait(timeout=HANG_GUARD_S) == 0, f"quit: {rc} {err}")
        finally:
            kill(p)
        info = json.loads(qemu_img("info", "--output=json", "--backing-chain", img))
        check(len(info) == 2, f"the chain has {len(info)} levels: {info}")
        top, base = info
        check(top.get("backing-filename") == "disk.raw.base-1" and
              top.get("backing-filename-format") == "raw",
              f"overlay: backing {top.get('backing-filename')!r} format "
              f"{top.get('backing-filename-format')!r}, want disk.raw.base-1 as raw")
        check(base.get("format") == "raw" and base.get("virtual-size") == BLK_MB,
              f"base: {base.get('format')} of {base.get('virtual-size')} bytes, want raw of "
              f"{BLK_MB}")


def test_control_non_utf8_disk():
    # A --disk path that is not UTF-8 (paths are bytes) appears in
    # query-status made valid (the byte as \xHH), its live snapshot
    # answers with the base it made, and the shown path selects the disk.
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "api.sock")
        img = os.path.join(d, os.fsdecode(b"disk\xff.qcow2"))  # raw bytes on exec
        shown = os.path.join(d, "disk\\xff.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "1M"], check=True,
                       timeout=HANG_GUARD_S)
        p = subprocess.Popen(with_transport([VMRUN, "--kernel", guest("echo"), "--api-sock", sock,
                                             "--disk", img], TRANSPORT),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(p.stdout, b"echo ready\n")
            rc, out, err = ctl(sock, "query-status")
            check(rc == 0, f"query-status: {rc} {err}")
            disks = json.loads(out)["disks"]
            check(len(disks) == 1 and disks[0]["image"] == shown, f"query-status disks: {disks}")
            # Each device's transport and its address on it.
            want = (("virtio-mmio", 0xd0000000) if TRANSPORT == "mmio" else
                    ("virtio-pci", "0000:00:01.0"))
            check((disks[0]["transport"], disks[0]["address"]) == want,
                  f"query-status transport/address: {disks[0]}, want {want}")
            for k, which in enumerate(("disk=0", "disk=" + shown)):
                rc, out, err = ctl(sock, "snapshot", which)
                check(rc == 0, f"snapshot {which}: {rc} {err}")
                res = json.loads(out)
                want = {"disk": 0, "image": shown, "base": f"{shown}.base-{k + 1}"}
                check(res == want, f"snapshot {which}: reply {res}, want {want}")
                check(os.path.exists(f"{img}.base-{k + 1}"), f"snapshot {which}: no base file")
            rc, _, err = ctl(sock, "quit")
            check(rc == 0 and p.wait(timeout=HANG_GUARD_S) == 0, f"quit: {rc} {err}")
        finally:
            kill(p)
        subprocess.run(["qemu-img", "check", "-q", img], check=True, timeout=HANG_GUARD_S)


# ---------------------------------------------------------------- examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- hostile files

def test_fifo_refused():
    # A FIFO where a file is expected, with nobody at its other end: one line
    # and status 4, promptly (open() used to wait for a writer or reader
    # forever, and SIGTERM could not end it).
    with tempfile.TemporaryDirectory() as d:
        fifo = os.path.join(d, "fifo")
        os.mkfifo(fifo)
        for args, needle in [(["--disk", fifo + ",readonly"], "not a regular file or block device"),
                             (["--disk", fifo], "not a regular file or block device"),
                             (["--disk", fifo + ",format=raw"], "not a regular file or block device"),
                             (["--initrd", fifo], "not a regular file"),
                             (["--console", "file:" + fifo], "a FIFO with no reader"),
                             (["--console", "stdio,log=" + fifo], "a FIFO with no reader")]:
            try:
                rc, _, err = run_vmrun(["--kernel", guest("hello"), "--cmdline", "exit=0"] + args,
                                       timeout=10)
            except subprocess.TimeoutExpired:
                check(False, f"{args}: vmrun still waits after 10 s")
            check(rc == 4 and needle in err and err.count("\n") <= 2,
                  f"{args}: status {rc}, stderr {err!r}, want {needle!r}")
        try:
            rc, _, err = run_vmrun(["--kernel", fifo], timeout=10)
        except subprocess.TimeoutExpired:
            check(False, "--kernel FIFO: vmrun still waits after 10 s")
        check(rc == 4 and "not a regular file" in err, f"--kernel FIFO: status {rc}, {err!r}")
        # A FIFO with a reader is a fine console.
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            rc, _, err = run_vmrun(["--kernel", guest("hello"), "--console", "file:" + fifo,
                                    "--cmdline", "exit=0"], timeout=HANG_GUARD_S)
            out = os.read(rfd, 65536)
        finally:
            os.close(rfd)
        check(rc == debug_exit_status(0) and b"hello from vmrun test guest" in out,
              f"console FIFO with a reader: status {rc}, {err!r}, read {out!r}")


def test_sigterm_during_setup():
    # A set-up step that blocks (open_stall.c makes the open of "*.stall"
    # wait for good, as a hung filesystem would): SIGTERM still ends vmrun,
    # by its default action.  vmrun blocks the signal for its signalfd only
    # once the VM is built.
    shim = os.environ.get("VMRUN_TEST_OPEN_STALL")
    if not shim or not os.path.exists(shim):
        print("SKIP: VMRUN_TEST_OPEN_STALL (the open_stall module, set by ctest) is missing")
        return SKIP
    env = dict(os.environ, LD_PRELOAD=shim)
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([VMRUN, "--kernel", guest("hello"), "--disk",
                              os.path.join(d, "disk.stall")], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            got = wait_for_fd(p.stderr.fileno(), b"open_stall: stalled\n", timeout=30)
            check(b"open_stall: stalled" in got, f"{got!r}")
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                check(False, "SIGTERM during set-up: vmrun still runs after 10 s")
            check(rc == -signal.SIGTERM, f"SIGTERM during set-up: status {rc}")
        finally:
            kill(p)


def test_kernel_padded_4g():
    # The hello guest padded to 4 GiB (sparse): it boots, quickly and with
    # little memory; the nested host's Linux detection used to read the
    # whole file for a banner (seconds, and gigabytes of RSS).
    with tempfile.TemporaryDirectory() as d:
        big = os.path.join(d, "big.elf")
        shutil.copyfile(guest("hello"), big)
        os.truncate(big, 4 << 30)
        with open(os.path.join(d, "out"), "w+b") as out, \
             open(os.path.join(d, "err"), "w+b") as err:
            # timeout(1) as the guard; wait4() gives the peak RSS of it and
            # of vmrun, its reaped child.
            p = subprocess.Popen(["timeout", "-s", "KILL", "60", VMRUN, "--kernel", big,
                                  "--cmdline", "exit=0"], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=err)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            ctx = f"status {p.returncode}, stderr {err.read()!r}"
            check(p.returncode == debug_exit_status(0), ctx)
            check(b"hello from vmrun test guest" in out.read(), ctx)
            check(ru.ru_maxrss < 512 * 1024, f"peak RSS {ru.ru_maxrss} KiB for a sparse 4 GiB kernel")


def test_initrd_inflates_to_nothing():
    # A gzip initrd of nothing is an empty initrd (accepted), as it is with
    # --initrd-decompress guest and as an empty file is; it used to be
    # refused as "outside guest RAM".
    with tempfile.TemporaryDirectory() as d:
        gz = os.path.join(d, "empty.gz")
        with open(gz, "wb") as f:
            f.write(bytes([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
        empty = os.path.join(d, "empty")
        open(empty, "w").close()
        for path, extra in [(gz, []), (gz, ["--initrd-decompress", "guest"]), (empty, [])]:
            expect(["--kernel", guest("hello"), "--initrd", path, "--cmdline", "exit=5"] + extra,
                   debug_exit_status(5))


def test_disk_overlay_as_raw():
    # What a live snapshot of a raw disk leaves under the raw image's name is
    # a qcow2 overlay: format=raw on it is refused with the fix named (the
    # guest would see the overlay's metadata as its disk); without format,
    # or with format=qcow2, it opens as the overlay it is.
    with tempfile.TemporaryDirectory() as d:
        img = os.path.join(d, "live.raw")
        with open(img, "wb") as f:
            f.truncate(1 << 20)
        p = subprocess.run([VMRUN, "img", "snapshot", img], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
        check(p.returncode == 0, f"img snapshot: {p.returncode} {p.stderr!r}")
        _, err = expect(["--kernel", guest("hello"), "--disk", img + ",format=raw",
                         "--cmdline", "exit=0"], 4,
                        stderr_has=[f"{img} is a qcow2 overlay", "use format=qcow2 or leave format out"])
        check(err.count("\n") == 1, f"one line: {err!r}")
        for spec in (img, img + ",format=qcow2", img + ".base-1,format=raw"):
            expect(["--kernel", guest("hello"), "--disk", spec, "--cmdline", "exit=0"],
                   debug_exit_status(0))


def test_example_script():
    """examples/ci-boot-check.sh from another directory: with its paths
    given, and with none (VMRUN_BUILD names the build folder, as the
    repository's build/ would be by default), called by an absolute and by
    a relative path."""
    script = os.path.join(ROOT, "examples", "ci-boot-check.sh")
    build = os.path.dirname(os.path.dirname(GUESTS))  # GUESTS is BUILD/tests/guest
    with tempfile.TemporaryDirectory(prefix="vmrun-example-") as cwd:
        for argv, env in (([script, VMRUN, guest("hello")], {}),
                          ([os.path.relpath(script, cwd)], {"VMRUN_BUILD": build})):
            p = subprocess.run(["bash"] + argv, cwd=cwd, env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=HANG_GUARD_S)
            out = p.stdout.decode(errors="replace")
            check(p.returncode == 0 and "PASS" in out,
                  f"example {' '.join(argv)} in {cwd} ({env}): status {p.returncode}:\n{out}")


def test_example_linux_script():
    """examples/ci-linux-test.sh from another directory boots the Linux test
    kernel (found in the cache that ctest's linux_prepare fills, named by
    VMRUN_LINUX_STATE), runs a command that prints a sum the host computes
    and exits with 3, and exits with 3 itself, the console kept in its log."""
    state = os.environ.get("VMRUN_LINUX_STATE", "")
    if not state or not os.path.exists(state) or os.path.getsize(state) == 0:
        raise Skip("no Linux test kernel: VMRUN_LINUX_STATE names no file from "
                   "linux_prepare (configure with -DVMRUN_LINUX_TESTS=ON and run "
                   "ctest -R example_linux, which runs linux_prepare first)")
    script = os.path.join(ROOT, "examples", "ci-linux-test.sh")
    a, b = 1000 + os.getpid() % 1000, 77
    with tempfile.TemporaryDirectory(prefix="vmrun-example-") as cwd:
        p = subprocess.run(["bash", os.path.relpath(script, cwd), "-v", VMRUN, "-t", "400",
                            f"echo sum=$(({a}+{b})); grep -q ext4 /proc/filesystems && "
                            f"echo fs-ok; exit 3"],
                           cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=540)
        out = p.stdout.decode(errors="replace")
        log_path = os.path.join(cwd, "ci-linux-test.log")
        check(os.path.exists(log_path), f"no console log {log_path}:\n{out}")
        with open(log_path, errors="replace") as f:
            log = f.read()
    ctx = f"\n--- output (last 40 lines):\n" + "\n".join(out.splitlines()[-40:])
    check(p.returncode == 3, f"status {p.returncode}, want the command's 3{ctx}")
    for s in ("VMRUN-LINUX-INIT-OK", f"sum={a + b}", "fs-ok", "vmrun-run: exit 3"):
        check(s in log, f"the console log lacks {s!r}{ctx}")


def main():
    def add_args(ap):
        add_guest_args(ap)
        add_transport_arg(ap)

    def setup(a):
        globals()["TRANSPORT"] = a.transport
        return guest_setup(a, globals())

    return run_main(globals(), add_args, setup)


if __name__ == "__main__":
    sys.exit(main())
