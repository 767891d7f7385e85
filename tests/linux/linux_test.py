#!/usr/bin/env python3
"""Boot the repository's Linux kernel and busybox initramfs under vmrun.

usage:
  linux_test.py prepare --state FILE
      build (or find in the cache) the kernel and the initramfs, and write
      their paths to FILE as KEY=VALUE lines
  linux_test.py boot --vmrun PATH --state FILE --kernel bzimage|vmlinux
                     --cpus N [--end poweroff|reboot] [--boot linux64|pvh]
                     [--initrd-gzip]
      boot once; pass when /init printed its marker, saw N processors and the
      expected command line, and the run ended the way asked for.
      --initrd-gzip hands vmrun the initramfs gzip-compressed (vmrun inflates
      it on the host).

What is asserted comes from outside vmrun: the marker and the lines after it
are printed by the guest's /init (tests/linux/init), the processor count by
the guest kernel's /proc/cpuinfo, and whether the nested-host kernel
arguments must be there from this host's /proc/cpuinfo.  Exit 0 pass, 1 fail,
77 (ctest's skip code) only where /dev/kvm is missing, saying so.
"""
import argparse
import gzip
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77
# vmrun's documented exit statuses (README): every vCPU halted (Linux's
# poweroff without ACPI) and guest reset.
STATUS = {"poweroff": 10, "reboot": 6}
MARKER = "VMRUN-LINUX-INIT-OK"
NESTED_ARGS = "noxsave no-kvmclock pty.legacy_count=0 tsc=reliable"
# Generous: about 25 s on a nested host where guest kernel code is
# interpreted, a second with VT-x/AMD-V.
BOOT_TIMEOUT_S = 400


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
    with open(a.state) as f:
        state = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    kernel = state["VMRUN_LINUX_BZIMAGE" if a.kernel == "bzimage" else "VMRUN_LINUX_VMLINUX"]
    cmdline = "console=ttyS0" + (" vmrun.exit=reboot" if a.end == "reboot" else "")
    initrd = state["VMRUN_LINUX_INITRAMFS_GZ" if a.initrd_gzip else "VMRUN_LINUX_INITRAMFS"]
    args = [a.vmrun, "--kernel", kernel, "--initrd", initrd, "--boot", a.boot,
            "--cpus", str(a.cpus), "--mem", "128M", "--cmdline", cmdline,
            "--timeout", str(BOOT_TIMEOUT_S)]
    start = time.monotonic()
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=BOOT_TIMEOUT_S + 60)
    took = time.monotonic() - start
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    ctx = (f"\n--- command: {' '.join(args)}\n--- status {p.returncode} after {took:.1f} s"
           f"\n--- stderr:\n{err}\n--- console (last 40 lines):\n"
           + "\n".join(out.splitlines()[-40:]))
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
    if "Kernel panic" in out:
        failures.append("the guest kernel panicked")
    if p.returncode != STATUS[a.end]:
        failures.append(f"exit status {p.returncode}, wanted {STATUS[a.end]} ({a.end})")
    if failures:
        print("FAIL: " + "; ".join(failures) + ctx)
        return 1
    init_at = next((line for line in out.splitlines() if "Run /init" in line), "")
    print(f"PASS: {a.kernel} ({a.boot} entry), {a.cpus} vCPU(s), {a.end}"
          f"{', gzip initramfs' if a.initrd_gzip else ''}: {took:.1f} s wall ({init_at.strip()})")
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
    bp.add_argument("--initrd-gzip", action="store_true")
    a = ap.parse_args()
    return prepare(a) if a.cmd == "prepare" else boot(a)


if __name__ == "__main__":
    sys.exit(main())
