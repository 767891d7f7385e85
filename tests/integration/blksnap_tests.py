#!/usr/bin/env python3
"""Whole-VM snapshot tests with virtio-blk I/O in flight: the `blksnap` test
guest (tests/guest/blksnap.c) keeps writes in flight on a qcow2 disk while
the host saves the VM (`vmrun ctl SOCK save path=DIR`), and a VM restored
from that snapshot (`vmrun --restore DIR`) must complete every request
exactly once and find all its data (docs/dev/snapshot-interface.md).

Usage: blksnap_tests.py --vmrun PATH --guests DIR TEST [TEST...]
       blksnap_tests.py --list

Each TEST is one function below (one ctest test, labels "guest" and
"snapshot").  Exit 0 when all pass, 1 on a failure, 77 (ctest's skip code)
when /dev/kvm is missing, with a message saying so.  Expected values come
from the guest's contract (tests/guest/README.md, "blksnap"), from the
snapshot interface and from qemu-img, never from vmrun's own output.
Nothing sleeps to synchronise: every wait is on a guest line or a process.
"""
import hashlib
import json
import os
import re
import select
import struct
import subprocess
import sys
import tempfile
import time

VMRUN = None
GUESTS = None
# The virtio transport of the disk (--transport); a restore keeps the saved one.
TRANSPORT = "mmio"
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 240

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import (TestFailure, add_guest_args, check, debug_exit_status,  # noqa: E402
                     guest_elf, guest_setup, kill, qemu_img_contents, run_main, vmrun_ctl,
                     add_transport_arg, with_transport)
from testkit import qemu_img as testkit_qemu_img  # noqa: E402

# The guest's defaults (tests/guest/blksnap.c): sectors S + i*T, i < N;
# every FLUSH_EVERY-th request a FLUSH; a progress line every ROUND
# completions.
FIRST, SECTORS, STRIDE, FLUSH_EVERY, ROUND = 16, 256, 8, 8, 256
DISK_BYTES = 4 << 20
STATE_MAGIC = struct.unpack("<Q", b"blksnap1")[0]


def guest(name):
    return guest_elf(GUESTS, name)


def qemu_img(*args):
    """qemu-img with this script's hang guard."""
    return testkit_qemu_img(*args, timeout=HANG_GUARD_S)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pattern_sector(sector, gen):
    """The 512 bytes the guest writes to @sector in generation @gen."""
    words = []
    for i in range(64):
        y = (((sector << 16) | gen) ^ (8 * i)) * 0x9e3779b97f4a7c15 & (2**64 - 1)
        words.append(y ^ (y >> 29))
    return struct.pack("<64Q", *words)


