"""Training with an unlabelled pool (issue 21): real Ultralytics training on labelled + pseudo-labelled images.

The pools are real photos the labelled set does not hold (another coco8 variant's images), plus a byte copy of a val
image (a leak) and of a train image, so every rule of :mod:`distill.engine.pool_data` is exercised on real files. The
session's teachers are trained one epoch, so pseudo-labels are made at a low confidence, where they predict.
What the trainer really read is checked in Ultralytics' own label cache, not in our list.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import DATA, STUDENT, TASK_DATA, TINY, cli, one_error_line

import distill
from distill import DistillConfig, DistillError
from distill.data.dataset_files import split_images

#: Where each task's pool photos come from: a coco8 variant whose images are not the task's training images.
POOL_FROM = {"detect": "coco8-pose", "segment": "coco8-pose", "pose": "coco8"}
LOW_CONF = 1e-5


def make_pool(task: str, root: Path) -> Path:
    """A pool folder: another set's photos, a copy of one val image and of one train image of the task's dataset."""
    pool = root / "pool"
    pool.mkdir(parents=True)
    for image in sorted((DATA / POOL_FROM[task] / "images").rglob("*.jpg")):
        shutil.copyfile(image, pool / image.name)
    data = TASK_DATA[task].parent / "images"
    shutil.copyfile(sorted((data / "val").iterdir())[0], pool / "leaked-val.jpg")
    shutil.copyfile(sorted((data / "train").iterdir())[0], pool / "copy-of-train.jpg")
    return pool


def trained_list(run_dir: Path) -> list[str]:
    """The training images Ultralytics' loader cached for the run (its label cache, next to the first label file)."""
    from ultralytics.data.utils import img2label_paths, load_dataset_cache_file

    listed = (run_dir / "pool" / "train.txt").read_text().split()
    cache = Path(img2label_paths(sorted(listed)[:1])[0]).parent.with_suffix(".cache")  # Ultralytics' own rule
    assert cache.is_file(), f"the loader did not cache the run's labels at {cache}"
    labels = load_dataset_cache_file(cache)["labels"]
    assert len(labels) == len(listed)
    return [label["im_file"] for label in labels]


def test_pool_images_the_teacher_found_nothing_in_are_kept_only_as_asked(teachers, tmp_path):
    """At ``pseudo_conf`` 1 the teacher labels nothing: online targets keep the images, ``pool_keep_empty=false``
    (and the offline pseudo-labels) leave them out — through the seam :func:`distill.distill` makes its pool with."""
    from distill.engine.api import PoolInput

    pool = PoolInput(make_pool("detect", tmp_path), None, "cpu", 4)
    online = DistillConfig(teacher=str(teachers["detect"]), pseudo_conf=1.0, pool_targets="online")
    kept = pool.make(TASK_DATA["detect"], online, 64, tmp_path / "kept")
    given = len(list(Path(pool.images).iterdir()))
    assert (kept.used, kept.empty, kept.instances) == (given - 2, 0, 0)  # every image but the two copies
    for config in (
        DistillConfig(teacher=online.teacher, pseudo_conf=1.0, pool_targets="online", pool_keep_empty=False),
        DistillConfig(teacher=online.teacher, pseudo_conf=1.0),
    ):
        with pytest.raises(DistillError, match=f"none of the {given} unlabelled images can train the student"):
            pool.make(TASK_DATA["detect"], config, 64, tmp_path / "dropped")


@pytest.mark.parametrize("task", ["detect", "segment", "pose"])
def test_student_trains_on_labelled_and_pseudo_labelled_pool(teachers, tmp_path, task):
    pool = make_pool(task, tmp_path)
    config = DistillConfig(teacher=str(teachers[task]), pseudo_conf=LOW_CONF)
    run = distill.distill(TASK_DATA[task], STUDENT[task], config, out=tmp_path / "run", unlabeled=pool, **TINY)
    counts = run.pool
    given = len(list(pool.iterdir()))
    assert counts["pool"] == given and counts["conf"] == LOW_CONF
    assert counts["leaked_into_val_test"] >= 1 and counts["in_labelled_train"] >= 1
    assert counts["used"] + counts["empty"] + counts["leaked_into_val_test"] + counts["in_labelled_train"] == given
    assert counts["used"] > 0 and counts["instances"] >= counts["used"]

    labelled = split_images(str(TASK_DATA[task].parent / "images" / "train"))
    images = trained_list(tmp_path / "run")
    from_pool = [p for p in images if "/pool/pseudo/images/" in p]
    assert len(from_pool) == counts["used"] and sorted(set(images) - set(from_pool)) == labelled
    assert not any(Path(p).name in {"leaked-val.jpg", "copy-of-train.jpg"} for p in from_pool)
    for image in from_pool:  # never an unlabelled image as "no objects": each one carries pseudo-labels
        label = tmp_path / "run" / "pool" / "pseudo" / "labels" / f"{Path(image).stem}.txt"
        assert label.read_text().strip(), image

    plan = json.loads((tmp_path / "run" / "distill.json").read_text())["config"]
    assert plan["pseudo_conf"] == LOW_CONF  # the default with a pool: label-then-train but for pose's keypoints
    kd = task == "pose"
    assert (plan["loss"], plan["logit"], plan["pool_kd"]) == (("mimic", True, True) if kd else ("none", False, False))
    from ultralytics import YOLO

    assert YOLO(str(run.best)).task == task  # the student is a plain Ultralytics model


