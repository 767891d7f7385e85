#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed_* inputs of the fuzz targets' corpora (tests/fuzz/README.md).

    gen_seeds.py CORPUS_DIR [TARGET...]

writes CORPUS_DIR/<target>/seed_* for each target named (default: all of
virtq virtio_blk virtio_net virtio_pci qcow2 img boot initrd control insn config).
Each seed
follows the input layout its target's header comment describes; the qcow2 and
img seeds need qemu-img and qemu-io (Debian: qemu-utils), the bzImage seeds
xz, lzma, zstd, lz4 and bzip2 on PATH.  Rerun when a layout changes.
"""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

TARGETS = ["virtq", "virtio_blk", "virtio_net", "virtio_pci", "qcow2", "img", "boot", "initrd",
           "control", "insn", "config"]


def gz(data, level=9):
    """gzip with a fixed timestamp, so that the seeds come out the same each time."""
    return gzip.compress(data, level, mtime=0)


def put(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


NEXT, WRITE, INDIRECT = 1, 2, 4


class Ram:
    """A guest RAM image from address 0, grown as written."""

    def __init__(self):
        self.b = bytearray()

    def put(self, gpa, data):
        if len(self.b) < gpa + len(data):
            self.b.extend(b"\0" * (gpa + len(data) - len(self.b)))
        self.b[gpa:gpa + len(data)] = data

    def ring(self, base, size, descs, heads, avail_flags=0, used_event=0):
        """Queue rings as the targets lay them out from @base: descriptor
        table, avail ring right after it, used ring after that."""
        for i, dsc in enumerate(descs):
            self.put(base + 16 * i, dsc)
        avail = base + 16 * size
        self.put(avail, struct.pack("<HH", avail_flags, len(heads)))
        for i, h in enumerate(heads):
            self.put(avail + 4 + 2 * i, struct.pack("<H", h))
        self.put(avail + 4 + 2 * size, struct.pack("<H", used_event))


# ---- virtq ----

def gen_virtq(d):
    def seed(name, log2, flags, pops, start, ram):
        put(d, name, bytes([(log2 << 4) | flags, pops - 1]) + struct.pack("<H", start) + bytes(ram.b))

    r = Ram()  # size 8: desc 0..128, avail 128.., data at 0x1000
    r.ring(0, 8, [desc(0x1000, 16, NEXT, 1), desc(0x1100, 512, NEXT | WRITE, 2),
                  desc(0x1400, 1, WRITE, 0)], [0])
    r.put(0x1000, struct.pack("<IIQ", 0, 0, 8))
    seed("chain3", 3, 0, 4, 0, r)
    r = Ram()
    r.ring(0, 4, [desc(0x2000, 48, INDIRECT, 0), desc(0x1000, 64, 0, 0)], [0, 1])
    r.put(0x2000, desc(0x1000, 16, NEXT, 1) + desc(0x1100, 100, NEXT | WRITE, 2) +
          desc(0x1200, 1, WRITE, 0))
    seed("indirect", 2, 3, 4, 0, r)
    r = Ram()
    r.ring(0, 4, [desc(0x1000, 16, NEXT, 1), desc(0x1000, 16, NEXT, 0)], [0])
    seed("loop", 2, 0, 2, 0, r)
    r = Ram()
    r.ring(0, 4, [desc(0xfffffffffffff000, 0x2000, 0, 0), desc(0x1000, 0xffffffff, WRITE, 0)], [0, 1])
    seed("out_of_range", 2, 0, 3, 0, r)
    r = Ram()
    r.ring(0, 256, [desc(0x4000 + 16 * i, 16, NEXT if i < 255 else 0, i + 1) for i in range(256)], [0])
    seed("long_chain", 8, 2, 2, 0, r)
    r = Ram()
    r.ring(0, 2, [desc(0x1000, 10, 0, 0), desc(0x1100, 10, WRITE, 0)], [0, 1], used_event=0xffff)
    seed("wrap", 1, 2, 3, 0xffff, r)


# ---- virtio devices (fuzz_virtio_dev.h) ----

def dev_input(features, qcfg, program, ram):
    out = struct.pack("<Q", features) + bytes(qcfg) + bytes([len(program)])
    for op, arg, val in program:
        out += struct.pack("<BBI", op, arg, val)
    return out + bytes(ram.b)


def qbase(q):
    return q * 4096


def gen_virtio_blk(d):
    F_INDIRECT, F_EVENT_IDX = 1 << 28, 1 << 29
    ow = WRITE

    def req(name, flags, typ, sector, data_out=b"", in_len=0, features=0, program=None, extra=None):
        r = Ram()
        descs = [desc(0x1000, 16 + len(data_out), NEXT, 1)]
        r.put(0x1000, struct.pack("<IIQ", typ, 0, sector) + data_out)
        if in_len:
            descs.append(desc(0x1800, in_len, ow | NEXT, len(descs) + 1))
        descs.append(desc(0x1c00, 1, ow, 0))
        r.ring(qbase(0), 16, descs, [0])
        if extra:
            extra(r)
        put(d, name, bytes([flags]) + dev_input(features, [4], program or [], r))

    req("read", 0, 0, 2, in_len=1024)
    req("write", 0, 1, 4, data_out=b"\x5a" * 1024)
    req("write_ro", 1, 1, 4, data_out=b"\x5a" * 512)
    req("flush", 0, 4, 0)
    req("flush_unsafe", 2, 4, 0)
    req("get_id", 0, 8, 0, in_len=20)
    req("discard", 0, 11, 0, data_out=struct.pack("<QII", 8, 16, 0))
    req("write_zeroes", 0, 13, 0, data_out=struct.pack("<QII", 8, 16, 1))
    req("past_end", 0, 0, 127, in_len=1024)
    req("unknown_type", 0, 99, 0)
    req("read_reset", 0, 0, 0, in_len=512,
        program=[(0, 0, 0), (1, 0x70 // 4, 0), (3, 0, 0)])
    req("event_idx", 0, 0, 0, in_len=512, features=F_EVENT_IDX | F_INDIRECT,
        program=[(0, 0, 0), (2, 0x60 // 4, 0), (1, 0x64 // 4, 1), (0, 0, 0)])
    # An indirect chain: header, data, status in a table.
    r = Ram()
    r.ring(qbase(0), 8, [desc(0x1000, 48, INDIRECT, 0)], [0])
    r.put(0x1000, desc(0x1100, 16, NEXT, 1) + desc(0x1200, 512, ow | NEXT, 2) + desc(0x1400, 1, ow, 0))
    r.put(0x1100, struct.pack("<IIQ", 0, 0, 1))
    put(d, "indirect", bytes([0]) + dev_input(F_INDIRECT, [3], [], r))


def gen_virtio_net(d):
    F_CSUM, F_HOST_TSO4, F_MRG, F_CTRL, F_MQ = 1 << 0, 1 << 11, 1 << 15, 1 << 17, 1 << 22
    F_GUEST_CSUM = 1 << 1

    def net_hdr(flags=0, gso=0, hdr_len=0, gso_size=0, csum_start=0, csum_off=0):
        return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, csum_start, csum_off, 0)

    frame = bytes.fromhex("ffffffffffff021122334455" "0800") + b"\x45" + b"\0" * 45

    def tx(name, hdr, features=0, program=None, split=False):
        r = Ram()
        if split:
            descs = [desc(0x5000, 12, NEXT, 1), desc(0x5100, len(frame), 0, 0)]
            r.put(0x5000, hdr)
            r.put(0x5100, frame)
        else:
            descs = [desc(0x5000, 12 + len(frame), 0, 0)]
            r.put(0x5000, hdr + frame)
        r.ring(qbase(1), 8, descs, [0])
        put(d, name, bytes([0]) + dev_input(features, [3, 3], program or [], r))

    tx("tx", net_hdr())
    tx("tx_split", net_hdr(), split=True)
    tx("tx_csum", net_hdr(1, 0, 0, 0, 14, 16), F_CSUM)
    tx("tx_tso4", net_hdr(1, 1, 54, 1448, 34, 16), F_CSUM | F_HOST_TSO4)
    tx("tx_bad_gso", net_hdr(0, 0x85, 0xffff, 0xffff, 0xffff, 0xffff), F_CSUM | F_HOST_TSO4)

    def rx(name, features, nbufs, buflen, program):
        r = Ram()
        descs = [desc(0x6000 + 0x800 * i, buflen, WRITE, 0) for i in range(nbufs)]
        r.ring(qbase(0), 8, descs, list(range(nbufs)))
        r.put(0x5000, net_hdr() + frame)  # what op 3 (arg 0) sends
        put(d, name, bytes([0]) + dev_input(features, [3, 3], program, r))

    rx("rx", 0, 2, 1526, [(0, 0, 0), (3, 0, 12 + len(frame)), (0, 0, 0)])
    rx("rx_mrg", F_MRG | F_GUEST_CSUM, 4, 30, [(0, 0, 0), (3, 0, 12 + len(frame))])
    rx("rx_short", 0, 1, 8, [(0, 0, 0), (3, 0, 12 + len(frame))])
    rx("tap_gone", 0, 1, 1526, [(0, 0, 0), (3, 2, 0), (0, 1, 0), (3, 0, 40)])

    # The control queue (queue 4 with two pairs): MQ_VQ_PAIRS_SET 2, then a bad class.
    r = Ram()
    r.ring(qbase(4), 8, [desc(0x5000, 2, NEXT, 1), desc(0x5010, 2, NEXT, 2), desc(0x5020, 1, WRITE, 0),
                         desc(0x5100, 2, NEXT, 4), desc(0x5020, 1, WRITE, 0)], [0, 3])
    r.put(0x5000, bytes([4, 0]))
    r.put(0x5010, struct.pack("<H", 2))
    r.put(0x5100, bytes([99, 7]))
    put(d, "ctrl_mq", bytes([1]) + dev_input(F_CTRL | F_MQ, [3] * 5, [(0, 4, 0)], r))


# ---- qcow2 images (qemu-img, qemu-io) ----


# ---- virtio-pci (fuzz_virtio_pci.c) ----

# fuzz_virtio_pci.c's program ops (op % 16) and common_regs[] indices.
P_CFG_RD, P_CFG_WR, P_CF8, P_CFC_RD, P_CFC_WR, P_BAR0_RD, P_BAR0_WR, P_BAR1 = range(8)
P_WIN, P_NOTIFY, P_COMMON, P_CFGCAP, P_MSIX_CTL, P_WALK, P_QUIESCE, P_ISR = range(8, 16)
C_DFSELECT, C_DF, C_GFSELECT, C_GF, C_MSIX, C_NUMQ, C_STATUS, C_CFGGEN = range(8)
C_QSELECT, C_QSIZE, C_QMSIX, C_QENABLE, C_QNOFF, C_DESCLO, C_DESCHI = range(8, 15)
C_AVAILLO, C_AVAILHI, C_USEDLO, C_USEDHI = range(15, 19)
W1, W2, W4, W8 = 0, 1, 2, 3  # arg & 3 of the BAR and port ops
CW1, CW2, CW4 = 1, 2, 4      # arg & 7 of the configuration ops


def pci_input(flags, program, ram=None, features=1 << 32, qlog=4, rings=(0, 0x100, 0x200)):
    out = bytes([flags]) + struct.pack("<QB3H", features, qlog, *rings) + bytes([len(program)])
    for op, arg, off, val in program:
        out += struct.pack("<BBHI", op, arg, off, val)
    return out + (bytes(ram.b) if ram else b"")


def gen_virtio_pci(d):
    F_EVENT_IDX = 1 << 29
    NO_BRINGUP, MSIX, FIRMWARE = 4, 8, 16
    BAR0, BAR1 = 0x10, 0x14

    def blk_ram(typ=0, sector=0, data_len=512):
        """One virtio-blk request in a 16-entry queue at the bring-up's rings."""
        r = Ram()
        descs = [desc(0x1000, 16, NEXT, 1)]
        r.put(0x1000, struct.pack("<IIQ", typ, 0, sector))
        if data_len:
            descs.append(desc(0x1800, data_len, (WRITE if typ == 0 else 0) | NEXT, 2))
        descs.append(desc(0x1c00, 1, WRITE, 0))
        r.ring(0, 16, descs, [0])
        return r

    notify = (P_NOTIFY, 0, 0, 0)
    put(d, "read_intx", pci_input(0, [notify, (P_CFG_RD, CW2, 0x06, 0), (P_ISR, 0, 0, 0),
                                      (P_CFG_RD, CW2, 0x06, 0)], blk_ram()))
    put(d, "write_firmware", pci_input(FIRMWARE, [notify, (P_ISR, 0, 0, 0)],
                                       blk_ram(1, 3, 1024)))
    put(d, "read_ro_unsafe", pci_input(1 | 2, [notify], blk_ram(1, 0, 512)))
    put(d, "msix", pci_input(MSIX, [
        notify, (P_BAR1, W8, 0x800, 0),                       # the PBA
        (P_BAR1, 16 | W4, 0x1c, 1),                            # mask vector 1
        (P_COMMON, 0, C_QENABLE, 0), notify,                   # pending while masked
        (P_BAR1, W4, 0x800, 0), (P_BAR1, 16 | W4, 0x1c, 0),    # unmask: delivered
        (P_MSIX_CTL, 0, 0, 0xc000), notify, (P_MSIX_CTL, 0, 0, 0x8000),  # function mask
        (P_BAR1, W4, 0x10, 0), (P_BAR1, W8, 0x18, 0), (P_BAR1, W2, 0x10, 0),
        (P_MSIX_CTL, 0, 0, 0)], blk_ram(8, 0, 20), features=(1 << 32) | F_EVENT_IDX))
    put(d, "bar_sizing", pci_input(NO_BRINGUP, [
        (P_CFG_WR, CW4, BAR0, 0xffffffff), (P_CFG_RD, CW4, BAR0, 0),
        (P_CFG_WR, CW4, BAR1, 0xffffffff), (P_CFG_RD, CW4, BAR1, 0),
        (P_CFG_WR, CW4, BAR0, 0xe0040000), (P_CFG_WR, CW4, BAR1, 0xe0020000),
        (P_CFG_WR, CW2, 0x04, 0x6), (P_BAR0_RD, W2, 0x12, 0),
        (P_CFG_WR, CW4, BAR1, 0xe0041000),                     # onto BAR0: refused
        (P_BAR1, W4, 0, 0), (P_CFG_WR, CW4, BAR0, 0x00100000),  # onto RAM: refused
        (P_CFG_WR, CW4, BAR1, 0xe00ff000),                     # the window's last page
        (P_BAR1, 16 | W8, 0, 0xfee00000), (P_CFG_WR, CW4, BAR0, 0xe00fe000),  # BAR0 past the end
        (P_CFG_WR, CW2, BAR0 + 2, 0xe004), (P_CFG_WR, CW1, BAR0 + 1, 0xff),  # partial writes
        (P_CFG_WR, CW2, 0x04, 0), (P_WIN, W4, 0, 0x40000),
        (P_CFG_WR, CW2, 0x04, 0x402), (P_WIN, 16 | W4, 0, 0x40014)]))
    put(d, "cf8_cfc", pci_input(NO_BRINGUP, [
        (P_CF8, 0x80 | W4, 0, 0x00), (P_CFC_RD, W4, 0, 0), (P_CFC_RD, W1, 3, 0),
        (P_CFC_RD, W2, 2, 0), (P_CFC_RD, W4, 1, 0),            # unaligned, past the port
        (P_CF8, 0x80 | W4, 0, 0x34), (P_CFC_RD, W1, 0, 0),
        (P_CF8, 0x80 | W4, 0, 0x04), (P_CFC_WR, W2, 0, 0x0406), (P_CFC_RD, W4, 0, 0),
        (P_CF8, W4, 0, 0x80000000), (P_CFC_RD, W4, 0, 0),     # the host bridge
        (P_CF8, W4, 0, 0x80010000), (P_CFC_RD, W4, 0, 0),     # bus 1
        (P_CF8, W4, 0, 0x80000100), (P_CFC_RD, W4, 0, 0),     # function 1
        (P_CF8, W4, 0, 0x0000f800), (P_CFC_RD, W4, 0, 0),     # disabled, slot 31
        (P_CF8, (3 << 2) | W1, 0, 0x01), (P_CF8, W2, 0, 0),    # byte write to 0xCFB
        (P_CF8, W8, 0, 0), (P_CFC_WR, W8, 0, 0)]))
    put(d, "config_widths", pci_input(0, [
        (P_WALK, 0, 0, 0), (P_CFG_RD, CW4, 0x41, 0), (P_CFG_RD, CW2, 0xff, 0),
        (P_CFG_RD, CW4, 0xfe, 0), (P_CFG_RD, 3, 0x40, 0), (P_CFG_RD, 0, 0, 0),
        (P_CFG_RD, CW4, 0x102, 0), (P_CFG_WR, CW4, 0x00, 0xffffffff),  # read-only IDs
        (P_CFG_WR, CW4, 0x3c, 0xffffffff), (P_CFG_WR, CW4, 0x40, 0xffffffff),
        (P_CFG_WR, CW1 | 8, 0x04, 0x06), (P_CFG_RD, CW4 | 8, 0x00, 0),  # the host bridge
        (P_CFG_RD, CW4 | 16, 0x00, 0), (P_CFG_WR, CW4 | 24, 0x04, 2),  # absent slots
        (P_WALK, 0, 0, 0)]))
    put(d, "cfg_window", pci_input(0, [
        (P_CFGCAP, 0 | (1 << 1), 0x12, 0), (P_CFGCAP, 0, 0x14, 0),
        (P_CFGCAP, 0x80 | (0 << 1), 0x14, 0),                   # status 0 through the window
        (P_CFGCAP, 1 | (2 << 1) | (2 << 3), 0x0, 0),            # the MSI-X table
        (P_CFGCAP, 0x80 | 1 | (2 << 1) | (2 << 3), 0x4, 0x1234),
        (P_CFGCAP, 1 | (2 << 1) | (2 << 3), 0x800, 0),          # the PBA
        (P_CFGCAP, (2 << 1), 0x3ffe, 0), (P_CFGCAP, (3 << 1), 0x2000, 0),  # refused
        (P_CFGCAP, 0x80 | (2 << 1) | (1 << 3), 0x3000, 0)]))    # a notify, half written
    put(d, "common_regs", pci_input(0, [
        (P_COMMON, 0, C_DFSELECT, 1), (P_BAR0_RD, W4, 0x04, 0), (P_COMMON, 0, C_DFSELECT, 7),
        (P_BAR0_RD, W4, 0x04, 0), (P_COMMON, 0, C_GFSELECT, 2), (P_COMMON, 0, C_GF, 0xffffffff),
        (P_COMMON, 0, C_QSELECT, 5), (P_BAR0_RD, W2, 0x18, 0), (P_COMMON, 0, C_QSIZE, 3),
        (P_COMMON, 0, C_QSELECT, 0), (P_COMMON, 0, C_QENABLE, 0),
        (P_COMMON, 0, C_QSIZE, 1000), (P_COMMON, 4, C_DESCLO, 0xfff0),
        (P_COMMON, 0, C_DESCHI, 0xffffffff), (P_COMMON, 0, C_QENABLE, 1),
        (P_BAR0_RD, W8, 0x20, 0), (P_BAR0_RD, W8, 0x24, 0), (P_BAR0_RD, W1, 0x15, 0),
        (P_BAR0_RD, W4, 0x2000, 0), (P_BAR0_RD, W8, 0x2038, 0), (P_BAR0_WR, W1, 0x2000, 1),
        (P_BAR0_WR, W2, 0x3002, 0), (P_BAR0_WR, W2, 0x3004, 0), (P_BAR0_RD, W4, 0x3ffe, 0),
        (P_COMMON, 0, C_QMSIX, 3), (P_COMMON, 0, C_MSIX, 0x1234), notify],
        blk_ram()))
    put(d, "reset_inflight", pci_input(0, [notify, (P_COMMON, 0, C_STATUS, 0), (P_QUIESCE, 0, 0, 0),
                                           (P_COMMON, 0, C_STATUS, 0xff), notify],
                                       blk_ram(0, 100, 4096)))
    put(d, "rings_outside_ram", pci_input(0, [notify], blk_ram(), rings=(0xfff0, 0xfffe, 0xfffc)))


