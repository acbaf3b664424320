"""Issue 37's pool and import findings: copies of train images in a pool, scratch paths in refusals, dropped VOC
boxes, provenance of content reused by hash, symlinked pool folders and base64 with line breaks.

Everything runs on real files: coco8's own images (a byte copy is what a user's capture folder holds when a frame
was later labelled), datasets written here, an untrained but real Ultralytics checkpoint as the teacher (it labels
through Ultralytics' predictor; ``conf=1.0`` makes it find nothing, so the counts are exact) and, for provenance,
the session's real S3 + MLflow stack.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import DATA, TASK_DATA
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModelContext
from test_importers import EXAMPLE, WRITERS  # the importer tests' own dataset writers

from distill import DistillError
from distill.data import storage
from distill.data.dataset_files import split_images
from distill.data.image_files import Where
from distill.engine.pool_data import with_pool
from distill.steps.prepare_data import import_dataset
from distill.steps.pyfunc_model import LIMITS, NOT_BASE64, YoloModel, image_bytes, request_options
from distill.steps.unlabeled_pool import build_pool, scan_pool

COCO8 = TASK_DATA["detect"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """An untrained YOLOv8n detect checkpoint with coco8's class names: a real teacher, built in a second."""
    from ultralytics import YOLO

    names = yaml.safe_load(COCO8.read_text())["names"]
    model = YOLO("yolov8n.yaml")
    model.model.names = dict(names) if isinstance(names, dict) else dict(enumerate(names))
    path = tmp_path_factory.mktemp("teacher") / "untrained.pt"
    model.save(path)
    return path


def coco8_images(split: str) -> list[Path]:
    return [Path(p) for p in split_images(str(COCO8.parent / "images" / split))]


