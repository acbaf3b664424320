"""The Kubeflow pipeline: cluster settings in the compiled YAML, and a full kfp.local run against the real stack."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from conftest import DATA, TASK_DATA, cli

from distill.config import DEFAULTS
from distill.data import storage
from distill.pipelines.local import run_local
from distill.steps import tracking
from distill.steps.common import CACHE_MOUNT

TRAINING = {"train-teacher", "train-student", "distill"}
#: Every step of the plain pipeline, by display name.
STEP_NAMES = ["prepare-data", "train-teacher", "train-student", "distill", "evaluate", "register"]
#: With nodes > 1, each training step is a light pod that submits a TrainJob and waits for it.
LAUNCHERS = {f"{name} (TrainJob)" for name in TRAINING}


@pytest.fixture(scope="module", params=["plain", "sweep"])
def compiled(request, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    sweep = ["--sweep"] if request.param == "sweep" else []
    proc = cli("pipeline", "compile", *sweep, "-o", str(out), "--image", "registry.example/yolo-distill:1.2.3",
               "--node-selector", "nvidia.com/gpu.product=A100", "--s3-secret", "s3-creds",
               "--cache-pvc", "run-cache")  # fmt: skip
    assert json.loads(proc.stdout.strip().splitlines()[-1])["pipeline"] == str(out)
    spec, platform = yaml.safe_load_all(out.read_text())
    return request.param, spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _all_tasks(spec: dict) -> list[dict]:
    tasks = list(spec["root"]["dag"]["tasks"].values())
    for comp in spec["components"].values():
        tasks.extend(comp.get("dag", {}).get("tasks", {}).values())
    return tasks


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task by display name, including those inside the condition."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return {t["taskInfo"]["name"]: t for t in tasks.values()}


def test_compiled_pipeline_carries_cluster_settings(compiled):
    variant, spec, k8s = compiled
    tasks = _tasks(spec)
    assert set(tasks) >= {"prepare-data", "evaluate", "register", *TRAINING, *LAUNCHERS}
    if variant == "sweep":
        assert "select-best" in tasks
        loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
        assert loop["parameterIterator"]["items"]["inputParameter"].endswith("sweep_configs")
    executors = spec["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        component = spec["components"][task["componentRef"]["name"]]
        if "executorLabel" not in component:  # the dsl.If sub-DAG
            continue
        executor = component["executorLabel"]
        container = executors[executor]["container"]
        assert container["image"] == "registry.example/yolo-distill:1.2.3"
        # The image carries kfp: a pod starts KFP's executor without pip (no index reached, nothing written).
        assert "kfp.dsl.executor_main" in container["command"][2] and "pip" not in " ".join(container["command"][:3])
        platform = k8s[executor]
        secrets = {s["secretName"]: {e["envVar"] for e in s["keyToEnv"]} for s in platform["secretAsEnv"]}
        assert secrets["s3-creds"] == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"}
        assert secrets["yolo-distill-mlflow"] == {"MLFLOW_TRACKING_URI"}
        (mount,) = platform["pvcMount"]  # one input cache for the run's pods: the dataset is fetched once
        assert mount["constant"] == "run-cache" and mount["mountPath"] == CACHE_MOUNT
        assert {"name": "YOLO_DISTILL_CACHE", "value": f"{CACHE_MOUNT}/inputs"} in container["env"]
        if name in TRAINING:
            accelerator = container["resources"]["accelerator"]
            assert "pipelinechannel--accelerator" in accelerator["resourceType"]
            assert "pipelinechannel--gpus" in accelerator["resourceCount"]
            assert container["resources"]["resourceMemoryLimit"] == "32G"
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in platform["tolerations"]
            assert platform["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "A100"}
            assert {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "dshm"} in platform[
                "emptyDirMounts"
            ]
            assert task["retryPolicy"]["maxRetryCount"] == 3
            assert task["cachingOptions"].get("enableCache", False) is False
        elif name in LAUNCHERS:  # no GPU held while the TrainJob runs; retried (it finds its job again)
            assert "accelerator" not in container.get("resources", {})
            assert "emptyDirMounts" not in platform
            assert task["retryPolicy"]["maxRetryCount"] == 3
            assert task["cachingOptions"].get("enableCache", False) is False
        else:
            assert "accelerator" not in container.get("resources", {})
            assert "tolerations" not in platform and "nodeSelector" not in platform
            assert task["cachingOptions"]["enableCache"] is True
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"data_source", "teacher_weights", "min_gain", "registry_name", "gpus", "accelerator", "seed"} <= set(params)
    assert params["nodes"]["defaultValue"] == 1 and params["nodes"]["parameterType"] == "NUMBER_INTEGER"
    # Each training step: its GPU task under nodes == 1, its TrainJob launcher otherwise, outputs joined by OneOf.
    conditions = [
        t["triggerPolicy"]["condition"]
        for t in _all_tasks(spec)
        if "nodes" in t.get("triggerPolicy", {}).get("condition", "")
    ]
    assert len(conditions) == 2 * len(TRAINING)
    assert sum(c.startswith("!(") for c in conditions) == len(TRAINING)
    trainjob = json.loads(tasks["distill (TrainJob)"]["inputs"]["parameters"]["trainjob"]["runtimeValue"]["constant"])
    assert trainjob["image"] == "registry.example/yolo-distill:1.2.3" and trainjob["s3_secret"] == "s3-creds"
    assert trainjob["node_selector"] == {"nvidia.com/gpu.product": "A100"} and trainjob["shm_size"] == "8Gi"
    assert trainjob["cache_pvc"] == "run-cache"  # the TrainJob's nodes share the run's input cache too
    assert params["logit_loss"]["defaultValue"] == DEFAULTS["logit_loss"]
    assert ({"sweep_configs"} if variant == "sweep" else {"loss", "layers"}) <= set(params)
    condition = next(c for c in spec["root"]["dag"]["tasks"].values() if c["taskInfo"]["name"].startswith("distilled"))
    assert "register" in condition["triggerPolicy"]["condition"]


@pytest.mark.fast
def test_run_local_numbers_and_times_each_step_through_kfp_local_dispatcher(monkeypatch, capsys):
    """The seam exists in the installed kfp, is wrapped only during the run, and names the steps as the UI does."""
    from kfp.local import status, task_dispatcher

    from distill.pipelines.local import step_lines
    from distill.pipelines.pipeline import build_pipeline

    calls = []

    def dispatcher(**kwargs):  # stands in for kfp.local's own: the first distill attempt fails, a retry succeeds
        calls.append(kwargs["component_name"])
        failed = kwargs["component_name"] == "comp-distill" and calls.count("comp-distill") == 1
        return {}, status.Status.FAILURE if failed else status.Status.SUCCESS

    monkeypatch.setattr(task_dispatcher, "run_single_task_implementation", dispatcher)
    with step_lines(build_pipeline(cluster=False)) as lines:
        for component, name in [("prepare-data", ""), ("train", "teacher"), ("train-2", "student"),
                                ("distill", "distill"), ("distill", "distill"), ("evaluate", "evaluate")]:  # fmt: skip
            kfp_call = task_dispatcher.run_single_task_implementation  # looked up as kfp's orchestrators do
            kfp_call(component_name=f"comp-{component}", arguments={"name": name} if name else {}, runner=None)
    assert task_dispatcher.run_single_task_implementation is dispatcher  # restored after the run
    assert [line.split(" done in ")[0].split(" failed after ")[0] for line in capsys.readouterr().err.splitlines()] == [
        "[1/6] prepare-data ...", "[1/6] prepare-data", "[2/6] train-teacher ...", "[2/6] train-teacher",
        "[3/6] train-student ...", "[3/6] train-student", "[4/6] distill ...", "[4/6] distill",
        "[4/6] distill (attempt 2) ...", "[4/6] distill (attempt 2)", "[5/6] evaluate ...", "[5/6] evaluate",
    ]  # fmt: skip
    assert lines.summary(75) == "run-local: 5/6 steps in 1 min 15 s (not run: register)"


def test_run_local_registers_then_gate_skips_register(stack_env, tmp_path, capfd):
    common = {
        "data_source": str(TASK_DATA["detect"].parent), "teacher_epochs": 1, "student_epochs": 1, "imgsz": 64,
        "batch": 4, "device": "cpu", "registry_name": "local-pipeline-model",
        "gate": "point",  # one-epoch models score ~0: only today's point rule (0 >= min_gain 0) reaches register
    }  # fmt: skip
    first = run_local({**common, "run_id": "kfp-local-1"}, stack_dir=stack_env["STACK_DIR"],
                      pipeline_root=str(tmp_path / "kfp-1"))  # fmt: skip
    assert {s["status"] for s in first["steps"].values()} == {"succeeded"}
    out = capfd.readouterr()
    done = re.findall(r"^\[(\d)/6\] (\S+) done in \d.*$", out.err, re.M)  # in kfp.local's (dependency) order
    assert [int(n) for n, _ in done] == [1, 2, 3, 4, 5, 6] and done[0][1] == "prepare-data", out.err[-3000:]
    assert sorted(step for _, step in done) == sorted(STEP_NAMES) and [s for _, s in done[-2:]] == STEP_NAMES[-2:]
    assert re.search(r"^run-local: 6/6 steps in .+$", out.err, re.M)
    for said in (r"export: ONNX \(imgsz 64, dynamic\) done in ", r"verify: ONNX vs PyTorch on \d+ images done in "):
        assert re.search(said, out.out), said  # register's own lines, streamed by kfp.local into stdout
    assert first["registry"]["aliases"] == ["challenger", "champion"]
    assert first["champion"]["version"] == first["registry"]["version"] and first["champion"]["run_id"] == "kfp-local-1"
    assert set(first["evaluation"]["models"]) == {"teacher", "baseline", "distilled"}
    assert first["parameters"]["min_gain"] == 0.0 and first["parameters"]["loss"] == DEFAULTS["loss"]  # in force
    client = tracking.client()
    parent = client.get_run(first["steps"]["distill"]["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).data.tags[tracking.TAG_PIPELINE] == "kfp-local-1"

    # Scheduled-retraining shape: reuse the trained teacher; an impossible min_gain must skip register for real.
    # Any KD setting and any Ultralytics argument reach the step (as the CLI would pass them: a number, a mapping).
    # And an unlabelled pool (issue 21): published by prepare-data, pseudo-labelled and trained on by distill.
    pool = tmp_path / "pool"
    pool.mkdir()
    for image in sorted((DATA / "coco8-pose" / "images").rglob("*.jpg")):
        shutil.copyfile(image, pool / image.name)
    second = run_local(
        {**common, "run_id": "kfp-local-2", "teacher_weights": first["steps"]["teacher"]["best"], "min_gain": 1.0,
         "distill_off_epochs": 0, "tau": 2.0, "train_args": {"lr0": 0.02}, "unlabeled_source": str(pool),
         "pseudo_conf": 1e-5, "pool_rounds": 2},
        stack_dir=stack_env["STACK_DIR"], pipeline_root=str(tmp_path / "kfp-2"),
    )  # fmt: skip
    trained = second["steps"]["distill"]["pool"]
    assert trained["labelled"] == 4 and trained["pool"] == 8 and 0 < trained["used"] <= 8 and trained["conf"] == 1e-5
    report = json.loads(storage.read_bytes(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/runs/kfp-local-2/evaluate/"
                                          "metrics.json"))  # fmt: skip
    assert report["training"] == {"labelled": 4, "unlabeled": trained["used"], "pseudo_labels": trained["instances"],
                                  "pseudo_conf": 1e-5, "pool_left_out": 8 - trained["used"], "rounds": 2}  # fmt: skip
    assert trained["round"] == 2  # the second self-training round's student is the one evaluated
    out = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/runs/kfp-local-2"
    plan = json.loads(storage.read_bytes(f"{out}/distill/distill.json"))
    assert plan["config"]["distill_off_epochs"] == 0 and plan["config"]["tau"] == 2.0
    round1 = json.loads(storage.read_bytes(f"{out}/distill-round1/result.json"))  # round 1: a step of its own
    assert plan["config"]["extra"] == {"round": 2} and round1["pool"]["round"] == 1
    assert json.loads(storage.read_bytes(f"{out}/distill-round1/distill.json"))["config"]["extra"] == {"round": 1}
    logged = tracking.client().get_run(second["steps"]["distill"]["mlflow_run_id"]).data.params
    assert logged["teacher"] == round1["best"] and logged["kd/pool_rounds"] == "2"  # round 2 learnt from round 1
    for step in ("distill", "student"):
        assert yaml.safe_load(storage.read_bytes(f"{out}/{step}/args.yaml"))["lr0"] == 0.02
    assert second["steps"]["teacher"]["status"] == "reused"
    assert second["steps"]["evaluate"]["gate"] == "skip"
    assert second["steps"]["register"]["status"] == "skipped"
    assert "over the baseline" in second["steps"]["register"]["reason"]
    assert "gate point: difference" in second["steps"]["register"]["reason"] and "< min_gain 100.00" in \
        second["steps"]["register"]["reason"]  # fmt: skip
    assert second["champion"]["run_id"] == "kfp-local-1"
    assert "run-local: 5/6 steps in " in capfd.readouterr().err  # register: not run (the gate)
    versions = client.search_model_versions("name = 'local-pipeline-model'")
    assert [v.version for v in versions] == [first["registry"]["version"]]  # register never ran
    assert client.get_model_version_by_alias("local-pipeline-model", "champion").version == first["registry"]["version"]


def test_compile_submit_schedule_without_an_image_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLO_DISTILL_IMAGE", raising=False)
    out = tmp_path / "p.yaml"
    for args in (
        ("compile", "-o", str(out)),
        ("submit", "--host", "http://127.0.0.1:9", "data_source=s3://b/d"),
        ("schedule", "--host", "http://127.0.0.1:9", "--cron", "0 0 3 * * 1", "data_source=s3://b/d"),
    ):
        proc = cli("pipeline", *args, check=False)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no container image: pass --image REF or set "
                                                       "YOLO_DISTILL_IMAGE"), lines  # fmt: skip
        assert "images/build.sh" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_compile_takes_the_image_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_DISTILL_IMAGE", "registry.example/yolo-distill@sha256:" + "a" * 64)
    out = tmp_path / "p.yaml"
    result = json.loads(cli("pipeline", "compile", "-o", str(out)).stdout.strip().splitlines()[-1])
    assert result["image"] == "registry.example/yolo-distill@sha256:" + "a" * 64
    spec = next(yaml.safe_load_all(out.read_text()))  # the pipeline spec; the platform spec follows
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {result["image"]}