def qemu(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_images(tmp):
    """(name, top image bytes, base bytes) for a few small images."""
    out = []

    def img(name, create_opts, size="1M", io=(), base=None, base_fmt=None):
        p = os.path.join(tmp, name)
        args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", create_opts]
        if base:
            args += ["-b", "base", "-F", base_fmt]
        qemu(*args, p, size)
        for cmd in io:
            qemu("qemu-io", "-f", "qcow2", "-c", cmd, p)
        return open(p, "rb").read()

    raw_base = bytes((i * 7) & 0xff for i in range(64 << 10))
    with open(os.path.join(tmp, "base"), "wb") as f:
        f.write(raw_base)
    out.append(("v3_empty", img("a", "cluster_size=512"), b""))
    out.append(("v3_data", img("b", "cluster_size=512", io=["write -P 0x61 0 4k", "write -P 0x62 64k 2k",
                                                              "write -z 8k 4k"]), b""))
    out.append(("v2_data", img("c", "cluster_size=1024,compat=0.10", io=["write -P 0x63 512 3k"]), b""))
    out.append(("v3_4k_refcount1", img("d", "cluster_size=4096,refcount_bits=1", io=["write -P 0x64 0 8k"]),
                b""))
    out.append(("overlay_raw", img("e", "cluster_size=512", size="64K", io=["write -P 0x65 4k 2k"],
                                   base=True, base_fmt="raw"), raw_base))
    # A compressed cluster.
    src = os.path.join(tmp, "src.raw")
    with open(src, "wb") as f:
        f.write(b"compress me " * 512)
    comp = os.path.join(tmp, "comp.qcow2")
    qemu("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", src, comp)
    out.append(("compressed", open(comp, "rb").read(), b""))
    # A dirty (lazy refcounts) image.
    out.append(("lazy_refcounts", img("f", "cluster_size=512,lazy_refcounts=on",
                                      io=["write -P 0x66 0 1k"]), b""))
    return out


def gen_qcow2(d, images):
    ops = [(0, 0, 4096), (1, 512, 2048), (2, 8192, 1024), (3, 65536, 4096), (4, 0, 0), (0, 60000, 8192)]
    for name, top, base in images:
        body = struct.pack("<I", len(top)) + top + base
        prog = bytes([0, len(ops)]) + b"".join(struct.pack("<BQI", *o) for o in ops)
        put(d, name, prog + body)
    name, top, base = images[1]
    put(d, "readonly_probe", bytes([3, 1]) + struct.pack("<BQI", 1, 0, 512) +
        struct.pack("<I", len(top)) + top + base)


def gen_img(d, images):
    for name, top, base in images:
        flags = 3 if base else 0
        put(d, name, bytes([flags]) + struct.pack("<I", len(top)) + top + base)


# ---- kernels ----

def elf64(paddr=0x200000, entry=0x200010, filesz=0x800, memsz=0x1000, extra_phdrs=()):
    phdrs = [(1, 5, 0x1000, paddr, paddr, filesz, memsz, 0x1000)] + list(extra_phdrs)
    eh = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    eh += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, len(phdrs), 64, 0, 0)
    ph = b"".join(struct.pack("<IIQQQQQQ", *p) for p in phdrs)
    body = eh + ph
    body += b"\0" * (0x1000 - len(body))
    return body + bytes((i * 13) & 0xff for i in range(filesz))


