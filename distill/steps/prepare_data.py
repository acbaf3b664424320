"""Step 1, prepare-data: import, normalise, validate and publish a dataset.

A YOLO, COCO JSON or Pascal VOC dataset is normalised to the YOLO layout, validated with Ultralytics' own dataset
checks, and published under ``<prefix>/datasets/<content-hash>/``.

The published folder holds ``images/<split>/``, ``labels/<split>/``, ``data.yaml`` and ``manifest.json`` (every file
with its sha256, class names, image and instance counts per split, boxes dropped on import). The hash is computed
over the content, so the same data always lands in the same place and is never uploaded twice; the manifest is
uploaded last, so a folder without one is an interrupted upload, never a dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from .. import storage
from ..errors import DistillError
from . import tracking
from .archive import safe_extract_zip
from .common import resolve_prefix

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORMATS = ("yolo", "coco", "voc")
SPLITS = ("train", "val", "test")
#: data.yaml keys carried over from a YOLO source besides the splits and names.
CARRIED_KEYS = ("kpt_shape", "flip_idx", "kpt_names", "channels")


def prepare_data(
    source: str,
    format: str = "yolo",  # noqa: A002 (the CLI flag's name)
    dest: str | None = None,
    classes: list[str] | str | None = None,
    workdir: str | Path | None = None,
    run_id: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Import, normalise, validate and publish a dataset; return ``uri``, ``data``, ``hash``, counts and names.

    Args:
        source: A local folder, a local ``.zip``, an ``s3://`` prefix or an ``s3://...zip``.
        format: ``yolo`` (a folder with ``data.yaml``), ``coco`` (``annotations/*.json`` + images) or ``voc``.
        dest: ``s3://bucket/prefix`` to publish under (default ``$YOLO_DISTILL_S3_PREFIX``).
        classes: Class names in index order (VOC: default = sorted names found in the files).
        workdir: Scratch folder (default: a temporary one, removed afterwards).
        run_id: Pipeline run this step belongs to; when given, the step is tracked as its MLflow child run.
        experiment: MLflow experiment.
        tracking_uri: MLflow tracking URI.

    Raises:
        DistillError: Unknown format, missing/invalid source, unsafe archive, unknown class, S3 errors.
    """
    if format not in FORMATS:
        raise DistillError(f"unknown dataset format '{format}': choose one of {', '.join(FORMATS)}")
    prefix = resolve_prefix(dest)
    storage.check_bucket(prefix)  # fail before any work on a missing bucket or rejected credentials
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else classes
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        out = tmp / "dataset"
        manifest = import_dataset(source, out, format, names, scratch=tmp)
        digest = manifest["hash"]
        target = prefix.join("datasets", digest)
        uploaded = False
        if storage.head(target.join("manifest.json")) is None:
            storage.upload_dir(out, target)
            storage.upload_bytes(
                json.dumps(manifest, indent=2).encode(), target.join("manifest.json"), "application/json"
            )
            uploaded = True
    result = {
        "uri": str(target),
        "data": str(target.join("data.yaml")),
        "hash": digest,
        "names": manifest["names"],
        "counts": manifest["counts"],
        "dropped_boxes": manifest["dropped_boxes"],
        "uploaded": uploaded,
    }
    if run_id:
        result["mlflow_run_id"] = _track(result, source, format, run_id, experiment, tracking_uri)
    return result


def import_dataset(
    source: str,
    out: str | Path,
    format: str = "yolo",  # noqa: A002 (the CLI flag's name)
    classes: list[str] | None = None,
    scratch: str | Path | None = None,
) -> dict[str, Any]:
    """Import a dataset into a local YOLO folder ``out`` (``data.yaml`` + images/labels) and return its manifest.

    The local half of :func:`prepare_data` (no upload, no tracking), also used by the benchmarks to import BCCD
    exactly as the pipeline does.

    Args:
        source: A local folder, a local ``.zip``, an ``s3://`` prefix or an ``s3://...zip``.
        out: Folder to write (must not hold another dataset).
        format: ``yolo``, ``coco`` or ``voc``.
        classes: Class names in index order (VOC: default = sorted names found in the files).
        scratch: Folder for downloads and extraction (default: a temporary one, removed afterwards).

    Returns:
        (dict): The manifest: ``hash`` (content hash), ``names``, ``counts`` per split, ``dropped_boxes``, ...
    """
    if format not in FORMATS:
        raise DistillError(f"unknown dataset format '{format}': choose one of {', '.join(FORMATS)}")
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        tmp = Path(tmp)
        local = _materialise(source, tmp / "source")
        fetched = storage.is_s3(source) or str(source).lower().endswith(".zip")  # extracted or downloaded here
        if format == "yolo":
            report = _from_yolo(local, out, confine=local if fetched else None)
        elif format == "voc":
            report = _from_voc(local, out, classes)
        else:
            report = _from_coco(local, out, tmp / "coco")
        report["unreadable"] = _drop_unreadable(out)
        _validate(out / "data.yaml")
        return _manifest(out, report, source, format)


