#!/usr/bin/env bash
# Builds the base image the compose test runs on, without pulling anything:
# Debian bookworm (debootstrap --variant=minbase) with Python 3.11 in a venv
# on PATH (what python:3.11-slim gives: `python`, `pip`), redis-server and
# redis-cli (the Redis stand-in, same command as compose.yaml's), the host's
# CA bundle and /etc/pip.conf (so pip inside `docker build --network host`
# reaches the index as the host does), then `docker import`.
#
#   bash tests/deploy/base-image.sh TAG
#
# A tag that exists is kept (a cache between runs on one machine; the test
# names the tag after this file's hash, so an edit here builds a new one).
set -euo pipefail

tag=${1:?usage: base-image.sh TAG}
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists"
    exit 0
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/spacer-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "debootstrap bookworm into $root (mirror $mirror)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,redis-server,redis-tools,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -30 "$root.log" >&2
    echo "debootstrap failed (log above): is $mirror reachable?" >&2
    exit 1
}
rm -f "$root.log"

# The host's trust and index settings, as a user's build machine would have.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
if [ -f /etc/pip.conf ]; then
    cp /etc/pip.conf "$root/etc/pip.conf"
fi
chroot "$root" python3 -m venv /opt/venv
# The official redis image's /data belongs to its redis user; a named volume
# mounted there inherits that ownership.
mkdir -p "$root/data" "$root/usr/local/etc/redis"
chroot "$root" chown redis:redis /data
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc \
    "$root"/usr/share/man "$root"/usr/share/locale

tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    - "$tag" >/dev/null
echo "base image $tag built"
