"""The yolo-distill Kubeflow pipeline: prepare-data → (train-teacher ∥ train-student) → distill → evaluate → register.

``register`` runs inside ``dsl.If`` on evaluate's single string output (``register`` / ``skip``: the distilled
student's gain over the baseline must pass the promotion gate — ``gate``, ``gate_level``, ``min_gain``), then moves
the registry's ``champion`` only if its gain over the champion passes the same gate. Passing ``teacher_weights``
skips teacher training (the scheduled-retraining case).

:func:`build_pipeline` binds the components to an image and applies the cluster settings (:class:`ClusterSettings`):
GPUs, CPU/memory, tolerations, node selector, credentials from Kubernetes secrets, a memory-backed ``/dev/shm``,
retries and caching. Locally (kfp.local) those settings are ignored or only warned about. (No ``from __future__
import annotations``: KFP reads the pipeline signature's real types.)

``nodes`` (default 1): with more, each training step runs as a Kubeflow Trainer ``TrainJob`` over that many nodes
(``gpus`` GPUs each); on a cluster the step is then a light pod that submits and watches the job (``dsl.If`` on
``nodes``; no GPU held while it waits), and its output is the same S3 URI (``dsl.OneOf``). See
:mod:`distill.steps.trainjob`.
"""

import inspect
import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

from kfp import dsl, kubernetes

from ..components.steps import build_components
from ..errors import DistillError
from ..settings import EVALUATE_TRAINING, GATE, KD, PIPELINE_TRAINING
from ..steps import pods
from ..steps.common import CACHE_ENV, CACHE_MOUNT

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
    cpu_limit: str = pods.TRAINING_CPU
    memory_request: str = "8G"
    memory_limit: str = pods.TRAINING_MEMORY
    light_memory: str = "4G"  # prepare-data, evaluate, register
    node_selector: dict[str, str] = field(default_factory=dict)  # GPU node labels for the training steps
    s3_secret: str = pods.S3_SECRET  # keys: pods.S3_KEYS
    mlflow_secret: str = pods.MLFLOW_SECRET  # keys: pods.MLFLOW_KEYS
    shm_size: str = pods.SHM_SIZE
    retries: int = 3
    # A PersistentVolumeClaim mounted as every step's input cache (off: None): the dataset and pool are fetched once
    # per run instead of once per pod. It needs ReadWriteMany when steps run side by side (teacher and baseline do).
    cache_pvc: str | None = None


def trainjob_settings(s: ClusterSettings, image: str) -> str:
    """Return the compile-time TrainJob settings (JSON) the training components use when ``nodes > 1``."""
    return json.dumps(
        {"image": image, "cpu": s.cpu_limit, "memory": s.memory_limit, "s3_secret": s.s3_secret,
         "mlflow_secret": s.mlflow_secret, "shm_size": s.shm_size, "node_selector": s.node_selector,
         "cache_pvc": s.cache_pvc}
    )  # fmt: skip


def _common(task: dsl.PipelineTask, s: ClusterSettings, memory: str) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(task, s.s3_secret, {k: k for k in pods.S3_KEYS})
    kubernetes.use_secret_as_env(task, s.mlflow_secret, {k: k for k in pods.MLFLOW_KEYS})
    if s.cache_pvc:  # fetches check every file against its manifest and write atomically: pods can share it
        kubernetes.mount_pvc(task, pvc_name=s.cache_pvc, mount_path=CACHE_MOUNT)
        for name, value in CACHE_ENV.items():
            task.set_env_variable(name, value)
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
    kubernetes.add_toleration(task, **pods.GPU_TOLERATION)
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
    b = _Builder(settings or ClusterSettings(), cluster)
    if not sweep:
        return _declared_pipeline(PIPELINE_NAME, "Distil a YOLO teacher into a small student and register it.",
                                  b.plain, pipeline_parameters(sweep=False))  # fmt: skip
    return _declared_pipeline(f"{PIPELINE_NAME}-sweep", "Distil with several {loss, layers}; register the best.",
                              b.swept, pipeline_parameters(sweep=True))  # fmt: skip


