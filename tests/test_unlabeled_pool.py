"""prepare-data --unlabeled: an unlabelled pool beside the dataset, against the real stack (SeaweedFS + MLflow).

The images are small synthetic ones written here with cv2 (random noise, so every seed is a different file); an image
"identical" to another is a byte copy of it, the way a frame labelled into val later is the same file as the one
still in the capture folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import cli, one_error_line

from distill import DistillError
from distill.data import storage
from distill.steps import tracking
from distill.steps.common import fetch_pool
from distill.steps.prepare_data import import_dataset, prepare_data

COUNTS = ("ignored_label_files", "ignored_other_files", "unreadable", "leaked_into_val_test", "in_labelled_train",
          "duplicates")  # fmt: skip


def image(path: Path, seed: int, size: int = 24) -> Path:
    """Write a noise image (``.jpg`` or ``.png`` by ``path``'s suffix) that no other seed reproduces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset(root: Path, seed: int = 0) -> Path:
    """A YOLO dataset: two train images, one val, one test, one box each."""
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for k in range(n):
            image(root / "images" / split / f"{split}{k}.png", seed * 100 + len(split) * 10 + k)
            label = root / "labels" / split / f"{split}{k}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("0 0.5 0.5 0.4 0.4\n")
    spec = {"train": "images/train", "val": "images/val", "test": "images/test", "names": ["thing"]}
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("labelled") / "ds")


