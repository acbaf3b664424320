"""Training on an unlabelled pool: the labelled train split and the teacher's pseudo-labelled pool as one dataset.

:func:`with_pool` turns a labelled ``data.yaml`` and a folder of unlabelled images into the dataset a student trains
on (issue 21): the teacher labels the pool once (:func:`distill.pseudo_labels.pseudo_label`, cached by teacher, pool
and settings), and a new ``data.yaml`` lists, as its ``train`` split, the pool images the teacher found objects in
and the labelled train images; ``val``/``test`` and every other key are the labelled dataset's. The trainer is
Ultralytics' own, unmodified: its loader reads the list (a ``.txt`` of image paths, its documented format), its
augmentation mixes labelled and pool images in every mosaic and batch, the task loss learns the pseudo-labels and
the KD losses of :class:`distill.model.KDModel` run on every image — labelled or not — as they always do.

What is left out of the list, and why:

- **Pool images without any pseudo-label** above ``conf`` (``empty``). Ultralytics reads an image with an empty label
  file as a labelled image with no objects — "background everywhere", a claim nobody made. They are counted, never
  trained on as background.
- **Pool images identical to a val or test image** of the labelled dataset (``leaked_into_val_test``, by sha256):
  training on them would inflate every score. prepare-data's pools are already clean; a local folder given to the CLI
  may not be. Pool images identical to a labelled train image (``in_labelled_train``) are left out too: the image is
  there with its real labels.

``ratio`` sets how many pool images an epoch sees per labelled image at most: when the pool is larger, each labelled
image is listed ``repeats`` times (0: every image once, the pool's share is whatever its size makes it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from . import storage
from .dataset_files import resolve_dataset, split_images
from .errors import DistillError
from .pseudo_labels import PseudoLabels, load_teacher, pseudo_label

#: What the record counts, besides the images used.
COUNTS = ("empty", "leaked_into_val_test", "in_labelled_train")
RECORD = "pool.json"


@dataclass(frozen=True)
class PoolData:
    """The dataset a student trains on with an unlabelled pool, and what went into it.

    Attributes:
        data: The ``data.yaml`` to train on (its ``train`` is ``train.txt`` beside it).
        labelled: Labelled train images.
        repeats: How many times each labelled image is listed per epoch.
        pool: Pool images the teacher labelled.
        used: Pool images trained on (at least one pseudo-label, not a val/test/train copy).
        instances: Pseudo-label rows on the images used.
        empty: Pool images without a pseudo-label above ``conf``: left out (never trained on as background).
        leaked_into_val_test: Pool images identical to a val or test image: left out.
        in_labelled_train: Pool images identical to a labelled train image: left out.
        conf: The pseudo-label confidence threshold.
        ratio: The most pool images per labelled image per epoch asked for (0: no limit).
        pseudo_key: The pseudo-labels' cache key (teacher, pool, settings).
    """

    data: Path
    labelled: int
    repeats: int
    pool: int
    used: int
    instances: int
    empty: int
    leaked_into_val_test: int
    in_labelled_train: int
    conf: float
    ratio: float
    pseudo_key: str

    def to_dict(self) -> dict[str, Any]:
        """Return the counts and settings as plain data (``data`` as a string)."""
        return {**asdict(self), "data": str(self.data)}


def with_pool(
    data: str | Path,
    teacher: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    conf: float,
    ratio: float,
    imgsz: int,
    device: str | None = None,
    batch: int = 16,
    pool_hash: str | None = None,
) -> PoolData:
    """Pseudo-label ``images`` with ``teacher`` and write the labelled + pool dataset to ``out``.

    Args:
        data: The labelled dataset's ``data.yaml`` (local).
        teacher: Local teacher checkpoint (``.pt``); its class names must be the dataset's.
        images: Folder of unlabelled images (a pool from :func:`distill.steps.common.fetch_pool`, or any folder).
        out: Output folder: ``pseudo/`` (the pseudo-labels), ``train.txt``, ``data.yaml``, ``pool.json``.
        conf: Pseudo-label confidence threshold, in (0, 1].
        ratio: Most pool images per labelled image per epoch; 0: each image once.
        imgsz: Inference size (the training size).
        device: Ultralytics device for labelling (the first of a list is used); ``None``: Ultralytics chooses.
        batch: Images per predictor batch.
        pool_hash: The pool's content hash when known (prepare-data's pools), for the pseudo-labels' cache key.

    Raises:
        DistillError: A bad setting, a teacher whose classes are not the dataset's, no usable pool image, or an
            error of :func:`distill.pseudo_labels.pseudo_label`.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio >= 0 or math.isinf(ratio):
        raise DistillError(f"unlabeled_ratio must be a non-negative number, got {ratio!r}")
    out = Path(out)
    spec = resolve_dataset(data)
    names = list(load_teacher(teacher).names.values())
    if names != list(spec["names"].values()):
        raise DistillError(
            f"teacher '{teacher}' predicts classes {names}, the dataset '{data}' has {list(spec['names'].values())}: "
            "pseudo-labels need a teacher trained on the dataset's classes"
        )
    first = device.split(",")[0] if device else None
    pseudo = pseudo_label(teacher, images, out / "pseudo", conf, imgsz, first, batch, pool_hash=pool_hash)
    labelled = split_images(spec["train"])
    used, dropped = _pool_images(pseudo, labelled, split_images(spec.get("val")) + split_images(spec.get("test")))
    if not used:
        raise DistillError(
            f"none of the {pseudo.images} unlabelled images can train the student: the teacher found no object above "
            f"conf={conf} in {dropped['empty']}, and {dropped['leaked_into_val_test']} are val/test images"
        )
    repeats = max(1, math.ceil(len(used) / (ratio * len(labelled)))) if ratio > 0 else 1
    _write_list(out / "train.txt", used + labelled * repeats)
    _write_data_yaml(out / "data.yaml", data, spec, out / "train.txt", pseudo.folder / "images")
    instances = sum(_rows(pseudo.folder / "labels" / f"{Path(p).stem}.txt") for p in used)
    result = PoolData(out / "data.yaml", len(labelled), repeats, pseudo.images, len(used), instances, **dropped,
                      conf=float(conf), ratio=float(ratio), pseudo_key=pseudo.key)  # fmt: skip
    _log(result)
    tmp = out / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=1))
    os.replace(tmp, out / RECORD)
    return result


