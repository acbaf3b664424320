"""The Python API configures Ultralytics offline by itself (env, a local font, integrations off) on first use, in a
clean process, while `import distill` stays light, so `--help` and argument errors never wait for torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_the_api_configures_ultralytics_offline_on_first_use(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_", "MLFLOW_DISABLE"))}
    env["HOME"] = str(tmp_path)  # a user who never set anything up
    code = """
import json, os, sys
import distill
light = not any(m in sys.modules for m in ("torch", "ultralytics"))
distill.train  # the API: configures Ultralytics (distill.configure), then loads it
from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
from ultralytics.utils.checks import check_font
print(json.dumps({
    "light": light, "offline": os.environ["YOLO_OFFLINE"], "config_dir": os.environ["YOLO_CONFIG_DIR"],
    "user_dir": str(USER_CONFIG_DIR), "font": str(check_font("Arial.ttf")),
    "unicode_font": str(check_font("Arial.Unicode.ttf")),
    "integrations": {k: SETTINGS[k] for k in ("mlflow", "sync", "tensorboard", "wandb", "comet", "clearml")},
    "mlflow_telemetry": os.environ.get("MLFLOW_DISABLE_TELEMETRY"),
}))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["light"] is True
    assert info["offline"] == "1"
    assert info["config_dir"].startswith(str(tmp_path))
    assert info["user_dir"].startswith(info["config_dir"])
    assert info["font"].startswith(info["user_dir"]) and info["unicode_font"].startswith(info["user_dir"])
    assert not any(info["integrations"].values())
    assert info["mlflow_telemetry"] == "true"  # MLflow's usage telemetry posts to the internet and writes ~/.config


def test_help_and_argument_errors_do_not_import_torch():
    code = """
import contextlib, io, json, sys
from distill.cli import main
out = io.StringIO()
codes = []
for argv in (["--help"], ["distill", "--help"], ["pipeline", "compile", "--help"], ["distill", "--loss", "bad"]):
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(argv)
        except SystemExit as e:
            codes.append(e.code)
heavy = sorted(m for m in ("torch", "ultralytics", "kfp", "mlflow") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy,
                  "markup": [t for t in ("``", ":mod:", ":func:") if t in out.getvalue()]}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"codes": [0, 0, 0, 2], "heavy": [], "markup": []}
