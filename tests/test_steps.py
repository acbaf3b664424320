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
import yaml
from conftest import BCCD, DATA, TASK_DATA, TINY_STEP

from distill import DistillError
from distill.data import storage
from distill.errors import RunFailure
from distill.steps import tracking, training
from distill.steps.evaluate import CHARTS, PARTS, run_curves
from distill.steps.prepare_data import prepare_data
from distill.steps.register import register


def test_prepare_data_voc_bccd(stack_env):
    result = prepare_data(str(BCCD), "voc")
    assert result["names"] == ["Platelets", "RBC", "WBC"]
    assert {s: c["images"] for s, c in result["counts"].items()} == {"train": 7, "val": 4, "test": 3}
    assert sum(c["instances"] for c in result["counts"].values()) == 243 - 2
    assert result["dropped_boxes"] == 2
    manifest = json.loads(storage.read_bytes(f"{result['uri']}/manifest.json"))
    assert manifest["hash"] == result["hash"] and result["uri"].endswith(f"/datasets/{result['hash']}")
    assert {"data.yaml", "labels/train/BloodImage_00001.txt"} <= set(manifest["files"])
    for shard in manifest["shards"]:  # a few large objects (tests/test_shards.py), each with its sha256
        assert storage.head(f"{result['uri']}/shards/{shard['name']}")["sha256"] == shard["sha256"]
    assert sorted(r for s in manifest["shards"] for r in s["files"]) == sorted(manifest["files"])
    again = prepare_data(str(BCCD), "voc")
    assert again["hash"] == result["hash"] and again["uploaded"] is False


def test_prepare_data_yolo_keeps_task_keys_and_is_content_addressed(datasets):
    run = tracking.client().get_run(datasets["pose"]["mlflow_run_id"])
    assert run.data.tags[tracking.TAG_STEP] == f"prepare-data-{datasets['pose']['hash'][:12]}"
    assert run.data.tags["mlflow.parentRunId"]
    assert run.data.params["hash"] == datasets["pose"]["hash"] and run.data.metrics["train/images"] == 4
    pose = datasets["pose"]
    data_yaml = storage.read_bytes(pose["data"]).decode()
    assert "kpt_shape" in data_yaml and "flip_idx" in data_yaml
    assert pose["counts"] == {
        "train": {"images": 4, "instances": 7, "unreadable": 0},
        "val": {"images": 4, "instances": 14, "unreadable": 0},
    }
    assert len({d["hash"] for d in datasets.values()}) == 3


def test_prepare_data_from_zip_and_s3_zip(stack_env, tmp_path, monkeypatch):
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
    monkeypatch.chdir(root.parent)
    relative = prepare_data(root.name, "yolo")  # a relative folder, as typed in a shell
    assert local["hash"] == remote["hash"] == relative["hash"]


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


def test_prepare_data_voc_unknown_class_and_bad_inputs(stack_env):
    with pytest.raises(DistillError, match=r"has class '(RBC|WBC|Platelets)', which is not in the class list"):
        prepare_data(str(BCCD), "voc", classes="RBC,WBC")
    with pytest.raises(DistillError, match="unknown dataset format 'tfrecord'"):
        prepare_data(str(BCCD), "tfrecord")
    with pytest.raises(DistillError, match="bucket 'missing-bucket' does not exist"):
        prepare_data(str(BCCD), "voc", dest="s3://missing-bucket/x")


def test_two_datasets_in_one_pipeline_run_are_both_recorded(stack_env):
    first = prepare_data(str(TASK_DATA["detect"].parent), "yolo", run_id="two-datasets")
    second = prepare_data(str(BCCD), "voc", run_id="two-datasets")  # crashed on "Changing param values" before
    client = tracking.client()
    runs = [client.get_run(r["mlflow_run_id"]) for r in (first, second)]
    assert [r.data.params["hash"] for r in runs] == [first["hash"], second["hash"]]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].data.tags["mlflow.parentRunId"] == runs[1].data.tags["mlflow.parentRunId"]


def _history(run_id: str, key: str) -> list:
    return tracking.client().get_metric_history(run_id, tracking.metric_name(key))


