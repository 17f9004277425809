#!/usr/bin/env bash
# Make a stand-in for python:3.11-slim-bookworm from Debian packages, for machines where no registry answers.
# Debian bookworm's python3 is 3.11 (/usr/bin/python3); the image's venv hides the path difference from
# python:3.11-slim (/usr/local/bin/python). Idempotent: does nothing when the tag exists (FORCE=1 rebuilds).
set -euo pipefail

tag=${1:-localhost/python:3.11-slim-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

if [[ -z ${FORCE:-} ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image: $tag exists (FORCE=1 to rebuild)"
    exit 0
fi

"$(dirname "$0")/ensure_command.sh" debootstrap debootstrap

rootfs=$(mktemp -d /tmp/trainjob-rootfs.XXXXXX)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT

echo "base image: debootstrap $suite minbase into $rootfs ($mirror)"
debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
# Slim like the official image: no apt lists, no docs, no logs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/var/log/*

tar -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $suite minbase + python3, python3-venv, ca-certificates" \
    - "$tag" >/dev/null
echo "base image: $tag ($(docker image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