def noise(path: Path, seed: int, size: int = 32) -> Path:
    """Write a noise image no other seed reproduces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return path


# 12: a pool made only of copies of labelled train images


@pytest.mark.fast
def test_a_pool_of_train_copies_is_refused_as_such_before_the_teacher_runs(teacher, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for k, image in enumerate(coco8_images("train")[:2]):
        shutil.copyfile(image, pool / f"frame{k}.jpg")
    with pytest.raises(DistillError) as refused:
        with_pool(COCO8, teacher, pool, tmp_path / "out", conf=0.25, ratio=1, imgsz=64, device="cpu")
    assert str(refused.value) == (
        f"unlabelled images '{pool}' are only copies of labelled train images (all 2, byte for byte): "
        "a train image is already labelled, so nothing is left to pseudo-label"
    )
    assert not (tmp_path / "out" / "pseudo").exists()  # the teacher never ran


@pytest.mark.fast
def test_a_pool_of_train_and_val_copies_names_both(teacher, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copyfile(coco8_images("train")[0], pool / "t.jpg")
    shutil.copyfile(coco8_images("val")[0], pool / "v.jpg")
    with pytest.raises(DistillError, match=r"only copies of labelled images \(1 of train images, 1 of val/test"):
        with_pool(COCO8, teacher, pool, tmp_path / "out", conf=0.25, ratio=1, imgsz=64, device="cpu")


def test_copies_among_new_images_are_left_out_with_a_warning_and_counted(teacher, tmp_path, caplog):
    pool = tmp_path / "pool"
    pool.mkdir()
    for k, image in enumerate(coco8_images("train")[:2]):
        shutil.copyfile(image, pool / f"train-copy{k}.jpg")
    shutil.copyfile(coco8_images("val")[0], pool / "val-copy.jpg")
    for k, image in enumerate(sorted((DATA / "coco8-pose" / "images" / "train").iterdir())[:2]):
        shutil.copyfile(image, pool / f"new{k}.jpg")  # photos the labelled set does not hold
    caplog.clear()
    with pytest.raises(DistillError) as refused:  # conf=1.0: the teacher keeps nothing, so every count is exact
        with_pool(COCO8, teacher, pool, tmp_path / "out", conf=1.0, ratio=1, imgsz=64, device="cpu")
    assert str(refused.value) == (
        "none of the 5 unlabelled images can train the student: the teacher found no object above conf=1.0 in 2, "
        "1 are copies of val/test images and 2 are copies of train images"
    )
    logged = caplog.messages
    assert sum(f"unlabelled pool '{pool}': 2 of 5 images are copies of labelled train images" in x for x in logged) == 1
    assert sum(f"unlabelled pool '{pool}': 1 of 5 images are copies of val/test images" in x for x in logged) == 1


@pytest.mark.fast
def test_prepare_data_warns_about_pool_images_that_are_train_images(tmp_path, caplog):
    WRITERS["yolo"](EXAMPLE, tmp_path / "src")
    manifest = import_dataset(str(tmp_path / "src"), tmp_path / "dataset", "yolo")
    capture = tmp_path / "capture"
    noise(capture / "new.png", 1)
    shutil.copyfile(tmp_path / "src" / "images" / "train" / "train_0.png", capture / "known.png")
    caplog.clear()
    pool = build_pool(scan_pool(str(capture), capture, Where(capture)), tmp_path / "pool", manifest)
    assert (pool["images"], pool["in_labelled_train"]) == (1, 1)
    assert f"1 images identical to train images dropped (already labelled): '{capture / 'known.png'}'" in caplog.text


# scratch folders in refusals


def _zip(folder: Path, archive: Path, inside: str = "shapes") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, f"{inside}/{path.relative_to(folder)}")
    return archive


@pytest.mark.fast
def test_two_coco_images_of_one_name_in_a_zip_are_named_inside_the_zip(tmp_path):
    WRITERS["coco"](EXAMPLE, tmp_path / "src")
    twin = tmp_path / "src" / "images" / "train" / "sub" / "train_0.png"
    twin.parent.mkdir()
    shutil.copyfile(tmp_path / "src" / "images" / "train" / "train_0.png", twin)
    archive = _zip(tmp_path / "src", tmp_path / "data.zip")
    (tmp_path / "scratch").mkdir()
    with pytest.raises(DistillError) as refused:
        import_dataset(str(archive), tmp_path / "out", "coco", scratch=tmp_path / "scratch")
    message = str(refused.value)
    assert str(tmp_path / "scratch") not in message, message
    assert f"'{archive}:shapes/images/train/sub/train_0.png' and '{archive}:shapes/images/train/train_0.png'" in message


# dropped VOC boxes


@pytest.mark.fast
def test_dropped_voc_boxes_are_said_in_one_warning_naming_the_file(tmp_path, caplog):
    WRITERS["voc"](EXAMPLE, tmp_path / "src")
    xml = tmp_path / "src" / "Annotations" / "train_0.xml"
    outside = "<object><name>disc</name><bndbox><xmin>30</xmin><ymin>2</ymin><xmax>40</xmax><ymax>9</ymax></bndbox>"
    xml.write_text(xml.read_text().replace("</annotation>", f"{outside}</object></annotation>"))  # beyond width 20
    caplog.clear()
    manifest = import_dataset(str(tmp_path / "src"), tmp_path / "out", "voc", classes=EXAMPLE["names"])
    assert manifest["dropped_boxes"] == 1
    said = [line for line in caplog.messages if "VOC boxes dropped" in line]
    assert len(said) == 1 and "1 VOC boxes dropped, no area left inside their image" in said[0], said
    assert f"'{xml}'" in said[0]


# provenance of content published twice


def _coco_ids(root: Path, ids: list[int]) -> None:
    """Renumber the COCO source's category ids (the same classes, boxes and images: the same imported content)."""
    for path in (root / "annotations").glob("*.json"):
        spec = json.loads(path.read_text())
        old = [c["id"] for c in spec["categories"]]
        for cat, new in zip(spec["categories"], ids, strict=True):
            cat["id"] = new
        for ann in spec["annotations"]:
            ann["category_id"] = ids[old.index(ann["category_id"])]
        path.write_text(json.dumps(spec))


