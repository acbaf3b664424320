"""submit and schedule against a local stand-in for the KFP API: what reaches it is what a cluster would get."""

from __future__ import annotations

import json

from conftest import cli
from fake_kfp import FakeKfp


def _posts(fake: FakeKfp, suffix: str) -> list[dict]:
    return [body for method, path, body in fake.requests if method == "POST" and path.endswith(suffix)]


def test_submit_sends_the_compiled_spec_and_parameters():
    with FakeKfp() as fake:
        proc = cli("pipeline", "submit", "--host", fake.url, "--experiment", "kd-exp", "--token", "tok-123",
                   "--image", "registry.example/yolo-distill:9.9", "data_source=s3://b/p/data", "loss=mgd",
                   "min_gain=0.01", "student_epochs=50")  # fmt: skip
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["run_id"] and result["experiment"] == "kd-exp"
        assert "tok-123" not in proc.stdout + proc.stderr
        assert any(m == "GET" and body.get("auth") == "Bearer tok-123" for m, _, body in fake.requests)
        [run] = _posts(fake, "/runs")
        spec = run["pipeline_spec"]["pipeline_spec"]  # with the kfp-kubernetes platform spec beside it
        assert spec["pipelineInfo"]["name"] == "yolo-distill"
        assert (
            "exec-distill"
            in run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        )
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {"registry.example/yolo-distill:9.9"}
        params = run["runtime_config"]["parameters"]
        assert params == {"data_source": "s3://b/p/data", "loss": "mgd", "min_gain": 0.01, "student_epochs": 50}
        assert run["experiment_id"] == next(iter(fake.experiments))


def test_schedule_create_list_delete():
    with FakeKfp() as fake:
        proc = cli("pipeline", "schedule", "--host", fake.url, "--cron", "0 0 3 * * 1", "--image", "reg.example/y:1",
                   "data_source=s3://b/p/data", "teacher_weights=s3://b/p/teacher.pt")  # fmt: skip
        created = json.loads(proc.stdout.strip().splitlines()[-1])
        [job] = _posts(fake, "/recurringruns")
        assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
        assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
        assert job["runtime_config"]["parameters"]["teacher_weights"] == "s3://b/p/teacher.pt"
        assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "yolo-distill"

        listed = json.loads(cli("pipeline", "schedule", "--host", fake.url, "--list").stdout.strip().splitlines()[-1])
        assert [r["recurring_run_id"] for r in listed] == [created["recurring_run_id"]]
        cli("pipeline", "schedule", "--host", fake.url, "--delete", created["recurring_run_id"])
        assert fake.recurring == {}


def test_schedule_rejects_a_five_field_cron():
    proc = cli("pipeline", "schedule", "--host", "http://127.0.0.1:9", "--cron", "0 3 * * 1", "data_source=x",
               "--image", "reg.example/y:1", check=False)  # fmt: skip
    assert proc.returncode == 2 and "must have 6 fields" in proc.stderr


def test_unreachable_kfp_host_is_one_line_exit_1():
    proc = cli("pipeline", "submit", "--host", "http://127.0.0.1:9", "--image", "reg.example/y:1", "data_source=x",
               check=False)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: cannot reach the Kubeflow Pipelines API at http://127.0.0.1:9 (MaxRetryError)"
    ]
