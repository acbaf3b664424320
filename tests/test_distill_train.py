"""Real 1-epoch distillation runs on the tiny coco8 sets: every task, every feature loss, online/offline, resume."""

from __future__ import annotations

import json
import math
from copy import deepcopy

import polars as pl
import pytest
import torch
from conftest import DATA, STUDENT, TASK_DATA, TEACHER, TINY, TINY_FLAGS, cli, fresh_process_check
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils.torch_utils import unwrap_model

from distill import DistillConfig, distill
from distill.engine.model import KDModel

IMAGE = DATA / "coco8" / "images" / "val" / "000000000036.jpg"


class Snapshots:
    """Callbacks recording the KD model's adapters/teacher when training starts and ends."""

    def __init__(self):
        self.start: dict = {}
        self.end: dict = {}

    def _take(self, trainer) -> dict:
        model = unwrap_model(trainer.model)
        assert isinstance(model, KDModel)
        return {
            "connectors": deepcopy(model.connectors.state_dict()),
            "feature_losses": deepcopy(model.feature_losses.state_dict()),
            "teacher": {k: v.detach().clone() for k, v in model.teacher_model.state_dict().items()},
        }

    def callbacks(self) -> dict:
        return {
            "on_pretrain_routine_end": [lambda t: self.start.update(self._take(t))],
            "on_train_end": [lambda t: self.end.update(self._take(t))],
        }


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def kd_columns(results_csv) -> dict[str, float]:
    df = pl.read_csv(results_csv)
    return {c: float(df[c][-1]) for c in df.columns if c.startswith("train/") and c.split("/")[1] in KD_NAMES}


KD_NAMES = {"cwd_loss", "mgd_loss", "mimic_loss", "ncwd_loss", "pkd_loss", "logit_loss", "teacher_loss"}


@pytest.mark.parametrize(
    ("loss", "task"),
    # The default feature loss on every task; each other loss on one task of its own (the feature losses read the
    # neck's maps, which every task has alike; the task-specific part is the logit terms, built on every run).
    [("mimic", "detect"), ("mimic", "segment"), ("mimic", "pose"), ("cwd", "segment"), ("mgd", "pose")],
)
def test_distill_each_task_and_feature_loss(tmp_path, teachers, task, loss):
    snaps = Snapshots()
    cfg = DistillConfig(teacher=str(teachers[task]), loss=loss, logit=True)
    run = distill(TASK_DATA[task], STUDENT[task], cfg, out=tmp_path / "kd", callbacks=snaps.callbacks(), **TINY)

    cols = kd_columns(run.results_csv)
    assert set(cols) == {f"train/{loss}_loss", "train/logit_loss"}
    assert all(v > 0 for v in cols.values()), cols
    assert changed(snaps.start["connectors"], snaps.end["connectors"]), "adapters were not trained"
    if loss == "mgd":
        assert changed(snaps.start["feature_losses"], snaps.end["feature_losses"]), "MGD generators were not trained"
    assert not changed(snaps.start["teacher"], snaps.end["teacher"]), "offline teacher changed"

    plan = json.loads(run.distill_json.read_text())
    assert plan["mode"] == "offline" and plan["config"]["loss"] == loss and len(plan["pairs"]) == 3
    # logit_conf_weight left empty resolves per task, and the run records what it used: on for pose (tiger keypoints)
    assert plan["config"]["logit_conf_weight"] is (task == "pose")
    assert set(plan["logit_terms"].values()) == {"mse-conf" if task == "pose" else "mse"}
    assert run.best.is_file() and run.last.is_file()

    check = fresh_process_check(run.best, task, STUDENT[task], IMAGE)
    assert check["distill_imported"] is False
    assert check["task"] == task and check["n_results"] == 1 and check["boxes"]
    assert check["same_keys"], check["extra"]


