"""Property-based importer tests: generated datasets in YOLO, VOC and COCO layouts, valid and damaged.

A valid dataset must import to exactly the boxes it was generated with (an independent reading: the generator's
own pixel boxes, normalised here, not the importer's output parsed back); a damaged one must be refused with one
``DistillError`` naming the damaged file — every kind of damage, each on a few generated datasets. Examples are
derandomised (the same ones on every run, so CI cannot flake); ``HYPOTHESIS_EXAMPLES=N`` searches N times longer.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import cli, one_error_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.errors import DistillError
from distill.steps.prepare_data import import_dataset

#: Generated datasets per format (valid) and per kind of damage; ``HYPOTHESIS_EXAMPLES=N`` multiplies both by N.
SCALE = int(os.environ.get("HYPOTHESIS_EXAMPLES", "1"))
QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
VALID = settings(max_examples=40 * SCALE, deadline=None, derandomize=True, database=None, suppress_health_check=QUIET)
DAMAGED = settings(max_examples=4 * SCALE, deadline=None, derandomize=True, database=None, suppress_health_check=QUIET)

NAME = st.text(string.ascii_letters + " -_", min_size=1, max_size=8).filter(lambda s: s == s.strip())


@st.composite
def image_boxes(draw, n_classes: int, at_least: int = 0) -> dict:
    """One image: a size and unique integer pixel boxes ``(class, x1, y1, x2, y2)`` strictly inside it."""
    w, h = draw(st.integers(12, 40)), draw(st.integers(12, 40))
    box = st.tuples(st.integers(0, n_classes - 1), st.integers(0, w - 2), st.integers(0, h - 2)).flatmap(
        lambda t: st.tuples(
            st.just(t[0]), st.just(t[1]), st.just(t[2]), st.integers(t[1] + 1, w), st.integers(t[2] + 1, h)
        )
    )
    boxes = draw(st.lists(box, min_size=at_least, max_size=4, unique=True))
    return {"w": w, "h": h, "boxes": boxes}


@st.composite
def datasets(draw) -> dict:
    """A dataset: class names, COCO category ids in listing order, and images per split (train's first has a box)."""
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique=True))
    ids = draw(st.lists(st.integers(0, 200), min_size=len(names), max_size=len(names), unique=True))
    splits = {
        "train": [draw(image_boxes(len(names), at_least=1))] + draw(st.lists(image_boxes(len(names)), max_size=2)),
        "val": draw(st.lists(image_boxes(len(names)), min_size=1, max_size=2)),
    }
    if draw(st.booleans()):
        splits["test"] = draw(st.lists(image_boxes(len(names)), min_size=1, max_size=1))
    for split, images in splits.items():
        for k, image in enumerate(images):
            image["file"] = f"{split}_{k}.png"
    return {"names": names, "ids": ids, "splits": splits, "names_as_dict": draw(st.booleans())}


def expected(ds: dict) -> dict[str, dict[str, list[tuple]]]:
    """The generator's boxes as YOLO rows (class, cx, cy, w, h normalised), per split and image."""
    out = {}
    for split, images in ds["splits"].items():
        out[split] = {}
        for img in images:
            w, h = img["w"], img["h"]
            rows = [
                (c, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
                for c, x1, y1, x2, y2 in img["boxes"]
            ]
            out[split][img["file"]] = sorted(rows)
    return out


def _png(path: Path, img: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((img["h"], img["w"], 3), 127, np.uint8))


def write_yolo(ds: dict, root: Path) -> None:
    names = dict(enumerate(ds["names"])) if ds["names_as_dict"] else ds["names"]
    spec = {split: f"images/{split}" for split in ds["splits"]} | {"names": names}
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    for split, rows in expected(ds).items():
        for img in ds["splits"][split]:
            _png(root / "images" / split / img["file"], img)
            label = root / "labels" / split / f"{Path(img['file']).stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(f"{c} {cx!r} {cy!r} {w!r} {h!r}\n" for c, cx, cy, w, h in rows[img["file"]]))


def write_voc(ds: dict, root: Path) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, images in ds["splits"].items():
        stems = [Path(img["file"]).stem for img in images]
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for img, stem in zip(images, stems, strict=True):
            _png(root / "JPEGImages" / img["file"], img)
            objects = "".join(
                f"<object><name>{ds['names'][c]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                for c, x1, y1, x2, y2 in img["boxes"]
            )
            xml = f"<annotation><filename>{img['file']}</filename><size><width>{img['w']}</width>"
            xml += f"<height>{img['h']}</height><depth>3</depth></size>{objects}</annotation>"
            (root / "Annotations" / f"{stem}.xml").write_text(xml)


def write_coco(ds: dict, root: Path) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": cid, "name": name} for cid, name in zip(ds["ids"], ds["names"], strict=True)]
    for split, images in ds["splits"].items():
        spec = {"images": [], "annotations": [], "categories": categories}
        for k, img in enumerate(images):
            _png(root / "images" / split / img["file"], img)
            spec["images"].append({"id": 1000 + k, "file_name": img["file"], "width": img["w"], "height": img["h"]})
            for c, x1, y1, x2, y2 in img["boxes"]:
                bbox = [x1, y1, x2 - x1, y2 - y1]
                spec["annotations"].append({"id": len(spec["annotations"]) + 1, "image_id": 1000 + k,
                                            "category_id": ds["ids"][c], "bbox": bbox, "iscrowd": 0})  # fmt: skip
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(spec))


