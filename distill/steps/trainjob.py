"""Several nodes: a training step (train or distill) run as a Kubeflow Trainer ``TrainJob``.

With ``nodes > 1`` the pipeline's training component does not train itself: it submits a ``TrainJob`` through the
``kubeflow`` SDK (``TrainerClient``, runtime ``torch-distributed``) whose every node runs the same step command under
``torchrun`` — ``torchrun -m distill step distill ...`` — and waits for it, printing its status and node 0's log.
The Trainer controller injects ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT``, which ``torchrun`` reads; the engine takes world size and ranks from ``torchrun``
(:mod:`distill.launch`), and global rank 0 writes the step's outputs and ``result.json`` to the same S3 URIs as a
single-node step. The component then returns that ``result.json``, so evaluate and register do not change.

Retries are safe: the job is named after the pipeline run and step, so a retried component finds its job again
(still running: it waits; failed: it deletes it and submits again, and the new job resumes from the S3 checkpoint;
complete: it reads the result).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data import storage
from ..data.storage import S3Uri
from ..errors import DistillError, Failure, RunFailure
from . import pods
from .common import CACHE_ENV, CACHE_MOUNT

RUNTIME = "torch-distributed"
CONTAINER = "node"  # the trainer container (and replicated job) of the torch-distributed runtime


class TrainJobFailed(RunFailure):
    """The TrainJob ended Failed (the message carries the controller's reason) or never finished in time."""


@dataclass(frozen=True)
class TrainJobSettings:
    """What a multi-node training step's ``TrainJob`` runs on: image, size, credentials and placement.

    Attributes:
        image: The project image (the same one the pipeline's components run).
        nodes: Nodes (pods) of the job, each running ``torchrun`` with one process per GPU.
        gpus_per_node: GPUs per node (``accelerator`` resources); 0 trains on CPU (gloo).
        accelerator: The GPU resource name (``nvidia.com/gpu``).
        cpu: CPU request per node; memory: memory request per node.
        namespace: Where to create the job (default: the SDK's: the pod's own namespace, or kube-config's).
        runtime: The ``ClusterTrainingRuntime`` / ``TrainingRuntime`` to use.
        s3_secret / mlflow_secret: Kubernetes secrets whose keys become the nodes' environment, as for the
            single-node pods (``AWS_*``; ``MLFLOW_TRACKING_URI``).
        shm_size: Size of the memory-backed ``/dev/shm`` (PyTorch data loaders need more than the default 64 MiB).
        node_selector / tolerations: Placement of the nodes.
        env: Plain environment for the nodes (e.g. ``YOLO_DISTILL_S3_PREFIX``).
        cache_pvc: A PersistentVolumeClaim mounted as every node's input cache, as in the pipeline's other pods
            (``pipeline compile --cache-pvc``; ``ReadWriteMany``); ``None``: each node fetches into its own.
        timeout_s: How long to wait for the job to finish.
        poll_s: Status polling interval.
    """

    image: str
    nodes: int
    gpus_per_node: int = 1
    accelerator: str = "nvidia.com/gpu"
    cpu: str = pods.TRAINING_CPU
    memory: str = pods.TRAINING_MEMORY
    namespace: str | None = None
    runtime: str = RUNTIME
    s3_secret: str = pods.S3_SECRET
    mlflow_secret: str = pods.MLFLOW_SECRET
    shm_size: str = pods.SHM_SIZE
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=lambda: [dict(pods.GPU_TOLERATION)])
    env: dict[str, str] = field(default_factory=dict)
    cache_pvc: str | None = None
    timeout_s: int = 7 * 24 * 3600
    poll_s: float = 15.0

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise DistillError(f"nodes={self.nodes}: a TrainJob is for 2 or more nodes (1 node trains in the step)")
        if not self.image:
            raise DistillError("a multi-node step needs the project image (--image or $YOLO_DISTILL_IMAGE)")


