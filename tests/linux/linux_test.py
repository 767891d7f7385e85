#!/usr/bin/env python3
"""Boot the repository's Linux kernel and busybox initramfs under vmrun.

usage:
  linux_test.py prepare --state FILE
      build (or find in the cache) the kernel and the initramfs, and write
      their paths to FILE as KEY=VALUE lines
  linux_test.py boot --vmrun PATH --state FILE --kernel bzimage|vmlinux
                     --cpus N [--end poweroff|reboot] [--boot linux64|pvh]
                     [--initrd-gzip] [--disk-test]
      boot once; pass when /init printed its marker, saw N processors and the
      expected command line, and the run ended the way asked for.
      --initrd-gzip hands vmrun the initramfs gzip-compressed (vmrun inflates
      it on the host).
      --disk-test adds a virtio-blk disk (vmrun --disk) that the guest
      kernel's own driver reads and writes: see disk_make() and the
      vmrun.test=blk mode of tests/linux/init.

What is asserted comes from outside vmrun: the marker and the lines after it
are printed by the guest's /init (tests/linux/init), the processor count by
the guest kernel's /proc/cpuinfo, and whether the nested-host kernel
arguments must be there from this host's /proc/cpuinfo; the disk is made
and checked by sfdisk and e2fsprogs (mkfs.ext4, debugfs, dumpe2fs, e2fsck).
Exit 0 pass, 1 fail, 77 (ctest's skip code) only where /dev/kvm is missing,
saying so.
"""
import argparse
import gzip
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
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
# The --disk-test image: an MBR with partition 1 from sector 2048 (1 MiB) to
# the end.  Small: the guest kernel's work on it is interpreted.
DISK_BYTES = 16 << 20
PART_START_SECTOR = 2048
# Debian packages of the host tools --disk-test runs; prepare installs them.
DISK_PACKAGES = ("e2fsprogs", "fdisk")


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
    with tempfile.TemporaryDirectory(prefix="vmrun-linux-") as tmp:
        return boot_in(a, tmp)


def boot_in(a, tmp):
    with open(a.state) as f:
        state = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    kernel = state["VMRUN_LINUX_BZIMAGE" if a.kernel == "bzimage" else "VMRUN_LINUX_VMLINUX"]
    cmdline = "console=ttyS0" + (" vmrun.exit=reboot" if a.end == "reboot" else "")
    disk_args = []
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
        disk_args = ["--disk", disk]
    initrd = state["VMRUN_LINUX_INITRAMFS_GZ" if a.initrd_gzip else "VMRUN_LINUX_INITRAMFS"]
    args = [a.vmrun, "--kernel", kernel, "--initrd", initrd, "--boot", a.boot,
            "--cpus", str(a.cpus), "--mem", "128M", "--cmdline", cmdline,
            "--timeout", str(BOOT_TIMEOUT_S)] + disk_args
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
        failures += disk_check(tmp, disk, part_start, part_size, head, token)
    if p.returncode != STATUS[a.end]:
        failures.append(f"exit status {p.returncode}, wanted {STATUS[a.end]} ({a.end})")
    if failures:
        print("FAIL: " + "; ".join(failures) + ctx)
        return 1
    init_at = next((line for line in out.splitlines() if "Run /init" in line), "")
    print(f"PASS: {a.kernel} ({a.boot} entry), {a.cpus} vCPU(s), {a.end}"
          f"{', gzip initramfs' if a.initrd_gzip else ''}"
          f"{', virtio-blk ext4 read/write' if a.disk_test else ''}: {took:.1f} s wall"
          f" ({init_at.strip()})")
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
    bp.add_argument("--disk-test", action="store_true")
    a = ap.parse_args()
    return prepare(a) if a.cmd == "prepare" else boot(a)


if __name__ == "__main__":
    sys.exit(main())
