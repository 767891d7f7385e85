#!/usr/bin/env bash
# Quick start: install dependencies, build vmrun, then boot two guests.
#
# 1. The smoke test (seconds): the example guest prints its greeting through
#    the serial console and exits through the debug-exit port; vmrun exits
#    with the guest's status.
# 2. The job vmrun is for: a Linux kernel on a qcow2 root disk,
#      vmrun --kernel bzImage --disk root.qcow2 --cmdline 'console=ttyS0 root=/dev/vda ...'
#    The kernel is the repository's test kernel (tests/linux/build-kernel.sh:
#    Debian's linux-source with tests/linux/kernel.config; built on the first
#    run, minutes, then cached in ~/.cache/vmrun).  The disk is an ext4
#    filesystem made by mkfs.ext4 -d from a folder holding a static busybox
#    and an init script, turned into a qcow2 base by qemu-img convert, with a
#    qcow2 overlay on top made by `vmrun img create`.  The guest's init
#    prints VMRUN-QUICKSTART-OK and powers off (vmrun exits with 0 when the
#    kernel has ACPI, 10 without: every vCPU halted).
#
# Each step says how long it took.  The build folder is build/ (or
# $VMRUN_BUILD); work files go to its quickstart/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${VMRUN_BUILD:-build}

# `timed NAME COMMAND...`: run COMMAND, then say how long it took.
timed() {
	local name=$1 t0=$EPOCHREALTIME
	shift
	echo "== $name"
	"$@"
	echo "   ($name: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s)"
}
t_start=$EPOCHREALTIME

timed "installing dependencies" scripts/install-deps.sh

build_vmrun() {
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$build" -j"$(nproc)" --target vmrun guest_hello >/dev/null
}
timed "building vmrun and the example guest" build_vmrun

hello() {
	echo "+ $build/vmrun --kernel $build/tests/guest/hello.elf --cmdline 'exit=0'"
	local status=0
	"$build/vmrun" --kernel "$build/tests/guest/hello.elf" --cmdline 'exit=0' || status=$?
	echo "vmrun exited with status $status (the guest wrote 0 to the debug-exit port: (0 << 1) | 1 = 1)"
	[[ $status -eq 1 ]]
}
timed "smoke test: the example guest" hello

# VMRUN_LINUX_BZIMAGE, VMRUN_LINUX_GEN_INIT_CPIO; then VMRUN_LINUX_INITRAMFS,
# whose static busybox the root disk reuses.
linux_kernel() {
	local env
	env=$(tests/linux/build-kernel.sh)
	eval "$env"
	env=$(tests/linux/build-initramfs.sh "$VMRUN_LINUX_GEN_INIT_CPIO")
	eval "$env"
	echo "   kernel: $VMRUN_LINUX_BZIMAGE"
}
timed "the Linux test kernel (cached after the first build)" linux_kernel

work=$(cd "$build" && pwd)/quickstart
root_disk() {
	rm -rf "$work"
	mkdir -p "$work/rootfs/bin" "$work/rootfs/sbin" "$work/rootfs/dev" "$work/rootfs/proc"
	(cd "$work/rootfs" && cpio -i --quiet --no-absolute-filenames bin/busybox) \
		<"$VMRUN_LINUX_INITRAMFS"
	# Links for the applets init runs before /proc is mounted (busybox finds
	# itself through /proc/self/exe to run the others without links).
	for applet in sh mount poweroff; do
		ln -s busybox "$work/rootfs/bin/$applet"
	done
	cat >"$work/rootfs/sbin/init" <<-'EOF'
	#!/bin/sh
	export PATH=/bin
	mount -t proc proc /proc
	while read -r dev mnt type opts rest; do
	    [ "$mnt" = / ] && echo "quickstart: / is $type ($opts), from the virtio-blk disk"
	done </proc/mounts
	echo VMRUN-QUICKSTART-OK
	exec poweroff -f
	EOF
	chmod 755 "$work/rootfs/sbin/init"
	# Inode tables and journal zeroed now: no ext4lazyinit in the guest.
	truncate -s 16M "$work/root.raw"
	mkfs.ext4 -q -F -L vmrun-root -d "$work/rootfs" \
		-E lazy_itable_init=0,lazy_journal_init=0 "$work/root.raw"
	qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/root-base.qcow2"
	rm "$work/root.raw"
	"$build/vmrun" img create -b "$work/root-base.qcow2" -F qcow2 "$work/root.qcow2"
}
timed "the qcow2 root disk (mkfs.ext4 -d, qemu-img convert, vmrun img create)" root_disk

linux() {
	# panic=-1: a guest kernel that panics reboots at once (vmrun exits 6)
	# rather than hang until --timeout.
	local cmdline="console=ttyS0 root=/dev/vda ro rootfstype=ext4 init=/sbin/init panic=-1"
	local cmd=("$build/vmrun" --kernel "$VMRUN_LINUX_BZIMAGE" --disk "$work/root.qcow2"
		--mem 128M --cmdline "$cmdline" --timeout 600)
	echo "+ ${cmd[*]:0:8} '$cmdline' ${cmd[*]:9}"
	local status=0
	"${cmd[@]}" </dev/null | tee "$work/console.log" || status=${PIPESTATUS[0]}
	echo "vmrun exited with status $status (0: the guest powered off through ACPI; 10: without)"
	grep -q '^VMRUN-QUICKSTART-OK' "$work/console.log" ||
		{ echo "quickstart: the guest's init never printed its marker" >&2; return 1; }
	[[ $status -eq 0 || $status -eq 10 ]]
}
timed "Linux on the qcow2 root disk" linux

echo "quickstart: done in $(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