def expected_disk(requests):
    """The disk after @requests requests: request k is a FLUSH when k mod F
    is F - 1, the others writes; write w wrote generation w // N + 1 to
    sector S + (w mod N) * T; every other byte is zero."""
    want = bytearray(DISK_BYTES)
    writes = requests - requests // FLUSH_EVERY
    for idx in range(min(writes, SECTORS)):
        last = idx + ((writes - 1 - idx) // SECTORS) * SECTORS
        sector = FIRST + idx * STRIDE
        want[sector * 512:(sector + 1) * 512] = pattern_sector(sector, last // SECTORS + 1)
    return want


def check_disk(path, d, requests, what):
    got = qemu_img_contents(path, d, timeout=HANG_GUARD_S)
    want = expected_disk(requests)
    check(len(got) == len(want), f"{what}: {len(got)} bytes, want {len(want)}")
    if got != want:
        bad = next(i for i in range(0, len(want), 512) if got[i:i + 512] != want[i:i + 512])
        raise TestFailure(f"{what}: sector {bad // 512} holds the wrong data")


def new_disk(d, name="disk.qcow2"):
    img = os.path.join(d, name)
    qemu_img("create", "-q", "-f", "qcow2", img, str(DISK_BYTES))
    return img


def cmdline(requests, extra=""):
    return f"blksnap.requests={requests} {extra}".strip()


def run(args, timeout=HANG_GUARD_S):
    p = subprocess.run([VMRUN] + with_transport(args, TRANSPORT), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    return p.returncode, out, err, (f"\n--- command: vmrun {' '.join(args)}\n--- status "
                                    f"{p.returncode}\n--- stdout:\n{out}\n--- stderr:\n{err}")


def ctl(sock, *args):
    return vmrun_ctl(VMRUN, sock, *args, timeout=HANG_GUARD_S)


class Console:
    """The serial output of a running vmrun, read as it comes."""

    def __init__(self, p):
        self.p, self.buf = p, b""

    def wait_for(self, needle, timeout=HANG_GUARD_S):
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.buf:
            left = deadline - time.monotonic()
            check(left > 0, f"timed out waiting for {needle!r}; got {self.text()}")
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                check(chunk, f"EOF waiting for {needle!r} (status {self.p.poll()}); "
                             f"got {self.text()}")
                self.buf += chunk

    def text(self):
        return self.buf.decode(errors="replace")


def elf_symbol(path, name):
    """The value of symbol @name in ELF64 @path (its .symtab)."""
    with open(path, "rb") as f:
        elf = f.read()
    check(elf[:4] == b"\x7fELF" and elf[4] == 2, f"{path} is not an ELF64 file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3a)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize)
                for i in range(shnum)]
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        for off in range(sh[4], sh[4] + sh[5], sh[9]):
            st_name, _, _, _, st_value, _ = struct.unpack_from("<IBBHQQ", elf, off)
            start = strtab[4] + st_name
            if elf[start:elf.index(b"\0", start)] == name.encode():
                return st_value
    raise TestFailure(f"no symbol {name} in {path}")


def saved_guest_state(snap_dir, state_addr):
    """The guest's counters and ring indexes as the snapshot's memory.bin
    (guest RAM by guest-physical address, the guest identity-mapped) holds
    them: submitted, completed, in flight, round, and the device's side:
    avail idx published minus used idx (taken by the device, not yet
    completed in the ring) and used idx minus completed (completed, not yet
    seen by the guest)."""
    with open(os.path.join(snap_dir, "memory.bin"), "rb") as f:
        f.seek(state_addr)
        magic, submitted, completed, inflight, avail, used, rnd = struct.unpack(
            "<7Q", f.read(56))
        check(magic == STATE_MAGIC, f"{snap_dir}/memory.bin at 0x{state_addr:x}: no blksnap "
                                    f"state (0x{magic:x}): not guest RAM by physical address?")
        f.seek(avail + 2)
        avail_idx, = struct.unpack("<H", f.read(2))
        f.seek(used + 2)
        used_idx, = struct.unpack("<H", f.read(2))
    check(submitted - completed == inflight,
          f"{snap_dir}: submitted {submitted} completed {completed} in flight {inflight}")
    return {"submitted": submitted, "completed": completed, "inflight": inflight,
            "round": rnd, "device": (avail_idx - used_idx) & 0xffff,
            "unseen": (used_idx - completed) & 0xffff}


# ---------------------------------------------------------------- tests

def test_blksnap_plain():
    # No snapshot: the guest's normal run passes and leaves exactly the
    # data the formula says (qemu-img reads it); then each of its checks is
    # shown to fire: a completion processed twice, one lost (the stall
    # detector names it), a wrong expectation at the read-back.
    with tempfile.TemporaryDirectory() as d:
        img = new_disk(d)
        rc, out, _, ctx = run(["--kernel", guest("blksnap"), "--mem", "64M", "--timeout", "200",
                               "--disk", img, "--cmdline", cmdline(1500, "blksnap.round=500")])
        check(rc == debug_exit_status(0) and "blksnap ok 1500\n" in out and "FAIL" not in out,
              f"plain run{ctx}")
        check(re.findall(r"^blksnap round (\d+)$", out, re.M) == ["1", "2", "3"],
              f"progress lines{ctx}")
        qemu_img("check", img)
        check_disk(img, d, 1500, "the disk after a plain run")
        for inject, why in (("dup", "completed twice"), ("lose", "never completed"),
                            ("data", "holds 0x")):
            img = new_disk(d, f"{inject}.qcow2")
            rc, out, _, ctx = run(["--kernel", guest("blksnap"), "--mem", "64M", "--timeout",
                                   "200", "--disk", img, "--cmdline",
                                   cmdline(600, f"blksnap.inject={inject} blksnap.stall=2")])
            check(rc == debug_exit_status(1) and re.search(
                  rf"^blksnap FAIL .*{re.escape(why)}", out, re.M) and "blksnap ok" not in out,
                  f"blksnap.inject={inject} was not caught{ctx}")


def restore(snap_dir, requests, saved, paused_sock=None):
    """Restore @snap_dir and let the guest finish; check it continued (no
    new start line, the progress lines after the saved round), completed
    every request once and verified its data.  With @paused_sock: restore
    paused, check query-status, resume.  Returns the disk image the
    restored VM wrote (a new overlay in @snap_dir)."""
    before = set(os.listdir(snap_dir))
    args = [VMRUN, "--restore", snap_dir, "--console", "stdio", "--timeout", "200"]
    if paused_sock:
        args += ["--paused", "--api-sock", paused_sock]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    image = None
    try:
        if paused_sock:
            deadline = time.monotonic() + HANG_GUARD_S
            while True:
                rc, out, err = ctl(paused_sock, "query-status")
                if rc != 3 or p.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # the socket is not there yet
            if rc != 0 and p.poll() is not None:
                out, err = p.communicate()
                raise TestFailure(f"vmrun {' '.join(args[1:])} ended with status "
                                  f"{p.returncode}:\n{out.decode()}{err.decode()}")
            check(rc == 0, f"query-status on the restored VM: {rc} {err}")
            st = json.loads(out)
            check(st.get("status") == "paused", f"restored with --paused: {st}")
            image = st["disks"][0]["image"]
            check(os.path.dirname(os.path.abspath(image)) == os.path.abspath(snap_dir) and
                  re.fullmatch(r"disk0-\d+\.qcow2", os.path.basename(image)),
                  f"the restored disk 0 is {image}, want {snap_dir}/disk0-<K>.qcow2")
            rc, _, err = ctl(paused_sock, "resume")
            check(rc == 0, f"resume: {rc} {err}")
        out, err = p.communicate(timeout=HANG_GUARD_S)
    finally:
        kill(p)
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    ctx = (f"\n--- command: {' '.join(args)}\n--- status {p.returncode}\n--- saved {saved}"
           f"\n--- stdout:\n{out}\n--- stderr:\n{err}")
    check(p.returncode == debug_exit_status(0) and f"blksnap ok {requests}\n" in out and
          "FAIL" not in out, f"restore of {snap_dir}: the guest did not finish{ctx}")
    check("blksnap start" not in out, f"the restored guest started over{ctx}")
    rounds = [int(r) for r in re.findall(r"^blksnap round (\d+)$", out, re.M)]
    want = list(range(saved["round"] + 1, requests // ROUND + 1))
    check(rounds == want, f"progress after the restore: rounds {rounds}, want {want}{ctx}")
    new = sorted(f for f in set(os.listdir(snap_dir)) - before if f.endswith(".qcow2"))
    check(len(new) == 1 and re.fullmatch(r"disk0-\d+\.qcow2", new[0]),
          f"the restore made {new} in {snap_dir}, want one disk0-<K>.qcow2")
    if image:
        check(os.path.basename(image) == new[0], f"query-status said {image}, made {new[0]}")
    return os.path.join(snap_dir, new[0])


SAVES = 4


def test_blksnap_save_mid_io():
    # The guest keeps 12 requests in flight (writes, every 8th a FLUSH),
    # one notification each; the host saves the running VM four times
    # (each save freezes the disk as disk.qcow2.base-K) and quits it.  The
    # guest's counters and rings in each memory.bin show what was in
    # flight: at least one save must hold requests the device had taken
    # (completed into the used ring but not yet seen by the guest, or not
    # yet taken).  The busiest snapshot is restored twice (once --paused)
    # and another once; each time the guest finishes: every request
    # completed exactly once, the data verified by the guest and by qemu-img
    # on the restore's new overlay.  The frozen bases are read-only and no
    # restore changes a byte of them, nor of the first VM's top image.
    requests = 16 * ROUND
    with tempfile.TemporaryDirectory() as d:
        img = new_disk(d)
        sock = os.path.join(d, "api.sock")
        args = [VMRUN, "--kernel", guest("blksnap"), "--mem", "64M", "--timeout", "200",
                "--api-sock", sock, "--disk", img, "--cmdline", cmdline(requests)]
        p = subprocess.Popen(with_transport(args, TRANSPORT), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        con = Console(p)
        snaps = []
        try:
            for k in range(SAVES):
                con.wait_for(f"blksnap round {2 + k}\n")
                snap = os.path.join(d, f"snap{k + 1}")
                rc, out, err = ctl(sock, "save", f"path={snap}")
                check(rc == 0, f"save {k + 1} while the guest writes: status {rc}, {err.strip()}"
                               f"\n--- console:\n{con.text()}")
                res = json.loads(out)
                base = f"{img}.base-{k + 1}"
                disks = res.get("disks") or [{}]
                check(res.get("path") == snap and len(disks) == 1 and
                      (disks[0].get("disk"), disks[0].get("base")) == (0, base),
                      f"save {k + 1}: reply {res}, want path {snap} and disk 0's base {base}")
                check(os.path.isfile(os.path.join(snap, "state.dtb")) and
                      os.path.isfile(os.path.join(snap, "memory.bin")),
                      f"{snap} holds {sorted(os.listdir(snap))}")
                snaps.append((snap, base))
            rc, _, err = ctl(sock, "quit")
            check(rc == 0, f"quit: {rc} {err}")
            _, err = p.communicate(timeout=HANG_GUARD_S)
            check(p.returncode == 0, f"vmrun after quit: status {p.returncode}\n{err.decode()}"
                                     f"\n--- console:\n{con.text()}")
            check("FAIL" not in con.text() and "blksnap ok" not in con.text(),
                  f"the first VM ended its work before the quit:\n{con.text()}")
        finally:
            kill(p)
        state_addr = elf_symbol(guest("blksnap"), "blksnap_state")
        saved = [saved_guest_state(s, state_addr) for s, _ in snaps]
        for (s, _), st in zip(snaps, saved):
            print(f"{os.path.basename(s)}: {st}", flush=True)
        busy = [st["device"] + st["unseen"] for st in saved]
        check(max(busy) > 0, f"no save caught a request the device had taken: {saved}")
        # The chain the first VM left: img -> base-4 -> ... -> base-1.
        qemu_img("check", img)
        chain = json.loads(qemu_img("info", "--backing-chain", "--output=json", img))
        names = [os.path.basename(i["filename"]) for i in chain]
        check(names == ["disk.qcow2"] + [f"disk.qcow2.base-{k}" for k in range(SAVES, 0, -1)],
              f"backing chain after {SAVES} saves: {names}")
        frozen = {}
        for _, base in snaps:
            qemu_img("check", base)
            check(os.stat(base).st_mode & 0o222 == 0, f"{base} was left writable")
            frozen[base] = sha256(base)
        frozen[img] = sha256(img)

        # The busiest save twice; then one the device had not finished
        # with if there is one, else the first.
        top = busy.index(max(busy))
        other = next((i for i, st in enumerate(saved) if st["device"] and i != top),
                     1 if top == 0 else 0)
        for i, sock2 in ((top, os.path.join(d, "r.sock")), (top, None), (other, None)):
            snap, base = snaps[i]
            overlay = restore(snap, requests, saved[i], sock2)
            qemu_img("check", overlay)
            info = json.loads(qemu_img("info", "--output=json", overlay))
            check(os.path.realpath(info.get("full-backing-filename", "")) ==
                  os.path.realpath(base), f"{overlay}: backing {info.get('backing-filename')}, "
                                          f"want {base}")
            check_disk(overlay, d, requests, f"{overlay} after the restored guest finished")
        for path, digest in frozen.items():
            check(sha256(path) == digest, f"restoring changed {path}")
            if path != img:
                check(os.stat(path).st_mode & 0o222 == 0, f"{path} became writable")


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
