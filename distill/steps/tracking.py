"""MLflow layout: one parent run per pipeline run (tagged with its id), one child run per step.

Runs are found again by tags, so re-running a step of the same pipeline run (a retry after preemption) continues the
same child run instead of creating another. :func:`step_run` owns the lifecycle every step shares: the child run is
RUNNING while the step works and ends FINISHED or FAILED; the parent follows it (RUNNING while a step runs, FAILED
after a failed step, FINISHED after a finished one), so no run is left RUNNING by a step that has ended.

A rerun of a step logs its params again (:func:`log_params`): a value spelled otherwise (``data/`` for ``data``) is
the same value and keeps the first spelling; a param that only says where an input came from or where the step ran
(:data:`DESCRIPTIVE`: a source given as a zip of the same files, another pod's devices) keeps its first value and
records the rerun's as a tag, with a warning; any other param with another value is another input under the same
pipeline run id, refused as bad input naming both values. A rerun refused as bad input leaves a step that had finished
as it was — FINISHED, and its parent with the status it had — instead of marking it FAILED.

An MLflow server that is down is retried a bounded number of times (``YOLO_DISTILL_MLFLOW_RETRIES``, default 5:
MLflow's exponential backoff of 0, 4, 8, 16, 32 s, about a minute; requests time out after
``MLFLOW_HTTP_REQUEST_TIMEOUT``, default 30 s here), then the step fails with one :class:`TrackingUnavailable` line
naming the tracking URI — a rerun of the same command continues the same runs.

Metric names are Ultralytics' with the characters MLflow refuses removed (``metrics/mAP50-95(B)`` →
``metrics/mAP50-95B``, as Ultralytics' own MLflow callback names them).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import DistillError, RunFailure, ServiceUnavailable

DEFAULT_EXPERIMENT = "yolo-distill"
TAG_PIPELINE = "yolo_distill.pipeline_run_id"
TAG_STEP = "yolo_distill.step"
_BAD = re.compile(r"[^0-9A-Za-z_\-. :/]")
RETRIES_ENV = "YOLO_DISTILL_MLFLOW_RETRIES"
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_S = 30
#: Params that say where an input came from or where the step ran, not what it is: a rerun of the step under the same
#: pipeline run may give them another value (the same dataset as a zip or from COCO JSON, and so its publication
#: record; a resumed step on another pod's devices).
DESCRIPTIVE = frozenset({
    "source", "format", "category_ids", "publication", "unlabeled_source", "unlabeled_publication",
    "device", "devices", "world_size",
})  # fmt: skip
#: Tag prefix recording a descriptive param's value in a later run of the step (MLflow keeps a param's first value).
TAG_RERUN = "yolo_distill.rerun."


class TrackingUnavailable(ServiceUnavailable):
    """The MLflow tracking server could not be reached (after the bounded retries)."""


class TrackingFailure(RunFailure):
    """The MLflow server answered with an error the step cannot work around."""


def metric_name(name: str) -> str:
    """Return ``name`` with the characters MLflow does not accept in metric names removed.

    Examples:
        >>> metric_name("metrics/mAP50-95(B)")
        'metrics/mAP50-95B'
    """
    return _BAD.sub("", name)


def configure_retries() -> None:
    """Bound MLflow's HTTP retries (by default it retries for ~4 minutes).

    ``YOLO_DISTILL_MLFLOW_RETRIES`` wins when set; otherwise MLflow's own ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is
    respected, and only when neither is set the default of 5 applies.
    """
    retries = os.environ.get(RETRIES_ENV)
    if retries is not None and not retries.isdigit():
        from ..errors import DistillError

        raise DistillError(f"{RETRIES_ENV}='{retries}' must be a whole number of retries")
    if retries is not None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(DEFAULT_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(DEFAULT_TIMEOUT_S))


def tracking_uri_of(tracking_uri: str | None = None) -> str:
    """Return the tracking URI in force: the given one, else ``$MLFLOW_TRACKING_URI``, else MLflow's default."""
    if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
    import mlflow

    return mlflow.get_tracking_uri()


def client(tracking_uri: str | None = None):
    """Return an ``MlflowClient`` for ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``), retries bounded."""
    from mlflow import MlflowClient

    configure_retries()
    return MlflowClient(tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))


def translate(error: BaseException, tracking_uri: str) -> RunFailure | None:
    """Turn an MLflow client error into one line naming the tracking URI; ``None`` when it is not MLflow's.

    Connection failures (the server down, or restarting) become :class:`TrackingUnavailable`; an error the server
    answered with becomes :class:`TrackingFailure` with MLflow's own first line.
    """
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, RunFailure) or not isinstance(error, MlflowException | requests.RequestException):
        return None
    chain, seen = [], error
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, requests.ConnectionError | requests.Timeout) for e in chain):
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        return TrackingUnavailable(f"cannot reach the MLflow tracking server {tracking_uri} (gave up after {retries} "
                                   f"retries; set {RETRIES_ENV} to wait longer)")  # fmt: skip
    first = (str(getattr(error, "message", "")) or str(error)).strip().splitlines()[0][:300]
    return TrackingFailure(f"MLflow tracking server {tracking_uri}: {first}")


