#!/usr/bin/env python3
"""`vmrun img` (src/snapshot/img.c) against qemu-img, the oracle.

Usage: img_tests.py --vmrun PATH TEST [TEST...]
       img_tests.py --list

Each TEST is one test_* function below (one ctest test each, label qcow2).
Exit 0 when all pass, 1 on a failure, 77 when qemu-img/qemu-io cannot be
had.  The helpers (running qemu-img and qemu-io, `qemu-img check` judged
strictly, `qemu-img convert -O raw` as the reference reader) come from
qcow2_tests.py, imported.  Nothing expected comes from vmrun: images made by
`vmrun img` are read and checked by qemu-img, data is written and verified
with qemu-io.
"""
import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcow2_tests as q  # noqa: E402
from qcow2_tests import check, qemu_img, qemu_io, qemu_check, oracle_raw, file_digest  # noqa: E402

VMRUN = None
MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40


def img(*args, ok=(0,), cwd=None):
    return q.run([VMRUN, "img"] + list(args), ok=ok, cwd=cwd)


def qinfo(path, chain=False):
    args = ["info", "--output=json"] + (["--backing-chain"] if chain else []) + [path]
    return json.loads(qemu_img(*args).stdout)


def stderr_of(p):
    return p.stderr.decode(errors="replace")


def one_line_error(p, what, words=()):
    """One error line; the block layer's own warnings (an I/O error it met)
    may come before it."""
    err = "\n".join(l for l in stderr_of(p).strip().splitlines()
                    if not l.startswith("vmrun: warning: "))
    check(err and "\n" not in err, f"{what}: want a one-line error, got {err!r}")
    for w in words:
        check(w in err, f"{what}: error {err!r} does not say {w!r}")


def no_temp_files(d, what):
    left = [n for n in os.listdir(d) if ".tmp-" in n]
    check(not left, f"{what}: temporary files left behind: {left}")


def has_own_data(path):
    """Whether the top image of @path holds any data (qemu-img map)."""
    m = json.loads(qemu_img("map", "--output=json", path).stdout)
    return [e for e in m if e.get("depth") == 0 and (e.get("data") or e.get("zero"))
            and e.get("present", True)]


# ------------------------------------------------------------------ create

def test_create_sizes():
    with q.tmpdir() as d:
        cases = [("1M", MiB), ("1G", GiB), ("3T", 3 * TiB), ("1536K", 1536 * 1024),
                 ("100000", 100352), ("65536", 65536), ("1024T", 1 << 50), ("513M", 513 * MiB)]
        for i, (arg, want) in enumerate(cases):
            path = os.path.join(d, f"c{i}.qcow2")
            img("create", path, arg)
            qemu_check(path, f"create {arg}")
            info = qinfo(path)
            check(info["format"] == "qcow2", f"create {arg}: format {info['format']}")
            check(info["virtual-size"] == want,
                  f"create {arg}: virtual size {info['virtual-size']}, want {want}")
            check(info["cluster-size"] == 65536, f"create {arg}: cluster size")
            spec = info["format-specific"]["data"]
            check(spec["compat"] == "1.1" and spec["refcount-bits"] == 16,
                  f"create {arg}: {spec}")
            check("backing-filename" not in info, f"create {arg}: has a backing file")
            if want <= GiB:
                check(oracle_raw(path) == bytes(want), f"create {arg}: not all zeroes")
        # The image is writable by qemu and stays clean.
        path = os.path.join(d, "c1.qcow2")
        qemu_io(path, "qcow2", "write -P 0x5a 0 1M", "write -P 0xa5 700M 64k")
        qemu_io(path, "qcow2", "read -P 0x5a 0 1M", "read -P 0xa5 700M 64k")
        qemu_check(path, "create 1G after qemu-io writes")
        no_temp_files(d, "create")