def _track(result: dict[str, Any], source: str, fmt: str, run_id: str, experiment, tracking_uri) -> str:
    """Record the import as a ``prepare-data-<hash>`` child run of the pipeline run: params, counts, the URI.

    One child run per dataset, so a pipeline run that prepares two datasets (train and an extra test set) records
    both instead of failing on MLflow's "Changing param values is not allowed".
    """
    with tracking.step_run(run_id, f"prepare-data-{result['hash'][:12]}", experiment, tracking_uri) as run:
        params = {"source": source, "format": fmt, "dataset": result["uri"], "hash": result["hash"],
                  "names": ",".join(result["names"])}  # fmt: skip
        tracking.log_params(run.client, run.child_id, params)
        counts = {f"{split}/{k}": v for split, c in result["counts"].items() for k, v in c.items()}
        tracking.log_metrics(run.client, run.child_id, {**counts, "dropped_boxes": result["dropped_boxes"]}, step=0)
    return run.child_id


def _materialise(source: str, folder: Path) -> Path:
    """Bring the source to a local folder (download from S3, extract archives safely)."""
    if storage.is_s3(source):
        if source.lower().endswith(".zip"):
            archive = storage.download_file(source, folder.with_suffix(".zip"))
            return safe_extract_zip(archive, folder)
        storage.download_prefix(source, folder)
        return folder
    path = Path(source)
    if not path.exists():
        raise DistillError(f"dataset source '{source}' not found")
    if path.is_file() and path.suffix.lower() == ".zip":
        return safe_extract_zip(path, folder)
    return path


def _find_root(folder: Path, marker: str) -> Path:
    """Return the folder at or below ``folder`` holding ``marker`` (archives often wrap everything in one folder)."""
    if (folder / marker).exists():
        return folder
    hits = sorted(p.parent for p in folder.rglob(marker))
    if not hits:
        raise DistillError(f"'{folder}' has no {marker}")
    return hits[0]


