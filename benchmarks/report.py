"""What every benchmark shares: the machine a report records, where it goes, its flags, the per-run process.

The machine and versions, the report's path, ``--results``/``--no-report``/``--worker``, and running one measurement
in a fresh Python process.

Reports are ``benchmarks/results/<name>-<date>.json``; a second run on the same day overwrites that day's file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine(device: str) -> dict[str, Any]:
    """Describe the machine and software a figure was measured on (CPU model, cores, memory, GPU, versions)."""
    import torch
    import ultralytics

    import distill

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    gpu = None
    if device not in ("cpu", "") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(int(str(device).split(",")[0]))
    return {
        "device": "cpu" if gpu is None else f"cuda:{device}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "yolo_distill": getattr(distill, "__version__", "unknown"),
        "commit": _commit(),
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def write(name: str, report: dict[str, Any], folder: Path = RESULTS) -> Path:
    """Write ``<folder>/<name>-<YYYY-MM-DD>.json`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def add_report_args(ap: argparse.ArgumentParser) -> None:
    """Add ``--results`` / ``--no-report`` and the hidden ``--worker JOB`` every benchmark script takes."""
    ap.add_argument("--results", type=Path, default=None, help="report folder (default: benchmarks/results)")
    ap.add_argument("--no-report", action="store_true", help="print the table, write no results file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)


def start(
    parser: argparse.ArgumentParser, argv: list[str] | None, worker: Callable[[str], None] | None = None
) -> argparse.Namespace | None:
    """Parse ``argv``, configure Ultralytics offline before it loads, and run a ``--worker`` job if that is the call.

    Every benchmark's ``main`` begins here; ``None`` means the worker job ran and ``main`` returns 0.
    """
    args = parser.parse_args(argv)
    import distill

    distill.configure()  # offline Ultralytics, before it loads (here and in the workers)
    if worker is not None and getattr(args, "worker", None):
        worker(args.worker)
        return None
    return args


def publish(args: argparse.Namespace, name: str, report: dict[str, Any]) -> None:
    """Write the report as ``<name>-<date>.json`` (unless ``--no-report``) and print where it went."""
    if not args.no_report:
        path = write(name, report, args.results or RESULTS)
        print(f"report: {path}")


def run_worker(module: str, job: dict[str, Any], job_file: Path, log: Path) -> int:
    """Write ``job`` to ``job_file`` and run ``python -m module --worker job_file`` with its output in ``log``.

    A fresh process per measurement keeps each run's state and peak memory its own. Returns the exit code.
    """
    job_file.write_text(json.dumps(job, indent=2) + "\n")
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--worker", str(job_file)],
            cwd=RESULTS.parent.parent, stdout=fh, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    return proc.returncode
