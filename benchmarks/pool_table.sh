#!/usr/bin/env bash
# Issue 21's BCCD table — labels on 10 / 25 / 50 % of the training images, the rest as the unlabelled pool, and the
# 25 % split with a teacher trained on every label — as four benchmark invocations side by side (one work folder,
# runs cached), stopped at a deadline; then each writes the report of the runs that finished (--finished-only), so a
# time-limited lease still ends with reports. How the 2026-11-30 H200 reports were made:
#   DEVICE=0 NAME=h200 DEADLINE=525 EXTRA="--workers 2 --cache" benchmarks/pool_table.sh  (again: DEADLINE=215)
# Settings (environment): DEVICE (cpu), DATA_ROOT (BCCD's folder), WORKDIR (benchmarks/.work), SEEDS (0,1,2,3,4),
# PROFILE (cpu: 160 px, 30 epochs), DEADLINE (seconds, default a day), EXTRA (more benchmark arguments), NAME (the
# reports' tag: accuracy-<profile>-<NAME>-<fraction>-<date>.json), PY.
set -u
cd "$(dirname "$0")/.."
: "${DEVICE:=cpu}" "${DATA_ROOT:=benchmarks/data/bccd}" "${WORKDIR:=benchmarks/.work}" "${SEEDS:=0,1,2,3,4}"
: "${PROFILE:=cpu}" "${DEADLINE:=86400}" "${EXTRA:=}" "${NAME:=pool}" "${PY:=python3}"
t0=$(date +%s)
logs="$WORKDIR/logs"
mkdir -p "$logs"
common="--profile $PROFILE --device $DEVICE --data-root $DATA_ROOT --workdir $WORKDIR --seeds $SEEDS $EXTRA"
four="--students baseline,default,pool,label-then-train"  # the ceiling (every label) is the 25 % table's
declare -A tables=(
  [f25]="--label-fraction 0.25 --jobs 4"
  [f10]="--label-fraction 0.1 $four --jobs 3"
  [f50]="--label-fraction 0.5 $four --jobs 3"
  [f25-tall]="--label-fraction 0.25 --teacher-labels all $four --jobs 3"
)
groups=()
for tag in f25 f10 f50 f25-tall; do
  # shellcheck disable=SC2086  # the settings are word lists
  setsid "$PY" -m benchmarks.accuracy $common ${tables[$tag]} --tag "$NAME-$tag" >"$logs/$tag.log" 2>&1 &
  groups+=($!)  # each invocation leads its own process group: its runs die with it at the deadline
done
running() { for g in "${groups[@]}"; do kill -0 "$g" 2>/dev/null && return 0; done; return 1; }
while [ $(($(date +%s) - t0)) -lt "$DEADLINE" ] && running; do sleep 5; done
for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null; done
sleep 3
for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
for tag in f25 f10 f50 f25-tall; do
  # shellcheck disable=SC2086
  "$PY" -m benchmarks.accuracy $common ${tables[$tag]} --tag "$NAME-$tag" --finished-only \
    >"$logs/$tag-report.log" 2>&1 &
done
wait
for tag in f25 f10 f50 f25-tall; do grep -A8 "student runs finished" "$logs/$tag-report.log"; done
echo "pool table: $(($(date +%s) - t0)) s; logs in $logs"
