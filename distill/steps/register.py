"""Step 5, register: the distilled student into the MLflow model registry, with a champion/challenger gate.

The version is a pyfunc model wrapping the ``.pt`` (see :mod:`distill.steps.pyfunc_model`), with the raw weights as
its artifact and the evaluation report attached to the run; tags record the dataset hash, teacher, loss and layers,
the metric, the code version and the pipeline run. The new version gets alias ``challenger``; ``champion`` moves to
it only when its gain over the current champion on the *same* test images passes the promotion gate
(:mod:`distill.gate`: ``gate=ci``, the lower bound of the interval at ``gate_level`` at least ``min_gain``; ``point``:
the difference) — the champion's per-image matches come from its own evaluation of the same data, else it is
validated again on the candidate's — and never when the evaluation failed. A champion whose record cannot be read
(its ``metric`` tag missing, not a number or ``nan``; its ``weights_uri`` missing where the gate needs its weights, or
the weights gone) is no comparable champion: the version is promoted as if there were none, its reason and a warning
naming that champion (:func:`champion_record`), never a crash that leaves it undecided or a comparison with ``nan``.
Registering again for the same pipeline run returns the existing version — and finishes what a faulted first try
left: missing tags, the ``challenger`` alias and the gate's decision (recorded on the version, so it is taken once).

Inputs are checked before the registry is touched (the evaluation must be complete: :func:`check_complete`), and a
version is created with its pipeline-run tag in the same call, so a rerun after any fault finds and completes it.

One version per pipeline run, whatever the timing: the whole register of run R (find or create the version, tags,
gate) runs under a lease on ``<prefix>/registry/<name>/<R>.lock`` (:class:`distill.storage.Lease`, prefix
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
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, storage
from ..bootstrap import ImageStats, load_stats
from ..errors import DistillError, RunFailure
from ..export import DEFAULT_FORMATS, Export, check_packages, export_verified, parse_formats
from ..gate import judge, run_noise
from ..settings import gate_settings
from . import tracking
from .common import EVAL_SPLITS, PREFIX_ENV, fetch_dataset, fetch_model
from .evaluate import (
    STATS,
    check_complete,
    class_table,
    gate_line,
    measure,
    model_table,
    primary_suffix,
    split_images,
    training_line,
)

TAG_RUN = "yolo_distill.pipeline_run_id"
#: Version tags recording the gate's decision ("promoted" / "kept") and why; a version without them is undecided.
TAG_DECISION = "yolo_distill.decision"
TAG_REASON = "yolo_distill.reason"
#: How long a promotion waits before reading the alias back, and how often it judges again when it moved.
SETTLE_S = 1.0
MAX_PROMOTION_TRIES = 5
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
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
    gate_cfg = gate_settings(**gate)
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
    before this, by :func:`distill.settings.gate_settings`.)
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


@dataclass
class Challenger:
    """What the gate needs of the version being registered: its score, its evaluation and the gate's settings."""

    score: float
    metrics_uri: str
    gate: dict[str, Any]

    def stats(self) -> ImageStats:
        """Its per-image matches, from the evaluation's ``image_stats.npz`` (checked complete with the evaluation)."""
        return evaluation_stats(self.metrics_uri)["distilled"]


def evaluation_stats(metrics_uri: str) -> dict[str, ImageStats]:
    """Every model's per-image matches recorded by an evaluation (``image_stats.npz`` beside its ``metrics.json``)."""
    uri = metrics_uri.rsplit("/", 1)[0] + "/" + STATS
    if storage.is_s3(uri):
        return load_stats(io.BytesIO(storage.read_bytes(uri)))
    if not Path(uri).is_file():
        raise RunFailure(f"evaluation '{metrics_uri}' has no {STATS}: evaluate again")
    return load_stats(Path(uri))


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


def decision_tags(judged: dict[str, Any] | None, gate: dict[str, Any]) -> dict[str, str]:
    """Return the gate's settings and the challenger − champion interval (when one was judged) as version tags."""
    tags = {"gate": gate["gate"], "gate_level": str(gate["gate_level"]), "min_gain": str(gate["min_gain"])}
    if judged:
        tags.update({"gain_over_champion": f"{judged['difference']:.6f}",
                     "gain_over_champion_low": f"{judged['low']:.6f}",
                     "gain_over_champion_high": f"{judged['high']:.6f}"})  # fmt: skip
    return tags


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


def _log_evaluation(mlflow_client, child_id: str, metrics_uri: str, report: dict, exports: list[Export]) -> None:
    """Attach the evaluation (``metrics.json``, and ``report.md`` when on S3) and the exports' checks to the run."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metrics.json").write_text(json.dumps(report, indent=2))
        mlflow_client.log_artifact(child_id, str(Path(tmp) / "metrics.json"), "evaluation")
        report_md = metrics_uri.rsplit("/", 1)[0] + "/report.md"
        if storage.is_s3(report_md) and storage.head(report_md):
            (Path(tmp) / "report.md").write_bytes(storage.read_bytes(report_md))
            mlflow_client.log_artifact(child_id, str(Path(tmp) / "report.md"), "evaluation")
        (Path(tmp) / "exports.json").write_text(json.dumps([e.to_dict() for e in exports], indent=2))
        mlflow_client.log_artifact(child_id, str(Path(tmp) / "exports.json"), "export")


def _log_pyfunc(child_id: str, weights: str, report: dict, exports: list[Export], example: Path) -> Any:
    """Log the pyfunc model into the step's run without ending it; return its ``ModelInfo``.

    Its artifacts are the ``.pt`` and every verified export; ``example`` (a sample image) becomes the base64 input
    example, and the requirements pin the Ultralytics and ONNX Runtime versions that verified the exports.
    """
    import base64

    import mlflow
    import onnxruntime
    import pandas as pd
    import ultralytics

    task, imgsz = report["task"], int(report["imgsz"])
    signature = _pyfunc_signature(task, imgsz)
    example = pd.DataFrame({"image": [base64.b64encode(example.read_bytes()).decode()]})
    weights_copy = exports[0].path.with_suffix(".pt")  # export_verified's copy: model.pt beside model.onnx
    artifacts = {"weights": str(weights_copy if weights_copy.is_file() else weights),
                 **{e.format: str(e.path) for e in exports}}  # fmt: skip
    with tracking.active_run(child_id):  # not `mlflow.start_run`: that ends the run FINISHED
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            model_config={"task": task, "imgsz": imgsz, "allow_paths": False},  # paths: an explicit opt-in at load
            pip_requirements=[
                f"ultralytics=={ultralytics.__version__}",
                f"onnxruntime=={onnxruntime.__version__}",
                "pandas",
            ],  # fmt: skip
        )


def _pyfunc_signature(task: str, imgsz: int) -> Any:
    """Return the served model's signature: base64 images in; one row per detection out (the task's columns too)."""
    import pandas as pd
    from mlflow.models import infer_signature

    box_columns, task_columns = pyfunc_columns()
    columns = box_columns + task_columns.get(task, [])
    sample_row = [0, 0, "name", 0.5, 0.0, 0.0, 1.0, 1.0] + ["[]"] * (len(columns) - len(box_columns))
    return infer_signature(
        model_input=pd.DataFrame({"image": ["<base64 image bytes>"]}),
        model_output=pd.DataFrame([sample_row], columns=columns),
        params={"conf": 0.25, "imgsz": imgsz, "backend": "torch"},
    )


def model_card(report: dict[str, Any], plan: dict[str, Any], data_hash: str, tags: dict[str, str]) -> str:
    """Return the version's description: what the model is, how it scored, the gate's decision, per class, exports."""
    models = report["models"]
    v = report["verdict"]
    exports = tags.get("export_formats", "")
    onnx = f" (ONNX opset {tags.get('onnx_opset')}, dynamic batch, imgsz {tags.get('onnx_imgsz')})" if exports else ""
    decision = tags.get(TAG_DECISION)
    lines = [
        f"Distilled {report['task']} student of pipeline run `{report['run_id']}`: {primary_line(v)}.",
        "",
        f"Teacher `{report['uris']['teacher']}`; dataset `{data_hash}` ({report['split']} split, imgsz "
        f"{report['imgsz']}); loss `{plan.get('loss')}`, layers `{plan.get('layers')}`, logit `{plan.get('logit')}`, "
        f"mode `{plan.get('mode')}`. {training_line(report.get('training'))}",
        "",
        *model_table(models, size=False),
        "",
        gate_line(v.get("gate")),
        "",
        f"**Registry decision**: {decision} — {tags.get(TAG_REASON, '')}." if decision else "Decision pending.",
        "",
        *class_table(report.get("per_class"), v["primary_metric"]),
        "",
        f"Latency on {next(iter(models.values()))['device']}. Exports: {exports or 'none'}{onnx}, each verified "
        "against PyTorch before registering (`export/exports.json` in the register run).",
    ]
    return "\n".join(lines)


def primary_line(verdict: dict[str, Any]) -> str:
    """One phrase with the primary metric against baseline and teacher."""
    return (
        f"{verdict['primary_metric'].removeprefix('metrics/')} {verdict['distilled']:.4f} "
        f"({verdict['gain_over_baseline']:+.4f} over the baseline, {verdict['gap_to_teacher']:+.4f} below the teacher)"
    )


def _champion(mlflow_client, name: str):
    """Return the version holding ``champion``, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, "champion")
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in (e.message or "").lower():
            return None
        raise


