"""Kubeflow Pipelines v2 lightweight components: one per pipeline step, each a thin call into ``distill.steps``.

The functions below are the components' bodies. KFP ships a lightweight component's *source* to the pod, so each is
self-contained: it imports inside, validates through the step function, records the S3 URI and sha256 of what the
step wrote in its output artifact's metadata (lineage in the KFP UI; the same URIs are in MLflow), and returns a
single value for the next step. :func:`build_components` binds them to the project image.

(No ``from __future__ import annotations`` here: KFP reads the signatures' real types.)
"""

from types import SimpleNamespace
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def prepare_data(
    source: str,
    data_format: str,
    classes: str,
    prefix: str,
    run_id: str,
    experiment: str,
    dataset: Output[Dataset],
    unlabeled_source: str = "",
) -> NamedTuple("Outputs", [("data", str), ("unlabeled", str)]):
    """Import, normalise, validate and publish the dataset (and an unlabelled pool beside it); return both URIs.

    Args:
        source: The dataset: a local folder or ``.zip``, an ``s3://`` prefix or an ``s3://...zip``.
        data_format: ``yolo`` (a folder with ``data.yaml``), ``coco`` (``annotations/*.json`` + images) or ``voc``.
        classes: Comma-separated class names in index order; empty: the dataset's own (VOC: the sorted names found).
        prefix: ``s3://bucket/prefix`` to publish under; empty: ``$YOLO_DISTILL_S3_PREFIX``.
        run_id: The pipeline run id; the step is tracked as its MLflow child run.
        experiment: MLflow experiment; empty: ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``.
        dataset: The output artifact the step writes (see Returns).
        unlabeled_source: Unlabelled images (a folder or ``.zip``, an ``s3://`` prefix or ``s3://...zip``, read as
            it is when the step runs) to publish as a pool beside the dataset; empty: none.

    Returns:
        dataset: The step's result (JSON), with the dataset's S3 URI, content hash and counts as metadata, and the
            pool's URI and hash (the snapshot used) when there is one.
        data: The published dataset's URI, the ``data`` of the steps after it.
        unlabeled: The published pool's URI (``""`` without one), the ``unlabeled`` of the distill step.
    """
    import json
    from collections import namedtuple

    import distill

    distill.configure()  # Ultralytics offline, before any step module imports it
    from distill.steps.prepare_data import prepare_data as step

    result = step(source, data_format, dest=prefix or None, classes=classes or None, run_id=run_id,
                  experiment=experiment or None, unlabeled=unlabeled_source or None)  # fmt: skip
    dataset.metadata.update({"s3_uri": result["uri"], "hash": result["hash"], "counts": result["counts"]})
    if "unlabeled" in result:
        pool = result["unlabeled"]
        dataset.metadata.update({"unlabeled_uri": pool["uri"], "unlabeled_hash": pool["hash"],
                                 "unlabeled_images": pool["images"]})  # fmt: skip
    with open(dataset.path, "w") as f:
        json.dump(result, f)
    return namedtuple("Outputs", ["data", "unlabeled"])(result["uri"], result.get("unlabeled", {}).get("uri", ""))


