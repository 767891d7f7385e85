#!/usr/bin/env python3
"""vmrun virtio-blk benchmark: bench_blk_harness (vmrun's virtio-blk device
model, virtio-mmio transport, virtqueues and raw backend with Linux AIO,
driven in-process by a fake driver, no guest) against fio on the same file
with the same parameters:

  4 KiB random reads and writes, 1 MiB sequential reads and writes,
  each at queue depth 1 and 32, O_DIRECT (fio --direct=1 --ioengine=libaio)

Creates a preallocated, filled test file (1 GiB in /var/tmp by default),
runs both programs for each point, and prints IOPS, MB/s (10^6 bytes/s),
CPU time per request, the ratio vmrun / fio and whether it meets the target
(>= 90% of fio).  See bench/README.md.

Exit status: 0 when every run completed, whatever the ratios (the machines
are noisy); 1 when a run failed (a request error, a hang, fio failing);
2 on a usage error.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

TARGET = 0.90  # vmrun >= 90% of fio
POINTS = ["randread:4k:1", "randread:4k:32", "randwrite:4k:1", "randwrite:4k:32",
          "read:1m:1", "read:1m:32", "write:1m:1", "write:1m:32"]


def run_harness(a, point):
    """One harness run of @point: its JSON result, or (None, why)."""
    argv = [a.harness, "--file", a.file, "--points", point, "--time", str(a.time),
            "--cache", a.cache, "--json"]
    if a.no_event_idx:
        argv.append("--no-event-idx")
    if a.pci:
        argv.append("--pci")
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=a.time + 120)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or len(lines) != 1:
        return None, (f"{' '.join(argv)}: exit status {p.returncode}\n"
                      f"{p.stdout}{p.stderr}").rstrip()
    r = json.loads(lines[0])
    r["cpu_us_per_io"] = r["cpu_seconds"] * 1e6 / r["ios"] if r["ios"] else 0.0
    r["stderr"] = p.stderr
    return r, None


def run_fio(a, point):
    """One fio run of @point: a dict like the harness's, or (None, why)."""
    rw, bs, qd = point.split(":")
    argv = [a.fio, "--name=vmrun-blk", f"--filename={a.file}", "--ioengine=libaio",
            f"--direct={1 if a.cache == 'none' else 0}", f"--bs={bs}", f"--rw={rw}",
            f"--iodepth={qd}", f"--runtime={a.time}", "--time_based", "--norandommap",
            "--output-format=json"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=a.time + 120)
    try:
        job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    except (ValueError, KeyError, IndexError):
        job = None
    if p.returncode != 0 or job is None or job.get("error"):
        return None, (f"{' '.join(argv)}: exit status {p.returncode}\n"
                      f"{p.stdout[-2000:]}{p.stderr}").rstrip()
    side = job["read"] if rw in ("read", "randread") else job["write"]
    seconds = side["runtime"] / 1e3 if side.get("runtime") else float(a.time)
    ios = side["total_ios"]
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * seconds
    return {"point": point, "iops": side["iops"], "mbps": side["bw_bytes"] / 1e6,
            "ios": ios, "seconds": seconds,
            "cpu_us_per_io": cpu_s * 1e6 / ios if ios else 0.0}, None


