"""Shared fixtures: the real datasets shipped in tests/data, a network guard, and teachers trained once per session."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import distill

distill.configure()  # Ultralytics offline, before anything imports it (the tests' processes inherit the environment)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # small real datasets with their licences (tests/data/README.md)
BCCD = DATA / "bccd-mini"
TASK_DATA = {
    "detect": DATA / "coco8" / "data.yaml",
    "segment": DATA / "coco8-seg" / "data.yaml",
    "pose": DATA / "coco8-pose" / "data.yaml",
}
STUDENT = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml"}
TEACHER = {"detect": "yolov8s.yaml", "segment": "yolov8s-seg.yaml", "pose": "yolov8s-pose.yaml"}
TINY = {"epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu", "plots": False, "workers": 0}
#: The same tiny run as the CLI's flags (``plots=False`` goes on as an Ultralytics override where wanted).
TINY_FLAGS = ("--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu")


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: would need DNS, i.e. the network


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test whose in-process code opens a non-loopback connection (the product must stay offline)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise AssertionError(f"network access attempted: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", _guard_getaddrinfo(socket.getaddrinfo))


#: The files whose tests take longest in all (their fixtures train for minutes: run-local twice, three served models,
#: the gate's weekly runs, MLflow outages): run first, so that under ``make test``'s workers (pytest-xdist, a file to
#: a worker, in this order: ``--no-loadscope-reorder``) no worker starts one of them when the other is nearly done.
LONGEST_FILES = ("test_pipeline.py", "test_serving.py", "test_gate.py", "test_faults.py", "test_steps.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests of :data:`LONGEST_FILES` first, in that order; the rest keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


#: Session fixtures that train or start servers: a test that needs one is not fast.
SLOW_FIXTURES = frozenset({"teachers", "stack_env", "datasets", "trained", "evaluated"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """Set up a test marked ``fast`` under :func:`fast_tier_guard` (its fixtures of any scope included)."""
    slow = sorted(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
    if slow and item.get_closest_marker("fast") is not None:
        pytest.fail(f"a test marked fast uses {', '.join(slow)} (training or servers): drop the fast marker")
    with fast_tier_guard(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Run a test marked ``fast`` under :func:`fast_tier_guard`."""
    with fast_tier_guard(item):
        yield


@contextmanager
def fast_tier_guard(item: pytest.Item) -> Iterator[None]:
    """Hold a test marked ``fast`` to its promise: no subprocess, no listening server, no training.

    The fast tier (``make test-fast``) is only worth having if it stays fast, so a test wrongly marked fails loudly
    instead of slowing the tier down. The guard covers setup (a module fixture that trains is caught too) and the
    test itself, not teardown: the last test of a full run may be fast while a session's stack shuts down.
    """
    if item.get_closest_marker("fast") is None:
        yield
        return
    from ultralytics.engine.trainer import BaseTrainer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "_execute_child", _refuse("starts a subprocess"))
        mp.setattr(socket.socket, "listen", _refuse("starts a server (listen)"))
        mp.setattr(BaseTrainer, "train", _refuse("trains a model (BaseTrainer.train)"))
        yield


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"a test marked fast {what}: drop the fast marker")

    return refused


def _guard_getaddrinfo(real):
    def guarded(host, *args, **kwargs):
        if isinstance(host, str) and host not in {"localhost", ""}:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise AssertionError(f"DNS lookup attempted: {host!r}") from None
        return real(host, *args, **kwargs)

    return guarded


def cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``yolo-distill`` in a fresh process of this interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"yolo-distill {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def cli_here(*args: str) -> subprocess.CompletedProcess:
    """Run ``yolo-distill`` in this process: for the argument checks that refuse before any work (the fast tier).

    The exit status, stdout and stderr come back as :func:`cli` returns them, argparse's own exit included.
    """
    import contextlib
    import io

    from distill.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["yolo-distill", *args], code, out.getvalue(), err.getvalue())


