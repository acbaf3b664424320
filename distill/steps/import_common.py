"""What the dataset importers (YOLO, VOC, COCO) share: writing the YOLO layout, checking names, numbers and boxes.

Errors name a file as the user knows it, through :class:`distill.data.image_files.Where`, never by the scratch folder it
was extracted to.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..data.image_files import Where
from ..errors import DistillError, shown

SPLITS = ("train", "val", "test")


def find_root(folder: Path, marker: str, where: Where) -> Path:
    """Return the folder at or below ``folder`` holding ``marker`` (archives often wrap everything in one folder)."""
    if (folder / marker).exists():
        return folder
    hits = sorted(p.parent for p in folder.rglob(marker))
    if not hits:
        raise DistillError(f"'{where(folder)}' has no {marker}")
    return hits[0]


def put(out: Path, split: str, image: Path, lines: list[str]) -> None:
    """Copy ``image`` into ``out/images/<split>/`` and write its YOLO label lines beside it in ``labels/``."""
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    target = img_dir / image.name
    if target.exists():
        raise DistillError(f"two images named '{image.name}' in split '{split}'")
    shutil.copyfile(image, target)
    (lbl_dir / f"{image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))


def write_yaml(out: Path, names: list[str], splits: list[str], extra: dict[str, Any]) -> None:
    """Write ``out/data.yaml``: the splits (relative to the file, no ``path`` key), the names, ``extra`` keys."""
    data = {s: f"images/{s}" for s in splits}
    data["names"] = dict(enumerate(names))
    data.update(extra)
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def check_names(names: Any, what: str) -> list[str]:
    """Return class names as a list, refusing what Ultralytics would misread: empty, non-text or repeated names."""
    if not isinstance(names, list) or not names:
        raise DistillError(f"{what}: no class names")
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise DistillError(f"{what}: class {index} has no name (got {shown(name, 40)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DistillError(f"{what}: class name '{repeated[0]}' is given to more than one class")
    return [n.strip() for n in names]


def number(value: Any, what: str) -> float:
    """Return ``value`` as a finite float (a number or numeric text), or refuse it naming ``what``."""
    if isinstance(value, bool):
        raise DistillError(f"{what} must be a number, got {value!r}")
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DistillError(f"{what} must be a number, got {shown(value, 40)}") from None
    if not math.isfinite(result):
        raise DistillError(f"{what} must be a finite number, got {shown(value, 40)}")
    return result


def clip_box(x1: float, y1: float, x2: float, y2: float, w: float, h: float) -> tuple[float, ...] | None:
    """Clip a pixel box to the image; return it as normalised ``cx cy bw bh``, or ``None`` when nothing is left.

    Boxes that stick out of the image by a pixel are common in exported annotations (1-based corners, rounding);
    Ultralytics would refuse the whole image's labels at training time for coordinates beyond 1.01.
    """
    x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
    y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