def settings_from_json(text: str, **fields: Any) -> TrainJobSettings:
    """Build :class:`TrainJobSettings` from the pipeline's compile-time JSON plus run-time ``fields`` (nodes, GPUs)."""
    values = {**(json.loads(text) if text else {}), **fields}
    unknown = set(values) - set(TrainJobSettings.__dataclass_fields__)
    if unknown:
        raise DistillError(f"unknown TrainJob settings: {', '.join(sorted(unknown))}")
    return TrainJobSettings(**values)


def job_name(run_id: str, step: str) -> str:
    """Return the TrainJob name of a pipeline run's step: stable across retries, a valid DNS label.

    Examples:
        >>> job_name("4f1c0b7e-aaaa", "distill")
        'yd-distill-cd9fde70881b'
    """
    digest = hashlib.sha256(f"{run_id}\0{step}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9-]+", "-", step.lower()).strip("-")[:30].strip("-") or "step"
    return f"yd-{slug}-{digest}"


def trainjob_options(name: str, step_args: list[str], settings: TrainJobSettings, labels: dict[str, str]) -> list:
    """Return the SDK options of the job: name, labels, ``torchrun`` command, secrets, ``/dev/shm`` and placement."""
    from kubeflow.trainer.options.common import Name
    from kubeflow.trainer.options.kubernetes import (
        ContainerPatch,
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        Labels,
        PodSpecPatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainerArgs,
        TrainerCommand,
        TrainingRuntimeSpecPatch,
    )

    secret_env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for secret, keys in ((settings.s3_secret, pods.S3_KEYS), (settings.mlflow_secret, pods.MLFLOW_KEYS))
        for key in keys
    ]
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}}]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if settings.cache_pvc:  # the run's shared input cache: the dataset is fetched once, not once per node
        volumes.append({"name": "input-cache", "persistentVolumeClaim": {"claimName": settings.cache_pvc}})
        mounts.append({"name": "input-cache", "mountPath": CACHE_MOUNT})
        secret_env += [{"name": k, "value": v} for k, v in CACHE_ENV.items()]
    pod = PodSpecPatch(
        volumes=volumes,
        containers=[ContainerPatch(name=CONTAINER, env=secret_env, volume_mounts=mounts)],
        node_selector=settings.node_selector or None,
        tolerations=settings.tolerations or None,
    )
    patch = RuntimePatch(
        training_runtime_spec=TrainingRuntimeSpecPatch(
            template=JobSetTemplatePatch(
                spec=JobSetSpecPatch(
                    replicated_jobs=[
                        ReplicatedJobPatch(
                            name=CONTAINER,
                            template=JobTemplatePatch(spec=JobSpecPatch(template=PodTemplatePatch(spec=pod))),
                        )
                    ]
                )
            )
        )
    )
    return [
        Name(name=name),
        Labels(labels=labels),
        TrainerCommand(command=["torchrun"]),
        TrainerArgs(args=["-m", "distill", "step", *step_args]),
        patch,
    ]


def trainer_spec(settings: TrainJobSettings) -> Any:
    """Return the SDK's ``CustomTrainerContainer``: image, nodes, resources per node, plain environment."""
    from kubeflow.trainer import CustomTrainerContainer

    resources: dict[str, Any] = {"cpu": settings.cpu, "memory": settings.memory}
    if settings.gpus_per_node:
        resources[settings.accelerator] = str(settings.gpus_per_node)  # a quantity string (the SDK sends 4.0 for 4)
    return CustomTrainerContainer(
        image=settings.image,
        num_nodes=settings.nodes,
        resources_per_node=resources,
        env={"PYTHONUNBUFFERED": "1", **settings.env},
    )


def _not_found(error: BaseException) -> bool:
    """Return whether the SDK's error wraps a Kubernetes 404 (the job does not exist)."""
    from kubernetes.client import ApiException

    cause = error
    while cause is not None:
        if isinstance(cause, ApiException):
            return cause.status == 404
        cause = cause.__cause__
    return False