@contextmanager
def guard(tracking_uri: str | None = None) -> Iterator[None]:
    """Re-raise MLflow client errors inside the block as :class:`TrackingUnavailable` / :class:`TrackingFailure`."""
    try:
        yield
    except Exception as e:
        translated = translate(e, tracking_uri_of(tracking_uri))
        if translated is None:
            raise
        raise translated from None


def experiment_id(mlflow_client, name: str | None) -> str:
    """Return the id of experiment ``name`` (default ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``), creating it."""
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    exp = mlflow_client.get_experiment_by_name(name)
    return exp.experiment_id if exp else mlflow_client.create_experiment(name)


def _find(mlflow_client, exp_id: str, filters: str):
    runs = mlflow_client.search_runs([exp_id], filter_string=filters, max_results=1, order_by=["attributes.start_time"])
    return runs[0] if runs else None


@dataclass(frozen=True)
class StepRun:
    """A step's MLflow runs: the client, the pipeline run's parent run and the step's child run."""

    client: Any
    parent_id: str
    child_id: str


@contextmanager
def step_run(
    pipeline_run_id: str, step: str, experiment: str | None = None, tracking_uri: str | None = None
) -> Iterator[StepRun]:
    """Open the step's MLflow runs for the block; end them FINISHED, or FAILED when the block raises.

    MLflow errors raised in the block (or while opening and closing the runs) leave as one-line
    :class:`TrackingUnavailable` / :class:`TrackingFailure` naming the tracking URI. Marking the runs FAILED is one
    quick try, so an outage does not add its retries twice; the next run of the step sets them RUNNING again. A rerun
    of a step that had finished, refused as bad input (:class:`~distill.errors.DistillError`: another input under the
    same pipeline run), puts both runs back as they were: the finished step's record still stands.
    """
    with guard(tracking_uri):
        c, parent, child = _open_runs(pipeline_run_id, step, experiment, tracking_uri)
    try:
        with guard(tracking_uri):
            yield StepRun(c, parent.info.run_id, child.info.run_id)
    except BaseException as e:
        if isinstance(e, DistillError) and child.info.status == "FINISHED":
            _end_quickly(c, (child.info.run_id, parent.info.run_id), ("FINISHED", parent.info.status))
        elif not isinstance(e, TrackingUnavailable):
            _end_quickly(c, (child.info.run_id, parent.info.run_id), ("FAILED", "FAILED"))
        raise
    with guard(tracking_uri):
        c.set_terminated(child.info.run_id, "FINISHED")
        c.set_terminated(parent.info.run_id, "FINISHED")


@contextmanager
def active_run(run_id: str) -> Iterator[None]:
    """Make ``run_id`` MLflow's active run for the block (what ``log_model`` logs into) without ending it.

    ``with mlflow.start_run(run_id=...)`` marks the run FINISHED on leaving the block, while the step still has work
    to do — a fault after that leaves a FINISHED run without what the step makes. Leaving with status RUNNING only
    takes the run off MLflow's active-run stack; :func:`step_run` ends it when the step is done.
    """
    import mlflow

    mlflow.start_run(run_id=run_id, nested=True)
    try:
        yield
    finally:
        mlflow.end_run(status="RUNNING")


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block; restore what was there (or its absence) afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _end_quickly(c, run_ids: tuple[str, ...], statuses: tuple[str, ...]) -> None:
    """Best effort, no retries: give each run its status (on the way out of a failure, which must stay the error).

    A status that does not end a run (``RUNNING``: a parent another step had left running) is set as it is.
    """
    with environment({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}):
        try:
            for run_id, status in zip(run_ids, statuses, strict=True):
                if status in {"FINISHED", "FAILED", "KILLED"}:
                    c.set_terminated(run_id, status)
                else:
                    c.update_run(run_id, status=status)
        except Exception:  # noqa: S110 (the step's own error is the one to report)
            pass


def open_step_run(
    pipeline_run_id: str, step: str, experiment: str | None = None, tracking_uri: str | None = None
) -> tuple[Any, str, str]:
    """Find or create the parent run of ``pipeline_run_id`` and its child run for ``step``, both set RUNNING.

    Returns:
        (tuple): ``(client, parent run id, child run id)``.
    """
    c, parent, child = _open_runs(pipeline_run_id, step, experiment, tracking_uri)
    return c, parent.info.run_id, child.info.run_id


