#!/usr/bin/env bash
# Build the busybox initramfs for vmrun's Linux guest tests.
#
# usage: build-initramfs.sh GEN_INIT_CPIO
#
# An uncompressed cpio "newc" archive holding Debian's static busybox, the
# few applet links /init uses, /dev/console and tests/linux/init as /init,
# written by the kernel's own usr/gen_init_cpio (GEN_INIT_CPIO, which
# build-kernel.sh keeps next to the kernel): it creates the device node
# without privileges.  Uncompressed, and with a handful of links instead of
# busybox's ~270: on a nested host the guest kernel's work is interpreted,
# and unpacking a gzip archive took 27 s, each symlink about 30 ms.
#
# Built once into
#   ${VMRUN_CACHE:-$HOME/.cache/vmrun}/initramfs-<busybox-static version>-<hash>/
# (<hash>: sha256 of init and this script) and reused while those are
# unchanged.  On success stdout holds only
#   VMRUN_LINUX_INITRAMFS=<path>
# so a test can `eval "$(tests/linux/build-initramfs.sh ...)"`.
#
# busybox-static is fetched with `apt-get download` and unpacked into the
# cache rather than installed: installing it would remove Debian's dynamic
# `busybox` package (they conflict), which initramfs-tools on a developer's
# machine relies on.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

[ $# -eq 1 ] || die "usage: ${0##*/} GEN_INIT_CPIO"
gen_init_cpio=$1
[ -x "$gen_init_cpio" ] || die "$gen_init_cpio: not an executable (build-kernel.sh prints its path)"

# The applets /init runs, as links to /bin/busybox (umount and sync only
# in its vmrun.test=blk mode, ip, ping, nc and md5sum in vmrun.test=net).
applets="sh mount reboot poweroff umount sync ip ping nc md5sum"

policy=$(apt-cache policy busybox-static 2>/dev/null || true)
if ! grep -q '^  Candidate: [^(]' <<<"$policy"; then
    as_root apt-get update -q >&2
    policy=$(apt-cache policy busybox-static)
fi
version=$(sed -n 's/^  Candidate: //p' <<<"$policy")
[ -n "$version" ] && [ "$version" != "(none)" ] || die "apt knows no busybox-static"

key=$(sha256_of "$here/init" "$here/build-initramfs.sh")
dir=$(vmrun_cache_root)/initramfs-${version//[:\/]/_}-$key
out=$dir/initramfs.cpio
mkdir -p "$dir"

exec 9>"$dir/lock"
flock 9

if [ -f "$dir/stamp" ] && [ -f "$out" ]; then
    printf 'VMRUN_LINUX_INITRAMFS=%s\n' "$out"
    exit 0
fi

start=$SECONDS
log "building initramfs with busybox-static $version into $dir"

rm -rf "$dir/deb" "$dir/root"
mkdir "$dir/deb" "$dir/root"
(cd "$dir/deb" && apt-get download -q "busybox-static=$version" >&2)
dpkg-deb -x "$dir"/deb/busybox-static_*.deb "$dir/root"
busybox=$dir/root/bin/busybox
[ -x "$busybox" ] || die "no bin/busybox in the busybox-static package"

{
    for d in bin dev proc tmp; do
        echo "dir /$d 0755 0 0"
    done
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "file /bin/busybox $busybox 0755 0 0"
    echo "file /init $here/init 0755 0 0"
    for a in $applets; do
        echo "slink /bin/$a busybox 0777 0 0"
    done
} >"$dir/manifest"

# -t 0: every mtime 0, so the same inputs give the same bytes.
"$gen_init_cpio" -t 0 "$dir/manifest" >"$out.tmp"
mv "$out.tmp" "$out"
rm -rf "$dir/deb" "$dir/root"

elapsed=$((SECONDS - start))
printf 'busybox-static=%s\ninputs-sha256=%s\nbuild-seconds=%s\n' \
    "$version" "$key" "$elapsed" >"$dir/stamp"
log "built $(stat -c %s "$out") bytes in ${elapsed}s"
printf 'VMRUN_LINUX_INITRAMFS=%s\n' "$out"
