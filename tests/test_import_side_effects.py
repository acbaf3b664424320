"""`import distill` changes nothing; `distill.configure()` does what the import used to, once (issue 20, item 3).

Each check runs a probe in a fresh interpreter with the environment of a user who never set anything up (``PATH``,
and empty temp folders as HOME, TMPDIR and working folder): the probe snapshots its own environment and those
folders (every entry's size and mtime) around one statement and reports both snapshots. A positive control (the
same probe around ``import ultralytics``, which does write) shows the probe sees changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.offline import ENV_KEYS

PROBE = r"""
import json, os, sys, time
from pathlib import Path

roots = json.loads(sys.argv[1])

def tree():
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                info = Path(folder, name).lstat()
                found[os.path.join(folder, name)] = [info.st_size, info.st_mtime_ns]
    return found

def state():
    heavy = sorted(m for m in ("torch", "ultralytics", "matplotlib") if m in sys.modules)
    return {"env": dict(os.environ), "files": tree(), "heavy": heavy}

exec(sys.argv[2])  # setup, not observed
before = state()
start = time.perf_counter()
exec(sys.argv[3])  # the statement observed
seconds = time.perf_counter() - start
print(json.dumps({"before": before, "after": state(), "seconds": seconds}))
"""


def probe(tmp_path: Path, statement: str, setup: str = "", **env: str) -> dict:
    """Run ``statement`` in a clean interpreter; return the changes it made to the environment and the folders."""
    home, tmp, cwd = (tmp_path / name for name in ("home", "tmp", "cwd"))
    for folder in (home, tmp, cwd):
        folder.mkdir(exist_ok=True)
    roots = [str(home), str(tmp), str(cwd), *(v for k, v in env.items() if k == "YOLO_CONFIG_DIR")]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(roots), setup, statement],
        env={"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(tmp), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    before, after = report["before"], report["after"]
    return {
        "env": {k: after["env"].get(k) for k in set(before["env"]) | set(after["env"])
                if before["env"].get(k) != after["env"].get(k)},
        "files": sorted(k for k in set(before["files"]) | set(after["files"])
                        if before["files"].get(k) != after["files"].get(k)),
        "heavy": after["heavy"],
        "seconds": report["seconds"],
        "stderr": proc.stderr,
    }  # fmt: skip


SETTINGS_JSON = '{"settings_version": "0.0.8", "mlflow": true, "tensorboard": true, "sync": true}\n'


@pytest.mark.parametrize("where", ["default", "YOLO_CONFIG_DIR"])
def test_import_distill_changes_no_environment_no_file_and_not_the_ultralytics_settings(tmp_path, where):
    """The contract's check: with or without a settings file of the user's, ``import distill`` touches nothing."""
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "config")} if where == "YOLO_CONFIG_DIR" else {}
    config = tmp_path / "config" if env else tmp_path / "home" / ".config"
    settings = config / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(SETTINGS_JSON)  # a user's settings, integrations on

    changed = probe(tmp_path, "import distill", **env)

    assert changed["env"] == {}
    assert changed["files"] == []
    assert changed["heavy"] == []  # nor does it import torch, Ultralytics or matplotlib, which would
    assert settings.read_text() == SETTINGS_JSON


def test_light_modules_change_nothing_either(tmp_path):
    """What the CLI's parsing and the package's light names load (``--help`` stays free of side effects too)."""
    statement = "import distill.cli, distill.config, distill.errors, distill.offline\nfrom distill import DistillConfig"
    changed = probe(tmp_path, statement)
    assert (changed["env"], changed["files"], changed["heavy"]) == ({}, [], [])


def test_the_probe_sees_what_importing_ultralytics_itself_writes(tmp_path):
    """Positive control: plain ``import ultralytics`` sets variables and writes its settings file, so the checks above
    would see a change if ``import distill`` made one (``YOLO_OFFLINE=1`` given beforehand: no network lookup)."""
    changed = probe(tmp_path, "import ultralytics", YOLO_OFFLINE="1")
    assert {"NUMEXPR_MAX_THREADS", "TORCH_CPP_LOG_LEVEL"} <= set(changed["env"])
    assert str(tmp_path / "home" / ".config" / "Ultralytics" / "settings.json") in changed["files"]


def test_configure_does_what_the_import_used_to(tmp_path):
    """Offline environment, a config dir of its own, the fonts, the integrations off in the persisted settings."""
    changed = probe(tmp_path, "import distill\ndistill.configure()")
    config_dir = tmp_path / "home" / ".cache" / "yolo-distill"
    user_dir = config_dir / "Ultralytics"
    assert changed["env"]["YOLO_OFFLINE"] == "1"
    assert changed["env"]["YOLO_CONFIG_DIR"] == str(config_dir)
    assert changed["env"]["ULTRALYTICS_SAFE_LOAD"] == "1"
    assert (user_dir / "Arial.ttf").is_file() and (user_dir / "Arial.Unicode.ttf").is_file()
    settings = json.loads((user_dir / "settings.json").read_text())
    assert not any(settings.get(k) for k in ("mlflow", "tensorboard", "wandb", "comet", "clearml", "sync", "hub"))
    assert not (tmp_path / "home" / ".config" / "Ultralytics").exists()  # the user's own folder stays untouched
    assert "RuntimeWarning" not in changed["stderr"]


def test_configure_is_idempotent_and_cheap_after_the_first_call(tmp_path):
    setup = "import distill\nfirst = distill.configure()"
    changed = probe(tmp_path, "assert distill.configure() == first", setup=setup)
    assert (changed["env"], changed["files"]) == ({}, [])
    assert changed["seconds"] < 0.05


def test_configure_respects_the_users_settings(tmp_path):
    """``YOLO_CONFIG_DIR`` and ``YOLO_OFFLINE`` of the user's are kept; the checkpoint opt-out wins."""
    config = tmp_path / "mine"
    changed = probe(
        tmp_path,
        "import distill\ndistill.configure()",
        YOLO_CONFIG_DIR=str(config),
        YOLO_OFFLINE="true",
        YOLO_DISTILL_TRUST_CHECKPOINTS="1",
        ULTRALYTICS_SAFE_LOAD="1",
    )
    assert {k: changed["env"].get(k) for k in ENV_KEYS} == {
        "YOLO_OFFLINE": None,  # None: unchanged
        "YOLO_CONFIG_DIR": None,
        "ULTRALYTICS_SAFE_LOAD": "0",
    }
    assert (config / "Ultralytics" / "Arial.ttf").is_file()


