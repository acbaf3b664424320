"""Steps 2 and 3, train (teacher or baseline student) and distill: the engine run as a resumable pipeline step.

Outputs go to ``<prefix>/runs/<pipeline-run-id>/<step-name>/``: ``best.pt``, ``last.pt``, ``results.csv``,
``args.yaml`` (+ ``distill.json``, and ``teacher.pt`` online) and, last, ``result.json`` — the step's result, whose
presence means the step finished (running it again returns it instead of training again).

Preemption: every ``checkpoint_every`` epochs the in-progress ``last.pt`` — which carries the KD adapters and MGD
generators — and the online teacher are uploaded to ``checkpoint/``. Running the same step again with the same
pipeline run id downloads them and resumes with Ultralytics' own resume, so the epoch count continues.

Several nodes: started by ``torchrun`` (one process per GPU on every node, see :mod:`distill.launch`), every rank
fetches the inputs and the checkpoint and trains; only global rank 0 talks to MLflow and writes to S3 (checkpoints,
outputs, ``result.json``), so the step's outputs are the same URIs as on one node.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER

from ..config import DistillConfig, check_arguments
from ..data import storage
from ..data.storage import S3Uri
from ..devices import choose_devices
from ..engine import api
from ..engine.rounds import needs_rounds, run_rounds
from ..engine.trainer import TEACHER_WEIGHTS
from ..errors import DistillError
from ..launch import current
from ..settings import split_kd, training
from . import tracking
from .common import check_pool_source, fetch_dataset, fetch_model, pool_arguments, run_folder

OUTPUTS = (
    "weights/best.pt",
    "weights/last.pt",
    "results.csv",
    "args.yaml",
    "distill.json",
    f"weights/{TEACHER_WEIGHTS}",
)


class CheckpointUploader:
    """``on_model_save`` callback: upload the in-progress ``last.pt`` (and online teacher) every N epochs."""

    def __init__(self, target: S3Uri, every: int = 1) -> None:
        self.target = target
        self.every = max(1, int(every))

    def __call__(self, trainer: Any) -> None:
        """Upload when the finished epoch count is a multiple of ``every``."""
        if (trainer.epoch + 1) % self.every:
            return
        wdir = Path(trainer.wdir)
        teacher = wdir / TEACHER_WEIGHTS
        if teacher.is_file():
            storage.upload_file(teacher, self.target.join(TEACHER_WEIGHTS))
        storage.upload_file(wdir / "last.pt", self.target.join("last.pt"))  # last: it marks a usable checkpoint
        LOGGER.info(f"checkpoint: epoch {trainer.epoch + 1} uploaded to {self.target}")


def workdir(run_id: str, name: str) -> Path:
    """Local scratch folder of a step (``$YOLO_DISTILL_WORKDIR`` or the system temp folder)."""
    base = Path(os.environ.get("YOLO_DISTILL_WORKDIR") or Path(tempfile.gettempdir()) / "yolo-distill-work")
    return base / run_id / name


def train(
    data: str,
    model: str,
    name: str,
    run_id: str,
    prefix: str | None = None,
    checkpoint_every: int = 1,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    **train_args: Any,
) -> dict[str, Any]:
    """Train a teacher or baseline student as a pipeline step; return URIs, metrics and the MLflow run ids.

    Args:
        data: Dataset URI from prepare-data (or a local data.yaml).
        model: Model ``.yaml`` or weights URI (local or ``s3://``).
        name: Step name (``teacher``, ``student``), the folder under ``runs/<run_id>/``.
        run_id: The pipeline run this step belongs to.
        prefix: ``s3://bucket/prefix`` (default ``$YOLO_DISTILL_S3_PREFIX``).
        checkpoint_every: Upload the resumable checkpoint every N epochs.
        experiment: MLflow experiment (default ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``).
        tracking_uri: MLflow tracking URI (default ``$MLFLOW_TRACKING_URI``).
        **train_args: The training options (:data:`distill.settings.TRAINING`, missing ones at their default;
            ``device`` empty or ``None``: every visible GPU, DDP, else the CPU) and other Ultralytics train arguments.
    """
    params = {"step": "train", "model": model, "data": data, **training(train_args)}
    return _run_step(name, run_id, prefix, params, checkpoint_every, experiment, tracking_uri, config=None)


def distill(
    data: str,
    teacher: str,
    student: str,
    run_id: str,
    name: str = "distill",
    prefix: str | None = None,
    checkpoint_every: int = 1,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    unlabeled: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Distil a teacher (weights URI) into a student as a pipeline step.

    ``unlabeled``: an unlabelled pool — prepare-data's pool URI (``s3://.../pools/<hash>``, fetched and checked
    against its manifest) or a local folder of images — that the teacher pseudo-labels and the student trains on
    beside the labelled images (:mod:`distill.engine.pool_data`); the result's ``pool`` says what trained.
    ``settings``: the KD settings (:class:`DistillConfig`'s fields, declared once: :data:`distill.settings.KD`; the
    library defaults for those not given), the training options (:data:`distill.settings.TRAINING`, as for
    :func:`train`) and any other Ultralytics train argument.
    """
    kd, train_args = split_kd(settings)
    config = DistillConfig(teacher=teacher, **kd)  # validated before any download
    params = {"step": "distill", "model": student, "teacher": teacher, "data": data, **training(train_args),
              **({"unlabeled": unlabeled} if unlabeled else {})}  # fmt: skip
    if unlabeled and needs_rounds(config):
        if current().distributed:
            raise DistillError(f"pool_rounds={config.pool_rounds}: self-training rounds run on one node for now")

        def train_round(k: int, round_config: DistillConfig) -> str:  # each round a step: its own checkpoint, result
            step = {**params, "teacher": round_config.teacher}
            done = _run_step(f"{name}-round{k}", run_id, prefix, step, checkpoint_every, experiment, tracking_uri,
                             config=round_config)  # fmt: skip
            return done["best"]

        config = run_rounds(config, train_round)
        params = {**params, "teacher": config.teacher}
    return _run_step(name, run_id, prefix, params, checkpoint_every, experiment, tracking_uri, config=config)


def _run_step(
    name: str,
    run_id: str,
    prefix: str | None,
    params: dict[str, Any],
    checkpoint_every: int,
    experiment: str | None,
    tracking_uri: str | None,
    config: DistillConfig | None,
) -> dict[str, Any]:
    """Run one train or distill step end to end; return its result (``result.json``'s content, plus ``reused``).

    The order is the point: inputs are checked before anything is fetched; a step that already finished returns its
    ``result.json``; else the inputs and an earlier attempt's checkpoint are fetched, the model trains (every rank)
    under the step's MLflow runs (rank 0 only), and rank 0 uploads the outputs and writes ``result.json`` last.
    ``params`` are the step's arguments as logged (``step``, ``model``, ``data``, ``device``, train arguments and, to
    distil, ``teacher``); ``config`` is the KD configuration (``teacher`` still a URI), ``None`` for plain training.
    """
    params, devices = _check_inputs(run_id, params)
    out = run_folder(prefix, run_id, name)
    storage.check_bucket(out)
    finished = _finished_result(out, name, run_id, experiment, tracking_uri)
    if finished is not None:
        return finished

    local = workdir(run_id, name)
    data_yaml, model_local, config = _fetch_inputs(params, config)
    pool = pool_arguments(params.get("unlabeled"))
    checkpoint = out.join("checkpoint")
    resume_from = _download_checkpoint(checkpoint, local)
    launch = current()  # one process of a single-node step, or one rank of a torchrun launch over several nodes
    tracked_run = tracking.step_run(run_id, name, experiment, tracking_uri) if launch.main else nullcontext()
    with tracked_run as tracked:
        callbacks: dict[str, list] = {"on_model_save": [CheckpointUploader(checkpoint, checkpoint_every)]}  # rank 0
        if tracked is not None:
            kd = config.to_dict() if config else {}
            kd_params = {f"kd/{k}": v for k, v in kd.items() if k not in {"teacher", "extra"}}
            tracking.log_params(tracked.client, tracked.child_id, {**params, **kd_params, "output": str(out),
                                                                   "world_size": launch.world_size})  # fmt: skip
            callbacks["on_fit_epoch_end"] = [tracking.EpochLogger(tracked.client, tracked.child_id)]
        started = time.time()
        if resume_from is not None:
            LOGGER.info(f"resuming step '{name}' of run {run_id} from {checkpoint}/last.pt")
        run = _train(data_yaml, model_local, config, params, local, callbacks, resume_from, pool)
        if tracked is None:  # a rank other than 0: trained its share; rank 0 uploads and reports
            return {"step": name, "run_id": run_id, "rank": launch.rank, "world_size": launch.world_size,
                    "resumed": resume_from is not None, "reused": False}  # fmt: skip
        uploaded = _upload_outputs(run, out, tracked.client, tracked.child_id)
        result = {"step": name, "run_id": run_id, "best": uploaded["best.pt"]["uri"],
                  "last": uploaded["last.pt"]["uri"], "teacher": uploaded.get(TEACHER_WEIGHTS, {}).get("uri"),
                  "outputs": uploaded, "metrics": run.metrics, "devices": devices, "world_size": launch.world_size,
                  "nodes": launch.nodes, "skipped_images": run.skipped_images, "pool": run.pool,
                  "resumed": resume_from is not None,
                  "seconds": round(time.time() - started, 1), "mlflow_run_id": tracked.child_id,
                  "mlflow_parent_run_id": tracked.parent_id}  # fmt: skip
        storage.upload_bytes(json.dumps(result, indent=2).encode(), out.join("result.json"), "application/json")
        return {**result, "reused": False}


def _check_inputs(run_id: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Refuse a step without a run id or with bad train arguments, and choose its devices — before any download.

    Returns ``params`` with ``device`` set to the chosen Ultralytics device (every GPU of the pod unless told
    otherwise) and ``devices`` to what it stands for, and that list of torch device names (for the result).
    """
    if not run_id:
        raise DistillError("a pipeline run id is required (--run-id)")
    named = {"step", "model", "teacher", "data", "device", "unlabeled"}
    check_arguments(**{k: v for k, v in params.items() if k not in named})
    check_pool_source(params.get("unlabeled"))
    chosen = choose_devices(params.get("device"), int(params["batch"]))
    return {**params, "device": chosen.device, "devices": ",".join(chosen.devices)}, chosen.devices


def _finished_result(
    out: S3Uri, name: str, run_id: str, experiment: str | None, tracking_uri: str | None
) -> dict[str, Any] | None:
    """Return the step's ``result.json`` (marked ``reused``) if the step already finished, else ``None``.

    A fault after ``result.json`` was written may have left the step's MLflow runs RUNNING: opening and closing them
    here ends them FINISHED.
    """
    if storage.head(out.join("result.json")) is None:
        return None
    result = json.loads(storage.read_bytes(out.join("result.json")))
    LOGGER.info(f"step '{name}' of run {run_id} already finished: {out}/result.json")
    with tracking.step_run(run_id, name, experiment, tracking_uri):
        pass
    return {**result, "reused": True}


def _fetch_inputs(params: dict[str, Any], config: DistillConfig | None) -> tuple[Path, str, DistillConfig | None]:
    """Fetch the dataset, the model and (distill) the teacher; return the local ``data.yaml``, model and config.

    The returned config is ``config`` with its ``teacher`` replaced by the downloaded local weights.
    """
    data_yaml = fetch_dataset(params["data"])
    model_local = fetch_model(params["model"], "model")
    if config is not None:
        config = DistillConfig.from_dict({**config.to_dict(), "teacher": fetch_model(config.teacher, "teacher")})
    return data_yaml, model_local, config


def _train(
    data_yaml: Path,
    model: str,
    config: DistillConfig | None,
    params: dict[str, Any],
    local: Path,
    callbacks: dict[str, list],
    resume_from: Path | None,
    pool: dict[str, Any],
) -> api.RunResult:
    """Train (``config``: distil) into ``local``; with a checkpoint, resume it instead with Ultralytics' own resume.

    A resumed run takes its settings from the checkpoint, but the device from ``params``: the retried pod may hold
    other GPUs than the first. ``pool``: the unlabelled pool's arguments (:func:`.common.pool_arguments`), for both.
    """
    if resume_from is not None:
        if config is not None:
            return api.distill(data_yaml, None, config, resume=resume_from, out=local, callbacks=callbacks,
                               device=params["device"], **pool)  # fmt: skip
        return api.train(data_yaml, None, resume=resume_from, out=local, callbacks=callbacks, device=params["device"])
    args = {k: v for k, v in params.items() if k not in {"step", "model", "teacher", "data", "devices", "unlabeled"}}
    if config is not None:
        return api.distill(data_yaml, model, config, out=local, callbacks=callbacks, **args, **pool)
    return api.train(data_yaml, model, out=local, callbacks=callbacks, **args)


def _upload_outputs(run: api.RunResult, out: S3Uri, mlflow_client: Any, child_id: str) -> dict[str, dict[str, str]]:
    """Upload the run's :data:`OUTPUTS` that exist to ``out`` and log its results, args and plan to MLflow.

    Returns:
        (dict): file name → ``{"uri", "sha256"}`` of every uploaded file.
    """
    uploaded = {}
    for rel in OUTPUTS:
        path = run.save_dir / rel
        if path.is_file():
            uploaded[Path(rel).name] = {
                "uri": str(out.join(Path(rel).name)),
                "sha256": storage.upload_file(path, out.join(Path(rel).name)),
            }
    for rel in ("results.csv", "args.yaml", "distill.json"):
        if (run.save_dir / rel).is_file():
            mlflow_client.log_artifact(child_id, str(run.save_dir / rel))
    return uploaded


def _download_checkpoint(checkpoint: S3Uri, local: Path) -> Path | None:
    """Fetch an earlier attempt's checkpoint (and online teacher) into the local run folder; ``None`` if absent."""
    if storage.head(checkpoint.join("last.pt")) is None:
        return None
    weights = local / "weights"
    if storage.head(checkpoint.join(TEACHER_WEIGHTS)) is not None:
        storage.download_file(checkpoint.join(TEACHER_WEIGHTS), weights / TEACHER_WEIGHTS)
    return storage.download_file(checkpoint.join("last.pt"), weights / "last.pt")