def _put(out: Path, split: str, image: Path, lines: list[str]) -> None:
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    target = img_dir / image.name
    if target.exists():
        raise DistillError(f"two images named '{image.name}' in split '{split}'")
    shutil.copyfile(image, target)
    (lbl_dir / f"{image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))


def _write_yaml(out: Path, names: list[str], splits: list[str], extra: dict[str, Any]) -> None:
    data = {s: f"images/{s}" for s in splits}  # no 'path' key: resolved against the yaml's folder
    data["names"] = dict(enumerate(names))
    data.update(extra)
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _drop_unreadable(out: Path) -> dict[str, int]:
    """Remove images Ultralytics' own check refuses (and their labels); return how many per split.

    Ultralytics would skip them at training time with a warning only; counting them here puts them in the manifest
    and the step's result, and a split left without images is refused instead of training on nothing.
    """
    from ultralytics.data.utils import check_image
    from ultralytics.utils import LOGGER

    dropped = {}
    for split_dir in sorted(p for p in (out / "images").iterdir() if p.is_dir()):
        images = sorted(split_dir.iterdir())
        bad = 0
        for image in images:
            try:
                check_image(str(image))
            except Exception as e:  # PIL's errors, Ultralytics' size/format assertions
                LOGGER.warning(f"prepare-data: skipping unreadable image '{image.name}' ({split_dir.name}): {e}")
                image.unlink()
                (out / "labels" / split_dir.name / f"{image.stem}.txt").unlink(missing_ok=True)
                bad += 1
        if bad == len(images):
            raise DistillError(f"split '{split_dir.name}' has no readable images ({bad} unreadable)")
        dropped[split_dir.name] = bad
    return dropped


def _from_yolo(folder: Path, out: Path, confine: Path | None = None) -> dict[str, Any]:
    """Import a YOLO dataset; with ``confine`` (an extracted archive, a download) every path must stay inside it."""
    from ultralytics.data.utils import img2label_paths

    def inside(path: Path, what: str) -> Path:
        if confine is not None and not path.resolve().is_relative_to(confine.resolve()):
            raise DistillError(f"'{yaml_file.name}': {what} '{path}' points outside the archive; refused")
        return path

    yaml_file = (folder if folder.is_file() else _find_root(folder, "data.yaml") / "data.yaml").resolve()
    spec = yaml.safe_load(yaml_file.read_text()) or {}
    base = Path(spec.get("path") or yaml_file.parent)
    base = inside(base if base.is_absolute() else (yaml_file.parent / base), "path")
    names = spec.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise DistillError(f"'{yaml_file}' has no class names")
    splits = []
    for split in SPLITS:
        entry = spec.get(split)
        if not entry:
            continue
        images = []
        for item in entry if isinstance(entry, list) else [entry]:
            p = inside((base / item).resolve(), f"{split} path")
            if p.is_dir():
                images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            elif p.is_file() and p.suffix == ".txt":
                listed = [(p.parent / line.strip()).resolve() for line in p.read_text().splitlines() if line.strip()]
                images += [inside(image, f"{split} image") for image in listed]
            else:
                raise DistillError(f"'{yaml_file}': {split} path '{item}' not found")
        labels = img2label_paths([str(i) for i in images])
        for image, label in zip(images, labels, strict=True):
            lines = Path(label).read_text().splitlines() if Path(label).is_file() else []
            _put(out, split, image, [ln.strip() for ln in lines if ln.strip()])
        splits.append(split)
    if "train" not in splits or "val" not in splits:
        raise DistillError(f"'{yaml_file}' must define train and val splits")
    _write_yaml(out, names, splits, {k: spec[k] for k in CARRIED_KEYS if k in spec})
    return {"names": names, "dropped_boxes": 0}


def _voc_objects(xml_file: Path) -> tuple[str, int, int, list[tuple[str, float, float, float, float]]]:
    root = ET.parse(xml_file).getroot()
    size = root.find("size")
    w, h = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((obj.findtext("name").strip(), *coords))
    return root.findtext("filename"), w, h, objects


def _from_voc(folder: Path, out: Path, names: list[str] | None) -> dict[str, Any]:
    root = _find_root(folder, "Annotations")
    xmls = sorted((root / "Annotations").glob("*.xml"))
    if not xmls:
        raise DistillError(f"'{root / 'Annotations'}' has no .xml files")
    parsed = {x.stem: _voc_objects(x) for x in xmls}
    found = sorted({o[0] for *_, objs in parsed.values() for o in objs})
    if names is None:
        names = found
    unknown = {}
    for stem, (*_, objs) in parsed.items():
        for o in objs:
            if o[0] not in names:
                unknown.setdefault(o[0], stem)
    if unknown:
        cls, stem = next(iter(unknown.items()))
        raise DistillError(f"VOC file '{stem}.xml' has class '{cls}', which is not in the class list {names}")
    split_dir = root / "ImageSets" / "Main"
    split_of: dict[str, str] = {}
    for split in SPLITS:
        f = split_dir / f"{split}.txt"
        if f.is_file():
            for line in f.read_text().split():
                split_of[line.strip()] = split
    if not split_of:  # no split lists: a deterministic 80/20 train/val split by name hash
        for stem in parsed:
            split_of[stem] = "val" if int(hashlib.sha256(stem.encode()).hexdigest(), 16) % 5 == 0 else "train"
    dropped = 0
    used = set()
    for stem, (filename, w, h, objs) in parsed.items():
        split = split_of.get(stem)
        if split is None:
            continue
        image = root / "JPEGImages" / (filename or f"{stem}.jpg")
        if not image.is_file():
            image = next(
                (p for p in (root / "JPEGImages").glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES), None
            )
            if image is None:
                raise DistillError(f"VOC image for '{stem}.xml' not found in JPEGImages")
        lines = []
        for cls, x1, y1, x2, y2 in objs:
            x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
            y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                dropped += 1  # degenerate (zero or negative size after clipping)
                continue
            cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            lines.append(f"{names.index(cls)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        _put(out, split, image, lines)
        used.add(split)
    splits = [s for s in SPLITS if s in used]
    if "train" not in splits or "val" not in splits:
        raise DistillError(f"VOC dataset '{root}' needs train and val images (split lists in ImageSets/Main)")
    _write_yaml(out, names, splits, {})
    return {"names": names, "dropped_boxes": dropped}


def _from_coco(folder: Path, out: Path, scratch: Path) -> dict[str, Any]:
    """Import COCO JSON (``annotations/*_<split>.json``, images in ``images/<split>/``) with Ultralytics' converter."""
    from ultralytics.data.converter import convert_coco

    root = _find_root(folder, "annotations")
    jsons = sorted((root / "annotations").glob("*.json"))
    if not jsons:
        raise DistillError(f"'{root / 'annotations'}' has no COCO .json files")
    categories = {}
    orphans = 0
    clean = scratch.with_name(f"{scratch.name}-json")  # the JSON without orphans (the converter crashes on them)
    clean.mkdir(parents=True)
    for j in jsons:
        try:
            spec = json.loads(j.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DistillError(f"COCO file '{j.name}' is not valid JSON: {e}") from None
        for cat in spec.get("categories", []):
            categories[cat["id"]] = cat["name"]
        orphans += _drop_orphan_annotations(spec, root, j)
        (clean / j.name).write_text(json.dumps(spec))
    convert_coco(labels_dir=str(clean), save_dir=str(scratch), cls91to80=False, use_segments=False)
    names = [categories[k] for k in sorted(categories)]
    splits = []
    for label_dir in sorted((scratch / "labels").iterdir()):
        split = next((s for s in SPLITS if label_dir.name.endswith(s)), None)
        if split is None:
            continue
        image_dir = root / "images" / split
        if not image_dir.is_dir():
            image_dir = root / "images" / label_dir.name
        for image in sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            label = label_dir / f"{image.stem}.txt"
            lines = label.read_text().splitlines() if label.is_file() else []
            _put(out, split, image, [ln.strip() for ln in lines if ln.strip()])
        splits.append(split)
    if "train" not in splits or "val" not in splits:
        raise DistillError(f"COCO dataset '{root}' needs train and val annotation files")
    _write_yaml(out, names, splits, {})
    return {"names": names, "dropped_boxes": orphans}


def _drop_orphan_annotations(spec: dict[str, Any], root: Path, json_file: Path) -> int:
    """Remove (count, warn about) the annotations whose image is not in the JSON's image list or not on disk.

    Ultralytics' converter drops the second kind silently and crashes on the first; both are counted as dropped boxes
    in the manifest and the step's result.
    """
    from ultralytics.utils import LOGGER

    on_disk = {p.name for p in (root / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    present = {img["id"] for img in spec.get("images", []) if Path(str(img.get("file_name", ""))).name in on_disk}
    orphans = [a for a in spec.get("annotations", []) if a.get("image_id") not in present]
    spec["annotations"] = [a for a in spec.get("annotations", []) if a.get("image_id") in present]
    if orphans:
        missing = sorted({str(a.get("image_id")) for a in orphans})
        LOGGER.warning(
            f"prepare-data: {json_file.name}: {len(orphans)} annotations name {len(missing)} images that are not in "
            f"its image list or not on disk (image ids {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}); "
            "dropped"
        )
    return len(orphans)


def _validate(data_yaml: Path) -> None:
    """Run Ultralytics' own dataset check (no downloads) on the normalised dataset."""
    from ultralytics.data.utils import check_det_dataset

    try:
        check_det_dataset(str(data_yaml), autodownload=False)
    except Exception as e:
        raise DistillError(f"the imported dataset failed Ultralytics' checks: {e}") from None


def _manifest(out: Path, report: dict[str, Any], source: str, fmt: str) -> dict[str, Any]:
    files = {p.relative_to(out).as_posix(): storage.sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    counts = {}
    for split_dir in sorted((out / "images").iterdir()):
        labels = list((out / "labels" / split_dir.name).glob("*.txt"))
        counts[split_dir.name] = {
            "images": sum(1 for _ in split_dir.iterdir()),
            "instances": sum(len(p.read_text().splitlines()) for p in labels),
            "unreadable": report.get("unreadable", {}).get(split_dir.name, 0),
        }
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()[:16]
    return {
        "hash": digest,
        "format": fmt,
        "source": str(source),
        "names": report["names"],
        "counts": counts,
        "dropped_boxes": report["dropped_boxes"],
        "files": files,
    }
