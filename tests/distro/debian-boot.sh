#!/usr/bin/env bash
# Boot Debian 12's own kernel and initrd on vmrun with an ext4 root on a
# qcow2 disk, the way a new user would, and check from the host what the
# guest wrote.
#
# usage: debian-boot.sh VMRUN [TIMEOUT_SECONDS]
#
# - The kernel is /boot/vmlinuz-*-amd64 from Debian's linux-image-amd64
#   package, unmodified (installed here when missing).
# - The initrd is made by Debian's initramfs-tools (mkinitramfs) from that
#   kernel's own modules, with MODULES=list naming virtio_pci, virtio_blk
#   and ext4, as a user trimming an initrd for a VM would: the kernel loads
#   them from the initrd, finds the disk over virtio-pci and mounts it.
#   (MODULES=most, Debian's default, works too; its 130 MB cpio only takes
#   far longer to unpack where guest kernel code is interpreted.)  By
#   default the initrd leaves udev out (a hook of the configuration, below):
#   initramfs-tools' init loads the listed modules itself and finds
#   /dev/vda in the kernel's devtmpfs.  VMRUN_DISTRO_STOCK=1 keeps udev.
# - The root filesystem: ext4 made by mke2fs -d from a directory with
#   Debian's static busybox and an init script, converted to qcow2 by
#   qemu-img.  The init writes /vmrun-distro-marker (a random token given
#   on the kernel command line, the kernel release and the loaded modules),
#   syncs and powers off.
# - Afterwards the host converts the qcow2 image back with qemu-img, checks
#   the filesystem with e2fsck -fn and reads the marker with debugfs (the
#   external oracles: neither knows anything of vmrun).
#
# Exit status 0 when the guest powered off (vmrun status 0, or 10 on a
# kernel that halts instead) and the marker holds the token; timings are
# printed on stderr as "distro: ...".
#
# On a nested host without VT-x, where every instruction of guest kernel
# code is interpreted, the kernel reaches the initrd's /init after about 25
# minutes with the shortcuts below (an hour without), and the initrd's shell
# scripts then run with every system call, page fault and interrupt
# interpreted (README, "Booting a distribution kernel"): it is not part of
# the default test run.  Enable it with
#   cmake -DVMRUN_DISTRO_TESTS=ON ... && ctest -L distro
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../linux/lib.sh"

[ $# -ge 1 ] || die "usage: ${0##*/} VMRUN [TIMEOUT_SECONDS]"
vmrun=$(realpath "$1")
timeout_s=${2:-7200}
# Stock: the initrd as initramfs-tools makes it (udev, signed modules) and
# the command line without the shortcuts below.  The default where the CPU
# has VT-x or AMD-V; VMRUN_DISTRO_STOCK=1 or 0 forces it on or off.
if grep -qwE 'vmx|svm' /proc/cpuinfo; then
    stock=${VMRUN_DISTRO_STOCK:-1}
else
    stock=${VMRUN_DISTRO_STOCK:-0}
fi
case $stock in 0 | 1) ;; *) die "VMRUN_DISTRO_STOCK must be 0 or 1" ;; esac

# Shortcuts for hosts without VT-x, where every instruction of guest kernel
# code is interpreted; each skips a part of the boot that has nothing to do
# with what this test checks. Guest times from initcall_debug on 6.1.0-57:
# - rodata=off: no W+X check of the kernel's page tables (about 700 s, its
#   walk steps through the 4 GiB of ESPfix aliases a page at a time);
# - ipv6.disable=1: inet6_init returns at once (374 s);
# - initcall_blacklist=init_encrypted: the encrypted-keys type (157 s);
# - fastboot: initramfs-tools skips its fsck of the root (the host runs
#   e2fsck on the image afterwards).
# and in the initrd: no udev, and the modules without their signatures (the
# kernel then checks none: SHA-256 of the module interpreted runs at about
# 700 bytes a second, ext4.ko alone is 2 MB; it taints the kernel "E").
shortcuts="rodata=off ipv6.disable=1 initcall_blacklist=init_encrypted fastboot"
[ "$stock" = 0 ] || shortcuts=
[ -x "$vmrun" ] || die "$vmrun: not executable"

ensure_packages linux-image-amd64 initramfs-tools busybox qemu-utils e2fsprogs cpio

