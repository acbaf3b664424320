"""Inference time per image of the teacher, each student row and one ONNX export: the Pareto chart's x (issue 40).

A report says how accurate each model is; deploying one also asks what its accuracy costs at inference. This module
times each model with Ultralytics' own predictor — one image per call (batch 1) at the report's image size, on the
device asked for — and keeps Ultralytics' own per-image ``speed`` (preprocess, inference, postprocess in ms; it
synchronises the accelerator), as the median over the scored split's images after a short warm-up. The models are
the teacher's ``best.pt``, one run per student row (the first seed whose weights are in the work folder) and the ONNX
export of the best-scoring row whose weights are here (else the best row's architecture), exported and verified by
the register step's own :func:`~distill.registry.export.export_verified` and scored on the same split with
``YOLO(onnx).val``.

A row whose weights are not on this machine (runs taken over from an earlier report with ``--reuse``) is timed as
its architecture built from its yaml with random weights, and recorded so (``"weights": "architecture only"``):
inference time depends on the architecture and the image size, not the weights, except for the NMS in postprocess
(random weights detect almost nothing). Rows of one architecture then share that one measurement. An ONNX export of
an architecture is not scored (its mAP would be noise): the chart places it at its row's mean and says so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchmarks import report as reports
from benchmarks.accuracy.cache import relative
from benchmarks.accuracy.options import ROOT, Profile
from benchmarks.accuracy.plan import plan_jobs, prepare_datasets, task_model, work_folder
from distill import markdown as md
from distill.registry import latency
from distill.registry.latency import PARTS

#: Images predicted (and not timed) before the timed pass: the first calls allocate and pick kernels.
WARMUP = 5
#: Images the ONNX export is verified on against PyTorch before it is timed.
VERIFY_IMAGES = 4
ARCHITECTURE = "architecture only"
TRAINED = "trained"


def time_per_image(weights: Path, images: list[Path], imgsz: int, device: str) -> dict[str, Any]:
    """Time ``weights`` as the evaluate step times a model (:func:`distill.registry.latency.time_per_image`).

    The benchmark warms up longer (:data:`WARMUP`): it times many models one after another in one process.
    """
    from ultralytics import YOLO

    return latency.time_per_image(YOLO(str(weights)), images, imgsz, device, warmup=WARMUP)


def architecture_weights(yaml_name: str, data: Path, out: Path) -> Path:
    """Write the architecture of ``yaml_name`` with random weights as a checkpoint Ultralytics loads like best.pt.

    Built as the trainer builds a run's model (the dataset's classes and keypoint shape), so its head has the trained
    model's size; seeded, so every invocation times the same network.
    """
    import torch
    from ultralytics import YOLO

    from distill.data.dataset_files import resolve_dataset

    spec = resolve_dataset(data)
    model = YOLO(yaml_name)
    build = model.task_map[model.task]["model"]
    extra = {"data_kpt_shape": tuple(spec["kpt_shape"])} if model.task == "pose" else {}
    torch.manual_seed(0)
    net = build(yaml_name, nc=len(spec["names"]), verbose=False, **extra)
    net.names = spec["names"]
    model.model = net
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out


def folder_of(record: dict[str, Any], workdir: Path) -> Path:
    """Return the local folder of a report's run (``<workdir>/...`` under ``workdir``, else the repository's)."""
    recorded = str(record.get("dir") or "")
    folder = workdir / recorded.removeprefix("<workdir>/") if recorded.startswith("<workdir>/") else ROOT / recorded
    return folder.parent / record["same_as"] if record.get("same_as") else folder  # taken from another folder


def trained_weights(folder: Path) -> Path | None:
    """Return the best.pt of the finished run in ``folder`` when it is on this machine, else ``None``.

    The weights beside its ``result.json`` first: a run set aside (:func:`~benchmarks.accuracy.cache.set_aside`)
    moved with them, while the path it recorded now holds the run trained after it.
    """
    done = folder / "result.json"
    if not done.is_file():
        return None
    best = json.loads(done.read_text()).get("best")
    for candidate in (folder / "train" / "weights" / "best.pt", Path(best) if best else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Bench:
    """What every model of one section is timed and scored on: the same images, size, device and split."""

    data: Path  # the students' data.yaml (its scored split is the report's)
    split: str
    images: list[Path]
    imgsz: int
    batch: int  # of the ONNX export's scoring, as the runs were scored
    device: str
    metric: str
    workdir: Path  # --workdir: the report's run folders are named relative to it
    scratch: Path  # architectures built here, the ONNX export written here


def score(mean: float, half: float | None, n: int, source: str) -> dict[str, Any]:
    """Return a model's score as the section records it (fractions, as the report's): mean, 95 % half-width, runs."""
    return {"mean": round(mean, 5), "ci95": None if half is None else round(half, 5), "n": n, "source": source}


def row_scores(report: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    """Return each student row's score: the mean over its seeds with the 95 % t-interval's half-width."""
    from benchmarks.accuracy.figure import mean_ci, rows

    return {name: score(*mean_ci(values), len(values), "mean over seeds, .pt") for name, values in rows(report, metric)}


def row_weights(report: dict[str, Any], name: str, workdir: Path) -> tuple[Path | None, int | None]:
    """Return the weights of a row's first seed whose run is on this machine, and that seed (else ``None``s)."""
    records = sorted((r for r in report.get("runs") or [] if r.get("name") == name), key=lambda r: r.get("seed", 0))
    for record in records:
        weights = trained_weights(folder_of(record, workdir))
        if weights is not None:
            return weights, record.get("seed")
    return None, None


