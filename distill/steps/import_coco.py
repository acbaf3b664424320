"""Import a COCO JSON dataset (``annotations/*<split>*.json``, ``images/<split>/``) with Ultralytics' converter.

Ultralytics' ``convert_coco`` writes class ``category_id - 1``: right only for ids ``1..N``. Real exports use other
ids (COCO itself: 1..90 for 80 classes; labelling tools start at 0 or skip ids), which it would turn silently into
class −1 or shifted classes. So every file is read and checked first, and the converter is given a clean copy:

- categories (ids unique integers, names unique non-empty text, the same id → name in every file) are numbered
  0..N−1 in the order they are listed, the ids recorded as ``category_ids`` in the manifest;
- images (unique integer ids, a file name, a positive size) keep only their file's base name, so no label is ever
  written outside the scratch folder; listed images missing on disk and images on disk not listed are not imported;
- annotations (an integer ``image_id``, a listed ``category_id``, a ``bbox`` of four finite numbers with a width and
  height >= 0) are clipped to their image; those naming an image not imported, or with no area left, are dropped and
  counted in ``dropped_boxes``.

Anything else is refused with one line naming the file and the entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.image_files import IMAGE_SUFFIXES, Where
from ..errors import DistillError, shown
from .import_common import SPLITS, check_names, clip_box, find_root, number, put, write_yaml


def _items(spec: dict[str, Any], key: str, name: str, required: bool = True) -> list[dict[str, Any]]:
    items = spec.get(key, None if required else [])
    if not isinstance(items, list):
        raise DistillError(f"COCO file '{name}': '{key}' must be a list, got {type(items).__name__}")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DistillError(f"COCO file '{name}': {key}[{index}] must be an object, got {shown(item, 40)}")
    return items


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DistillError(f"{what} must be an integer, got {shown(value, 40)}")
    return value


def _unique(values: list[Any], what: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise DistillError(f"{what} {shown(value, 40)} appears twice")
        seen.add(value)


def read_coco_file(json_file: Path, where: Where) -> dict[str, Any]:
    """Parse one COCO JSON file and check its categories, images and annotations (see the module docstring)."""
    name = where(json_file)
    try:
        spec = json.loads(json_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DistillError(f"COCO file '{name}' is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise DistillError(f"COCO file '{name}' must be an object with images, annotations and categories")
    categories = _items(spec, "categories", name)
    for index, cat in enumerate(categories):
        _int(cat.get("id"), f"COCO file '{name}': categories[{index}].id")
    _unique([c["id"] for c in categories], f"COCO file '{name}': category id")
    check_names([c.get("name") for c in categories], f"COCO file '{name}': categories")
    images = _items(spec, "images", name)
    for index, img in enumerate(images):
        entry = f"COCO file '{name}': images[{index}]"
        _int(img.get("id"), f"{entry}.id")
        if not isinstance(img.get("file_name"), str) or not Path(img["file_name"]).name:
            raise DistillError(f"{entry}.file_name must be a file name, got {shown(img.get('file_name'), 40)}")
        for key in ("width", "height"):
            if number(img.get(key), f"{entry}.{key}") <= 0:
                raise DistillError(f"{entry}.{key} must be positive, got {img[key]!r}")
    _unique([i["id"] for i in images], f"COCO file '{name}': image id")
    _unique([Path(i["file_name"]).name for i in images], f"COCO file '{name}': image file name")
    known = {c["id"] for c in categories}
    for index, ann in enumerate(_items(spec, "annotations", name, required=False)):
        entry = f"COCO file '{name}': annotation {ann.get('id', f'#{index}')!r:.40}"
        _int(ann.get("image_id"), f"{entry}: image_id")
        if _int(ann.get("category_id"), f"{entry}: category_id") not in known:
            raise DistillError(f"{entry}: category_id {ann['category_id']} is not among the categories {sorted(known)}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DistillError(f"{entry}: bbox must be [x, y, width, height], got {shown(bbox, 60)}")
        x, y, w, h = (number(v, f"{entry}: bbox value") for v in bbox)
        if w < 0 or h < 0:
            raise DistillError(f"{entry}: bbox {bbox} has a negative width or height")
    return spec


def category_order(specs: dict[Path, dict[str, Any]], where: Where) -> tuple[list[int], list[str]]:
    """Category ids and names in class-index order: as listed, the same id → name in every file."""
    ids: list[int] = []
    names: dict[int, str] = {}
    for json_file, spec in specs.items():
        for cat in spec["categories"]:
            cid, cname = cat["id"], cat["name"].strip()
            if cid in names and names[cid] != cname:
                where_ = f"COCO file '{where(json_file)}'"
                raise DistillError(f"{where_}: category {cid} is '{cname}' here and '{names[cid]}' in another file")
            if cid not in names:
                if cname in names.values():
                    raise DistillError(f"COCO file '{where(json_file)}': category '{cname}' has two ids across files")
                ids.append(cid)
                names[cid] = cname
    if not ids:
        raise DistillError(f"COCO dataset '{where(next(iter(specs)).parent)}' lists no categories")
    return ids, [names[i] for i in ids]


def _split_of(json_file: Path) -> str | None:
    """Return the split a file belongs to by its name (``instances_train2017`` → train; ``trainval`` → train)."""
    stem = json_file.stem.lower()
    return next((s for s in SPLITS if s in stem), None)


def _image_files(root: Path, split: str, lname: str, where: Where) -> dict[str, Path]:
    """Image files of a split by base name (``images/<split>/`` or ``images/<file stem>/``).

    Two files of the same base name are refused, each named as the user knows it (``where``: never the scratch
    folder an archive or a prefix was extracted to), since a COCO file names its images by base name only.
    """
    folder = root / "images" / split
    if not folder.is_dir():
        folder = root / "images" / lname
    files: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.name in files:
                raise DistillError(f"images '{where(files[p.name])}' and '{where(p)}' share the name '{p.name}': "
                                   "a COCO file names its images by file name only")  # fmt: skip
            files[p.name] = p
    return files


def _clean(spec: dict[str, Any], on_disk: dict[str, Path], index: dict[int, int]) -> tuple[dict[str, Any], list, int]:
    """Return the converter's copy: images on disk by base name, category ids 1..N, boxes clipped.

    Returns:
        The copy, the annotations dropped for naming an image not imported, and the count of boxes with no area left.
    """
    images = {i["id"]: {**i, "file_name": Path(i["file_name"]).name} for i in spec["images"]}
    images = {k: v for k, v in images.items() if v["file_name"] in on_disk}
    annotations, orphans, empty = [], [], 0
    for ann in spec.get("annotations", []):
        img = images.get(ann["image_id"])
        if img is None:
            orphans.append(ann)
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        iw, ih = float(img["width"]), float(img["height"])
        box = clip_box(x, y, x + w, y + h, iw, ih)
        if box is None:
            empty += 1
            continue
        bbox = [(box[0] - box[2] / 2) * iw, (box[1] - box[3] / 2) * ih, box[2] * iw, box[3] * ih]
        annotations.append({**ann, "category_id": index[ann["category_id"]] + 1, "bbox": bbox})
    return {"images": list(images.values()), "annotations": annotations, "categories": []}, orphans, empty


def _warn_dropped(name: str, orphans: list[dict[str, Any]], empty: int) -> None:
    from ultralytics.utils import LOGGER

    if orphans:
        missing = sorted({str(a["image_id"]) for a in orphans})
        LOGGER.warning(
            f"prepare-data: {name}: {len(orphans)} annotations name {len(missing)} images that are not in its image "
            f"list or not on disk (image ids {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}); dropped"
        )
    if empty:
        LOGGER.warning(f"prepare-data: {name}: {empty} boxes have no area inside their image; dropped")


def from_coco(folder: Path, out: Path, scratch: Path, where: Where) -> dict[str, Any]:
    """Import the COCO dataset at or below ``folder`` into ``out``; return names, ids, drops and label origins."""
    from ultralytics.data.converter import convert_coco
    from ultralytics.utils import LOGGER

    root = find_root(folder, "annotations", where)
    jsons = sorted((root / "annotations").glob("*.json"))
    if not jsons:
        raise DistillError(f"'{where(root / 'annotations')}' has no COCO .json files")
    specs = {j: read_coco_file(j, where) for j in jsons}
    ids, names = category_order(specs, where)
    index = {cid: k for k, cid in enumerate(ids)}
    clean = scratch.with_name(f"{scratch.name}-json")  # what the converter reads
    clean.mkdir(parents=True)
    dropped, on_disk = 0, {}
    for json_file, spec in specs.items():
        split = _split_of(json_file)
        if split is None:
            LOGGER.warning(f"prepare-data: {where(json_file)}: no split (train, val, test) in its name; skipped")
            continue
        on_disk[json_file] = _image_files(root, split, json_file.stem.replace("instances_", ""), where)
        copy, orphans, empty = _clean(spec, on_disk[json_file], index)
        _warn_dropped(where(json_file), orphans, empty)
        dropped += len(orphans) + empty
        (clean / json_file.name).write_text(json.dumps(copy))
    convert_coco(labels_dir=str(clean), save_dir=str(scratch), cls91to80=False, use_segments=False)
    splits, origins = [], {}
    for json_file, files in on_disk.items():
        split, lname = _split_of(json_file), json_file.stem.replace("instances_", "")
        listed = {Path(i["file_name"]).name for i in specs[json_file]["images"]}
        unlisted = sorted(set(files) - listed)
        if unlisted:
            LOGGER.warning(f"prepare-data: {len(unlisted)} images are not listed in {where(json_file)}: not imported")
        for file_name in sorted(listed & set(files)):
            label = (scratch / "labels" / lname / file_name).with_suffix(".txt")
            lines = label.read_text().splitlines() if label.is_file() else []
            put(out, split, files[file_name], [ln.strip() for ln in lines if ln.strip()])
            origins[f"{split}/{file_name}"] = where(json_file)
        splits.append(split)
    if "train" not in splits or "val" not in splits:
        raise DistillError(f"COCO dataset '{where(root)}' needs train and val annotation files")
    write_yaml(out, names, [s for s in SPLITS if s in splits], {})
    return {"names": names, "category_ids": ids, "dropped_boxes": dropped, "origins": origins}