def failure_reason(client: Any, name: str) -> str:
    """Return the ``Failed`` condition's reason and message of a TrainJob (what the controller says happened)."""
    from kubeflow.trainer.constants import constants

    backend = client.backend
    try:
        cr = backend.custom_api.get_namespaced_custom_object(
            constants.GROUP, constants.VERSION, backend.namespace, constants.TRAINJOB_PLURAL, name
        )
    except Exception as e:  # the reason is a courtesy: the failure itself is already known
        return f"(reason unavailable: {type(e).__name__})"
    for condition in (cr.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return f"{condition.get('reason', 'Failed')}: {condition.get('message', '').strip()}".rstrip(": ")
    return "no Failed condition recorded"


def run_on_nodes(
    step_args: list[str],
    out: S3Uri,
    run_id: str,
    step: str,
    settings: TrainJobSettings,
    client: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``yolo-distill step <step_args>`` as a TrainJob over ``settings.nodes`` nodes; return its ``result.json``.

    Args:
        step_args: The step command after ``step`` (e.g. ``["distill", "--data", ..., "--run-id", run_id]``).
        out: The step's S3 folder (``<prefix>/runs/<run_id>/<step>``), where rank 0 writes ``result.json``.
        run_id: The pipeline run (names and labels the job).
        step: The step name (``teacher``, ``student``, ``distill``).
        settings: Image, nodes, resources, secrets, placement.
        client: A ``kubeflow.trainer.TrainerClient`` (default: one for ``settings.namespace``).
        log: Where progress lines go (default: stderr).

    Raises:
        TrainJobFailed: The job failed (the controller's reason in the message) or did not finish in time.
    """
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    result_uri = out.join("result.json")
    if storage.head(result_uri) is not None:
        say(f"step '{step}' of run {run_id} already finished: {result_uri}")
        return {**json.loads(storage.read_bytes(result_uri)), "reused": True}
    if client is None:
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient

        # In a pod: the in-cluster service account; elsewhere $KUBECONFIG as it is now (the kubernetes client reads
        # it once, at import), else ~/.kube/config.
        config = KubernetesBackendConfig(namespace=settings.namespace, config_file=os.environ.get("KUBECONFIG") or None)
        client = TrainerClient(backend_config=config)
    name = job_name(run_id, step)
    state = _existing_state(client, name)
    if state == "Failed":
        say(f"TrainJob {name} failed before ({failure_reason(client, name)}); submitting it again (resumes from S3)")
        client.delete_job(name)
        _wait_deleted(client, name, settings)
        state = None
    if state is None:
        labels = {"yolo-distill/run-id": re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:63], "yolo-distill/step": step}
        client.train(
            runtime=settings.runtime,
            trainer=trainer_spec(settings),
            options=trainjob_options(name, step_args, settings, labels),
        )
        say(f"submitted TrainJob {name}: {settings.nodes} nodes x {settings.gpus_per_node} GPU(s), {settings.image}")
    else:
        say(f"TrainJob {name} exists ({state}): waiting for it")
    _wait(client, name, settings, say)
    if storage.head(result_uri) is None:
        raise TrainJobFailed(f"TrainJob {name} completed but rank 0 wrote no {result_uri}")
    return {**json.loads(storage.read_bytes(result_uri)), "reused": False, "trainjob": name}


def _existing_state(client: Any, name: str) -> str | None:
    try:
        return client.get_job(name).status
    except RuntimeError as e:
        if _not_found(e):
            return None
        raise


def _wait_deleted(client: Any, name: str, settings: TrainJobSettings) -> None:
    deadline = time.monotonic() + 300
    while _existing_state(client, name) is not None:
        if time.monotonic() > deadline:
            raise TrainJobFailed(f"TrainJob {name} was not deleted within 300 s")
        time.sleep(min(settings.poll_s, 5))


def _wait(client: Any, name: str, settings: TrainJobSettings, say: Callable[[str], None]) -> None:
    """Poll the job until Complete (printing status changes and node 0's new log lines), raising on Failed/timeout."""
    deadline = time.monotonic() + settings.timeout_s
    status, logs = None, NodeLog(client, name, say)
    while True:
        job = client.get_job(name)
        if job.status != status:
            status = job.status
            say(f"TrainJob {name}: {status}")
        if status in {"Running", "Complete", "Failed"}:
            logs.update()
        if status == "Complete":
            return
        if status == "Failed":
            raise TrainJobFailed(f"TrainJob {name} failed: {failure_reason(client, name)}")
        if time.monotonic() > deadline:
            raise TrainJobFailed(f"TrainJob {name} did not finish within {settings.timeout_s} s (status {status})")
        time.sleep(settings.poll_s)


class NodeLog:
    """Node 0's log (rank 0 logs the epochs), printed a new line at a time at each poll."""

    def __init__(self, client: Any, name: str, say: Callable[[str], None]) -> None:
        self.client, self.name, self.say = client, name, say
        self.seen = 0
        self.broken = False

    def update(self) -> None:
        """Print the lines added since the last call; a log that cannot be read loses the log, never the job."""
        try:
            lines = list(self.client.get_job_logs(self.name))
        except Exception as e:  # noqa: BLE001 (status polling decides the outcome)
            if not self.broken:
                self.say(f"[{self.name}] node-0 log unavailable: {type(e).__name__}")
            self.broken = True
            return
        for line in lines[self.seen :]:
            self.say(f"[{self.name} node-0] {line.rstrip()}")
        self.seen = max(self.seen, len(lines))


def run_training_on_nodes(
    step: str, settings: TrainJobSettings, name: str, run_id: str, prefix: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Run the ``train`` or ``distill`` step (keyword arguments as :mod:`distill.steps.training`) as a TrainJob.

    The arguments are checked here first, as the single-node step checks them, so bad input fails in seconds
    instead of after the nodes are scheduled.
    """
    from ..config import DistillConfig, check_arguments
    from ..devices import check_batch_divides
    from ..settings import TRAINING_NAMES, command_line, split_kd, training
    from .common import resolve_prefix, run_folder

    if not run_id:
        raise DistillError("a pipeline run id is required (--run-id)")
    kwargs = training(kwargs)
    check_arguments(**{k: v for k, v in kwargs.items() if k in TRAINING_NAMES - {"device"}})
    if step == "distill":
        DistillConfig(teacher=kwargs["teacher"], **split_kd(kwargs)[0])
    per_node = max(1, settings.gpus_per_node)
    check_batch_divides(int(kwargs["batch"]), settings.nodes * per_node,
                        f"ranks ({settings.nodes} nodes x {per_node})")  # fmt: skip
    root = resolve_prefix(prefix)
    out = run_folder(root, run_id, name)
    storage.check_bucket(out)
    args = command_line(step, name=name, run_id=run_id, prefix=str(root), **kwargs)  # from the one declaration
    try:
        return run_on_nodes(args, out, run_id, name, settings)
    except Failure:
        raise
    except Exception as e:  # the SDK's own errors: no cluster, no RBAC, no runtime, ...
        cause = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")
        raise RunFailure(f"TrainJob for step '{name}' of run {run_id} could not be run: {cause}") from None


def run_training_step(
    step: str, nodes: int, gpus: int, accelerator: str, trainjob: str, name: str, run_id: str,
    prefix: str | None = None, **kwargs: Any,
) -> dict[str, Any]:  # fmt: skip
    """Run the pipeline's ``train`` or ``distill`` step: in this process on one node, else as a TrainJob.

    The one entry of both training components. ``trainjob`` is the pipeline's compile-time JSON settings; ``nodes``
    other than 1 goes to :func:`run_training_on_nodes` (below 2 it is refused there, one line naming the value).
    """
    if nodes == 1:
        from . import training

        return getattr(training, step)(name=name, run_id=run_id, prefix=prefix, **kwargs)
    settings = settings_from_json(trainjob, nodes=nodes, gpus_per_node=gpus, accelerator=accelerator)
    return run_training_on_nodes(step, settings, name, run_id, prefix, **kwargs)
