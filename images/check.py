"""Run the compiled pipeline inside the built image, component by component, the way a cluster's launcher does.

``images/check.sh`` builds the image; this script then compiles the pipeline against it (``pipeline compile``, the
plain or the ``--sweep`` variant), reads the YAML back, and hands it to kfp's own local orchestrator, which walks the
DAG (conditions, ``OneOf``, ``ParallelFor``), builds each task's executor input and fills the placeholders of the
command and arguments the YAML gives the component. Only the last step differs from a cluster: instead of a pod, each
task runs in a fresh container of the image started with ``buildah run --isolation chroot`` (no OCI runtime can
start containers on this kind of machine), as UID 10001, with its own empty ``/tmp``, the pipeline root mounted, the
host's loopback network (the local SeaweedFS + MLflow stack) and the S3 / MLflow settings as environment — what the
pipeline's Kubernetes secrets give a pod. After each task the container's root filesystem is checked for files the
task wrote outside ``/tmp``: a read-only root (as many clusters mount it) must not break a step.

Two workarounds for kfp 2.17's local orchestrator, both about the orchestrator, not about the components:
- a ``ParallelFor`` iteration receives the loop item in place of *every* upstream task output (the loop's tasks get
  ``{loss, layers}`` as the dataset URI); :func:`_loop_inputs_fixed` keeps upstream outputs as they are.
- its Docker handler needs a Docker daemon; :class:`BuildahTask` is the same interface over ``buildah run``.

Usage: ``python images/check.py IMAGE [--sweep] [--out summary.json]`` (``make image-check`` runs both variants).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "coco8"  # the detect set the tests train on (8 images)
#: Top-level folders the write scan skips: /tmp (a host folder mounted per task; the pipeline root is mounted under
#: it) and the kernel and runtime filesystems.
WRITABLE = ("tmp", "proc", "sys", "dev", "run")


class BuildahTask:
    """kfp.local's task-handler interface (``DockerTaskHandler``'s constructor), run with ``buildah run``."""

    def __init__(self, image: str, full_command: list[str], pipeline_root: str, runner: Any, env_vars: dict) -> None:
        self.image, self.command, self.pipeline_root = image, full_command, pipeline_root
        self.env = env_vars  # the container's own, with the runner's ``environment`` merged over them by kfp

    def run(self) -> Any:
        """Run the task's command in a fresh container of the image.

        SUCCESS only if it exits 0 and wrote nothing outside ``/tmp`` (the pipeline root is a mount).
        """
        from kfp.local import status

        name = f"check-{uuid.uuid4().hex[:8]}"
        subprocess.run(["buildah", "from", "--pull-never", "--name", name, self.image], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            with tempfile.TemporaryDirectory(prefix="pod-tmp-") as tmp:
                os.chmod(tmp, 0o1777)
                started = time.time() - 1
                env = [a for k, v in self.env.items() for a in ("--env", f"{k}={v}")]
                proc = subprocess.run(
                    ["buildah", "run", "--isolation", "chroot", "--user", "10001", "--network", "host",
                     "--volume", f"{tmp}:/tmp", "--volume", f"{self.pipeline_root}:{self.pipeline_root}", *env,
                     name, "--", *self.command]
                )  # fmt: skip
            written = _written_outside_tmp(name, started)
            if written:
                print(f"check: the task wrote outside /tmp (a read-only root would fail it): {written[:10]}")
                return status.Status.FAILURE
            return status.Status.SUCCESS if proc.returncode == 0 else status.Status.FAILURE
        finally:
            subprocess.run(["buildah", "rm", name], stdout=subprocess.DEVNULL, check=False)


def _written_outside_tmp(container: str, since: float) -> list[str]:
    """Files of the container's root filesystem changed since ``since`` (the mounted /tmp excluded)."""
    mount = subprocess.run(["buildah", "mount", container], capture_output=True, text=True, check=True)
    root = Path(mount.stdout.strip())
    try:
        changed = []
        for top in root.iterdir():
            if top.name in WRITABLE:
                continue
            paths = [top] if not top.is_dir() or top.is_symlink() else top.rglob("*")
            changed += [str(p.relative_to(root)) for p in paths if p.lstat().st_mtime > since]
        return changed
    finally:
        subprocess.run(["buildah", "umount", container], stdout=subprocess.DEVNULL, check=False)


def _loop_inputs_fixed(original):
    """Wrap kfp.local's loop-iteration spec builder so upstream task outputs stay upstream task outputs."""

    def create(task_spec, loop_item, loop_task_name):
        upstream = {k: v for k, v in task_spec.inputs.parameters.items() if v.HasField("task_output_parameter")}
        spec = original(task_spec, loop_item, loop_task_name)
        for key, value in upstream.items():
            spec.inputs.parameters[key].CopyFrom(value)
        return spec

    return create


def run_compiled(yaml_path: Path, arguments: dict[str, Any], pipeline_root: str, env: dict[str, str]) -> None:
    """Run the compiled pipeline at ``yaml_path`` with kfp's local orchestrator, each task in the image it names.

    ``env`` (the S3 / MLflow settings) reaches every task's environment as the runner's ``environment``.
    """
    import yaml
    from google.protobuf import json_format
    from kfp import local
    from kfp.local import pipeline_orchestrator, task_dispatcher
    from kfp.local.orchestrator import task_spec_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = json_format.ParseDict(next(yaml.safe_load_all(yaml_path.read_text())), pipeline_spec_pb2.PipelineSpec())
    task_dispatcher.docker_task_handler.DockerTaskHandler = BuildahTask
    fixed = _loop_inputs_fixed(task_spec_utils.create_parameter_loop_iteration_task_spec)
    task_spec_utils.create_parameter_loop_iteration_task_spec = fixed  # the orchestrator calls it through the module
    local.init(runner=local.DockerRunner(environment=env), pipeline_root=pipeline_root, raise_on_error=True)
    pipeline_orchestrator.run_local_pipeline(spec, arguments)


