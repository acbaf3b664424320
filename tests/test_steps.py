"""Pipeline steps against the real local stack: prepare-data, train, distill (S3 + MLflow), preemption, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
from conftest import DATA, TASK_DATA

from distill import DistillError, storage
from distill.steps import tracking, training
from distill.steps.prepare_data import prepare_data

TINY_STEP = {"epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu", "plots": False, "workers": 0}


@pytest.fixture(scope="module")
def datasets(stack_env) -> dict[str, dict]:
    return {task: prepare_data(str(TASK_DATA[task].parent), "yolo") for task in TASK_DATA}


def test_prepare_data_voc_bccd(stack_env):
    result = prepare_data(str(DATA / "bccd"), "voc")
    assert result["names"] == ["Platelets", "RBC", "WBC"]
    assert {s: c["images"] for s, c in result["counts"].items()} == {"train": 205, "val": 87, "test": 72}
    assert sum(c["instances"] for c in result["counts"].values()) == 4888 - 2
    assert result["dropped_boxes"] == 2
    manifest = json.loads(storage.read_bytes(f"{result['uri']}/manifest.json"))
    assert manifest["hash"] == result["hash"] and result["uri"].endswith(f"/datasets/{result['hash']}")
    for rel in (
        "data.yaml",
        "labels/train/BloodImage_00001.txt",
        "images/test/" + sorted(k.split("/")[-1] for k in manifest["files"] if k.startswith("images/test/"))[0],
    ):
        assert storage.head(f"{result['uri']}/{rel}")["sha256"] == manifest["files"][rel]
    again = prepare_data(str(DATA / "bccd"), "voc")
    assert again["hash"] == result["hash"] and again["uploaded"] is False


def test_prepare_data_yolo_keeps_task_keys_and_is_content_addressed(datasets):
    pose = datasets["pose"]
    data_yaml = storage.read_bytes(pose["data"]).decode()
    assert "kpt_shape" in data_yaml and "flip_idx" in data_yaml
    assert pose["counts"] == {"train": {"images": 4, "instances": 7}, "val": {"images": 4, "instances": 14}}
    assert len({d["hash"] for d in datasets.values()}) == 3


def test_prepare_data_from_zip_and_s3_zip(stack_env, tmp_path):
    archive = tmp_path / "coco8.zip"
    root = TASK_DATA["detect"].parent
    with zipfile.ZipFile(archive, "w") as zf:
        for path in root.rglob("*"):
            if path.is_file() and not path.name.endswith(".cache"):
                zf.write(path, f"coco8/{path.relative_to(root)}")
    local = prepare_data(str(archive), "yolo")
    uri = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/sources/coco8.zip"
    storage.upload_file(archive, uri)
    remote = prepare_data(uri, "yolo")
    assert local["hash"] == remote["hash"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [("../evil.txt", "outside the target folder"), ("/abs/evil.txt", "absolute path"), ("link", "is a link")],
)
def test_prepare_data_refuses_unsafe_archives(stack_env, tmp_path, entry, message):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        if entry == "link":
            info = zipfile.ZipInfo("data/link")
            info.external_attr = 0o120777 << 16  # a symlink entry
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(zipfile.ZipInfo(entry), "x")
    with pytest.raises(DistillError, match=message):
        prepare_data(str(archive), "yolo")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_prepare_data_voc_unknown_class_and_bad_inputs(stack_env):
    with pytest.raises(DistillError, match=r"has class '(RBC|WBC|Platelets)', which is not in the class list"):
        prepare_data(str(DATA / "bccd"), "voc", classes="RBC,WBC")
    with pytest.raises(DistillError, match="unknown dataset format 'tfrecord'"):
        prepare_data(str(DATA / "bccd"), "tfrecord")
    with pytest.raises(DistillError, match="bucket 'missing-bucket' does not exist"):
        prepare_data(str(DATA / "bccd"), "voc", dest="s3://missing-bucket/x")


def _history(run_id: str, key: str) -> list:
    return tracking.client().get_metric_history(run_id, tracking.metric_name(key))


def test_train_and_distill_steps_write_s3_and_mlflow(stack_env, datasets):
    data = datasets["detect"]["uri"]
    teacher = training.train(data, "yolov8s.yaml", "teacher", run_id="run-a", **TINY_STEP)
    student = training.train(data, "yolov8n.yaml", "student", run_id="run-a", **TINY_STEP)
    kd = training.distill(
        data, teacher["best"], "yolov8n.yaml", run_id="run-a", loss="cwd", **{**TINY_STEP, "epochs": 2}
    )

    for result in (teacher, student, kd):
        for name, out in result["outputs"].items():
            assert storage.head(out["uri"])["sha256"] == out["sha256"], name
    assert kd["best"].endswith("/runs/run-a/distill/best.pt") and "distill.json" in kd["outputs"]
    assert teacher["mlflow_parent_run_id"] == student["mlflow_parent_run_id"] == kd["mlflow_parent_run_id"]

    client = tracking.client()
    run = client.get_run(kd["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == kd["mlflow_parent_run_id"]
    assert run.data.tags[tracking.TAG_PIPELINE] == "run-a" and run.info.status == "FINISHED"
    assert run.data.params["kd/loss"] == "cwd" and run.data.params["epochs"] == "2"
    cwd = _history(kd["mlflow_run_id"], "train/cwd_loss")
    assert [m.step for m in cwd][:2] == [1, 2] and all(m.value > 0 for m in cwd[:2])
    assert _history(kd["mlflow_run_id"], "metrics/mAP50-95(B)")
    artifacts = {a.path for a in client.list_artifacts(kd["mlflow_run_id"])}
    assert {"results.csv", "args.yaml", "distill.json"} <= artifacts

    again = training.distill(data, teacher["best"], "yolov8n.yaml", run_id="run-a", loss="cwd", **TINY_STEP)
    assert again["reused"] is True and again["best"] == kd["best"]


@pytest.mark.parametrize("task", ["segment", "pose"])
def test_distill_step_segment_and_pose(stack_env, datasets, task):
    student = {"segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml"}[task]
    teacher = {"segment": "yolov8s-seg.yaml", "pose": "yolov8s-pose.yaml"}[task]
    kd = training.distill(datasets[task]["uri"], teacher, student, run_id=f"run-{task}", loss="mgd", **TINY_STEP)
    assert storage.head(kd["best"]) is not None
    assert _history(kd["mlflow_run_id"], "train/mgd_loss")[0].value > 0


def test_step_bad_inputs_are_clear(stack_env, datasets, tmp_path):
    data = datasets["detect"]["uri"]
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    with pytest.raises(DistillError, match=f"'{prefix}/nothing/best.pt' not found"):
        training.distill(data, f"{prefix}/nothing/best.pt", "yolov8n.yaml", run_id="run-bad", **TINY_STEP)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    storage.upload_file(corrupt, f"{prefix}/bad/corrupt.pt")
    with pytest.raises(DistillError, match=f"teacher '{prefix}/bad/corrupt.pt'.*not a readable Ultralytics checkpoint"):
        training.distill(data, f"{prefix}/bad/corrupt.pt", "yolov8n.yaml", run_id="run-bad", **TINY_STEP)
    with pytest.raises(DistillError, match="unknown loss 'kl'"):
        training.distill(data, f"{prefix}/bad/corrupt.pt", "yolov8n.yaml", run_id="run-bad", loss="kl")
    assert storage.head(f"{prefix}/runs/run-bad/distill/result.json") is None


def test_preempted_distill_step_resumes_from_s3(stack_env, datasets):
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    args = [
        sys.executable, "-m", "distill.cli", "step", "distill", "--data", datasets["detect"]["uri"],
        "--teacher", "yolov8s.yaml", "--student", "yolov8n.yaml", "--loss", "mgd", "--run-id", "run-preempt",
        "--epochs", "4", "--imgsz", "64", "--batch", "4", "--device", "cpu", "plots=False", "workers=0",
    ]  # fmt: skip
    checkpoint = f"{prefix}/runs/run-preempt/distill/checkpoint/last.pt"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while storage.head(checkpoint) is None:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was uploaded"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # preemption: no clean-up, no final upload
    proc.wait()
    assert storage.head(f"{prefix}/runs/run-preempt/distill/result.json") is None

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming step 'distill' of run run-preempt from" in rerun.stdout + rerun.stderr
    assert "Resuming training" in rerun.stdout + rerun.stderr
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["resumed"] is True
    csv = storage.read_bytes(f"{prefix}/runs/run-preempt/distill/results.csv").decode().splitlines()
    epochs = [int(float(line.split(",")[0])) for line in csv[1:]]
    assert epochs[-1] == 4 and epochs == sorted(set(epochs))  # the epoch count continued to the end
    steps = [m.step for m in _history(result["mlflow_run_id"], "train/mgd_loss")]
    assert max(steps) == 4  # per-epoch losses; the final validation of best.pt is step 5, metrics only
    assert max(m.step for m in _history(result["mlflow_run_id"], "metrics/mAP50-95(B)")) == 5
