#!/usr/bin/env bash
# Install what building and testing vmrun needs on Debian (12+), and nothing
# when it is all there already.  Runs apt-get as root, or through sudo.
set -euo pipefail

# e2fsprogs (mkfs.ext4 -d) and cpio: scripts/quickstart.sh's root disk.
# libcap-ng-dev and libseccomp-dev: the confinement after set-up (src/core/sandbox.c).
# acpica-tools: iasl, the oracle that disassembles vmrun's ACPI tables in
# tests/unit/test_acpi.c (which skips that check, saying so, without it).  The
# Linux test kernel's own packages (linux-source, bc, bison, flex, libelf-dev,
# xz-utils) are installed when it is first built, by tests/linux/build-kernel.sh
# (tests/linux/lib.sh's ensure_packages), by quickstart.sh and test.sh alike.
packages=(gcc make cmake pkg-config libc6-dev libjansson-dev libcmocka-dev python3
          util-linux binutils zlib1g-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev
          libaio-dev libfdt-dev nettle-dev libcap-ng-dev libseccomp-dev device-tree-compiler
          qemu-utils strace iproute2
          e2fsprogs cpio acpica-tools)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}"
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi
