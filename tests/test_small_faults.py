"""Small faults, each against the real thing: a stack whose MLflow port is held by a stale or foreign server, the final
validation logged once in MLflow, and refused runs that leave no output folder and print nothing before their error.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import TASK_DATA, cli, one_error_line

from distill import stack
from distill.steps import tracking

#: Ultralytics' one-time notice when it first creates its settings file (at import, on a fresh machine).
SETTINGS_NOTICE = ("Creating new Ultralytics Settings", "View Ultralytics Settings", "Update Settings with")


def _group(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group ``pgid``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _listener(port: int) -> int | None:
    """The process id listening on loopback ``port``."""
    return next(
        (c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port), None
    )


def _free(port: int) -> bool:
    """Whether a server could bind loopback ``port`` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def own_stack(tmp_path):
    """A stack of the test's own (the session's stays untouched); every process group it records is ended after."""
    folder, groups = tmp_path / "stack", set()
    yield folder, groups
    with contextlib.suppress(Exception):
        stack.down(folder)
    for pgid in groups:  # what the code under test failed to stop
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def test_stale_mlflow_worker_is_replaced_and_down_stops_every_process(own_stack):
    folder, groups = own_stack
    first = stack.up(folder)
    old = first["mlflow"]["pid"]
    groups.update({old, first["s3"]["pid"]})
    assert first["running"] and len(_group(old)) >= 2  # `mlflow server` and its uvicorn worker
    port = int(first["mlflow"]["tracking_uri"].rsplit(":", 1)[1])
    os.kill(old, signal.SIGKILL)  # the leader dies; its worker lives on and keeps answering on the port
    _wait_until(lambda: [p.pid for p in _group(old)] != [old] and _listener(port), "the worker should outlive it")

    again = stack.up(folder)
    new = again["mlflow"]["pid"]
    groups.add(new)
    assert again["running"] and new != old
    assert not _group(old)  # the stale worker was stopped, not taken for the new server
    assert _listener(port) in {p.pid for p in _group(new)}  # the server answering is the one recorded

    os.kill(new, signal.SIGKILL)  # again a worker without its leader: `down` must stop it too
    stack.down(folder)
    assert not [p.pid for g in groups for p in _group(g)]
    assert not stack.status(folder)["running"]


class _AnswersLikeMlflow(http.server.BaseHTTPRequestHandler):
    """A foreign server that passes a naive readiness check: 200 and an ``experiments`` list for any GET."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's hook)
        body = json.dumps({"experiments": [], "status": "OK"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_up_refuses_an_mlflow_port_held_by_another_server(own_stack):
    folder, groups = own_stack
    first = stack.up(folder)
    groups.update({first["mlflow"]["pid"], first["s3"]["pid"]})
    port = int(first["mlflow"]["tracking_uri"].rsplit(":", 1)[1])
    os.killpg(first["mlflow"]["pid"], signal.SIGKILL)  # MLflow gone, S3 still up: `up` keeps the ports it recorded
    _wait_until(lambda: _free(port), "the MLflow port should be free")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _AnswersLikeMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = cli("stack", "up", "--dir", str(folder), check=False)
    finally:
        server.shutdown()
        server.server_close()
    line = one_error_line(proc, 1, contains=f"port {port} on 127.0.0.1 is in use by pid {os.getpid()}", alone=True)
    assert "MLflow server" in line and '"running": true' not in proc.stdout
    commands = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [c for c in commands if "mlflow server" in c and str(folder) in c]  # nothing half-started is left
    assert _free(port)  # and no server of ours took the port once the foreign one stopped
    assert not stack.status(folder)["mlflow"]["serving"]


def test_final_validation_is_logged_once_at_step_epochs_plus_one(trained):
    client = tracking.client()
    for step, epochs in (("teacher", 1), ("student", 1), ("kd", 2)):
        run_id = trained[step]["mlflow_run_id"]
        for key in client.get_run(run_id).data.metrics:
            steps = [m.step for m in client.get_metric_history(run_id, key)]
            assert len(steps) == len(set(steps)), (step, key, steps)
        final = client.get_metric_history(run_id, tracking.metric_name("metrics/mAP50-95(B)"))
        assert sorted(m.step for m in final) == list(range(1, epochs + 2)), step  # epochs, then best.pt


def quiet_stdout(proc) -> None:
    """Assert a refused command printed nothing on stdout: no Ultralytics banner, colour, argument dump or help."""
    lines = [line for line in proc.stdout.splitlines() if line.strip() and not line.startswith(SETTINGS_NOTICE)]
    assert "\x1b[" not in proc.stdout and not lines, proc.stdout[:2000]


TINY_CLI = ("--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu")


def test_teacher_refused_by_the_trainer_leaves_no_folder_and_prints_only_the_error(tmp_path):
    teacher, out = tmp_path / "missing.pt", tmp_path / "new" / "run"
    proc = cli("distill", "--data", str(TASK_DATA["detect"]), "--student", "yolov8n.yaml", "--teacher", str(teacher),
               *TINY_CLI, "--out", str(out), check=False)  # fmt: skip
    one_error_line(proc, 2, contains="missing.pt' not found", alone=True)
    quiet_stdout(proc)
    assert not (tmp_path / "new").exists()  # the run created it (args.yaml, weights/): the refusal removed it


def test_refusal_into_an_existing_folder_leaves_it_as_it_was(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    before = {"args.yaml": b"epochs: 7\n", "results.csv": b"epoch,loss\n1,0.5\n", "notes.txt": b"mine"}
    for name, data in before.items():
        (out / name).write_bytes(data)
    proc = cli("distill", "--data", str(TASK_DATA["detect"]), "--student", "yolov8n.yaml", "--teacher",
               "yolov8s.yaml", "--layers", "1,2,99", *TINY_CLI, "--out", str(out), check=False)  # fmt: skip
    one_error_line(proc, 2, contains="student layer 99 does not exist", alone=True)
    quiet_stdout(proc)
    assert {p.name: p.read_bytes() for p in Path(out).iterdir()} == before  # no weights/, nothing rewritten


def test_unknown_ultralytics_argument_prints_no_help_text(tmp_path):
    proc = cli("train", "--data", str(TASK_DATA["detect"]), "--model", "yolov8n.yaml", *TINY_CLI,
               "--out", str(tmp_path / "run"), "foo=1", check=False)  # fmt: skip
    one_error_line(proc, 2, contains="'foo' is not a valid YOLO argument", alone=True)
    quiet_stdout(proc)
    assert not (tmp_path / "run").exists()
