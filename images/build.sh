#!/usr/bin/env bash
# Build (and optionally push) the pipeline image.
#   images/build.sh [REGISTRY]           -> REGISTRY/yolo-distill:<version>-<git sha>
#   PUSH=1 images/build.sh REGISTRY      -> also push, and print the digest to compile with:
#   yolo-distill pipeline compile --image REGISTRY/yolo-distill@sha256:...
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${1:-ghcr.io/yolo-distill}
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
TAG="$REGISTRY/yolo-distill:$VERSION-$(git rev-parse --short HEAD)"
docker build -t "$TAG" .
echo "built $TAG"
if [ "${PUSH:-0}" = 1 ]; then
    docker push "$TAG"
    docker inspect --format '{{index .RepoDigests 0}}' "$TAG"
fi
