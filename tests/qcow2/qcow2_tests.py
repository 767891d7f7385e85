#!/usr/bin/env python3
"""qcow2 interoperability: vmrun's block backends against qemu-img.

Usage: qcow2_tests.py --blktool PATH TEST [TEST...]
       qcow2_tests.py --list

Each TEST is one test_* function below.  Exit 0 when all pass, 1 on a
failure, 77 (ctest's skip code) when every test run skipped: qemu-img and
qemu-io (Debian's qemu-utils) cannot be had, or, for the qcow2 tests, the
qcow2 backend is not built yet (blktool opens a qcow2 image as raw, or
blk_open refuses the format).

qemu-img is the oracle: images are made by `qemu-img create/convert` and
`qemu-io`, what blktool reads is compared with `qemu-img convert -O raw`,
and what blktool writes is judged by `qemu-img check` and `qemu-img compare`
against a reference that this script computes itself.  Nothing expected
comes from vmrun.

blktool's write pattern (tests/qcow2/blktool.c, pattern_fill()) is made
again here by pattern(): per 512-byte sector the seed and the sector index
(little-endian u64 each), then bytes that depend on the seed and position.
"""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

BLKTOOL = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTOR = 512
KiB, MiB = 1024, 1024 * 1024
# Generous guard against hangs only; never a performance assertion.
HANG_GUARD_S = 240
# Images live on a real filesystem (O_DIRECT, holes); /tmp may be tmpfs.
IMG_DIR = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from testkit import SKIP, Skip, TestFailure, check, run_main  # noqa: E402


def note(msg):
    print(f"NOTE: {msg}", flush=True)


def tmpdir():
    return tempfile.TemporaryDirectory(prefix="vmrun-qcow2-", dir=IMG_DIR)


# ---------------------------------------------------------------- processes

