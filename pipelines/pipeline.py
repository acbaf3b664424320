"""The yolo-distill Kubeflow pipeline: prepare-data → (train-teacher ∥ train-student) → distill → evaluate → register.

``register`` runs inside ``dsl.If`` on evaluate's single string output (``register`` / ``skip``: the distilled
student must beat the baseline by ``min_gain``), then moves the registry's ``champion`` only if it also beats the
champion by ``min_gain``. Passing ``teacher_weights`` skips teacher training (the scheduled-retraining case).

:func:`build_pipeline` binds the components to an image and applies the cluster settings (:class:`ClusterSettings`):
GPUs, CPU/memory, tolerations, node selector, credentials from Kubernetes secrets, a memory-backed ``/dev/shm``,
retries and caching. Locally (kfp.local) those settings are ignored or only warned about. (No ``from __future__
import annotations``: KFP reads the pipeline signature's real types.)

``nodes`` (default 1): with more, each training step runs as a Kubeflow Trainer ``TrainJob`` over that many nodes
(``gpus`` GPUs each); on a cluster the step is then a light pod that submits and watches the job (``dsl.If`` on
``nodes``; no GPU held while it waits), and its output is the same S3 URI (``dsl.OneOf``). See
:mod:`distill.steps.trainjob`.
"""

import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

from kfp import dsl, kubernetes

from ..components.steps import build_components
from ..config import DEFAULTS, TRAINING
from ..errors import DistillError

PIPELINE_NAME = "yolo-distill"
#: Environment variable naming the image when ``--image`` is not given.
IMAGE_ENV = "YOLO_DISTILL_IMAGE"
#: The image name kfp.local is given: its SubprocessRunner runs the components here and never pulls it.
LOCAL_IMAGE = "yolo-distill:local"


def resolve_image(image: str | None = None) -> str:
    """Return the container image for a cluster pipeline: ``image``, else ``$YOLO_DISTILL_IMAGE``.

    There is deliberately no default: no public image is published, so a default would leave pods pulling an image
    that does not exist. Raises :class:`DistillError` (exit 2 from the CLI) saying how to get one.
    """
    image = (image or os.environ.get(IMAGE_ENV, "")).strip()
    if not image:
        raise DistillError(
            f"no container image: pass --image REF or set {IMAGE_ENV}=REF "
            "(images/build.sh REGISTRY builds the image and prints the reference to use)"
        )
    return image


@dataclass
class ClusterSettings:
    """Where and how the steps run on a cluster (compile-time settings; GPU type/count are also run parameters)."""

    image: str | None = None  # None: $YOLO_DISTILL_IMAGE (see resolve_image); required to compile for a cluster
    cpu_request: str = "2"
    cpu_limit: str = "8"
    memory_request: str = "8G"
    memory_limit: str = "32G"
    light_memory: str = "4G"  # prepare-data, evaluate, register
    node_selector: dict[str, str] = field(default_factory=dict)  # GPU node labels for the training steps
    s3_secret: str = "yolo-distill-s3"  # keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3
    mlflow_secret: str = "yolo-distill-mlflow"  # keys: MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_TOKEN, optional)
    shm_size: str = "8Gi"
    retries: int = 3


S3_KEYS = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3")}
MLFLOW_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}


def trainjob_settings(s: ClusterSettings, image: str) -> str:
    """Return the compile-time TrainJob settings (JSON) the training components use when ``nodes > 1``."""
    return json.dumps(
        {"image": image, "cpu": s.cpu_limit, "memory": s.memory_limit, "s3_secret": s.s3_secret,
         "mlflow_secret": s.mlflow_secret, "shm_size": s.shm_size, "node_selector": s.node_selector}
    )  # fmt: skip


def _common(task: dsl.PipelineTask, s: ClusterSettings, memory: str) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(task, s.s3_secret, S3_KEYS)
    kubernetes.use_secret_as_env(task, s.mlflow_secret, MLFLOW_KEYS)
    return task.set_cpu_request(s.cpu_request).set_memory_request(memory).set_memory_limit(memory)


def _training(
    task: dsl.PipelineTask, s: ClusterSettings, accelerator: str, gpus: int, cluster: bool = True
) -> dsl.PipelineTask:
    """GPU, resources, /dev/shm, retry and no caching for a training step (safe to retry: it resumes from S3).

    With ``cluster=False`` (kfp.local) the accelerator request is left out: locally it is ignored anyway, and kfp.local
    cannot resolve a parameterised accelerator inside ``ParallelFor``.
    """
    _common(task, s, s.memory_request)
    task.set_cpu_limit(s.cpu_limit).set_memory_limit(s.memory_limit)
    if cluster:
        task.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    for key, value in s.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=s.shm_size)
    task.set_retry(num_retries=s.retries, backoff_duration="60s", backoff_factor=2.0)
    task.set_caching_options(False)
    return task


