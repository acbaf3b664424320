"""Step 4, evaluate: teacher, baseline student and distilled student on the same split with identical settings.

The split is the dataset's ``test`` split when it has one, else ``val``. Per model: mAP50-95 and mAP50 (box, plus
mask for segment and pose for pose), parameters, GFLOPs, weights size, and latency per image (batch 1, the median of
Ultralytics' own per-image time over ``latency_images`` predictions after a warm-up,
:func:`distill.registry.latency.time_per_image`) on the named device, and the validator's per-image matches. Writes
``metrics.json``, ``report.md``, ``comparison.png`` and ``image_stats.npz`` to ``<prefix>/runs/<run-id>/<name>/`` and
to the step's MLflow run, and returns the verdict: distilled minus baseline — with the promotion gate's interval and
decision (:mod:`distill.registry.gate`) — and distilled versus teacher; the report adds AP50-95 per class.
``metrics.json`` is uploaded last, after the MLflow run has everything, and records the other files' sha256: it is the
completion marker :func:`check_complete` (and so the register step) insists on.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

from ..data import storage
from ..data.dataset_files import resolve_dataset
from ..data.dataset_files import split_images as entry_images
from ..devices import check_device
from ..errors import DistillError, RunFailure
from ..markdown import table_lines
from ..registry import charts
from ..registry.bootstrap import ImageStats, save_stats
from ..registry.gate import judge, run_noise
from ..settings import coerce_gate, training
from ..yaml_files import read_yaml
from . import tracking
from .common import EVAL_SPLITS, dataset_counts, fetch_dataset, fetch_model, run_folder

ROLES = ("teacher", "baseline", "distilled")
#: What an evaluation publishes beside ``metrics.json``; ``metrics.json`` (the completion marker) records their sha256.
#: ``image_stats.npz`` holds every model's per-image matches: register bootstraps the challenger against the champion
#: from it without validating the challenger again.
#: The pictures a user looks at first (:mod:`distill.registry.charts`): in S3, the step's MLflow run, the model card.
CHARTS = ("per_class.png", "learning_curves.png", "gate.png")
PARTS = ("report.md", "comparison.png", "image_stats.npz", *CHARTS)
STATS = "image_stats.npz"
MARKER = "metrics.json"
SUFFIX = {"detect": ("B",), "segment": ("B", "M"), "pose": ("B", "P")}


def evaluate(
    data: str,
    teacher: str,
    baseline: str,
    distilled: str,
    run_id: str,
    prefix: str | None = None,
    name: str = "evaluate",
    imgsz: int | None = None,
    batch: int | None = None,
    device: str | None = None,
    latency_images: int = 16,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    **gate: Any,
) -> dict[str, Any]:
    """Validate the three models and publish the comparison; return URIs, per-model figures and the verdict.

    ``imgsz``, ``batch`` and ``device`` are the training options' (:data:`distill.settings.TRAINING`; ``None``: their
    default). ``gate`` holds the promotion gate's settings (:data:`distill.settings.GATE`: ``min_gain``, ``gate``,
    ``gate_level``); the verdict's ``gate`` entry says whether distilled − baseline passes it.
    """
    gate_cfg = coerce_gate(gate)
    imgsz, batch = (training({"imgsz": imgsz, "batch": batch}, ["imgsz", "batch"])[k] for k in ("imgsz", "batch"))
    check_device(device)
    out = run_folder(prefix, run_id, name)
    storage.check_bucket(out)
    data_yaml = fetch_dataset(data, splits=EVAL_SPLITS)  # a sharded dataset: no train images fetched
    spec = read_yaml(data_yaml, f"data '{data}'")  # bounded, before Ultralytics' validator reads it
    split = "test" if spec.get("test") else "val"
    locals_ = {role: fetch_model(uri, role) for role, uri in zip(ROLES, (teacher, baseline, distilled), strict=True)}
    with tempfile.TemporaryDirectory() as tmp, tracking.step_run(run_id, name, experiment, tracking_uri) as run:
        models = {
            role: measure(path, data_yaml, split, imgsz, batch, device, latency_images, keep_stats=True)
            for role, path in locals_.items()
        }
        stats = {role: m.pop("stats") for role, m in models.items()}
        uris = dict(zip(ROLES, (teacher, baseline, distilled), strict=True))
        task, verdict = judged_verdict(models, stats, uris, gate_cfg)
        report = {
            "run_id": run_id, "task": task, "split": split, "data": data, "imgsz": imgsz, "batch": batch,
            "uris": uris, "models": models, "verdict": verdict,
            "per_class": per_class(stats, primary_suffix(task), resolve_dataset(data_yaml)["names"]),
            "training": training_images(data_yaml, distilled, dataset_counts(data)), "ok": True,
        }  # fmt: skip
        files = {part: Path(tmp) / part for part in (*PARTS, MARKER)}
        save_stats(files[STATS], stats)
        files["report.md"].write_text(_markdown(report))
        _chart(report, files["comparison.png"])
        draw_charts(report, {part: files[part] for part in CHARTS})
        report["parts"] = {part: storage.upload_file(files[part], out.join(part)) for part in PARTS}
        files[MARKER].write_text(json.dumps(report, indent=2))
        for path in files.values():
            run.client.log_artifact(run.child_id, str(path))
        flat = {f"{role}/{k}": v for role, m in models.items() for k, v in m["metrics"].items()}
        flat.update({f"{role}/latency_ms": m["latency_ms"] for role, m in models.items()})
        flat.update({f"verdict/{k}": v for k, v in verdict.items() if isinstance(v, int | float)})
        flat.update({f"gate/{k}": verdict["gate"][k] for k in ("difference", "low", "high", "se")})
        tracking.log_metrics(run.client, run.child_id, flat, step=0)
        marker = files[MARKER].read_bytes()
    # Last, once the MLflow runs are FINISHED: its presence means the evaluation is complete.
    storage.upload_bytes(marker, out.join(MARKER), "application/json")
    return {
        "metrics": str(out.join(MARKER)), "report": str(out.join("report.md")),
        "chart": str(out.join("comparison.png")),
        "split": split, "task": task, "models": models, "verdict": verdict,
        "mlflow_run_id": run.child_id, "mlflow_parent_run_id": run.parent_id,
    }  # fmt: skip


def judged_verdict(
    models: dict[str, dict], stats: dict[str, ImageStats], uris: dict[str, str], gate: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Return the models' task and the verdict, with the gate's judgement of distilled − baseline under ``gate``.

    Each student's run noise comes from the training log beside its weights (:func:`distill.registry.gate.run_noise`).
    """
    tasks = {m["task"] for m in models.values()}
    if len(tasks) != 1:
        raise DistillError(f"the three models are of different tasks: {sorted(tasks)}")
    task = tasks.pop()
    verdict = _verdict(models, task)
    noise = tuple(run_noise(uris[role], verdict["primary_metric"]) for role in ("distilled", "baseline"))
    verdict["gate"] = judge(stats["distilled"], stats["baseline"], primary_suffix(task), noise, gate, "the baseline")
    return task, verdict