def test_online_mode_trains_the_teacher_and_saves_it(tmp_path, teachers):
    snaps = Snapshots()
    cfg = DistillConfig(teacher=str(teachers["detect"]), loss="cwd", online=True)
    run = distill(TASK_DATA["detect"], STUDENT["detect"], cfg, out=tmp_path / "kd", callbacks=snaps.callbacks(), **TINY)

    assert kd_columns(run.results_csv)["train/teacher_loss"] > 0
    assert changed(snaps.start["teacher"], snaps.end["teacher"]), "online teacher was not trained"
    assert run.teacher is not None and run.teacher.name == "teacher.pt"
    original = load_checkpoint(teachers["detect"])[0].state_dict()
    saved = load_checkpoint(run.teacher)[0].state_dict()
    assert set(saved) == set(original)
    assert any(
        not torch.allclose(saved[k].float(), original[k].float()) for k in original if original[k].is_floating_point()
    )
    check = fresh_process_check(run.teacher, "detect", TEACHER["detect"], IMAGE)
    assert check["same_keys"] and check["distill_imported"] is False


def test_resume_restores_adapters_and_generators(tmp_path, teachers):
    cfg = DistillConfig(teacher=str(teachers["detect"]), loss="mgd")
    first = distill(
        TASK_DATA["detect"], STUDENT["detect"], cfg, out=tmp_path / "kd", save_period=1, **{**TINY, "epochs": 2}
    )
    interrupted = first.save_dir / "weights" / "epoch0.pt"  # saved mid-run, before the final strip: a preemption point
    saved = load_checkpoint(interrupted)[0]
    assert isinstance(saved, KDModel)

    snaps = Snapshots()
    resumed = distill(None, None, resume=interrupted, callbacks=snaps.callbacks())
    for part in ("connectors", "feature_losses"):
        expected = getattr(saved, part).state_dict()
        for k, v in snaps.start[part].items():
            assert torch.equal(v.float(), expected[k].float()), f"{part}.{k} not restored"
    df = pl.read_csv(resumed.results_csv)
    assert df["epoch"].to_list()[-1] == 2  # continued into the second epoch
    assert df["train/mgd_loss"][-1] > 0


class PoisonEpoch:
    """Makes the KD loss NaN for the first try of epoch 1 (a diverging step), then leaves the run alone."""

    def __init__(self) -> None:
        self.weight: float | None = None
        self.recovered_parts: dict[str, dict] = {}

    def callbacks(self) -> dict[str, list]:
        return {"on_train_epoch_start": [self.start], "on_train_batch_start": [self.batch]}

    def start(self, trainer) -> None:
        model = unwrap_model(trainer.model)
        if trainer.nan_recovery_attempts and self.weight is not None:  # Ultralytics reloaded last.pt: redo the epoch
            model.logit_weight, self.weight = self.weight, None
            self.recovered_parts = {"connectors": deepcopy(model.connectors.state_dict())}

    def batch(self, trainer) -> None:
        model = unwrap_model(trainer.model)
        if trainer.epoch == 1 and not trainer.nan_recovery_attempts and self.weight is None:
            self.weight, model.logit_weight = model.logit_weight, float("nan")


def test_a_nan_loss_under_kd_recovers_from_last_pt_with_the_kd_parts(tmp_path, teachers):
    """Ultralytics' NaN recovery reloads last.pt's EMA into the model: the student *and* our adapters (projector)."""
    poison = PoisonEpoch()
    cfg = DistillConfig(teacher=str(teachers["detect"]), loss="mgd")
    run = distill(TASK_DATA["detect"], STUDENT["detect"], cfg, out=tmp_path / "kd", callbacks=poison.callbacks(),
                  **{**TINY, "epochs": 3})  # fmt: skip
    df = pl.read_csv(run.results_csv)
    assert df["epoch"].to_list() == [1, 2, 3] and all(math.isfinite(v) for v in df["train/logit_loss"].to_list())
    assert poison.recovered_parts, "the NaN epoch was not recovered"
    last_good = load_checkpoint(run.save_dir / "weights" / "last.pt")[0]  # stripped at the end: the student only
    assert not isinstance(last_good, KDModel) and poison.weight is None