def _promote(
    mlflow_client, name: str, version: str, report: dict, data_hash: str, challenger: Challenger
) -> tuple[bool, str, float | None, dict[str, Any] | None]:
    """Run the gate and move ``champion`` safely against a concurrent promotion of the same model.

    MLflow has no compare-and-set on aliases, so: the gate judges against the champion read just before the move,
    the move happens only if that champion is still in place, and afterwards the alias is read back (:func:`_holds`)
    — if another register moved it meanwhile, the gate runs again against that version (and takes the alias back
    only if this one beats it). Two racing registers so end with the better one as champion, each reporting the
    decision that holds.

    Returns:
        (tuple): ``(promoted, reason, champion score or None, the gate's judgement or None)``.
    """
    for _ in range(MAX_PROMOTION_TRIES):
        champion = _champion(mlflow_client, name)
        promoted, reason, champion_score, judged = _gate(champion, version, report, data_hash, challenger)
        if not promoted:
            return False, reason, champion_score, judged
        current = _champion(mlflow_client, name)
        if (current and current.version) != (champion and champion.version):
            continue  # moved while the gate ran: judge against the new one
        set_champion(mlflow_client, name, version)
        if _holds(mlflow_client, name, version):
            return True, reason, champion_score, judged
    raise RunFailure(f"the champion alias of '{name}' kept moving during {MAX_PROMOTION_TRIES} tries; rerun the step")


def _holds(mlflow_client, name: str, version: str) -> bool:
    """Whether ``champion`` still points at ``version`` at two reads :data:`SETTLE_S` apart.

    A racer that moved the alias just before us reads it back within one settle period, judges against us and
    moves it again if it is better; the second read sees that.
    """
    for _ in range(2):
        time.sleep(SETTLE_S)
        current = _champion(mlflow_client, name)
        if current is None or current.version != version:
            return False
    return True


def set_champion(mlflow_client, name: str, version: str) -> None:
    """Point ``champion`` at ``version`` (a seam of its own so the race test can hold both racers here)."""
    mlflow_client.set_registered_model_alias(name, "champion", version)


def _gate(
    champion, version: str, report: dict, data_hash: str, challenger: Challenger
) -> tuple[bool, str, float | None, dict[str, Any] | None]:
    """Decide whether ``version`` beats ``champion`` by the gate's rule on this evaluation's images.

    ``gate=point`` compares the two scores; ``gate=ci`` bootstraps the per-image matches with both runs' noise
    (what is compared against: :func:`champion_record`). A champion whose record cannot be read is no comparable
    champion: the version is promoted as if there were none, the reason (and a warning line) naming that champion.
    """
    if champion is None:
        return True, "first version: no champion yet", None, None
    if champion.version == version:
        return True, "already champion", challenger.score, None
    against = f"champion v{champion.version}"
    rule = challenger.gate["gate"]
    mine = challenger.stats() if rule == "ci" else None
    try:
        record = champion_record(champion, report, data_hash, rule, mine)
    except UnreadableChampion as e:
        reason = f"{against}'s record is unreadable ({e}): promoted without a comparison"
        print(f"register: warning: {reason}", file=sys.stderr, flush=True)
        return True, reason, None, None
    if rule == "point":
        gain, min_gain = challenger.score - record.score, challenger.gate["min_gain"]
        if gain > 0 and gain >= min_gain:
            return True, f"beats {against} ({record.how} {record.score:.4f}) by {gain:+.4f}", record.score, None
        return False, f"does not beat {against} ({record.how} {record.score:.4f}) by {min_gain}: {gain:+.4f}", \
            record.score, None  # fmt: skip
    noise = (report["verdict"]["gate"]["run_noise"][0], record.noise)
    judged = judge(mine, record.stats, primary_suffix(report["task"]), noise, challenger.gate, against)
    verb = "beats" if judged["passes"] else "does not beat"
    return judged["passes"], f"{verb} {against} ({record.how} {record.score:.4f}): {judged['reason']}", \
        record.score, judged  # fmt: skip


class UnreadableChampion(Exception):  # noqa: N818 (a state of the record, not an error the step reports)
    """The champion's record cannot be compared against; the message says what is wrong with it."""


@dataclass(frozen=True)
class ChampionRecord:
    """What the gate compares a challenger against, read from the champion's record.

    Its primary score on this evaluation's images and how it was got (``recorded``, or validated again); for
    ``gate=ci`` also its per-image matches and its run noise.
    """

    score: float
    how: str
    stats: ImageStats | None = None
    noise: float | None = None


