#!/usr/bin/env python3
"""The documentation says what vmrun does: every option `vmrun --help` lists
is described in the man page (docs/vmrun.1) and the README, every exit status
of include/vmrun/exit_status.h is in both tables, the synopses (--help's usage
lines, the man page's SYNOPSIS, the README's usage block) agree and show the
main options, no stale claim is back (STALE_PHRASES), the quick start's
commands are scripts that exist, and the man page renders without groff
warnings (where groff is installed).

usage: docs_test.py --vmrun PATH --source DIR
"""
import argparse
import os
import re
import shutil
import subprocess
import sys


# Claims that were once true and must not come back (README, man page, --help),
# matched case-insensitively across line breaks.
STALE_PHRASES = (
    "no multiqueue",          # virtio-net has queues=N with MQ and a control queue
    "no control queue",
    "raw image or block device",  # --disk takes qcow2 images too
)
# What every synopsis (--help's usage lines, the man page's SYNOPSIS) shows.
SYNOPSIS_OPTIONS = ("--kernel", "--disk", "--net", "--restore")


def flat(text):
    """@text lower-cased with every run of whitespace made one space."""
    return " ".join(text.split()).lower()


def drift(source, help_text, options, man, readme):
    """The kinds of drift a reader notices: synopses that miss the main
    options or name ones that do not exist, the README's usage block apart
    from --help's, stale claims, and a quick start naming scripts that are not
    there.  Returns a list of failures."""
    failures = []
    # --help's usage lines: from "Usage:" to the first empty line.
    m = re.search(r"^Usage: (.*?)\n\n", help_text, re.M | re.S)
    usage = [line.strip() for line in m.group(1).splitlines()] if m else []
    if not usage:
        failures.append("vmrun --help has no 'Usage:' lines")
    m = re.search(r"^\.SH SYNOPSIS\n(.*?)^\.SH ", man, re.M | re.S)
    man_synopsis = m.group(1) if m else ""
    if not man_synopsis:
        failures.append("docs/vmrun.1 has no SYNOPSIS section")
    m = re.search(r"^## Using vmrun\n+```\n(.*?)^```", readme, re.M | re.S)
    readme_usage = m.group(1) if m else ""
    if not readme_usage:
        failures.append("the README's 'Using vmrun' has no usage block")
    # One entry per usage line (the man page's end with .br).
    for where, entries in (("vmrun --help's usage lines", usage),
                           ("docs/vmrun.1's SYNOPSIS", man_synopsis.split("\n.br\n")),
                           ("the README's usage block", readme_usage.splitlines())):
        named = set()
        # The options of the subcommands (ctl, img, snapshot) are their own.
        for e in entries:
            if not re.search(r"vmrun (ctl|img|snapshot)\b", flat(e)):
                named |= set(re.findall(r"(--[a-z][a-z-]*)", e))
        for opt in SYNOPSIS_OPTIONS:
            if opt not in named:
                failures.append(f"{where} do(es) not show {opt}")
        for opt in sorted(named - set(options)):
            failures.append(f"{where} show(s) {opt}, which vmrun --help does not list")
    for line in usage:
        if flat(line) not in flat(readme_usage):
            failures.append(f"the README's usage block lacks --help's usage line {line!r}")
    for where, text in (("README.md", readme), ("docs/vmrun.1", man),
                        ("vmrun --help", help_text)):
        for phrase in STALE_PHRASES:
            if phrase in flat(text):
                failures.append(f"{where} says {phrase!r}, which is no longer true")
    # The quick start's commands are scripts of this repository, and the
    # first one boots the smoke-test guest, then Linux on a disk image.
    m = re.search(r"^## Quick start\n.*?```sh\n(.*?)^```", readme, re.M | re.S)
    commands = [line.split()[0] for line in (m.group(1).splitlines() if m else [])
                if line.strip()]
    if len(commands) < 2:
        failures.append(f"the README's quick start shows {commands}, not its two commands")
    for cmd in commands:
        path = os.path.join(source, os.path.normpath(cmd))
        if not cmd.startswith("./") or not os.access(path, os.X_OK):
            failures.append(f"quick start: {cmd} is not an executable script of the repository")
    qs_path = os.path.join(source, "scripts", "quickstart.sh")
    qs = open(qs_path).read() if os.path.exists(qs_path) else ""
    qs = "\n".join(line for line in qs.splitlines() if not line.lstrip().startswith("#"))
    hello, linux = qs.find("hello.elf"), re.search(r"--kernel [^\n]*--disk", qs)
    if hello < 0 or not linux or hello > linux.start():
        failures.append("scripts/quickstart.sh does not boot hello.elf first, then a kernel "
                        "with --disk")
    # Every examples/ script the README names exists.
    for path in sorted(set(re.findall(r"`(examples/[\w./-]+)", readme))):
        if not os.path.exists(os.path.join(source, path)):
            failures.append(f"the README names {path}, which does not exist")
    return failures


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
    failures += drift(a.source, help_text, options, man, readme)
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
