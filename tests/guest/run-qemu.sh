#!/bin/sh
# Boot a test guest under QEMU microvm through its PVH note: a reference
# loader, independent of vmrun, for telling guest bugs from VMM bugs.
#
# Usage: tests/guest/run-qemu.sh GUEST.elf [CMDLINE [QEMU ARGS...]]
# Exit status: QEMU's, i.e. the guest's (code << 1) | 1 on a debug exit.
# QEMU_CPU overrides the CPU model; the default drops arch-capabilities,
# which the nested KVM of the development machines refuses to set.
set -eu
if [ $# -lt 1 ]; then
	echo "usage: $0 GUEST.elf [CMDLINE [QEMU ARGS...]]" >&2
	exit 2
fi
kernel=$1
cmdline=${2-}
[ $# -ge 2 ] && shift 2 || shift 1
exec qemu-system-x86_64 \
	-M microvm,x-option-roms=off,rtc=off,isa-serial=on \
	-enable-kvm -cpu "${QEMU_CPU:-host,-arch-capabilities}" -m 128 \
	-nodefaults -no-user-config -nographic -serial stdio \
	-device isa-debug-exit,iobase=0xf4,iosize=4 \
	-kernel "$kernel" -append "$cmdline" "$@"
