#!/usr/bin/env python3
"""The documentation says what vmrun does: every option `vmrun --help` lists
is described in the man page (docs/vmrun.1) and the README, every exit status
of include/vmrun/exit_status.h is in both tables, and the man page renders
without groff warnings (where groff is installed).

usage: docs_test.py --vmrun PATH --source DIR
"""
import argparse
import os
import re
import shutil
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmrun", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    help_text = subprocess.run([a.vmrun, "--help"], capture_output=True, text=True,
                               check=True).stdout
    options = sorted(set(re.findall(r"^\s+(--[a-z][a-z-]*)", help_text, re.M)))
    with open(os.path.join(a.source, "docs", "vmrun.1")) as f:
        man = f.read().replace("\\-", "-")
    with open(os.path.join(a.source, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(a.source, "include", "vmrun", "exit_status.h")) as f:
        statuses = sorted({int(v) for v in re.findall(r"VMRUN_EXIT_[A-Z_]+ = (\d+),", f.read())})
    failures = []
    if len(options) < 10:
        failures.append(f"found only {options} in vmrun --help")
    for opt in options:
        # An option's entry in the man page is a .TP paragraph headed by it.
        if not re.search(r"^\.TP\n\.BI? " + re.escape(opt) + r"(\s|$)", man, re.M):
            failures.append(f"{opt}: not described in docs/vmrun.1")
        if f"`{opt}" not in readme:
            failures.append(f"{opt}: not in the README's option table")
    for st in statuses:
        if not re.search(rf"^\.B {st}$", man, re.M):
            failures.append(f"exit status {st}: not in docs/vmrun.1")
        if not re.search(rf"^\| {st} \|", readme, re.M):
            failures.append(f"exit status {st}: not in the README's table")
    if shutil.which("groff"):
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                            os.path.join(a.source, "docs", "vmrun.1")],
                           capture_output=True, text=True)
        if p.returncode != 0 or p.stderr.strip():
            failures.append(f"groff warnings: {p.stderr.strip()}")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print(f"PASS: {len(options)} options and {len(statuses)} exit statuses documented")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
