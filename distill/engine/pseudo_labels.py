"""Pseudo-labels: a teacher's predictions on unlabelled images, written as a YOLO dataset split (issue 21).

:func:`pseudo_label` runs Ultralytics' own predictor (its letterbox, its NMS) over a folder of images — typically an
unlabelled pool from :func:`distill.steps.common.fetch_pool` — and writes what it keeps above ``conf`` in the label
format Ultralytics' datasets use for the teacher's task, so its own loader reads them unchanged:

- detect: ``cls cx cy w h`` (normalised, ``result.boxes.xywhn``);
- segment: ``cls x1 y1 x2 y2 ...`` (normalised polygon, ``result.masks.xyn``). A detection whose mask has no
  contour of 3 points is left out and counted (``dropped``), as Ultralytics' ``Results.save_txt`` does: a shorter row
  is no polygon, and one box-only row among polygons makes the loader refuse the whole file;
- pose: ``cls cx cy w h`` then ``x y v`` per keypoint. The loader and the loss read visibility as a mask
  (``v != 0``), never as a weight, so the teacher's keypoint confidence (a sigmoid near but never at 0) written raw
  would mark every keypoint visible. A keypoint at or above ``kpt_conf`` is written ``x y 2`` (visible), one below it
  ``0 0 0`` (not labelled, as COCO writes it). The default 0.5 is the decision boundary of the confidence's own
  training objective (binary cross-entropy against "labelled"). A ``kpt_shape`` of ndim 2 is written ``x y``.

The result (``out``) is ``images/`` (the images, hard-linked: no second copy on disk, and unlike a symlink it outlives
the pool cache it came from; Ultralytics replaces an image it restores atomically, so a link never changes its
source; copied where a hard link is impossible, as across file systems), ``labels/``, ``data.yaml`` (``train:
images``, ``val`` empty: predictions are no ground truth to validate on) and ``pseudo.json`` (the cache key and the
counts), written last and atomically: a run interrupted before it is redone, never half-used.

An image with no prediction above ``conf`` gets an empty label file, which Ultralytics reads as a background image
(no objects). For an unlabelled image that is a claim nobody made, so every such image is listed
(:attr:`PseudoLabels.empty`) and the training side decides whether to use it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..data.image_files import IMAGE_SUFFIXES, yolo_line
from ..errors import DistillError
from ..progress import Progress
from ..settings import training

TASKS = ("detect", "segment", "pose")
#: The record's name; its presence with a matching key is what makes ``out`` complete.
RECORD = "pseudo.json"
#: Bumped when the files written for the same key change, so older outputs are redone.
FORMAT = 1


@dataclass(frozen=True)
class PseudoLabels:
    """A folder of pseudo-labelled images: a YOLO dataset whose ``train`` split is every image.

    Attributes:
        folder: The output folder (``images/``, ``labels/``, ``data.yaml``, ``pseudo.json``).
        data: Its ``data.yaml``.
        task: The teacher's task (detect, segment or pose), and so the label format.
        images: How many images were labelled (each has a label file, possibly empty).
        labelled: How many images have at least one instance.
        empty: Names (in ``images/``) of the images without any instance: their label files are empty.
        instances: Label rows written, all images together.
        per_class: Label rows per class name, classes with rows only (in class order).
        cached: True when an earlier run's result for the same key was returned without predicting.
        key: The cache key (teacher, images, conf, imgsz, task, keypoint threshold).
    """

    folder: Path
    data: Path
    task: str
    images: int
    labelled: int
    empty: list[str]
    instances: int
    per_class: dict[str, int]
    cached: bool
    key: str


@dataclass(frozen=True)
class Teacher:
    """What labelling needs to know of a teacher checkpoint, read once through the restricted loader."""

    path: Path
    sha256: str
    task: str
    names: dict[int, str]
    kpt_shape: list[int] | None


def pseudo_label(
    teacher: str | Path,
    images: str | Path,
    out: str | Path,
    conf: float = 0.25,
    imgsz: int | None = None,
    device: str | None = None,
    batch: int | None = None,
    *,
    pool_hash: str | None = None,
    kpt_conf: float = 0.5,
) -> PseudoLabels:
    """Label every image under ``images`` with ``teacher``'s predictions; write a YOLO dataset to ``out``.

    Cached: when ``out/pseudo.json`` holds the same key and every file it lists is present, that result is returned
    without predicting (``cached=True``). Otherwise the folders this function owns in ``out`` (``images``, ``labels``,
    ``labels.cache``, ``data.yaml``, ``pseudo.json``) are replaced; nothing else in ``out`` is touched.

    Args:
        teacher: Local Ultralytics ``.pt`` checkpoint of a detect, segment or pose model.
        images: Folder searched recursively for images (the suffixes of the dataset importers); hidden files and
            ``labels``/``annotations`` folders are skipped, as for unlabelled pools. File names must be unique by
            stem, since each image's label file is ``labels/<stem>.txt``.
        out: Output folder (created).
        conf: Confidence threshold of the predictor, in (0, 1].
        imgsz: Inference size (``None``: the training option's default, :data:`distill.settings.TRAINING`).
        device: Ultralytics device string (``cpu``, ``0``); ``None`` lets Ultralytics choose.
        batch: Images per predictor batch (``None``: the training option's default).
        pool_hash: The images' content hash when known (an unlabelled pool's hash), used in the cache key instead
            of hashing every image; it must name these exact files.
        kpt_conf: Pose only: keypoint confidence from which a keypoint is written visible.

    Returns:
        (PseudoLabels): Where the dataset is and what it holds.

    Raises:
        DistillError: A bad setting, a missing or unreadable teacher, a task other than detect/segment/pose, no
            images, or image names that collide.

    Examples:
        >>> result = pseudo_label("teacher.pt", "pool/images", "pseudo", conf=0.25)  # doctest: +SKIP
        >>> result.data, result.empty[:1]  # doctest: +SKIP
        (PosixPath('pseudo/data.yaml'), ['3f2a9c0d1e2b4a5c.jpg'])
    """
    from ..offline import configure

    imgsz, batch = (training({"imgsz": imgsz, "batch": batch}, ["imgsz", "batch"])[k] for k in ("imgsz", "batch"))
    check_settings(conf, imgsz, batch, kpt_conf)
    configure()  # Ultralytics offline, before it is first imported (a no-op once done)
    out = Path(out)
    files = find_images(Path(images), out)
    model = load_teacher(teacher)
    key = cache_key(model, files, pool_hash, conf, imgsz, kpt_conf)
    cached = read_cached(out, key)
    if cached is not None:
        return cached
    return _label(model, files, out, key, conf=conf, imgsz=imgsz, device=device, batch=batch, kpt_conf=kpt_conf)


def check_settings(conf: float, imgsz: int, batch: int, kpt_conf: float) -> None:
    """Refuse settings the predictor would misread or silently clamp, before any work."""
    for name, value in (("conf", conf), ("kpt_conf", kpt_conf)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise DistillError(f"{name} must be a number in (0, 1], got {value!r}")
    for name, value in (("imgsz", imgsz), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistillError(f"{name} must be a positive integer, got {value!r}")


def find_images(images: Path, out: Path, *, warn: bool = True) -> dict[str, Path]:
    """Return ``{file name: path}`` of the images under ``images``, sorted by name.

    Symbolic links to folders are not followed (a link can point anywhere): how many were skipped is one warning
    (``warn=False``: none, for a caller that looks at the images before :func:`pseudo_label` does).

    Raises:
        DistillError: ``images`` is not a folder, holds ``out`` or lies in what ``out`` replaces, holds no image, or
            two images share a stem (they would share a label file).
    """
    from ..data.image_files import Where, classify, walk, warn_links

    if not images.is_dir():
        raise DistillError(f"images '{images}' is not a folder")
    src, dst = images.resolve(), out.resolve()
    if dst.is_relative_to(src) or src.is_relative_to(dst / "images") or src.is_relative_to(dst / "labels"):
        # a later run would find its own output among the images, or replace the images it reads
        raise DistillError(f"output '{out}' must not lie in images '{images}', nor the images in its images/labels")
    found: dict[str, Path] = {}
    stems: dict[str, Path] = {}
    files, links = walk(images)
    if warn:
        warn_links(f"pseudo-labels: images '{images}'", links, Where(images))
    for path in files:
        if classify(path.relative_to(images)) != "image":
            continue
        if path.stem in stems:
            raise DistillError(
                f"images '{stems[path.stem]}' and '{path}' share the name '{path.stem}' (one label file each): "
                "rename one, or pool the folder first (a pool names images by content)"
            )
        stems[path.stem] = path
        found[path.name] = path
    if not found:
        raise DistillError(f"images '{images}' holds no images (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return dict(sorted(found.items()))


def load_teacher(teacher: str | Path) -> Teacher:
    """Read a teacher checkpoint through the project's restricted loader (:func:`distill.engine.model.read_checkpoint`).

    Raises:
        DistillError: The file is missing, is not a ``.pt``, is not a readable (or allowed) Ultralytics checkpoint,
            or its task is not detect, segment or pose.
    """
    from ..data import storage
    from .model import read_checkpoint

    path = Path(teacher)
    if path.suffix.lower() != ".pt":
        raise DistillError(f"teacher '{teacher}' must be a .pt checkpoint (a trained model)")
    if not path.is_file():
        raise DistillError(f"teacher weights '{teacher}' not found")
    model = read_checkpoint(path, "teacher")[0]
    task = getattr(model, "task", None)
    if task not in TASKS:
        raise DistillError(f"teacher '{teacher}' is a {task} model; pseudo-labels support {', '.join(TASKS)}")
    names = getattr(model, "names", None)
    if not isinstance(names, dict) or not names:
        raise DistillError(f"teacher '{teacher}' carries no class names")
    kpt_shape = getattr(model, "kpt_shape", None) or (getattr(model, "yaml", None) or {}).get("kpt_shape")
    if task == "pose" and not kpt_shape:
        raise DistillError(f"pose teacher '{teacher}' carries no kpt_shape")
    kpts = [int(v) for v in kpt_shape] if task == "pose" else None
    return Teacher(path, storage.sha256_file(path), task, {int(k): str(v) for k, v in names.items()}, kpts)


def cache_key(
    teacher: Teacher, files: dict[str, Path], pool_hash: str | None, conf: float, imgsz: int, kpt_conf: float
) -> str:
    """Return the 16-hex cache key of a labelling run.

    The images enter by their content hash: ``pool_hash`` if given, else the recipe of a pool's hash over
    ``images/<name>`` and each file's sha256 (for a pool folder the two agree). ``kpt_conf`` enters for pose only.
    Device and batch are left out: they change the numbers at most in the last decimals.
    """
    import hashlib

    from ..data import storage
    from ..data.image_files import content_hash

    images = pool_hash or content_hash({f"images/{n}": storage.sha256_file(p) for n, p in files.items()})
    fields = {"format": FORMAT, "teacher": teacher.sha256, "images": images, "conf": float(conf),
              "imgsz": int(imgsz), "task": teacher.task,
              "kpt_conf": float(kpt_conf) if teacher.task == "pose" else None}  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def read_cached(out: Path, key: str) -> PseudoLabels | None:
    """Return the recorded result in ``out`` if it has ``key`` and every file it lists is present, else ``None``."""
    try:
        record = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or not (out / "data.yaml").is_file():
        return None
    names = record.get("names", [])
    if not all((out / "images" / n).is_file() and _label_file(out, n).is_file() for n in names):
        return None
    from ultralytics.utils import LOGGER

    LOGGER.info(f"pseudo-labels: '{out}' already holds this run's labels (key {key}), not predicting again")
    return _result(out, record, cached=True)


def label_rows(result: Any, task: str, kpt_conf: float = 0.5) -> tuple[list[str], int]:
    """Return the YOLO label rows of one Ultralytics ``Results`` and how many detections were left out.

    See the module docstring for the format per task and what is left out (segment masks without a polygon).
    """
    if result.boxes is None or len(result.boxes) == 0:
        return [], 0
    classes = result.boxes.cls.int().tolist()
    boxes = result.boxes.xywhn.tolist()
    if task == "segment":
        polygons = [p.reshape(-1).tolist() if len(p) >= 3 else None for p in result.masks.xyn]
        rows = [yolo_line(c, tuple(p)) for c, p in zip(classes, polygons, strict=True) if p is not None]
        return rows, len(classes) - len(rows)
    if task == "pose":
        boxes = [b + k for b, k in zip(boxes, _keypoints(result.keypoints, kpt_conf), strict=True)]
    return [yolo_line(c, tuple(b)) for c, b in zip(classes, boxes, strict=True)], 0


def _keypoints(keypoints: Any, kpt_conf: float) -> list[list[float]]:
    """Return each instance's keypoints as a flat ``x y v`` (or ``x y``) list, normalised (see module docstring)."""
    xy = keypoints.xyn.tolist()
    if keypoints.conf is None:  # kpt_shape ndim 2: no visibility column
        return [[v for point in inst for v in point] for inst in xy]
    conf = keypoints.conf.tolist()
    hidden = (0.0, 0.0, 0.0)
    return [
        [v for (x, y), c in zip(inst, scores, strict=True) for v in ((x, y, 2.0) if c >= kpt_conf else hidden)]
        for inst, scores in zip(xy, conf, strict=True)
    ]


def _label(model: Teacher, files: dict[str, Path], out: Path, key: str, **settings: Any) -> PseudoLabels:
    """Predict over ``files`` and write the whole of ``out``; ``pseudo.json`` last (see the module docstring)."""
    start = time.perf_counter()
    _reset(out)
    linked = _place(files, out / "images")
    counts = _predict(model, out, len(files), **settings)
    lost = sorted(set(files) - counts["seen"])
    if lost:
        _drop_unreadable(out, lost)
    if not counts["seen"]:
        raise DistillError(f"none of the {len(files)} images could be read by Ultralytics' predictor")
    _write_data_yaml(out, model)
    from ultralytics import __version__

    names, empty = sorted(counts["seen"]), sorted(counts["empty"])
    per_class = {model.names[c]: n for c, n in sorted(counts["per_class"].items())}
    record = {"key": key, "kind": "pseudo-labels", "format": FORMAT, "teacher": str(model.path),
              "teacher_sha256": model.sha256, "task": model.task, "conf": settings["conf"],
              "imgsz": settings["imgsz"], "kpt_conf": settings["kpt_conf"] if model.task == "pose" else None,
              "images": len(names), "labelled": len(names) - len(empty), "empty": len(empty),
              "instances": sum(per_class.values()), "per_class": per_class, "dropped": counts["dropped"],
              "unreadable": lost, "linked": linked, "ultralytics": __version__,
              "seconds": round(time.perf_counter() - start, 3), "names": names, "empty_images": empty}  # fmt: skip
    tmp = out / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / RECORD)
    return _result(out, record, cached=False)


