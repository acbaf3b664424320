"""Faults against the real local stack: the MLflow server killed mid-step and restarted, outages, racing registers.

Each fault is injected in a real ``yolo-distill`` process: a small runner wraps one seam of the step (the call
after which the server dies, or the alias move both racers must reach) and then runs the CLI's ``main``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import one_error_line

from distill import stack
from distill.data import storage
from distill.steps import tracking
from distill.steps.evaluate import MARKER, PARTS

RUNNER = """
import os, signal, sys
from distill import cli, stack

def kill_mlflow():
    os.killpg(stack.status(os.environ["STACK_DIR"])["mlflow"]["pid"], signal.SIGKILL)

{patch}
sys.exit(cli.main(sys.argv[1:]))
"""


def run_cli(*args: str, patch: str = "", timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run ``yolo-distill ARGS`` in a new process, with ``patch`` (Python) applied first."""
    code = RUNNER.format(patch=textwrap.dedent(patch))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env},
    )  # fmt: skip


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def restart_mlflow(stack_env):
    """Bring the stack's MLflow server back after a test killed it (and check it is the same server)."""
    yield
    stack.up(stack_env["STACK_DIR"])
    assert stack.status(stack_env["STACK_DIR"])["running"]


def _run_status(run_id: str) -> str:
    return tracking.client().get_run(run_id).info.status


def _runs_of(pipeline_run: str) -> dict[str, object]:
    """Every MLflow run of a pipeline run, by its step tag."""
    client = tracking.client()
    exp = tracking.experiment_id(client, None)
    runs = client.search_runs([exp], filter_string=f"tags.`{tracking.TAG_PIPELINE}` = '{pipeline_run}'")
    return {r.data.tags[tracking.TAG_STEP]: r for r in runs}


def test_mlflow_down_register_fails_in_bounded_time_with_one_line(stack_env, evaluated, trained, restart_mlflow):
    os.killpg(stack.status(stack_env["STACK_DIR"])["mlflow"]["pid"], signal.SIGKILL)
    started = time.monotonic()
    proc = run_cli(
        "step", "register", "--model", trained["kd"]["best"], "--evaluation", evaluated["metrics"], "--name",
        "outage-model", "--run-id", "outage-1", YOLO_DISTILL_MLFLOW_RETRIES="1",
    )  # fmt: skip
    line = one_error_line(proc, 1, "cannot reach the MLflow tracking server")
    assert stack_env["MLFLOW_TRACKING_URI"] in line and "YOLO_DISTILL_MLFLOW_RETRIES" in line
    assert time.monotonic() - started < 60  # MLflow's own default retries for ~4 minutes


def test_mlflow_dies_during_register_and_the_rerun_completes_it(stack_env, evaluated, trained, restart_mlflow):
    args = ("step", "register", "--model", trained["kd"]["best"], "--evaluation", evaluated["metrics"],
            "--name", "fault-model", "--run-id", "fault-1")  # fmt: skip
    patch = """
        from distill.steps import register
        created = register._log_and_register
        def then_die(*a, **k):
            version = created(*a, **k)
            print(f"Created version {version}", file=sys.stderr)
            kill_mlflow()
            return version
        register._log_and_register = then_die
    """
    first = run_cli(*args, patch=patch, YOLO_DISTILL_MLFLOW_RETRIES="1", STACK_DIR=stack_env["STACK_DIR"])
    assert "Created version 1" in first.stderr
    one_error_line(first, 1, "cannot reach the MLflow tracking server")
    stack.up(stack_env["STACK_DIR"])
    client = tracking.client()
    half = client.get_model_version("fault-model", "1")
    assert half.tags["yolo_distill.pipeline_run_id"] == "fault-1" and not half.aliases  # what the fault left:
    assert "dataset_hash" not in half.tags and "yolo_distill.decision" not in half.tags  # creation tags only

    again = last_json(run_cli(*args))
    assert again["version"] == "1" and again["reused"] is True
    assert again["promoted"] is True and set(again["aliases"]) == {"champion", "challenger"}
    done = client.get_model_version("fault-model", "1")
    assert done.tags["dataset_hash"] and done.tags["metric"] and done.tags["yolo_distill.decision"] == "promoted"
    assert len(client.search_model_versions("name = 'fault-model'")) == 1
    runs = _runs_of("fault-1")
    assert runs["register"].info.status == "FINISHED" and runs["pipeline"].info.status == "FINISHED"
    third = last_json(run_cli(*args))  # decided once: a further rerun reports the same, moves nothing
    assert third["promoted"] is True and third["version"] == "1"


