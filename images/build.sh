#!/usr/bin/env bash
# Build (and optionally push) the pipeline image, then print the reference to compile the pipeline with.
#   images/build.sh [--base REF] [--ca FILE] [--tag TAG] REGISTRY
#       REGISTRY      -> REGISTRY/yolo-distill:<version>-<git sha>  (--tag TAG: REGISTRY/yolo-distill:TAG)
#       --base REF    the base image (default: the Dockerfile's pinned official Python image; where Docker Hub cannot
#                     be reached, make one from Debian packages with images/base.sh)
#       --ca FILE     an extra CA bundle for pip inside the build (a TLS-inspecting proxy); a build secret, not a layer
#       --dry-run     print the build command, build nothing
#   PUSH=1 images/build.sh REGISTRY   -> also push; the printed reference is then the pushed digest
# Builds with docker where a daemon answers, else with buildah (rootless-friendly, chroot isolation: no container
# runtime needed). Last line printed:  export YOLO_DISTILL_IMAGE=<reference>  (or pass it to compile as --image).
set -euo pipefail
usage() { echo "usage: images/build.sh [--base REF] [--ca FILE] [--tag TAG] [--dry-run] REGISTRY" >&2; exit 2; }
BASE="" CA="" TAG="" DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --base) [ $# -ge 2 ] || usage; BASE=$2; shift 2 ;;
        --ca) [ $# -ge 2 ] || usage; CA=$2; shift 2 ;;
        --tag) [ $# -ge 2 ] || usage; TAG=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage ;;
        -*) echo "error: unknown option '$1'" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || usage
REGISTRY=${1%/}
if [ -n "$CA" ] && [ ! -s "$CA" ]; then
    echo "error: --ca '$CA' is not a readable, non-empty file" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
IMAGE="$REGISTRY/yolo-distill:${TAG:-$VERSION-$(git rev-parse --short HEAD)}"
ARGS=(-t "$IMAGE")
[ -n "$BASE" ] && ARGS+=(--build-arg "BASE_IMAGE=$BASE")
[ -n "$CA" ] && ARGS+=(--secret "id=ca,src=$CA")
if [ -n "${BUILDER:-}" ]; then
    :
elif docker info >/dev/null 2>&1; then
    BUILDER=docker
elif command -v buildah >/dev/null; then
    BUILDER=buildah
else
    echo "error: no image builder: neither a docker daemon nor buildah (apt-get install buildah)" >&2
    exit 1
fi
if [ "$BUILDER" = docker ]; then
    BUILD=(docker build "${ARGS[@]}" .)
else
    BUILD=(buildah bud --isolation chroot --layers "${ARGS[@]}" .)
fi
if [ "$DRY" = 1 ]; then
    echo "${BUILD[*]}"
    exit 0
fi
start=$(date +%s)
DOCKER_BUILDKIT=1 "${BUILD[@]}"
echo "built $IMAGE with $BUILDER in $(( $(date +%s) - start )) s" >&2
REF=$IMAGE
if [ "${PUSH:-0}" = 1 ]; then
    if [ "$BUILDER" = docker ]; then
        docker push "$IMAGE"
        REF=$(docker inspect --format '{{index .RepoDigests 0}}' "$IMAGE")
    else
        buildah push --digestfile "${TMPDIR:-/tmp}/yolo-distill.digest" "$IMAGE"
        REF="$REGISTRY/yolo-distill@$(cat "${TMPDIR:-/tmp}/yolo-distill.digest")"
    fi
fi
echo "built $IMAGE"
echo "export YOLO_DISTILL_IMAGE=$REF"