def champion_record(
    champion, report: dict, data_hash: str, rule: str, challenger_stats: ImageStats | None = None
) -> ChampionRecord:
    """Read and check what the gate ``rule`` needs of ``champion``'s record; raise :class:`UnreadableChampion` if not.

    ``point``: its ``metric`` tag (a finite number) when it was scored like this evaluation, else its weights
    validated again on this evaluation's data. ``ci``: its per-image matches — from its own evaluation when that
    scored these images (``challenger_stats``'), else its weights validated again — and its run noise from the
    training log beside its weights. So the weights (``weights_uri``) are needed unless a point score is recorded;
    weights that are gone or do not load make the record unreadable too. An outage or refused credentials are not
    the record's fault: those stay the step's error, and its rerun judges.
    """
    same = _same_evaluation(champion, report, data_hash)
    if rule == "point" and same:
        return ChampionRecord(_recorded_metric(champion.tags), "recorded")
    weights = champion.tags.get("weights_uri")
    if not weights:
        raise UnreadableChampion("weights_uri tag missing")
    metric, again = report["verdict"]["primary_metric"], f"re-evaluated on dataset {data_hash}"
    if rule == "point":
        score = float(_measure_champion(weights, report, keep_stats=False)["metrics"][metric])
        return ChampionRecord(_finite(score, "its score validated again"), again)
    stats = _recorded_stats(champion, challenger_stats) if same else None
    how = "recorded"
    if stats is None:
        stats, how = _measure_champion(weights, report, keep_stats=True)["stats"], again
    score = _finite(stats.score(primary_suffix(report["task"])), "its per-image matches' score")
    return ChampionRecord(score, how, stats, run_noise(weights, metric))


def _recorded_metric(tags: dict[str, str]) -> float:
    """Return the champion's ``metric`` tag as a finite number; else raise :class:`UnreadableChampion` saying why."""
    text = tags.get("metric")
    if text is None:
        raise UnreadableChampion("metric tag missing")
    try:
        value = float(text)
    except ValueError:
        raise UnreadableChampion(f"metric tag '{text[:40]}' is not a number") from None
    return _finite(value, f"metric tag '{text}'")


def _finite(value: float, what: str) -> float:
    """Return ``value`` if it is a finite number (a comparison with nan or inf decides nothing), else raise."""
    if not math.isfinite(value):
        raise UnreadableChampion(f"{what} is {value}, not a finite number")
    return value


def _same_evaluation(champion, report: dict, data_hash: str) -> bool:
    """Whether the champion was scored like this evaluation: the same dataset, metric, split and image size."""
    return (
        champion.tags.get("dataset_hash") == data_hash
        and champion.tags.get("metric_name") == report["verdict"]["primary_metric"]
        and champion.tags.get("split") == report["split"]
        and champion.tags.get("imgsz") == str(report["imgsz"])
    )


def _measure_champion(weights: str, report: dict, keep_stats: bool) -> dict[str, Any]:
    """Validate the champion's ``weights`` on this evaluation's split with its settings.

    Weights that are not there or do not load (bad input, were they given) make the record unreadable.
    """
    try:
        local = fetch_model(weights, "champion")
    except DistillError as e:
        raise UnreadableChampion(str(e)) from None
    return measure(local, fetch_dataset(report["data"], EVAL_SPLITS), report["split"], report["imgsz"],
                   report["batch"], None, 1, keep_stats=keep_stats)  # fmt: skip


def _recorded_stats(champion, challenger_stats: ImageStats | None) -> ImageStats | None:
    """Return the champion's per-image matches from its own evaluation when it has them for these very images.

    ``None`` (validate it again) for an evaluation of an older version without per-image matches, or one that cannot
    be read or scored other images.
    """
    uri = champion.tags.get("evaluation")
    if not uri:
        return None
    try:
        stats = evaluation_stats(uri)["distilled"]
    except (RunFailure, DistillError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None
    if challenger_stats is not None and not stats.same_images(challenger_stats):
        return None
    return stats


def _summary(mlflow_client, name: str, version: str) -> dict[str, Any]:
    mv = mlflow_client.get_model_version(name, version)
    return {
        "name": name,
        "version": str(version),
        "aliases": sorted(mv.aliases),
        "model_uri": f"models:/{name}/{version}",
    }


def pyfunc_columns() -> tuple[list[str], dict[str, list[str]]]:
    """Return the served model's output columns (``BOX_COLUMNS``, ``TASK_COLUMNS``) as ``pyfunc_model.py`` defines them.

    Read from its source: the file is logged as self-contained code, and importing it would run its ``set_model``.
    """
    import ast

    wanted = {"BOX_COLUMNS", "TASK_COLUMNS"}
    values = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse(PYFUNC_CODE.read_text()).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in wanted
    }
    return values["BOX_COLUMNS"], values["TASK_COLUMNS"]