def test_train_and_distill_steps_write_s3_and_mlflow(stack_env, trained):
    data, teacher, student, kd = trained["data"], trained["teacher"], trained["student"], trained["kd"]

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
    assert kd["devices"] == teacher["devices"] == ["cpu"]
    assert run.data.params["device"] == "cpu" and run.data.params["devices"] == "cpu"
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
    with pytest.raises(DistillError, match="loss must be one of .*, got 'kl'"):
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


def test_evaluate_step_compares_three_models(stack_env, evaluated, trained):
    models = evaluated["models"]
    assert set(models) == {"teacher", "baseline", "distilled"} and evaluated["split"] == "val"
    for m in models.values():
        assert set(m["metrics"]) == {"metrics/mAP50-95(B)", "metrics/mAP50(B)"}
        assert m["params"] > 0 and m["gflops"] > 0 and m["size_mb"] > 0 and m["latency_ms"] > 0
        assert m["device"].startswith("cpu")
    assert models["teacher"]["params"] > models["distilled"]["params"] == models["baseline"]["params"]
    v = evaluated["verdict"]
    assert v["gain_over_baseline"] == pytest.approx(v["distilled"] - v["baseline"], abs=1e-5)
    report = json.loads(storage.read_bytes(evaluated["metrics"]))
    assert report["ok"] and report["uris"]["distilled"] == trained["kd"]["best"]
    assert "| distilled |" in storage.read_bytes(evaluated["report"]).decode()
    assert storage.read_bytes(evaluated["chart"])[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = {a.path for a in tracking.client().list_artifacts(evaluated["mlflow_run_id"])}
    assert {"metrics.json", "report.md", "comparison.png", *CHARTS} <= artifacts
    folder = evaluated["metrics"].rsplit("/", 1)[0]
    for chart in CHARTS:  # the pictures, in S3 beside the report
        assert storage.read_bytes(f"{folder}/{chart}")[:8] == b"\x89PNG\r\n\x1a\n", chart
    curves = run_curves(report["uris"], v["primary_metric"])  # what learning_curves.png drew: both runs, from S3
    assert set(curves) == {"baseline", "distilled"} and len(curves["distilled"]["epoch"]) == 2
    assert "kd" in curves["distilled"] and "kd" not in curves["baseline"]  # the KD loss columns of distill.json


def test_evaluate_in_a_fresh_pod_needs_no_train_images(stack_env, trained, tmp_path, monkeypatch):
    """A pod with an empty input cache (every pod on a cluster without the cache volume) fetches only val/test, and
    the report still counts the labelled images that trained the student (from the manifest)."""
    from distill.steps.evaluate import evaluate

    monkeypatch.setenv("YOLO_DISTILL_CACHE", str(tmp_path / "pod-cache"))
    result = evaluate(trained["data"], trained["teacher"]["best"], trained["student"]["best"], trained["kd"]["best"],
                      run_id="run-fresh-pod", imgsz=64, batch=4, device="cpu", latency_images=1)  # fmt: skip
    manifest = json.loads(storage.read_bytes(trained["data"].removesuffix("/data.yaml") + "/manifest.json"))
    assert not list((tmp_path / "pod-cache").rglob("images/train"))  # no train image was fetched
    report = json.loads(storage.read_bytes(result["metrics"]))
    assert report["training"]["labelled"] == manifest["counts"]["train"]["images"] > 0


def _evaluation_with(evaluated, prefix: str, name: str, score: float, **changes) -> str:
    """The real evaluation report with the distilled score set, to drive the promotion gate both ways."""
    report = json.loads(storage.read_bytes(evaluated["metrics"]))
    report["verdict"]["distilled"] = score
    report.update(changes)
    folder = evaluated["metrics"].rsplit("/", 1)[0]
    for part in PARTS:  # the evaluation's other files, so the copy is a complete evaluation
        storage.upload_bytes(storage.read_bytes(f"{folder}/{part}"), f"{prefix}/gate/{name}/{part}")
    uri = f"{prefix}/gate/{name}/metrics.json"
    storage.upload_bytes(json.dumps(report).encode(), uri)
    return uri


def test_register_promotion_gate_both_ways_and_idempotence(stack_env, evaluated, trained):
    import mlflow
    import pandas as pd

    prefix, model = stack_env["YOLO_DISTILL_S3_PREFIX"], trained["kd"]["best"]
    point = {"gate": "point"}  # today's rule on the recorded scores (these evaluations set them); ci: test_gate.py
    first = register(model, _evaluation_with(evaluated, prefix, "v1", 0.30), "gate-model", run_id="gate-1", **point)
    assert first["promoted"] and set(first["aliases"]) == {"champion", "challenger"}

    better = register(model, _evaluation_with(evaluated, prefix, "v2", 0.35), "gate-model", "gate-2", min_gain=0.01,
                      **point)  # fmt: skip
    assert better["promoted"] and "champion" in better["aliases"] and better["version"] != first["version"]

    worse = register(model, _evaluation_with(evaluated, prefix, "v3", 0.20), "gate-model", run_id="gate-3", **point)
    assert worse["promoted"] is False and worse["aliases"] == ["challenger"]
    client = tracking.client()
    assert client.get_model_version_by_alias("gate-model", "champion").version == better["version"]

    small = register(model, _evaluation_with(evaluated, prefix, "v4", 0.355), "gate-model", "gate-4", min_gain=0.01,
                     **point)  # fmt: skip
    assert small["promoted"] is False  # +0.005 is below min_gain

    again = register(model, _evaluation_with(evaluated, prefix, "v3", 0.20), "gate-model", run_id="gate-3", **point)
    assert again["reused"] is True and again["version"] == worse["version"]
    assert len(client.search_model_versions("name = 'gate-model'")) == 4

    version = client.get_model_version("gate-model", better["version"])
    assert version.tags["dataset_hash"] and version.tags["weights_uri"] == model
    assert version.tags["loss"] == "cwd" and version.tags["yolo_distill.pipeline_run_id"] == "gate-2"
    loaded = mlflow.pyfunc.load_model("models:/gate-model@champion", model_config={"allow_paths": True})
    image = str(DATA / "coco8" / "images" / "val" / "000000000036.jpg")
    detections = loaded.predict(pd.DataFrame({"image": [image]}), params={"conf": 1e-6, "imgsz": 64})
    assert list(detections.columns) == ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
    names = set(yaml.safe_load(TASK_DATA["detect"].read_text())["names"].values())
    assert len(detections) > 0 and set(detections["class_name"]) <= names


def test_register_reevaluates_champion_on_other_data(stack_env, evaluated, trained, tmp_path):
    import shutil

    prefix, model = stack_env["YOLO_DISTILL_S3_PREFIX"], trained["kd"]["best"]
    register(model, _evaluation_with(evaluated, prefix, "r1", 0.9), "reeval-model", run_id="reeval-1", gate="point")
    other = tmp_path / "coco8-other"
    shutil.copytree(TASK_DATA["detect"].parent, other, ignore=shutil.ignore_patterns("*.cache"))
    next((other / "images" / "val").iterdir()).unlink()  # different content, different hash
    data = prepare_data(str(other), "yolo")["uri"]
    result = register(model, _evaluation_with(evaluated, prefix, "r2", 0.5, data=data), "reeval-model", "reeval-2",
                      gate="point")  # fmt: skip
    assert "re-evaluated on dataset" in result["reason"]
    assert result["promoted"] is True  # the champion's recorded 0.9 was on other data; measured again it is ~0


def test_register_refuses_failed_or_mismatched_evaluation(stack_env, evaluated, trained):
    prefix, model = stack_env["YOLO_DISTILL_S3_PREFIX"], trained["kd"]["best"]
    client = tracking.client()
    with pytest.raises(RunFailure, match="did not succeed; nothing registered"):
        register(model, _evaluation_with(evaluated, prefix, "failed", 0.99, ok=False), "never-model", "x-1")
    incomplete = _evaluation_with(evaluated, prefix, "incomplete", 0.99)
    storage.client().delete_object(**_bucket_key(incomplete.replace("metrics.json", "report.md")))
    with pytest.raises(RunFailure, match="is incomplete: .*report.md' is missing or changed"):
        register(model, incomplete, "never-model", "x-4")
    legacy = _evaluation_with(evaluated, prefix, "legacy", 0.99, parts=None)
    with pytest.raises(RunFailure, match="is incomplete \\(no record of report.md, comparison.png, image_stats.npz, "
                                         "per_class.png, learning_curves.png, gate.png\\)"):  # fmt: skip
        register(model, legacy, "never-model", "x-5")
    with pytest.raises(DistillError, match="is not the distilled model evaluated"):
        register(trained["student"]["best"], evaluated["metrics"], "never-model", "x-2")
    with pytest.raises(DistillError, match="not found"):
        register(model, f"{prefix}/missing/metrics.json", "never-model", "x-3")
    assert client.search_registered_models("name = 'never-model'") == []


def _bucket_key(uri: str) -> dict:
    u = storage.parse_s3_uri(uri)
    return {"Bucket": u.bucket, "Key": u.key}


def test_step_cli_prints_json_last_line_and_fails_clearly(stack_env, evaluated, trained):
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "step", "register", "--model", trained["kd"]["best"],
         "--evaluation", evaluated["metrics"], "--name", "cli-model", "--run-id", "cli-1"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version"] == "1" and "challenger" in result["aliases"]

    def step_train(prefix: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "distill.cli", "step", "train", "--data", trained["data"], "--model",
             "yolov8n.yaml", "--name", "x", "--run-id", "cli-2", "--prefix", prefix],
            capture_output=True, text=True, timeout=300, env={**os.environ, **env},
        )  # fmt: skip

    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    denied = step_train(prefix, AWS_SECRET_ACCESS_KEY="wrong-secret-xyz")  # the environment's fault: exit 1
    assert denied.returncode == 1 and denied.stderr.startswith("error: S3 rejected the credentials")
    assert "wrong-secret-xyz" not in denied.stderr + denied.stdout
    missing = step_train("s3://no-such-bucket-x/p")  # a destination that does not exist: bad input, exit 2
    assert missing.returncode == 2 and missing.stderr.startswith("error: bucket 'no-such-bucket-x' does not exist")
    down = step_train(prefix, AWS_ENDPOINT_URL_S3="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")  # outage: exit 1
    assert down.returncode == 1 and down.stderr.startswith("error: cannot reach the S3 endpoint http://127.0.0.1:9")
    for proc in (denied, missing, down):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]