def model_entry(name: str, kind: str, yaml_name: str, weights: Path | None, bench: Bench,
                built: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, Any]:  # fmt: skip
    """Time one model (its trained weights, else its architecture: one measurement per yaml, in ``built``)."""
    if weights is None:
        if yaml_name not in built:
            arch = bench.scratch / f"{Path(yaml_name).stem}-architecture.pt"
            architecture_weights(yaml_name, bench.data, arch)
            built[yaml_name] = (arch, time_per_image(arch, bench.images, bench.imgsz, bench.device))
        timing = built[yaml_name][1]
    else:
        timing = time_per_image(weights, bench.images, bench.imgsz, bench.device)
    return {
        "name": name,
        "kind": kind,
        "format": "pt",
        "model": yaml_name,
        "weights": TRAINED if weights is not None else ARCHITECTURE,
        "path": relative(weights, bench.workdir),
        **{k: v for k, v in timing.items() if k != "providers"},
        "device": bench.device,
    }


def onnx_score(onnx: Path, bench: Bench) -> float:
    """Score the ONNX export on the report's split with Ultralytics' validator, as the runs' ``.pt`` were scored."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        results = YOLO(str(onnx)).val(
            data=str(bench.data), split=bench.split, imgsz=bench.imgsz, batch=bench.batch, device=bench.device,
            plots=False, verbose=False, project=tmp, name="val", exist_ok=True,
        )  # fmt: skip
    return float(results.results_dict.get(bench.metric, 0.0))


def onnx_entry(row: str, source: Path, trained: bool, row_score: dict[str, Any], bench: Bench) -> dict[str, Any]:
    """Export ``source`` (a row's best.pt, or its architecture) to ONNX, verify it against PyTorch, time and score it.

    The export is :func:`~distill.registry.export.export_verified`'s, as the register step ships it (dynamic
    axes, verified on a few of the split's images). An architecture's export is timed but not scored: it is placed
    at its row's mean, which the entry's ``map.source`` says.
    """
    from distill.registry.export import export_verified

    out = bench.scratch / ("onnx-" + "".join(c if c.isalnum() else "-" for c in row))
    (export,) = export_verified(source, bench.images[:VERIFY_IMAGES], bench.imgsz, out, ("onnx",), stem="model")
    timing = time_per_image(export.path, bench.images, bench.imgsz, bench.device)
    if trained:
        measured = score(onnx_score(export.path, bench), None, 1, "ONNX export, YOLO(onnx).val")
    else:
        measured = {**row_score, "source": f"{row}'s mean over seeds ({ARCHITECTURE}: the export is not scored)"}
    providers = timing.pop("providers") or []
    return {
        "name": f"{row} (ONNX)",
        "kind": "onnx",
        "format": "onnx",
        "row": row,
        "weights": TRAINED if trained else ARCHITECTURE,
        "scored": trained,  # False: placed at its row's mean on the chart, and left off the Pareto front
        "path": relative(export.path, bench.workdir),
        **timing,
        "device": "cpu" if bench.device != "cpu" and "CUDAExecutionProvider" not in providers else bench.device,
        "providers": providers,
        "opset": export.opset,
        "dynamic": export.dynamic,
        "map": measured,
    }


def latency_section(
    report: dict[str, Any], data: Path, teacher_dir: Path | None, workdir: Path, device: str, scratch: Path
) -> dict[str, Any]:
    """Return the report's ``latency`` section: the teacher, every student row and one row's ONNX export, timed.

    Args:
        report: The report (its settings, teacher, students and runs).
        data: The students' ``data.yaml``, whose scored split the report's scores come from.
        teacher_dir: The teacher's run folder (its best.pt, when on this machine).
        workdir: ``--workdir``, which the report's run folders are named relative to.
        device: The device to time on (Ultralytics' spelling: ``cpu``, ``0``).
        scratch: Where architectures and the ONNX export are written.
    """
    from benchmarks.accuracy.figure import report_metric, teacher_score
    from distill.steps.evaluate import split_images

    settings, task = report["settings"], report.get("task") or "detect"
    split = (report.get("dataset") or {}).get("score_split") or "test"
    metric = report_metric(report)
    bench = Bench(data, split, split_images(data, split), settings["imgsz"], settings["batch"], device, metric,
                  workdir, scratch)  # fmt: skip
    built: dict[str, tuple[Path, dict[str, Any]]] = {}
    models = []
    teacher = teacher_score(report, metric)
    if teacher is not None:
        weights = trained_weights(teacher_dir) if teacher_dir else None
        yaml_name = (report.get("teacher") or {}).get("model") or task_model(settings["teacher"], task)
        entry = model_entry("teacher", "teacher", yaml_name, weights, bench, built)
        models.append({**entry, "seed": 0 if weights else None, "map": score(teacher, None, 1, "the teacher's run")})
    scores = row_scores(report, metric)
    student = task_model(settings.get("student") or "yolov8n.yaml", task)
    for name, row_score in scores.items():
        weights, seed = row_weights(report, name, workdir)
        models.append({**model_entry(name, "student", student, weights, bench, built), "seed": seed, "map": row_score})
    if scores:
        models.append(onnx_model(scores, report, student, bench, built))
    return {
        "device": device,
        "machine": reports.machine(device),
        "imgsz": bench.imgsz,
        "batch": 1,
        "split": split,
        "images": len(bench.images),
        "warmup": WARMUP,
        "statistic": "median over the images of Ultralytics' per-image speed (preprocess + inference + postprocess)",
        "metric": metric,
        "models": models,
    }


def onnx_model(
    scores: dict[str, dict[str, Any]], report: dict[str, Any], student: str, bench: Bench,
    built: dict[str, tuple[Path, dict[str, Any]]],
) -> dict[str, Any]:  # fmt: skip
    """Return the ONNX entry of the row to ship; a failure is recorded, not raised.

    That is the row with the best mean among those whose trained weights are on this machine (an export that can be
    scored), else the best row of all, exported as its architecture.
    """
    trained = [name for name in scores if row_weights(report, name, bench.workdir)[0] is not None]
    best = max(trained or scores, key=lambda name: scores[name]["mean"])
    weights, seed = row_weights(report, best, bench.workdir)
    source = weights if weights is not None else built[student][0]  # its architecture, built when the row was timed
    try:
        return {**onnx_entry(best, source, weights is not None, scores[best], bench), "seed": seed}
    except Exception as e:  # an export that fails or does not match PyTorch: the other timings still count
        return {"name": f"{best} (ONNX)", "kind": "onnx", "format": "onnx", "row": best,
                "error": f"{type(e).__name__}: {e}"}  # fmt: skip


def markdown(section: dict[str, Any]) -> str:
    """Return the printed latency table: each model's time per image, its parts and the score it has on the chart."""
    metric = section["metric"].removeprefix("metrics/")
    lines = [
        f"Inference time per image (batch 1, {section['imgsz']} px, device {section['device']}, median over "
        f"{section['images']} {section['split']} images):",
        "",
    ]
    rows: list[list[str]] = []
    for m in section["models"]:
        if "ms_per_image" not in m:
            rows.append([m["name"], m["format"], "", f"failed: {m.get('error', '')}", "", ""])
            continue
        parts = " · ".join(f"{m[f'{part}_ms']:.2f}" for part in PARTS)
        ci = f" ± {m['map']['ci95'] * 100:.1f}" if m["map"].get("ci95") is not None else ""
        rows.append([m["name"], m["format"], m["weights"], f"{m['ms_per_image']:.2f}", parts,
                     f"{m['map']['mean'] * 100:.1f}{ci}"])  # fmt: skip
    header = ["model", "format", "weights", "ms / image", "pre- · inference · postprocess",
              f"{section['split']} {metric}"]  # fmt: skip
    return "\n".join([*lines, *md.table_lines(header, rows)])


def report_profile(report: dict[str, Any]) -> Profile:
    """Return the profile a report ran with, from its settings (which record the profile's fields as used)."""
    settings = report.get("settings") or {}
    values = {f.name: tuple(settings[f.name]) if isinstance(settings.get(f.name), list) else settings[f.name]
              for f in fields(Profile) if f.name in settings}  # fmt: skip
    try:
        return Profile(**values)
    except TypeError as e:
        raise SystemExit(f"--latency-only: the report records too few settings to find its runs ({e})") from None


def latency_only(args: argparse.Namespace) -> dict[str, Any]:
    """Return the report ``--latency-only`` names with its ``latency`` section measured (no training).

    The dataset is made again from the report's settings and the dataset options given (``--data-root``;
    ``--synthetic`` for a report written before 2026-12-07, which recorded its profile's synthetic set instead of the
    one given), and must be the one the report's runs were scored on (same hash); runs and the teacher are looked for
    under ``--workdir``.
    """
    report = json.loads(Path(args.latency_only).read_text())
    profile, settings = report_profile(report), report["settings"]
    task = report.get("task") or "detect"
    run_args = argparse.Namespace(**{**vars(args), "task": task, "label_fraction": settings.get("label_fraction"),
                                     "teacher_labels": settings.get("teacher_labels") or "part"})  # fmt: skip
    workdir = work_folder(args.workdir, profile, task)
    workdir.mkdir(parents=True, exist_ok=True)
    sets = prepare_datasets(run_args, profile, workdir)
    recorded = (report.get("dataset") or {}).get("hash")
    if recorded and sets.data_hash != recorded:
        raise SystemExit(f"--latency-only: the dataset made from the report's settings is {sets.data_hash}, its runs' "
                         f"is {recorded}: pass the --data-root or --synthetic it was made with")  # fmt: skip
    recorded_device = (report.get("machine") or {}).get("device")
    if recorded_device and recorded_device.removeprefix("cuda:") != str(args.device):
        print(f"note: the report ran on {recorded_device}; timing on --device {args.device}", flush=True)
    teacher_job, _ = plan_jobs(run_args, profile, sets, {}, (), profile.epochs, "", workdir)
    section = latency_section(report, sets.data, Path(teacher_job["dir"]), args.workdir.resolve(), args.device,
                              workdir / "latency")  # fmt: skip
    return {**report, "latency": section}