def test_content_published_twice_keeps_each_publications_own_source_and_category_ids(stack_env, tmp_path):
    from distill.steps import tracking
    from distill.steps.common import fetch_dataset
    from distill.steps.prepare_data import prepare_data

    example = {**EXAMPLE, "names": ["provenance a", "provenance b"]}  # content no other test publishes
    WRITERS["coco"](example, tmp_path / "first")
    WRITERS["coco"](example, tmp_path / "second")
    _coco_ids(tmp_path / "second", [3, 9])
    first = prepare_data(str(tmp_path / "first"), "coco")
    second = prepare_data(str(tmp_path / "second"), "coco", run_id="provenance-run")
    assert second["hash"] == first["hash"] and (first["uploaded"], second["uploaded"]) == (True, False)
    assert (first["category_ids"], second["category_ids"]) == ([0, 7], [3, 9])
    manifest = json.loads(storage.read_bytes(f"{first['uri']}/manifest.json"))
    assert not {"source", "format", "category_ids", "dropped_boxes"} & set(manifest), sorted(manifest)
    records = [json.loads(storage.read_bytes(r["publication"])) for r in (first, second)]
    assert [(r["source"], r["category_ids"], r["hash"]) for r in records] == [
        (str(tmp_path / "first"), [0, 7], first["hash"]),
        (str(tmp_path / "second"), [3, 9], first["hash"]),
    ]
    assert prepare_data(str(tmp_path / "second"), "coco")["publication"] == second["publication"]  # once each
    params = tracking.client().get_run(second["mlflow_run_id"]).data.params
    assert params["category_ids"] == "3,9" and params["publication"] == second["publication"]
    assert fetch_dataset(first["uri"]).is_file()  # the content-only manifest still reads


# symbolic links to folders in a local pool


@pytest.mark.fast
def test_symlinked_folders_of_a_pool_are_skipped_counted_and_said(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    noise(elsewhere / "far.png", 2)
    capture = tmp_path / "capture"
    noise(capture / "a.png", 3)
    (capture / "linked").symlink_to(elsewhere, target_is_directory=True)
    caplog.clear()
    scan = scan_pool(str(capture), capture, Where(capture))
    pool = build_pool(scan, tmp_path / "pool", {"hash": "x", "files": {}})
    assert (pool["images"], pool["skipped_links"]) == (1, 1)
    said = [line for line in caplog.messages if "symbolic links to folders skipped" in line]
    assert len(said) == 1 and f"unlabelled source '{capture}': 1 symbolic links" in said[0]
    assert f"'{capture / 'linked'}'" in said[0]

    from distill.engine.pseudo_labels import find_images

    caplog.clear()
    assert list(find_images(capture, tmp_path / "pseudo")) == ["a.png"]
    said = [line for line in caplog.messages if "symbolic links to folders skipped" in line]
    assert len(said) == 1 and f"pseudo-labels: images '{capture}': 1 symbolic links" in said[0]


# base64 with line breaks


@pytest.mark.fast
def test_base64_with_mime_line_breaks_decodes_and_the_alphabet_is_still_checked():
    limits = {name: default for name, (_, default) in LIMITS.items()}
    raw = coco8_images("val")[0].read_bytes()
    mime = base64.encodebytes(raw)  # a line break every 76 characters, as e-mail and `openssl base64` write it
    assert b"\n" in mime[:100]
    assert image_bytes(mime.decode(), 0, limits, False) == raw
    assert image_bytes(mime, 0, limits, False) == raw
    assert image_bytes(mime.decode().replace("\n", "\r\n"), 0, limits, False) == raw
    for bad in (mime.decode().replace("\n", "\n*", 1), "\n \t\n"):
        with pytest.raises(MlflowException, match=NOT_BASE64):
            image_bytes(bad, 0, limits, False)


@pytest.mark.fast
@pytest.mark.parametrize("params, named", [
    ({"backend": "tensorrt-" * 8}, r"params\.backend ('[^']*') must be one of torch, onnx"),
    ({"conf": "0." + "9" * 40}, r"params\.conf must be a number in \[0, 1\], got ('[^']*')$"),
])  # fmt: skip
def test_the_served_model_names_a_long_bad_param_with_its_closing_quote(params, named):
    with pytest.raises(MlflowException) as refused:
        request_options(params, default_imgsz=64, max_imgsz=2048)
    shown = re.search(named, refused.value.message)
    assert shown and len(shown.group(1)) == 20 and shown.group(1).endswith("...'"), refused.value.message


@pytest.mark.fast
def test_the_pyfunc_model_predicts_the_same_on_mime_base64(teacher):
    model = YoloModel()
    model.load_context(PythonModelContext(artifacts={"weights": str(teacher)}, model_config={"imgsz": 64}))
    images = [p.read_bytes() for p in coco8_images("val")[:2]]
    params = {"conf": 0.0, "imgsz": 64, "device": "cpu"}
    plain = model.predict(None, pd.DataFrame({"image": [base64.b64encode(b).decode() for b in images]}), params)
    mime = model.predict(None, pd.DataFrame({"image": [base64.encodebytes(b).decode() for b in images]}), params)
    assert len(plain) > 0 and mime.equals(plain)