@pytest.mark.parametrize("task", ["detect", "segment", "pose"])
def test_soft_pool_targets_leave_the_pool_objects_to_the_kd_terms(teachers, tmp_path, task):
    """``pool_targets=soft`` in a real run: pool instances marked through the loader, the assigner ignoring them."""
    from distill.engine.soft_pool import IgnoreSoftTargets, SoftLabels

    seen: dict[str, object] = {}

    def look(trainer):  # after the first batch: the trainer's own dataset and the student's criterion
        if seen:
            return
        dataset = trainer.train_loader.dataset
        nc = len(trainer.data["names"])
        pool = [i for i, f in enumerate(dataset.im_files) if "/pool/pseudo/images/" in f]
        seen["marker"] = isinstance(dataset.update_labels_info, SoftLabels)
        seen["pool_cls"] = [dataset.get_image_and_label(i)["cls"].min() >= nc for i in pool]
        seen["labelled_cls"] = [dataset.get_image_and_label(i)["cls"].max(initial=0) < nc
                                for i in range(len(dataset)) if i not in pool]  # fmt: skip
        criterion = trainer.model.student_model.criterion
        seen["assigner"] = isinstance(criterion.assigner, IgnoreSoftTargets) and criterion.assigner.soft is None

    pool = make_pool(task, tmp_path)
    config = DistillConfig(teacher=str(teachers[task]), pseudo_conf=LOW_CONF, pool_targets="soft", pool_kd=True)
    run = distill.distill(TASK_DATA[task], STUDENT[task], config, out=tmp_path / "run", unlabeled=pool,
                          callbacks={"on_train_batch_end": [look]}, **TINY)  # fmt: skip
    assert seen["marker"] and seen["assigner"]  # armed for each loss call only, disarmed after it
    assert len(seen["pool_cls"]) == run.pool["used"] and all(seen["pool_cls"])
    assert seen["labelled_cls"] and all(seen["labelled_cls"])
    assert json.loads((tmp_path / "run" / "distill.json").read_text())["config"]["pool_targets"] == "soft"
    from ultralytics import YOLO

    assert YOLO(str(run.best)).task == task and run.metrics  # a plain student, validated as usual