def test_mlflow_dies_during_evaluate_leaves_no_marker_and_register_refuses(
    stack_env, trained, evaluated, restart_mlflow
):
    args = ("step", "evaluate", "--data", trained["data"], "--teacher", trained["teacher"]["best"], "--baseline",
            trained["student"]["best"], "--distilled", trained["kd"]["best"], "--run-id", "fault-eval", "--imgsz",
            "64", "--batch", "4", "--device", "cpu", "--latency-images", "2")  # fmt: skip
    patch = """
        from distill.steps import evaluate, tracking
        logged = tracking.log_metrics
        def die_first(*a, **k):
            kill_mlflow()
            return logged(*a, **k)
        evaluate.tracking.log_metrics = die_first
    """
    first = run_cli(*args, patch=patch, YOLO_DISTILL_MLFLOW_RETRIES="1", STACK_DIR=stack_env["STACK_DIR"])
    one_error_line(first, 1, "cannot reach the MLflow tracking server")
    folder = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/runs/fault-eval/evaluate"
    assert all(storage.head(f"{folder}/{part}") for part in PARTS)  # the parts were uploaded ...
    assert storage.head(f"{folder}/{MARKER}") is None  # ... but not the completion marker
    stack.up(stack_env["STACK_DIR"])
    refused = run_cli("step", "register", "--model", trained["kd"]["best"], "--evaluation", folder, "--name",
                      "never-fault", "--run-id", "fault-eval")  # fmt: skip
    one_error_line(refused, 2, f"'{folder}/{MARKER}' not found")
    runs = _runs_of("fault-eval")
    assert runs["evaluate"].info.status == "RUNNING"  # MLflow was down: nobody could end it; the rerun will

    result = last_json(run_cli(*args))
    assert storage.head(result["metrics"]) is not None
    runs = _runs_of("fault-eval")
    assert runs["evaluate"].info.status == "FINISHED" and runs["pipeline"].info.status == "FINISHED"
    registered = last_json(run_cli("step", "register", "--model", trained["kd"]["best"], "--evaluation", folder,
                                   "--name", "fault-eval-model", "--run-id", "fault-eval"))  # fmt: skip
    assert registered["version"] == "1"


def test_a_failing_step_ends_its_runs_failed(stack_env, trained):
    """A step that fails for a reason other than MLflow ends its child run FAILED and the parent not RUNNING."""
    proc = run_cli("step", "evaluate", "--data", trained["data"], "--teacher", trained["teacher"]["best"],
                   "--baseline", trained["student"]["best"], "--distilled", trained["kd"]["best"], "--run-id",
                   "fails-1", "--imgsz", "64", "--batch", "4", "--device", "cpu",
                   patch="""
                       from distill.steps import evaluate
                       def broken(*a, **k):
                           raise RuntimeError("validator crashed")
                       evaluate.measure = broken
                   """)  # fmt: skip
    assert proc.returncode == 1 and "validator crashed" in proc.stderr
    runs = _runs_of("fails-1")
    assert runs["evaluate"].info.status == "FAILED" and runs["pipeline"].info.status == "FAILED"


def test_two_registers_racing_end_with_the_better_champion(stack_env, evaluated, trained, tmp_path):
    """Both racers pass the gate against the same champion, then move the alias at the same moment."""
    from test_steps import _evaluation_with

    prefix, model = stack_env["YOLO_DISTILL_S3_PREFIX"], trained["kd"]["best"]
    base = last_json(run_cli("step", "register", "--model", model, "--evaluation",
                             _evaluation_with(evaluated, prefix, "race-0", 0.30), "--name", "race-model", "--run-id",
                             "race-0", "--gate", "point"))  # fmt: skip
    assert base["promoted"] is True
    patch = f"""
        import pathlib, time
        from distill.steps import champion
        move = champion.set_champion
        barrier = pathlib.Path({str(tmp_path)!r})
        def together(*a, **k):
            if not (barrier / "passed").exists():
                (barrier / os.environ["RACER"]).touch()
                deadline = time.monotonic() + 120
                while len(list(barrier.glob("racer-*"))) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                (barrier / "passed").touch()
            return move(*a, **k)
        champion.set_champion = together
    """
    procs = {}
    for racer, score in (("racer-a", 0.50), ("racer-b", 0.60)):
        code = RUNNER.format(patch=textwrap.dedent(patch))
        evaluation = _evaluation_with(evaluated, prefix, racer, score)
        args = ["step", "register", "--model", model, "--evaluation", evaluation, "--name", "race-model",
                "--run-id", racer, "--gate", "point"]  # the recorded scores set here decide  # fmt: skip
        procs[racer] = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RACER": racer},
        )  # fmt: skip
    results = {}
    for racer, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results[racer] = json.loads(out.strip().splitlines()[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passed", "racer-a", "racer-b"]  # both met at the move
    champion = tracking.client().get_model_version_by_alias("race-model", "champion")
    assert champion.version == results["racer-b"]["version"]  # the better one, whoever moved last
    assert results["racer-b"]["promoted"] is True and results["racer-a"]["promoted"] is False
    assert f"v{results['racer-b']['version']}" in results["racer-a"]["reason"]
    assert Path(tmp_path / "passed").exists()
