"""Run the whole pipeline on this machine with ``kfp.local`` (SubprocessRunner, no Docker) against the local stack.

The components run in subprocesses of this interpreter, so they use the installed package and the stack's
environment (S3 endpoint, credentials, MLflow). Afterwards the outputs are collected from where the steps wrote them
— S3 and the MLflow registry — into one summary.

While it runs, stderr says which step runs and how far the run is (``[3/6] distill ...``), and after each step how
long it took (:class:`StepLines`); each step logs its own work in between.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import stack
from ..data import storage
from ..errors import DistillError
from ..progress import Stage, duration, say
from ..settings import pipeline_arguments
from ..steps import tracking
from ..steps.common import run_folder
from .pipeline import build_pipeline

STEPS = ("teacher", "student", "distill")


def run_local(params: dict[str, Any], stack_dir: str | None = None, pipeline_root: str | None = None) -> dict:
    """Start (or reuse) the local stack, run the pipeline with ``params``, and return what every step produced.

    Args:
        params: Pipeline parameters (``data_source`` at least); ``run_id`` defaults to ``local-<unix time>``.
        stack_dir: The stack's state folder (default ``$YOLO_DISTILL_STACK_DIR`` or ``./.stack``).
        pipeline_root: Where kfp.local keeps its artifacts (default: a temporary folder).
    """
    from kfp import local

    nodes = params.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise DistillError(f"nodes={nodes}: must be a whole number of nodes, 1 or more")
    if nodes > 1:
        raise DistillError(
            f"nodes={nodes}: several nodes run each training step as a Kubeflow Trainer TrainJob, which "
            "needs a cluster (pipeline submit); run-local trains on this machine (nodes=1)"
        )
    params = pipeline_arguments(params)  # bad settings fail here, before the stack or any step starts
    stack.up(stack_dir)
    os.environ.update(stack.environment(stack_dir))
    storage._client.cache_clear()
    params = {"run_id": f"local-{int(time.time())}", **params}
    root = pipeline_root or tempfile.mkdtemp(prefix="kfp-local-")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
    started = time.time()
    pipeline = build_pipeline(cluster=False)  # the sweep variant is for clusters: see the README
    with step_lines(pipeline) as lines:
        gate = pipeline(**params).output
    if lines is not None:
        say(lines.summary(time.time() - started))
    summary = collect({**parameter_defaults(pipeline), **params}, gate)  # report the values in force
    summary.update({"seconds": round(time.time() - started, 1), "pipeline_root": root})
    return summary


class StepLines:
    """Lines around each of the pipeline's tasks as kfp.local runs them: ``[3/6] distill ...``, then its time.

    A step is numbered when it first starts (kfp.local runs the tasks one after another, in dependency order); a
    retried step keeps its number (``(attempt 2)``). ``n`` counts every container task in the compiled pipeline, so a
    step the gate skips (register) leaves the count short: :meth:`summary` names it.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.tasks = _container_tasks(spec["root"]["dag"], spec["components"])
        self.numbers: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()  # a ParallelFor runs tasks side by side

    def run(self, real: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one task through kfp.local's ``real`` dispatcher between its two lines; return what it returns."""
        name = self.label(kwargs.get("component_name", ""), kwargs.get("arguments") or {})
        with self._lock:
            number = self.numbers.setdefault(name, len(self.numbers) + 1)
            attempt = self.attempts[name] = self.attempts.get(name, 0) + 1
        again = f" (attempt {attempt})" if attempt > 1 else ""
        with Stage(f"[{number}/{len(self.tasks)}] {name}{again}") as stage:
            result = real(*args, **kwargs)
            task_status = result[1] if isinstance(result, tuple) and len(result) == 2 else None  # (outputs, status)
            stage.failed = getattr(task_status, "name", "") == "FAILURE"  # a failed task returns, it does not raise
        return result

    def label(self, component: str, arguments: dict[str, Any]) -> str:
        """Return the task's display name (``train-teacher``): the task of ``component`` whose constants match."""
        candidates = [t for t in self.tasks if t["component"] == component]
        for task in candidates:
            if all(arguments.get(k) == v for k, v in task["constants"].items()):
                return task["display"]
        return candidates[0]["display"] if candidates else component.removeprefix("comp-")

    def summary(self, seconds: float) -> str:
        """Return the run's last progress line: steps run of all, the time, and the steps that did not run."""
        left = [t["display"] for t in self.tasks if t["display"] not in self.numbers]
        skipped = f" (not run: {', '.join(left)})" if left else ""
        return f"run-local: {len(self.numbers)}/{len(self.tasks)} steps in {duration(seconds)}{skipped}"


def _container_tasks(dag: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every task that runs a container under ``dag`` (conditions' DAGs included) of a compiled spec (dict)."""
    out = []
    for name, task in dag.get("tasks", {}).items():
        component = task["componentRef"]["name"]
        if "dag" in components[component]:
            out += _container_tasks(components[component]["dag"], components)
            continue
        parameters = task.get("inputs", {}).get("parameters", {})
        constants = {k: v["runtimeValue"]["constant"] for k, v in parameters.items() if "runtimeValue" in v}
        out.append({"component": component, "display": task.get("taskInfo", {}).get("name", name),
                    "constants": constants})  # fmt: skip
    return out


@contextmanager
def step_lines(pipeline: Any) -> Iterator[StepLines | None]:
    """Write each step's number and time while kfp.local runs ``pipeline`` (yields ``None`` where it cannot).

    kfp.local runs the whole pipeline in one ``pipeline(**params)`` call and has no public hook per task, so the
    seam is the one function its orchestrators call, through the module and with keyword arguments, for each
    container task: ``kfp.local.task_dispatcher.run_single_task_implementation`` (kfp 2.17's
    ``orchestrator/task_executor.py``, used by both its orchestrators, and the older ``local/dag_orchestrator.py``
    alike). It is wrapped for this call only and restored after. A wrapper around each component function instead
    would run in the task's subprocess, where the step's place in the run is unknown (and ``components/`` would
    carry local-only code to the cluster). Should a later kfp drop the function, the run goes on without the lines.
    """
    try:
        from google.protobuf import json_format
        from kfp.local import task_dispatcher

        real = task_dispatcher.run_single_task_implementation
    except (ImportError, AttributeError):
        yield None
        return
    lines = StepLines(json_format.MessageToDict(pipeline.pipeline_spec))
    task_dispatcher.run_single_task_implementation = functools.wraps(real)(functools.partial(lines.run, real))
    try:
        yield lines
    finally:
        task_dispatcher.run_single_task_implementation = real


def parameter_defaults(pipeline: Any) -> dict[str, Any]:
    """Return the pipeline's parameter defaults (leaving out those without one and the KFP run-id placeholder)."""
    inputs = pipeline.component_spec.inputs or {}
    return {k: v.default for k, v in inputs.items() if v.default is not None and k != "run_id"}


def collect(params: dict[str, Any], gate: str) -> dict[str, Any]:
    """Gather each step's status and outputs from S3 and MLflow for pipeline run ``params['run_id']``."""
    run_id = params["run_id"]
    runs = run_folder(params.get("s3_prefix") or None, run_id)
    steps: dict[str, Any] = {}
    for name in STEPS:
        result_uri = runs.join(name, "result.json")
        if storage.head(result_uri) is None:
            steps[name] = {"status": "missing"}
            continue
        result = json.loads(storage.read_bytes(result_uri))
        steps[name] = {"status": "succeeded", "best": result["best"], "mlflow_run_id": result["mlflow_run_id"]}
        if result.get("pool"):  # distilled with an unlabelled pool: what trained
            pool = result["pool"]
            kept = {k: pool[k] for k in ("labelled", "pool", "used", "instances", "empty", "conf")}
            steps[name]["pool"] = {**kept, "round": pool.get("round", 1), "rounds": pool.get("rounds", 1)}
    if params.get("teacher_weights"):
        steps["teacher"] = {"status": "reused", "best": params["teacher_weights"]}
    evaluation = json.loads(storage.read_bytes(runs.join("evaluate", "metrics.json")))
    steps["evaluate"] = {"status": "succeeded", "metrics": str(runs.join("evaluate", "metrics.json")),
                         "report": str(runs.join("evaluate", "report.md")), "gate": gate}  # fmt: skip
    table = {role: {**m["metrics"], "params": m["params"], "latency_ms": m["latency_ms"]}
             for role, m in evaluation["models"].items()}  # fmt: skip
    registry = None
    name = params["registry_name"]
    client = tracking.client()
    if gate == "register":
        versions = [v for v in client.search_model_versions(f"name = '{name}'")
                    if v.tags.get("yolo_distill.pipeline_run_id") == run_id]  # fmt: skip
        if versions:
            v = client.get_model_version(name, versions[0].version)
            registry = {"name": name, "version": v.version, "aliases": sorted(v.aliases)}
        steps["register"] = {"status": "succeeded" if registry else "missing", **(registry or {})}
    else:
        steps["register"] = {"status": "skipped", "reason": evaluation["verdict"]["gate"]["reason"]}
    return {
        "run_id": run_id,
        "parameters": params,
        "steps": steps,
        "champion": _champion(client, name),
        "evaluation": {"split": evaluation["split"], "models": table, "verdict": evaluation["verdict"]},
        "registry": registry,
        "mlflow": os.environ.get("MLFLOW_TRACKING_URI"),
        "s3": str(runs),
    }


def _champion(client, name: str) -> dict[str, Any] | None:
    """Return the registry's current champion of ``name`` (possibly from an earlier run), or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        v = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    return {"name": name, "version": v.version, "run_id": v.tags.get("yolo_distill.pipeline_run_id"),
            "metric": v.tags.get("metric_name"), "score": v.tags.get("metric"),
            "uri": f"models:/{name}@champion", "onnx": v.tags.get("onnx_artifact"),
            "onnx_opset": v.tags.get("onnx_opset")}  # fmt: skip


def print_table(summary: dict[str, Any]) -> str:
    """Return the evaluation table as aligned text."""
    models = summary["evaluation"]["models"]
    keys = list(next(iter(models.values())))
    width = max(len(k) for k in keys) + 2
    lines = ["model".ljust(12) + "".join(k.replace("metrics/", "").rjust(width) for k in keys)]
    for role, figures in models.items():
        lines.append(role.ljust(12) + "".join(f"{figures[k]:{width}.4g}" for k in keys))
    return "\n".join(lines)


def write_json(summary: dict[str, Any], path: str | Path) -> None:
    """Write the summary as JSON."""
    Path(path).write_text(json.dumps(summary, indent=2))