def _predict(model: Teacher, out: Path, total: int, **settings: Any) -> dict[str, Any]:
    """Stream the predictor over ``out/images`` and write one label file per image; return the counts."""
    from ultralytics import YOLO

    kpt_conf = settings.pop("kpt_conf")
    stream = YOLO(str(model.path)).predict(source=str(out / "images"), stream=True, verbose=False, **settings)
    per_class: dict[int, int] = {}
    counts: dict[str, Any] = {"seen": set(), "empty": [], "dropped": 0, "per_class": per_class}
    with Progress(total, "pseudo-labels", "images") as progress:
        for result in stream:
            name = Path(result.path).name
            rows, dropped = label_rows(result, model.task, kpt_conf)
            _label_file(out, name).write_text("".join(f"{row}\n" for row in rows))
            counts["seen"].add(name)
            counts["dropped"] += dropped
            if not rows:
                counts["empty"].append(name)
            for row in rows:
                cls = int(row.split(" ", 1)[0])
                per_class[cls] = per_class.get(cls, 0) + 1
            progress.update(1, f"{len(counts['seen']) - len(counts['empty'])} with objects")
    return counts


def _reset(out: Path) -> None:
    """Remove what an earlier run wrote to ``out`` (the record first, so nothing half-written is ever reused)."""
    (out / RECORD).unlink(missing_ok=True)
    for name in ("images", "labels"):
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    for name in ("labels.cache", "data.yaml"):
        (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()


def _place(files: dict[str, Path], folder: Path) -> bool:
    """Hard-link each image into ``folder`` (copy where a link is impossible); return whether all were linked."""
    linked = True
    for name, path in files.items():
        try:
            os.link(path, folder / name)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(path, folder / name)
            linked = False
    return linked


def _drop_unreadable(out: Path, names: Iterable[str]) -> None:
    """Remove images the predictor skipped (it warns and goes on), so the dataset holds only labelled images."""
    from ultralytics.utils import LOGGER

    names = list(names)
    for name in names:
        (out / "images" / name).unlink(missing_ok=True)
        _label_file(out, name).unlink(missing_ok=True)
    LOGGER.warning(f"pseudo-labels: {len(names)} images unreadable, left out: {', '.join(names[:3])}")


def _write_data_yaml(out: Path, model: Teacher) -> None:
    """Write ``data.yaml``: ``train: images``, no val, the teacher's names, and ``kpt_shape`` for pose.

    ``flip_idx`` is not written: Ultralytics stores it in the dataset yaml only, never in a checkpoint, so the
    teacher cannot say it. Without it Ultralytics turns flip augmentation off for pose, with a warning.
    """
    data: dict[str, Any] = {"train": "images", "val": None, "names": model.names}
    if model.task == "pose":
        data["kpt_shape"] = model.kpt_shape
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _result(out: Path, record: dict[str, Any], cached: bool) -> PseudoLabels:
    """Build the result from a record (the one just written, or an earlier run's)."""
    return PseudoLabels(
        folder=out,
        data=out / "data.yaml",
        task=record["task"],
        images=record["images"],
        labelled=record["labelled"],
        empty=list(record["empty_images"]),
        instances=record["instances"],
        per_class=dict(record["per_class"]),
        cached=cached,
        key=record["key"],
    )


def _label_file(out: Path, name: str) -> Path:
    """Return the label file of image ``name`` (Ultralytics' rule: ``images/`` → ``labels/``, suffix ``.txt``)."""
    return out / "labels" / f"{Path(name).stem}.txt"
