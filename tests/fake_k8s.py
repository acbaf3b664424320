"""A stand-in for what cannot exist here: a Kubernetes API server with Kubeflow Trainer installed.

It answers the calls the ``kubeflow`` SDK makes (runtimes, TrainJobs, pods, pod logs) over real HTTP, so the SDK's
own code builds, submits and watches the job. Its "controller" runs a created TrainJob the way Kubeflow Trainer's
torch plugin does: one process per node running the job's command and args, with the trainer environment, the
secrets the runtime patch names resolved from :attr:`FakeCluster.secrets`, and the ``PET_*`` variables ``torchrun``
reads (nodes, processes per node, node rank, master address and port). Each node runs in its own folder (pods share
no filesystem). The job turns Complete when every node exits 0, else Failed with the failing node's last log line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from conftest import free_port

GROUP = "/apis/trainer.kubeflow.org/v1alpha1"
#: The torch-distributed ClusterTrainingRuntime as Kubeflow Trainer's manifests install it.
RUNTIME = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
        "template": {
            "spec": {
                "replicatedJobs": [
                    {
                        "name": "node",
                        "template": {
                            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                            "spec": {
                                "template": {
                                    "spec": {"containers": [{"name": "node", "image": "pytorch/pytorch:2.7.1"}]}
                                }
                            },
                        },
                    }
                ]
            }
        },
    },
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeCluster(ThreadingHTTPServer):
    """The API server and the Trainer controller. ``run_jobs=False`` only records the jobs (spec tests)."""

    def __init__(self, workdir: Path, secrets: dict[str, dict[str, str]], node_env: list[dict[str, str]] | None = None,
                 run_jobs: bool = True) -> None:  # fmt: skip
        self.workdir = workdir
        self.secrets = secrets
        self.node_env = node_env or []
        self.run_jobs = run_jobs
        self.jobs: dict[str, dict] = {}
        self.created: list[dict] = []  # every TrainJob body as the SDK posted it
        self.deleted: list[str] = []
        self.nodes: dict[str, list[dict]] = {}  # job -> [{"proc", "log", "phase"}]
        super().__init__(("127.0.0.1", 0), _Api)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def kubeconfig(self, path: Path, namespace: str = "team-a") -> Path:
        """Write a kube-config pointing at this server (what the SDK loads outside a cluster)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": namespace}}],
        }))  # fmt: skip
        return path

    # -- the controller ----------------------------------------------------------------------------------------------
    def start(self, job: dict) -> None:
        name, trainer = job["metadata"]["name"], job["spec"]["trainer"]
        env = {e["name"]: e["value"] for e in trainer.get("env", [])}
        for patch in job["spec"].get("runtimePatches", []):
            pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
            for container in pod["template"]["spec"].get("containers", []):
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    env[var["name"]] = self.secrets[ref["name"]][ref["key"]] if ref else var["value"]
        nodes, port, runs = trainer["numNodes"], free_port(), []
        for rank in range(nodes):
            folder = self.workdir / name / f"node-{rank}"
            folder.mkdir(parents=True, exist_ok=True)
            pet = {"PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(rank),
                   "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}  # fmt: skip
            extra = self.node_env[rank] if rank < len(self.node_env) else {}
            log = folder / "log.txt"
            path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the image's torchrun
            # TMPDIR: a pod's temp folder is its own (torchrun's log folder goes there, not into this machine's /tmp)
            proc = subprocess.Popen(
                trainer["command"] + trainer["args"],
                cwd=folder,
                env={**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder), **env, **pet, **extra},
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            runs.append({"proc": proc, "log": log})
        self.nodes[name] = runs
        threading.Thread(target=self._watch, args=(name,), daemon=True).start()

    def _watch(self, name: str) -> None:
        runs = self.nodes[name]
        for run in runs:
            run["proc"].wait()
        failed = [(i, r) for i, r in enumerate(runs) if r["proc"].returncode != 0]
        if failed:
            rank, run = failed[0]
            last = [ln for ln in run["log"].read_text(errors="replace").splitlines() if ln.startswith("error:")]
            condition = {"type": "Failed", "status": "True", "reason": "NodeFailed",
                         "message": f"node-{rank} exited {run['proc'].returncode}: {(last or ['?'])[-1]}"}  # fmt: skip
        else:
            condition = {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "done"}
        self.jobs[name]["status"] = {"conditions": [{**condition, "lastTransitionTime": _now()}]}

    def stop_all(self) -> None:
        for runs in self.nodes.values():
            for run in runs:
                if run["proc"].poll() is None:
                    os.killpg(run["proc"].pid, 9)

    # -- API views ---------------------------------------------------------------------------------------------------
    def pods(self, name: str) -> list[dict]:
        runs = self.nodes.get(name, [])
        out = []
        for rank, run in enumerate(runs):
            code = run["proc"].poll()
            phase = "Running" if code is None else ("Succeeded" if code == 0 else "Failed")
            out.append({
                "metadata": {"name": f"{name}-node-0-{rank}", "creationTimestamp": _now(), "labels": {
                    "jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
                    "batch.kubernetes.io/job-completion-index": str(rank)}},
                "spec": {"containers": [{"name": "node", "image": "x", "resources": {}}]},
                "status": {"phase": phase},
            })  # fmt: skip
        return out

    def run_of(self, pod: str) -> dict | None:
        """The node process behind a pod name (``<job>-node-0-<rank>``, as :meth:`pods` names them), if any."""
        match = re.match(r"(.+)-node-0-(\d+)$", pod)
        runs = self.nodes.get(match.group(1), []) if match else []
        return runs[int(match.group(2))] if runs else None

    def running(self, pod: str) -> bool:
        run = self.run_of(pod)
        return run is not None and run["proc"].poll() is None

    def log_of(self, pod: str) -> str:
        run = self.run_of(pod)
        return run["log"].read_text(errors="replace") if run else ""


class _Api(BaseHTTPRequestHandler):
    server: FakeCluster

    def _send(self, status: int, body: dict | str) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _follow(self, pod: str) -> None:
        """Stream a pod's log as it grows until its process exits (``follow=true``; the body ends at close)."""
        import time

        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        sent = 0
        while True:
            running = self.server.running(pod)
            text = self.server.log_of(pod).encode()
            self.wfile.write(text[sent:])
            self.wfile.flush()
            sent = len(text)
            if not running:
                return
            time.sleep(0.2)

    def _missing(self) -> None:
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        path, s = url.path, self.server
        if path.endswith("/configmaps/kubeflow-trainer-public"):
            return self._send(200, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                                    "data": {"kubeflow_trainer_version": "2.1.0"}})  # fmt: skip
        if path == f"{GROUP}/clustertrainingruntimes/torch-distributed":
            return self._send(200, RUNTIME)
        if m := re.fullmatch(rf"{GROUP}/namespaces/[^/]+/trainjobs/([^/]+)", path):
            job = s.jobs.get(m.group(1))
            return self._send(200, job) if job else self._missing()
        if re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", path):
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            name = re.search(r"jobset-name=([^,]+)", selector)
            return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                                    "items": s.pods(name.group(1)) if name else []})  # fmt: skip
        if m := re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)/log", path):
            if parse_qs(url.query).get("follow") == ["true"]:
                return self._follow(m.group(1))
            return self._send(200, s.log_of(m.group(1)))
        return self._missing()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        m = re.fullmatch(rf"{GROUP}/namespaces/([^/]+)/trainjobs", urlparse(self.path).path)
        if not m:
            return self._missing()
        self.server.created.append(json.loads(json.dumps(body)))
        body["metadata"].update({"namespace": m.group(1), "creationTimestamp": _now()})
        self.server.jobs[body["metadata"]["name"]] = body
        if self.server.run_jobs:
            self.server.start(body)
        return self._send(201, body)

    def do_DELETE(self) -> None:  # noqa: N802
        m = re.fullmatch(rf"{GROUP}/namespaces/[^/]+/trainjobs/([^/]+)", urlparse(self.path).path)
        if not m or m.group(1) not in self.server.jobs:
            return self._missing()
        self.server.jobs.pop(m.group(1))
        self.server.deleted.append(m.group(1))
        return self._send(200, {"kind": "Status", "status": "Success"})

    def log_message(self, *args) -> None:  # quiet
        pass