def run(cmd, ok=(0,), cwd=None, input_bytes=None, text_out=True):
    p = subprocess.run(cmd, cwd=cwd, input=input_bytes, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
    if ok is not None:
        check(p.returncode in ok,
              f"{' '.join(cmd)}: exit status {p.returncode}, want {ok}\n--- stderr:\n"
              f"{p.stderr.decode(errors='replace')}\n--- stdout:\n"
              f"{p.stdout[:4000].decode(errors='replace') if text_out else '(binary)'}")
    return p


def qemu_img(*args, ok=(0,), cwd=None):
    return run(["qemu-img"] + list(args), ok=ok, cwd=cwd)


def qemu_io(img, fmt, *cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    p = run(args + [img])
    out = (p.stdout + p.stderr).decode(errors="replace")
    # Older qemu-io exits 0 after a failed command: read its words too.
    check("error" not in out.lower() and "failed" not in out.lower(),
          f"qemu-io {cmds} on {img}:\n{out}")


def blktool(*args, ok=(0,), cwd=None, text_out=True):
    return run([BLKTOOL] + list(args), ok=ok, cwd=cwd, text_out=text_out)


def ensure_qemu_tools():
    """qemu-img and qemu-io, installed from qemu-utils where missing
    (tests/linux/lib.sh ensure_packages).  Returns an error string or None."""
    if shutil.which("qemu-img") and shutil.which("qemu-io"):
        return None
    lib = os.path.join(ROOT, "tests", "linux", "lib.sh")
    p = subprocess.run(["bash", "-c", f'set -e; . "{lib}"; ensure_packages qemu-utils'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if shutil.which("qemu-img") and shutil.which("qemu-io"):
        return None
    return ("qemu-img/qemu-io (package qemu-utils) are missing and could not be installed:\n"
            + p.stdout.decode(errors="replace")[-2000:])


QCOW2_STATE = {}


def need_qcow2():
    """Skip unless blktool opens a qemu-made qcow2 image as qcow2."""
    if "verdict" not in QCOW2_STATE:
        with tmpdir() as d:
            img = os.path.join(d, "probe.qcow2")
            qemu_img("create", "-q", "-f", "qcow2", img, "1M")
            p = blktool("info", img, ok=None)
            out = p.stdout.decode(errors="replace")
            err = p.stderr.decode(errors="replace")
            verdict = None
            # "format not supported" and the like; a driver that is there
            # and fails on this plain image (a bad header, a feature) fails.
            if p.returncode == 2 and "feature" not in err.lower() and re.search(
                    r"(unsupported|not supported|unknown)[^\n]*format|format[^\n]*"
                    r"(unsupported|not supported|unknown)", err, re.I):
                verdict = f"blk_open refuses a qcow2 image: {err.strip()}"
            elif p.returncode != 0:
                raise TestFailure(f"blktool info on a fresh qcow2 image: status {p.returncode}\n{err}")
            elif "format: qcow2" not in out:
                verdict = ("blktool opens a qemu-made qcow2 image as "
                           f"'{out.splitlines()[0] if out else '?'}'")
            QCOW2_STATE["verdict"] = verdict
    if QCOW2_STATE["verdict"]:
        raise Skip(f"the qcow2 backend is not there yet ({QCOW2_STATE['verdict']})")


# ---------------------------------------------------------------- data

_BODY = {}


def body(seed):
    b = _BODY.get(seed)
    if b is None:
        b = bytes((i * 31 + seed * 17 + 1) & 0xFF for i in range(16, SECTOR))
        _BODY[seed] = b
    return b


def pattern(seed, off, length):
    """blktool's pattern_fill(): what `w OFF LEN SEED` writes."""
    assert off % SECTOR == 0 and length % SECTOR == 0
    s0, b, seed64 = off // SECTOR, body(seed), seed & (2**64 - 1)
    return b"".join(struct.pack("<QQ", seed64, s) + b for s in range(s0, s0 + length // SECTOR))


def source_raw(path, size, seed):
    """A raw image with data, zero runs and holes: a source for qemu-img convert."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        off = 0
        while off < size:
            n = min(rng.choice([4 * KiB, 64 * KiB, 192 * KiB, 1 * MiB, 3 * SECTOR]), size - off)
            kind = rng.random()
            if kind < 0.55:
                f.seek(off)
                f.write(pattern(seed + off // SECTOR % 7, off, n))
            elif kind < 0.7:
                f.seek(off)
                f.write(bytes(n))  # explicit zeroes: convert leaves them out
            off += n
    with open(path, "rb") as f:
        return f.read()


def first_difference(a, b):
    n = min(len(a), len(b))
    step = 1 << 16
    for i in range(0, n, step):
        if a[i:i + step] != b[i:i + step]:
            for j in range(i, min(i + step, n)):
                if a[j] != b[j]:
                    return j
    return n if len(a) != len(b) else None


def describe_sector(data, off):
    s = data[off - off % SECTOR:off - off % SECTOR + SECTOR]
    if s == bytes(len(s)):
        return "zeroes"
    seed, idx = struct.unpack("<QQ", s[:16]) if len(s) >= 16 else (None, None)
    return f"starts {s[:16].hex()} (as a pattern: seed {seed}, sector {idx})"


def check_same(got, want, what):
    d = first_difference(got, want)
    if d is None:
        return
    if d >= min(len(got), len(want)):
        raise TestFailure(f"{what}: lengths {len(got)} and {len(want)} differ "
                          "(equal up to the shorter one)")
    raise TestFailure(f"{what}: lengths {len(got)} and {len(want)}, first difference at byte {d} "
                      f"(sector {d // SECTOR}): got {got[d]:#04x}, want {want[d]:#04x}; the sector "
                      f"got {describe_sector(got, d)}, want {describe_sector(want, d)}")


# ---------------------------------------------------------------- oracles

def oracle_raw(img, fmt="qcow2"):
    """The virtual disk as qemu-img sees it."""
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(img), suffix=".oracle") as out:
        qemu_img("convert", "-f", fmt, "-O", "raw", img, out.name)
        with open(out.name, "rb") as f:
            return f.read()


def virtual_size(img):
    return json.loads(qemu_img("info", "--output=json", img).stdout)["virtual-size"]


def blk_read(img, *opts, cwd=None):
    return blktool("read", img, *opts, cwd=cwd, text_out=False).stdout


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_reads_like_qemu(img, what, fmt="qcow2", cwd=None, *opts):
    want = oracle_raw(img, fmt)
    before = file_digest(img)
    got = blk_read(img, *opts, cwd=cwd)
    # Reading opens the image read-only: not a byte of it may change.
    check(file_digest(img) == before, f"{what}: blktool read modified the image file")
    check_same(got, want, f"{what}: blktool read vs qemu-img convert -O raw")
    info = blktool("info", img, cwd=cwd).stdout.decode()
    check(f"size: {len(want)}\n" in info, f"{what}: blktool info says {info!r}, qemu-img's disk "
          f"has {len(want)} bytes")
    return want


def qcow2_header_flags(img):
    """(version, incompatible feature bits) from the image header."""
    with open(img, "rb") as f:
        h = f.read(104)
    version = struct.unpack(">I", h[4:8])[0]
    incompat = struct.unpack(">Q", h[72:80])[0] if version >= 3 else 0
    return version, incompat


def qemu_check(img, what, allow_leaks=False, dirty_ok=False):
    """qemu-img check: exit 0 clean, 2 corruptions, 3 leaks only, 1 the check
    itself failed (qemu-img(1)).  Leaks fail only where @allow_leaks is on;
    they are reported either way.  The corrupt bit must never be set; the
    dirty bit (lazy refcounts) only where @dirty_ok (a crash), and then
    qemu-img check -r all repairs the image the way QEMU would at its next
    open before it is judged."""
    _, incompat = qcow2_header_flags(img)
    check(not incompat & 2, f"{what}: the image is marked corrupt")
    if incompat & 1:
        check(dirty_ok, f"{what}: the dirty bit is set after a clean close")
        # Judge a copy, repaired the way QEMU repairs it at open; the
        # image itself stays dirty for the driver to deal with.
        note(f"{what}: dirty image (lazy refcounts): judging a copy repaired by qemu-img check -r all")
        img_copy = img + ".repaired"
        shutil.copyfile(img, img_copy)
        qemu_img("check", "-q", "-r", "all", "-f", "qcow2", img_copy, ok=(0, 3))
        try:
            return qemu_check(img_copy, what + " (repaired copy)", allow_leaks)
        finally:
            os.unlink(img_copy)
    p = qemu_img("check", "-f", "qcow2", "--output=json", img, ok=None)
    try:
        res = json.loads(p.stdout)
    except ValueError:
        res = {}
    leaks = res.get("leaks", 0)
    if leaks:
        note(f"{what}: qemu-img check reports {leaks} leaked clusters")
    msg = (f"{what}: qemu-img check exit {p.returncode}: {json.dumps(res)}\n"
           f"{p.stderr.decode(errors='replace')}")
    check(p.returncode in ((0, 3) if allow_leaks else (0,)) and not res.get("corruptions"), msg)
    check(not res.get("check-errors"), msg)
    return res


# ---------------------------------------------------------------- the reference model

class Model:
    """What the disk must read back as after a script.  @data is the one
    answer where only one is right; @alt maps a sector to the other
    contents it may also hold (a discard: the old data, zeroes, or what the
    backing file has there; a crash: any operation after the last flush
    may or may not have landed)."""

    def __init__(self, data, backing=None):
        self.data = bytearray(data)
        self.backing = backing
        self.alt = {}

    def _sector(self, src, s):
        if src is None:
            return bytes(SECTOR)
        return bytes(src[s * SECTOR:(s + 1) * SECTOR]).ljust(SECTOR, b"\0")

    def apply(self, op, maybe=False):
        kind = op[0]
        if kind == "f":
            return
        off, n = op[1], op[2]
        if kind == "w":
            new = pattern(op[3], off, n)
        elif kind == "z":
            new = bytes(n)
        else:
            new = None
        for i in range(n // SECTOR):
            s = off // SECTOR + i
            cur = bytes(self.data[s * SECTOR:(s + 1) * SECTOR])
            if new is not None and not maybe:
                self.data[s * SECTOR:(s + 1) * SECTOR] = new[i * SECTOR:(i + 1) * SECTOR]
                self.alt.pop(s, None)
                continue
            extra = ([new[i * SECTOR:(i + 1) * SECTOR]] if new is not None
                     else [cur, bytes(SECTOR), self._sector(self.backing, s)])
            self.alt.setdefault(s, []).extend(extra)

    def verify(self, got, what):
        """Check @got; returns the reference with the sectors that took an
        allowed alternative patched in, for qemu-img compare."""
        check(len(got) == len(self.data), f"{what}: disk has {len(got)} bytes, want {len(self.data)}")
        ref = bytearray(self.data)
        step = 1 << 16
        for i in range(0, len(got), step):
            if got[i:i + step] == ref[i:i + step]:
                continue
            for s in range(i // SECTOR, min(i + step, len(got)) // SECTOR):
                g = got[s * SECTOR:(s + 1) * SECTOR]
                if g == ref[s * SECTOR:(s + 1) * SECTOR]:
                    continue
                check(g in self.alt.get(s, ()),
                      f"{what}: sector {s} (offset {s * SECTOR}) {describe_sector(got, s * SECTOR)}; "
                      f"want {describe_sector(ref, s * SECTOR)}"
                      + (f" or one of {len(self.alt[s])} alternatives" if s in self.alt else ""))
                ref[s * SECTOR:(s + 1) * SECTOR] = g
        return ref


def random_script(rng, size, count, kinds="wzdf", max_len=512 * KiB, flush_every=0, base_seed=100):
    """@count random operations inside @size bytes, as (kind, off, len[, seed])."""
    ops = []
    lens = [n for n in (SECTOR, 2 * SECTOR, 3 * SECTOR, 4 * KiB, 7 * SECTOR, 64 * KiB, 65 * KiB,
                        128 * KiB) if n < max_len] + [max_len]
    for i in range(count):
        if flush_every and i % flush_every == flush_every - 1:
            ops.append(("f",))
            continue
        kind = rng.choice(kinds)
        if kind == "f":
            ops.append(("f",))
            continue
        n = min(rng.choice(lens), size)
        # Half at cluster-ish boundaries, half anywhere.
        if rng.random() < 0.5:
            off = rng.randrange(0, (size - n) // (64 * KiB) + 1) * 64 * KiB
        else:
            off = rng.randrange(0, (size - n) // SECTOR + 1) * SECTOR
        if kind == "w":
            ops.append(("w", off, n, base_seed + i))
        else:
            ops.append((kind, off, n))
    return ops


def write_script(path, ops):
    with open(path, "w") as f:
        f.write("# made by qcow2_tests.py\n")
        for op in ops:
            f.write(" ".join(str(x) for x in op) + "\n")
    # Script line of each operation (the comment is line 1).
    return {i + 2: op for i, op in enumerate(ops)}


def write_and_verify(img, ops, what, base_data, backing=None, opts=(), fmt="qcow2", allow_leaks=False):
    d = os.path.dirname(img)
    script = os.path.join(d, "script.txt")
    write_script(script, ops)
    blktool("write", img, script, "--format", fmt, *opts)
    model = Model(base_data, backing)
    for op in ops:
        model.apply(op)
    if fmt == "qcow2":
        qemu_check(img, what, allow_leaks=allow_leaks)
    got = oracle_raw(img, fmt)
    ref = model.verify(got, what)
    refpath = os.path.join(d, "reference.raw")
    with open(refpath, "wb") as f:
        f.write(ref)
    p = qemu_img("compare", "-f", "raw", "-F", fmt, refpath, img, ok=None)
    check(p.returncode == 0, f"{what}: qemu-img compare with the reference: exit {p.returncode}\n"
          f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
    # And blktool reads back what qemu-img reads.
    check_same(blk_read(img, "--format", fmt, *opts), got, f"{what}: blktool read after the writes")
    return got


def make_qcow2(path, size, *opts, source=None, compress=False):
    o = ",".join(opts)
    if source:
        args = ["convert", "-f", "raw", "-O", "qcow2"] + (["-c"] if compress else [])
        qemu_img(*(args + (["-o", o] if o else []) + [source, path]))
    else:
        qemu_img(*(["create", "-q", "-f", "qcow2"] + (["-o", o] if o else []) + [path, str(size)]))
    return path


# Regions that qemu-io writes, zeroes and discards on top of a converted image.
QEMU_IO_EDITS = [
    "write -P 0xab 0 64k",
    "write -P 0x5a 1m 512",
    "write -P 0x11 3584 1536",          # across a 4k boundary
    "write -z 2m 128k",                 # zero clusters (v3) or zeroed data (v2)
    "write -z -u 4m 64k",
    "discard 5m 192k",
    "write -P 0xcd 6m 3m",              # several clusters at once
    "write -P 0xee 131072 512",
]


# ---------------------------------------------------------------- raw

def test_raw_round_trip():
    for opts in ((), ("--no-aio",), ("--cache", "none")):
        with tmpdir() as d:
            img, size = os.path.join(d, "disk.raw"), 8 * MiB + 3 * SECTOR
            data = source_raw(img, size, 5)
            rng = random.Random(11)
            ops = random_script(rng, size, 400)
            script = os.path.join(d, "script.txt")
            write_script(script, ops)
            p = blktool("write", img, script, "--format", "raw", *opts)
            done = [l for l in p.stdout.decode().splitlines() if l.startswith(("done ", "flushed "))]
            check(len(done) == len(ops), f"raw {opts}: {len(done)} completion lines for {len(ops)} ops")
            model = Model(data)
            for op in ops:
                model.apply(op)
            with open(img, "rb") as f:
                model.verify(f.read(), f"raw file {opts}")
            with open(img, "rb") as f:
                check_same(blk_read(img, "--format", "raw", *opts), f.read(), f"raw read {opts}")
            check(os.path.getsize(img) == size, f"raw {opts}: the file grew to {os.path.getsize(img)}")


def test_raw_magic_stays_raw():
    with tmpdir() as d:
        # A real qcow2 image, read as raw: its bytes are the disk.
        img = make_qcow2(os.path.join(d, "looks.qcow2"), 16 * MiB)
        with open(img, "ab") as f:
            f.truncate(os.path.getsize(img) + 1000)  # ends mid-sector
        with open(img, "rb") as f:
            data = f.read()
        check(data[:4] == b"QFI\xfb", "qemu-img made no qcow2 magic")
        info = blktool("info", img, "--format", "raw").stdout.decode()
        rounded = -(-len(data) // SECTOR) * SECTOR
        check(f"size: {rounded}\n" in info, f"--format raw: info {info!r}, file size {len(data)}")
        check("format: qcow2" not in info, f"--format raw opened as qcow2: {info!r}")
        check(info.startswith("format: raw\n"), f"--format raw: info {info!r}")
        check_same(blk_read(img, "--format", "raw"), data + bytes(rounded - len(data)), "--format raw read")
        # Writable as raw when asked for explicitly; the header sector too.
        script = os.path.join(d, "s.txt")
        write_script(script, [("w", 0, 4096, 3), ("z", 8192, 512)])
        blktool("write", img, script, "--format", "raw")
        with open(img, "rb") as f:
            got = f.read()
        want = bytearray(data)
        want[0:4096] = pattern(3, 0, 4096)
        want[8192:8704] = bytes(512)
        check_same(got[:len(data)], bytes(want), "--format raw write over the header")


def test_blktool_errors():
    # blktool's own contract: 2 for usage, script and open errors, 1 for a
    # failed or refused operation, naming it.
    with tmpdir() as d:
        img = os.path.join(d, "disk.raw")
        with open(img, "wb") as f:
            f.truncate(1 * MiB)
        missing = os.path.join(d, "missing.img")
        p = blktool("read", missing, ok=(2,))
        check(missing.encode() in p.stderr, f"open error does not name the file: {p.stderr!r}")
        blktool("read", img, "--format", "vmdk", ok=(2,))
        blktool("frobnicate", img, ok=(2,))
        script = os.path.join(d, "s.txt")
        for bad in ("w 0 512", "x 0 512", "w 0 100 1", "f 1", "z zero 512"):
            with open(script, "w") as f:
                f.write("f\n" + bad + "\n")
            p = blktool("write", img, script, "--format", "raw", ok=(2,))
            check(b":2" in p.stderr, f"script line {bad!r}: error does not name line 2: {p.stderr!r}")
        with open(script, "w") as f:
            f.write("w 0 4096 1\n# past the end\nw 1048064 1024 2\n")
        p = blktool("write", img, script, "--format", "raw", ok=(1,))
        check(b"write" in p.stderr and b"line 3" in p.stderr, f"failed op not named: {p.stderr!r}")


def test_raw_kill_after():
    # --kill-after on a raw file: a killed process loses nothing that the
    # page cache took, so every operation reported done is in the file.
    with tmpdir() as d:
        img, size = os.path.join(d, "disk.raw"), 16 * MiB
        with open(img, "wb") as f:
            f.truncate(size)
        ops = random_script(random.Random(12), size, 300, kinds="wwwz", max_len=256 * KiB,
                            flush_every=25)
        script = os.path.join(d, "script.txt")
        lines = write_script(script, ops)
        for kill_after in (1, 100, 299):
            with open(img, "wb") as f:
                f.truncate(0)
                f.truncate(size)
            p = blktool("write", img, script, "--format", "raw", "--kill-after", str(kill_after),
                        ok=(-signal.SIGKILL,))
            done = {int(l.split()[1]) for l in p.stdout.decode().splitlines()
                    if l.startswith(("done ", "flushed "))}
            check(len(done) == kill_after - 1, f"kill after {kill_after}: {len(done)} done lines")
            model = Model(bytes(size))
            for ln in sorted(lines):
                model.apply(lines[ln], maybe=ln not in done)
            with open(img, "rb") as f:
                model.verify(f.read(), f"raw, killed after {kill_after} ops")


# ---------------------------------------------------------------- qcow2 read

def test_info_size():
    need_qcow2()
    with tmpdir() as d:
        for size in (SECTOR, 1 * MiB, 10 * MiB + 3 * SECTOR, 5 * 1024 * MiB):
            img = make_qcow2(os.path.join(d, f"s{size}.qcow2"), size)
            info = blktool("info", img).stdout.decode()
            check(info == f"format: qcow2\nsize: {virtual_size(img)}\n", f"size {size}: info {info!r}")
            info = blktool("info", img, "--format", "qcow2").stdout.decode()
            check(f"size: {size}\n" in info, f"size {size} with --format qcow2: info {info!r}")


def test_read_cluster_sizes():
    need_qcow2()
    with tmpdir() as d:
        src = os.path.join(d, "src.raw")
        source_raw(src, 12 * MiB + 5 * SECTOR, 21)
        for cs in ("512", "4096", "65536", "2M"):
            img = make_qcow2(os.path.join(d, f"c{cs}.qcow2"), 0, f"cluster_size={cs}", source=src)
            check_reads_like_qemu(img, f"cluster_size={cs}, converted")
            qemu_io(img, "qcow2", *QEMU_IO_EDITS)
            check_reads_like_qemu(img, f"cluster_size={cs}, after qemu-io")


def test_read_compat_refcounts():
    need_qcow2()
    configs = [("compat=0.10",), ("compat=1.1",), ("compat=1.1", "refcount_bits=1"),
               ("compat=1.1", "refcount_bits=64"), ("compat=1.1", "lazy_refcounts=on"),
               ("compat=0.10", "cluster_size=4096")]
    with tmpdir() as d:
        src = os.path.join(d, "src.raw")
        source_raw(src, 8 * MiB, 22)
        for cfg in configs:
            img = make_qcow2(os.path.join(d, "img.qcow2"), 0, *cfg, source=src)
            check_reads_like_qemu(img, f"{cfg}, converted")
            qemu_io(img, "qcow2", *QEMU_IO_EDITS[:6])
            check_reads_like_qemu(img, f"{cfg}, after qemu-io")
            os.unlink(img)


def test_read_qemu_io_patterns():
    need_qcow2()
    with tmpdir() as d:
        for compat in ("0.10", "1.1"):
            img = make_qcow2(os.path.join(d, f"p{compat}.qcow2"), 16 * MiB, f"compat={compat}")
            check_same(blk_read(img), bytes(16 * MiB), f"compat={compat}: a fresh image")
            check_reads_like_qemu(img, f"compat={compat}, fresh")
            qemu_io(img, "qcow2", *QEMU_IO_EDITS)
            # Overwrite parts of what is there, zero within data clusters.
            qemu_io(img, "qcow2", "write -P 0x77 32k 64k", "write -z 6m 4k", "write -z 6400k 1m",
                    "discard 7m 64k", "write -P 0x01 16383k 1k")
            check_reads_like_qemu(img, f"compat={compat}, after qemu-io")
            # Grown (the L1 table grows, maybe moves), then written past
            # the old end; then the version changed in place.
            qemu_img("resize", "-q", "-f", "qcow2", img, "+40M")
            qemu_io(img, "qcow2", "write -P 0x91 16m 64k", "write -P 0x92 56319k 1k")
            check_reads_like_qemu(img, f"compat={compat}, resized")
            other = "1.1" if compat == "0.10" else "0.10"
            qemu_img("amend", "-f", "qcow2", "-o", f"compat={other}", img)
            check_reads_like_qemu(img, f"compat={compat}, amended to {other}")
        # Preallocated images: allocated clusters that hold zeroes.
        for prealloc in ("metadata", "falloc"):
            img = make_qcow2(os.path.join(d, f"{prealloc}.qcow2"), 6 * MiB, f"preallocation={prealloc}")
            check_reads_like_qemu(img, f"preallocation={prealloc}")
            qemu_io(img, "qcow2", *QEMU_IO_EDITS[:3])
            check_reads_like_qemu(img, f"preallocation={prealloc}, written")


def test_read_backing_chain():
    need_qcow2()
    with tmpdir() as d:
        src = os.path.join(d, "src.raw")
        source_raw(src, 8 * MiB, 23)
        base = make_qcow2(os.path.join(d, "base.qcow2"), 0, source=src)
        mid = os.path.join(d, "mid.qcow2")
        top = os.path.join(d, "top.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", mid)
        qemu_io(mid, "qcow2", "write -P 0x21 64k 64k", "write -P 0x22 1000k 4k",
                "write -z 2m 64k")
        # The top is larger than its backing file: past the end reads zero.
        qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top, "12M")
        check_reads_like_qemu(top, "three-level chain, empty top")
        qemu_io(top, "qcow2", "write -P 0x31 0 4k", "write -z 4m 128k", "discard 65536 65536",
                "write -P 0x32 9m 64k", "write -P 0x33 8388096 1024")
        check_reads_like_qemu(top, "three-level chain")
        check_reads_like_qemu(mid, "the middle image")
        # v2 images: no zero flag, so a zeroed range is data.
        v2 = os.path.join(d, "v2.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", base, "-F", "qcow2", v2)
        qemu_io(v2, "qcow2", "write -z 0 64k", "write -P 0x41 100k 3k")
        check_reads_like_qemu(v2, "compat=0.10 over a backing file")


def test_read_backing_raw_and_relative():
    need_qcow2()
    with tmpdir() as d:
        os.mkdir(os.path.join(d, "images"))
        os.mkdir(os.path.join(d, "elsewhere"))
        base = os.path.join(d, "images", "base.raw")
        source_raw(base, 6 * MiB + SECTOR, 24)
        top = os.path.join(d, "images", "top.qcow2")
        # A relative name: relative to the top image's folder, not the cwd.
        qemu_img("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, cwd=os.path.join(d, "images"))
        qemu_io(top, "qcow2", "write -P 0x51 4k 8k", "write -z 1m 64k")
        want = oracle_raw(top)
        got = blk_read(os.path.join("..", "images", "top.qcow2"), cwd=os.path.join(d, "elsewhere"))
        check_same(got, want, "raw base by a relative name, read from another folder")
        check_reads_like_qemu(top, "raw base by a relative name")
        # A relative path with a folder in it.
        os.mkdir(os.path.join(d, "images", "layer"))
        top2 = os.path.join(d, "images", "layer", "top2.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-b", "../top.qcow2", "-F", "qcow2", top2,
                 cwd=os.path.join(d, "images", "layer"))
        qemu_io(top2, "qcow2", "write -P 0x52 2m 4k")
        check_reads_like_qemu(top2, "qcow2 over qcow2 over raw, relative names", cwd=d)


def test_read_compressed():
    need_qcow2()
    with tmpdir() as d:
        src = os.path.join(d, "src.raw")
        source_raw(src, 10 * MiB + 2 * SECTOR, 25)
        for opts in ((), ("compression_type=zlib",), ("compression_type=zstd",),
                     ("cluster_size=4096",), ("compat=0.10",), ("cluster_size=2M",)):
            img = make_qcow2(os.path.join(d, "c.qcow2"), 0, *opts, source=src, compress=True)
            check_reads_like_qemu(img, f"compressed {opts}")
            # Writes over compressed clusters turn them into plain ones.
            qemu_io(img, "qcow2", "write -P 0x61 0 4k", "write -P 0x62 3m 96k", "write -z 5m 64k")
            check_reads_like_qemu(img, f"compressed {opts}, partly rewritten")
            os.unlink(img)


def test_unsupported_features_refused_or_read():
    # Features a driver may leave out: refusing the image at open (exit 2,
    # with a message) is right, opening it and reading wrong bytes is not.
    need_qcow2()
    with tmpdir() as d:
        src = os.path.join(d, "src.raw")
        source_raw(src, 4 * MiB, 26)
        cases = [("extended_l2=on",), ("extended_l2=on", "cluster_size=128k"),
                 ("data_file=" + os.path.join(d, "data.bin"),)]
        for cfg in cases:
            img = make_qcow2(os.path.join(d, "f.qcow2"), 0, *cfg, source=src)
            qemu_io(img, "qcow2", "write -P 0x71 4k 4k", "write -z 1m 64k")
            want = oracle_raw(img)
            p = blktool("read", img, ok=None, text_out=False)
            if p.returncode == 2:
                check(p.stderr.strip(), f"{cfg}: refused without a message")
                note(f"{cfg}: refused: {p.stderr.decode(errors='replace').strip()}")
            else:
                check(p.returncode == 0, f"{cfg}: blktool read exit {p.returncode}: {p.stderr!r}")
                check_same(p.stdout, want, f"{cfg}: read")
            os.unlink(img)
        # Encrypted (LUKS): blktool has no key, so the only right answer
        # is a refusal; reading the ciphertext as the disk is wrong.
        img = os.path.join(d, "luks.qcow2")
        # qemu-img benchmarks PBKDF with the thread's CPU time and gives up
        # ("Unable to get accurate CPU usage") on a loaded machine: retry.
        for attempt in range(5):
            p = qemu_img("create", "-q", "-f", "qcow2", "--object",
                         "secret,id=sec0,data=vmrun-test", "-o",
                         "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100",
                         img, "4M", ok=(0, 1))
            if p.returncode == 0:
                break
        check(p.returncode == 0, f"qemu-img could not make a LUKS image: {p.stderr!r}")
        p = blktool("read", img, ok=(2,), text_out=False)
        note(f"LUKS: refused: {p.stderr.decode(errors='replace').strip()}")
        blktool("info", img, ok=(2,))


# ---------------------------------------------------------------- qcow2 write

def test_write_fresh():
    need_qcow2()
    size = 24 * MiB + 7 * SECTOR
    configs = [((), ()), (("compat=0.10",), ()), (("cluster_size=4096",), ("--no-aio",)),
               (("lazy_refcounts=on",), ("--cache", "none")), (("refcount_bits=64",), ()),
               (("cluster_size=2M",), ()), (("preallocation=metadata",), ()),
               (("preallocation=falloc", "cluster_size=4096"), ())]
    for cfg, opts in configs:
        with tmpdir() as d:
            img = make_qcow2(os.path.join(d, "w.qcow2"), size, *cfg)
            ops = random_script(random.Random(31), size, 600)
            # The last sectors, past the last full cluster.
            ops += [("w", size - 3 * SECTOR, 3 * SECTOR, 5), ("z", size - SECTOR, SECTOR),
                    ("w", size - 64 * KiB, 64 * KiB - 2 * SECTOR, 6), ("f",)]
            write_and_verify(img, ops, f"fresh {cfg} {opts}", bytes(size), opts=opts)
            # QEMU carries on with what vmrun wrote, and vmrun reads that.
            qemu_io(img, "qcow2", *QEMU_IO_EDITS)
            qemu_check(img, f"fresh {cfg}, then qemu-io")
            check_reads_like_qemu(img, f"fresh {cfg}, then qemu-io")


def test_write_prefilled():
    need_qcow2()
    size = 16 * MiB
    # cache=none: reads and overwrites of allocated clusters go to the
    # O_DIRECT handle asynchronously, the rest through the page cache.
    for cfg, compress, opts in [((), False, ()), (("compat=0.10",), False, ()), ((), True, ()),
                                (("cluster_size=4096",), True, ()),
                                ((), False, ("--cache", "none")),
                                (("cluster_size=4096",), True, ("--cache", "none")),
                                (("cluster_size=1024",), False, ("--cache", "none"))]:
        with tmpdir() as d:
            src = os.path.join(d, "src.raw")
            data = source_raw(src, size, 32)
            img = make_qcow2(os.path.join(d, "p.qcow2"), 0, *cfg, source=src, compress=compress)
            qemu_io(img, "qcow2", *QEMU_IO_EDITS)
            before = oracle_raw(img)
            check(before != data, "qemu-io changed nothing")
            ops = random_script(random.Random(33), size, 500)
            write_and_verify(img, ops, f"prefilled {cfg} compressed={compress} {opts}", before,
                             opts=opts)


def test_write_backing_copy_up():
    need_qcow2()
    size = 8 * MiB
    for base_fmt, cfg in [("qcow2", ()), ("raw", ()), ("qcow2", ("compat=0.10",)),
                          ("qcow2", ("cluster_size=2M",)), ("qcow2", ("cluster_size=4096",))]:
        with tmpdir() as d:
            src = os.path.join(d, "src.raw")
            source_raw(src, size, 34)
            base = src if base_fmt == "raw" else make_qcow2(os.path.join(d, "base.qcow2"), 0, source=src)
            base_data = oracle_raw(base, base_fmt)
            top = os.path.join(d, "top.qcow2")
            opts = ["-o", ",".join(cfg)] if cfg else []
            # Larger than the base: the tail has no backing data.
            qemu_img("create", "-q", "-f", "qcow2", *opts, "-b", base, "-F", base_fmt, top, str(size + 2 * MiB))
            start = base_data + bytes(2 * MiB)
            # Sub-cluster writes need copy-up from the backing file.
            ops = random_script(random.Random(35), size + 2 * MiB, 400, kinds="wwwzdf", max_len=12 * KiB)
            write_and_verify(top, ops, f"over a {base_fmt} base {cfg}", start, backing=start)
            check(oracle_raw(base, base_fmt) == base_data, f"{base_fmt} base: the backing file changed")


def test_write_small_clusters():
    # cluster_size=512: every few writes need a new L2 table and refcount
    # block, and the refcount table itself has to grow.
    need_qcow2()
    size = 48 * MiB
    for cfg in (("cluster_size=512",), ("cluster_size=512", "refcount_bits=1"),
                ("cluster_size=1024", "refcount_bits=2")):
        with tmpdir() as d:
            img = make_qcow2(os.path.join(d, "s.qcow2"), size, *cfg)
            ops = random_script(random.Random(36), size, 1500, kinds="wwwwzdf", max_len=256 * KiB)
            write_and_verify(img, ops, f"small clusters {cfg}", bytes(size))


def concurrent_script(rng, clusters, cluster_size, seed0):
    """Small non-overlapping writes and zeroings into the same few clusters,
    shuffled, no flush: blktool has up to 32 of them in flight at once, so
    several allocate (or copy up) one cluster at the same time."""
    ops, sectors = [], cluster_size // SECTOR
    for c in clusters:
        picks = rng.sample(range(sectors), min(sectors, 24))
        for j, sct in enumerate(picks):
            off = c * cluster_size + sct * SECTOR
            if j % 6 == 5:
                ops.append(("z", off, SECTOR))
            else:
                ops.append(("w", off, SECTOR, seed0 + len(ops)))
    rng.shuffle(ops)
    return ops + [("f",)]


def test_write_concurrent_same_cluster():
    need_qcow2()
    size = 8 * MiB
    for cfg, backing, opts in [((), False, ()), ((), True, ()), (("cluster_size=4096",), True, ()),
                               (("compat=0.10",), True, ()), (("cluster_size=2M",), False, ()),
                               (("cluster_size=4096",), True, ("--cache", "none"))]:
        cs = 2 * MiB if "cluster_size=2M" in cfg else 4096 if "cluster_size=4096" in cfg else 65536
        what = f"concurrent writes in one cluster {cfg} backing={backing}"
        with tmpdir() as d:
            start = bytes(size)
            img = os.path.join(d, "c.qcow2")
            create_opts = ["-o", ",".join(cfg)] if cfg else []
            if backing:
                src = os.path.join(d, "base.raw")
                start = source_raw(src, size, 51)
                qemu_img("create", "-q", "-f", "qcow2", *create_opts, "-b", src, "-F", "raw", img)
            else:
                qemu_img("create", "-q", "-f", "qcow2", *create_opts, img, str(size))
            rng = random.Random(52)
            clusters = sorted(rng.sample(range(size // cs), min(size // cs, 8)))
            ops = []
            for r in range(3):
                ops += concurrent_script(rng, clusters, cs, 1000 * (r + 1))
            write_and_verify(img, ops, what + f" {opts}", start,
                             backing=start if backing else None, opts=opts)


def test_write_with_internal_snapshot():
    # A snapshot shares clusters (refcount 2): writes must copy them
    # (or the driver must refuse the image at open); the snapshot keeps
    # its data either way.
    need_qcow2()
    size = 8 * MiB
    for cfg in ((), ("cluster_size=4096",), ("compat=0.10",)):
        what = f"internal snapshot {cfg}"
        with tmpdir() as d:
            src = os.path.join(d, "src.raw")
            source_raw(src, size, 61)
            img = make_qcow2(os.path.join(d, "s.qcow2"), 0, *cfg, source=src)
            qemu_io(img, "qcow2", "write -P 0x81 1m 64k", "write -z 2m 64k")
            qemu_img("snapshot", "-c", "snap1", img)
            before = oracle_raw(img)
            check_reads_like_qemu(img, f"{what}: read")
            ops = random_script(random.Random(62), size, 300, max_len=128 * KiB)
            script = os.path.join(d, "script.txt")
            write_script(script, ops)
            p = blktool("write", img, script, ok=(0, 2))
            if p.returncode == 2:
                note(f"{what}: refused: {p.stderr.decode(errors='replace').strip()}")
                check(oracle_raw(img) == before, f"{what}: refused, yet the image changed")
                continue
            model = Model(before)
            for op in ops:
                model.apply(op)
            qemu_check(img, what)
            got = oracle_raw(img)
            model.verify(got, what)
            check_same(blk_read(img), got, f"{what}: blktool read after the writes")
            with tempfile.NamedTemporaryFile(dir=d) as out:
                qemu_img("convert", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=snap1", img, out.name)
                with open(out.name, "rb") as f:
                    check_same(f.read(), before, f"{what}: the snapshot's data after the writes")


def test_write_large_sparse():
    # A 3 GiB disk in 512-byte clusters: a 768 KiB L1 table over several
    # clusters, writes scattered over all of it.  Judged by qemu-img
    # compare against a sparse raw reference (no full-disk reads).
    need_qcow2()
    size = 3 * 1024 * MiB
    with tmpdir() as d:
        img = make_qcow2(os.path.join(d, "big.qcow2"), size, "cluster_size=512")
        rng = random.Random(71)
        ops = random_script(rng, size, 400, kinds="wwwzf", max_len=64 * KiB)
        ops += [("w", size - 4 * KiB, 4 * KiB, 7), ("w", 0, SECTOR, 8), ("f",)]
        script = os.path.join(d, "script.txt")
        write_script(script, ops)
        blktool("write", img, script)
        ref = os.path.join(d, "ref.raw")
        with open(ref, "wb") as f:
            f.truncate(size)
            for op in ops:
                if op[0] == "w":
                    f.seek(op[1])
                    f.write(pattern(op[3], op[1], op[2]))
                elif op[0] == "z":
                    f.seek(op[1])
                    f.write(bytes(op[2]))
        qemu_check(img, "3 GiB, 512-byte clusters")
        p = qemu_img("compare", "-f", "raw", "-F", "qcow2", ref, img, ok=None)
        check(p.returncode == 0, f"3 GiB, 512-byte clusters: qemu-img compare exit {p.returncode}\n"
              f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
        info = blktool("info", img).stdout.decode()
        check(f"size: {size}\n" in info, f"info {info!r}")


# ---------------------------------------------------------------- crash

def crash_case(d, what, cfg, ops, kill_after, start, backing=None, opts=()):
    """Kill blktool after @kill_after operations of @ops on a new image
    (over @backing, a raw file holding @start, where given); then judge
    the image with qemu-img, and write to it again."""
    img = os.path.join(d, "k.qcow2")
    o = ["-o", ",".join(cfg)] if cfg else []
    if os.path.exists(img):
        os.unlink(img)
    if backing:
        qemu_img("create", "-q", "-f", "qcow2", *o, "-b", backing, "-F", "raw", img, str(len(start)))
    else:
        qemu_img("create", "-q", "-f", "qcow2", *o, img, str(len(start)))
    script = os.path.join(d, "script.txt")
    lines = write_script(script, ops)
    p = blktool("write", img, script, "--kill-after", str(kill_after), *opts, ok=None)
    check(p.returncode == -signal.SIGKILL,
          f"{what}: blktool exit {p.returncode}, want death by SIGKILL\n{p.stderr!r}")
    flushed = [int(l.split()[1]) for l in p.stdout.decode().splitlines() if l.startswith("flushed ")]
    last = max(flushed, default=1)
    res = qemu_check(img, what, allow_leaks=True, dirty_ok=True)
    model = Model(start, start if backing else None)
    for ln in sorted(lines):
        model.apply(lines[ln], maybe=ln > last)
    got = oracle_raw(img)
    model.verify(got, f"{what} (last flush on script line {last})")
    # The image stays usable as it was left (dirty, with leaks): more
    # writes, then a check (leaks from the crash may stay, no new ones).
    more = random_script(random.Random(kill_after), len(start), 100, max_len=64 * KiB, base_seed=90000)
    write_script(script, more)
    p = blktool("write", img, script, ok=(0, 2))
    if p.returncode == 2:
        note(f"{what}: reopening refused: {p.stderr.decode(errors='replace').strip()}")
        return
    res2 = qemu_check(img, f"{what}, written again", allow_leaks=True)
    check(res2.get("leaks", 0) <= res.get("leaks", 0),
          f"{what}: leaks grew from {res.get('leaks', 0)} to {res2.get('leaks', 0)} after "
          "writes to the recovered image")
    model2 = Model(got, start if backing else None)
    for op in more:
        model2.apply(op)
    model2.verify(oracle_raw(img), f"{what}, written again")


def test_crash_kill_during_writes():
    need_qcow2()
    size = 32 * MiB
    ops = random_script(random.Random(41), size, 2000, kinds="wwwwwz", max_len=256 * KiB, flush_every=40)
    for cfg, kill_after, opts in [((), 1, ()), ((), 57, ()), ((), 400, ()), ((), 1500, ()),
                                  (("lazy_refcounts=on",), 333, ()),
                                  (("lazy_refcounts=on",), 1001, ()),
                                  (("cluster_size=4096",), 777, ()),
                                  (("compat=0.10",), 1200, ()), ((), 900, ("--cache", "none"))]:
        with tmpdir() as d:
            crash_case(d, f"killed after {kill_after} ops {cfg} {opts}", cfg, ops, kill_after,
                       bytes(size), opts=opts)


def test_freed_clusters_reused():
    # Discarded clusters go back to the filesystem (holes) and are
    # allocated again: filling, discarding and refilling a disk must not
    # grow the image by the refilled amount.  qemu-img checks every step.
    need_qcow2()
    size, half = 32 * MiB, 16 * MiB
    for cfg, opts in (((), ()), (("cluster_size=4096",), ()), ((), ("--cache", "none"))):
        what = f"freed clusters reused {cfg} {opts}"
        with tmpdir() as d:
            img = make_qcow2(os.path.join(d, "r.qcow2"), size, *cfg)
            fill = [("w", off, 256 * KiB, 500 + off // (256 * KiB)) for off in range(0, half, 256 * KiB)]
            data = write_and_verify(img, fill + [("f",)], what + ": fill", bytes(size), opts=opts)
            st1 = os.stat(img)
            data = write_and_verify(img, [("d", 0, half), ("f",)], what + ": discard", data,
                                    opts=opts)
            st2 = os.stat(img)
            check(st2.st_blocks * 512 <= st1.st_blocks * 512 - half * 3 // 4,
                  f"{what}: discarding {half} bytes freed only "
                  f"{(st1.st_blocks - st2.st_blocks) * 512} bytes on the host")
            refill = [("w", half + off, 256 * KiB, 900 + off // (256 * KiB))
                      for off in range(0, half, 256 * KiB)]
            write_and_verify(img, refill + [("f",)], what + ": refill", data, opts=opts)
            st3 = os.stat(img)
            check(st3.st_size <= st1.st_size + half // 8,
                  f"{what}: the image grew from {st1.st_size} to {st3.st_size} bytes: freed "
                  "clusters were not allocated again")


def dirty_image(path, size, cfg, cmds):
    """A lazy_refcounts image that qemu-io wrote to and then killed itself
    in (QEMU's own iotest 039 recipe): the dirty bit is set and qemu-img
    check finds refcount errors, which this checks."""
    qemu_img("create", "-q", "-f", "qcow2", "-o", ",".join(("lazy_refcounts=on",) + cfg), path,
             str(size))
    args = ["qemu-io", "-f", "qcow2"]
    for c in cmds + ["sigraise 9"]:
        args += ["-c", c]
    p = run(args + [path], ok=None)
    check(p.returncode == -signal.SIGKILL, f"qemu-io should have died by SIGKILL: {p.returncode}")
    check(qcow2_header_flags(path)[1] & 1, "qemu-io left no dirty bit")
    p = qemu_img("check", "-f", "qcow2", path, ok=None)
    check(p.returncode == 2, f"the dirty image should have refcount errors: exit {p.returncode}")


def test_dirty_lazy_refcounts_repaired():
    # A writable open of a dirty image rebuilds its refcounts (as QEMU does
    # at open) and clears the bit: qemu-img check is clean afterwards and
    # the data are qemu-io's plus ours.  A read-only open leaves it dirty;
    # one with internal snapshots is refused with a message, unchanged.
    need_qcow2()
    size = 16 * MiB
    for cfg in ((), ("cluster_size=4096",), ("refcount_bits=1",)):
        what = f"dirty image {cfg}"
        with tmpdir() as d:
            img = os.path.join(d, "dirty.qcow2")
            dirty_image(img, size, cfg, ["write -P 0x5a 0 1M", "write -P 0x33 3M 192k",
                                         "write -P 0x11 7M 4k"])
            before = oracle_raw(img)
            with open(img, "rb") as f:
                raw_before = f.read()
            check_same(blk_read(img), before, f"{what}: read-only read")
            with open(img, "rb") as f:
                check(f.read() == raw_before, f"{what}: a read-only open changed the file")
            ops = random_script(random.Random(71), size, 200)
            write_and_verify(img, ops, what, before)
            check(not qcow2_header_flags(img)[1] & 1, f"{what}: the dirty bit is still set")
    with tmpdir() as d:
        img = os.path.join(d, "snap.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, str(size))
        qemu_img("snapshot", "-c", "s1", img)
        args = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 128k", "-c", "sigraise 9", img]
        check(run(args, ok=None).returncode == -signal.SIGKILL, "qemu-io did not die")
        check(qcow2_header_flags(img)[1] & 1, "qemu-io left no dirty bit")
        with open(img, "rb") as f:
            raw_before = f.read()
        script = os.path.join(d, "script.txt")
        write_script(script, [("w", 0, 4096, 3), ("f",)])
        p = blktool("write", img, script, ok=(2,))
        err = p.stderr.decode(errors="replace")
        check("internal snapshots" in err and "qemu-img check -r all" in err,
              f"dirty image with snapshots: {err!r}")
        with open(img, "rb") as f:
            check(f.read() == raw_before, "a refused dirty image changed")


def test_crash_backing_discard_small_clusters():
    # Copy-up, discards and many metadata allocations in flight at the kill.
    need_qcow2()
    size = 8 * MiB
    rng = random.Random(42)
    ops = random_script(rng, size, 1200, kinds="wwwwzd", max_len=64 * KiB, flush_every=30)
    for cfg, kill_after, backing in [((), 200, True), (("cluster_size=4096",), 650, True),
                                     (("cluster_size=512",), 480, False),
                                     (("cluster_size=512", "refcount_bits=1"), 999, False),
                                     (("compat=0.10",), 321, True),
                                     (("lazy_refcounts=on", "cluster_size=1024"), 777, True)]:
        with tmpdir() as d:
            start, base = bytes(size), None
            if backing:
                base = os.path.join(d, "base.raw")
                start = source_raw(base, size, 43)
            crash_case(d, f"killed after {kill_after} ops {cfg} backing={backing}", cfg, ops,
                       kill_after, start, backing=base)


def main():
    def add_args(ap):
        ap.add_argument("--blktool", required=True)

    def setup(a):
        global BLKTOOL
        BLKTOOL = os.path.abspath(a.blktool)
        why = ensure_qemu_tools()
        if why:
            print(f"SKIP: {why}")
            return SKIP
        return None

    return run_main(globals(), add_args, setup)


if __name__ == "__main__":
    sys.exit(main())
