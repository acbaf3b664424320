"""Training on an unlabelled pool: the labelled train split and the teacher's pseudo-labelled pool as one dataset.

:func:`with_pool` turns a labelled ``data.yaml`` and a folder of unlabelled images into the dataset a student trains
on (issue 21): the teacher labels the pool once (:func:`distill.engine.pseudo_labels.pseudo_label`, cached by teacher,
pool and settings), and a new ``data.yaml`` lists, as its ``train`` split, the pool images the teacher found objects in
and the labelled train images; ``val``/``test`` and every other key are the labelled dataset's. The trainer is
Ultralytics' own, unmodified: its loader reads the list (a ``.txt`` of image paths, its documented format), its
augmentation mixes labelled and pool images in every mosaic and batch, the task loss learns the pseudo-labels and
the KD losses of :class:`distill.engine.model.KDModel` run on every image — labelled or not — as they always do.

What is left out of the list, and why:

- **Pool images without any pseudo-label** above ``conf`` (``empty``). Ultralytics reads an image with an empty label
  file as a labelled image with no objects — "background everywhere", a claim nobody made. They are counted, never
  trained on as background.
- **Pool images identical to a val or test image** of the labelled dataset (``leaked_into_val_test``, by sha256):
  training on them would inflate every score. prepare-data's pools are already clean; a local folder given to the CLI
  may not be. Pool images identical to a labelled train image (``in_labelled_train``) are left out too: the image is
  there with its real labels. Both are found before the teacher runs, each said in one warning with its count; a
  pool made only of such copies is refused then, naming what they are copies of.

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

from ..data import storage
from ..data.dataset_files import resolve_dataset, split_images
from ..errors import DistillError
from ..yaml_files import read_yaml
from .pseudo_labels import PseudoLabels, find_images, load_teacher, pseudo_label

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
    batch: int | None = None,
    pool_hash: str | None = None,
    keep_empty: bool = False,
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
        batch: Images per predictor batch (``None``: the training option's default).
        pool_hash: The pool's content hash when known (prepare-data's pools), for the pseudo-labels' cache key.
        keep_empty: Train on the pool images without a pseudo-label too (``pool_targets="online"``).

    Raises:
        DistillError: A bad setting, a pool made only of copies of the dataset's images, a teacher whose classes are
            not the dataset's, no usable pool image, or an error of :func:`distill.engine.pseudo_labels.pseudo_label`.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio >= 0 or math.isinf(ratio):
        raise DistillError(f"unlabeled_ratio must be a non-negative number, got {ratio!r}")
    out = Path(out)
    spec = resolve_dataset(data)
    labelled = split_images(spec["train"])
    held_out = split_images(spec.get("val")) + split_images(spec.get("test"))
    copies = labelled_copies(Path(images), out / "pseudo", labelled, held_out)
    names = list(load_teacher(teacher).names.values())
    if names != list(spec["names"].values()):
        raise DistillError(
            f"teacher '{teacher}' predicts classes {names}, the dataset '{data}' has {list(spec['names'].values())}: "
            "pseudo-labels need a teacher trained on the dataset's classes"
        )
    first = device.split(",")[0] if device else None
    pseudo = pseudo_label(teacher, images, out / "pseudo", conf, imgsz, first, batch, pool_hash=pool_hash)
    used, dropped = _pool_images(pseudo, copies, keep_empty)
    if not used:
        raise DistillError(
            f"none of the {pseudo.images} unlabelled images can train the student: the teacher found no object above "
            f"conf={conf} in {dropped['empty']}, {dropped['leaked_into_val_test']} are copies of val/test images and "
            f"{dropped['in_labelled_train']} are copies of train images"
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


def labelled_copies(images: Path, out: Path, train: list[str], held_out: list[str]) -> dict[str, str]:
    """Return the pool images that are byte copies of a labelled image: ``{file name: count key}``, before labelling.

    A copy of a val/test image (``leaked_into_val_test``; it wins over an identical train image) would leak the
    held-out split into training; a copy of a train image (``in_labelled_train``) is already there with its real
    labels. Each kind is one warning with its count. ``out`` is where the pseudo-labels go (see
    :func:`distill.engine.pseudo_labels.find_images`, which also refuses a folder without images).

    Raises:
        DistillError: Every pool image is such a copy: nothing is left for the teacher to label.
    """
    files = find_images(images, out, warn=False)
    why = {storage.sha256_file(Path(p)): "in_labelled_train" for p in train}
    why.update({storage.sha256_file(Path(p)): "leaked_into_val_test" for p in held_out})
    copies = {name: why[digest] for name, path in files.items() if (digest := storage.sha256_file(path)) in why}
    counts = {key: sum(1 for k in copies.values() if k == key) for key in ("in_labelled_train", "leaked_into_val_test")}
    if len(copies) == len(files):
        raise DistillError(_only_copies(images, len(files), counts))
    _warn_copies(images, len(files), counts)
    return copies


def _only_copies(images: Path, total: int, counts: dict[str, int]) -> str:
    """Return the refusal of a pool whose ``total`` images are all copies of labelled images (``counts`` by kind)."""
    train, leaked = counts["in_labelled_train"], counts["leaked_into_val_test"]
    if not leaked:
        return (f"unlabelled images '{images}' are only copies of labelled train images (all {total}, byte for "
                "byte): a train image is already labelled, so nothing is left to pseudo-label")  # fmt: skip
    if not train:
        return (f"unlabelled images '{images}' are only copies of val/test images (all {total}, byte for byte): "
                "training on them would leak the held-out images, so nothing is left to pseudo-label")  # fmt: skip
    return (f"unlabelled images '{images}' are only copies of labelled images ({train} of train images, {leaked} of "
            "val/test images, byte for byte): nothing is left to pseudo-label")  # fmt: skip


def _warn_copies(images: Path, total: int, counts: dict[str, int]) -> None:
    """Log one warning per kind of copy found among the ``total`` pool images: how many, and why they are left out."""
    from ultralytics.utils import LOGGER

    if counts["in_labelled_train"]:
        LOGGER.warning(f"unlabelled pool '{images}': {counts['in_labelled_train']} of {total} images are copies of "
                       "labelled train images (already labelled): left out")  # fmt: skip
    if counts["leaked_into_val_test"]:
        LOGGER.warning(f"unlabelled pool '{images}': {counts['leaked_into_val_test']} of {total} images are copies of "
                       "val/test images (a leak into training): left out")  # fmt: skip


def _pool_images(
    pseudo: PseudoLabels, copies: dict[str, str], keep_empty: bool = False
) -> tuple[list[str], dict[str, int]]:
    """Return the pool images to train on (absolute paths) and the counts of those left out (see the module doc).

    ``copies`` names the copies of labelled images (:func:`labelled_copies`); the pseudo-labelled images keep their
    file names, so they are found by name, whether or not the teacher found objects in them. ``keep_empty``: the
    images without a pseudo-label are trained on too (online targets make theirs on each view).
    """
    empty = set() if keep_empty else set(pseudo.empty)
    used: list[str] = []
    dropped = dict.fromkeys(COUNTS, 0)
    for image in sorted((pseudo.folder / "images").iterdir()):
        if image.name in copies:
            dropped[copies[image.name]] += 1
        elif image.name in empty:
            dropped["empty"] += 1
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

    original = read_yaml(data, f"data '{data}'") or {}
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