def check_complete(metrics_uri: str, report: dict[str, Any]) -> None:
    """Refuse an evaluation that did not finish: ``ok``, a verdict, and every part present with its recorded sha256.

    ``metrics.json`` is written last, so a fault part-way leaves no marker; this also refuses a marker written by an
    older version or by hand whose parts are missing or were replaced since.
    """
    if not report.get("ok") or "verdict" not in report:
        raise RunFailure(f"evaluation '{metrics_uri}' did not succeed; nothing registered")
    parts = report.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(PARTS):
        raise RunFailure(f"evaluation '{metrics_uri}' is incomplete (no record of {', '.join(PARTS)}): evaluate again")
    folder = metrics_uri.rsplit("/", 1)[0]
    for part, digest in parts.items():
        uri = f"{folder}/{part}"
        meta = storage.head(uri) if storage.is_s3(uri) else None
        found = meta.get("sha256") if meta else (storage.sha256_file(uri) if Path(uri).is_file() else None)
        if found != digest:
            raise RunFailure(f"evaluation '{metrics_uri}' is incomplete: '{uri}' is missing or changed; evaluate again")


def _device_name(device: str | None) -> str:
    import torch

    if device not in (None, "", "cpu") and torch.cuda.is_available():
        index = int(str(device).split(",")[0]) if str(device).split(",")[0].isdigit() else 0
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    if device is None and torch.cuda.is_available():
        return f"cuda:0 {torch.cuda.get_device_name(0)}"
    return f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def measure(
    weights: str,
    data_yaml: Path,
    split: str,
    imgsz: int,
    batch: int,
    device: str | None,
    latency_images: int,
    keep_stats: bool = False,
) -> dict[str, Any]:
    """Validate one model and time it; every model gets exactly the same settings.

    With ``keep_stats`` the result also holds ``stats``: the validator's per-image matches
    (:class:`distill.registry.bootstrap.ImageStats`, for the paired bootstrap of the promotion gate; not JSON).
    """
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    from ..registry.bootstrap import capture
    from ..registry.latency import time_per_image

    model = YOLO(weights)
    captured = capture(model) if keep_stats else {}
    with tempfile.TemporaryDirectory() as tmp:
        results = model.val(
            data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, device=device, plots=False,
            verbose=False, project=tmp, name="val", exist_ok=True,
        )  # fmt: skip
    task = model.task
    metrics = {}
    for suffix in SUFFIX.get(task, ("B",)):
        for key in (f"metrics/mAP50-95({suffix})", f"metrics/mAP50({suffix})"):
            metrics[key] = round(float(results.results_dict.get(key, 0.0)), 5)
    timing = time_per_image(model, split_images(data_yaml, split)[: max(1, latency_images)], imgsz, device)
    return {
        "task": task,
        "metrics": metrics,
        "params": int(get_num_params(model.model)),
        "gflops": round(float(get_flops(model.model, imgsz) or 0.0), 3),
        "size_mb": round(Path(weights).stat().st_size / 1e6, 3) if Path(weights).is_file() else None,
        "latency_ms": timing["ms_per_image"],
        "latency_images": timing["images"],
        "device": _device_name(device),
        **({"stats": captured["stats"]} if keep_stats else {}),
    }