def write_coco(tmp_path) -> int:
    """Write coco8 as COCO JSON (annotations/instances_<split>.json, images/<split>/) in ``tmp_path``; count boxes."""
    from PIL import Image

    src = TASK_DATA["detect"].parent
    names = yaml.safe_load(TASK_DATA["detect"].read_text())["names"]
    (tmp_path / "annotations").mkdir()
    total = 0
    for split in ("train", "val"):
        images, annotations = [], []
        (tmp_path / "images" / split).mkdir(parents=True)
        for i, image in enumerate(sorted((src / "images" / split).glob("*.jpg"))):
            (tmp_path / "images" / split / image.name).write_bytes(image.read_bytes())
            w, h = Image.open(image).size
            images.append({"id": i + 1, "file_name": image.name, "width": w, "height": h})
            for line in (src / "labels" / split / f"{image.stem}.txt").read_text().splitlines():
                c, cx, cy, bw, bh = (float(v) for v in line.split())
                bbox = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                    "bbox": bbox, "iscrowd": 0, "area": bbox[2] * bbox[3]})  # fmt: skip
        total += len(annotations)
        categories = [{"id": k + 1, "name": v} for k, v in names.items()]
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return total


def test_prepare_data_coco_json(stack_env, tmp_path):
    """COCO JSON built from coco8's own labels imports to the same boxes (Ultralytics' converter)."""
    names = yaml.safe_load(TASK_DATA["detect"].read_text())["names"]
    total = write_coco(tmp_path)
    result = prepare_data(str(tmp_path), "coco")
    assert result["names"] == list(names.values())
    assert {s: c["images"] for s, c in result["counts"].items()} == {"train": 4, "val": 4}
    assert sum(c["instances"] for c in result["counts"].values()) == total
