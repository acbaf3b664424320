"""Step 5, register: the distilled student into the MLflow model registry, with a champion/challenger gate.

This module holds the step's flow: check the inputs, take the run's lock, find or create the version, give it its
tags and have the gate decide once. What the version is made of (the pyfunc model, its artifacts and its model card)
is in :mod:`distill.steps.model_version`; the gate and the reading of the current champion's record, in
:mod:`distill.steps.champion`.

The version is a pyfunc model wrapping the ``.pt`` (see :mod:`distill.steps.pyfunc_model`), with the raw weights as
its artifact and the evaluation report attached to the run; tags record the dataset hash, teacher, loss and layers,
the metric, the code version and the pipeline run. The new version gets alias ``challenger``; ``champion`` moves to
it only when its gain over the current champion on the *same* test images passes the promotion gate
(:mod:`distill.registry.gate`: ``gate=ci``, the lower bound of the interval at ``gate_level`` at least ``min_gain``;
``point``: the difference) — the champion's per-image matches come from its own evaluation of the same data, else it is
validated again on the candidate's — and never when the evaluation failed. A champion whose record cannot be read
(its ``metric`` tag missing, not a number or ``nan``; its ``weights_uri`` missing where the gate needs its weights, or
the weights gone) is no comparable champion: the version is promoted as if there were none, its reason and a warning
naming that champion (:func:`distill.steps.champion.champion_record`), never a crash that leaves it undecided or a
comparison with ``nan``. Registering again for the same pipeline run returns the existing version — and finishes what
a faulted first try left: missing tags, the ``challenger`` alias and the gate's decision (recorded on the version, so
it is taken once).

Inputs are checked before the registry is touched (the evaluation must be complete: :func:`check_complete`), and a
version is created with its pipeline-run tag in the same call, so a rerun after any fault finds and completes it.

One version per pipeline run, whatever the timing: the whole register of run R (find or create the version, tags,
gate) runs under a lease on ``<prefix>/registry/<name>/<R>.lock`` (:class:`distill.data.storage.Lease`, prefix
``$YOLO_DISTILL_S3_PREFIX``, else the evaluation's: the part before ``/runs/``, or its folder). MLflow offers nothing
atomic to build this on (versions are numbered, tags and aliases are plain overwrites); S3's conditional writes are:
the lease is taken with ``If-None-Match: *`` and handed on with ``If-Match``, which SeaweedFS evaluates atomically.
A register that finds the lease held (a retried pod while the first still runs) waits — up to :data:`LOCK_WAIT_S`,
saying so every 30 s — then goes the way of a rerun: finds the version, reports its decision. A holder that died is
presumed dead when its heartbeat (every :data:`LOCK_BEAT_S`) stopped for :data:`LOCK_STALE_S`; the waiter takes the
lease over and finishes what was started. The holder renews the lease right before creating the version, so a holder
that stalled past the stale period learns it was overtaken instead of creating a second version. An evaluation that
is a local file, with no S3 prefix set, has nowhere shared to lock: that register runs unlocked.

The step's MLflow run stays RUNNING until the whole step is done (the pyfunc is logged into it without ending it):
a run marked FINISHED always has its version, tags and decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .. import __version__
from ..data import storage
from ..errors import DistillError
from ..registry.export import DEFAULT_FORMATS, Export, check_packages, export_verified, parse_formats
from ..settings import coerce_gate
from . import tracking
from .champion import TAG_DECISION, TAG_REASON, Challenger, _promote, decision_tags
from .common import EVAL_SPLITS, PREFIX_ENV, fetch_dataset, fetch_model
from .evaluate import check_complete, split_images
from .model_version import _log_evaluation, _log_pyfunc, model_card

TAG_RUN = "yolo_distill.pipeline_run_id"
#: The verified ONNX file inside a version's artifacts (export_verified names the copies model.pt, model.onnx, ...).
ONNX_FILE = "model.onnx"
#: Dataset images the exports are verified on.
EXPORT_SAMPLES = 8
#: The run's lock: how long a register waits for another register of the same run, how often the holder renews it
#: and after how long without renewal its holder is presumed dead (a rerun after a crash waits this long once).
LOCK_WAIT_S = 1800.0
LOCK_BEAT_S = 5.0
LOCK_STALE_S = 60.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def _read_json(uri: str) -> dict[str, Any]:
    if storage.is_s3(uri):
        return json.loads(storage.read_bytes(uri))
    path = Path(uri)
    if not path.is_file():
        raise DistillError(f"'{uri}' not found")
    return json.loads(path.read_text())


def dataset_hash(data_uri: str) -> str:
    """Content hash of a dataset URI: prepare-data's manifest hash, or the sha256 of a local data.yaml."""
    match = re.search(r"/datasets/([0-9a-f]{16})(/|$)", data_uri)
    if storage.is_s3(data_uri) and match:
        return match.group(1)
    return storage.sha256_file(fetch_dataset(data_uri, splits=()))[:16]


