"""DDP guarantees on CPU: KD settings survive Ultralytics' DDP re-instantiation; gloo ranks agree after a step.

Ultralytics only launches DDP on accelerators, so the two halves of its DDP path are tested separately with the real
pieces: its launcher file (``generate_ddp_file``) and a 2-process gloo group wrapping our model as its trainer does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
from conftest import STUDENT, TASK_DATA, free_port
from ultralytics.utils import callbacks as ul_callbacks
from ultralytics.utils.dist import generate_ddp_file

from distill import DistillConfig
from distill.engine.trainer import DistillCallbacks, DistillDetectionTrainer

HERE = Path(__file__).parent


def test_kd_settings_survive_the_ddp_launcher_file(tmp_path):
    config = DistillConfig(teacher="yolov8s.yaml", loss="mgd", layers="15,18,21", feat_weight=0.5, schedule="cosine")
    overrides = {
        "model": STUDENT["detect"],
        "data": str(TASK_DATA["detect"]),
        "epochs": 1,
        "imgsz": 64,
        "batch": 4,
        "device": "cpu",
        "plots": False,
        "workers": 0,
        "project": str(tmp_path),
        "name": "ddp",
        "exist_ok": True,
    }
    trainer = DistillDetectionTrainer(
        overrides=overrides, _callbacks=DistillCallbacks(config).attach(ul_callbacks.get_default_callbacks())
    )
    trainer.model = trainer.get_model(cfg=STUDENT["detect"], verbose=False)  # what YOLO.train() hands the launcher
    script = Path(generate_ddp_file(trainer))
    try:
        # Run the very script each DDP rank would run (here as one CPU process): it re-creates the trainer from the
        # cloudpickled type, args, model and callbacks only, then trains.
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        script.unlink(missing_ok=True)
        script.with_suffix(".pt").unlink(missing_ok=True)
    save_dir = tmp_path / "ddp"
    plan = json.loads((save_dir / "distill.json").read_text())
    assert plan["config"] == config.for_task("detect").to_dict()  # as given, the task's defaults resolved
    df = pl.read_csv(save_dir / "results.csv")
    assert df["train/mgd_loss"][-1] > 0 and df["train/logit_loss"][-1] > 0


def test_two_gloo_ranks_have_nonzero_kd_and_identical_adapters(tmp_path):
    out = tmp_path / "ddp.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(HERE / "ddp_worker.py"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # torchrun's log folder: here, not the system's temp folder
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert len(report["kd"]) == 2
    for rank_items in report["kd"]:
        assert rank_items["mgd_loss"] > 0 and rank_items["logit_loss"] > 0
    assert report["kd"][0] != report["kd"][1]  # the ranks really saw different data
    assert report["adapters_moved"] and report["adapters_equal"] and report["teacher_frozen"]