class _Builder:
    """Adds the pipeline's tasks, bound to the cluster settings, the components and the compile-time TrainJob JSON.

    Each method takes ``p``, the pipeline's parameters by name (see :func:`pipeline_parameters`).
    """

    def __init__(self, s: ClusterSettings, cluster: bool) -> None:
        self.s, self.cluster = s, cluster
        image = resolve_image(s.image) if cluster else LOCAL_IMAGE
        self.c = build_components(image)
        self.trainjob = trainjob_settings(s, image)
        self.pool = ""  # prepare-data's unlabelled pool URI output, set by shared(); distill takes it

    def training_step(self, component, display, nodes, accelerator, gpus, **kwargs):
        """Add a training task: one node in a GPU pod; on a cluster also, under ``nodes > 1``, the TrainJob launcher.

        Returns an object with ``outputs["Output"]`` (the best.pt URI) whichever branch ran.
        """
        s = self.s
        kwargs = dict(kwargs, nodes=nodes, gpus=gpus, accelerator=accelerator, trainjob=self.trainjob)
        if not self.cluster:  # kfp.local: one task (nodes > 1 needs a cluster; the component says so)
            task = component(**kwargs)
            _training(task, s, accelerator, gpus, self.cluster).set_display_name(display)
            return task
        with dsl.If(nodes == 1, name=f"{display}-one-node"):
            one = component(**kwargs)
            _training(one, s, accelerator, gpus, self.cluster).set_display_name(display)
        with dsl.Else(name=f"{display}-trainjob"):
            many = component(**kwargs)
            _common(many, s, s.light_memory).set_display_name(f"{display} (TrainJob)")
            many.set_retry(num_retries=s.retries, backoff_duration="60s", backoff_factor=2.0)
            many.set_caching_options(False)
        return SimpleNamespace(outputs={"Output": dsl.OneOf(one.outputs["Output"], many.outputs["Output"])})

    def shared(self, p: dict):
        """prepare-data → (train-teacher ∥ train-student); return the tasks and the common step arguments."""
        c, s = self.c, self.s
        data = c.prepare_data(source=p["data_source"], data_format=p["data_format"], classes=p["classes"],
                              prefix=p["s3_prefix"], run_id=p["run_id"], experiment=p["experiment"],
                              unlabeled_source=p["unlabeled_source"])  # fmt: skip
        _common(data, s, s.light_memory).set_display_name("prepare-data")
        self.pool = data.outputs["unlabeled"]
        common = dict(data=data.outputs["data"], run_id=p["run_id"], prefix=p["s3_prefix"], experiment=p["experiment"])
        where = dict(nodes=p["nodes"], accelerator=p["accelerator"], gpus=p["gpus"])
        teacher = self.training_step(c.train, "train-teacher", **where, model=p["teacher_model"], name="teacher",
                                     training=training(p, "teacher"), existing_weights=p["teacher_weights"],
                                     train_args=p["train_args"], **common)  # fmt: skip
        student = self.training_step(c.train, "train-student", **where, model=p["student_model"], name="student",
                                     training=training(p, "student"), existing_weights="",
                                     train_args=p["train_args"], **common)  # fmt: skip
        return teacher, student, common

    def distill_and_evaluate(self, teacher, student, common, p: dict, sweep_item, name):
        """Add distill (the KD settings from ``p``, the sweep's over them) and evaluate; return both tasks."""
        kd = {o.name: p[o.name] for o in KD if o.name in p}  # the sweep's loss/layers come in sweep_item
        kd_task = self.training_step(self.c.distill, "distill", p["nodes"], p["accelerator"], p["gpus"],
                                     teacher=teacher.outputs["Output"], student=p["student_model"], kd=kd,
                                     sweep_item=sweep_item, training=training(p, "student"), name=name,
                                     train_args=p["train_args"], unlabeled=self.pool, **common)  # fmt: skip
        evaluate_name = "evaluate" if name else ""  # "": the component names it after its distill step (sweep)
        ev = self.c.evaluate(teacher=teacher.outputs["Output"], baseline=student.outputs["Output"],
                             distilled=kd_task.outputs["Output"], name=evaluate_name,
                             training={k: p[k] for k in EVALUATE_TRAINING}, gate=gate(p), **common)  # fmt: skip
        _common(ev, self.s, self.s.light_memory).set_display_name("evaluate")
        return kd_task, ev

    def register(self, decision, kd_output, evaluation, p: dict) -> None:
        """Add register under the gate's ``decision`` (``register`` from evaluate or select-best)."""
        with dsl.If(decision == "register", name="distilled-beats-baseline"):
            reg = self.c.register(distilled=kd_output, evaluation=evaluation, name=p["registry_name"],
                                  run_id=p["run_id"], experiment=p["experiment"], gate=gate(p))  # fmt: skip
            _common(reg, self.s, self.s.light_memory).set_display_name("register")

    def plain(self, p: dict) -> str:
        """Add the pipeline: prepare-data → teacher ∥ student → distill → evaluate → register."""
        teacher, student, common = self.shared(p)
        kd, ev = self.distill_and_evaluate(teacher, student, common, p, {}, "distill")
        self.register(ev.outputs["Output"], kd.outputs["Output"], ev.outputs["metrics"], p)
        return ev.outputs["Output"]

    def swept(self, p: dict) -> str:
        """Add the sweep: distill + evaluate per ``sweep_configs`` item, select the best, register it."""
        teacher, student, common = self.shared(p)
        with dsl.ParallelFor(p["sweep_configs"], name="sweep") as cfg:
            _, ev = self.distill_and_evaluate(teacher, student, common, p, cfg, name="")
        best = self.c.select_best(evaluations=dsl.Collected(ev.outputs["metrics"]))
        _common(best, self.s, self.s.light_memory).set_display_name("select-best")
        self.register(best.outputs["Output"], "", best.outputs["best"], p)
        return best.outputs["Output"]


