"""One version per pipeline run, whatever the timing — against the real SeaweedFS and MLflow servers.

Two ``yolo-distill step register`` processes of one pipeline run are held where a version is created
(``mlflow.register_model``) until both are there — or until the other one is waiting for the run's lock — as a pod
retried after a node loss races the first pod. A register killed right before creating its version must leave its
MLflow run RUNNING (not FINISHED without a version), and its rerun must take the dead holder's lock over and finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from test_faults import RUNNER, last_json, run_cli

from distill.data import storage
from distill.steps import tracking
from distill.steps.register import TAG_RUN

#: Holds each racer at version creation until both are there, or one is waiting for the run's lock (new code only).
HOLD_AT_CREATION = """
    import pathlib, time, mlflow
    from distill.steps import register
    barrier, me = pathlib.Path({barrier!r}), os.environ["RACER"]
    create = mlflow.register_model
    def held(*a, **k):
        (barrier / f"creating-{{me}}").touch()
        deadline = time.monotonic() + 120
        while len([*barrier.glob("creating-*"), *barrier.glob("waiting-*")]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        return create(*a, **k)
    mlflow.register_model = held
    busy = getattr(register, "lock_busy", None)
    if busy is not None:
        def waiting(*a, **k):
            (barrier / f"waiting-{{me}}").touch()
            return busy(*a, **k)
        register.lock_busy = waiting
"""


def _versions_of(name: str, run_id: str) -> list:
    return [v for v in tracking.client().search_model_versions(f"name = '{name}'") if v.tags.get(TAG_RUN) == run_id]


def _register_runs(run_id: str) -> list:
    """The MLflow runs of step ``register`` of pipeline run ``run_id`` (there must be one)."""
    client = tracking.client()
    exp = tracking.experiment_id(client, None)
    query = f"tags.`{tracking.TAG_PIPELINE}` = '{run_id}' and tags.`{tracking.TAG_STEP}` = 'register'"
    return client.search_runs([exp], filter_string=query)


def test_two_registers_of_one_run_at_once_make_one_version(stack_env, evaluated, trained, tmp_path):
    args = ["step", "register", "--model", trained["kd"]["best"], "--evaluation", evaluated["metrics"], "--name",
            "retry-model", "--run-id", "retry-1"]  # fmt: skip
    code = RUNNER.format(patch=textwrap.dedent(HOLD_AT_CREATION.format(barrier=str(tmp_path))))
    procs = {}
    for racer in ("pod-a", "pod-b"):
        procs[racer] = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RACER": racer},
        )  # fmt: skip
    outs, errors = {}, {}
    for racer, proc in procs.items():
        outs[racer], errors[racer] = proc.communicate(timeout=600)
    versions = _versions_of("retry-model", "retry-1")
    assert [v.version for v in versions] == ["1"]  # one version for the pipeline run, not v1 + v2
    for racer, proc in procs.items():
        assert proc.returncode == 0, errors[racer][-3000:]
    results = {racer: json.loads(out.strip().splitlines()[-1]) for racer, out in outs.items()}
    assert {r["version"] for r in results.values()} == {"1"}
    assert all(r["promoted"] is True and r["aliases"] == ["challenger", "champion"] for r in results.values())
    assert sorted(r["reused"] for r in results.values()) == [False, True]  # one made it, the other reported it
    held = sorted(p.name.split("-", 1)[0] for p in tmp_path.iterdir())
    assert held == ["creating", "waiting"]  # they overlapped: one at creation while the other waited for the lock
    waiter = next(racer for racer in procs if (tmp_path / f"waiting-{racer}").exists())
    assert "holds its lock" in errors[waiter]
    runs = _register_runs("retry-1")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {r["mlflow_run_id"] for r in results.values()} == {runs[0].info.run_id}

    again = last_json(run_cli(*args))  # a rerun after both: the same version, still champion
    assert again["version"] == "1" and again["reused"] is True and again["promoted"] is True
    assert tracking.client().get_model_version_by_alias("retry-model", "champion").version == "1"
    assert len(_versions_of("retry-model", "retry-1")) == 1


def test_register_killed_before_creating_its_version_leaves_its_run_running(stack_env, evaluated, trained):
    args = ("step", "register", "--model", trained["kd"]["best"], "--evaluation", evaluated["metrics"], "--name",
            "killed-model", "--run-id", "killed-1")  # fmt: skip
    die = """
        import mlflow
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)  # a node lost right before the version is created
        mlflow.register_model = die
    """
    first = run_cli(*args, patch=die)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert _versions_of("killed-model", "killed-1") == []
    runs = _register_runs("killed-1")
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # never FINISHED without its version

    started = time.monotonic()  # the dead holder's lock: taken over once it has been stale for LOCK_STALE_S
    rerun = run_cli(*args, patch="from distill.steps import register\nregister.LOCK_STALE_S = 3")
    result = last_json(rerun)
    assert time.monotonic() - started >= 3
    assert "took over the lock" in rerun.stderr
    assert result["version"] == "1" and result["reused"] is False and result["promoted"] is True
    assert [v.version for v in _versions_of("killed-model", "killed-1")] == ["1"]
    runs = _register_runs("killed-1")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_id == result["mlflow_run_id"]


def test_lease_is_exclusive_and_a_dead_holder_is_taken_over(stack_env):
    """The lease itself on SeaweedFS: one holder at a time among racing threads; a silent holder is overtaken."""
    uri = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/lease-test/{time.time_ns()}.lock"
    inside, overlaps = [], []

    def hold(i: int) -> None:
        with storage.Lease(uri, stale_s=30, beat_s=0.2, poll_s=0.05):
            inside.append(i)
            overlaps.append(len(inside))
            time.sleep(0.3)
            inside.remove(i)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert overlaps == [1, 1, 1, 1]
    assert json.loads(storage.read_with_etag(uri)[0])["state"] == "done"

    silent = storage.Lease(uri, owner="silent-pod")
    silent.acquire()  # taken and never renewed: what a SIGKILLed holder leaves
    with storage.Lease(uri, stale_s=1, poll_s=0.1) as taker:
        assert taker.taken_from["owner"] == "silent-pod"
        try:
            silent.confirm()
            raise AssertionError("the overtaken holder could still renew")
        except storage.LeaseLost as e:
            assert "taken over" in str(e)
    assert storage.put_if(b"x", uri, absent=True) is None  # the condition S3 must honour, or nothing is locked