kernel=$(ls -1v /boot/vmlinuz-*-amd64 2>/dev/null | tail -n1)
[ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64 after installing linux-image-amd64"
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "/lib/modules/$kver missing"

# The initrd and the busybox for the root filesystem are built once per
# kernel release and version of this script.
key=$(sha256_of "$here/debian-boot.sh")
cache=$(vmrun_cache_root)/distro-debian-$kver-$key-stock$stock
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

if [ ! -f "$cache/initrd.img" ]; then
    log "making the initrd with mkinitramfs (MODULES=list: virtio_pci virtio_blk ext4)"
    rm -rf "$cache/conf"
    cp -r /etc/initramfs-tools "$cache/conf"
    sed -i -e 's/^MODULES=.*/MODULES=list/' -e 's/^COMPRESS=.*/COMPRESS=gzip/' \
        "$cache/conf/initramfs.conf"
    printf '%s\n' virtio_pci virtio_blk ext4 >"$cache/conf/modules"
    if [ "$stock" = 0 ]; then
        # A hook of this configuration, run after udev's own hook: the
        # initrd keeps initramfs-tools' init, busybox and modprobe but not
        # udev, and its modules lose their signatures (see "shortcuts").
        # /dev is the kernel's devtmpfs, where /dev/vda appears when
        # virtio_blk probes; the init-bottom script left only moves it to
        # the root, which is the one thing of udev's the init relies on.
        mkdir -p "$cache/conf/hooks"
        cat >"$cache/conf/hooks/zz-vmrun-no-udev" <<'HOOK'
#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
# Signed modules end in a signature, a struct module_signature (12 bytes,
# the signature's length big-endian in its last 4) and this marker.
find "$DESTDIR" -name '*.ko' | while read -r ko; do
    [ "$(tail -c 28 "$ko")" = "~Module signature appended~" ] || continue
    siglen=$(tail -c 32 "$ko" | head -c 4 | od -An -tu4 --endian=big | tr -d ' ')
    truncate -s $(($(stat -c %s "$ko") - 40 - siglen)) "$ko"
done
rm -rf "$DESTDIR/lib/systemd/systemd-udevd" "$DESTDIR/bin/udevadm" \
       "$DESTDIR/lib/udev" "$DESTDIR/etc/udev" "$DESTDIR/scripts/init-top/udev"
cat >"$DESTDIR/scripts/init-bottom/udev" <<'SCRIPT'
#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
mount -n -o move /dev "${rootmnt:?}/dev"
rm -rf /dev
ln -s "${rootmnt}/dev" /dev
SCRIPT
chmod 755 "$DESTDIR/scripts/init-bottom/udev"
HOOK
        chmod 755 "$cache/conf/hooks/zz-vmrun-no-udev"
    fi
    mkinitramfs -d "$cache/conf" -o "$cache/initrd.tmp" "$kver" >&2
    mv "$cache/initrd.tmp" "$cache/initrd.img"
fi

if [ ! -x "$cache/busybox" ]; then
    log "fetching Debian's static busybox"
    rm -rf "$cache/deb"
    mkdir "$cache/deb"
    (cd "$cache/deb" && apt-get download -q busybox-static >&2)
    dpkg-deb -x "$cache"/deb/busybox-static_*.deb "$cache/deb/root"
    cp "$cache/deb/root/bin/busybox" "$cache/busybox.tmp"
    rm -rf "$cache/deb"
    mv "$cache/busybox.tmp" "$cache/busybox"
fi

work=$(mktemp -d /tmp/vmrun-distro.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc}
cp "$cache/busybox" "$root/bin/busybox"
for applet in sh mount umount sync cat uname poweroff; do
    ln -s busybox "$root/bin/$applet"
done
cat >"$root/sbin/init" <<'EOF'
#!/bin/sh
# Runs as PID 1 on the root filesystem the initrd mounted from /dev/vda.
mount -t proc proc /proc
token=none
for word in $(cat /proc/cmdline); do
    case $word in vmrun.token=*) token=${word#vmrun.token=} ;; esac
done
{
    echo "token=$token"
    echo "release=$(uname -r)"
    echo "modules:"
    cat /proc/modules
} >/vmrun-distro-marker
sync
echo "vmrun-distro: marker written, powering off"
poweroff -f
EOF
chmod 755 "$root/sbin/init"

token=$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
truncate -s 64M "$work/root.raw"
mke2fs -q -t ext4 -d "$root" "$work/root.raw"
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/root.qcow2"
rm "$work/root.raw"

log "booting $kernel with its initrd (stock=$stock; shortcuts: ${shortcuts:-none}); the root is an ext4 qcow2 on virtio-pci (timeout ${timeout_s}s)"
start=$(date +%s.%N)
status=0
"$vmrun" --kernel "$kernel" --initrd "$cache/initrd.img" --mem 1G \
    --disk "$work/root.qcow2" \
    --cmdline "root=/dev/vda rw console=ttyS0 panic=-1 $shortcuts vmrun.token=$token" \
    --timeout "$timeout_s" --exit-json "$work/exit.json" \
    --console "stdio,log=$work/console.log" </dev/null || status=$?
end=$(date +%s.%N)
log "vmrun ended with status $status after $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.0f", b-a}') s"
[ -f "$work/exit.json" ] && log "exit json: $(cat "$work/exit.json")"

# Kernel timestamps of the milestones, from the console log.
for milestone in "Linux version" "Trying to unpack rootfs" "Run /init" "virtio_blk virtio" \
                 "EXT4-fs (vda)" "vmrun-distro: marker written"; do
    line=$(grep -m1 -F "$milestone" "$work/console.log" || true)
    log "milestone '$milestone': ${line:-(not seen)}"
done

case $status in
0 | 10) ;;
*) die "vmrun ended with status $status, want 0 (poweroff) or 10 (halt)" ;;
esac

qemu-img check "$work/root.qcow2" >&2 || die "qemu-img check found errors in the root image"
qemu-img convert -f qcow2 -O raw "$work/root.qcow2" "$work/check.raw"
e2fsck -fn "$work/check.raw" >&2 || die "e2fsck found errors in the guest's filesystem"
marker=$(debugfs -R "cat /vmrun-distro-marker" "$work/check.raw" 2>/dev/null)
printf '%s\n' "$marker" | sed 's/^/distro: marker: /' >&2
grep -qx "token=$token" <<<"$marker" || die "the marker does not hold this run's token"
grep -qx "release=$kver" <<<"$marker" || die "the marker names another kernel release"
for m in virtio_pci virtio_blk ext4; do
    grep -q "^$m " <<<"$marker" || die "module $m was not loaded in the guest"
done
log "passed: Debian's $kver reached its root on a qcow2 disk over virtio-pci and wrote the marker"
