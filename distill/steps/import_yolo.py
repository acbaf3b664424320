"""Import a YOLO dataset (a ``data.yaml`` with splits, names and optional task keys such as ``kpt_shape``).

Label files are copied as they are and checked afterwards by Ultralytics' own label verifier (see
:func:`distill.steps.prepare_data.verify_labels`). Here the ``data.yaml`` itself is checked: it must parse to a
mapping, and ``names`` must be a list or a mapping with the keys ``0..N-1`` — a mapping with gaps would shift every
class after the gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.dataset_files import split_files
from ..data.image_files import Where
from ..errors import DistillError
from ..yaml_files import read_yaml
from .import_common import SPLITS, check_names, find_root, put, write_yaml

#: data.yaml keys carried over from a YOLO source besides the splits and names.
CARRIED_KEYS = ("kpt_shape", "flip_idx", "kpt_names", "channels")


def read_data_yaml(yaml_file: Path, where: Where) -> tuple[dict[str, Any], list[str]]:
    """Parse ``data.yaml``; return the mapping and the class names in index order."""
    name = where(yaml_file)
    spec = read_yaml(yaml_file, f"'{name}'")  # bounded: an alias bomb is refused, not expanded
    if not isinstance(spec, dict):
        raise DistillError(f"'{name}' must be a mapping with train, val and names, got {type(spec).__name__}")
    names = spec.get("names")
    if isinstance(names, dict):
        numbered = all(isinstance(k, int) and not isinstance(k, bool) for k in names)
        if not numbered or set(names) != set(range(len(names))):
            keys = sorted(map(str, names))
            raise DistillError(f"'{name}': names must be numbered 0..{len(names) - 1} without gaps, got keys {keys}")
        names = [names[k] for k in range(len(names))]
    return spec, check_names(names, f"'{name}'")


def _images(entry: Any, split: str, base: Path, inside, name: str, where: Where) -> list[Path]:
    """Return the image files a split entry names: folders (searched recursively) and ``.txt`` lists of image paths.

    The same rules as the engine's (:func:`distill.data.dataset_files.split_files`: a split holds images, its paths are
    folders or ``.txt`` lists), with the entry's paths resolved against ``base`` and a list's lines against the list,
    each kept ``inside`` the source; an image a list names must exist (it is copied).
    """

    def place(text: str, list_file: Path | None) -> Path:
        if list_file is None:
            return inside((base / text).resolve(), f"{split} path", text)
        image = inside((list_file.parent / text).resolve(), f"{split} image", text)
        if not image.is_file():
            raise DistillError(f"'{name}': the {split} list '{list_file.name}' names '{text}', which is not a file")
        return image

    return split_files(entry, split, f"'{name}'", place, show=where)


def from_yolo(folder: Path, out: Path, where: Where, confine: Path | None = None) -> dict[str, Any]:
    """Import a YOLO dataset; with ``confine`` (an extracted archive, a download) every path must stay inside it."""
    from ultralytics.data.utils import img2label_paths

    yaml_file = (folder if folder.is_file() else find_root(folder, "data.yaml", where) / "data.yaml").resolve()
    name = where(yaml_file)

    def inside(path: Path, what: str, written: str) -> Path:
        """Return ``path`` if it stays in the source; else refuse, naming it as written (not the scratch path)."""
        if confine is not None and not path.resolve().is_relative_to(confine.resolve()):
            raise DistillError(f"'{name}': {what} '{written}' points outside the archive; refused")
        return path

    spec, names = read_data_yaml(yaml_file, where)
    base = Path(str(spec.get("path") or yaml_file.parent))
    base = inside(base if base.is_absolute() else (yaml_file.parent / base), "path", str(spec.get("path") or "."))
    splits, origins = [], {}
    for split in SPLITS:
        entry = spec.get(split)
        if not entry:
            continue
        images = _images(entry, split, base, inside, name, where)
        for image, label in zip(images, img2label_paths([str(i) for i in images]), strict=True):
            lines = Path(label).read_text(errors="replace").splitlines() if Path(label).is_file() else []
            put(out, split, image, [ln.strip() for ln in lines if ln.strip()])
            origins[f"{split}/{image.name}"] = where(label)
        splits.append(split)
    if "train" not in splits or "val" not in splits:
        raise DistillError(f"'{name}' must define train and val splits")
    write_yaml(out, names, splits, {k: spec[k] for k in CARRIED_KEYS if k in spec})
    return {"names": names, "dropped_boxes": 0, "origins": origins}
