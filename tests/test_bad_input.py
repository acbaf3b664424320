"""Bad input, as a hostile but realistic user gives it: one ``error:`` line and exit 2, or a clean refusal.

Corrupt images, orphan COCO annotations, archives that point outside themselves, checkpoints that would run code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TASK_DATA, cli, cli_here, one_error_line

from distill import DistillError
from distill.data import storage
from distill.steps.archive import safe_extract_zip
from distill.steps.prepare_data import prepare_data


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("train", "--data", str(TASK_DATA["detect"]), "--model", "yolov8n.yaml", "--epochs", "-1"),
         "'epochs=-1' is an invalid value. 'epochs' must be >= 1"),
        (("distill", "--loss", "foo"),
         "argument --loss: loss must be one of cwd, mgd, mimic, ncwd, pkd, none, got 'foo'"),
        (("train", "--data", str(TASK_DATA["detect"]), "--model", "yolov8n.yaml", "--imgsz", "x"),
         "argument --imgsz: imgsz must be int, got 'x'"),
        (("step", "train", "--data", str(TASK_DATA["detect"]), "--model", "yolov8n.yaml", "--name", "t",
          "--run-id", "r", "--prefix", "s3://bucket/p", "--epochs", "-1"), "'epochs' must be >= 1"),
        (("pipeline", "run-local", "data_source=shapes", "nodes=2"),
         "nodes=2: several nodes run each training step as a Kubeflow Trainer TrainJob"),
    ],
)  # fmt: skip
@pytest.mark.fast
def test_bad_arguments_are_one_line_exit_2(args, text):
    """Argument checks, run in-process: each refuses before any work (a fresh process costs seconds apiece)."""
    one_error_line(cli_here(*args), 2, contains=text, alone=True)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("line", "text"),
    [("names: 5", "'names' must be list or dict, not int"), ("names: [a]\ntrain: 5", "'train' must be str or list")],
)
def test_a_data_yaml_key_of_the_wrong_type_is_one_line(tmp_path, line, text):
    """Ultralytics' dataset check raises TypeError for these: one ``error:`` line, exit 2, not a traceback."""
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {TASK_DATA['detect'].parent}\ntrain: images/train\nval: images/val\n{line}\n")
    proc = cli_here("train", "--data", str(data), "--model", "yolov8n.yaml", "--epochs", "1", "--out",
                    str(tmp_path / "out"))  # fmt: skip
    assert text in one_error_line(proc, 2, alone=True)
    assert not (tmp_path / "out").exists()


def test_images_folder_without_images(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val",
                                    "names": {0: "a"}}))  # fmt: skip
    proc = cli("train", "--data", str(data), "--model", "yolov8n.yaml", "--epochs", "1", "--imgsz", "64",
               "--out", str(tmp_path / "run"), check=False)  # fmt: skip
    one_error_line(proc, 2, contains=f"the train split '{tmp_path / 'images' / 'train'}' holds no images", alone=True)


def _copy_coco8(tmp_path: Path) -> Path:
    src = TASK_DATA["detect"].parent
    dst = tmp_path / "coco8"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.cache"))
    return dst


def test_corrupt_images_are_counted_and_an_empty_split_refused(stack_env, tmp_path):
    data = _copy_coco8(tmp_path)
    train = sorted((data / "images" / "train").glob("*.jpg"))
    train[0].write_bytes(b"not a jpeg at all")
    train[1].write_bytes(train[1].read_bytes()[:200])  # truncated
    result = prepare_data(str(data), "yolo")
    assert result["counts"]["train"]["unreadable"] == 2 and result["counts"]["train"]["images"] == len(train) - 2
    assert result["counts"]["val"]["unreadable"] == 0
    manifest = json.loads(storage.read_bytes(f"{result['uri']}/manifest.json"))
    assert manifest["counts"] == result["counts"]
    assert not any(k.endswith(train[0].name) for k in manifest["files"])
    for image in train[2:]:
        image.write_bytes(b"garbage")
    with pytest.raises(DistillError, match=f"split 'train' has no readable images \\({len(train)} unreadable\\)"):
        prepare_data(str(data), "yolo")


