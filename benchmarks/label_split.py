"""Keep the labels on a fixed share of a dataset's training images and give the rest as an unlabelled pool.

The semi-supervised tables (issue 21) train every row on the same labelled part: :func:`label_split` picks it once
per (dataset, fraction) with a fixed random generator, so every seed, row and machine sees the same images. The
labelled part is a YOLO dataset of its own (train = the labelled images; val and test = the full dataset's), the
pool a folder of the remaining training images without their labels. Files are hard-linked where possible.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import yaml

#: The generator's seed: which images keep their labels must not depend on the run's seed.
SPLIT_SEED = 0


def label_split(data: Path, data_hash: str, fraction: float, workdir: Path) -> tuple[Path, Path, str]:
    """Return the labelled part's ``data.yaml``, the pool folder and a hash naming the split (made once).

    Args:
        data: The full dataset's ``data.yaml`` (local, YOLO layout ``images/<split>``, ``labels/<split>``).
        data_hash: The full dataset's content hash (it names the split's folder with the fraction).
        fraction: Share of the training images that keep their labels, in (0, 1).
        workdir: Where the split is written.
    """
    from distill.data.dataset_files import resolve_dataset, split_images
    from distill.yaml_files import read_yaml

    if not 0 < fraction < 1:
        raise SystemExit(f"--label-fraction must be in (0, 1), got {fraction}")
    digest = hashlib.sha256(f"{data_hash}-{fraction:.4f}-{SPLIT_SEED}".encode()).hexdigest()[:16]
    folder = workdir / f"split-{digest}"
    labelled_yaml, pool = folder / "labelled" / "data.yaml", folder / "pool"
    if labelled_yaml.is_file():
        return labelled_yaml, pool, digest
    spec = resolve_dataset(data)
    train = split_images(spec["train"])
    count = max(1, round(len(train) * fraction))
    keep = set(random.Random(SPLIT_SEED).sample(train, count))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for image in train:
        if image in keep:
            _link(Path(image), tmp / "labelled" / "images" / "train" / Path(image).name)
            label = _label_of(Path(image))
            if label.is_file():
                _link(label, tmp / "labelled" / "labels" / "train" / label.name)
        else:
            _link(Path(image), tmp / "pool" / Path(image).name)
    original = read_yaml(data, f"data '{data}'") or {}
    out = {k: v for k, v in original.items() if k not in {"path", "train", "val", "test", "download"}}
    out.update({"train": str((folder / "labelled" / "images" / "train").resolve())})
    for split in ("val", "test"):
        if spec.get(split):
            out[split] = spec[split]
    (tmp / "labelled" / "data.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    os.replace(tmp, folder)
    return labelled_yaml, pool, digest


def _label_of(image: Path) -> Path:
    from ultralytics.data.utils import img2label_paths

    return Path(img2label_paths([str(image)])[0])


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
