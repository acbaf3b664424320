"""Multi-node steps as Kubeflow Trainer TrainJobs: the job the SDK builds, checked field by field, and run.

The Kubernetes API server and the Trainer controller are :mod:`fake_k8s` (the one part that cannot exist here); the
``kubeflow`` SDK, the S3 server, MLflow and the training are real. The run test's "controller" starts the job's own
command on two simulated nodes, so the command line the step submits is the one that trains.
"""

from __future__ import annotations

import json

import pytest
from fake_k8s import FakeCluster

from distill.cli import build_parser
from distill.data import storage
from distill.errors import DistillError
from distill.settings import command_line
from distill.steps.common import CACHE_MOUNT
from distill.steps.trainjob import TrainJobFailed, job_name, run_training_on_nodes, settings_from_json

SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def cluster(tmp_path, stack_env, monkeypatch):
    """A fake cluster holding the pipeline's two secrets (the real stack's values); KUBECONFIG points at it."""
    secrets = {
        "s3-creds": {k: stack_env[k] for k in SECRETS},
        "yolo-distill-mlflow": {"MLFLOW_TRACKING_URI": stack_env["MLFLOW_TRACKING_URI"]},
    }
    node_env = [
        {"YOLO_DISTILL_CACHE": str(tmp_path / f"cache{i}"), "YOLO_DISTILL_WORKDIR": str(tmp_path / f"work{i}")}
        for i in range(2)
    ]  # fmt: skip
    server = FakeCluster(tmp_path / "pods", secrets, node_env)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
    yield server
    server.stop_all()
    server.shutdown()


def settings(**kw):
    compiled = json.dumps({"image": "registry.example/yolo-distill:1.2.3", "s3_secret": "s3-creds"})  # as the pipeline
    return settings_from_json(compiled, **{"nodes": 2, "gpus_per_node": 0, "poll_s": 0.5, **kw})


@pytest.mark.fast
def test_command_line_round_trips_through_the_cli_parser():
    args = command_line("distill", data="s3://b/d", teacher="s3://b/t.pt", student="yolov8n.yaml", name="distill",
                        run_id="r1", loss="cwd", logit=False, online=True, logit_conf_weight=True, epochs=5,
                        device=None, lr0=0.002, plots=False)  # fmt: skip
    parsed = build_parser().parse_args(["step", *args])
    assert (parsed.step, parsed.data, parsed.teacher, parsed.loss, parsed.epochs) == (
        "distill",
        "s3://b/d",
        "s3://b/t.pt",
        "cwd",
        5,
    )
    assert parsed.logit is False and parsed.online is True and parsed.logit_conf_weight is True
    assert parsed.device is None and parsed.overrides == ["lr0=0.002", "plots=false"]


def test_the_trainjob_spec_field_by_field(cluster, stack_env, datasets):
    cluster.run_jobs = False  # record only: the job stays Created, and the step gives up after its timeout
    run_id = "spec-run"
    wanted = settings(nodes=3, gpus_per_node=4, node_selector={"nvidia.com/gpu.product": "H100"}, timeout_s=2,
                      env={"YOLO_DISTILL_MLFLOW_RETRIES": "3"}, cache_pvc="run-cache")  # fmt: skip
    with pytest.raises(TrainJobFailed, match=r"did not finish within 2 s \(status Created\)"):
        run_training_on_nodes("distill", wanted, "distill", run_id, data=datasets["detect"]["uri"],
                              teacher="s3://b/teacher.pt", student="yolov8n.yaml", loss="cwd", epochs=3, batch=24,
                              experiment="exp")  # fmt: skip
    (job,) = cluster.created
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["name"] == job_name(run_id, "distill")
    assert job["metadata"]["labels"] == {"yolo-distill/run-id": run_id, "yolo-distill/step": "distill"}
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}
    trainer = spec["trainer"]
    assert trainer["image"] == "registry.example/yolo-distill:1.2.3" and trainer["numNodes"] == 3
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "8", "memory": "32G", "nvidia.com/gpu": "4"}
    assert trainer["command"] == ["torchrun"]
    args = trainer["args"]
    assert args[:4] == ["-m", "distill", "step", "distill"]
    parsed = build_parser().parse_args(args[2:])  # what every node runs, as the CLI reads it
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    assert (parsed.run_id, parsed.name, parsed.prefix, parsed.loss, parsed.epochs, parsed.batch, parsed.experiment) \
        == (run_id, "distill", prefix, "cwd", 3, 24, "exp")  # fmt: skip
    assert {e["name"]: e["value"] for e in trainer["env"]} == {"PYTHONUNBUFFERED": "1",
                                                               "YOLO_DISTILL_MLFLOW_RETRIES": "3"}  # fmt: skip
    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                              {"name": "input-cache", "persistentVolumeClaim": {"claimName": "run-cache"}}]  # fmt: skip
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod["containers"]
    assert container["name"] == "node"
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"},
                                         {"name": "input-cache", "mountPath": CACHE_MOUNT}]  # fmt: skip
    assert {"name": "YOLO_DISTILL_CACHE", "value": f"{CACHE_MOUNT}/inputs"} in container["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {**{k: {"name": "s3-creds", "key": k} for k in SECRETS},
                    "MLFLOW_TRACKING_URI": {"name": "yolo-distill-mlflow", "key": "MLFLOW_TRACKING_URI"}}  # fmt: skip