def pool_folder(root: Path, ds: Path) -> dict[str, Path]:
    """A capture folder with every case; return the images that must be kept, by their path in the folder."""
    keep = {
        "cam1/a.jpg": image(root / "cam1" / "a.jpg", 1001),
        "cam2/a.jpg": image(root / "cam2" / "a.jpg", 1002),  # the same name in another folder: both kept
        "cam2/night/b.png": image(root / "cam2" / "night" / "b.png", 1003),
    }
    copy(keep["cam1/a.jpg"], root / "cam1" / "a-again.jpg")  # a repeat
    (root / "cam1" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # label files: ignored
    (root / "labels" / "old.txt").parent.mkdir()
    (root / "labels" / "old.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "notes.md").write_text("captured 2026-11\n")  # another file: ignored
    (root / "cam2" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # corrupt
    copy(ds / "images" / "val" / "val0.png", root / "cam1" / "labelled-later.png")  # leaks
    copy(ds / "images" / "test" / "test0.png", root / "cam2" / "test-frame.png")
    copy(ds / "images" / "train" / "train0.png", root / "cam2" / "train-frame.png")  # already labelled
    return keep


def test_pool_from_a_folder_is_checked_counted_and_content_addressed(stack_env, labelled, tmp_path):
    keep = pool_folder(tmp_path / "capture", labelled)
    broken = (tmp_path / "capture" / "cam2" / "broken.jpg").read_bytes()
    result = prepare_data(str(labelled), "yolo", unlabeled=str(tmp_path / "capture"), run_id="pool-a")
    pool = result["unlabeled"]
    counts = dict(zip(COUNTS, (2, 1, 1, 2, 1, 1), strict=True))
    assert {k: pool[k] for k in ("images", *COUNTS)} == {"images": 3, **counts}
    assert pool["source"] == str(tmp_path / "capture") and pool["uploaded"] is True
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    assert pool["uri"] == f"{prefix}/pools/{pool['hash']}"
    files = {f"images/{sha(p)[:16]}{p.suffix}": sha(p) for p in keep.values()}
    root = storage.parse_s3_uri(pool["uri"]).key
    manifest = json.loads(storage.read_bytes(f"{pool['uri']}/manifest.json"))
    assert [s["files"] for s in manifest["shards"]] == [sorted(files)]  # one shard of the pool's images
    shard_keys = [f"{root}/shards/{s['name']}" for s in manifest["shards"]]
    assert sorted(storage.list_keys(pool["uri"])) == sorted([*shard_keys, f"{root}/manifest.json"])
    assert manifest["files"] == files and manifest["hash"] == pool["hash"] and manifest["kind"] == "unlabeled-pool"
    record = json.loads(storage.read_bytes(pool["publication"]))  # this publication's provenance, beside the content
    assert not {"source", "dataset", *COUNTS} & set(manifest) and manifest["images"] == pool["images"]
    assert record["dataset"] == result["hash"] and record["source"] == pool["source"]
    assert {k: record[k] for k in COUNTS} == {k: pool[k] for k in COUNTS}
    assert (tmp_path / "capture" / "cam2" / "broken.jpg").read_bytes() == broken  # the user's files untouched
    plain = prepare_data(str(labelled), "yolo")  # the dataset is the same with or without a pool
    assert plain["hash"] == result["hash"] and "unlabeled" not in plain
    again = prepare_data(str(labelled), "yolo", unlabeled=str(tmp_path / "capture"))
    assert again["unlabeled"]["hash"] == pool["hash"] and again["unlabeled"]["uploaded"] is False
    run = tracking.client().get_run(result["mlflow_run_id"])
    assert run.data.tags[tracking.TAG_STEP] == f"prepare-data-{result['hash'][:12]}-pool-{pool['hash'][:12]}"
    assert run.data.params["unlabeled_hash"] == pool["hash"] and run.data.params["unlabeled_uri"] == pool["uri"]
    assert run.data.metrics["unlabeled/images"] == 3 and run.data.metrics["unlabeled/leaked_into_val_test"] == 2
    local = fetch_pool(pool["uri"])
    assert {f"images/{p.name}": sha(p) for p in local.iterdir()} == files


def test_pool_from_an_s3_zip_and_a_growing_s3_prefix(stack_env, labelled, tmp_path):
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    archive = tmp_path / "pool.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(image(tmp_path / "z" / "a.png", 2001), "capture/a.png")
        zf.write(image(tmp_path / "z" / "b.jpg", 2002), "capture/sub/b.jpg")
        zf.writestr("__MACOSX/capture/._a.png", b"\x00\x05\x16\x07 resource fork")  # macOS debris: not an image
        zf.writestr("capture/labels/a.txt", "0 0.5 0.5 0.2 0.2\n")
    storage.upload_file(archive, f"{prefix}/sources/pool.zip")
    zipped = prepare_data(str(labelled), "yolo", unlabeled=f"{prefix}/sources/pool.zip")["unlabeled"]
    assert (zipped["images"], zipped["ignored_label_files"], zipped["ignored_other_files"]) == (2, 1, 1)
    assert zipped["source"] == f"{prefix}/sources/pool.zip" and zipped["unreadable"] == 0
    capture = f"{prefix}/capture/weekly"  # a prefix that grows between scheduled runs: each run names its snapshot
    for k in range(2):
        storage.upload_file(image(tmp_path / "w" / f"{k}.png", 3000 + k), f"{capture}/day{k}/{k}.png")
    monday = prepare_data(str(labelled), "yolo", unlabeled=capture)["unlabeled"]
    storage.upload_file(image(tmp_path / "w" / "2.png", 3002), f"{capture}/day2/2.png")
    tuesday = prepare_data(str(labelled), "yolo", unlabeled=capture)["unlabeled"]
    assert (monday["images"], tuesday["images"]) == (2, 3) and monday["hash"] != tuesday["hash"]
    assert json.loads(storage.read_bytes(f"{monday['uri']}/manifest.json"))["images"] == 2  # still there, unchanged


def test_source_without_images_is_one_line_exit_2_and_writes_nothing(stack_env, labelled, tmp_path):
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    empty = tmp_path / "export"
    (empty / "labels").mkdir(parents=True)
    (empty / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (empty / "data.yaml").write_text("names: [thing]\n")
    before = {p: sorted(storage.list_keys(f"{prefix}/{p}")) for p in ("pools", "datasets")}
    proc = cli("step", "prepare-data", "--source", str(labelled), "--unlabeled", str(empty), check=False)
    line = one_error_line(proc, 2, start=f"unlabelled source '{empty}' holds no images", alone=True)
    assert "1 label files and 1 other files" in line
    with pytest.raises(DistillError, match=f"unlabelled source '{tmp_path / 'missing'}' not found"):
        prepare_data(str(labelled), "yolo", unlabeled=str(tmp_path / "missing"))
    assert {p: sorted(storage.list_keys(f"{prefix}/{p}")) for p in ("pools", "datasets")} == before


def test_pool_that_only_leaks_is_refused_before_anything_is_uploaded(stack_env, tmp_path):
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    ds = dataset(tmp_path / "ds", seed=7)  # a dataset no other test publishes
    digest = import_dataset(str(ds), tmp_path / "local")["hash"]
    copy(ds / "images" / "val" / "val0.png", tmp_path / "capture" / "v.png")
    copy(ds / "images" / "val" / "val0.png", tmp_path / "capture" / "again" / "v.png")
    copy(ds / "images" / "test" / "test0.png", tmp_path / "capture" / "t.png")
    copy(ds / "images" / "train" / "train1.png", tmp_path / "capture" / "known.png")
    before = sorted(storage.list_keys(f"{prefix}/pools"))
    with pytest.raises(DistillError) as refused:
        prepare_data(str(ds), "yolo", unlabeled=str(tmp_path / "capture"))
    message = str(refused.value)
    assert "\n" not in message and message == (
        f"unlabelled source '{tmp_path / 'capture'}': no image is left to pool "
        "(of 4: 3 identical to val/test images, 1 identical to train images)"
    )
    assert storage.head(f"{prefix}/datasets/{digest}/manifest.json") is None  # the dataset was not published either
    assert sorted(storage.list_keys(f"{prefix}/pools")) == before
