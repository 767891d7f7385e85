#!/usr/bin/env bash
# A CI-style Linux test: boot vmrun's Linux test kernel with its busybox
# initramfs, run a test command in the guest, and exit with the command's
# exit status.  The console (kernel messages and the command's output) is
# shown live and kept in a log file to attach to the CI job.
#
#   examples/ci-linux-test.sh [-v VMRUN] [-l LOG] [-t SECONDS] [-c CPUS] COMMAND
#
#   COMMAND  a busybox sh script, one argument (quote it), e.g.
#            'grep -q ext4 /proc/filesystems && uname -r'.  It runs in the
#            guest as root with /proc and /dev mounted and the console as
#            its stdin, stdout and stderr; every busybox applet works.
#   -v       vmrun to use (default: <repository>/build/vmrun)
#   -l       console log (default: ./ci-linux-test.log)
#   -t       vmrun's --timeout in seconds (default 600)
#   -c       vCPUs (default 1)
#
# Exit status: COMMAND's own (0-255), which the guest's init prints as the
# console line "vmrun-run: exit N" before it powers off (tests/linux/init,
# vmrun.test=run: the test kernel has no /dev/port or ioperm, so the verdict
# travels by the console, not the debug-exit port); 125 when the run gave
# no verdict (no kernel, no boot, timeout: the log says why).
#
# The kernel and the initramfs are tests/linux's: the first run builds them
# (tests/linux/build-kernel.sh and build-initramfs.sh, minutes; they install
# their Debian packages through sudo), later runs find them in
# ~/.cache/vmrun.  COMMAND reaches the guest as /vmrun-run.sh in a second
# cpio archive appended to the initramfs (the kernel unpacks concatenated
# archives), written by the kernel's own gen_init_cpio: no root, no loop
# device, and no quoting limits of the kernel command line.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

vmrun=$repo/build/vmrun log=ci-linux-test.log timeout=600 cpus=1
usage() { echo "usage: ${0##*/} [-v VMRUN] [-l LOG] [-t SECONDS] [-c CPUS] COMMAND" >&2; exit 125; }
while getopts v:l:t:c:h opt; do
	case $opt in
	v) vmrun=$OPTARG ;;
	l) log=$OPTARG ;;
	t) timeout=$OPTARG ;;
	c) cpus=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
(($# == 1)) || usage
command=$1
[[ -x $vmrun ]] || { echo "FAIL: $vmrun: no vmrun there (build it, or pass -v VMRUN)" >&2; exit 125; }

# VMRUN_LINUX_BZIMAGE, VMRUN_LINUX_GEN_INIT_CPIO, VMRUN_LINUX_INITRAMFS.
kernel_env=$("$repo/tests/linux/build-kernel.sh") || { echo "FAIL: building the test kernel" >&2; exit 125; }
eval "$kernel_env"
initramfs_env=$("$repo/tests/linux/build-initramfs.sh" "$VMRUN_LINUX_GEN_INIT_CPIO") ||
	{ echo "FAIL: building the test initramfs" >&2; exit 125; }
eval "$initramfs_env"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "$command" >"$tmp/run.sh"
printf 'file /vmrun-run.sh %s 0755 0 0\n' "$tmp/run.sh" >"$tmp/manifest"
"$VMRUN_LINUX_GEN_INIT_CPIO" -t 0 "$tmp/manifest" >"$tmp/run.cpio" ||
	{ echo "FAIL: gen_init_cpio" >&2; exit 125; }
cat "$VMRUN_LINUX_INITRAMFS" "$tmp/run.cpio" >"$tmp/initrd"

# stdin from /dev/null: a CI job has no terminal, and the guest's command
# should not wait for input.  tee: the live console and the log at once.
# panic=-1: a guest kernel that panics reboots at once instead of hanging
# until the timeout.
"$vmrun" --kernel "$VMRUN_LINUX_BZIMAGE" --initrd "$tmp/initrd" --mem 128M --cpus "$cpus" \
	--cmdline "console=ttyS0 vmrun.test=run panic=-1" --timeout "$timeout" </dev/null | tee "$log"
status=${PIPESTATUS[0]}

verdict=$(sed -n 's/^vmrun-run: exit \([0-9][0-9]*\)\r\{0,1\}$/\1/p' "$log" | tail -n 1)
if [[ -z $verdict ]]; then
	echo "FAIL: no verdict from the guest; vmrun ended the run with status $status (log: $log)"
	exit 125
fi
# 0: the kernel powered off through ACPI; 10: every vCPU halted, how a kernel
# without ACPI powers off.
((status == 0 || status == 10)) ||
	echo "warning: the guest gave its verdict, but vmrun ended with status $status, not 0 or 10 (poweroff)"
if ((verdict == 0)); then
	echo "PASS (log: $log)"
else
	echo "FAIL: the test command exited with $verdict (log: $log)"
fi
exit "$verdict"
