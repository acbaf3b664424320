"""The fast tier's guard (tests/conftest.py): a test marked ``fast`` cannot start a subprocess or a server or train.

``make test-fast`` (``pytest -m "fast and not slow"``) is the tier a change to a loss or a setting is checked with in
seconds; the guard keeps a slow test that is wrongly marked from creeping into it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.fast
def test_a_fast_test_cannot_spawn_listen_or_train():
    from ultralytics.engine.trainer import BaseTrainer

    with pytest.raises(AssertionError, match="marked fast starts a subprocess"):
        subprocess.run([sys.executable, "-c", "pass"])
    with socket.socket() as s, pytest.raises(AssertionError, match="marked fast starts a server"):
        s.bind(("127.0.0.1", 0))
        s.listen()
    with pytest.raises(AssertionError, match="marked fast trains a model"):
        BaseTrainer.train(object())


INNER = """
import subprocess, sys
import pytest


@pytest.fixture(scope="module")
def trained_once():
    from ultralytics.engine.trainer import BaseTrainer

    BaseTrainer.train(object())  # a module fixture that trains: caught at setup


@pytest.mark.fast
def test_spawns():
    subprocess.run([sys.executable, "-c", "pass"])


@pytest.mark.fast
def test_uses_the_stack(stack_env):
    pass


@pytest.mark.fast
def test_uses_a_module_fixture_that_trains(trained_once):
    pass


@pytest.mark.fast
def test_in_process():
    assert sum(range(4)) == 6


def test_unmarked_may_spawn():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def test_guard_fails_wrongly_marked_tests_and_leaves_the_others_alone(tmp_path: Path):
    """In a session of its own, with this suite's conftest: each wrongly marked test fails, naming why."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    fast: fast\n    slow: slow\n")
    (tmp_path / "test_inner.py").write_text(INNER)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "400"},  # summary lines in full
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    for outcome, test, why in [
        ("FAILED", "test_spawns", "marked fast starts a subprocess"),
        ("ERROR", "test_uses_the_stack", "marked fast uses stack_env"),
        ("ERROR", "test_uses_a_module_fixture_that_trains", "marked fast trains a model"),
    ]:
        line = next((x for x in out.splitlines() if x.startswith(f"{outcome} test_inner.py::{test} ")), "")
        assert why in line, out[-3000:]
    assert "PASSED test_inner.py::test_in_process" in out and "PASSED test_inner.py::test_unmarked_may_spawn" in out
    assert not (tmp_path / ".stack").exists()
