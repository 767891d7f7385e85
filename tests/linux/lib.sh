# Shared helpers for tests/linux/build-*.sh.  Sourced, not executed.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Cache root, outside the source tree.
vmrun_cache_root() { printf '%s\n' "${VMRUN_CACHE:-${HOME:?}/.cache/vmrun}"; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

pkg_installed() {
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# True when apt knows a candidate version for every package given.
apt_has_candidates() {
    local p policy
    for p in "$@"; do
        # Not `apt-cache ... | grep -q`: under pipefail, grep -q closing the
        # pipe early makes the pipeline fail.
        policy=$(apt-cache policy "$p" 2>/dev/null)
        grep -q '^  Candidate: [^(]' <<<"$policy" || return 1
    done
}

# Install the packages that are not installed yet; `apt-get update` only
# when apt does not know one of them.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing: ${missing[*]}"
    if ! apt_has_candidates "${missing[@]}"; then
        as_root apt-get update -q >&2
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

sha256_of() { cat "$@" | sha256sum | cut -c1-16; }
