#!/usr/bin/env bash
# The five pipeline steps by hand against the local stack — the same session the README shows.
# Interim `make demo` until the Kubeflow pipeline issue runs these steps through kfp.local.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

DATA_DIR=${DEMO_DATA_DIR:-../shared/data/coco8}
RUN=${DEMO_RUN_ID:-demo-$(date +%Y%m%d-%H%M%S)}
TINY=(--epochs "${DEMO_EPOCHS:-3}" --imgsz 128 --batch 8 --device cpu plots=False)
last() { tail -n 1; }                        # each step prints its result as JSON on the last stdout line
get() { python -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }

yolo-distill stack up >/dev/null
eval "$(yolo-distill stack env)"

DATA=$(yolo-distill step prepare-data --source "$DATA_DIR" --format yolo | last | get uri)
TEACHER=$(yolo-distill step train --data "$DATA" --model yolov8s.yaml --name teacher --run-id "$RUN" "${TINY[@]}" | last | get best)
BASELINE=$(yolo-distill step train --data "$DATA" --model yolov8n.yaml --name student --run-id "$RUN" "${TINY[@]}" | last | get best)
DISTILLED=$(yolo-distill step distill --data "$DATA" --teacher "$TEACHER" --student yolov8n.yaml --loss cwd \
    --run-id "$RUN" "${TINY[@]}" | last | get best)
EVAL=$(yolo-distill step evaluate --data "$DATA" --teacher "$TEACHER" --baseline "$BASELINE" --distilled "$DISTILLED" \
    --run-id "$RUN" --imgsz 128 --device cpu | last | get metrics)
yolo-distill step register --model "$DISTILLED" --evaluation "$EVAL" --name yolo-distill-demo --run-id "$RUN" | last

echo "demo run $RUN: report at ${EVAL%metrics.json}report.md, MLflow at $MLFLOW_TRACKING_URI"
