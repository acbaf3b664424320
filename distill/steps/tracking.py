"""MLflow layout: one parent run per pipeline run (tagged with its id), one child run per step.

Runs are found again by tags, so re-running a step of the same pipeline run (a retry after preemption) continues the
same child run instead of creating another. Metric names are Ultralytics' with the characters MLflow refuses removed
(``metrics/mAP50-95(B)`` → ``metrics/mAP50-95B``, as Ultralytics' own MLflow callback names them).
"""

from __future__ import annotations

import os
import re
from typing import Any

DEFAULT_EXPERIMENT = "yolo-distill"
TAG_PIPELINE = "yolo_distill.pipeline_run_id"
TAG_STEP = "yolo_distill.step"
_BAD = re.compile(r"[^0-9A-Za-z_\-. :/]")


def metric_name(name: str) -> str:
    """Return ``name`` with the characters MLflow does not accept in metric names removed.

    Examples:
        >>> metric_name("metrics/mAP50-95(B)")
        'metrics/mAP50-95B'
    """
    return _BAD.sub("", name)


def client(tracking_uri: str | None = None):
    """Return an ``MlflowClient`` for ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))


def experiment_id(mlflow_client, name: str | None) -> str:
    """Return the id of experiment ``name`` (default ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``), creating it."""
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    exp = mlflow_client.get_experiment_by_name(name)
    return exp.experiment_id if exp else mlflow_client.create_experiment(name)


def _find(mlflow_client, exp_id: str, filters: str):
    runs = mlflow_client.search_runs([exp_id], filter_string=filters, max_results=1, order_by=["attributes.start_time"])
    return runs[0] if runs else None


def step_run(
    pipeline_run_id: str, step: str, experiment: str | None = None, tracking_uri: str | None = None
) -> tuple[Any, str, str]:
    """Find or create the parent run of ``pipeline_run_id`` and its child run for ``step``.

    Returns:
        (tuple): ``(client, parent run id, child run id)``.
    """
    c = client(tracking_uri)
    exp = experiment_id(c, experiment)
    parent = _find(c, exp, f"tags.`{TAG_PIPELINE}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = 'pipeline'")
    if parent is None:
        parent = c.create_run(
            exp, run_name=f"pipeline-{pipeline_run_id}", tags={TAG_PIPELINE: pipeline_run_id, TAG_STEP: "pipeline"}
        )
    parent_id = parent.info.run_id
    child = _find(c, exp, f"tags.`{TAG_PIPELINE}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = '{step}'")
    if child is None:
        child = c.create_run(
            exp,
            run_name=step,
            tags={TAG_PIPELINE: pipeline_run_id, TAG_STEP: step, "mlflow.parentRunId": parent_id},
        )
    else:
        c.update_run(child.info.run_id, status="RUNNING")
    return c, parent_id, child.info.run_id


def log_params(mlflow_client, run_id: str, params: dict[str, Any]) -> None:
    """Log params, skipping ones already logged with the same value (a resumed step logs them again)."""
    from mlflow.entities import Param

    existing = mlflow_client.get_run(run_id).data.params
    fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None and existing.get(k) != str(v)[:6000]]
    if fresh:
        mlflow_client.log_batch(run_id, params=fresh)


def log_metrics(mlflow_client, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log numeric metrics at ``step`` with MLflow-safe names."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items() if isinstance(v, int | float)]
    if batch:
        mlflow_client.log_batch(run_id, metrics=batch)


class EpochLogger:
    """Ultralytics ``on_fit_epoch_end`` callback logging train losses (KD columns included), val metrics and LRs."""

    def __init__(self, mlflow_client, run_id: str) -> None:
        self.client = mlflow_client
        self.run_id = run_id

    def __call__(self, trainer: Any) -> None:
        """Log the epoch's metrics at step = epoch number (1-based).

        Ultralytics calls this once more after training for the final validation of ``best.pt``, at step
        ``epochs + 1``: then only those validation metrics are logged.
        """
        step = trainer.epoch + 1
        metrics = dict(trainer.metrics or {})
        if step <= trainer.epochs:
            metrics.update({**trainer.label_loss_items(trainer.tloss, prefix="train"), **trainer.lr})
        log_metrics(self.client, self.run_id, metrics, step=step)