def register(
    model: str,
    evaluation: str,
    name: str,
    run_id: str,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    step: str = "register",
    export: str | tuple[str, ...] = DEFAULT_FORMATS,
    **gate: Any,
) -> dict[str, Any]:
    """Register ``model`` (the evaluated distilled student) and decide on ``champion``; return version and aliases.

    Args:
        model: Weights URI of the distilled student (must be the one the evaluation measured).
        evaluation: The evaluate step's ``metrics.json`` URI (or its folder).
        name: Registered model name.
        run_id: Pipeline run id (one version per pipeline run).
        experiment: MLflow experiment.
        tracking_uri: MLflow tracking URI.
        step: Step name in MLflow.
        export: Formats to ship beside the ``.pt`` (``onnx`` always; ``torchscript``, ``openvino`` on request), each
            made by Ultralytics' exporter and verified against PyTorch on sample images before anything is registered.
        gate: The promotion gate's settings (:data:`distill.settings.GATE`): ``min_gain`` over the champion,
            ``gate`` (``ci``: the lower bound of the interval must reach it; ``point``: the difference), ``gate_level``.
    """
    gate_cfg = coerce_gate(gate)
    formats, metrics_uri, report = _checked_inputs(model, evaluation, name, export)
    weights = fetch_model(model, "model")
    data_hash = dataset_hash(report["data"])
    score = float(report["verdict"]["distilled"])
    plan = _distill_plan(model)
    tags = _version_tags(model, run_id, metrics_uri, report, data_hash, score, plan)

    lock = run_lock(name, run_id, metrics_uri)  # held until the step's run has ended: the next one reads it all
    with (
        lock or nullcontext(),
        tracking.step_run(run_id, step, experiment, tracking_uri) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        if lock is not None and lock.taken_from:
            print(f"register: took over the lock of {lock.taken_from.get('owner')} (no heartbeat for "
                  f"{lock.stale_s:.0f}s): finishing what it started", file=sys.stderr, flush=True)  # fmt: skip
        mlflow_client = run.client
        version = _version_for_run(mlflow_client, name, run_id)
        reused = version is not None
        if version is None:  # exported and verified first; created with its run tag in one call (a rerun finds it)
            samples = split_images(fetch_dataset(report["data"], EVAL_SPLITS), report["split"])[:EXPORT_SAMPLES]
            exports = export_verified(weights, samples, int(report["imgsz"]), Path(tmp), formats)
            version = _log_and_register(
                mlflow_client, run.child_id, name, weights, metrics_uri, report, run_id, exports, samples[0],
                fence=lock.confirm if lock else None,
            )  # fmt: skip
        promoted, reason, champion_score = _complete(mlflow_client, name, version, tags, report, plan, data_hash,
                                                     Challenger(score, metrics_uri, gate_cfg))  # fmt: skip
        mlflow_client.set_tag(run.child_id, "promotion", reason)
        summary = _summary(mlflow_client, name, version)
    return {
        **summary, "promoted": promoted, "reason": reason, "score": score, "champion_score": champion_score,
        "reused": reused, "mlflow_run_id": run.child_id,
    }  # fmt: skip


def _checked_inputs(
    model: str, evaluation: str, name: str, export: str | tuple[str, ...]
) -> tuple[tuple[str, ...], str, dict[str, Any]]:
    """Check the request before the registry is touched; return the export formats, ``metrics.json`` URI and report.

    Refused: an invalid model name, an unknown export format (or its package missing), an incomplete evaluation
    (:func:`check_complete`) and a ``model`` other than the distilled one it measured. (The gate settings are checked
    before this, by :func:`distill.settings.coerce_gate`.)
    """
    if not _NAME_RE.match(name or ""):
        raise DistillError(f"registered model name '{name}' is invalid (letters, digits, _ . -)")
    formats = parse_formats(export)
    check_packages(formats)
    metrics_uri = evaluation if evaluation.endswith(".json") else f"{evaluation.rstrip('/')}/metrics.json"
    report = _read_json(metrics_uri)
    check_complete(metrics_uri, report)
    if report["uris"]["distilled"] != model:
        raise DistillError(
            f"model '{model}' is not the distilled model evaluated in '{metrics_uri}' ({report['uris']['distilled']})"
        )
    return formats, metrics_uri, report


def _version_tags(
    model: str, run_id: str, metrics_uri: str, report: dict, data_hash: str, score: float, plan: dict[str, Any]
) -> dict[str, str]:
    """Return the tags a version of pipeline run ``run_id`` carries: provenance, metric, KD plan, evaluation setup."""
    return {
        TAG_RUN: run_id, "dataset_hash": data_hash, "teacher": report["uris"]["teacher"], "weights_uri": model,
        "evaluation": metrics_uri, "metric_name": report["verdict"]["primary_metric"], "metric": f"{score:.6f}",
        "gain_over_baseline": str(report["verdict"]["gain_over_baseline"]), "code_version": __version__,
        **_baseline_interval(report["verdict"]),
        "loss": plan.get("loss", ""), "layers": str(plan.get("layers", "")), "logit": str(plan.get("logit", "")),
        "mode": plan.get("mode", ""), "split": report["split"], "imgsz": str(report["imgsz"]),
    }  # fmt: skip


def _baseline_interval(verdict: dict[str, Any]) -> dict[str, str]:
    """Return the evaluation's distilled − baseline interval as tags (an evaluation made before the gate has none)."""
    gate = verdict.get("gate")
    if not gate:
        return {}
    return {"gain_over_baseline_low": f"{gate['low']:.6f}", "gain_over_baseline_high": f"{gate['high']:.6f}",
            "gain_over_baseline_level": str(gate["level"])}  # fmt: skip


def _complete(
    mlflow_client,
    name: str,
    version: str,
    tags: dict[str, str],
    report: dict,
    plan: dict[str, Any],
    data_hash: str,
    challenger: Challenger,
) -> tuple[bool, str, float | None]:
    """Give ``version`` what it still lacks (tags, card), then decide on ``champion`` once; a decided one reports.

    The decision's tags are set before :data:`TAG_DECISION` (which marks it taken), the card last, from the tags.

    Returns:
        (tuple): ``(promoted, reason, champion score or None)``.
    """
    mv = mlflow_client.get_model_version(name, version)
    if "onnx" in mv.tags.get("export_formats", "").split(","):  # the URI `mlflow artifacts download` takes
        tags["onnx_artifact"] = f"models:/{name}/{version}/artifacts/{ONNX_FILE}"
    for key, value in tags.items():  # a rerun after a fault sets what the first try did not
        if mv.tags.get(key) != str(value):
            mlflow_client.set_model_version_tag(name, version, key, value)
    if TAG_DECISION in mv.tags:  # decided before: report that decision, move nothing
        promoted, reason = mv.tags[TAG_DECISION] == "promoted", mv.tags.get(TAG_REASON, "")
        champion_score = None
    else:
        mlflow_client.set_registered_model_alias(name, "challenger", version)
        promoted, reason, champion_score, judged = _promote(mlflow_client, name, version, report, data_hash,
                                                            challenger)  # fmt: skip
        for key, value in decision_tags(judged, challenger.gate).items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        mlflow_client.set_model_version_tag(name, version, TAG_REASON, reason)
        mlflow_client.set_model_version_tag(name, version, TAG_DECISION, "promoted" if promoted else "kept")
    mv = mlflow_client.get_model_version(name, version)
    card = model_card(report, plan, data_hash, mv.tags)
    if mv.description != card:
        mlflow_client.update_model_version(name, version, description=card)
    return promoted, reason, champion_score


def _distill_plan(model: str) -> dict[str, Any]:
    """Loss/layers/mode from the ``distill.json`` written beside the weights by the distill step, if any."""
    sibling = model.rsplit("/", 1)[0] + "/distill.json"
    try:
        plan = _read_json(sibling) if storage.is_s3(model) and storage.head(sibling) else {}
    except (DistillError, json.JSONDecodeError):
        plan = {}
    config = plan.get("config", {})
    return {"loss": config.get("loss"), "layers": config.get("layers"), "logit": config.get("logit"),
            "mode": plan.get("mode")}  # fmt: skip


def _version_for_run(mlflow_client, name: str, run_id: str) -> str | None:
    """Return the version registered for pipeline run ``run_id``, if any (an outage raises: never looks like none)."""
    for v in mlflow_client.search_model_versions(f"name = '{name}'"):
        if v.tags.get(TAG_RUN) == run_id:
            return v.version
    return None


def run_lock(name: str, run_id: str, metrics_uri: str) -> storage.Lease | None:
    """Return the lease that serialises the registers of pipeline run ``run_id`` (``None``: nowhere shared to lock).

    The key is ``<prefix>/registry/<name>/<run id>.lock`` (a run id with characters unsafe in a key is replaced by a
    safe form plus a hash of it), under ``$YOLO_DISTILL_S3_PREFIX``, else under the evaluation's prefix: the retried
    pod gets the same environment and arguments, so it names the same key.
    """
    prefix = os.environ.get(PREFIX_ENV) or _prefix_of(metrics_uri)
    if not prefix:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", run_id)
    if safe != run_id:
        safe = f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    uri = storage.parse_s3_uri(prefix).join("registry", name, f"{safe}.lock")
    return storage.Lease(uri, stale_s=LOCK_STALE_S, beat_s=LOCK_BEAT_S, wait_s=LOCK_WAIT_S, on_wait=lock_busy)


def _prefix_of(metrics_uri: str) -> str | None:
    """Return the S3 prefix an evaluation was written under (before ``/runs/``), else its folder; ``None``: local."""
    if not storage.is_s3(metrics_uri):
        return None
    head, runs, _ = metrics_uri.partition("/runs/")
    return head if runs else metrics_uri.rsplit("/", 1)[0]


def lock_busy(record: dict[str, Any], waited_s: float) -> None:
    """Say that another register of the same run holds its lock (a seam of its own: the race test watches it)."""
    print(
        f"register: another register of this pipeline run ({record.get('owner', '?')}) holds its lock; waited "
        f"{waited_s:.0f}s of {LOCK_WAIT_S:.0f}s, then this one reports the version that one made",
        file=sys.stderr,
        flush=True,
    )


def _log_and_register(
    mlflow_client,
    child_id: str,
    name: str,
    weights: str,
    metrics_uri: str,
    report: dict,
    run_id: str,
    exports: list[Export],
    example: Path,
    fence: Callable[[], None] | None = None,
) -> str:
    """Log the pyfunc (weights + verified exports, signature, a base64 input example) and register it.

    ``fence`` runs right before the version is created (the run lock's renewal: it raises if the lock was lost).
    """
    import mlflow

    _log_evaluation(mlflow_client, child_id, metrics_uri, report, exports)
    info = _log_pyfunc(child_id, weights, report, exports, example)
    onnx = next(e for e in exports if e.format == "onnx")
    tags = {
        TAG_RUN: run_id, "export_formats": ",".join(e.format for e in exports), "export_verified": "true",
        "onnx_opset": str(onnx.opset), "onnx_imgsz": str(onnx.imgsz), "onnx_dynamic_batch": str(onnx.dynamic).lower(),
    }  # fmt: skip
    if fence is not None:
        fence()
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    return str(version.version)


def _summary(mlflow_client, name: str, version: str) -> dict[str, Any]:
    mv = mlflow_client.get_model_version(name, version)
    return {
        "name": name,
        "version": str(version),
        "aliases": sorted(mv.aliases),
        "model_uri": f"models:/{name}/{version}",
    }
