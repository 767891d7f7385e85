#!/usr/bin/env bash
# Install what building and testing vmrun needs on Debian (12+), and nothing
# when it is all there already.  Runs apt-get as root, or through sudo.
set -euo pipefail

packages=(gcc make cmake pkg-config libc6-dev libjansson-dev libcmocka-dev python3
          util-linux binutils zlib1g-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev
          libaio-dev libfdt-dev device-tree-compiler qemu-utils strace iproute2)
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
