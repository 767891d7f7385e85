#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/migrate/ (seed_*):

    gen_migrate_corpus.py VMRUN GUEST_ELF OUTDIR

It plays the destination of a live migration for a real source (VMRUN
booting GUEST_ELF, e.g. tests/guest/hello.elf), records what the source
sends, then aborts (the source keeps its guest).  Seeds: the HELLO record
(the machine's description), the STATE record (the whole machine), a
stream of both with one small PAGES record between them, and hand-made
PAGES records, good and hostile.  Records are written as on the wire:
{u32 type, u32 length} little-endian, then the payload."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

CHALLENGE, HELLO, READY, REFUSE, PAGES, STATE, LOADED = 1, 2, 3, 4, 5, 6, 7
ABORT = 12


def rec(t, payload=b""):
    return struct.pack("<II", t, len(payload)) + payload


def read_exact(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return bytes(b)


def read_rec(s):
    t, n = struct.unpack("<II", read_exact(s, 8))
    return t, read_exact(s, n)


def pages(entries, fill=0x5a):
    body = struct.pack("<II", len(entries), 0) + b"".join(struct.pack("<Q", e) for e in entries)
    for i, e in enumerate(entries):
        if not e & 1:
            body += bytes([(fill + i) & 0xff]) * 4096
    return body


def main():
    vmrun, guest, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp()
    sock = os.path.join(tmp, "api.sock")
    src = subprocess.Popen([vmrun, "--kernel", guest, "--mem", "32M", "--api-sock", sock,
                            "--console", "none", "--timeout", "60"], stderr=subprocess.DEVNULL)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    for _ in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    ctl = subprocess.Popen([vmrun, "ctl", sock, "migrate", f"uri=tcp:127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn, _ = lst.accept()
    conn.sendall(rec(CHALLENGE, b"VMRUNMIG" + struct.pack("<IIII", 1, 1, 0, 0) + bytes(32)))
    t, hello = read_rec(conn)
    assert t == HELLO
    conn.sendall(rec(READY, bytes(32)))
    first_pages = None
    while True:
        t, p = read_rec(conn)
        if t == PAGES and first_pages is None:
            n = struct.unpack_from("<I", p)[0]
            entries = [struct.unpack_from("<Q", p, 8 + 8 * i)[0] for i in range(min(n, 2))]
            first_pages = pages(entries)
        if t == STATE:
            state = p
            break
    conn.sendall(rec(ABORT, b"seed capture"))
    conn.close()
    ctl.wait(timeout=30)
    src.terminate()
    src.wait(timeout=30)

    def save(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    save("seed_hello", rec(HELLO, hello))
    save("seed_state", rec(STATE, state))
    save("seed_stream", rec(HELLO, hello) + rec(PAGES, first_pages or pages([0x1000])) + rec(STATE, state))
    save("seed_pages_good", rec(PAGES, pages([0x1000, 0x2000 | 1, 0x3000])))
    save("seed_pages_past_ram", rec(PAGES, pages([0x1000, 0x7fff000])))
    save("seed_pages_unaligned", rec(PAGES, pages([0x1800])))
    save("seed_pages_short", rec(PAGES, pages([0x1000, 0x2000])[:-1]))
    save("seed_pages_count", rec(PAGES, struct.pack("<II", 100000, 0)))
    save("seed_hello_truncated", rec(HELLO, hello[: len(hello) // 2]))
    save("seed_abort", rec(ABORT, b"x\x1b[2Jy"))


if __name__ == "__main__":
    main()
