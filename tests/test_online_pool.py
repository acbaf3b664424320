"""``pool_targets="online"``: pool targets made on the student's view by the frozen or the mean teacher.

distill/engine/online_pool.py: the region marker through Ultralytics' own dataset, the targets made from a teacher's
decoded predictions with Ultralytics' NMS, the strong view; then real detect runs whose targets follow the mean
teacher as it moves and stay put with the frozen one.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

import distill
from distill import DistillConfig
from distill.engine.online_pool import PoolRegions, has_regions, online_batch, strong_view
from distill.engine.trainer import DistillCallbacks
from tests.conftest import STUDENT, TASK_DATA, TINY, cli, one_error_line
from tests.test_pool_training import LOW_CONF, make_pool

NC = 3


def _decoded(images: int, boxes: list[tuple[int, float, float, float, float, int, float]], anchors: int = 8):
    """Eval-mode predictions (images, 4 + NC, anchors), xywh pixels: an anchor per (image, cx, cy, w, h, cls, score)."""
    out = torch.zeros(images, 4 + NC, anchors)
    slot = [0] * images
    for i, cx, cy, w, h, c, score in boxes:
        out[i, :4, slot[i]] = torch.tensor([cx, cy, w, h])
        out[i, 4 + c, slot[i]] = score
        slot[i] += 1
    return out


def _batch(rows: list[tuple[int, int, float, float, float, float]], images: int = 2, size: int = 100) -> dict:
    """A training batch: rows (image, class, cx, cy, w, h) normalised xywh, as Ultralytics' collate makes them."""
    t = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    return {"img": torch.zeros(images, 3, size, size), "batch_idx": t[:, 0], "cls": t[:, 1:2], "bboxes": t[:, 2:]}


@pytest.mark.fast
def test_targets_are_made_in_the_pool_regions_only():
    # image 0: a labelled object (class 1) in its left half and a pool region on its right half; image 1: labelled
    batch = _batch([(0, 1, 0.25, 0.5, 0.2, 0.2), (0, 2 * NC, 0.75, 0.5, 0.5, 1.0), (1, 0, 0.5, 0.5, 0.4, 0.4)])
    decoded = _decoded(2, [
        (0, 80, 50, 10, 10, 2, 0.9),   # in the region: an object of class 2
        (0, 60, 20, 10, 10, 0, 0.15),  # in the region, between uncertain_conf and pseudo_conf: uncertain
        (0, 25, 50, 20, 20, 1, 0.95),  # on the labelled tile: the true label stands, no second target
        (0, 90, 90, 8, 8, 1, 0.05),    # in the region, below uncertain_conf: nothing
        (1, 50, 50, 40, 40, 0, 0.99),  # image 1 has no pool region
    ])  # fmt: skip
    out = online_batch(batch, decoded, NC, conf=0.25, low=0.1)
    rows = sorted(zip(out["batch_idx"].tolist(), out["cls"].view(-1).tolist(), strict=True))
    # the labelled object, the region's object, its uncertain one (class 0 + NC) and image 1's label; nothing else
    assert rows == [(0.0, 1.0), (0.0, 2.0), (0.0, float(NC)), (1.0, 0.0)]
    assert out["batch_idx"].tolist() == sorted(out["batch_idx"].tolist())  # rows by image, as the loss lays them out
    found = out["bboxes"][(out["batch_idx"] == 0) & (out["cls"].view(-1) == 2)]
    assert torch.allclose(found, torch.tensor([[0.8, 0.5, 0.1, 0.1]]), atol=1e-4)  # pixels back to normalised xywh
    labelled = out["bboxes"][out["batch_idx"] == 1]
    assert torch.allclose(labelled, batch["bboxes"][2:3])  # labelled rows unchanged