def _open_runs(
    pipeline_run_id: str, step: str, experiment: str | None, tracking_uri: str | None
) -> tuple[Any, Any, Any]:
    """Find or create the parent and child runs and set them RUNNING; return the client and both runs as found.

    The runs returned carry the status they had before (``FINISHED`` for a step that had finished), for
    :func:`step_run` to put back when a rerun is refused.
    """
    c = client(tracking_uri)
    exp = experiment_id(c, experiment)
    parent = _find(c, exp, f"tags.`{TAG_PIPELINE}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = 'pipeline'")
    if parent is None:
        parent = c.create_run(
            exp, run_name=f"pipeline-{pipeline_run_id}", tags={TAG_PIPELINE: pipeline_run_id, TAG_STEP: "pipeline"}
        )
    if parent.info.status != "RUNNING":
        c.update_run(parent.info.run_id, status="RUNNING")
    child = _find(c, exp, f"tags.`{TAG_PIPELINE}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = '{step}'")
    if child is None:
        child = c.create_run(
            exp,
            run_name=step,
            tags={TAG_PIPELINE: pipeline_run_id, TAG_STEP: step, "mlflow.parentRunId": parent.info.run_id},
        )
    else:
        c.update_run(child.info.run_id, status="RUNNING")
    return c, parent, child


def log_params(mlflow_client, run_id: str, params: dict[str, Any]) -> None:
    """Log params on a step's run; a rerun of the step logs them again, so compare with what the run already has.

    A param already logged with this value, or the same value spelled otherwise (:func:`same_value`), is skipped. A
    :data:`DESCRIPTIVE` one with another value keeps its first value (MLflow refuses to change a param); the rerun's
    is recorded as tag ``yolo_distill.rerun.<name>``, with a warning. Any other param with another value is another
    input under the same pipeline run id: :class:`~distill.errors.DistillError` naming both values, before anything
    is logged.
    """
    from mlflow.entities import Param

    run = mlflow_client.get_run(run_id)
    existing = run.data.params
    given = {k: str(v)[:6000] for k, v in params.items() if v is not None}
    changed = {k: v for k, v in given.items() if k in existing and not same_value(existing[k], v)}
    refused = sorted(k for k in changed if k not in DESCRIPTIVE)
    if refused:
        raise DistillError(_changed_line(run.data.tags, refused[0], existing[refused[0]], changed[refused[0]]))
    fresh = [Param(k, v) for k, v in given.items() if k not in existing]
    if fresh:
        mlflow_client.log_batch(run_id, params=fresh)
    for key, value in changed.items():
        if run.data.tags.get(TAG_RERUN + key) != value:
            mlflow_client.set_tag(run_id, TAG_RERUN + key, value)
        print(f"warning: {_step_of(run.data.tags)}: {key} '{value}' is not the '{existing[key]}' this step was "
              f"first run with; the run keeps the first, this one is tag {TAG_RERUN}{key}",
              file=sys.stderr, flush=True)  # fmt: skip


def same_value(first: str, again: str) -> bool:
    """Whether two param values are one value spelled two ways: a trailing or doubled ``/``, ``./``, ``a/../``.

    Examples:
        >>> same_value("s3://b/datasets/ab12/", "s3://b/datasets/ab12"), same_value("data/coco8", "./data/coco8/")
        (True, True)
        >>> same_value("data/coco8", "data/coco128"), same_value("1", "1.0")
        (False, False)
    """
    return first == again or spelling(first) == spelling(again)


def spelling(value: str) -> str:
    """Return ``value`` with a path's or URI's path spelled one way (other text as it is): what a step records.

    Examples:
        >>> spelling("s3://b/datasets//ab12/"), spelling("./data/coco8/"), spelling("yolo")
        ('s3://b/datasets/ab12', 'data/coco8', 'yolo')
    """
    scheme, sep, rest = value.partition("://")
    if sep:
        return f"{scheme}://{re.sub('/+', '/', rest).rstrip('/')}"
    return os.path.normpath(value) if "/" in value or os.sep in value else value


def _step_of(tags: dict[str, str]) -> str:
    """Name a step's run by its tags: ``step 'train' of pipeline run 'r1'``."""
    return f"step '{tags.get(TAG_STEP, '?')}' of pipeline run '{tags.get(TAG_PIPELINE, '?')}'"


def _changed_line(tags: dict[str, str], key: str, first: str, again: str) -> str:
    """Return the error line for a param that changed under the same pipeline run id, naming both values."""
    return (f"{_step_of(tags)} was run with {key}='{first[:200]}', not '{again[:200]}': another input needs another "
            "--run-id (or rerun it with the first one)")  # fmt: skip


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
        ``epochs + 1``: then only those validation metrics are logged. That call is the only record of the final
        validation (the step logs nothing more), so each metric has one value per step.
        """
        step = trainer.epoch + 1
        metrics = dict(trainer.metrics or {})
        if step <= trainer.epochs:
            metrics.update({**trainer.label_loss_items(trainer.tloss, prefix="train"), **trainer.lr})
        log_metrics(self.client, self.run_id, metrics, step=step)
