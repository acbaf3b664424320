#!/usr/bin/env bash
# Make a base image equivalent to python:3.11-slim-bookworm from Debian's own packages, for sites where Docker Hub
# cannot be reached but a Debian mirror can:
#   images/base.sh [REFERENCE]        -> REFERENCE (default localhost/yolo-distill-base:bookworm)
# then: images/build.sh --base REFERENCE REGISTRY
# The image has python 3.11 with pip in a virtual environment on PATH (/opt/python; Debian's own python refuses
# system-wide pip installs), the shared libraries OpenCV needs, and a /tmp every user can write. It is made with
# mmdebstrap (no container runtime needed) and imported with docker, podman or buildah, whichever is here.
set -euo pipefail
REF=${1:-localhost/yolo-distill-base:bookworm}
SUITE=${SUITE:-bookworm}
# What the Dockerfile's steps need from the base (tests/test_image.py checks this list against the Dockerfile).
PACKAGES=python3,python3-venv,libgl1,libglib2.0-0,ca-certificates,passwd
for tool in mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install mmdebstrap)" >&2; exit 2; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
mmdebstrap --variant=minbase --include="$PACKAGES" \
    --customize-hook='chroot "$1" python3 -m venv /opt/python' \
    --customize-hook='chroot "$1" /opt/python/bin/pip --version' \
    --customize-hook='chmod 1777 "$1/tmp"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$WORK/base.tar"
CHANGES=(--change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
         --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
if docker info >/dev/null 2>&1; then
    docker import "${CHANGES[@]}" "$WORK/base.tar" "$REF" >/dev/null
elif command -v podman >/dev/null; then
    podman import "${CHANGES[@]}" "$WORK/base.tar" "$REF" >/dev/null
else
    echo "error: neither docker nor podman can import the root filesystem" >&2
    exit 1
fi
echo "base $REF made in $(( $(date +%s) - start )) s" >&2
echo "$REF"