def train(
    data: str,
    model: str,
    name: str,
    run_id: str,
    prefix: str,
    training: dict,
    experiment: str,
    existing_weights: str,
    nodes: int,
    gpus: int,
    accelerator: str,
    trainjob: str,
    train_args: dict,
    weights: Output[Model],
) -> str:
    """Train a teacher or baseline student; with ``existing_weights`` set, use those instead (no training).

    With ``nodes > 1`` the step runs as a Kubeflow Trainer TrainJob and this pod only submits and watches it. A rerun
    of a finished step returns its result; a retried one resumes from its last uploaded checkpoint.

    Args:
        data: Dataset URI from prepare-data.
        model: Model ``.yaml`` (from scratch) or weights URI (local or ``s3://``) to start from.
        name: Step name (``teacher``, ``student``), its folder under ``runs/<run_id>/``.
        run_id: The pipeline run id (outputs under ``runs/<run_id>/``; tracked as its MLflow child run).
        prefix: ``s3://bucket/prefix`` the step writes under; empty: ``$YOLO_DISTILL_S3_PREFIX``.
        training: The training options (``distill.settings.TRAINING``; typed back here as declared, a missing one at
            its default). ``device`` empty: every GPU of the pod (DDP), else the CPU.
        experiment: MLflow experiment; empty: ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``.
        existing_weights: Weights URI to use instead of training (the teacher of an earlier run); empty: train.
        nodes: Nodes to train on: 1 in this pod, more as a TrainJob.
        gpus: GPUs per node.
        accelerator: The GPU resource name (``nvidia.com/gpu``).
        trainjob: The TrainJob's settings as JSON (image, resources, secrets; set when the pipeline is compiled).
        train_args: Other Ultralytics train arguments (checked before the run starts).
        weights: The output artifact the step writes (see Returns).

    Returns:
        weights: The step's result (JSON), with the ``best.pt`` S3 URI, sha256 and MLflow run id as metadata.
        Output: The trained ``best.pt`` URI (``existing_weights`` when set).
    """
    import json

    import distill

    distill.configure()  # Ultralytics offline, before any step module imports it
    from distill.settings import coerce_training
    from distill.steps.common import record_weights
    from distill.steps.trainjob import run_training_step

    if existing_weights:
        from distill.data import storage

        meta = storage.head(existing_weights) if storage.is_s3(existing_weights) else None
        if storage.is_s3(existing_weights) and meta is None:
            raise FileNotFoundError(f"existing weights '{existing_weights}' not found")
        weights.metadata.update({"s3_uri": existing_weights, "sha256": (meta or {}).get("sha256"), "reused": True})
        with open(weights.path, "w") as f:
            json.dump({"best": existing_weights, "reused": True}, f)
        return existing_weights
    step = dict(data=data, model=model, experiment=experiment or None, **coerce_training(training), **train_args)
    result = run_training_step("train", nodes, gpus, accelerator, trainjob, name, run_id, prefix or None, **step)
    return record_weights(weights, result)


