"""What every benchmark report records: the machine, the versions, and where the JSON goes.

Reports are ``benchmarks/results/<name>-<date>.json``; a second run on the same day overwrites that day's file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
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