def test_create_backing():
    with q.tmpdir() as d:
        base = os.path.join(d, "base.qcow2")
        qemu_img("create", "-f", "qcow2", base, "64M")
        qemu_io(base, "qcow2", "write -P 0x11 0 1M", "write -P 0x22 40M 256k")
        raw = os.path.join(d, "base.raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(3 * MiB))
        os.makedirs(os.path.join(d, "sub"))
        cases = [
            # (FILE, -b as given, -F, size, base path, base format)
            ("ov1.qcow2", "base.qcow2", None, None, base, "qcow2"),
            ("ov2.qcow2", base, "qcow2", "128M", base, "qcow2"),
            ("sub/ov3.qcow2", "../base.qcow2", None, None, base, "qcow2"),
            ("ov4.qcow2", "base.raw", "raw", None, raw, "raw"),
            ("ov5.qcow2", "base.raw", None, "8M", raw, "raw"),
            ("ov6.qcow2", "ov1.qcow2", "qcow2", None, base, "qcow2"),  # a chain of 2
        ]
        for name, b, fmt, size, bpath, bfmt in cases:
            path = os.path.join(d, name)
            args = ["create", "-b", b] + (["-F", fmt] if fmt else []) + [path]
            img(*args + ([size] if size else []))
            what = f"create {' '.join(args[1:])}"
            qemu_check(path, what)
            info = qinfo(path)
            check(info["backing-filename"] == b, f"{what}: backing {info['backing-filename']}")
            want_full = b if b.startswith("/") else os.path.join(os.path.dirname(path), b)
            check(os.path.realpath(info["full-backing-filename"]) == os.path.realpath(want_full),
                  f"{what}: full backing {info['full-backing-filename']}")
            want_fmt = "qcow2" if b.endswith("qcow2") else "raw"
            check(info.get("backing-filename-format") == want_fmt,
                  f"{what}: backing format {info.get('backing-filename-format')}")
            base_data = oracle_raw(bpath, bfmt)
            want_size = q.virtual_size(bpath) if size is None else {"128M": 128 * MiB,
                                                                     "8M": 8 * MiB}[size]
            check(info["virtual-size"] == want_size, f"{what}: size {info['virtual-size']}")
            got = oracle_raw(path)
            n = min(len(got), len(base_data))
            check(got[:n] == base_data[:n] and got[n:] == bytes(len(got) - n),
                  f"{what}: the overlay does not read like its backing file")
        no_temp_files(d, "create -b")


# -------------------------------------------------------------------- info

def test_info_json():
    with q.tmpdir() as d:
        base = os.path.join(d, "base.raw")
        with open(base, "wb") as f:
            f.truncate(10 * MiB)
        mid = os.path.join(d, "mid.qcow2")
        qemu_img("create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw",
                 "-F", "raw", mid)
        top = os.path.join(d, "top.qcow2")
        img("create", "-b", "mid.qcow2", "-F", "qcow2", top, "20M")
        for path in (base, mid, top):
            mine = json.loads(img("info", path, "--json").stdout)
            theirs = qinfo(path)
            for key in ("filename", "format", "virtual-size", "cluster-size",
                        "backing-filename", "backing-filename-format", "full-backing-filename",
                        "dirty-flag"):
                check(mine.get(key) == theirs.get(key),
                      f"info --json {os.path.basename(path)}: {key}: {mine.get(key)!r}, "
                      f"qemu-img says {theirs.get(key)!r}")
            for key in ("compat", "compression-type", "refcount-bits", "corrupt"):
                got = mine.get("format-specific", {}).get("data", {}).get(key)
                want = theirs.get("format-specific", {}).get("data", {}).get(key)
                check(got == want, f"info --json {os.path.basename(path)}: format-specific "
                      f"{key}: {got!r}, qemu-img says {want!r}")
            chain = qinfo(path, chain=True)
            if isinstance(chain, dict):
                chain = [chain]
            mc = mine["backing-chain"]
            check(len(mc) == len(chain), f"info --json {path}: chain of {len(mc)}, qemu-img "
                  f"{len(chain)}")
            for a, b in zip(mc, chain):
                for key in ("format", "virtual-size"):
                    check(a[key] == b[key], f"info --json {path}: chain {key} {a[key]} vs "
                          f"{b[key]}")
                check(os.path.realpath(a["filename"]) == os.path.realpath(b["filename"]),
                      f"info --json {path}: chain file {a['filename']} vs {b['filename']}")
        text = img("info", top).stdout.decode()
        for want in ("file format: qcow2", "virtual size: 20971520", "cluster size: 65536",
                     "backing file: mid.qcow2", "backing file format: qcow2",
                     "image: " + base, "file format: raw"):
            check(want in text, f"info {top}: {want!r} missing from:\n{text}")


def test_info_non_utf8():
    """Names that are not UTF-8 (paths are bytes): shown made valid, each
    byte that is not part of a UTF-8 character as \\xHH (as Python's
    backslashreplace), and no level of the chain left out."""
    with q.tmpdir() as d:
        raw_name = b"base\xff\xfe-\xc3\xa9.raw"
        name = os.fsdecode(raw_name)   # surrogateescape: the same bytes on exec
        shown = "base\\xff\\xfe-\u00e9.raw"
        base = os.path.join(d, name)
        with open(base, "wb") as f:
            f.truncate(MiB)
        top = os.path.join(d, "top.qcow2")
        qemu_img("create", "-f", "qcow2", "-b", name, "-F", "raw", top)
        p = img("info", top, "--json")
        mine = json.loads(p.stdout)
        check(mine.get("backing-filename") == shown,
              f"info --json: backing-filename {mine.get('backing-filename')!r}, want {shown!r}")
        check(mine.get("full-backing-filename") == os.path.join(d, shown),
              f"info --json: full-backing-filename {mine.get('full-backing-filename')!r}")
        chain = mine.get("backing-chain", [])
        check(len(chain) == 2 and chain[1].get("filename") == os.path.join(d, shown)
              and chain[1].get("format") == "raw" and chain[1].get("virtual-size") == MiB,
              f"info --json: chain {chain}")
        # The file itself, by its non-UTF-8 name: its info, not "out of memory".
        out = img("info", base).stdout.decode()
        check("image: " + os.path.join(d, shown) in out and "virtual size: 1048576" in out,
              f"info on a non-UTF-8 name: {out!r}")
        mine = json.loads(img("info", base, "--json").stdout)
        check(mine.get("filename") == os.path.join(d, shown) and
              len(mine.get("backing-chain", [])) == 1, f"info --json on a non-UTF-8 name: {mine}")
        text = img("info", top).stdout.decode()
        check("backing file: " + shown in text and "backing file (level 1)" in text,
              f"info: {text}")


# ---------------------------------------------------------------- snapshot

def test_snapshot():
    with q.tmpdir() as d:
        path = os.path.join(d, "disk.qcow2")
        img("create", path, "256M")
        qemu_io(path, "qcow2", "write -P 0x11 0 1M", "write -P 0x22 100M 192k",
                "write -z 1M 64k")
        before = oracle_raw(path)
        p = img("snapshot", path)
        base1 = path + ".base-1"
        check(p.stdout.decode().strip() == base1, f"snapshot prints {p.stdout!r}")
        check(stat.S_IMODE(os.stat(base1).st_mode) == 0o444,
              f"base mode {oct(os.stat(base1).st_mode)}")
        base_sum = file_digest(base1)
        qemu_check(path, "snapshot: top")
        qemu_check(base1, "snapshot: base")
        info = qinfo(path)
        check(info["backing-filename"] == "disk.qcow2.base-1"
              and info["backing-filename-format"] == "qcow2"
              and info["virtual-size"] == 256 * MiB, f"snapshot: top info {info}")
        check(oracle_raw(path) == before, "snapshot: the top does not read like the image did")
        check(not has_own_data(path), "snapshot: the new top is not empty")
        # New writes go to the top only.
        qemu_io(path, "qcow2", "write -P 0x33 64k 64k", "write -P 0x44 200M 1M")
        qemu_io(path, "qcow2", "read -P 0x33 64k 64k", "read -P 0x44 200M 1M",
                "read -P 0x11 0 64k", "read -P 0x22 100M 192k")
        check(file_digest(base1) == base_sum, "snapshot: the base changed")
        check(oracle_raw(base1) == before, "snapshot: the base reads differently")
        qemu_check(path, "snapshot: top after writes")
        # A second snapshot stacks: base-2 backed by base-1.
        mid = oracle_raw(path)
        img("snapshot", path)
        base2 = path + ".base-2"
        check(qinfo(base2)["backing-filename"] == "disk.qcow2.base-1", "snapshot 2: base-2 backing")
        check(qinfo(path)["backing-filename"] == "disk.qcow2.base-2", "snapshot 2: top backing")
        check(oracle_raw(path) == mid, "snapshot 2: the top reads differently")
        check(len(json.loads(img("info", path, "--json").stdout)["backing-chain"]) == 3,
              "snapshot 2: chain of 3")
        for f in (path, base1, base2):
            qemu_check(f, f"snapshot 2: {f}")
        # A raw image: the overlay's backing format is raw.
        raw = os.path.join(d, "disk.raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(2 * MiB))
        raw_data = oracle_raw(raw, "raw")
        img("snapshot", raw)
        info = qinfo(raw)
        check(info["format"] == "qcow2" and info["backing-filename-format"] == "raw"
              and info["virtual-size"] == 2 * MiB, f"snapshot raw: {info}")
        check(oracle_raw(raw) == raw_data, "snapshot raw: reads differently")
        qemu_check(raw, "snapshot raw: top")
        no_temp_files(d, "snapshot")


# ------------------------------------------------------------------ commit

def test_commit():
    with q.tmpdir() as d:
        path = os.path.join(d, "disk.qcow2")
        img("create", path, "256M")
        qemu_io(path, "qcow2", "write -P 0x11 0 2M", "write -P 0x22 100M 192k")
        img("snapshot", path)
        base = path + ".base-1"
        qemu_io(path, "qcow2", "write -P 0x33 64k 64k", "write -P 0x44 200M 1M",
                "write -z 100M 64k", "write -P 0x55 255M 4k")
        want = oracle_raw(path)
        p = img("commit", path)
        check(not stderr_of(p).strip(), f"commit: stderr {stderr_of(p)!r}")
        check(oracle_raw(base) == want, "commit: the base does not hold what the top showed")
        check(oracle_raw(path) == want, "commit: the top reads differently after commit")
        check(not has_own_data(path), "commit: the top is not empty after commit")
        info = qinfo(path)
        check(info["backing-filename"] == "disk.qcow2.base-1"
              and info["backing-filename-format"] == "qcow2", f"commit: top info {info}")
        check(stat.S_IMODE(os.stat(base).st_mode) == 0o444,
              f"commit: base mode {oct(os.stat(base).st_mode)} not restored")
        qemu_check(base, "commit: base")
        qemu_check(path, "commit: top")
        # Commit again: nothing to do, nothing changes.
        s = file_digest(base)
        img("commit", path)
        check(file_digest(base) == s, "commit of an empty overlay changed the base")
        # A raw base, a top made by qemu-img with 4 KiB clusters.
        raw = os.path.join(d, "r.raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(4 * MiB))
        top = os.path.join(d, "r.qcow2")
        qemu_img("create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "r.raw", "-F", "raw",
                 top)
        qemu_io(top, "qcow2", "write -P 0x66 4k 12k", "write -z 1M 8k", "write -P 0x77 4092k 4k")
        want = oracle_raw(top)
        img("commit", top)
        check(oracle_raw(raw, "raw") == want, "commit raw: the base differs")
        check(oracle_raw(top) == want, "commit raw: the top differs")
        qemu_check(top, "commit raw: top")
        no_temp_files(d, "commit")


# ------------------------------------------------------------------ errors

def test_errors():
    with q.tmpdir() as d:
        path = os.path.join(d, "disk.qcow2")
        missing = os.path.join(d, "nope.qcow2")
        for args in (["info", missing], ["snapshot", missing], ["commit", missing],
                     ["create", "-b", missing, os.path.join(d, "x.qcow2")]):
            p = img(*args, ok=(4,))
            one_line_error(p, " ".join(args), ["nope.qcow2"])
        check(not os.path.exists(os.path.join(d, "x.qcow2")), "create -b missing left a file")
        # Usage errors: 2.
        for args in ([], ["frobnicate"], ["create"], ["create", path], ["create", path, "abc"],
                     ["create", path, "0"], ["create", path, "-1"], ["create", path, "1X"],
                     ["create", path, "4096T"], ["create", "-F", "vmdk", "-b", "a", path],
                     ["create", "-F", "raw", path, "1M"], ["info"], ["info", "--yaml", path],
                     ["snapshot"], ["commit"], ["snapshot", "a", "b"]):
            p = img(*args, ok=(2,))
            check(stderr_of(p).strip(), f"img {args}: no message")
        check(not os.path.exists(path), "a refused create left a file")
        # Existing target: refused, untouched.
        img("create", path, "16M")
        qemu_io(path, "qcow2", "write -P 0x42 0 64k")
        s = file_digest(path)
        p = img("create", path, "32M", ok=(4,))
        one_line_error(p, "create over an existing file", ["exists"])
        check(file_digest(path) == s, "create over an existing file changed it")
        # Commit of an image without a backing file.
        p = img("commit", path, ok=(4,))
        one_line_error(p, "commit without backing", ["backing"])
        # In use: the block layer's flock, held by another process.
        holder = subprocess.Popen([sys.executable, "-c",
                                   "import fcntl,sys; f=open(sys.argv[1]); "
                                   "fcntl.flock(f, fcntl.LOCK_EX); print('x', flush=True); "
                                   "sys.stdin.read()", path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            holder.stdout.readline()
            p = img("snapshot", path, ok=(4,))
            one_line_error(p, "snapshot in use", ["in use"])
            check(not os.path.exists(path + ".base-1"), "snapshot in use made a base")
            check(file_digest(path) == s, "snapshot in use changed the image")
        finally:
            holder.stdin.close()
            holder.wait()
        img("snapshot", path)
        s_top = file_digest(path)
        for f in (path, path + ".base-1"):
            holder = subprocess.Popen([sys.executable, "-c",
                                       "import fcntl,sys; f=open(sys.argv[1]); "
                                       "fcntl.flock(f, fcntl.LOCK_SH); print('x', flush=True); "
                                       "sys.stdin.read()", f],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            try:
                holder.stdout.readline()
                p = img("commit", path, ok=(4,))
                one_line_error(p, f"commit with {os.path.basename(f)} in use", ["in use"])
                check(file_digest(path) == s_top, "commit in use changed the top")
            finally:
                holder.stdin.close()
                holder.wait()
        # Compressed clusters are read by the block layer's one qcow2
        # parser, so they commit too (decompressed into the base).
        top = os.path.join(d, "c.qcow2")
        img("create", "-b", "disk.qcow2", top)
        qemu_io(top, "qcow2", "write -c -P 0x99 0 64k", "write -P 0x98 128k 64k")
        want = oracle_raw(top)
        img("commit", top)
        check(oracle_raw(path) == want, "commit compressed: the base does not hold the top's data")
        qemu_check(path, "commit compressed: base")
        check(not has_own_data(top), "commit compressed: the top is not empty")
        crafted_commits(d)
        # Not an image at all: info says raw; a directory is refused.
        p = img("snapshot", d, ok=(4,))
        one_line_error(p, "snapshot of a directory")
        no_temp_files(d, "errors")


def rusage_run(args):
    """Run @args; its exit status and peak RSS in KiB (wait4's rusage)."""
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.execv(args[0], args)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss


def crafted_commits(d):
    """Overlays crafted as an attacker would (issue 14): 2 MiB clusters and
    an L1 table longer than the block layer accepts, whose last entry maps
    a virtual offset that wraps around 2^64 to 0, and an L1 of 2^32 - 1
    entries.  `img commit` must refuse both before writing anything (the
    old private parser wrote the cluster at offset 0 of the base, and
    allocated and read 32 GiB for the second)."""
    base = os.path.join(d, "victim.raw")
    with open(base, "wb") as f:
        f.write(bytes([0x5a]) * (4 * MiB))
    before = file_digest(base)
    cs = 2 * MiB
    for name, l1_entries in (("wrap.qcow2", (1 << 25) + 1), ("huge.qcow2", (1 << 32) - 1)):
        top = os.path.join(d, name)
        qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "victim.raw",
                 "-F", "raw", top, "4M")
        l1_off = 8 * cs
        with open(top, "r+b") as f:
            hdr = bytearray(f.read(104))
            check(hdr[:4] == b"QFI\xfb" and int.from_bytes(hdr[20:24], "big") == 21,
                  f"{name}: qemu-img made {hdr[:24]!r}")
            hdr[36:40] = l1_entries.to_bytes(4, "big")
            hdr[40:48] = l1_off.to_bytes(8, "big")
            f.seek(0)
            f.write(hdr)
            if l1_entries < (1 << 26):
                # L1 entry 2^25 maps virtual offset 2^25 * 2^18 * 2 MiB =
                # 2^64: the wrap.  Its L2 table's first entry: a data
                # cluster full of 0xee.
                l2_off = l1_off + ((l1_entries * 8 + cs - 1) // cs) * cs
                data_off = l2_off + cs
                f.seek(l1_off + (l1_entries - 1) * 8)
                f.write(((1 << 63) | l2_off).to_bytes(8, "big"))
                f.seek(l2_off)
                f.write(((1 << 63) | data_off).to_bytes(8, "big"))
                f.seek(data_off)
                f.write(bytes([0xee]) * cs)
        status, rss_kib = rusage_run([VMRUN, "img", "commit", top])
        check(status == 4, f"crafted commit {name}: exit status {status}, want 4")
        p = img("commit", top, ok=(4,))
        one_line_error(p, f"crafted commit {name}", ["L1 table"])
        check(rss_kib < 256 * 1024, f"crafted commit {name}: peak RSS {rss_kib} KiB")
        check(file_digest(base) == before, f"crafted commit {name} changed the base")


# ------------------------------------------------- failures and crashes

def traced(syscall, action, when, *args):
    """vmrun img ARGS under strace, @syscall's @when-th call made to fail
    (action "error=EIO") or to kill the process at its entry ("signal=KILL")."""
    cmd = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + syscall,
           "-e", f"inject={syscall}:{action}:when={when}", VMRUN, "img"] + list(args)
    return q.run(cmd, ok=None)


def need_strace():
    if not shutil.which("strace"):
        raise q.Skip("strace is not installed (it injects the failures)")
    p = q.run(["strace", "-qq", "-o", "/dev/null", "-e", "trace=getpid", "-e",
               "inject=getpid:error=EIO", "true"], ok=None)
    if p.returncode != 0:
        raise q.Skip("strace cannot trace here: " + stderr_of(p).strip()[-200:])


def judge_after_fault(d, path, before, what, crashed, base_leaks_ok=False):
    """@path must read as @before, through a clean image; a base it names is
    base-1 and clean (leaked clusters allowed where @base_leaks_ok: a crash
    in the middle of block-layer writes, as the backend documents)."""
    check(os.path.exists(path), f"{what}: FILE is missing")
    check(oracle_raw(path) == before, f"{what}: FILE reads differently")
    qemu_check(path, f"{what}: FILE")
    info = qinfo(path)
    if "backing-filename" in info:
        check(info["backing-filename"] == os.path.basename(path) + ".base-1",
              f"{what}: FILE backed by {info['backing-filename']}")
        qemu_check(path + ".base-1", f"{what}: base", allow_leaks=base_leaks_ok)
    if not crashed:
        no_temp_files(d, what)


def test_snapshot_faults():
    need_strace()
    # Every step of the snapshot, made to fail, then to crash.
    steps = [("fsync", 1), ("link", 1), ("fsync", 2), ("rename", 1), ("fsync", 3),
             ("chmod", 1)]
    for syscall, when in steps:
        for action in ("error=EIO", "signal=KILL"):
            with q.tmpdir() as d:
                path = os.path.join(d, "disk.qcow2")
                img("create", path, "64M")
                qemu_io(path, "qcow2", "write -P 0x11 0 128k", "write -P 0x22 60M 64k")
                before = oracle_raw(path)
                what = f"snapshot, {syscall} #{when} {action}"
                p = traced(syscall, action, when, "snapshot", path)
                crashed = action.startswith("signal")
                if crashed:
                    check(p.returncode != 0, f"{what}: exit 0 though killed")
                else:
                    check(p.returncode == 4, f"{what}: exit {p.returncode}, want 4: "
                          f"{stderr_of(p)}")
                    one_line_error(p, what)
                judge_after_fault(d, path, before, what, crashed)
                # Whatever happened, a snapshot can be taken (again) and is right.
                for n in os.listdir(d):
                    if ".tmp-" in n:
                        os.unlink(os.path.join(d, n))
                img("snapshot", path)
                check(oracle_raw(path) == before, f"{what}: a later snapshot reads differently")
                qemu_check(path, f"{what}: a later snapshot")


def test_commit_faults():
    need_strace()
    for syscall, when, action in [("pwrite64", 3, "error=EIO"), ("pwrite64", 3, "signal=KILL"),
                                  ("pwrite64", 20, "signal=KILL"),
                                  ("fdatasync", 1, "error=EIO"), ("fdatasync", 2, "signal=KILL"),
                                  ("rename", 1, "error=EIO"), ("rename", 1, "signal=KILL")]:
        with q.tmpdir() as d:
            path = os.path.join(d, "disk.qcow2")
            img("create", path, "64M")
            qemu_io(path, "qcow2", "write -P 0x11 0 1M")
            img("snapshot", path)
            qemu_io(path, "qcow2", "write -P 0x33 64k 512k", "write -P 0x44 30M 1M",
                    "write -z 900k 64k")
            want = oracle_raw(path)
            what = f"commit, {syscall} #{when} {action}"
            p = traced(syscall, action, when, "commit", path)
            crashed = action.startswith("signal")
            if crashed:
                check(p.returncode != 0, f"{what}: exit 0 though killed")
            else:
                check(p.returncode == 4, f"{what}: exit {p.returncode}, want 4: {stderr_of(p)}")
                one_line_error(p, what)
            judge_after_fault(d, path, want, what, crashed, base_leaks_ok=True)
            for n in os.listdir(d):
                if ".tmp-" in n:
                    os.unlink(os.path.join(d, n))
            img("commit", path)
            check(oracle_raw(path + ".base-1") == want, f"{what}: commit again: base differs")
            check(oracle_raw(path) == want, f"{what}: commit again: top differs")
            qemu_check(path, f"{what}: top after commit again")


def main():
    def add_args(ap):
        ap.add_argument("--vmrun", required=True)

    def setup(a):
        global VMRUN
        VMRUN = os.path.abspath(a.vmrun)
        why = q.ensure_qemu_tools()
        if why:
            print(f"SKIP: {why}")
            return q.SKIP
        return None

    return q.run_main(globals(), add_args, setup)


if __name__ == "__main__":
    sys.exit(main())