def distill(
    data: str,
    teacher: str,
    student: str,
    run_id: str,
    prefix: str,
    kd: dict,
    sweep_item: dict,
    training: dict,
    experiment: str,
    name: str,
    nodes: int,
    gpus: int,
    accelerator: str,
    trainjob: str,
    train_args: dict,
    weights: Output[Model],
    unlabeled: str = "",
) -> str:
    """Distil the teacher into the student; return the distilled ``best.pt`` URI (``nodes > 1``: as a TrainJob).

    Args:
        data: Dataset URI from prepare-data.
        teacher: The trained teacher's weights URI.
        student: Student model ``.yaml`` (from scratch) or weights URI.
        run_id: The pipeline run id (outputs under ``runs/<run_id>/``; tracked as its MLflow child run).
        prefix: ``s3://bucket/prefix`` the step writes under; empty: ``$YOLO_DISTILL_S3_PREFIX``.
        kd: The KD settings (``distill.settings.KD``; the pipeline hands them over as text, typed back here).
        sweep_item: The sweep's ``{loss, layers}`` over ``kd`` (``{}`` outside a sweep).
        training: The training options (``distill.settings.TRAINING``; typed back here as declared, a missing one at
            its default). ``device`` empty: every GPU of the pod (DDP), else the CPU.
        experiment: MLflow experiment; empty: ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``.
        name: Step name, its folder under ``runs/<run_id>/``; empty: ``distill-<loss>-<layers>``.
        nodes: Nodes to train on: 1 in this pod, more as a TrainJob.
        gpus: GPUs per node.
        accelerator: The GPU resource name (``nvidia.com/gpu``).
        trainjob: The TrainJob's settings as JSON (image, resources, secrets; set when the pipeline is compiled).
        train_args: Other Ultralytics train arguments (checked before the run starts).
        weights: The output artifact the step writes (see Returns).
        unlabeled: prepare-data's unlabelled pool URI; empty: none. The teacher pseudo-labels it and the student
            trains on it beside the labelled images.

    Returns:
        weights: The step's result (JSON), with the ``best.pt`` S3 URI, sha256, loss, layers, logit loss, MLflow run
            id and (with a pool) the labelled and unlabelled images trained on as metadata.
        Output: The distilled ``best.pt`` URI.
    """
    import distill

    distill.configure()  # Ultralytics offline, before any step module imports it
    from distill.settings import coerce_kd, coerce_training
    from distill.steps.common import record_weights
    from distill.steps.trainjob import run_training_step

    kd = coerce_kd({**kd, **sweep_item})
    name = name or f"distill-{kd['loss']}-{str(kd['layers']).replace(',', '_')}"
    step = dict(data=data, teacher=teacher, student=student, experiment=experiment or None,
                unlabeled=unlabeled or None, **coerce_training(training), **kd, **train_args)  # fmt: skip
    result = run_training_step("distill", nodes, gpus, accelerator, trainjob, name, run_id, prefix or None, **step)
    pool = result.get("pool") or {}
    counts = {"labelled_images": pool["labelled"], "unlabeled_images": pool["used"], "pseudo_labels": pool["instances"],
              "pseudo_conf": pool["conf"], "pool_rounds": pool.get("rounds", 1)} if pool else {}  # fmt: skip
    return record_weights(weights, result, loss=kd["loss"], layers=str(kd["layers"]),
                          logit_loss=kd["logit_loss"] if kd["logit"] else "", **counts)  # fmt: skip


