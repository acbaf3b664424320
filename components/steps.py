"""Kubeflow Pipelines v2 lightweight components: one per pipeline step, each a thin call into ``distill.steps``.

The functions below are the components' bodies. KFP ships a lightweight component's *source* to the pod, so each is
self-contained: it imports inside, validates through the step function, records the S3 URI and sha256 of what the
step wrote in its output artifact's metadata (lineage in the KFP UI; the same URIs are in MLflow), and returns a
single value for the next step. :func:`build_components` binds them to the project image.

(No ``from __future__ import annotations`` here: KFP reads the signatures' real types.)
"""

from types import SimpleNamespace

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def prepare_data(
    source: str, data_format: str, classes: str, prefix: str, run_id: str, experiment: str, dataset: Output[Dataset]
) -> str:
    """Import, normalise, validate and publish the dataset; return its URI."""
    import json

    from distill.steps.prepare_data import prepare_data as step

    result = step(source, data_format, dest=prefix or None, classes=classes or None, run_id=run_id,
                  experiment=experiment or None)  # fmt: skip
    dataset.metadata.update({"s3_uri": result["uri"], "hash": result["hash"], "counts": result["counts"]})
    with open(dataset.path, "w") as f:
        json.dump(result, f)
    return result["uri"]


def train(
    data: str,
    model: str,
    name: str,
    run_id: str,
    prefix: str,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    seed: int,
    experiment: str,
    existing_weights: str,
    nodes: int,
    gpus: int,
    accelerator: str,
    trainjob: str,
    weights: Output[Model],
) -> str:
    """Train a teacher or baseline student; with ``existing_weights`` set, use those instead (no training).

    With ``nodes > 1`` the step runs as a Kubeflow Trainer TrainJob (``trainjob``: its settings as JSON) and this pod
    only submits and watches it.
    """
    import json

    from distill.steps.trainjob import run_training_step

    if existing_weights:
        from distill import storage

        meta = storage.head(existing_weights) if storage.is_s3(existing_weights) else None
        if storage.is_s3(existing_weights) and meta is None:
            raise FileNotFoundError(f"existing weights '{existing_weights}' not found")
        weights.metadata.update({"s3_uri": existing_weights, "sha256": (meta or {}).get("sha256"), "reused": True})
        with open(weights.path, "w") as f:
            json.dump({"best": existing_weights, "reused": True}, f)
        return existing_weights
    step = dict(data=data, model=model, epochs=epochs, imgsz=imgsz, batch=batch, device=device or None, seed=seed,
                experiment=experiment or None)  # fmt: skip
    result = run_training_step("train", nodes, gpus, accelerator, trainjob, name, run_id, prefix or None, **step)
    best = result["outputs"]["best.pt"]
    weights.metadata.update({"s3_uri": best["uri"], "sha256": best["sha256"], "mlflow_run_id": result["mlflow_run_id"]})
    with open(weights.path, "w") as f:
        json.dump(result, f)
    return result["best"]


def distill(
    data: str,
    teacher: str,
    student: str,
    run_id: str,
    prefix: str,
    loss: str,
    layers: str,
    logit: bool,
    logit_loss: str,
    online: bool,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    seed: int,
    experiment: str,
    name: str,
    nodes: int,
    gpus: int,
    accelerator: str,
    trainjob: str,
    weights: Output[Model],
) -> str:
    """Distil the teacher into the student; return the distilled ``best.pt`` URI (``nodes > 1``: as a TrainJob)."""
    import json

    from distill.steps.trainjob import run_training_step

    name = name or f"distill-{loss}-{layers.replace(',', '_')}"
    step = dict(data=data, teacher=teacher, student=student, loss=loss, layers=layers, logit=logit,
                logit_loss=logit_loss, online=online, epochs=epochs, imgsz=imgsz, batch=batch, device=device or None,
                seed=seed, experiment=experiment or None)  # fmt: skip
    result = run_training_step("distill", nodes, gpus, accelerator, trainjob, name, run_id, prefix or None, **step)
    best = result["outputs"]["best.pt"]
    weights.metadata.update(
        {"s3_uri": best["uri"], "sha256": best["sha256"], "loss": loss, "layers": layers,
         "logit_loss": logit_loss if logit else "", "mlflow_run_id": result["mlflow_run_id"]}
    )  # fmt: skip
    with open(weights.path, "w") as f:
        json.dump(result, f)
    return result["best"]


def evaluate(
    data: str,
    teacher: str,
    baseline: str,
    distilled: str,
    run_id: str,
    prefix: str,
    imgsz: int,
    batch: int,
    device: str,
    experiment: str,
    min_gain: float,
    name: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> str:
    """Compare the three models; return ``register`` when distilled − baseline ≥ ``min_gain``, else ``skip``."""
    from distill import storage
    from distill.steps.evaluate import evaluate as step

    name = name or "evaluate-" + distilled.rstrip("/").split("/")[-2]  # sweep: one evaluation per distill step
    result = step(
        data, teacher, baseline, distilled, run_id=run_id, prefix=prefix or None, name=name,
        imgsz=imgsz, batch=batch, device=device or None, experiment=experiment or None,
    )  # fmt: skip
    for role, figures in result["models"].items():
        for key, value in figures["metrics"].items():
            metrics.log_metric(f"{role}/{key}", value)
    verdict = result["verdict"]
    metrics.log_metric("gain_over_baseline", verdict["gain_over_baseline"])
    metrics.metadata.update({"s3_uri": result["metrics"], "report_uri": result["report"], "distilled": distilled})
    with open(report.path, "w") as f:
        f.write(storage.read_bytes(result["report"]).decode())
    report.metadata.update({"s3_uri": result["report"]})
    return "register" if verdict["gain_over_baseline"] >= min_gain else "skip"


def select_best(evaluations: Input[list[Metrics]], min_gain: float, best: Output[Metrics]) -> str:
    """Sweep: pick the evaluation with the largest gain over the baseline; return ``register`` or ``skip``."""
    winner = max(evaluations, key=lambda e: float(e.metadata["gain_over_baseline"]))
    best.metadata.update(winner.metadata)
    with open(best.path, "w") as f:
        f.write(winner.metadata["s3_uri"])
    return "register" if float(winner.metadata["gain_over_baseline"]) >= min_gain else "skip"


def register(
    distilled: str, evaluation: Input[Metrics], name: str, run_id: str, min_gain: float, experiment: str
) -> str:
    """Register the distilled student (default: the one the evaluation measured); return the result as JSON."""
    import json

    from distill.steps.register import register as step

    result = step(
        distilled or evaluation.metadata["distilled"], evaluation.metadata["s3_uri"], name, run_id=run_id,
        min_gain=min_gain,
        experiment=experiment or None,
    )  # fmt: skip
    return json.dumps(result)


def build_components(image: str) -> SimpleNamespace:
    """Return the step components bound to ``image`` (the project image, pinned by tag or digest)."""
    make = dsl.component(base_image=image)
    return SimpleNamespace(
        prepare_data=make(prepare_data),
        train=make(train),
        distill=make(distill),
        evaluate=make(evaluate),
        select_best=make(select_best),
        register=make(register),
    )