def verify(params: dict[str, Any], sweep: bool, work: Path) -> dict[str, Any]:
    """Check what the run left in S3 and the registry; return its summary. Exit 1 naming the first thing missing.

    The run's one registered version must be the champion, carry the pipeline run id and a verified ONNX export, and
    that ONNX file, downloaded from the registry, must load and predict with Ultralytics here. The sweep must have
    distilled and evaluated every ``sweep_configs`` item and registered the one select-best chose.
    """
    import mlflow
    from ultralytics import YOLO

    from distill.data import storage
    from distill.steps import tracking
    from distill.steps.common import resolve_prefix

    name, run_id = params["registry_name"], params["run_id"]
    client = tracking.client()
    versions = client.search_model_versions(f"name = '{name}'")
    if len(versions) != 1:
        raise SystemExit(f"error: {len(versions)} registered versions of {name}, expected 1")
    version = client.get_model_version(name, versions[0].version)
    tags = version.tags
    if "champion" not in version.aliases or tags.get("yolo_distill.pipeline_run_id") != run_id:
        raise SystemExit(f"error: version {version.version} is not this run's champion: {version.aliases}, {tags}")
    if tags.get("export_verified") != "true" or "onnx_artifact" not in tags:
        raise SystemExit(f"error: the champion has no verified ONNX export: {tags}")
    onnx = mlflow.artifacts.download_artifacts(tags["onnx_artifact"], dst_path=str(work / "onnx"))
    result = YOLO(onnx, task="detect").predict(str(next(TINY.glob("images/val/*.jpg"))), imgsz=params["imgsz"],
                                               verbose=False)[0]  # fmt: skip
    runs = resolve_prefix(None).join("runs", run_id)
    steps = sorted({k.split("/")[-2] for k in storage.list_keys(runs) if k.endswith("/result.json")})
    if sweep:
        wanted = {f"distill-{c['loss']}-{c['layers']}" for c in params["sweep_configs"]}
        if not wanted <= set(steps) or tags.get("loss") not in {c["loss"] for c in params["sweep_configs"]}:
            raise SystemExit(f"error: the sweep ran {steps} and registered loss {tags.get('loss')!r}")
    return {"run_id": run_id, "steps_with_results": steps, "registered": {"name": name, "version": version.version,
            "aliases": sorted(version.aliases), "loss": tags.get("loss"), "metric": tags.get("metric")},
            "onnx": {"artifact": tags["onnx_artifact"], "bytes": Path(onnx).stat().st_size,
                     "predicted_boxes": len(result.boxes)}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Compile, run inside the image against the local stack, and print the run's summary (exit 1 on failure)."""
    ap = argparse.ArgumentParser(prog="python images/check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--sweep", action="store_true", help="the sweep variant (ParallelFor, select-best)")
    ap.add_argument("--stack-dir", default=None, help="the local stack's folder (default: $YOLO_DISTILL_STACK_DIR)")
    ap.add_argument("--out", type=Path, default=None, help="write the run's summary here (JSON)")
    args = ap.parse_args(argv)

    import distill

    distill.configure()
    from distill import stack
    from distill.data import storage
    from distill.pipelines.pipeline import ClusterSettings, compile_pipeline
    from distill.settings import pipeline_arguments

    stack.up(args.stack_dir)
    env = stack.environment(args.stack_dir)
    os.environ.update(env)
    storage._client.cache_clear()
    run_id = f"image-check-{'sweep' if args.sweep else 'plain'}-{int(time.time())}"  # also the registry name:
    source = f"{env['YOLO_DISTILL_S3_PREFIX']}/sources/coco8"  # a pod reads S3, not this machine's files
    storage.upload_dir(TINY, source)
    # One-epoch models score ~0, so no gain could pass the default interval gate: the point gate (0 >= min_gain 0)
    # lets the check reach register; the interval gate is tested with real gains (tests/test_gate.py, make demo).
    params = {"data_source": source, "teacher_epochs": 1, "student_epochs": 1, "imgsz": 64, "batch": 4,
              "device": "cpu", "registry_name": run_id, "run_id": run_id, "gate": "point"}  # fmt: skip
    if args.sweep:
        params["sweep_configs"] = [{"loss": "cwd", "layers": "neck"}, {"loss": "mimic", "layers": "neck"}]
    with tempfile.TemporaryDirectory(prefix="image-check-") as work:
        os.chmod(work, 0o755)
        compiled = Path(work) / "pipeline.yaml"
        compile_pipeline(str(compiled), ClusterSettings(image=args.image), sweep=args.sweep)
        started = time.time()
        arguments = pipeline_arguments(params)
        (Path(work) / "root").mkdir(mode=0o1777)
        os.chmod(Path(work) / "root", 0o1777)  # the pods (UID 10001) write their outputs there, as on a cluster
        run_compiled(compiled, arguments, str(Path(work) / "root"), env)
        seconds = round(time.time() - started, 1)
        summary = verify(params, args.sweep, Path(work))
        summary["seconds"] = seconds
    text = json.dumps(summary, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
