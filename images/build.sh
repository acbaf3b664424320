#!/usr/bin/env bash
# Build (and optionally push) the pipeline image, then print the reference to compile the pipeline with.
#   images/build.sh REGISTRY             -> REGISTRY/yolo-distill:<version>-<git sha>
#   PUSH=1 images/build.sh REGISTRY      -> also push; the printed reference is then the pushed digest
# Last line printed:  export YOLO_DISTILL_IMAGE=<reference>   (or pass it as --image to compile/submit/schedule)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: images/build.sh REGISTRY   (e.g. ghcr.io/your-org; PUSH=1 to push)" >&2
    exit 2
fi
REGISTRY=$1
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
TAG="$REGISTRY/yolo-distill:$VERSION-$(git rev-parse --short HEAD)"
docker build -t "$TAG" .
REF=$TAG
if [ "${PUSH:-0}" = 1 ]; then
    docker push "$TAG"
    REF=$(docker inspect --format '{{index .RepoDigests 0}}' "$TAG")
fi
echo "built $TAG"
echo "export YOLO_DISTILL_IMAGE=$REF"