def evaluate(
    data: str,
    teacher: str,
    baseline: str,
    distilled: str,
    run_id: str,
    prefix: str,
    training: dict,
    experiment: str,
    gate: dict,
    name: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> str:
    """Compare the three models; return ``register`` when distilled − baseline passes the gate, else ``skip``.

    Args:
        data: Dataset URI from prepare-data (scored on its test split, else val).
        teacher: The teacher's weights URI.
        baseline: The baseline student's weights URI (trained without KD).
        distilled: The distilled student's weights URI.
        run_id: The pipeline run id (outputs under ``runs/<run_id>/``; tracked as its MLflow child run).
        prefix: ``s3://bucket/prefix`` the step writes under; empty: ``$YOLO_DISTILL_S3_PREFIX``.
        training: The training options the models are validated with (``distill.settings.EVALUATE_TRAINING``; typed
            back here as declared, a missing one at its default). ``device`` empty: a GPU if the pod has one, else the
            CPU.
        experiment: MLflow experiment; empty: ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``.
        gate: The promotion gate's settings (``distill.settings.GATE``; typed back here as declared, a missing one at
            its default): distilled − baseline must pass the gate to go on to register.
        name: Step name; empty: ``evaluate-<distill step>`` (one evaluation per distill step of a sweep).
        metrics: The output artifact the step writes (see Returns).
        report: The output artifact the step writes (see Returns).

    Returns:
        metrics: Every model's metrics and the gain over the baseline, with the ``metrics.json`` and report
            URIs as metadata.
        report: The comparison report (Markdown).
        Output: ``register`` or ``skip``.
    """
    import distill

    distill.configure()  # Ultralytics offline, before any step module imports it
    from distill.data import storage
    from distill.settings import EVALUATE_TRAINING, coerce_gate, coerce_training
    from distill.steps.evaluate import evaluate as step

    name = name or "evaluate-" + distilled.rstrip("/").split("/")[-2]  # sweep: one evaluation per distill step
    result = step(
        data, teacher, baseline, distilled, run_id=run_id, prefix=prefix or None, name=name,
        experiment=experiment or None, **coerce_gate(gate), **coerce_training(training, EVALUATE_TRAINING),
    )  # fmt: skip
    for role, figures in result["models"].items():
        for key, value in figures["metrics"].items():
            metrics.log_metric(f"{role}/{key}", value)
    verdict = result["verdict"]
    metrics.log_metric("gain_over_baseline", verdict["gain_over_baseline"])
    metrics.log_metric("gain_over_baseline_low", verdict["gate"]["low"])
    metrics.log_metric("gain_over_baseline_high", verdict["gate"]["high"])
    metrics.metadata.update({"s3_uri": result["metrics"], "report_uri": result["report"], "distilled": distilled,
                             "gate_passes": verdict["gate"]["passes"]})  # fmt: skip
    with open(report.path, "w") as f:
        f.write(storage.read_bytes(result["report"]).decode())
    report.metadata.update({"s3_uri": result["report"]})
    return "register" if verdict["gate"]["passes"] else "skip"


def select_best(evaluations: Input[list[Metrics]], best: Output[Metrics]) -> str:
    """Sweep: pick the evaluation with the largest gain over the baseline; ``register`` if it passed its gate.

    Args:
        evaluations: The sweep's evaluate ``metrics`` outputs, one per ``{loss, layers}`` (each judged by the gate).
        best: The output artifact the step writes (see Returns).

    Returns:
        best: The winning evaluation (its metadata; the file holds its ``metrics.json`` URI).
        Output: ``register`` or ``skip``.
    """
    winner = max(evaluations, key=lambda e: float(e.metadata["gain_over_baseline"]))
    best.metadata.update(winner.metadata)
    with open(best.path, "w") as f:
        f.write(winner.metadata["s3_uri"])
    return "register" if winner.metadata["gate_passes"] else "skip"


def register(
    distilled: str,
    evaluation: Input[Metrics],
    name: str,
    run_id: str,
    gate: dict,
    experiment: str,
) -> str:
    """Register the distilled student (default: the one the evaluation measured); return the result as JSON.

    The version gets alias ``challenger``; ``champion`` moves to it only when its gain over the current champion on
    the same data passes the promotion gate. One version per pipeline run: a rerun finishes and reports that version.

    Args:
        distilled: The distilled student's weights URI; empty: the one ``evaluation`` measured.
        evaluation: The evaluate (or select-best) ``metrics`` output whose ``metrics.json`` decides.
        name: Registered model name.
        run_id: The pipeline run id (one version per pipeline run).
        gate: The promotion gate's settings (``distill.settings.GATE``; typed back here as declared, a missing one at
            its default): the gain over the current champion must pass the gate to promote.
        experiment: MLflow experiment; empty: ``$MLFLOW_EXPERIMENT_NAME`` or ``yolo-distill``.

    Returns:
        Output: The result as JSON: version, aliases, model URI, whether promoted and why.
    """
    import json

    import distill

    distill.configure()  # Ultralytics offline, before any step module imports it
    from distill.settings import coerce_gate
    from distill.steps.register import register as step

    result = step(
        distilled or evaluation.metadata["distilled"], evaluation.metadata["s3_uri"], name, run_id=run_id,
        experiment=experiment or None, **coerce_gate(gate),
    )  # fmt: skip
    return json.dumps(result)


def build_components(image: str) -> SimpleNamespace:
    """Return the step components bound to ``image`` (the project image, pinned by tag or digest).

    The image has kfp at the version this package was tested with (images/requirements.lock), so the components do
    not pip-install it at start (KFP's default): a pod starts without reaching a package index and without writing
    to its root filesystem.
    """
    make = dsl.component(base_image=image, install_kfp_package=False)
    return SimpleNamespace(
        prepare_data=make(prepare_data),
        train=make(train),
        distill=make(distill),
        evaluate=make(evaluate),
        select_best=make(select_best),
        register=make(register),
    )
