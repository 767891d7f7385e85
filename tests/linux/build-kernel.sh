#!/usr/bin/env bash
# Build the Linux kernel for vmrun's guest tests from Debian's linux-source.
#
# The kernel is tinyconfig + tests/linux/kernel.config, built once into
#   ${VMRUN_CACHE:-$HOME/.cache/vmrun}/linux-<package version>-<config hash>/
# and reused while the config fragment and the linux-source package version
# are unchanged.  On success stdout holds only shell assignments:
#   VMRUN_LINUX_BZIMAGE=<path>
#   VMRUN_LINUX_VMLINUX=<path>
#   VMRUN_LINUX_GEN_INIT_CPIO=<path>   (the kernel's initramfs writer, for
#                                       build-initramfs.sh)
# so a test can `eval "$(tests/linux/build-kernel.sh)"`.  Progress and the
# build log go to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
fragment=$here/kernel.config

# bc, bison, flex: kernel build tools; libelf-dev: objtool (ORC unwinder);
# xz-utils: unpacking the source tarball.  No libssl-dev: without modules
# and keyrings nothing signs or parses certificates.
ensure_packages linux-source bc bison flex libelf-dev xz-utils make gcc libc6-dev

# linux-source is a metapackage; the tarball belongs to linux-source-X.Y.
srcpkg=$(dpkg-query -W -f '${Depends}' linux-source |
         sed -n 's/^\(linux-source-[0-9][^ ,]*\).*/\1/p')
[ -n "$srcpkg" ] || die "cannot tell which linux-source-X.Y linux-source depends on"
version=$(dpkg-query -W -f '${Version}' "$srcpkg")
tarball=/usr/src/$srcpkg.tar.xz
[ -f "$tarball" ] || die "$tarball missing (is $srcpkg installed?)"

key=$(sha256_of "$fragment")
dir=$(vmrun_cache_root)/linux-${version//[:\/]/_}-$key
mkdir -p "$dir"

print_paths() {
    printf 'VMRUN_LINUX_BZIMAGE=%s\n' "$dir/bzImage"
    printf 'VMRUN_LINUX_VMLINUX=%s\n' "$dir/vmlinux"
    printf 'VMRUN_LINUX_GEN_INIT_CPIO=%s\n' "$dir/gen_init_cpio"
}

# One build per cache directory at a time; a second caller waits, then
# finds the stamp.
exec 9>"$dir/lock"
flock 9

if [ -f "$dir/stamp" ] && [ -f "$dir/bzImage" ] && [ -f "$dir/vmlinux" ] &&
   [ -x "$dir/gen_init_cpio" ]; then
    print_paths
    exit 0
fi

start=$SECONDS
log "building $srcpkg $version with $fragment into $dir"

src=$dir/src
if [ ! -f "$src/Makefile" ]; then
    log "unpacking $tarball"
    rm -rf "$dir/unpack" "$src"
    mkdir "$dir/unpack"
    tar -xJf "$tarball" -C "$dir/unpack"
    mv "$dir/unpack/$srcpkg" "$src"
    rmdir "$dir/unpack"
fi

cd "$src"
export KBUILD_BUILD_USER=vmrun KBUILD_BUILD_HOST=vmrun

log "configuring: tinyconfig + $fragment + olddefconfig"
make -s tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$fragment" >&2
make -s olddefconfig >&2

# Every option of the fragment must have taken effect: a dependency that
# is not met makes kconfig drop an option silently.
failed=()
while IFS= read -r line; do
    case $line in
    CONFIG_*=*)
        if ! grep -qxF -- "$line" .config; then
            sym=${line%%=*}
            got=$(grep -E "^(# )?$sym[= ]" .config || echo "absent")
            failed+=("$line (got: $got)")
        fi
        ;;
    "# CONFIG_"*" is not set")
        sym=${line#\# }
        sym=${sym%% *}
        if got=$(grep -E "^$sym=" .config); then
            failed+=("$line (got: $got)")
        fi
        ;;
    esac
done <"$fragment"
if [ "${#failed[@]}" -gt 0 ]; then
    log "error: these options of $fragment did not take effect:"
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi

log "building bzImage and vmlinux with -j$(nproc)"
make -j"$(nproc)" bzImage >&2
# usr/gen_init_cpio is a host tool of the initramfs build; a kernel with an
# empty INITRAMFS_SOURCE may not have built it.
make -s usr/gen_init_cpio >&2

cp arch/x86/boot/bzImage "$dir/bzImage.tmp"
cp vmlinux "$dir/vmlinux.tmp"
cp .config "$dir/config"
cp usr/gen_init_cpio "$dir/gen_init_cpio"
mv "$dir/bzImage.tmp" "$dir/bzImage"
mv "$dir/vmlinux.tmp" "$dir/vmlinux"
elapsed=$((SECONDS - start))
printf 'package=%s %s\nfragment-sha256=%s\nbuild-seconds=%s\n' \
    "$srcpkg" "$version" "$key" "$elapsed" >"$dir/stamp"
log "built in ${elapsed}s"
# The source tree (about 1.5 GB built) is not needed any more.
cd "$dir"
rm -rf "$src"
print_paths
