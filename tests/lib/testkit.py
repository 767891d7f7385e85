"""What the Python test scripts share (tests/integration, tests/qcow2): the
failure and skip signals, check(), and the runner that makes each test_*
function of a script one ctest test.

A script calls run_main(globals(), add_args, setup): --list prints the test
names; otherwise each named test (all when none is named) runs in turn and
prints PASS, SKIP or FAIL with its time.  Exit status: 0 when all passed, 1
when one failed, SKIP (ctest's skip code) when every test skipped or
@setup said so.
"""
import argparse
import os
import subprocess
import time

SKIP = 77


class TestFailure(Exception):
    pass


class Skip(Exception):
    """Raised by a test that cannot run here; the message says why."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def run_main(namespace, add_args=None, setup=None):
    """Parse the command line and run the tests of @namespace (a script's
    globals()).  @add_args(parser) adds the script's own options;
    @setup(args) runs before the tests and returns None to go on, or an
    exit status to end with (SKIP, with a message printed)."""
    ap = argparse.ArgumentParser()
    if add_args:
        add_args(ap)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("tests", nargs="*")
    a = ap.parse_args()
    names = sorted(n[5:] for n in namespace if n.startswith("test_"))
    if a.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in a.tests if n not in names]
    if unknown:
        ap.error(f"no such test: {' '.join(unknown)}")
    if setup:
        status = setup(a)
        if status is not None:
            return status
    failed = skipped = 0
    for n in a.tests or names:
        t0 = time.monotonic()
        try:
            if namespace["test_" + n]() == SKIP:
                raise Skip("the test says it cannot run here")
            print(f"PASS {n} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Skip as e:
            skipped += 1
            print(f"SKIP {n}: {e}", flush=True)
        except (TestFailure, subprocess.TimeoutExpired) as e:
            failed += 1
            print(f"FAIL {n}: {e}", flush=True)
    if failed:
        return 1
    return SKIP if skipped and skipped == len(a.tests or names) else 0


# ---- for the scripts that boot the test guests (tests/integration) ----

def add_guest_args(ap):
    """--vmrun (the binary) and --guests (the directory of the .elf guests)."""
    ap.add_argument("--vmrun")
    ap.add_argument("--guests")


def guest_setup(a, namespace):
    """Set the script's VMRUN and GUESTS globals from @a; 2 when one is
    missing, SKIP (with a message) where /dev/kvm is, else None."""
    if not a.vmrun or not a.guests:
        print("usage: --vmrun PATH and --guests DIR are required to run tests")
        return 2
    namespace["VMRUN"] = os.path.abspath(a.vmrun)
    namespace["GUESTS"] = os.path.abspath(a.guests)
    if not os.path.exists("/dev/kvm"):
        print("SKIP: /dev/kvm is missing on this machine: guest tests need KVM")
        return SKIP
    return None


def guest_elf(guests, name):
    """The path of test guest @name in directory @guests, which must exist."""
    path = os.path.join(guests, name + ".elf")
    check(os.path.exists(path), f"guest {path} was not built")
    return path
