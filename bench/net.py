#!/usr/bin/env python3
"""vmrun virtio-net benchmark: bench_net_harness (vmrun's virtio-net device
model, tap backend, virtio-mmio (or, with --pci, virtio-pci) transport and virtqueues, driven in-process
by a fake driver, no guest) against net_floor (plain write()/read() on a tap
fd, one frame per call) on the same tap with the same frames:

  tx64   guest to host, 64-byte frames (UDP to the tap's address), frames/s
  rx64   host to guest, 64-byte frames, frames/s
  tx64k  guest to host, 65214-byte TSO frames (TCP, GSO_TCPV4), Gbit/s
  rx64k  host to guest, 65214-byte TSO frames, Gbit/s

Everything runs in a network namespace the script creates and removes
(`ip netns add`), with one tap inside (`ip tuntap add`, address
10.213.0.1/24, up).  Needs root (CAP_NET_ADMIN).  See bench/README.md for
what exactly is timed.

Exit status: 0 when every run completed, whatever the ratios (the machines
are noisy); 1 when a run failed (a wrong frame, a hang, a dropped frame);
2 on a usage error; 77 when the namespace and tap cannot be made (not root,
no `ip`, no /dev/net/tun).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

TARGET = 0.80  # vmrun >= 80% of the floor
POINTS = ["tx64", "rx64", "tx64k", "rx64k"]
TAP = "vbn0"
TAP_MAC = "02:76:6d:00:00:01"
QUEUE = 256            # the harness's ring size: TX buffers in flight, RX buffers
RXBUF_LARGE = 4096     # the harness's RX buffer size for 64 KiB frames


def size_arg(point):
    return "64k" if point.endswith("64k") else "64"


def sh(argv, check=True):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip() or p.returncode}")
    return p


def tap_stats(ns):
    p = sh(["ip", "-n", ns, "-s", "-j", "link", "show", TAP])
    st = json.loads(p.stdout)[0]["stats64"]
    return {"rx_packets": st["rx"]["packets"], "tx_packets": st["tx"]["packets"],
            "rx_dropped": st["rx"]["dropped"], "tx_dropped": st["tx"]["dropped"]}


def setup(ns):
    """Create the namespace and the tap.  Raises RuntimeError."""
    sh(["ip", "netns", "add", ns])
    sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh(["ip", "-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap"])
    sh(["ip", "-n", ns, "link", "set", TAP, "address", TAP_MAC])
    # No IPv6 on the tap: no router solicitations or MLD reports mixed
    # into the frames the readers count.
    sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{TAP}.disable_ipv6=1"],
       check=False)
    sh(["ip", "-n", ns, "addr", "add", "10.213.0.1/24", "dev", TAP])
    sh(["ip", "-n", ns, "link", "set", TAP, "up"])


def in_ns(a, argv):
    return ["ip", "netns", "exec", a.ns] + argv


def parse_json_line(text):
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_tx(a, program, point):
    """One TX run: a result dict, or (None, why)."""
    if program == "vmrun":
        argv = [a.harness, "--tap", TAP, "--points", point, "--time", str(a.time), "--json"]
        if a.verify:
            argv.append("--verify")
        if a.pci:
            argv.append("--pci")
    else:
        argv = [a.floor, "tx", "--tap", TAP, "--size", size_arg(point), "--time", str(a.time),
                "--buffers", str(QUEUE)]
    argv = in_ns(a, argv)
    before = tap_stats(a.ns)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=a.time + 60)
    after = tap_stats(a.ns)
    r = parse_json_line(p.stdout)
    if p.returncode != 0 or r is None:
        return None, f"{' '.join(argv)}: exit status {p.returncode}\n{p.stdout}{p.stderr}".rstrip()
    accepted = after["rx_packets"] - before["rx_packets"]
    if accepted != r["frames"]:
        return None, (f"{' '.join(argv)}: reported {r['frames']} frames, the tap received "
                      f"{accepted}\n{p.stderr}").rstrip()
    r["tap_received"] = accepted
    return r, None


def run_rx(a, program, point):
    """One RX run: queue the frames, then let the reader drain them."""
    count = a.rx_frames_large if point.endswith("64k") else a.rx_frames_small
    if program == "vmrun":
        argv = [a.harness, "--tap", TAP, "--points", point, "--json"]
        if a.verify:
            argv.append("--verify")
        if a.pci:
            argv.append("--pci")
    else:
        bufs = QUEUE * RXBUF_LARGE // 65536 if point.endswith("64k") else QUEUE
        argv = [a.floor, "rx", "--tap", TAP, "--size", size_arg(point), "--buffers", str(bufs)]
        if a.verify:
            argv.append("--verify")
    argv = in_ns(a, argv)
    # The tap's queue (sized when the reader attaches) holds every frame.
    sh(["ip", "-n", a.ns, "link", "set", TAP, "txqueuelen", str(count + 1024)])
    reader = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = reader.stdout.readline()
        if line.strip() != "ready":
            out, err = reader.communicate(timeout=30)
            return None, f"{' '.join(argv)}: no ready line\n{line}{out}{err}".rstrip()
        inj = in_ns(a, [a.floor, "inject", "--tap", TAP, "--size", size_arg(point),
                        "--count", str(count)])
        p = subprocess.run(inj, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=300)
        sent = parse_json_line(p.stdout)
        if p.returncode != 0 or not sent or sent["sent"] != count:
            reader.kill()
            reader.communicate()
            return None, f"{' '.join(inj)}: exit status {p.returncode}\n{p.stdout}{p.stderr}".rstrip()
        out, err = reader.communicate(input=f"go {count}\n", timeout=120)
    except subprocess.TimeoutExpired:
        reader.kill()
        out, err = reader.communicate()
        return None, f"{' '.join(argv)}: timed out\n{out}{err}".rstrip()
    r = parse_json_line(out)
    if reader.returncode != 0 or r is None:
        return None, f"{' '.join(argv)}: exit status {reader.returncode}\n{out}{err}".rstrip()
    if r["frames"] != count:
        return None, f"{' '.join(argv)}: read {r['frames']} of {count} frames\n{err}".rstrip()
    return r, None


def summarize(r):
    s = r["seconds"] or 1e-9
    r["fps"] = r["frames"] / s
    r["gbps"] = r["bytes"] * 8 / s / 1e9
    r["cpu_us_per_frame"] = r["cpu_seconds"] * 1e6 / r["frames"] if r["frames"] else 0.0
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--harness", required=True, help="build/bench/bench_net_harness")
    ap.add_argument("--floor", required=True, help="build/bench/net_floor")
    ap.add_argument("--points", default=",".join(POINTS), help="comma-separated, of " +
                    ", ".join(POINTS))
    ap.add_argument("--time", type=float, default=3.0, help="seconds per TX run (default 3)")
    ap.add_argument("--rx-frames-small", type=int, default=400000,
                    help="64-byte frames queued per RX run (default 400000)")
    ap.add_argument("--rx-frames-large", type=int, default=20000,
                    help="64 KiB frames queued per RX run (default 20000, about 1.4 GB "
                         "of kernel memory while queued)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per program and point, "
                    "alternating (default 3); the best counts")
    ap.add_argument("--verify", action="store_true", help="compare every byte (slower)")
    ap.add_argument("--pci", action="store_true",
                    help="the harness's device is on virtio-pci (MSI-X), not virtio-mmio")
    ap.add_argument("--smoke", action="store_true", help="every point once, briefly, "
                    "with --verify: checks that everything works, judges no timing")
    ap.add_argument("--ns", default=f"vmrun-bench-net-{os.getpid()}")
    ap.add_argument("--json", help="write every sample and summary to this file")
    a = ap.parse_args()
    if a.smoke:
        a.time, a.repeat, a.verify = 0.3, 1, True
        a.rx_frames_small, a.rx_frames_large = 20000, 400
    points = a.points.split(",")
    if any(p not in POINTS for p in points) or a.repeat < 1 or a.time <= 0:
        ap.print_usage(sys.stderr)
        return 2
    for prog in (a.harness, a.floor):
        if not os.access(prog, os.X_OK):
            print(f"bench_net: {prog} is not an executable (build bench_net_harness and "
                  f"net_floor)", file=sys.stderr)
            return 2
    if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/dev/net/tun"):
        print("bench_net: needs root, `ip` and /dev/net/tun (network namespace and tap): "
              "skipped", file=sys.stderr)
        return 77
    try:
        setup(a.ns)
    except RuntimeError as e:
        print(f"bench_net: cannot set up namespace {a.ns}: {e}: skipped", file=sys.stderr)
        sh(["ip", "netns", "del", a.ns], check=False)
        return 77

    samples = {p: {"floor": [], "vmrun": []} for p in points}
    failures = []
    try:
        for p in points:
            for i in range(a.repeat):
                order = ["floor", "vmrun"] if i % 2 == 0 else ["vmrun", "floor"]
                for prog in order:
                    fn = run_tx if p.startswith("tx") else run_rx
                    r, why = fn(a, prog, p)
                    if r is None:
                        failures.append(f"{p} {prog}: {why}")
                        print(f"bench_net: {p} {prog} FAILED:\n{why}", file=sys.stderr)
                        continue
                    samples[p][prog].append(summarize(r))
    finally:
        sh(["ip", "netns", "del", a.ns], check=False)

    print(f"{'point':<7} {'unit':<7} {'floor':>10} {'vmrun':>10} {'ratio':>7}  "
          f"{'us/frame floor':>14} {'vmrun':>7}  target >= {TARGET:.0%}")
    print("-" * 84)
    summary = {}
    for p in points:
        best = {}
        for prog in ("floor", "vmrun"):
            if samples[p][prog]:
                best[prog] = max(samples[p][prog], key=lambda r: r["fps"])
        large = p.endswith("64k")
        unit = "Gbit/s" if large else "kpps"

        def val(r):
            return r["gbps"] if large else r["fps"] / 1e3
        if len(best) < 2:
            print(f"{p:<7} {unit:<7} {'-':>10} {'-':>10} {'-':>7}  (a run failed)")
            continue
        ratio = best["vmrun"]["fps"] / best["floor"]["fps"] if best["floor"]["fps"] else 0.0
        summary[p] = {"floor": best["floor"], "vmrun": best["vmrun"], "ratio": ratio,
                      "unit": unit, "met": ratio >= TARGET}
        print(f"{p:<7} {unit:<7} {val(best['floor']):>10.1f} {val(best['vmrun']):>10.1f} "
              f"{ratio:>7.3f}  {best['floor']['cpu_us_per_frame']:>14.2f} "
              f"{best['vmrun']['cpu_us_per_frame']:>7.2f}  {'met' if ratio >= TARGET else 'MISS'}")
    print(f"best of {a.repeat} runs each, floor and vmrun alternating; TX {a.time:g} s per run, "
          f"RX {a.rx_frames_small} 64-byte / {a.rx_frames_large} 64 KiB frames queued per run")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"points": points, "samples": samples, "summary": summary,
                       "target": TARGET, "failures": failures, "time": a.time,
                       "repeat": a.repeat}, f, indent=1)
    if failures:
        print(f"bench_net: {len(failures)} run(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
