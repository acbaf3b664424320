"""Import a Pascal VOC dataset (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``).

Every XML file is checked before anything is written: it must parse, give a positive image size and, per object, a
class name and four numeric corners with ``xmin <= xmax`` and ``ymin <= ymax``. A damaged file is refused with one
line naming it and the entry; boxes are clipped to the image and those with no area left are dropped, counted and
said in one warning (how many, and the first file holding one).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, NamedTuple

from ..data.image_files import IMAGE_SUFFIXES, Where, yolo_line
from ..errors import DistillError
from .import_common import SPLITS, clip_box, find_root, number, put, write_yaml

CORNERS = ("xmin", "ymin", "xmax", "ymax")


class VocFile(NamedTuple):
    """One parsed annotation file: image file name, size, and objects as ``(name, xmin, ymin, xmax, ymax)``."""

    filename: str | None
    width: float
    height: float
    objects: list[tuple[str, float, float, float, float]]


def read_voc_file(xml_file: Path, where: Where) -> VocFile:
    """Parse and check one VOC XML file; refuse it with one line naming the file and the entry."""
    name = where(xml_file)
    try:
        root = ET.parse(xml_file).getroot()
    except (ET.ParseError, UnicodeDecodeError) as e:
        raise DistillError(f"VOC file '{name}' is not valid XML: {e}") from None
    size = root.find("size")
    if size is None:
        raise DistillError(f"VOC file '{name}' has no <size>")
    w, h = (number(size.findtext(k), f"VOC file '{name}': <size><{k}>") for k in ("width", "height"))
    if w <= 0 or h <= 0:
        raise DistillError(f"VOC file '{name}': image size {w:g}x{h:g} must be positive")
    objects = []
    for index, obj in enumerate(root.iter("object")):
        entry = f"VOC file '{name}', object {index}"
        cls = (obj.findtext("name") or "").strip()
        if not cls:
            raise DistillError(f"{entry} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise DistillError(f"{entry} ('{cls}') has no <bndbox>")
        x1, y1, x2, y2 = (number(box.findtext(k), f"{entry}: <{k}>") for k in CORNERS)
        if x2 < x1 or y2 < y1:
            raise DistillError(f"{entry}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has xmax < xmin or ymax < ymin")
        objects.append((cls, x1, y1, x2, y2))
    filename = (root.findtext("filename") or "").strip()
    return VocFile(Path(filename).name or None, w, h, objects)  # the name only: never a path outside JPEGImages


def _splits(root: Path, stems: list[str]) -> dict[str, str]:
    """Split of every file stem: ``ImageSets/Main/<split>.txt`` lists, else a fixed 80/20 train/val by name hash."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if listing.is_file():
            for line in listing.read_text(errors="replace").split():
                split_of[line.strip()] = split
    if not split_of:
        for stem in stems:
            split_of[stem] = "val" if int(hashlib.sha256(stem.encode()).hexdigest(), 16) % 5 == 0 else "train"
    return split_of


def _image_of(root: Path, stem: str, filename: str | None, where: Where, xml_file: Path) -> Path:
    image = root / "JPEGImages" / (filename or f"{stem}.jpg")
    if image.is_file():
        return image
    found = (p for p in (root / "JPEGImages").glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    image = next(found, None)
    if image is None:
        raise DistillError(f"VOC file '{where(xml_file)}': its image is not in JPEGImages")
    return image


def from_voc(folder: Path, out: Path, names: list[str] | None, where: Where) -> dict[str, Any]:
    """Import the VOC dataset at or below ``folder`` into ``out``; return names, dropped boxes and label origins."""
    root = find_root(folder, "Annotations", where)
    xmls = sorted((root / "Annotations").glob("*.xml"))
    if not xmls:
        raise DistillError(f"'{where(root / 'Annotations')}' has no .xml files")
    parsed = {x.stem: read_voc_file(x, where) for x in xmls}
    names = names or sorted({o[0] for f in parsed.values() for o in f.objects})
    for stem, voc in parsed.items():
        unknown = next((o[0] for o in voc.objects if o[0] not in names), None)
        if unknown is not None:
            raise DistillError(f"VOC file '{stem}.xml' has class '{unknown}', which is not in the class list {names}")
    split_of = _splits(root, list(parsed))
    dropped: dict[str, int] = {}  # boxes with no area left inside their image, per file (in file order)
    used, origins = set(), {}
    for xml_file in xmls:
        voc, split = parsed[xml_file.stem], split_of.get(xml_file.stem)
        if split is None:
            continue
        image = _image_of(root, xml_file.stem, voc.filename, where, xml_file)
        lines = []
        for cls, *corners in voc.objects:
            box = clip_box(*corners, voc.width, voc.height)
            if box is None:
                dropped[where(xml_file)] = dropped.get(where(xml_file), 0) + 1
                continue
            lines.append(yolo_line(names.index(cls), box))
        put(out, split, image, lines)
        origins[f"{split}/{image.name}"] = where(xml_file)
        used.add(split)
    splits = [s for s in SPLITS if s in used]
    if "train" not in splits or "val" not in splits:
        raise DistillError(f"VOC dataset '{where(root)}' needs train and val images (split lists in ImageSets/Main)")
    write_yaml(out, names, splits, {})
    _warn_dropped(dropped)
    return {"names": names, "dropped_boxes": sum(dropped.values()), "origins": origins}


def _warn_dropped(dropped: dict[str, int]) -> None:
    """Log one warning for the boxes dropped on import: how many, why, and the first file that had one.

    A box is dropped when clipping it to its image leaves no area (it lies wholly outside the image, or is a line):
    Ultralytics would refuse the image's labels for it. Counted in ``dropped_boxes`` and said, never silently.
    """
    from ultralytics.utils import LOGGER

    if not dropped:
        return
    total, first = sum(dropped.values()), next(iter(dropped))
    files = f"{len(dropped)} files, the first '{first}'" if len(dropped) > 1 else f"'{first}'"
    LOGGER.warning(f"prepare-data: {total} VOC boxes dropped, no area left inside their image once clipped to it "
                   f"(in {files})")  # fmt: skip