def elf32_pvh(paddr=0x100000, pvh_entry=0x100000):
    note_name = b"Xen\0"
    note = struct.pack("<III", len(note_name), 4, 18) + note_name + struct.pack("<I", pvh_entry)
    eh = b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 9
    eh += struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, pvh_entry, 52, 0, 0, 52, 32, 2, 40, 0, 0)
    ph = struct.pack("<IIIIIIII", 1, 0x1000, paddr, paddr, 0x400, 0x800, 5, 0x1000)
    ph += struct.pack("<IIIIIIII", 4, 0x200, 0, 0, len(note), len(note), 4, 4)
    body = eh + ph
    body += b"\0" * (0x200 - len(body)) + note
    body += b"\0" * (0x1000 - len(body))
    return body + b"\x90" * 0x400


def compress(codec, data, tmp):
    if codec == "gzip":
        return gz(data)
    tool = {"xz": ["xz", "--check=crc32", "-c"], "lzma": ["lzma", "-c"], "zstd": ["zstd", "-q", "-c"],
            "lz4": ["lz4", "-l", "-q", "-c"], "bzip2": ["bzip2", "-c"]}[codec]
    return subprocess.run(tool, input=data, check=True, capture_output=True).stdout


def bzimage(payload, version=0x020f, setup_sects=3, hdr_jump=0x6a, pref=16 << 20, init_size=4 << 20):
    sects = setup_sects or 4
    setup = (sects + 1) * 512
    pm = (0x400 + len(payload) + 4 + 15) & ~15
    b = bytearray(setup + pm)
    b[0x1f1] = setup_sects
    struct.pack_into("<I", b, 0x1f4, pm // 16)
    struct.pack_into("<H", b, 0x1fa, 0xfffd)
    struct.pack_into("<H", b, 0x1fe, 0xaa55)
    b[0x200], b[0x201] = 0xeb, hdr_jump
    b[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", b, 0x206, version)
    b[0x211] = 1
    struct.pack_into("<I", b, 0x214, 0x100000)
    struct.pack_into("<I", b, 0x22c, 0x7fffffff)
    struct.pack_into("<I", b, 0x230, 0x200000)
    b[0x234] = 1
    struct.pack_into("<H", b, 0x236, 3)
    struct.pack_into("<I", b, 0x238, 2047)
    struct.pack_into("<I", b, 0x248, 0x400)
    struct.pack_into("<I", b, 0x24c, len(payload))
    struct.pack_into("<Q", b, 0x258, pref)
    struct.pack_into("<I", b, 0x260, init_size)
    b[setup + 0x400:setup + 0x400 + len(payload)] = payload
    return bytes(b)


def gen_boot(d, tmp):
    def seed(name, flags, kernel, initrd=b""):
        put(d, name, bytes([flags]) + struct.pack("<I", len(kernel)) + kernel + initrd)

    k = elf64()
    seed("elf64", 0, k)
    seed("elf64_initrd_gz", 16, k, gz(b"070701" + b"0" * 200))
    seed("elf64_pvh_refused", 2, k)
    seed("elf32_pvh", 2, elf32_pvh())
    seed("elf32_auto_2cpus", 32, elf32_pvh())
    raw_elf = elf64(filesz=0x1000)
    for codec in ["gzip", "xz", "lzma", "zstd", "lz4", "bzip2"]:
        payload = compress(codec, raw_elf, tmp)
        if codec != "gzip":
            payload += struct.pack("<I", len(raw_elf))
        seed("bz_" + codec, 0, bzimage(payload))
    seed("bz_uncompressed", 0, bzimage(raw_elf))
    seed("bz_guest", 4, bzimage(gz(raw_elf)))
    seed("bz_old_protocol", 0, bzimage(gz(raw_elf), version=0x0206, hdr_jump=0x3a))
    # Bombs: 32 MiB of zeroes, twice the guest's RAM.
    zeros = b"\0" * (32 << 20)
    seed("bomb_gzip", 0, bzimage(gz(zeros, 9)))
    seed("bomb_xz", 0, bzimage(compress("xz", zeros, tmp)))
    seed("bomb_zstd", 0, bzimage(compress("zstd", zeros, tmp)))
    seed("bomb_bzip2", 0, bzimage(compress("bzip2", zeros, tmp)))


def gen_initrd(d):
    cpio = b"070701" + b"0" * 104 + b"TRAILER!!!\0" + b"\0" * 3
    put(d, "gzip", bytes([0x1f]) + gz(cpio)[1:])  # byte 0 is the gzip magic anyway
    put(d, "two_members", gz(cpio) + gz(b"more"))
    put(d, "padded", gz(cpio) + b"\0" * 512)
    put(d, "trailing_junk", gz(cpio) + b"junk")
    put(d, "truncated", gz(cpio * 4)[:-9])
    put(d, "empty_member", gz(b""))
    put(d, "bomb", gz(b"\0" * (16 << 20), 9))
    put(d, "not_gzip", cpio)
    put(d, "bad_crc", gz(cpio)[:-8] + b"\0" * 8)
    put(d, "stored", gz(bytes(range(256)) * 8, 0))


def gen_control(d):
    lines = [
        {"id": 1, "cmd": "query-status"},
        {"id": "x", "cmd": "pause"},
        {"cmd": "resume", "args": {}},
        {"id": None, "cmd": "quit"},
        {"id": 2, "cmd": "snapshot", "args": {"disk": 0, "why": "é" * 300}},
        {"id": 3, "cmd": "save", "args": {"path": "/tmp/x", "why": "ü" * 260}},
        {"id": 4, "cmd": "migrate", "args": {"uri": "tcp:127.0.0.1:1", "why": ""}},
        {"id": 5, "cmd": "query-migrate"},
        {"id": 6, "cmd": "migrate-cancel"},
        {"id": 7, "cmd": "help"},
        {"id": 8, "cmd": "é" * 200},
        {"id": [1, {"a": 1.5e300}], "cmd": "nope", "args": []},
    ]
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines).encode() + b"\n"
    put(d, "all_direct", bytes([0, 0]) + text)
    put(d, "all_failing", bytes([0, 0xff]) + text)
    put(d, "socket", bytes([1, 0x20]) + text.replace(b"\n", b"\r\n", 3))
    put(d, "socket_deferred", bytes([1, 0]) + text)
    put(d, "malformed", bytes([0, 0]) + b'{"id":1,"cmd":"pause"\n[1,2]\n{"id":1,"id":2,"cmd":"x"}\n"\\ud800"\n\n')
    put(d, "socket_partial", bytes([1, 0]) + b'{"cmd":"help"}\n{"cmd":"query-st')


def gen_insn(d):
    def seed(name, insn, flags=1, gprs=None, rip=0x1000, rflags=2, cpl=0, cr0=0x80050033,
             cr4=0x3406f0, efer=0xd01, features=0x7f, mem=b"", paging=None):
        insn = insn.ljust(16, b"\x90")
        out = bytes([min(len(insn), 16)]) + insn[:16] + bytes([flags])
        g = gprs or [0x2000 + 8 * i for i in range(16)]
        out += struct.pack("<16Q", *g) + struct.pack("<QQB", rip, rflags, cpl)
        out += struct.pack("<QQQQQQQH", cr0, 0, cr4, efer, 0x3000, 0x4000, 0x5000, 0xfff)
        out += struct.pack("<I", features)
        out += bytes(range(256)) + struct.pack("<II", 0x1f80, 0xffff)
        out += struct.pack("<QHQ", 0xffffffff81000000, 0, 7)
        pg = paging or (0x80000001, 0x1000, 0x20, 0x500, 0x2000, 0)
        out += struct.pack("<QQQQQB", *pg)
        return put(d, name, out + mem)

    # A page table: PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> 2 MiB page at 0.
    pt = bytearray(0x4000)
    struct.pack_into("<Q", pt, 0x1000, 0x2007)
    struct.pack_into("<Q", pt, 0x2000, 0x3007)
    struct.pack_into("<Q", pt, 0x3000, 0x87)
    mem = bytes(pt)
    seed("int3", b"\xcc")
    seed("fwait", b"\x9b")
    seed("clac", b"\x0f\x01\xca")
    seed("stac_user", b"\x0f\x01\xcb", cpl=3)
    seed("popcnt", b"\xf3\x48\x0f\xb8\xc1")
    seed("popcnt_mem", b"\xf3\x0f\xb8\x04\x25\x00\x20\x00\x00", mem=mem)
    seed("lfence", b"\x0f\xae\xe8")
    seed("mfence", b"\x0f\xae\xf0")
    seed("sfence", b"\x0f\xae\xf8")
    seed("sysret", b"\x48\x0f\x07")
    seed("ldmxcsr", b"\x0f\xae\x10", mem=mem)
    seed("stmxcsr", b"\x0f\xae\x18", mem=mem)
    seed("xgetbv", b"\x0f\x01\xd0")
    seed("movdqa_load", b"\x66\x0f\x6f\x00", mem=mem)
    seed("movdqu_store_rip", b"\xf3\x0f\x7f\x05\x00\x01\x00\x00", mem=mem)
    seed("pxor", b"\x66\x0f\xef\xc1")
    seed("pshufb", b"\x66\x0f\x38\x00\xc1")
    seed("pclmulqdq", b"\x66\x0f\x3a\x44\xc1\x11")
    seed("crc32", b"\xf2\x48\x0f\x38\xf1\xc1")
    seed("pinsrw_fs", b"\x64\x66\x0f\xc4\x00\x03", mem=mem)
    seed("sib_disp", b"\x66\x0f\x6f\x84\x88\x00\x10\x00\x00", mem=mem)
    seed("too_long", b"\x66" * 15 + b"\x90")
    seed("truncated", b"\x66\x0f\x3a")
    seed("compat_mode", b"\xcc", flags=0)
    seed("no_sse_state", b"\x66\x0f\xef\xc1", flags=3)
    seed("walk_5level", b"\x90", paging=(0x80010001, 0x1000, 0x1020, 0xd00, 0xffff800000001000, 3),
         mem=mem)



# ---- --config FILE (fuzz_config.c) ----

def gen_config(d):
    def seed(name, doc, args=(), at=0, eq=False):
        text = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        flags = len(args) | (16 if eq else 0) | (at << 5)
        put(d, name, bytes([flags]) + b"".join(a.encode() + b"\0" for a in args) + text)

    seed("full", {"kernel": "vmlinux", "initrd": "initrd.gz", "cmdline": "console=ttyS0",
                  "mem": "512M", "cpus": 2, "disk": ["a.img,readonly",
                                                     "b.qcow2,format=qcow2,cache=none,serial=S1"],
                  "net": "tap=tap0,mac=52:54:00:12:34:56,queues=2,transport=mmio",
                  "console": "stdio,log=console.log", "timeout": 2.5, "acpi": "off",
                  "no-pvpanic": True, "quiet": True, "paused": False, "seccomp": "log",
                  "boot": "pvh", "kernel-decompress": "guest", "initrd-decompress": "guest",
                  "user": "nobody:nogroup", "exit-json": "out.json", "api-sock": "vm.sock",
                  "no-nested-workarounds": True})
    seed("override", {"kernel": "k", "cpus": 1, "mem": 64, "disk": ["a.img", "b.img"]},
         args=("--cpus", "4", "--disk=c.img", "--mem=1G"), at=2, eq=True)
    seed("restore", {"restore": "snap", "restore-disk": ["0=/x.img", "7=y.img"],
                     "restore-tap": "1=tap1", "paused": True, "console": "file:out.txt"},
         args=("--timeout", "1e3"))
    seed("incoming", {"incoming": "tcp:0.0.0.0:4444", "migration-key": "key"},
         args=("--kernel", "k"), at=2)
    seed("bad_type", {"kernel": 5, "cpus": [2]})
    seed("bad_syntax", b'{"kernel": "k",\n  "cpus": ')
    seed("duplicate_key", b'{"kernel": "a", "kernel": "b"}')
    seed("not_object", [1, "two", None])
    seed("names_another", {"config": "other.json"})
    seed("unknown_key", {"kernel": "k", "frobnicate": True, "x" * 60: 1})
    seed("flag_not_bool", {"kernel": "k", "quiet": "yes"})
    seed("numbers", b'{"kernel": "k", "mem": 1e300, "cpus": -1, "timeout": 1e-300}')
    seed("given_twice", {"kernel": "k"}, args=("--config=elsewhere.json",), at=1)
    seed("help", {"kernel": "k"}, args=("--help",))
    seed("array_items", {"kernel": "k", "disk": ["a", 5, None], "net": []})
    seed("too_many", {"kernel": "k", "disk": ["d%d" % i for i in range(9)],
                      "net": ["tap=t0", "tap=t1", "tap=t2"]})
    seed("escapes", b'{"kernel": "\\u00e9\\ud83d\\ude00", "cmdline": "a\\u0001b", "user": "u:g"}')
    seed("nul_and_bad_user", b'{"kernel": "k", "cmdline": "a\\u0000b", "user": ":"}')


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    want = sys.argv[2:] or TARGETS
    tmp = tempfile.mkdtemp()
    try:
        images = make_images(tmp) if {"qcow2", "img"} & set(want) else None
        for t in want:
            d = os.path.join(root, t)
            if t in ("qcow2", "img"):
                globals()["gen_" + t](d, images)
            elif t == "boot":
                gen_boot(d, tmp)
            else:
                globals()["gen_" + t](d)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