def training(p: dict, who: str) -> dict:
    """Return the training options of the ``teacher``'s or the ``student``'s training from the run's parameters.

    Each pipeline parameter of :data:`distill.settings.PIPELINE_TRAINING` sets its option: ``<who>_epochs`` the epochs
    (the distilled student trains the student's), every other one its own.
    """
    return {option.name: p[name] for name, option in PIPELINE_TRAINING.items()
            if not name.endswith("_epochs") or name == f"{who}_epochs"}  # fmt: skip


def gate(p: dict) -> dict:
    """Return the promotion gate's settings from the run's parameters: each of :data:`distill.settings.GATE` is one."""
    return {option.name: p[option.name] for option in GATE}


#: KD settings the sweep variant takes from each ``sweep_configs`` item instead of a parameter.
SWEPT = ("loss", "layers")


def pipeline_parameters(sweep: bool) -> list[tuple[str, type, object]]:
    """Return the pipeline's parameters ``(name, type, default)``: run inputs, every setting, ``train_args``.

    The KD settings, the training options and the promotion gate come from their one declaration
    (:data:`distill.settings.KD`, :data:`~distill.settings.PIPELINE_TRAINING`, :data:`~distill.settings.GATE`: typed,
    with the library default; optional ones are ``""``); ``train_args`` is a mapping of other Ultralytics train
    arguments.
    """
    head = [("data_source", str, inspect.Parameter.empty)]
    head += [("sweep_configs", list, DEFAULT_SWEEP)] if sweep else []
    head += [("unlabeled_source", str, ""), ("data_format", str, "yolo"), ("classes", str, ""),
             ("teacher_model", str, "yolov8s.yaml"),
             ("teacher_weights", str, ""), ("student_model", str, "yolov8n.yaml")]  # fmt: skip
    kd = [(o.name, o.pipeline_type, o.pipeline_default) for o in KD if not (sweep and o.name in SWEPT)]
    tail = [*((name, o.pipeline_type, o.pipeline_default) for name, o in PIPELINE_TRAINING.items()),
            ("train_args", dict, {}), ("registry_name", str, "yolo-distill-student"),
            *((o.name, o.pipeline_type, o.pipeline_default) for o in GATE),
            ("s3_prefix", str, ""), ("experiment", str, "yolo-distill"),
            ("accelerator", str, "nvidia.com/gpu"), ("gpus", int, 1), ("nodes", int, 1),
            ("run_id", str, dsl.PIPELINE_JOB_ID_PLACEHOLDER)]  # fmt: skip
    return head + kd + tail


def _declared_pipeline(name: str, description: str, body, parameters: list[tuple[str, type, object]]):
    """Return ``body`` (which takes one dict of parameters) as a ``@dsl.pipeline`` with ``parameters`` as signature.

    KFP reads a pipeline's parameters from its signature; giving it one built from the declarations (instead of ~30
    parameters written out per variant) is what keeps every setting in one place.
    """
    names = [n for n, _, _ in parameters]

    def pipeline_func(*args, **kwargs) -> str:
        return body(dict(zip(names, args, strict=False)) | kwargs)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    pipeline_func.__signature__ = inspect.Signature(
        [inspect.Parameter(n, kind, default=d, annotation=t) for n, t, d in parameters], return_annotation=str
    )
    pipeline_func.__annotations__ = {n: t for n, t, _ in parameters} | {"return": str}
    pipeline_func.__name__ = name.replace("-", "_")
    return dsl.pipeline(name=name, description=description)(pipeline_func)


def compile_pipeline(path: str, settings: ClusterSettings | None = None, sweep: bool = False) -> str:
    """Compile the pipeline (or its sweep variant) to a YAML package at ``path``; return the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings, sweep=sweep), package_path=path)
    return path
