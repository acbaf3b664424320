"""What a finished run's ``results.csv`` says, and the metrics the report compares students on.

The KD share of the training loss, the val curve over epochs and the epoch spans it is compared over; these read
only a run's own files, so both the run cache and the report use them.
"""

from __future__ import annotations

from pathlib import Path

METRIC = "metrics/mAP50-95(B)"
#: The task's own metric (masks, keypoints), reported beside the boxes'.
TASK_METRIC = {"detect": METRIC, "segment": "metrics/mAP50-95(M)", "pose": "metrics/mAP50-95(P)"}


TASK_LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "train/seg_loss", "train/pose_loss",
               "train/kobj_loss")  # fmt: skip


def results_rows(results_csv: Path) -> list[dict[str, str]]:
    """Rows of an Ultralytics ``results.csv`` with its padded column names stripped (none if the file is missing)."""
    if not results_csv.is_file():
        return []
    import csv

    with results_csv.open() as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


def kd_share(results_csv: Path) -> dict[str, float] | None:
    """Share of the KD terms in the training loss at the first and the last epoch (the loss-scale check).

    KD columns are every ``train/*_loss`` that is not a task loss (ours: ``cwd_loss``, ``logit_loss``, ...;
    Ultralytics' KD: ``dis_loss``); the online teacher's own loss is left out. ``None`` for plain training.
    """
    rows = results_rows(results_csv)
    if not rows:
        return None
    kd_cols = [k for k in rows[0] if k.startswith("train/") and k.endswith("_loss") and k not in TASK_LOSSES
               and k != "train/teacher_loss"]  # fmt: skip
    if not kd_cols:
        return None
    task_cols = [k for k in rows[0] if k in TASK_LOSSES]

    def share(row: dict[str, str]) -> float:
        kd = sum(float(row[k]) for k in kd_cols)
        total = kd + sum(float(row[k]) for k in task_cols)
        return round(kd / total, 4) if total else 0.0

    return {"first_epoch": share(rows[0]), "last_epoch": share(rows[-1])}


def val_curve(results_csv: Path, metric: str = METRIC) -> list[float] | None:
    """Return the val ``metric`` after every epoch (what Ultralytics' per-epoch validation logged), ``None`` if not run.

    Paired over seeds (:func:`benchmarks.paired.curve_gains`) it shows *when* a student is ahead of its baseline —
    on BCCD the KD students lead in the middle of training and the baseline catches up in the last epochs.
    """
    rows = results_rows(results_csv)
    if not rows or metric not in rows[0]:
        return None
    return [round(float(row[metric]), 5) for row in rows]


def phases(epochs: int, close_mosaic: int = 10) -> list[tuple[int, int]]:
    """Epoch spans (1-based, inclusive) the report compares on val: after warm-up with mosaic, then mosaic closed.

    The first third of a run (warm-up, nothing detected yet) is left out; ``close_mosaic`` is Ultralytics' default,
    which the benchmark does not change. A run too short for a mosaic stage gets one span, after its first third.

    Examples:
        >>> phases(30), phases(40), phases(9)
        ([(11, 20), (21, 30)], [(14, 30), (31, 40)], [(4, 9)])
    """
    start = epochs // 3 + 1
    closed = epochs - close_mosaic
    return [(start, closed), (closed + 1, epochs)] if closed >= start else [(start, epochs)]