DEFAULT_SWEEP = [
    {"loss": "cwd", "layers": "neck"},
    {"loss": "mgd", "layers": "neck"},
    {"loss": "mimic", "layers": "neck"},
    {"loss": "cwd", "layers": "backbone-neck"},
]


def build_pipeline(settings: ClusterSettings | None = None, sweep: bool = False, cluster: bool = True):
    """Return the pipeline function (a ``@dsl.pipeline``) bound to ``settings`` (``cluster=False``: for kfp.local).

    With ``sweep``, distill + evaluate run once per ``{loss, layers}`` of ``sweep_configs`` (``dsl.ParallelFor``), the
    best gain over the baseline is selected, and that student is registered.
    """
    s = settings or ClusterSettings()
    image = resolve_image(s.image) if cluster else LOCAL_IMAGE
    c = build_components(image)
    trainjob = trainjob_settings(s, image)

    def training_step(component, display, nodes, accelerator, gpus, **kwargs):
        """Add a training task: one node in a GPU pod; on a cluster also, under ``nodes > 1``, the TrainJob launcher.

        Returns an object with ``outputs["Output"]`` (the best.pt URI) whichever branch ran.
        """
        kwargs = dict(kwargs, nodes=nodes, gpus=gpus, accelerator=accelerator, trainjob=trainjob)
        if not cluster:  # kfp.local: one task (nodes > 1 needs a cluster; the component says so)
            task = component(**kwargs)
            _training(task, s, accelerator, gpus, cluster).set_display_name(display)
            return task
        with dsl.If(nodes == 1, name=f"{display}-one-node"):
            one = component(**kwargs)
            _training(one, s, accelerator, gpus, cluster).set_display_name(display)
        with dsl.Else(name=f"{display}-trainjob"):
            many = component(**kwargs)
            _common(many, s, s.light_memory).set_display_name(f"{display} (TrainJob)")
            many.set_retry(num_retries=s.retries, backoff_duration="60s", backoff_factor=2.0)
            many.set_caching_options(False)
        return SimpleNamespace(outputs={"Output": dsl.OneOf(one.outputs["Output"], many.outputs["Output"])})

    def shared(data_source, data_format, classes, teacher_model, teacher_weights, student_model, teacher_epochs,
               student_epochs, imgsz, batch, device, seed, s3_prefix, experiment, accelerator, gpus,
               nodes, run_id):  # fmt: skip
        """prepare-data → (train-teacher ∥ train-student); return the tasks and the common step arguments."""
        data = c.prepare_data(source=data_source, data_format=data_format, classes=classes, prefix=s3_prefix,
                              run_id=run_id, experiment=experiment)  # fmt: skip
        _common(data, s, s.light_memory).set_display_name("prepare-data")
        common = dict(data=data.outputs["Output"], run_id=run_id, prefix=s3_prefix, imgsz=imgsz, batch=batch,
                      device=device, experiment=experiment)  # fmt: skip
        teacher = training_step(c.train, "train-teacher", nodes, accelerator, gpus, model=teacher_model,
                                name="teacher", epochs=teacher_epochs, existing_weights=teacher_weights, seed=seed,
                                **common)  # fmt: skip
        student = training_step(c.train, "train-student", nodes, accelerator, gpus, model=student_model,
                                name="student", epochs=student_epochs, existing_weights="", seed=seed,
                                **common)  # fmt: skip
        return teacher, student, common

    def distill_and_evaluate(teacher, student, common, student_model, loss, layers, logit, logit_loss, online,
                             student_epochs, seed, min_gain, accelerator, gpus, nodes, name):  # fmt: skip
        kd = training_step(c.distill, "distill", nodes, accelerator, gpus, teacher=teacher.outputs["Output"],
                           student=student_model, loss=loss, layers=layers, logit=logit, logit_loss=logit_loss,
                           online=online, epochs=student_epochs, seed=seed, name=name, **common)  # fmt: skip
        evaluate_name = "evaluate" if name else ""  # "": the component names it after its distill step (sweep)
        ev = c.evaluate(teacher=teacher.outputs["Output"], baseline=student.outputs["Output"],
                        distilled=kd.outputs["Output"], min_gain=min_gain, name=evaluate_name, **common)  # fmt: skip
        _common(ev, s, s.light_memory).set_display_name("evaluate")
        return kd, ev

    def register(gate, kd_output, evaluation, registry_name, run_id, min_gain, experiment):
        with dsl.If(gate == "register", name="distilled-beats-baseline"):
            reg = c.register(distilled=kd_output, evaluation=evaluation, name=registry_name, run_id=run_id,
                             min_gain=min_gain, experiment=experiment)  # fmt: skip
            _common(reg, s, s.light_memory).set_display_name("register")

    if not sweep:

        @dsl.pipeline(name=PIPELINE_NAME, description="Distil a YOLO teacher into a small student and register it.")
        def yolo_distill(
            data_source: str,
            data_format: str = "yolo",
            classes: str = "",
            teacher_model: str = "yolov8s.yaml",
            teacher_weights: str = "",
            student_model: str = "yolov8n.yaml",
            loss: str = DEFAULTS["loss"],
            layers: str = DEFAULTS["layers"],
            logit: bool = DEFAULTS["logit"],
            logit_loss: str = DEFAULTS["logit_loss"],
            online: bool = False,
            teacher_epochs: int = TRAINING["epochs"],
            student_epochs: int = TRAINING["epochs"],
            imgsz: int = TRAINING["imgsz"],
            batch: int = TRAINING["batch"],
            device: str = "",
            seed: int = TRAINING["seed"],
            registry_name: str = "yolo-distill-student",
            min_gain: float = 0.0,
            s3_prefix: str = "",
            experiment: str = "yolo-distill",
            accelerator: str = "nvidia.com/gpu",
            gpus: int = 1,
            nodes: int = 1,
            run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ) -> str:
            teacher, student, common = shared(data_source, data_format, classes, teacher_model, teacher_weights,
                                              student_model, teacher_epochs, student_epochs, imgsz, batch, device,
                                              seed, s3_prefix, experiment, accelerator, gpus, nodes,
                                              run_id)  # fmt: skip
            kd, ev = distill_and_evaluate(teacher, student, common, student_model, loss, layers, logit, logit_loss,
                                          online, student_epochs, seed, min_gain, accelerator, gpus, nodes,
                                          "distill")  # fmt: skip
            register(ev.outputs["Output"], kd.outputs["Output"], ev.outputs["metrics"], registry_name, run_id,
                     min_gain, experiment)  # fmt: skip
            return ev.outputs["Output"]

        return yolo_distill

    @dsl.pipeline(name=f"{PIPELINE_NAME}-sweep", description="Distil with several {loss, layers}; register the best.")
    def yolo_distill_sweep(
        data_source: str,
        sweep_configs: list = DEFAULT_SWEEP,
        data_format: str = "yolo",
        classes: str = "",
        teacher_model: str = "yolov8s.yaml",
        teacher_weights: str = "",
        student_model: str = "yolov8n.yaml",
        logit: bool = DEFAULTS["logit"],
        logit_loss: str = DEFAULTS["logit_loss"],
        online: bool = False,
        teacher_epochs: int = TRAINING["epochs"],
        student_epochs: int = TRAINING["epochs"],
        imgsz: int = TRAINING["imgsz"],
        batch: int = TRAINING["batch"],
        device: str = "",
        seed: int = TRAINING["seed"],
        registry_name: str = "yolo-distill-student",
        min_gain: float = 0.0,
        s3_prefix: str = "",
        experiment: str = "yolo-distill",
        accelerator: str = "nvidia.com/gpu",
        gpus: int = 1,
        nodes: int = 1,
        run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    ) -> str:
        teacher, student, common = shared(data_source, data_format, classes, teacher_model, teacher_weights,
                                          student_model, teacher_epochs, student_epochs, imgsz, batch, device,
                                          seed, s3_prefix, experiment, accelerator, gpus, nodes, run_id)  # fmt: skip
        with dsl.ParallelFor(sweep_configs, name="sweep") as cfg:
            _, ev = distill_and_evaluate(teacher, student, common, student_model, cfg.loss, cfg.layers, logit,
                                         logit_loss, online, student_epochs, seed, min_gain, accelerator, gpus,
                                         nodes, name="")  # fmt: skip
        best = c.select_best(evaluations=dsl.Collected(ev.outputs["metrics"]), min_gain=min_gain)
        _common(best, s, s.light_memory).set_display_name("select-best")
        register(best.outputs["Output"], "", best.outputs["best"], registry_name, run_id, min_gain, experiment)
        return best.outputs["Output"]

    return yolo_distill_sweep


def compile_pipeline(path: str, settings: ClusterSettings | None = None, sweep: bool = False) -> str:
    """Compile the pipeline (or its sweep variant) to a YAML package at ``path``; return the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings, sweep=sweep), package_path=path)
    return path