@pytest.mark.fast
def test_pose_targets_carry_the_teachers_keypoints_visible_from_its_confidence():
    batch = _batch([(0, 2 * NC, 0.5, 0.5, 1.0, 1.0), (1, 0, 0.5, 0.5, 0.4, 0.4)])
    batch["keypoints"] = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.5, 0.5, 2.0], [0.6, 0.6, 2.0]]])
    decoded = torch.zeros(2, 4 + NC + 6, 4)
    decoded[0, :4, 0] = torch.tensor([50.0, 50.0, 20.0, 20.0])
    decoded[0, 4 + 1, 0] = 0.9
    decoded[0, 4 + NC :, 0] = torch.tensor([40.0, 30.0, 0.9, 70.0, 80.0, 0.2])  # a seen keypoint, an unsure one
    out = online_batch(batch, decoded, NC, conf=0.25, low=0.1)
    assert out["batch_idx"].tolist() == [0.0, 1.0] and out["cls"].view(-1).tolist() == [1.0, 0.0]
    assert torch.allclose(out["keypoints"][0], torch.tensor([[0.4, 0.3, 2.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(out["keypoints"][1], batch["keypoints"][1])  # the labelled image's keypoints unchanged


@pytest.mark.fast
def test_segment_targets_get_the_teachers_masks_and_the_id_maps_are_remade():
    from distill.engine.online_pool import overlap_masks

    # image 0: a labelled object (id 1, left) and the pool region (id 2, right half); the teacher sees one object there
    batch = _batch([(0, 1, 0.25, 0.5, 0.2, 0.2), (0, 2 * NC, 0.75, 0.5, 0.5, 1.0)], images=1, size=32)
    ids = torch.zeros(1, 8, 8, dtype=torch.uint8)
    ids[0, :, 4:] = 2
    ids[0, 3:5, 1:3] = 1
    batch["masks"] = ids
    nm = 2
    decoded = torch.zeros(1, 4 + NC + nm, 4)
    decoded[0, :4, 0] = torch.tensor([24.0, 16.0, 8.0, 8.0])  # a box in the region (pixels of the 32-px image)
    decoded[0, 4 + 2, 0] = 0.9
    decoded[0, 4 + NC :, 0] = torch.tensor([1.0, 0.0])  # coefficients picking prototype 0
    proto = torch.zeros(1, nm, 8, 8)
    proto[0, 0] = 1.0  # positive everywhere: the mask is the box, cropped
    out = online_batch(batch, (decoded, proto), NC, conf=0.25, low=0.1)
    assert out["cls"].view(-1).tolist() == [1.0, 2.0]
    remade = out["masks"][0]
    assert (remade[3:5, 1:3] == 1).all()  # the labelled object keeps its pixels and its id (its row is first)
    assert set(remade[:, 4:].unique().tolist()) == {0, 2} and (remade[3:5, 5:7] == 2).all()  # the region is gone
    assert int((remade == 2).sum()) == 4  # the teacher's mask: its 8-px box at a quarter of the resolution
    kept = overlap_masks(ids, batch["batch_idx"], batch["cls"].view(-1) >= 2 * NC, {})
    assert set(kept[0].unique().tolist()) == {0, 1}  # no target: the region's pixels are cleared


@pytest.mark.fast
def test_a_batch_without_pool_regions_is_left_as_it_is():
    batch = _batch([(0, 1, 0.25, 0.5, 0.2, 0.2)])
    assert online_batch(batch, _decoded(2, [(0, 50, 50, 10, 10, 0, 0.9)]), NC, 0.25, 0.1) is batch
    assert has_regions(batch, NC).tolist() == [False, False]


@pytest.mark.fast
def test_the_strong_view_changes_only_the_images_with_pool_regions():
    torch.manual_seed(0)
    img = torch.rand(3, 3, 32, 32)
    which = torch.tensor([True, False, True])
    out = strong_view(img, which)
    assert torch.equal(out[1], img[1]) and not torch.equal(out[0], img[0]) and not torch.equal(out[2], img[2])
    assert out.min() >= 0 and out.max() <= 1 and out.shape == img.shape
    assert torch.equal(img, img.clone())  # the input is not changed in place


@pytest.mark.fast
def test_a_pool_image_becomes_one_region_and_a_labelled_one_stays():
    seen = []
    marker = PoolRegions(lambda label: seen.append(label) or label, "/data/pool/images", NC)
    label = {"im_file": "/data/pool/images/a.jpg", "cls": np.array([[1.0], [2.0]]), "bboxes": np.zeros((2, 4)),
             "segments": [], "normalized": True, "bbox_format": "xywh"}  # fmt: skip
    out = marker(label)
    assert out["cls"].tolist() == [[2.0 * NC]] and out["bboxes"].tolist() == [[0.5, 0.5, 1.0, 1.0]]
    other = {"im_file": "/data/train/images/b.jpg", "cls": np.array([[1.0]]), "bboxes": np.ones((1, 4))}
    assert marker(other)["cls"].tolist() == [[1.0]] and len(seen) == 2


def _target_recorder(record: list[dict]):
    """A callback that, at each epoch's end, makes the online targets of one fixed batch of pool images."""
    fixed: dict = {}

    def look(trainer):
        model = trainer.model
        if not fixed:
            dataset = trainer.train_loader.dataset
            pool = [i for i, f in enumerate(dataset.im_files) if "/pool/pseudo/images/" in f][:4]
            fixed.update(trainer.preprocess_batch(dataset.collate_fn([dataset[i] for i in pool])))
        with torch.no_grad():
            frozen = model.teacher_model(fixed["img"])
            source = model.target_teacher
            decoded = (source(fixed["img"]) if source is not None else frozen)[0]
            decoded = decoded[0] if isinstance(decoded, tuple) else decoded  # segment: (predictions, prototypes)
        record.append({"ema": source is not None, "decoded": decoded.clone(),
                       "in_model": any(source is m for m in model.modules()) if source is not None else False,
                       "trainer_ema": source is not None and source is trainer.ema.ema})  # fmt: skip

    return look


@pytest.mark.parametrize(
    ("task", "teacher_kind"), [("detect", "ema"), ("detect", "frozen"), ("segment", "ema"), ("pose", "ema")]
)
def test_online_targets_follow_the_mean_teacher_and_not_the_frozen_one(teachers, tmp_path, task, teacher_kind):
    """A real run: the mean teacher's targets move epoch by epoch after the burn-in; the frozen one's do not."""
    record: list[dict] = []
    pool = make_pool(task, tmp_path)
    config = DistillConfig(teacher=str(teachers[task]), pool_targets="online", pool_teacher=teacher_kind,
                           burn_in=1, ema_decay=0.5, pseudo_conf=0.01, uncertain_conf=0.001)  # fmt: skip
    # nbs = batch: an optimizer step (and a mean-teacher step) every batch, as coco8's 4 images make one batch
    run = distill.distill(TASK_DATA[task], STUDENT[task], config, out=tmp_path / "run", unlabeled=pool,
                          callbacks={"on_train_epoch_end": [_target_recorder(record)]},
                          **{**TINY, "epochs": 3, "close_mosaic": 0, "nbs": 4})  # fmt: skip
    assert [r["ema"] for r in record] == ([False, True, True] if teacher_kind == "ema" else [False] * 3)
    moved = [not torch.equal(a["decoded"], b["decoded"]) for a, b in zip(record, record[1:], strict=False)]
    assert moved == ([True, True] if teacher_kind == "ema" else [False, False])
    assert not any(r["in_model"] or r["trainer_ema"] for r in record)  # its own average, outside the model
    plan = json.loads((tmp_path / "run" / "distill.json").read_text())["config"]
    assert plan["pool_targets"] == "online" and plan["pool_teacher"] == teacher_kind
    assert run.pool["used"] == run.pool["pool"] - run.pool["leaked_into_val_test"] - run.pool["in_labelled_train"]
    from ultralytics import YOLO

    assert YOLO(str(run.best)).task == task and run.metrics  # a plain student, validated as usual


def test_auto_hands_over_once_the_student_reaches_the_teacher_on_val(teachers, tmp_path):
    """``pool_teacher="auto"``: the teacher's val fitness measured once; the mean teacher from the epoch reaching it."""
    record: list[dict] = []
    seen: dict[str, list] = {"fitness": [], "teacher": []}

    def fitness(trainer):  # runs before the run's own on_fit_epoch_end, which decides from the same numbers
        seen["fitness"].append(float(trainer.fitness))
        seen["teacher"].append(DistillCallbacks.find(trainer.callbacks).teacher_fitness)

    config = DistillConfig(teacher=str(teachers["detect"]), pool_targets="online", pool_teacher="auto",
                           ema_decay=0.5, pseudo_conf=0.01, uncertain_conf=0.001, pool_kd=True)  # fmt: skip
    pool = make_pool("detect", tmp_path)
    distill.distill(TASK_DATA["detect"], STUDENT["detect"], config, out=tmp_path / "run", unlabeled=pool,
                    callbacks={"on_train_epoch_end": [_target_recorder(record)], "on_fit_epoch_end": [fitness]},
                    **{**TINY, "epochs": 3, "close_mosaic": 0, "nbs": 4})  # fmt: skip
    teacher = seen["teacher"][0]
    assert teacher is not None and len(set(seen["teacher"])) == 1  # measured once, before training
    assert (tmp_path / "run" / "teacher-val").is_dir()
    passed = [f >= teacher for f in seen["fitness"]]
    took_over = [any(passed[: i + 1]) for i in range(3)]  # after epoch i + 1's validation
    assert [r["ema"] for r in record] == [False, *took_over[:2]]
    # from the takeover on the frozen teacher is not run: no feature term, while the logit term goes on
    columns = pl.read_csv(tmp_path / "run" / "results.csv", truncate_ragged_lines=True)
    mimic = columns["train/mimic_loss"].to_list()
    assert [m == 0 for m in mimic[1:]] == took_over[:2] and mimic[0] > 0
    assert all(v > 0 for v in columns["train/logit_loss"].to_list())


@pytest.mark.fast
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": 0}, "ema_decay"),
        ({"ema_decay": float("nan")}, "ema_decay"),
        ({"burn_in": -1}, "burn_in"),
        ({"uncertain_conf": 0}, "uncertain_conf"),
        ({"uncertain_conf": 1.5}, "uncertain_conf"),
        ({"uncertain_conf": 0.5, "pseudo_conf": 0.25, "pool_targets": "online"}, "uncertain_conf"),
        ({"pool_teacher": "student"}, "pool_teacher"),
        ({"pool_targets": "online", "online": True}, "online"),
    ],
)
def test_online_settings_are_validated(settings, named):
    with pytest.raises(distill.DistillError, match=named):
        DistillConfig(teacher="t.pt", **settings)


def test_a_burn_in_as_long_as_the_run_is_refused_before_training(teachers, tmp_path):
    pool = make_pool("detect", tmp_path)
    proc = cli(
        "distill", "--data", str(TASK_DATA["detect"]), "--student", STUDENT["detect"], "--teacher",
        str(teachers["detect"]), "--unlabeled", str(pool), "--pool-targets", "online", "--pool-teacher", "ema",
        "--burn-in", "3", "--epochs", "3", "--imgsz", "64", "--batch", "4", "--device", "cpu",
        "--out", str(tmp_path / "run"), "plots=False", check=False,
    )  # fmt: skip
    line = one_error_line(proc, 2, contains="burn_in")
    assert "3 epochs" in line
    assert not (tmp_path / "run" / "weights").exists()


def test_label_then_train_is_a_mode_of_distill_and_nothing_to_distil_without_a_pool(teachers, tmp_path):
    """``--loss none --no-logit`` with a pool: the teacher labels the pool, the student trains with no KD term."""
    pool = make_pool("detect", tmp_path)
    common = ("--data", str(TASK_DATA["detect"]), "--student", STUDENT["detect"], "--teacher", str(teachers["detect"]),
              "--loss", "none", "--no-logit", "--pseudo-conf", str(LOW_CONF), "--epochs", "1", "--imgsz", "64",
              "--batch", "4", "--device", "cpu", "plots=False")  # fmt: skip
    proc = cli("distill", *common, "--unlabeled", str(pool), "--out", str(tmp_path / "ltt"))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pool"]["used"] > 0 and result["pool"]["instances"] > 0
    header = (tmp_path / "ltt" / "results.csv").read_text().splitlines()[0]
    assert "train/box_loss" in header and "_loss" not in header.replace("box_loss", "").replace(
        "cls_loss", "").replace("dfl_loss", "")  # fmt: skip
    refused = cli("distill", *common, "--out", str(tmp_path / "none"), check=False)
    assert "nothing to distil" in one_error_line(refused, 2) and not (tmp_path / "none" / "weights").exists()


@pytest.mark.fast
def test_the_pipeline_refuses_nothing_to_distil_and_a_burn_in_as_long_as_the_run_up_front():
    from distill.settings import pipeline_arguments

    ltt = {"loss": "none", "logit": False, "student_epochs": 5}
    with pytest.raises(distill.DistillError, match="nothing to distil"):
        pipeline_arguments(ltt)
    assert pipeline_arguments({**ltt, "unlabeled_source": "s3://b/captures/"})["loss"] == "none"  # label-then-train
    ema = {"pool_targets": "online", "pool_teacher": "ema", "burn_in": 5, "unlabeled_source": "s3://b/c/"}
    with pytest.raises(distill.DistillError, match="burn_in 5 must be shorter than the run's 5 epochs"):
        pipeline_arguments({**ema, "student_epochs": 5})
    assert pipeline_arguments({**ema, "student_epochs": 6})["burn_in"] == 5