WRITERS: dict[str, Callable[[dict, Path], None]] = {"yolo": write_yolo, "voc": write_voc, "coco": write_coco}


def imported(out: Path) -> dict[str, dict[str, list[tuple]]]:
    result = {}
    for split_dir in sorted((out / "images").iterdir()):
        result[split_dir.name] = {}
        for image in sorted(split_dir.iterdir()):
            text = (out / "labels" / split_dir.name / f"{image.stem}.txt").read_text()
            rows = [tuple(float(v) for v in line.split()) for line in text.splitlines()]
            result[split_dir.name][image.name] = sorted((int(r[0]), *r[1:]) for r in rows)
    return result


def assert_same_boxes(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for split in want:
        assert got[split].keys() == want[split].keys(), split
        for name, rows in want[split].items():
            assert len(got[split][name]) == len(rows), (split, name, got[split][name], rows)
            for a, b in zip(got[split][name], rows, strict=True):
                assert a[0] == b[0] and np.allclose(a[1:], b[1:], atol=2e-6), (split, name, a, b)


@pytest.mark.fast
@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
@VALID
@given(ds=datasets())
def test_valid_datasets_import_to_the_generated_boxes(fmt, ds):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        WRITERS[fmt](ds, src)
        manifest = import_dataset(str(src), out, fmt, classes=ds["names"] if fmt == "voc" else None)
        assert_same_boxes(imported(out), expected(ds))
        assert manifest["names"] == ds["names"] and manifest["dropped_boxes"] == 0
        assert yaml.safe_load((out / "data.yaml").read_text())["names"] == dict(enumerate(ds["names"]))
        if fmt == "coco":  # ids as listed, whatever their values: index k is the k-th category of the file
            assert manifest["category_ids"] == ds["ids"]


# Damages: (file to damage relative to the source, how, text the error must contain besides the file's name).
def _edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    spec = json.loads(path.read_text())
    fn(spec)  # edits in place
    path.write_text(json.dumps(spec))


def _first_ann(spec: dict) -> dict:
    return spec["annotations"][0]


COCO_DAMAGE = {
    "truncated": (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "is not valid JSON"),
    "a list": (lambda p: p.write_text(f"[{p.read_text()}]"), "must be an object"),
    "no images": (lambda p: _edit_json(p, lambda s: s.pop("images")), "'images' must be a list"),
    "category without name": (lambda p: _edit_json(p, lambda s: s["categories"][0].pop("name")), "no name"),
    "category id as text": (lambda p: _edit_json(p, lambda s: s["categories"][0].update(id="a")), "must be an integer"),
    "duplicate category id": (
        lambda p: _edit_json(p, lambda s: s["categories"].append({**s["categories"][0], "name": "zz dup"})),
        "appears twice",
    ),
    "duplicate image id": (
        lambda p: _edit_json(p, lambda s: s["images"].append({**s["images"][0], "file_name": "other.png"})),
        "appears twice",
    ),
    "unknown category": (
        lambda p: _edit_json(p, lambda s: _first_ann(s).update(category_id=999)),
        "is not among the categories",
    ),
    "bbox text": (lambda p: _edit_json(p, lambda s: _first_ann(s)["bbox"].__setitem__(0, "x")), "must be a number"),
    "bbox NaN": (lambda p: _edit_json(p, lambda s: _first_ann(s)["bbox"].__setitem__(2, float("nan"))), "finite"),
    "bbox short": (lambda p: _edit_json(p, lambda s: _first_ann(s)["bbox"].pop()), "bbox must be"),
    "bbox negative": (lambda p: _edit_json(p, lambda s: _first_ann(s)["bbox"].__setitem__(3, -4)), "negative"),
    "image width 0": (lambda p: _edit_json(p, lambda s: s["images"][0].update(width=0)), "must be positive"),
    "image_id text": (lambda p: _edit_json(p, lambda s: _first_ann(s).update(image_id="1")), "must be an integer"),
}


def _edit_xml(path: Path, fn: Callable[[ET.Element], None]) -> None:
    root = ET.fromstring(path.read_text())
    fn(root)
    path.write_text(ET.tostring(root, encoding="unicode"))


VOC_DAMAGE = {
    "truncated": (lambda p: p.write_text(p.read_text()[:40]), "is not valid XML"),
    "xmin text": (lambda p: _edit_xml(p, lambda r: setattr(r.find(".//xmin"), "text", "1O")), "must be a number"),
    "no size": (lambda p: _edit_xml(p, lambda r: r.remove(r.find("size"))), "has no <size>"),
    "width 0": (lambda p: _edit_xml(p, lambda r: setattr(r.find(".//width"), "text", "0")), "must be positive"),
    "no bndbox": (lambda p: _edit_xml(p, lambda r: r.find("object").remove(r.find(".//bndbox"))), "no <bndbox>"),
    "no name": (lambda p: _edit_xml(p, lambda r: setattr(r.find(".//name"), "text", " ")), "has no <name>"),
    "inverted": (lambda p: _edit_xml(p, lambda r: setattr(r.find(".//xmax"), "text", "-3")), "xmax < xmin"),
}


def _edit_label(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    rows = [line.split() for line in path.read_text().splitlines()]
    rows[0] = fn(rows[0])
    path.write_text("".join(" ".join(r) + "\n" for r in rows))


def _edit_yaml(path: Path, fn: Callable[[dict], None]) -> None:
    spec = yaml.safe_load(path.read_text())
    fn(spec)
    path.write_text(yaml.safe_dump(spec))


YOLO_DAMAGE = {
    "class beyond names": (lambda p: _edit_label(p, lambda r: ["7", *r[1:]]), "exceeds dataset class count"),
    "class not integer": (lambda p: _edit_label(p, lambda r: ["0.5", *r[1:]]), "non-integer class"),
    "coordinate text": (lambda p: _edit_label(p, lambda r: [*r[:2], "x", *r[3:]]), "could not convert"),
    "coordinate 1.5": (lambda p: _edit_label(p, lambda r: [*r[:1], "1.5", *r[2:]]), "out of bounds"),
    "coordinate negative": (lambda p: _edit_label(p, lambda r: [*r[:2], "-0.5", *r[3:]]), "negative label"),
    "four columns": (lambda p: _edit_label(p, lambda r: r[:4]), "columns"),
    "names with a gap": (lambda p: _edit_yaml(p, lambda s: s.update(names={0: "a", 2: "b"})), "without gaps"),
    "names empty": (lambda p: _edit_yaml(p, lambda s: s.update(names=[])), "no class names"),
    "name repeated": (lambda p: _edit_yaml(p, lambda s: s.update(names=["a", "a"])), "more than one class"),
    "yaml broken": (lambda p: p.write_text("names: [a, b\ntrain: images/train\n"), "is not valid YAML"),
    "yaml a list": (lambda p: p.write_text("- images/train\n"), "must be a mapping"),
}

DAMAGED_FILE = {  # the file each format's damage lands in: train's first image (the one with a box)
    "coco": lambda ds, kind: "annotations/instances_train.json",
    "voc": lambda ds, kind: f"Annotations/{Path(ds['splits']['train'][0]['file']).stem}.xml",
    "yolo": lambda ds, kind: (
        "data.yaml"
        if kind.startswith(("names", "name ", "yaml"))
        else f"labels/train/{Path(ds['splits']['train'][0]['file']).stem}.txt"
    ),
}
DAMAGE = {"coco": COCO_DAMAGE, "voc": VOC_DAMAGE, "yolo": YOLO_DAMAGE}


def damage(fmt: str, kind: str, ds: dict, src: Path) -> tuple[str, str]:
    """Damage the source in place; return the damaged file's name and the text its error must contain."""
    target = DAMAGED_FILE[fmt](ds, kind)
    how, text = DAMAGE[fmt][kind]
    how(src / target)
    return Path(target).name, text


@pytest.mark.fast
@pytest.mark.parametrize(("fmt", "kind"), [(fmt, kind) for fmt, kinds in DAMAGE.items() for kind in kinds])
@DAMAGED
@given(ds=datasets())
def test_damaged_datasets_are_refused_naming_the_file(fmt, kind, ds):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        WRITERS[fmt](ds, src)
        name, text = damage(fmt, kind, ds, src)
        with pytest.raises(DistillError) as refused:
            import_dataset(str(src), out, fmt)
        message = str(refused.value)
        assert name in message and text in message and "\n" not in message, message


EXAMPLE = {  # one fixed dataset with a class at a COCO id that is not 1..N
    "names": ["disc", "square"],
    "ids": [0, 7],
    "splits": {
        "train": [{"w": 20, "h": 16, "boxes": [(0, 1, 2, 9, 12), (1, 10, 3, 19, 15)], "file": "train_0.png"}],
        "val": [{"w": 16, "h": 16, "boxes": [(1, 0, 0, 16, 16)], "file": "val_0.png"}],
    },
    "names_as_dict": False,
}


@pytest.mark.parametrize(
    ("fmt", "kind"), [("coco", "category without name"), ("voc", "xmin text"), ("yolo", "four columns")]
)
def test_step_refuses_damage_with_one_line_and_publishes_nothing(stack_env, tmp_path, fmt, kind):
    """The step as a pod runs it: one ``error:`` line naming the file, exit 2, nothing new under the S3 prefix."""
    from distill.data import storage

    WRITERS[fmt](EXAMPLE, tmp_path / "src")
    name, _ = damage(fmt, kind, EXAMPLE, tmp_path / "src")
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    before = sorted(storage.list_keys(f"{prefix}/datasets/"))
    proc = cli("step", "prepare-data", "--source", str(tmp_path / "src"), "--format", fmt, check=False)
    one_error_line(proc, 2, contains=name, alone=True)
    assert sorted(storage.list_keys(f"{prefix}/datasets/")) == before


@pytest.mark.fast
def test_coco_imports_only_listed_images_and_counts_boxes_outside(tmp_path):
    """An image on disk the file does not list is not imported as background; a box outside its image is counted."""
    WRITERS["coco"](EXAMPLE, tmp_path / "src")
    _png(tmp_path / "src" / "images" / "train" / "unlisted.png", {"w": 16, "h": 16})
    spec_file = tmp_path / "src" / "annotations" / "instances_train.json"
    spec = json.loads(spec_file.read_text())
    spec["annotations"].append({"id": 99, "image_id": 1000, "category_id": 7, "bbox": [30, 30, 5, 5], "iscrowd": 0})
    spec_file.write_text(json.dumps(spec))
    manifest = import_dataset(str(tmp_path / "src"), tmp_path / "out", "coco")
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "train").iterdir()) == ["train_0.png"]
    assert manifest["dropped_boxes"] == 1 and manifest["category_ids"] == [0, 7]
    assert_same_boxes(imported(tmp_path / "out"), expected(EXAMPLE))


def test_errors_in_an_s3_zip_name_the_uri_and_the_entry(stack_env, tmp_path):
    """A file inside an ``s3://...zip`` is named by the URI and its path in the archive, not a scratch folder."""
    import zipfile

    from distill.data import storage

    WRITERS["coco"](EXAMPLE, tmp_path / "src")
    damage("coco", "unknown category", EXAMPLE, tmp_path / "src")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (tmp_path / "src").rglob("*"):
            zf.write(path, f"shapes/{path.relative_to(tmp_path / 'src')}")
    uri = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/sources/damaged-coco.zip"
    storage.upload_file(archive, uri)
    (tmp_path / "scratch").mkdir()
    with pytest.raises(DistillError) as refused:
        import_dataset(uri, tmp_path / "out", "coco", scratch=tmp_path / "scratch")
    assert f"'{uri}:shapes/annotations/instances_train.json'" in str(refused.value), refused.value
    assert str(tmp_path / "scratch") not in str(refused.value)
    storage.upload_bytes(b"not a zip", uri)
    with pytest.raises(DistillError, match=f"'{uri}' is not a valid zip archive"):
        import_dataset(uri, tmp_path / "out2", "coco", scratch=tmp_path / "scratch")
