"""`import distill` alone makes Ultralytics offline: env, a local font, integrations off — in a clean process."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_import_configures_ultralytics_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_"))}
    env["HOME"] = str(tmp_path)  # a user who never set anything up
    code = """
import json, os
import distill
from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
from ultralytics.utils.checks import check_font
print(json.dumps({
    "offline": os.environ["YOLO_OFFLINE"], "config_dir": os.environ["YOLO_CONFIG_DIR"],
    "user_dir": str(USER_CONFIG_DIR), "font": str(check_font("Arial.ttf")),
    "unicode_font": str(check_font("Arial.Unicode.ttf")),
    "integrations": {k: SETTINGS[k] for k in ("mlflow", "sync", "tensorboard", "wandb", "comet", "clearml")},
}))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["offline"] == "1"
    assert info["config_dir"].startswith(str(tmp_path))
    assert info["user_dir"].startswith(info["config_dir"])
    assert info["font"].startswith(info["user_dir"]) and info["unicode_font"].startswith(info["user_dir"])
    assert not any(info["integrations"].values())
