"""Pseudo-labels (issue 21): a teacher's predictions on unlabelled images, checked against Ultralytics itself.

Every label file is read back with Ultralytics' own ``verify_image_label`` and every ``data.yaml`` with its own
``check_det_dataset``; the rows are compared with the predictor's own result for the same image, predicted here
independently. The session's tiny teachers detect little, so the label checks run at ``conf=1e-5``, where every
image has predictions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.engine.pseudo_labels import RECORD, label_rows, load_teacher, pseudo_label
from distill.errors import DistillError

DATA = Path(__file__).resolve().parent / "data"
POOL = {
    "detect": DATA / "coco8" / "images",
    "segment": DATA / "coco8-seg" / "images",
    "pose": DATA / "coco8-pose" / "images",
}
LOW = {"conf": 1e-5, "imgsz": 64, "device": "cpu"}


def _refuse_predicting(monkeypatch) -> None:
    from ultralytics.engine.predictor import BasePredictor

    def refused(*args, **kwargs):
        raise AssertionError("the predictor ran")

    monkeypatch.setattr(BasePredictor, "stream_inference", refused)


def _expected_rows(result, task: str) -> list[list[float]]:
    """The rows the label file must hold, built here from the predictor's own ``Results`` (not the module's code)."""
    rows = []
    for i in range(len(result.boxes)):
        cls = [float(result.boxes.cls[i])]
        if task == "segment":
            polygon = result.masks.xyn[i]
            if len(polygon) >= 3:
                rows.append(cls + polygon.reshape(-1).tolist())
            continue
        row = cls + result.boxes.xywhn[i].tolist()
        if task == "pose":
            for (x, y), c in zip(result.keypoints.xyn[i].tolist(), result.keypoints.conf[i].tolist(), strict=True):
                row += [x, y, 2.0] if c >= 0.5 else [0.0, 0.0, 0.0]
        rows.append(row)
    return rows


def _read_rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("task", ["detect", "segment", "pose"])
def test_labels_are_the_predictors_own_and_ultralytics_reads_them(tmp_path, teachers, task, monkeypatch):
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset, verify_image_label

    out = tmp_path / "pseudo"
    result = pseudo_label(teachers[task], POOL[task], out, batch=1, **LOW)
    assert (result.task, result.images, result.cached, result.data) == (task, 8, False, out / "data.yaml")
    assert result.labelled + len(result.empty) == 8 and result.instances > 0

    # The rows equal the predictor's own result for each image, predicted here on its own.
    model, rows_seen = YOLO(str(teachers[task])), 0
    for image in sorted((out / "images").iterdir()):
        own = model.predict(str(image), verbose=False, **LOW)[0]
        rows = _read_rows(out / "labels" / f"{image.stem}.txt")
        expected = _expected_rows(own, task)
        assert len(rows) == len(expected), image.name
        for got, want in zip(rows, expected, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        assert (image.name in result.empty) == (not rows)
        rows_seen += len(rows)
    assert rows_seen == result.instances == sum(result.per_class.values())

    # Ultralytics' own dataset check and label loader accept every file, with the task's columns.
    data = check_det_dataset(str(result.data))
    assert data["names"] == model.names and data["nc"] == len(model.names)
    nkpt, ndim = data.get("kpt_shape", (0, 0))
    assert (task == "pose") == bool(nkpt) and "flip_idx" not in data
    for image in sorted((out / "images").iterdir()):
        label = out / "labels" / f"{image.stem}.txt"
        checked = verify_image_label((str(image), str(label), "", task == "pose", data["nc"], nkpt, ndim, False))
        assert checked[8] == 0 and "corrupt" not in checked[9], checked[9]
        assert checked[7] == (image.name in result.empty)  # ne: the label file is empty
        if task == "segment" and image.name not in result.empty:
            assert len(checked[3]) == len(checked[1]) > 0  # one polygon per row
        if task == "pose":
            assert checked[4].shape == (len(checked[1]), nkpt, ndim)
            assert set(np.unique(checked[4][..., 2])) <= {0.0, 2.0}

    # Same key, complete folder: the recorded result, without predicting.
    _refuse_predicting(monkeypatch)
    again = pseudo_label(teachers[task], POOL[task], out, batch=1, **LOW)
    assert again.cached and (again.key, again.empty, again.instances) == (result.key, result.empty, result.instances)


def test_images_without_a_prediction_are_listed_as_empty(tmp_path, teachers):
    from ultralytics.data.utils import check_det_dataset

    result = pseudo_label(teachers["detect"], POOL["detect"], tmp_path / "out", conf=1.0, imgsz=64, device="cpu")
    assert (result.images, result.labelled, result.instances) == (8, 0, 0)
    assert result.empty == sorted(p.name for p in POOL["detect"].rglob("*.jpg"))
    assert all(p.read_text() == "" for p in (tmp_path / "out" / "labels").iterdir())
    record = json.loads((tmp_path / "out" / RECORD).read_text())
    assert (record["empty"], record["empty_images"], record["conf"]) == (8, result.empty, 1.0)
    check_det_dataset(str(result.data))


def test_a_changed_setting_relabels_and_an_interrupted_run_is_redone(tmp_path, teachers, monkeypatch):
    import distill.engine.pseudo_labels as pl

    out = tmp_path / "out"
    first = pseudo_label(teachers["detect"], POOL["detect"], out, **LOW)
    (out / "labels" / "stale.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    other = pseudo_label(teachers["detect"], POOL["detect"], out, **{**LOW, "conf": 0.5})
    assert not other.cached and other.key != first.key and not (out / "labels" / "stale.txt").exists()

    calls = {"n": 0}
    real = pl.label_rows

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pl, "label_rows", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        pseudo_label(teachers["detect"], POOL["detect"], out, **LOW)
    assert not (out / RECORD).exists()  # the record goes first, and is written last
    monkeypatch.setattr(pl, "label_rows", real)
    redone = pseudo_label(teachers["detect"], POOL["detect"], out, **LOW)
    assert not redone.cached and (redone.key, redone.instances) == (first.key, first.instances)

    next((out / "labels").iterdir()).unlink()
    assert not pseudo_label(teachers["detect"], POOL["detect"], out, **LOW).cached  # incomplete: redone


def test_a_pools_hash_stands_in_for_hashing_its_images(tmp_path, teachers, monkeypatch):
    from distill.data.image_files import Where
    from distill.steps.unlabeled_pool import build_pool, scan_pool

    source = tmp_path / "capture"
    shutil.copytree(POOL["detect"], source)
    manifest = build_pool(scan_pool(str(source), source, Where(source)), tmp_path / "pool", {"hash": "x", "files": {}})
    images = tmp_path / "pool" / "images"
    hashed = pseudo_label(teachers["detect"], images, tmp_path / "a", **LOW)
    _refuse_predicting(monkeypatch)
    given = pseudo_label(teachers["detect"], images, tmp_path / "a", pool_hash=manifest["hash"], **LOW)
    assert given.cached and given.key == hashed.key  # the images' hash follows the pool's recipe
    with pytest.raises(AssertionError, match="the predictor ran"):  # the guard bites on a cache miss
        pseudo_label(teachers["detect"], images, tmp_path / "a", pool_hash="another-snapshot", **LOW)
    assert (tmp_path / "a" / "images" / next(iter(sorted(p.name for p in images.iterdir())))).stat().st_nlink >= 2


@pytest.mark.fast
@pytest.mark.parametrize("conf", [0, -0.1, 1.5, True, "0.5", float("nan")])
def test_a_confidence_outside_0_1_is_refused(tmp_path, conf):
    with pytest.raises(DistillError, match="conf must be a number in"):
        pseudo_label("teacher.pt", POOL["detect"], tmp_path / "out", conf=conf)


@pytest.mark.fast
def test_missing_or_foreign_teachers_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for teacher, message in (
        (tmp_path / "absent.pt", "teacher weights '.*absent.pt' not found"),
        ("yolov8n.yaml", "teacher 'yolov8n.yaml' must be a .pt checkpoint"),
        (junk, "teacher weights '.*junk.pt' are not a readable Ultralytics checkpoint"),
    ):
        with pytest.raises(DistillError, match=message):
            pseudo_label(teacher, POOL["detect"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.fast
def test_a_classify_teacher_is_refused(tmp_path):
    from ultralytics import YOLO

    YOLO("yolov8n-cls.yaml").save(tmp_path / "cls.pt")
    with pytest.raises(DistillError, match="is a classify model; pseudo-labels support detect, segment, pose"):
        load_teacher(tmp_path / "cls.pt")


@pytest.mark.fast
def test_no_images_and_ambiguous_folders_are_refused(tmp_path):
    (tmp_path / "empty" / "labels").mkdir(parents=True)
    (tmp_path / "empty" / "labels" / "a.jpg").write_bytes(b"")  # under labels/: not a pool image
    (tmp_path / "empty" / "notes.txt").write_text("x")
    twins = tmp_path / "twins"
    for sub in ("a", "b"):
        (twins / sub).mkdir(parents=True)
        shutil.copyfile(next(POOL["detect"].rglob("*.jpg")), twins / sub / "x.jpg")
    (tmp_path / "pl" / "images" / "x").mkdir(parents=True)
    shutil.copyfile(twins / "a" / "x.jpg", tmp_path / "pl" / "images" / "x" / "x.jpg")
    cases = (
        (tmp_path / "empty", tmp_path / "out", "holds no images"),
        (tmp_path / "absent", tmp_path / "out", "is not a folder"),
        (twins, tmp_path / "out", "share the name 'x'"),
        (twins, twins / "a" / "out", "must not lie in images"),
        (tmp_path / "pl" / "images" / "x", tmp_path / "pl", "nor the images in its images/labels"),
    )
    for images, out, message in cases:
        with pytest.raises(DistillError, match=message):
            pseudo_label("teacher.pt", images, out)


@pytest.mark.fast
def test_rows_follow_the_dataset_format_of_each_task():
    import torch
    from ultralytics.engine.results import Results

    image, names = np.zeros((40, 80, 3), np.uint8), {0: "a", 1: "b"}
    boxes = torch.tensor([[8.0, 4.0, 40.0, 36.0, 0.9, 1.0], [60.0, 10.0, 70.0, 20.0, 0.8, 0.0]])
    assert label_rows(Results(image, "x.jpg", names, boxes=boxes), "detect") == (
        ["1 0.300000 0.500000 0.400000 0.800000", "0 0.812500 0.375000 0.125000 0.250000"],
        0,
    )

    masks = torch.zeros(2, 40, 80)
    masks[0, 4:36, 8:40] = 1  # the second mask is empty: no polygon, so its row is left out (as save_txt does)
    rows, dropped = label_rows(Results(image, "x.jpg", names, boxes=boxes, masks=masks), "segment")
    assert dropped == 1 and len(rows) == 1 and rows[0].startswith("1 ") and len(rows[0].split()) >= 7

    kpts = torch.tensor([[[16.0, 8.0, 0.7], [24.0, 20.0, 0.3]], [[64.0, 12.0, 0.5], [66.0, 18.0, 0.49]]])
    rows, _ = label_rows(Results(image, "x.jpg", names, boxes=boxes, keypoints=kpts), "pose", kpt_conf=0.5)
    assert [r.split()[5:] for r in rows] == [
        ["0.200000", "0.200000", "2.000000", "0.000000", "0.000000", "0.000000"],
        ["0.800000", "0.300000", "2.000000", "0.000000", "0.000000", "0.000000"],
    ]
    rows, _ = label_rows(Results(image, "x.jpg", names, boxes=boxes, keypoints=kpts[..., :2]), "pose")
    assert rows[0].split()[5:] == ["0.200000", "0.200000", "0.300000", "0.500000"]  # kpt_shape ndim 2: x y only
    assert label_rows(Results(image, "x.jpg", names, boxes=torch.zeros(0, 6)), "detect") == ([], 0)
