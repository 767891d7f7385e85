#!/usr/bin/env python3
"""vmrun start-up benchmark: wall time and peak RSS of running a test guest
to its exit, for vmrun, a bare-ioctl floor program and (when installed) QEMU
microvm.  See bench/README.md.

Each run goes through startup_exec (built next to startup_floor), which forks
the program, waits for it with wait4() and reports the wall time from fork to
reaping and ru_maxrss.  The RSS cannot be taken from a child of this script:
Linux charges the parent's peak RSS to a child at execve(), so every program
spawned from Python reports at least Python's own ~14 MB.

Exit status: 0 when every program ran the guest to the expected exit status
and printed the expected output, whatever the timings; 1 when one did not;
2 on a usage error; 77 (ctest's skip code) when /dev/kvm cannot be opened.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

SKIP = 77
HELLO_GREETING = "hello from vmrun test guest"
WALL_TARGET = 2.0      # vmrun wall time <= 2x the floor's (medians)
RSS_TARGET_MIB = 2.0   # vmrun peak RSS <= floor + 2 MiB (medians)
QEMU_MISSING = "qemu: not installed (apt-get install qemu-system-x86)"
# QEMU's KVM start-up fails with "failed to set MSR 0x10a" on KVMs that do
# not let userspace write IA32_ARCH_CAPABILITIES (the nested kvm_pvm of the
# development machines); the probe run then retries with this CPU model.
QEMU_CPU_FALLBACK = "host,-arch-capabilities"


def qemu_command(qemu, guest, cpu):
    return [qemu, "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on",
            "-enable-kvm", "-cpu", cpu, "-m", "256", "-nodefaults",
            "-no-user-config", "-nographic", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", guest]


class RunFailed(Exception):
    pass


class Program:
    def __init__(self, name, argv):
        self.name = name
        self.argv = argv
        self.samples = []  # one dict per timed run

    def summary(self):
        walls = [s["wall_ns"] / 1e6 for s in self.samples]
        rss = [s["maxrss_kib"] for s in self.samples]
        cpu = [(s["utime_us"] + s["stime_us"]) / 1e3 for s in self.samples]
        return {
            "wall_ms_median": statistics.median(walls),
            "wall_ms_min": min(walls),
            "wall_ms_max": max(walls),
            "maxrss_kib_median": statistics.median(rss),
            "cpu_ms_median": statistics.median(cpu),
        }


def run_once(exec_helper, prog, timeout_s, expect_status, expect_output):
    """Run @prog once under startup_exec; return its report, or raise
    RunFailed saying what went wrong."""
    rfd, wfd = os.pipe()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [exec_helper, str(wfd), str(timeout_s)] + prog.argv,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(wfd,))
            os.close(wfd)
            wfd = -1
            try:
                proc.wait(timeout=timeout_s + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RunFailed(f"{prog.name}: startup_exec did not return")
            with os.fdopen(rfd, "r") as rf:
                rfd = -1
                report_text = rf.read()
            out.seek(0)
            stdout = out.read().decode(errors="replace")
            err.seek(0)
            stderr = err.read().decode(errors="replace")
    finally:
        for fd in (rfd, wfd):
            if fd >= 0:
                os.close(fd)

    report = {}
    for line in report_text.splitlines():
        key, _, value = line.partition(" ")
        report[key] = int(value)
    if "wall_ns" not in report:
        raise RunFailed(f"{prog.name}: startup_exec failed (status {proc.returncode}): "
                        f"{stderr.strip()[-2000:]}")

    def failure(why):
        return RunFailed(f"{prog.name}: {why}\n  command: {' '.join(prog.argv)}\n"
                         f"  stdout: {stdout[-1000:]!r}\n  stderr: {stderr[-2000:]!r}")

    if report["timed_out"]:
        raise failure(f"still running after {timeout_s} s: killed")
    if report["signal"]:
        raise failure(f"killed by signal {report['signal']}")
    if report["exit"] != expect_status:
        raise failure(f"exit status {report['exit']}, expected {expect_status}")
    if expect_output not in stdout:
        raise failure(f"output lacks {expect_output!r}")
    return report


def host_description():
    model = "unknown CPU"
    nested = None
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = next((l for l in text.splitlines() if l.startswith("flags")), "")
        nested = not (" vmx" in flags or " svm" in flags)
    except OSError:
        pass
    return {"kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
            "no_vmx_svm_flag": nested}


def fmt_mib(kib):
    return f"{kib / 1024:.2f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmrun", required=True, help="the vmrun binary")
    ap.add_argument("--floor", required=True, help="the startup_floor binary")
    ap.add_argument("--guest", required=True, help="guest ELF (tests/guest/hello.elf)")
    ap.add_argument("--exec-helper",
                    help="the startup_exec binary (default: next to --floor)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per program (default 30)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"),
                    help="QEMU binary (default: qemu-system-x86_64 from PATH)")
    ap.add_argument("--no-qemu", action="store_true", help="leave QEMU out")
    ap.add_argument("--qemu-cpu", help="QEMU -cpu value (default: host, or "
                    f"{QEMU_CPU_FALLBACK} where host fails)")
    ap.add_argument("--expect-status", type=int, default=1,
                    help="exit status every program must give (default 1: debug-exit 0)")
    ap.add_argument("--expect-output", default=HELLO_GREETING,
                    help=f"text the guest must print (default {HELLO_GREETING!r})")
    ap.add_argument("--timeout", type=int, default=60,
                    help="seconds before a run is killed and counted as failed (default 60)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    exec_helper = args.exec_helper or os.path.join(os.path.dirname(os.path.abspath(args.floor)),
                                                   "startup_exec")
    for what, path in (("--vmrun", args.vmrun), ("--floor", args.floor),
                       ("startup_exec", exec_helper)):
        if not os.access(path, os.X_OK):
            print(f"startup.py: {what} {path}: not an executable", file=sys.stderr)
            return 2
    if not os.path.isfile(args.guest):
        print(f"startup.py: --guest {args.guest}: no such file", file=sys.stderr)
        return 2
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"SKIP: cannot open /dev/kvm ({e.strerror}): the benchmark needs KVM")
        return SKIP

    guest = os.path.abspath(args.guest)
    programs = [
        Program("floor", [os.path.abspath(args.floor), guest]),
        Program("vmrun", [os.path.abspath(args.vmrun), "--kernel", guest, "--console", "stdio"]),
    ]
    qemu_note = None
    if args.no_qemu:
        qemu_note = "qemu: left out (--no-qemu)"
    elif not args.qemu or not os.access(args.qemu, os.X_OK):
        qemu_note = QEMU_MISSING
    else:
        programs.append(Program("qemu", qemu_command(args.qemu, guest, args.qemu_cpu or "host")))

    def run(prog):
        return run_once(exec_helper, prog, args.timeout, args.expect_status, args.expect_output)

    # One untimed run each: checks that every program runs the guest, and
    # warms the page cache.  QEMU gets its CPU-model fallback here.
    try:
        for prog in programs:
            try:
                run(prog)
            except RunFailed as e:
                if prog.name != "qemu" or args.qemu_cpu or "MSR 0x10a" not in str(e):
                    raise
                prog.argv = qemu_command(args.qemu, guest, QEMU_CPU_FALLBACK)
                qemu_note = (f"qemu: -cpu host cannot start on this KVM (MSR 0x10a): "
                             f"ran with -cpu {QEMU_CPU_FALLBACK}")
                run(prog)
        # Timed runs, alternating programs and rotating their order each
        # round, so that slow phases of a noisy machine hit all of them.
        for i in range(args.runs):
            k = i % len(programs)
            for prog in programs[k:] + programs[:k]:
                prog.samples.append(run(prog))
    except RunFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1

    host = host_description()
    print(f"vmrun start-up: {args.guest}, {args.runs} runs per program, alternating")
    print(f"host: Linux {host['kernel']}, {host['cpu']}, {host['cpus']} CPUs"
          + (", no vmx/svm flag (nested KVM: guest kernel code is interpreted)"
             if host["no_vmx_svm_flag"] else ""))
    print()
    print(f"{'program':<8} {'wall median':>12} {'wall min':>10} {'CPU median':>11} "
          f"{'peak RSS median':>16}")
    summaries = {}
    for prog in programs:
        s = summaries[prog.name] = prog.summary()
        print(f"{prog.name:<8} {s['wall_ms_median']:>9.2f} ms {s['wall_ms_min']:>7.2f} ms "
              f"{s['cpu_ms_median']:>8.2f} ms {fmt_mib(s['maxrss_kib_median']):>16}")
    print()

    floor = summaries["floor"]
    comparisons = {}
    for name in ("vmrun", "qemu"):
        if name not in summaries:
            continue
        s = summaries[name]
        c = comparisons[name] = {
            "wall_ratio": s["wall_ms_median"] / floor["wall_ms_median"],
            "wall_diff_ms": s["wall_ms_median"] - floor["wall_ms_median"],
            "rss_diff_mib": (s["maxrss_kib_median"] - floor["maxrss_kib_median"]) / 1024,
        }
        print(f"{name:<5} / floor: wall {c['wall_ratio']:.2f}x ({c['wall_diff_ms']:+.2f} ms), "
              f"peak RSS {c['rss_diff_mib']:+.2f} MiB")
    if "qemu" in summaries:
        v, q = summaries["vmrun"], summaries["qemu"]
        comparisons["vmrun_vs_qemu"] = {
            "wall_ratio": v["wall_ms_median"] / q["wall_ms_median"],
            "rss_ratio": v["maxrss_kib_median"] / q["maxrss_kib_median"],
        }
        print(f"vmrun / qemu:  wall {comparisons['vmrun_vs_qemu']['wall_ratio']:.2f}x, "
              f"peak RSS {comparisons['vmrun_vs_qemu']['rss_ratio']:.2f}x")
    if qemu_note:
        print(qemu_note)
    print()

    wall_ok = comparisons["vmrun"]["wall_ratio"] <= WALL_TARGET
    rss_ok = comparisons["vmrun"]["rss_diff_mib"] <= RSS_TARGET_MIB
    print(f"target: wall <= {WALL_TARGET:.2f}x floor: {'PASS' if wall_ok else 'MISS'}")
    print(f"target: RSS <= floor + {RSS_TARGET_MIB:g} MiB: {'PASS' if rss_ok else 'MISS'}")
    if args.runs < 10:
        print(f"(only {args.runs} runs: the numbers above are a smoke test, not a measurement)")

    if args.json:
        doc = {
            "guest": guest,
            "runs": args.runs,
            "host": host,
            "programs": {p.name: {"command": p.argv, **summaries[p.name],
                                  "samples": p.samples} for p in programs},
            "comparisons": comparisons,
            "qemu_note": qemu_note,
            "targets": {"wall_ratio_max": WALL_TARGET, "wall_pass": wall_ok,
                        "rss_diff_mib_max": RSS_TARGET_MIB, "rss_pass": rss_ok},
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