def split_images(data_yaml: Path, split: str) -> list[Path]:
    """Return the image files of a dataset split, sorted (latency samples, export verification)."""
    images = [Path(p) for p in entry_images(resolve_dataset(data_yaml)[split])]
    if not images:
        raise DistillError(f"no images in the {split} split of {data_yaml}")
    return images


def training_images(data_yaml: Path, distilled: str, counts: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """Return how many images trained the distilled student: labelled, and unlabelled from its step's pool.

    The labelled ones are the dataset's train images — from the published manifest's ``counts`` when given (evaluate
    fetches no train images), else counted in the local dataset; the unlabelled ones the pool images its distill step
    trained on, read from that step's ``result.json`` beside ``best.pt`` (none when it had no pool).
    """
    labelled = counts["train"]["images"] if counts and "train" in counts else len(split_images(data_yaml, "train"))
    pool = None
    if distilled.startswith("s3://") and distilled.endswith("/best.pt"):
        result_uri = distilled[: -len("best.pt")] + "result.json"
        if storage.head(result_uri) is not None:
            pool = json.loads(storage.read_bytes(result_uri)).get("pool")
    out: dict[str, Any] = {"labelled": labelled, "unlabeled": pool["used"] if pool else 0}
    if pool:
        left_out = pool["empty"] + pool["leaked_into_val_test"] + pool["in_labelled_train"]
        out.update({"pseudo_labels": pool["instances"], "pseudo_conf": pool["conf"], "pool_left_out": left_out,
                    "rounds": pool.get("rounds", 1)})  # fmt: skip
    return out


def training_line(training: dict[str, Any] | None) -> str:
    """One sentence on what trained the distilled student (for the report and the model card)."""
    if not training:
        return ""
    if not training["unlabeled"]:
        return f"The distilled student trained on {training['labelled']} labelled images."
    rounds = training.get("rounds", 1)
    by = "teacher" if rounds == 1 else f"round-{rounds - 1} student (self-training round {rounds} of {rounds})"
    return (
        f"The distilled student trained on {training['labelled']} labelled and {training['unlabeled']} unlabelled "
        f"images ({training['pseudo_labels']} {by} pseudo-labels at conf {training['pseudo_conf']}; "
        f"{training['pool_left_out']} pool images left out)."
    )


def primary_suffix(task: str) -> str:
    """Return the primary metric's suffix: the task's own (masks, keypoints), boxes for detection."""
    return SUFFIX.get(task, ("B",))[-1]


def per_class(stats: dict[str, ImageStats], suffix: str, names: dict[int, str]) -> list[dict[str, Any]]:
    """AP50-95 of the primary metric per class for every model, sorted by distilled − baseline (largest gain first).

    Computed from the same per-image matches as the gate, with Ultralytics' ``ap_per_class``.
    """
    aps = {role: s.per_class(suffix) for role, s in stats.items()}
    rows = [{"class": names.get(c, str(c)), **{role: round(aps[role].get(c, 0.0), 5) for role in aps}}
            for c in sorted(set().union(*aps.values()))]  # fmt: skip
    for row in rows:
        row["gain"] = round(row.get("distilled", 0.0) - row.get("baseline", 0.0), 5)
    return sorted(rows, key=lambda r: -r["gain"])


def _verdict(models: dict[str, dict], task: str) -> dict[str, Any]:
    primary = f"metrics/mAP50-95({primary_suffix(task)})"
    t, b, d = (models[r]["metrics"][primary] for r in ROLES)
    return {
        "primary_metric": primary,
        "distilled": d,
        "baseline": b,
        "teacher": t,
        "gain_over_baseline": round(d - b, 5),
        "gap_to_teacher": round(t - d, 5),
        "distilled_beats_baseline": d > b,
        "speedup_vs_teacher": round(models["teacher"]["latency_ms"] / max(models["distilled"]["latency_ms"], 1e-9), 3),
    }


def model_table(models: dict[str, dict[str, Any]], size: bool = True) -> list[str]:
    """Return the lines of a Markdown table: one row per model with its metrics, params, GFLOPs, size and latency."""
    keys = list(next(iter(models.values()))["metrics"])
    head = ["model", *keys, "params", "GFLOPs", *(["size MB"] if size else []), "latency ms/img"]
    rows = [
        [role, *(f"{m['metrics'][k]:.4f}" for k in keys), f"{m['params']:,}", f"{m['gflops']:.2f}",
         *([f"{m['size_mb']}"] if size else []), f"{m['latency_ms']:.1f}"]
        for role, m in models.items()
    ]  # fmt: skip
    return table_lines(head, rows)


def _markdown(report: dict[str, Any]) -> str:
    models = report["models"]
    v = report["verdict"]
    lines = [
        f"# Distillation report — pipeline run `{report['run_id']}`",
        "",
        f"Task **{report['task']}**, split **{report['split']}** of `{report['data']}`, imgsz {report['imgsz']}, "
        f"latency on {next(iter(models.values()))['device']}.",
        "",
        *model_table(models),
        "",
        f"**Verdict** ({v['primary_metric']}): distilled − baseline = **{v['gain_over_baseline']:+.4f}**; "
        f"teacher − distilled = {v['gap_to_teacher']:+.4f}; "
        f"distilled is {v['speedup_vs_teacher']}× the teacher's speed.",
        "",
        gate_line(v.get("gate")),
        "",
        training_line(report.get("training")),
        "",
        *class_table(report.get("per_class"), v["primary_metric"]),
    ]
    return "\n".join(lines)


def gate_line(gate: dict[str, Any] | None) -> str:
    """One sentence on the gate's judgement of distilled − baseline (the report, the model card)."""
    if not gate:
        return ""
    verdict = "passes" if gate["passes"] else "does not pass"
    return (f"**Gate** ({gate['rule']}, {gate['images']} test images, {gate['resamples']} bootstrap resamples): "
            f"distilled {verdict} — {gate['reason']}.")  # fmt: skip


def class_table(rows: list[dict[str, Any]] | None, metric: str, most: int = 3) -> list[str]:
    """Per-class AP table lines (every class, largest gain first) and which classes gained and lost most."""
    if not rows:
        return []
    roles = [r for r in ROLES if r in rows[0]]
    name = metric.removeprefix("metrics/").replace("mAP", "AP")
    cells = [[str(r["class"]), *(f"{r[role]:.4f}" for role in roles), f"{r['gain'] * 100:+.2f}"] for r in rows]
    lines = [f"Per-class {name}:", "", *table_lines(["class", *roles, "distilled − baseline"], cells)]
    gained = [f"{r['class']} ({r['gain'] * 100:+.1f})" for r in rows[:most] if r["gain"] > 0]
    lost = [f"{r['class']} ({r['gain'] * 100:+.1f})" for r in reversed(rows[-most:]) if r["gain"] < 0]
    lines += ["", f"Gained most: {', '.join(gained) or 'none'}; lost most: {', '.join(lost) or 'none'}."]
    return lines


def draw_charts(report: dict[str, Any], paths: dict[str, Path]) -> None:
    """Draw :data:`CHARTS`: per-class AP, baseline and distilled learning curves, the gate's interval."""
    metric = report["verdict"]["primary_metric"]
    charts.per_class_chart(report.get("per_class") or [], metric, paths["per_class.png"], report["split"])
    charts.learning_curves_chart(run_curves(report["uris"], metric), metric, paths["learning_curves.png"])
    charts.gate_chart(report["verdict"]["gate"], paths["gate.png"], report["split"])


def run_curves(uris: dict[str, str], metric: str) -> dict[str, dict[str, list[float]]]:
    """Return the baseline's and the distilled student's validation curves, from their steps' ``results.csv``.

    Each training step writes it beside ``best.pt`` (and, distilling, the KD loss columns' names in ``distill.json``);
    a model trained elsewhere, with no such file, has no curve.
    """
    curves = {}
    for role in ("baseline", "distilled"):
        text = _beside(uris[role], "results.csv")
        if text is None:
            continue
        plan = json.loads(_beside(uris[role], "distill.json") or "{}")
        curves[role] = charts.read_curve(text, metric, plan.get("loss_columns"))
    return curves


def _beside(weights: str, name: str) -> str | None:
    """Return the text of the file ``name`` next to ``weights`` (a step's S3 folder, or a local run's folder)."""
    if storage.is_s3(weights):
        uri = weights.rsplit("/", 1)[0] + "/" + name
        return storage.read_bytes(uri).decode() if storage.head(uri) is not None else None
    for folder in (Path(weights).parent, Path(weights).parent.parent):  # <out>/weights/best.pt: <out>/results.csv
        if (folder / name).is_file():
            return (folder / name).read_text()
    return None


def _chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    keys = list(next(iter(models.values()))["metrics"])
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(keys), 3.6))
    width = 0.8 / len(models)
    for i, (role, m) in enumerate(models.items()):
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [m["metrics"][k] for k in keys], width, label=role)
    ax.set_xticks([k + width * (len(models) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels([k.replace("metrics/", "") for k in keys])
    top = max((m["metrics"][k] for m in models.values() for k in keys), default=0.0)
    ax.set_ylim(0, max(0.05, top * 1.15))
    ax.set_ylabel("score")
    ax.set_title(f"{report['task']} — {report['split']} split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