def test_pool_labels_are_made_once_and_a_rerun_reuses_them(teachers, tmp_path):
    pool = make_pool("detect", tmp_path)
    config = DistillConfig(teacher=str(teachers["detect"]), pseudo_conf=LOW_CONF, unlabeled_ratio=0.5)
    from distill.engine.pool_data import with_pool

    first = with_pool(TASK_DATA["detect"], config.teacher, pool, tmp_path / "a", conf=LOW_CONF, ratio=0.5, imgsz=64,
                      device="cpu")  # fmt: skip
    record = (tmp_path / "a" / "pseudo" / "pseudo.json").stat().st_mtime_ns
    again = with_pool(TASK_DATA["detect"], config.teacher, pool, tmp_path / "a", conf=LOW_CONF, ratio=0.5, imgsz=64,
                      device="cpu")  # fmt: skip
    assert again == first and (tmp_path / "a" / "pseudo" / "pseudo.json").stat().st_mtime_ns == record
    # ratio 0.5: at most half a pool image per labelled image, so the labelled images are listed repeatedly
    listed = (tmp_path / "a" / "train.txt").read_text().split()
    assert first.repeats == -(-first.used // (0.5 * first.labelled)) and first.repeats > 1
    assert len(listed) == first.used + first.labelled * first.repeats


def test_cli_distill_with_a_pool_folder(teachers, tmp_path):
    pool = make_pool("detect", tmp_path)
    proc = cli("distill", "--data", str(TASK_DATA["detect"]), "--student", STUDENT["detect"], "--teacher",
               str(teachers["detect"]), "--unlabeled", str(pool), "--pseudo-conf", str(LOW_CONF), "--epochs", "1",
               "--imgsz", "64", "--batch", "4", "--device", "cpu", "--out", str(tmp_path / "run"), "plots=False",
               "workers=0")  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pool"]["used"] > 0 and result["pool"]["labelled"] == 4
    assert "unlabelled pool:" in proc.stdout and Path(result["best"]).is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--unlabeled", "/nonexistent/pool"], "error: unlabeled '/nonexistent/pool' is neither a folder of images"),
        (["--pseudo-conf", "0"], "pseudo_conf must be in (0, 1], got 0.0"),
        (["--pseudo-conf", "1.0"], "error: none of the 10 unlabelled images can train the student: the teacher found"),
        (["--unlabeled-ratio", "-1"], "unlabeled_ratio must be a non-negative number, got -1.0"),
    ],
)
def test_cli_refuses_bad_pool_input_in_one_line(teachers, tmp_path, flags, message):
    pool = make_pool("detect", tmp_path)
    args = ["--unlabeled", str(pool), "--pseudo-conf", str(LOW_CONF), *flags]
    out = tmp_path / "run"
    proc = cli("distill", "--data", str(TASK_DATA["detect"]), "--student", STUDENT["detect"], "--teacher",
               str(teachers["detect"]), *args, "--epochs", "1", "--imgsz", "64", "--device", "cpu", "--out", str(out),
               check=False)  # fmt: skip
    assert message in one_error_line(proc, 2)
    assert not (out / "weights").exists()


def test_a_teacher_of_other_classes_is_refused(teachers, tmp_path):
    pool = make_pool("detect", tmp_path)
    config = DistillConfig(teacher=str(teachers["pose"]), pseudo_conf=LOW_CONF)  # a 'person' teacher, 80-class data
    with pytest.raises(DistillError, match="predicts classes .* pseudo-labels need a teacher trained on the dataset"):
        distill.distill(TASK_DATA["detect"], STUDENT["detect"], config, out=tmp_path / "run", unlabeled=pool, **TINY)


def test_two_self_training_rounds_the_first_student_teaches_the_second(teachers, tmp_path):
    pool = make_pool("detect", tmp_path)
    config = DistillConfig(teacher=str(teachers["detect"]), pseudo_conf=LOW_CONF, pool_rounds=2)
    out = tmp_path / "run"
    run = distill.distill(TASK_DATA["detect"], STUDENT["detect"], config, out=out, unlabeled=pool, **TINY)

    first = tmp_path / "run-round1"
    done = json.loads((first / "round.json").read_text())
    assert done["round"] == 1 and done["best"] == str(first / "weights" / "best.pt")
    plans = [json.loads((folder / "distill.json").read_text())["config"] for folder in (first, out)]
    assert plans[0]["teacher"] == str(teachers["detect"].resolve()) and plans[0]["extra"] == {"round": 1}
    assert plans[1]["teacher"] == done["best"] and plans[1]["extra"] == {"round": 2}  # the round-1 student teaches
    assert plans[0]["pool_rounds"] == plans[1]["pool_rounds"] == 2
    keys = [json.loads((folder / "pool" / "pseudo" / "pseudo.json").read_text())["key"] for folder in (first, out)]
    assert keys[0] != keys[1] and run.pool["pseudo_key"] == keys[1]  # the pool labelled again, by the new teacher
    assert run.pool["rounds"] == 2 and run.pool["used"] > 0 and run.best.is_file()

    stamp = (first / "weights" / "best.pt").stat().st_mtime_ns  # a rerun reuses the finished round
    again = distill.distill(TASK_DATA["detect"], STUDENT["detect"], config, out=out, unlabeled=pool, **TINY)
    assert (first / "weights" / "best.pt").stat().st_mtime_ns == stamp and again.pool["pseudo_key"] == keys[1]


def test_self_training_rounds_across_nodes_are_refused_before_anything_runs(monkeypatch, tmp_path):
    from distill.steps import training

    monkeypatch.setenv("WORLD_SIZE", "4")  # a torchrun launch over two nodes (two processes each)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(DistillError, match="pool_rounds=2: self-training rounds run on one node for now"):
        training.distill("s3://nowhere/data", "s3://nowhere/best.pt", "yolov8n.yaml", run_id="r", unlabeled="pool/",
                         pool_rounds=2)  # fmt: skip
