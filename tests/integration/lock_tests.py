#!/usr/bin/env python3
"""Image locks QEMU understands (include/vmrun/image_lock.h, README "--disk"):
vmrun and QEMU's tools (qemu-img, qemu-io, qemu-nbd 7.2, Debian 12's
qemu-utils) refuse each other's images in use, both ways, and tell a
read-only user from a writer as QEMU does.

Usage: lock_tests.py --vmrun PATH --guests DIR TEST [TEST...]

QEMU's tools are the oracle: what they refuse and accept against a running
vmrun is what they do against a running QEMU (their lock bytes, read in
/proc/locks, are the ones vmrun takes).  The guest is the `echo` test guest,
which stays up: vmrun opens and locks its disks before "echo ready".  QEMU
holds an image through qemu-io's interactive mode fed by a pipe (its prompt
on stdout says the image is open) or qemu-nbd on a unix socket (polled:
qemu-nbd prints nothing when it listens).  Skips (77) where qemu-img,
qemu-io or qemu-nbd is missing.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (SKIP, HANG_GUARD_S, Proc, add_guest_args, check, guest_elf,  # noqa: E402
                     guest_setup, run_main, vmrun_ctl)

VMRUN = None
GUESTS = None
IN_USE = "image is in use by another process (QEMU or vmrun)"
QEMU_LOCK = "Is another process using the image"
TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")


def run(*argv):
    """(status, stdout + stderr) of @argv."""
    p = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=HANG_GUARD_S)
    return p.returncode, p.stdout.decode(errors="replace")


def qemu_refuses(what, *argv):
    """@argv (a QEMU tool) fails on a lock, as against a running QEMU."""
    rc, out = run(*argv)
    check(rc != 0 and QEMU_LOCK in out, f"{what}: {' '.join(argv)} -> {rc}, wanted a lock"
                                        f" refusal:\n{out}")


def qemu_accepts(what, *argv):
    rc, out = run(*argv)
    check(rc == 0, f"{what}: {' '.join(argv)} -> {rc}:\n{out}")


def make_image(d, name, fmt, backing=None):
    path = os.path.join(d, name)
    if backing:
        qemu_accepts("create", "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F",
                     "qcow2", path)
    else:
        qemu_accepts("create", "qemu-img", "create", "-q", "-f", fmt, path, "4M")
    return path


def start_vm(disks, sock=None):
    """The echo guest with --disk @disks, once its disks are open."""
    argv = [VMRUN, "--kernel", guest_elf(GUESTS, "echo"), "--timeout", "120"]
    for disk in disks:
        argv += ["--disk", disk]
    if sock:
        argv += ["--api-sock", sock]
    vm = Proc("vmrun", argv)
    vm.wait_out(rb"^echo ready", what="echo ready")
    return vm


def vmrun_refused(what, disks):
    """vmrun refuses @disks at once: status 4, the lock named."""
    argv = [VMRUN, "--kernel", guest_elf(GUESTS, "echo"), "--timeout", "60"]
    for disk in disks:
        argv += ["--disk", disk]
    rc, out = run(*argv)
    check(rc == 4 and IN_USE in out, f"{what}: vmrun -> {rc}, wanted 4 and '{IN_USE}':\n{out}")


def vmrun_boots(what, disks):
    with start_vm(disks) as vm:
        check(vm.p.poll() is None, f"{what}: vmrun ended{vm.ctx()}")


def img(*args):
    return run(VMRUN, "img", *args)


class QemuIo:
    """qemu-io holding @path open (interactive, fed by a pipe) until closed."""

    def __init__(self, path, fmt, readonly):
        argv = ["qemu-io", "-f", fmt] + (["-r"] if readonly else []) + [path]
        self.proc = Proc("qemu-io", argv)
        self.proc.wait_out(rb"qemu-io> ", what="qemu-io's prompt")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.proc.p.stdin.write(b"quit\n")
            self.proc.p.stdin.close()
            self.proc.p.wait(timeout=HANG_GUARD_S)
        finally:
            self.proc.kill()
        return False


class QemuNbd:
    """qemu-nbd serving @path on a unix socket until closed."""

    def __init__(self, d, path, fmt, readonly):
        # A fresh name each time: a killed qemu-nbd leaves its socket
        # behind, which would look like the next one listening.
        sock = tempfile.mktemp(prefix="nbd-", suffix=".sock", dir=d)
        argv = ["qemu-nbd", "-f", fmt, "-k", sock] + (["-r"] if readonly else []) + [path]
        self.proc = Proc("qemu-nbd", argv)
        deadline = time.monotonic() + HANG_GUARD_S
        # Polled: qemu-nbd says nothing once it listens; the socket
        # appears after the image is open and locked.
        while not os.path.exists(sock):
            check(self.proc.p.poll() is None, f"qemu-nbd ended{self.proc.ctx()}")
            check(time.monotonic() < deadline, f"qemu-nbd never listened{self.proc.ctx()}")
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        return False


def test_lock_vmrun_holds():
    # A running vmrun: its writable disk refuses every QEMU writer and
    # `qemu-img info` without -U, as a running QEMU's would; its read-only
    # disk and its backing file let readers in and keep writers off.
    for fmt in ("qcow2", "raw"):
        with tempfile.TemporaryDirectory() as d:
            if fmt == "qcow2":
                base = make_image(d, "base.qcow2", "qcow2")
                top = make_image(d, "top.qcow2", "qcow2", backing=base)
            else:
                base, top = None, make_image(d, "top.raw", "raw")
            ro = make_image(d, "ro.raw", "raw")
            sock = os.path.join(d, "api.sock")
            with start_vm([top, ro + ",readonly"], sock) as vm:
                what = f"{fmt} disk in use"
                qemu_refuses(what, "qemu-img", "resize", "-f", fmt, top, "+1M")
                if fmt == "qcow2":
                    qemu_refuses(what, "qemu-img", "snapshot", "-c", "s1", top)
                qemu_refuses(what, "qemu-io", "-f", fmt, "-c", "write 0 512", top)
                if fmt == "qcow2":
                    qemu_refuses(what, "qemu-img", "info", "-f", fmt, top)
                else:
                    # On raw, qemu-img info takes no lock at all (it reads
                    # no data), and so works beside a QEMU guest too.
                    qemu_accepts(what, "qemu-img", "info", "-f", fmt, top)
                qemu_accepts(what, "qemu-img", "info", "-U", "-f", fmt, top)
                rc, out = img("info", top)
                check(rc == 4 and IN_USE in out, f"{what}: vmrun img info -> {rc}:\n{out}")
                rc, out = img("info", "-U", top)
                check(rc == 0 and "virtual size: 4194304" in out,
                      f"{what}: vmrun img info -U -> {rc}:\n{out}")
                rc, out = img("snapshot", top)
                check(rc == 4 and IN_USE in out, f"{what}: vmrun img snapshot -> {rc}:\n{out}")
                # Readers coexist with vmrun's read-only disk; writers do not.
                what = "read-only disk in use"
                qemu_accepts(what, "qemu-img", "info", "-f", "raw", ro)
                qemu_accepts(what, "qemu-io", "-r", "-f", "raw", "-c", "read 0 512", ro)
                qemu_refuses(what, "qemu-io", "-f", "raw", "-c", "write 0 512", ro)
                qemu_refuses(what, "qemu-img", "resize", "-f", "raw", ro, "+1M")
                rc, out = img("info", ro)
                check(rc == 0, f"{what}: vmrun img info -> {rc}:\n{out}")
                if base:
                    what = "backing file in use"
                    qemu_accepts(what, "qemu-img", "info", "-f", "qcow2", base)
                    qemu_refuses(what, "qemu-io", "-f", "qcow2", "-c", "write 0 512", base)
                    rc, out = img("snapshot", base)
                    check(rc == 4 and IN_USE in out, f"{what}: vmrun img snapshot -> {rc}:\n{out}")
                rc, _, err = vmrun_ctl(VMRUN, sock, "quit")
                check(rc == 0, f"quit: {rc} {err}")
                vm.p.wait(timeout=HANG_GUARD_S)
            # Gone with vmrun: nothing left locked.
            qemu_accepts(f"{fmt} after vmrun", "qemu-io", "-f", fmt, "-c", "write 0 512", top)
            qemu_accepts(f"{fmt} after vmrun", "qemu-img", "resize", "-f", "raw", ro, "+1M")


def test_lock_qemu_holds():
    # QEMU's tools holding an image: a writer keeps vmrun off altogether, a
    # reader keeps vmrun's writer off and lets its read-only disk in, as a
    # QEMU guest's read-only disk would be.
    for fmt in ("qcow2", "raw"):
        with tempfile.TemporaryDirectory() as d:
            path = make_image(d, "disk." + fmt, fmt)
            with QemuIo(path, fmt, readonly=False):
                what = f"qemu-io writing {fmt}"
                vmrun_refused(what, [path])
                vmrun_refused(what, [path + ",readonly"])
                for args in (["info", path], ["snapshot", path]):
                    rc, out = img(*args)
                    check(rc == 4 and IN_USE in out, f"{what}: vmrun img {args[0]} -> {rc}:\n{out}")
                rc, out = img("info", "-U", path)
                check(rc == 0, f"{what}: vmrun img info -U -> {rc}:\n{out}")
            with QemuIo(path, fmt, readonly=True):
                what = f"qemu-io -r reading {fmt}"
                if fmt == "qcow2":
                    vmrun_refused(what, [path])
                else:
                    # qemu-io -r on raw shares write (it holds only byte
                    # 100): a QEMU writer opens the image beside it, and
                    # so does vmrun.
                    qemu_accepts(what, "qemu-io", "-f", fmt, "-c", "write 0 512", path)
                    vmrun_boots(what, [path])
                vmrun_boots(what, [path + ",readonly"])
                rc, out = img("info", path)
                check(rc == 0, f"{what}: vmrun img info -> {rc}:\n{out}")
            vmrun_boots(f"{fmt} after qemu-io", [path])
    with tempfile.TemporaryDirectory() as d:
        base = make_image(d, "base.qcow2", "qcow2")
        top = make_image(d, "top.qcow2", "qcow2", backing=base)
        with QemuNbd(d, base, "qcow2", readonly=True):
            what = "qemu-nbd -r serving"
            vmrun_refused(what, [base])
            vmrun_boots(what, [base + ",readonly"])
            vmrun_boots(what + " (as a backing file)", [top])
        with QemuNbd(d, base, "qcow2", readonly=False):
            what = "qemu-nbd serving"
            vmrun_refused(what, [base + ",readonly"])
            vmrun_refused(what + " (as a backing file)", [top])
            rc, out = img("commit", top)
            check(rc == 4 and IN_USE in out, f"{what}: vmrun img commit -> {rc}:\n{out}")


def test_lock_live_snapshot():
    # A live snapshot moves the locks: the new overlay is written (a
    # writer's locks), the old image, now its backing file, is read (a
    # reader's): QEMU may read it, not write it.
    with tempfile.TemporaryDirectory() as d:
        path = make_image(d, "disk.qcow2", "qcow2")
        sock = os.path.join(d, "api.sock")
        with start_vm([path], sock) as vm:
            rc, out, err = vmrun_ctl(VMRUN, sock, "snapshot", "disk=0")
            check(rc == 0, f"snapshot: {rc} {out} {err}")
            base = path + ".base-1"
            qemu_refuses("the new overlay", "qemu-img", "info", "-f", "qcow2", path)
            qemu_refuses("the new overlay", "qemu-io", "-f", "qcow2", "-c", "write 0 512", path)
            qemu_accepts("the old image", "qemu-img", "info", "-f", "qcow2", base)
            qemu_refuses("the old image", "qemu-io", "-f", "qcow2", "-c", "write 0 512", base)
            rc, _, err = vmrun_ctl(VMRUN, sock, "quit")
            check(rc == 0, f"quit: {rc} {err}")
            vm.p.wait(timeout=HANG_GUARD_S)
        qemu_accepts("after vmrun", "qemu-io", "-f", "qcow2", "-c", "write 0 512", path)


def setup(a):
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        print(f"SKIP: {', '.join(missing)} missing (qemu-utils; scripts/install-deps.sh"
              " installs it): the lock tests need QEMU's tools")
        return SKIP
    return guest_setup(a, globals())


if __name__ == "__main__":
    sys.exit(run_main(globals(), add_guest_args, setup))