def point_name(point):
    rw, bs, qd = point.split(":")
    return f"{rw}-{bs}-qd{qd}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", required=True, help="path to bench_blk_harness")
    ap.add_argument("--file", default="/var/tmp/vmrun-bench-blk.img",
                    help="test file, created (and removed unless --keep) here "
                         "(default %(default)s)")
    ap.add_argument("--size-mib", type=int, default=1024, help="test file size (default 1024)")
    ap.add_argument("--time", type=float, default=5.0, help="seconds per run (default 5)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each program per point, alternating which goes first; "
                         "the best of each is compared (default 2)")
    ap.add_argument("--points", default=",".join(POINTS),
                    help="comma-separated RW:BS:QD (default: the eight standard points)")
    ap.add_argument("--cache", choices=("none", "writeback", "unsafe"), default="none",
                    help="vmrun's cache mode; fio gets --direct=1 only with none")
    ap.add_argument("--no-event-idx", action="store_true",
                    help="the harness's driver does not negotiate EVENT_IDX")
    ap.add_argument("--pci", action="store_true",
                    help="the harness's device is on virtio-pci (MSI-X), not virtio-mmio")
    ap.add_argument("--fio", default=shutil.which("fio"))
    ap.add_argument("--keep", action="store_true", help="keep the test file")
    ap.add_argument("--json", help="write every sample and the summary to this file")
    a = ap.parse_args()
    if a.time <= 0 or a.repeat < 1 or a.size_mib < 2:
        ap.error("--time, --repeat and --size-mib must be positive (size at least 2 MiB)")
    points = [p for p in a.points.split(",") if p]

    a.fio = shutil.which(a.fio) if a.fio else None
    if not a.fio:
        print("fio: not installed (apt-get install fio); vmrun only")
    print(f"virtio-blk: {a.file}, {a.size_mib} MiB, {a.time:g} s per run, "
          f"{a.repeat} run(s) each, cache={a.cache}")
    try:
        created = subprocess.run([a.harness, "--file", a.file, "--create", str(a.size_mib),
                                  "--points", "none"]).returncode == 0
    except OSError as e:
        print(f"{a.harness}: {e}")
        created = False
    if not created:
        print(f"FAIL: could not create {a.file}")
        return 1

    failures = []
    rows = []
    try:
        for point in points:
            samples = {"vmrun": [], "fio": []}
            for i in range(a.repeat):
                order = ["vmrun", "fio"] if i % 2 == 0 else ["fio", "vmrun"]
                for prog in order:
                    if prog == "fio" and not a.fio:
                        continue
                    try:
                        res, why = (run_harness if prog == "vmrun" else run_fio)(a, point)
                    except (OSError, subprocess.TimeoutExpired) as e:
                        res, why = None, str(e)
                    if res is None:
                        failures.append(why)
                        print(f"FAIL: {prog} {point}:\n{why}", flush=True)
                    else:
                        samples[prog].append(res)
            best = {k: max(v, key=lambda s: s["iops"]) if v else None
                    for k, v in samples.items()}
            rows.append((point, best, samples))
            v, f = best["vmrun"], best["fio"]
            print(f"  {point_name(point):18s} vmrun "
                  f"{format(v['iops'], '9.0f') if v else '-':>9s} IOPS  "
                  f"fio {format(f['iops'], '9.0f') if f else '-':>9s} IOPS", flush=True)
    finally:
        if not a.keep:
            try:
                os.unlink(a.file)
            except OSError:
                pass

    print()
    hdr = (f"{'point':18s} {'vmrun IOPS':>11s} {'MB/s':>8s} {'us/IO':>6s} "
           f"{'fio IOPS':>11s} {'MB/s':>8s} {'us/IO':>6s} {'ratio':>6s}  target >= {TARGET:.0%}")
    print(hdr)
    print("-" * len(hdr))
    summary = []
    for point, best, _ in rows:
        v, f = best["vmrun"], best["fio"]
        ratio = v["iops"] / f["iops"] if v and f and f["iops"] else None
        verdict = "-" if ratio is None else ("met" if ratio >= TARGET else "MISS")

        def cols(s):
            if not s:
                return f"{'-':>11s} {'-':>8s} {'-':>6s}"
            return f"{s['iops']:11.0f} {s['mbps']:8.1f} {s['cpu_us_per_io']:6.1f}"
        print(f"{point_name(point):18s} {cols(v)} {cols(f)} "
              f"{(f'{ratio:.3f}' if ratio is not None else '-'):>6s}  {verdict}")
        summary.append({"point": point, "vmrun": v, "fio": f, "ratio": ratio,
                        "target_met": None if ratio is None else ratio >= TARGET})
    some = next((s for _, b, _ in rows for s in [b["vmrun"]] if s), None)
    if some:
        print(f"\nharness: event_idx={some['event_idx']} O_DIRECT={some['direct']} "
              f"aio={some['aio']}; us/IO is user+system CPU time per request")
        if not some["direct"] and a.cache == "none":
            print("note: the filesystem refuses O_DIRECT: vmrun fell back to the page cache")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"points": summary,
                       "samples": {p: s for p, _, s in rows}}, fh, indent=1, default=str)
    if failures:
        print(f"\n{len(failures)} run(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