def test_bad_input_is_refused_before_any_job_is_submitted(cluster, datasets):
    data = datasets["detect"]["uri"]
    with pytest.raises(DistillError, match="batch 15 does not divide across 4 ranks"):
        run_training_on_nodes("train", settings(nodes=2, gpus_per_node=2), "student", "r", data=data,
                              model="yolov8n.yaml", batch=15)  # fmt: skip
    with pytest.raises(DistillError, match="epochs"):
        run_training_on_nodes("train", settings(), "student", "r", data=data, model="yolov8n.yaml", epochs=-1)
    with pytest.raises(DistillError, match="nodes=1"):
        settings(nodes=1)
    assert cluster.created == []


def test_a_two_node_trainjob_runs_the_step_and_its_result_is_the_steps(cluster, datasets, capsys):
    run_id = "trainjob-run"
    step = dict(data=datasets["detect"]["uri"], teacher="yolov8s.yaml", student="yolov8n.yaml", epochs=2, imgsz=64,
                batch=4, device="cpu", plots=False)  # fmt: skip
    result = run_training_on_nodes("distill", settings(timeout_s=600), "distill", run_id, **step)
    assert result["world_size"] == 2 and result["nodes"] == 2 and not result["reused"]
    assert result["trainjob"] == job_name(run_id, "distill")
    assert storage.head(result["best"]) is not None and result["best"].endswith(f"/runs/{run_id}/distill/best.pt")
    assert result["metrics"] and "metrics/mAP50-95(B)" in result["metrics"]
    err = capsys.readouterr().err
    assert "submitted TrainJob" in err and f"TrainJob {result['trainjob']}: Complete" in err
    assert f"[{result['trainjob']} node-0]" in err  # node 0's log streamed to the component's log
    # A retried component finds the finished step: no second job.
    again = run_training_on_nodes("distill", settings(timeout_s=600), "distill", run_id, **step)
    assert again["reused"] and again["best"] == result["best"] and len(cluster.created) == 1


def test_a_failed_trainjob_fails_the_step_with_its_reason_and_a_retry_submits_it_again(cluster, datasets, stack_env):
    missing = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/nowhere/teacher.pt"
    step = dict(data=datasets["detect"]["uri"], teacher=missing, student="yolov8n.yaml", epochs=1, imgsz=64, batch=4,
                device="cpu")  # fmt: skip
    with pytest.raises(TrainJobFailed, match=r"failed: NodeFailed: node-\d exited 1: error: .*teacher.pt. not found"):
        run_training_on_nodes("distill", settings(timeout_s=600), "distill", "failing-run", **step)
    with pytest.raises(TrainJobFailed, match="not found"):
        run_training_on_nodes("distill", settings(timeout_s=600), "distill", "failing-run", **step)
    name = job_name("failing-run", "distill")
    assert cluster.deleted == [name] and [j["metadata"]["name"] for j in cluster.created] == [name, name]


@pytest.mark.fast
def test_cluster_settings_are_declared_once_for_pods_and_nodes():
    """Issue 39: the pipeline's pods and a TrainJob's nodes get one set of defaults (distill.steps.pods)."""
    from distill.pipelines.pipeline import ClusterSettings, trainjob_settings
    from distill.steps import pods as declared
    from distill.steps.trainjob import TrainJobSettings

    cluster = ClusterSettings(image="registry.example/y:1")
    nodes = settings_from_json(trainjob_settings(cluster, cluster.image), nodes=2)
    assert nodes == TrainJobSettings(image=cluster.image, nodes=2)  # what the pipeline hands over is the default
    c = cluster
    assert (nodes.cpu, nodes.memory, nodes.s3_secret, nodes.mlflow_secret, nodes.shm_size) == (
        c.cpu_limit, c.memory_limit, c.s3_secret, c.mlflow_secret, c.shm_size)  # fmt: skip
    assert nodes.tolerations == [declared.GPU_TOLERATION] and declared.S3_KEYS == SECRETS
    changed = ClusterSettings(image="i", cpu_limit="4", memory_limit="16G", s3_secret="s3", mlflow_secret="m",
                              shm_size="2Gi", node_selector={"a": "b"}, cache_pvc="c")  # fmt: skip
    job = settings_from_json(trainjob_settings(changed, "i"), nodes=3)
    assert (job.cpu, job.memory, job.s3_secret, job.mlflow_secret, job.shm_size, job.node_selector, job.cache_pvc) == (
        "4", "16G", "s3", "m", "2Gi", {"a": "b"}, "c")  # fmt: skip