def test_training_reports_the_images_it_skipped(tmp_path):
    data = _copy_coco8(tmp_path)
    sorted((data / "images" / "train").glob("*.jpg"))[0].write_bytes(b"not a jpeg")
    proc = cli("train", "--data", str(data / "data.yaml"), "--model", "yolov8n.yaml", "--epochs", "1", "--imgsz",
               "64", "--batch", "4", "--device", "cpu", "--out", str(tmp_path / "run"), "plots=False")  # fmt: skip
    assert json.loads(proc.stdout.strip().splitlines()[-1])["skipped_images"] == 1


def test_coco_annotations_naming_missing_images_are_counted(stack_env, tmp_path):
    from test_steps import write_coco

    write_coco(tmp_path)
    spec_file = tmp_path / "annotations" / "instances_train.json"
    spec = json.loads(spec_file.read_text())
    first = spec["images"][0]
    (tmp_path / "images" / "train" / first["file_name"]).unlink()  # listed, not on disk
    on_disk_gone = sum(1 for a in spec["annotations"] if a["image_id"] == first["id"])
    spec["annotations"] += [
        {"id": 9000 + k, "image_id": 777, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25}
        for k in range(3)
    ]  # fmt: skip  (an image id the JSON does not list)
    spec_file.write_text(json.dumps(spec))
    result = prepare_data(str(tmp_path), "coco")
    assert result["dropped_boxes"] == on_disk_gone + 3 > 3


def test_archive_data_yaml_pointing_outside_is_refused(stack_env, tmp_path):
    outside = _copy_coco8(tmp_path)  # a dataset on the host, outside any archive
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ds/data.yaml", yaml.safe_dump({"path": str(outside), "train": "images/train",
                                                    "val": "images/val", "names": {0: "person"}}))  # fmt: skip
    with pytest.raises(DistillError, match="data.yaml': path '.*coco8' points outside the archive; refused"):
        prepare_data(str(archive), "yolo")
    relative = tmp_path / "evil2.zip"
    with zipfile.ZipFile(relative, "w") as zf:
        zf.writestr("ds/data.yaml", yaml.safe_dump({"train": "../../../../../../" + str(outside / "images/train"),
                                                    "val": "images/val", "names": {0: "person"}}))  # fmt: skip
    with pytest.raises(DistillError, match="train path '.*' points outside the archive; refused"):
        prepare_data(str(relative), "yolo")
    local = prepare_data(str(outside), "yolo")  # a local folder may point anywhere: it is the user's own disk
    assert local["counts"]["train"]["images"] == 4


def test_escaping_archive_entry_is_refused_where_it_would_land(tmp_path):
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo("../evil.txt"), "x")
    target = tmp_path / "target"
    target.mkdir()
    lands = (target / "../evil.txt").resolve()
    assert lands == tmp_path / "evil.txt"
    with zipfile.ZipFile(archive) as zf:  # control: a naive extractor writes it exactly there ...
        (target / zf.namelist()[0]).write_bytes(zf.read(zf.namelist()[0]))
    assert lands.exists()
    lands.unlink()
    with pytest.raises(DistillError, match="would land outside the target folder"):  # ... ours refuses it
        safe_extract_zip(archive, target)
    assert not lands.exists() and list(target.iterdir()) == []


class _Payload:
    """A pickle payload: loading it with the default unpickler runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "teacher.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, evil)
    for args in (("train", "--model", str(evil)), ("distill", "--student", "yolov8n.yaml", "--teacher", str(evil))):
        proc = cli(*args, "--data", str(TASK_DATA["detect"]), "--epochs", "1", "--imgsz", "64", "--out",
                   str(tmp_path / "run"), check=False)  # fmt: skip
        refused = f"weights '{evil}' refused: the file references code outside the Ultralytics checkpoint"
        one_error_line(proc, 2, contains=refused, alone=True)
        assert "YOLO_DISTILL_TRUST_CHECKPOINTS=1" in proc.stderr
        assert not marker.exists()
    # The opt-out is real: trusted, the same file runs its code (which is why it is off by default).
    trusted = subprocess.run(
        [sys.executable, "-m", "distill.cli", "train", "--model", str(evil), "--data", str(TASK_DATA["detect"]),
         "--epochs", "1", "--imgsz", "64", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "YOLO_DISTILL_TRUST_CHECKPOINTS": "1"},
    )  # fmt: skip
    assert trusted.returncode == 2 and marker.exists()