def test_cli_distill_writes_the_documented_layout(tmp_path, teachers):
    out = tmp_path / "cli"
    proc = cli(
        "distill",
        "--data",
        str(TASK_DATA["detect"]),
        "--student",
        "yolov8n.yaml",
        "--teacher",
        str(teachers["detect"]),
        "--loss",
        "cwd",
        *TINY_FLAGS,
        "--out",
        str(out),
        "plots=False",
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for rel in ("weights/best.pt", "weights/last.pt", "results.csv", "distill.json"):
        assert (out / rel).is_file(), rel
    assert result["best"] == str(out / "weights" / "best.pt")
    assert kd_columns(out / "results.csv")["train/cwd_loss"] > 0
    plan = json.loads((out / "distill.json").read_text())
    assert [p["adapter"] for p in plan["pairs"]] == ["conv1x1 64->128", "conv1x1 128->256", "conv1x1 256->512"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "kl"], "loss must be one of cwd, mgd, mimic, ncwd, pkd, none, got 'kl'"),
        (["--layers", "15,18,99"], "student layer 99 does not exist"),
        (["--layers", "abc"], "layers='abc' is neither a preset"),
        (["lr00=0.1"], "'lr00' is not a valid YOLO argument"),
    ],
)
def test_cli_bad_input_is_one_clear_error_and_nonzero_exit(tmp_path, teachers, args, message):
    proc = cli(
        "distill",
        "--data",
        str(TASK_DATA["detect"]),
        "--student",
        "yolov8n.yaml",
        "--teacher",
        str(teachers["detect"]),
        *TINY_FLAGS,
        "--out",
        str(tmp_path / "bad"),
        *args,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_data_and_teacher_are_named(tmp_path):
    proc = cli(
        "distill", "--data", str(tmp_path / "nope.yaml"), "--student", "yolov8n.yaml", "--teacher", "t.pt", check=False
    )
    assert proc.returncode == 2 and "nope.yaml' not found" in proc.stderr
    proc = cli("train", "--data", str(TASK_DATA["detect"]), "--model", str(tmp_path / "w.pt"), check=False)
    assert proc.returncode == 2 and "w.pt' not found" in proc.stderr


def test_distill_off_epochs_stops_kd_for_the_last_epochs(tmp_path):
    cfg = DistillConfig(teacher=TEACHER["detect"], loss="cwd", distill_off_epochs=1)
    run = distill(TASK_DATA["detect"], STUDENT["detect"], cfg, out=tmp_path / "kd", **{**TINY, "epochs": 2})
    df = pl.read_csv(run.results_csv)
    assert df["train/cwd_loss"].to_list()[0] > 0 and df["train/logit_loss"].to_list()[0] > 0
    assert df["train/cwd_loss"].to_list()[1] == 0 and df["train/logit_loss"].to_list()[1] == 0


@pytest.mark.parametrize(("student", "teacher"), [("yolo11n.yaml", "yolo11s.yaml"), ("yolo26n.yaml", "yolo26s.yaml")])
def test_yolo11_and_yolo26_pairs_distil(tmp_path, student, teacher):
    config = DistillConfig(teacher=teacher, loss="cwd", logit=True)
    run = distill(TASK_DATA["detect"], student, config, out=tmp_path / "kd", **TINY)
    cols = kd_columns(run.results_csv)
    assert cols["train/cwd_loss"] > 0 and cols["train/logit_loss"] > 0


def test_pkd_with_the_kl_logit_loss_trains(tmp_path):
    cfg = DistillConfig(teacher=TEACHER["detect"], loss="pkd", logit_loss="kl")
    run = distill(TASK_DATA["detect"], STUDENT["detect"], cfg, out=tmp_path / "kd", **TINY)
    cols = kd_columns(run.results_csv)
    assert set(cols) == {"train/pkd_loss", "train/logit_loss"}
    assert all(math.isfinite(v) and v > 0 for v in cols.values()), cols
    plan = json.loads(run.distill_json.read_text())
    assert plan["config"]["loss"] == "pkd" and plan["config"]["feat_weight"] == 10.0
    assert plan["logit_loss"] == "kl" and plan["logit_terms"] == {"boxes": "ld-kl", "scores": "binary-kl"}
    assert run.best.is_file()
