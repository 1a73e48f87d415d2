#!/usr/bin/env bash
# Build (or reuse) a cached Debian sid root filesystem holding Asterisk 22 and
# baresip, for the Asterisk adapter's integration tests and demos.
#
#   tests/asterisk/provision.sh        -> prints the rootfs path on stdout
#
# Cache:   ${IVM_ROOTFS:-$HOME/.cache/ivm/rootfs-sid}
# Mirror:  ${IVM_DEBIAN_MIRROR:-} (empty = debootstrap's default mirror)
# Safe to run concurrently: builders serialise on "$ROOTFS.lock", build into a
# temp dir next to the cache and rename it into place; ".ivm-ready" inside the
# rootfs is written last. A rootfs without the marker is rebuilt.
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
ROOTFS=${IVM_ROOTFS:-$HOME/.cache/ivm/rootfs-sid}
ROOTFS=${ROOTFS%/}
MIRROR=${IVM_DEBIAN_MIRROR:-}
PACKAGES=asterisk,asterisk-modules,baresip-core
MARKER=.ivm-ready
PARENT=$(dirname "$ROOTFS")
BASE=$(basename "$ROOTFS")
LOCK="$PARENT/$BASE.lock"

say() { echo "provision.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Does DIR hold a usable rootfs? (runs the rootfs's asterisk via its own loader)
usable() {
    local d=$1
    [ -f "$d/$MARKER" ] || return 1
    [ -x "$d/lib64/ld-linux-x86-64.so.2" ] || return 1
    [ -f "$d/usr/sbin/asterisk" ] && [ -f "$d/usr/bin/baresip" ] || return 1
    [ -d "$d/usr/lib/x86_64-linux-gnu/asterisk/modules" ] || return 1
    "$d/lib64/ld-linux-x86-64.so.2" \
        --library-path "$d/usr/lib/x86_64-linux-gnu:$d/lib/x86_64-linux-gnu" \
        "$d/usr/sbin/asterisk" -V >/dev/null 2>&1
}

# rm -rf that first unmounts anything debootstrap left mounted inside (a killed
# debootstrap can leave proc/sys mounted in the target).
safe_rm() {
    local d=$1 m
    [ -e "$d" ] || return 0
    d=$(realpath "$d")
    if [ -r /proc/self/mounts ]; then
        awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    rm -rf --one-file-system "$d"
}

if usable "$ROOTFS"; then echo "$ROOTFS"; exit 0; fi

[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported (got $(uname -m))"
mkdir -p "$PARENT" || die "cannot create $PARENT; set IVM_ROOTFS to a writable path"
command -v flock >/dev/null || die "flock (util-linux) is missing; install util-linux"

exec 9>>"$LOCK"
if ! flock -n 9; then
    say "another process is provisioning $ROOTFS; waiting for it (up to 20 min)"
    flock -w 1200 9 || die "timed out waiting for lock $LOCK; remove it if no provision.sh is running"
fi

# Re-check under the lock: a concurrent builder may have finished meanwhile.
if usable "$ROOTFS"; then echo "$ROOTFS"; exit 0; fi

[ "$(id -u)" = 0 ] || die "building the rootfs needs root (debootstrap). Run once as root:
    sudo IVM_ROOTFS=$ROOTFS $0
or point IVM_ROOTFS at an already provisioned rootfs."

if ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "debootstrap is missing and apt-get is unavailable; install debootstrap"
    say "installing debootstrap"
    apt-get update -qq >&2 || die "apt-get update failed; check network access to the Debian mirror"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 ||
        die "apt-get install debootstrap failed"
fi

# We hold the lock, so no one else is building: clear leftovers of crashed runs.
for old in "$PARENT/.$BASE.tmp."* "$PARENT/.$BASE.old."*; do
    [ -e "$old" ] && { say "removing leftover $old"; safe_rm "$old"; }
done
if [ -e "$ROOTFS" ]; then
    say "$ROOTFS exists but is not usable; rebuilding"
    OLD=$(mktemp -d "$PARENT/.$BASE.old.XXXXXX")
    mv "$ROOTFS" "$OLD/rootfs"
    safe_rm "$OLD"
fi

TMP=$(mktemp -d "$PARENT/.$BASE.tmp.XXXXXX")
trap 'safe_rm "$TMP"' EXIT
say "debootstrap sid into $TMP (about 1 min, ~500 MB)"
start=$(date +%s)
# shellcheck disable=SC2086
if ! debootstrap --variant=minbase --include="$PACKAGES" sid "$TMP/rootfs" $MIRROR >"$TMP/debootstrap.log" 2>&1 9>&-; then
    tail -n 30 "$TMP/debootstrap.log" >&2
    die "debootstrap failed (log above). Check network access to the Debian mirror, or set IVM_DEBIAN_MIRROR"
fi
R="$TMP/rootfs"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* 2>/dev/null || true
touch "$R/$MARKER"
usable "$R" || { rm -f "$R/$MARKER"; die "rootfs built but asterisk does not run from it; see $TMP/debootstrap.log"; }
"$R/lib64/ld-linux-x86-64.so.2" --library-path "$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu" \
    "$R/usr/sbin/asterisk" -V >"$R/$MARKER.tmp" 2>&1
date -u +%FT%TZ >>"$R/$MARKER.tmp"
mv "$R/$MARKER.tmp" "$R/$MARKER"           # marker written last
mv -T "$R" "$ROOTFS"                        # atomic rename into place
safe_rm "$TMP"; trap - EXIT
say "ready in $(( $(date +%s) - start )) s: $ROOTFS"
echo "$ROOTFS"