def free_port() -> int:
    """Return a TCP port on loopback that is free now (for servers and rendezvous the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(
    proc: subprocess.CompletedProcess, code: int, start: str = "", contains: str = "", alone: bool = False
) -> str:
    """Assert the process exited ``code`` with exactly one ``error:`` line and no traceback; return that line.

    Args:
        proc: The finished process (stderr captured as text).
        code: Expected exit status (2: bad input, 1: failure or outage).
        start: Text the line must start with after ``error: ``.
        contains: Text the line must contain.
        alone: The error line is the only stderr line, and carries no ANSI colour codes.
    """
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {start}") and contains in errors[0], proc.stderr[-3000:]
    if alone:
        assert lines == errors and "\x1b[" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="session")
def teachers(tmp_path_factory) -> dict[str, Path]:
    """A small (yolov8s-scale) teacher per task, trained 1 epoch: detect through the CLI, the others via the API."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    proc = cli(
        "train",
        "--data",
        str(TASK_DATA["detect"]),
        "--model",
        TEACHER["detect"],
        *TINY_FLAGS,
        "--out",
        str(root / "detect"),
        "plots=False",
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    out["detect"] = Path(result["best"])
    for task in ("segment", "pose"):
        out[task] = distill.train(TASK_DATA[task], TEACHER[task], out=root / task, **TINY).best
    for path in out.values():
        assert path.is_file()
    return out


def fresh_process_check(best: Path, task: str, student_yaml: str, image: Path) -> dict:
    """Load ``best`` with plain Ultralytics in a new process that never imports distill; predict; compare keys."""
    code = f"""
import json, sys
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel, PoseModel, SegmentationModel
m = YOLO({str(best)!r})
res = m.predict({str(image)!r}, imgsz=64, device="cpu", verbose=False)
cls = {{"detect": DetectionModel, "segment": SegmentationModel, "pose": PoseModel}}[{task!r}]
kw = {{"data_kpt_shape": m.model.kpt_shape}} if {task!r} == "pose" else {{}}
plain = cls({student_yaml!r}, nc=m.model.nc, verbose=False, **kw)
print(json.dumps({{
    "distill_imported": any(k == "distill" or k.startswith("distill.") for k in sys.modules),
    "task": m.task, "n_results": len(res), "boxes": res[0].boxes is not None,
    "same_keys": set(m.model.state_dict()) == set(plain.state_dict()),
    "extra": sorted(set(m.model.state_dict()) ^ set(plain.state_dict()))[:5],
}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory):
    """The real local stack (SeaweedFS S3 + MLflow server) for the whole session, its environment exported."""
    from distill import stack
    from distill.data import storage

    folder = tmp_path_factory.mktemp("stack")
    stack.up(folder)
    env = {
        **stack.environment(folder),
        "YOLO_DISTILL_CACHE": str(tmp_path_factory.mktemp("cache")),
        "YOLO_DISTILL_WORKDIR": str(tmp_path_factory.mktemp("work")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    storage._client.cache_clear()
    yield {**env, "STACK_DIR": str(folder)}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    storage._client.cache_clear()
    stack.down(folder)


TINY_STEP = TINY  # the steps take the API's keywords


@pytest.fixture(scope="session")
def datasets(stack_env) -> dict[str, dict]:
    """coco8, coco8-seg and coco8-pose published by prepare-data (pipeline runs 'data-<task>')."""
    from distill.steps.prepare_data import prepare_data

    return {task: prepare_data(str(TASK_DATA[task].parent), "yolo", run_id=f"data-{task}") for task in TASK_DATA}


@pytest.fixture(scope="session")
def trained(stack_env, datasets) -> dict[str, dict]:
    """Teacher, baseline student and distilled student of pipeline run 'run-a', trained by the steps."""
    from distill.steps import training

    data = datasets["detect"]["uri"]
    teacher = training.train(data, "yolov8s.yaml", "teacher", run_id="run-a", **TINY_STEP)
    student = training.train(data, "yolov8n.yaml", "student", run_id="run-a", **TINY_STEP)
    kd = training.distill(  # device "" as the pipeline passes it: every visible GPU, here none, so the CPU
        data, teacher["best"], "yolov8n.yaml", run_id="run-a", loss="cwd", **{**TINY_STEP, "epochs": 2, "device": ""}
    )
    return {"data": data, "teacher": teacher, "student": student, "kd": kd}


@pytest.fixture(scope="session")
def evaluated(stack_env, trained) -> dict:
    """The evaluate step's result for pipeline run 'run-a'."""
    from distill.steps.evaluate import evaluate

    return evaluate(
        trained["data"], trained["teacher"]["best"], trained["student"]["best"], trained["kd"]["best"],
        run_id="run-a", imgsz=64, batch=4, device="cpu", latency_images=3,
    )  # fmt: skip
