"""Two simulated nodes on this machine: ``torchrun --nnodes 2 --nproc_per_node 1`` twice, static rendezvous, gloo.

Each simulated node runs in its own working folder, with its own copy of the data, its own cache and scratch
folders and a relative ``--out`` (pods share no filesystem), so any assumption that ranks see each other's files
fails here as it would on a cluster. Every launch is wrapped in a timeout: a surviving torchrun agent waits minutes
for a dead peer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import pytest
from conftest import TASK_DATA, free_port

LAUNCH_TIMEOUT_S = 600


def start_nodes(args: list[str], folders: list[Path], envs: list[dict[str, str]]) -> list[subprocess.Popen]:
    """Start one torchrun agent per simulated node (node rank = list index), each in its own folder."""
    port = str(free_port())
    procs = []
    for rank, (folder, env) in enumerate(zip(folders, envs, strict=True)):
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", port,
               "--rdzv_backend", "static", "-m", "distill", *args]  # fmt: skip
        log = open(folder / f"node{rank}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=folder,
                env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder), **env},  # torchrun logs here
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every simulated node: its torchrun agent and the ranks it started (in sessions of their own)."""
    import psutil

    for p in procs:
        try:
            tree = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=60)
    for p in procs:
        p.wait(timeout=60)


def wait_nodes(procs: list[subprocess.Popen], folders: list[Path], timeout: float = LAUNCH_TIMEOUT_S) -> list[str]:
    """Wait for every node to exit (killing all on timeout); return each node's log, asserting exit status 0."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stop(procs)
        logs = [(f / f"node{i}.log").read_text(errors="replace")[-3000:] for i, f in enumerate(folders)]
        raise AssertionError(f"two-node launch timed out after {timeout} s:\n" + "\n----\n".join(logs)) from None
    logs = [(f / f"node{i}.log").read_text(errors="replace") for i, f in enumerate(folders)]
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"node {rank} exited {p.returncode}:\n{log[-4000:]}"
    return logs


def last_json(log: str) -> dict:
    """The last JSON object a node printed (the command's result)."""
    return json.loads(next(line for line in reversed(log.splitlines()) if line.startswith("{")))


def node_folders(tmp_path: Path) -> list[Path]:
    """Two node folders, each with its own copy of coco8 (Ultralytics writes label caches next to the data)."""
    folders = [tmp_path / f"node{i}" for i in range(2)]
    for folder in folders:
        shutil.copytree(TASK_DATA["detect"].parent, folder / "coco8")
    return folders


def test_two_nodes_distill_from_the_cli(tmp_path):
    folders = node_folders(tmp_path)
    args = ["distill", "--data", "coco8/data.yaml", "--student", "yolov8n.yaml", "--teacher", "yolov8s.yaml",
            "--loss", "cwd", "--epochs", "2", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--out", "runs/kd",
            "plots=False"]  # fmt: skip
    logs = wait_nodes(start_nodes(args, folders, [{}, {}]), folders)
    results = [last_json(log) for log in logs]
    # Both ranks joined one group of two (a rank that did not train would leave the other waiting in all-reduce).
    assert [(r["rank"], r["world_size"]) for r in results] == [(0, 2), (1, 2)]
    run0, run1 = folders[0] / "runs" / "kd", folders[1] / "runs" / "kd"
    df = pl.read_csv(run0 / "results.csv")
    assert df.height == 2
    for column in ("train/box_loss", "train/cwd_loss", "train/logit_loss"):
        assert (df[column] > 0).all(), column
    assert results[0]["metrics"] and "metrics/mAP50-95(B)" in results[0]["metrics"]
    # Only rank 0 writes checkpoints and logs; rank 1 received best.pt for the final validation only.
    assert (run0 / "weights" / "last.pt").is_file() and (run0 / "distill.json").is_file()
    assert not (run1 / "weights" / "last.pt").exists() and not (run1 / "results.csv").exists()
    assert (run1 / "weights" / "best.pt").is_file()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ultralytics import YOLO; m = YOLO(sys.argv[1]); "
            "r = m.predict(sys.argv[2], imgsz=64, verbose=False); print(type(m.model).__name__, len(r))",
            str(run0 / "weights" / "best.pt"),
            str(folders[0] / "coco8" / "images" / "val"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # plain Ultralytics, no import of this package
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split() == ["DetectionModel", "4"]


class RecordingProxy(ThreadingHTTPServer):
    """An HTTP proxy in front of the S3 server that records every request method it forwards."""

    def __init__(self, upstream: str) -> None:
        target = urlparse(upstream)
        self.upstream = (target.hostname, target.port)
        self.methods: list[str] = []
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.server.methods.append(self.command)
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers))
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", response.getheader("Content-Length") or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def proxy(stack_env):
    server = RecordingProxy(stack_env["AWS_ENDPOINT_URL_S3"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_two_node_distill_step_is_killed_and_resumes_on_both_ranks(tmp_path, stack_env, datasets, proxy):
    from distill.data import storage

    run_id = "two-nodes"
    out = storage.parse_s3_uri(stack_env["YOLO_DISTILL_S3_PREFIX"]).join("runs", run_id, "distill")
    folders = [tmp_path / f"node{i}" for i in range(2)]
    envs = [
        {k: v for k, v in stack_env.items() if k != "STACK_DIR"} | {
            "YOLO_DISTILL_CACHE": str(folder / "cache"), "YOLO_DISTILL_WORKDIR": str(folder / "work")}
        for folder in folders
    ]  # fmt: skip
    # Node 1 reaches S3 only through the recording proxy and has no MLflow server at all: were it to track or
    # write anything, the step would fail or the proxy would show it.
    envs[1] |= {"AWS_ENDPOINT_URL_S3": proxy.url, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                "YOLO_DISTILL_MLFLOW_RETRIES": "0"}  # fmt: skip
    args = ["step", "distill", "--data", datasets["detect"]["uri"], "--teacher", "yolov8s.yaml", "--student",
            "yolov8n.yaml", "--run-id", run_id, "--epochs", "8", "--imgsz", "64", "--batch", "4", "--device", "cpu",
            "plots=False"]  # fmt: skip

    procs = start_nodes(args, folders, envs)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while storage.head(out.join("checkpoint", "last.pt")) is None:  # the first epoch's checkpoint, from rank 0
        assert all(p.poll() is None for p in procs), "a node ended before the first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.2)
    stop(procs)  # both nodes killed mid-run, as a preempted TrainJob
    assert storage.head(out.join("result.json")) is None

    logs = wait_nodes(start_nodes(args, folders, envs), folders)
    result = json.loads(storage.read_bytes(out.join("result.json")))
    assert result["resumed"] and result["world_size"] == 2 and result["nodes"] == 2
    assert last_json(logs[1]) == {"step": "distill", "run_id": run_id, "rank": 1, "world_size": 2, "resumed": True,
                                  "reused": False}  # fmt: skip
    assert set(proxy.methods) <= {"GET", "HEAD"} and "GET" in proxy.methods  # node 1 read its inputs, wrote nothing
    csv = folders[0] / "results.csv"
    storage.download_file(out.join("results.csv"), csv)
    df = pl.read_csv(csv)
    assert df["epoch"].to_list() == list(range(1, 9))  # the epoch count continued after the kill
    assert (df["train/mimic_loss"] > 0).all() and (df["train/logit_loss"] > 0).all()
