#!/usr/bin/env bash
# The image check (make image-check; minutes and ~15 GB of disk, not part of make test): build the pipeline image,
# then run inside it, as UID 10001:
#   1. `yolo-distill --help`, and a two-rank `torchrun -m distill distill` (CPU, gloo) with no network at all
#      (nothing may be fetched from the internet at run time: fonts, hub lookups, telemetry);
#   2. the compiled pipeline, each component from the YAML's own command (images/check.py): prepare-data -> teacher
#      -> baseline -> distill -> evaluate -> register against the local S3 + MLflow stack, ending with a registered
#      champion whose ONNX file verifies; then the sweep variant (ParallelFor, select-best, register).
# Needs buildah (and mmdebstrap where the official base cannot be pulled); as root with apt it installs them.
# Environment: CA_BUNDLE (extra CA for pip; default: the host's bundle when present), OUT (logs and summaries; default
# images/.check). The image stays in local storage as localhost/yolo-distill:check (buildah rmi to remove it).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=localhost/yolo-distill:check
BASE_REF=localhost/yolo-distill-base:bookworm
OUT=${OUT:-images/.check}
mkdir -p "$OUT"
log() { echo "image-check: $*" >&2; }

missing=()
for tool in buildah mmdebstrap podman unshare ip; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${missing[*]} (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman mmdebstrap uidmap util-linux iproute2 >/dev/null
    else
        echo "error: the image check needs ${missing[*]} (apt-get install buildah podman mmdebstrap util-linux iproute2)" >&2
        exit 1
    fi
fi

DEFAULT_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
BUILD_ARGS=(--tag check)
if timeout 60 buildah pull --quiet "docker.io/library/$DEFAULT_BASE" >/dev/null 2>&1; then
    log "base: $DEFAULT_BASE (pulled)"
else
    if buildah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
        log "base: $DEFAULT_BASE cannot be pulled here; using $BASE_REF made earlier by images/base.sh"
    else
        log "base: $DEFAULT_BASE cannot be pulled here; making $BASE_REF from Debian packages (images/base.sh)"
        images/base.sh "$BASE_REF"
    fi
    BUILD_ARGS+=(--base "$BASE_REF")
fi
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$CA" ] && BUILD_ARGS+=(--ca "$CA")
start=$(date +%s)
images/build.sh "${BUILD_ARGS[@]}" localhost >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log" >&2; exit 1; }
build_s=$(( $(date +%s) - start ))
size=$(buildah inspect --type image --format '{{.Size}}' "$IMAGE" 2>/dev/null || podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in ${build_s} s, $(( size / 1000000 )) MB"

# 1. Inside the image, no network: the CLI, and two ranks of a real distillation under torchrun.
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
cp -r tests/data/coco8 "$data/coco8" && chmod -R a+rwX "$data"
ctr=$(buildah from --pull-never "$IMAGE")
trap 'rm -rf "$data"; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
# No network: a network namespace of its own with only loopback up (chroot isolation takes no --network none).
run() { unshare --net sh -c 'ip link set lo up && exec "$@"' sh \
            buildah run --isolation chroot --network host --user 10001 --volume "$data:/work" --workingdir /work \
            --volume "$data:/tmp" "$ctr" -- "$@"; }
run yolo-distill --help >/dev/null
start=$(date +%s)
run env OMP_NUM_THREADS=1 torchrun --nnodes 1 --nproc_per_node 2 --rdzv_backend static --master_addr 127.0.0.1 \
    --master_port 29511 -m distill distill --data coco8/data.yaml --student yolov8n.yaml --teacher yolov8s.yaml \
    --loss cwd --epochs 1 --imgsz 64 --batch 4 --device cpu --out runs/kd plots=False >"$OUT/torchrun.log" 2>&1 \
    || { tail -30 "$OUT/torchrun.log" >&2; exit 1; }
for rank in 0 1; do  # both ranks joined one group of two and finished
    grep -q "\"rank\": $rank, \"world_size\": 2" "$OUT/torchrun.log" || { log "torchrun: rank $rank did not finish"; exit 1; }
done
log "torchrun, two ranks, no network: $(( $(date +%s) - start )) s"

# 2. The compiled pipeline, component by component, plain then sweep.
for variant in plain sweep; do
    flag=$([ "$variant" = sweep ] && echo --sweep || true)
    start=$(date +%s)
    .venv/bin/python images/check.py "$IMAGE" $flag --stack-dir "$OUT/stack" --out "$OUT/$variant.json" \
        >"$OUT/$variant.log" 2>&1 || { tail -40 "$OUT/$variant.log" >&2; exit 1; }
    log "pipeline ($variant) inside the image: $(( $(date +%s) - start )) s"
done
.venv/bin/yolo-distill stack down --dir "$OUT/stack" >/dev/null 2>&1 || true
echo "{\"image\": \"$IMAGE\", \"size_mb\": $(( size / 1000000 )), \"build_s\": $build_s}"