def _pool_images(pseudo: PseudoLabels, train: list[str], held_out: list[str]) -> tuple[list[str], dict[str, int]]:
    """Return the pool images to train on (absolute paths) and the counts of those left out (see the module doc)."""
    leaks = {storage.sha256_file(Path(p)) for p in held_out}
    known = {storage.sha256_file(Path(p)) for p in train}
    empty = set(pseudo.empty)
    used: list[str] = []
    dropped = dict.fromkeys(COUNTS, 0)
    for image in sorted((pseudo.folder / "images").iterdir()):
        if image.name in empty:
            dropped["empty"] += 1
            continue
        digest = storage.sha256_file(image)
        if digest in leaks:
            dropped["leaked_into_val_test"] += 1
        elif digest in known:
            dropped["in_labelled_train"] += 1
        else:
            used.append(str(image.resolve()))
    return used, dropped


def _write_list(path: Path, images: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{p}\n" for p in images))
    os.replace(tmp, path)


def _write_data_yaml(path: Path, data: str | Path, spec: dict[str, Any], train: Path, pool: Path) -> None:
    """Write the labelled dataset's yaml with ``train`` the list and the other splits as absolute paths.

    It also names the folder the pool images are listed from (``pool_images``), for ``pool_targets="soft"``.
    """
    from .soft_pool import POOL_IMAGES_KEY

    original = yaml.safe_load(Path(data).read_text()) or {}
    out = {k: v for k, v in original.items() if k not in {"path", "train", "val", "test", "download", POOL_IMAGES_KEY}}
    out["train"] = str(train.resolve())
    out[POOL_IMAGES_KEY] = str(pool.resolve())
    for split in ("val", "test"):
        if spec.get(split):
            out[split] = spec[split]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(out, sort_keys=False))
    os.replace(tmp, path)


def _rows(label: Path) -> int:
    return sum(1 for line in label.read_text().splitlines() if line.strip())


def _log(result: PoolData) -> None:
    from ultralytics.utils import LOGGER

    left = ", ".join(f"{getattr(result, k)} {k.replace('_', ' ')}" for k in COUNTS if getattr(result, k))
    LOGGER.info(
        f"unlabelled pool: {result.used} of {result.pool} images trained on with {result.instances} pseudo-labels "
        f"(conf {result.conf}){f'; left out: {left}' if left else ''}; {result.labelled} labelled images"
        f"{f' listed {result.repeats}x' if result.repeats > 1 else ''}"
    )