def test_configure_after_ultralytics_warns_and_still_switches_its_integrations_off(tmp_path):
    """Too late for what Ultralytics reads at import: say so, and still make the rest right where it looks."""
    code = (
        "import distill\ndistill.configure()\n"
        "from ultralytics.utils import SETTINGS, USER_CONFIG_DIR\n"
        "assert not SETTINGS['mlflow'] and (USER_CONFIG_DIR / 'Arial.ttf').is_file()"
    )
    changed = probe(tmp_path, code, setup="import ultralytics", YOLO_OFFLINE="1")
    assert "RuntimeWarning: distill.configure() ran after Ultralytics was imported" in changed["stderr"]
    assert "ULTRALYTICS_SAFE_LOAD" in changed["stderr"] and "YOLO_CONFIG_DIR" in changed["stderr"]
    assert "YOLO_CONFIG_DIR" not in changed["env"]  # DDP ranks started from here keep this process's folder


def test_the_cli_configures_before_a_command_that_runs_ultralytics(tmp_path):
    """``yolo-distill train`` on a missing dataset: refused, but Ultralytics was configured first."""
    changed = probe(tmp_path, "from distill.cli import main\nmain(['train', '--data', 'no.yaml', '--model', 'm.yaml'])")
    assert "error: " in changed["stderr"]
    assert changed["env"]["YOLO_OFFLINE"] == "1"
    assert (tmp_path / "home" / ".cache" / "yolo-distill" / "Ultralytics" / "Arial.ttf").is_file()
