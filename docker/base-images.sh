#!/usr/bin/env bash
# Make the base image the Dockerfiles start from (`FROM ivm-base:sid`) without
# an image registry: import a Debian sid root filesystem built by debootstrap.
#
#   docker/base-images.sh            -> prints the image name on stdout
#
# The root filesystem is the one the tests already use
# (tests/asterisk/provision.sh: Debian sid + Asterisk 22 + baresip, cached in
# ${IVM_ROOTFS:-~/.cache/ivm/rootfs-sid}; building it needs root once).
# The image is labelled with the rootfs's ready marker, so it is imported
# again only when the rootfs was rebuilt. Safe to run concurrently (flock).
#
# On a machine that can pull from a registry, this script is not needed:
#     docker pull debian:sid && docker tag debian:sid ivm-base:sid
# (the asterisk Dockerfile installs Debian's asterisk package when the base
# image lacks it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${IVM_BASE_IMAGE:-ivm-base:sid}

say() { echo "base-images.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running, may this user use it?)"

ROOTFS=$(bash "$HERE/../tests/asterisk/provision.sh") || die "cannot provision the root filesystem"
[ -f "$ROOTFS/.ivm-ready" ] || die "$ROOTFS has no .ivm-ready marker"
# What the image was made from: the marker holds Asterisk's version and the build time.
STAMP=$(sha256sum <"$ROOTFS/.ivm-ready" | cut -c1-16)

current() { docker image inspect --format '{{ index .Config.Labels "ivm.rootfs" }}' "$IMAGE" 2>/dev/null || true; }

if [ "$(current)" = "$STAMP" ]; then echo "$IMAGE"; exit 0; fi

LOCK="${TMPDIR:-/tmp}/ivm-base-image.lock"
exec 9>>"$LOCK"
flock -w 600 9 || die "timed out waiting for $LOCK"
if [ "$(current)" = "$STAMP" ]; then echo "$IMAGE"; exit 0; fi

say "importing $ROOTFS as $IMAGE (about a minute)"
start=$(date +%s)
# Import under a temporary name and tag it only once it runs: a failed tar
# must not leave an empty image carrying the label.
TMP_IMAGE="ivm-base-import:$$"
# Numeric owners as in the rootfs; the ready marker and mount points' contents stay out.
if ! tar --numeric-owner -C "$ROOTFS" --exclude=./.ivm-ready --exclude='./proc/*' \
        --exclude='./sys/*' --exclude='./dev/*' -cf - . |
    docker import \
        --change "LABEL ivm.rootfs=$STAMP" \
        --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        - "$TMP_IMAGE" >/dev/null; then
    docker rmi "$TMP_IMAGE" >/dev/null 2>&1 || true
    die "docker import failed"
fi
if ! docker run --rm --network none "$TMP_IMAGE" /bin/true; then
    docker rmi "$TMP_IMAGE" >/dev/null 2>&1 || true
    die "the imported image does not run /bin/true"
fi
docker tag "$TMP_IMAGE" "$IMAGE"
docker rmi "$TMP_IMAGE" >/dev/null
say "ready in $(( $(date +%s) - start )) s: $IMAGE"
echo "$IMAGE"
