"""A local dataset's files as Ultralytics resolves them: the yaml's splits and the images each split names.

One place for what the engine's input check (:func:`distill.api.train` / :func:`distill.api.distill`), the evaluate
and register steps (latency and export samples), the unlabelled-pool dataset (:mod:`distill.pool_data`) and the
benchmarks all need: Ultralytics' own resolution of a ``data.yaml`` (``check_det_dataset``, absolute split paths,
names as a dict) and the image files of a split entry — a folder (searched recursively for Ultralytics'
``IMG_FORMATS``), a ``.txt`` list of image paths (``./`` relative to the list, as Ultralytics reads it), or a list of
either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DistillError


def resolve_dataset(data: str | Path) -> dict[str, Any]:
    """Return Ultralytics' resolution of a dataset yaml (absolute split paths, names as a dict); errors as one line."""
    from ultralytics.data.utils import check_det_dataset

    from .api import plain_message

    try:
        return check_det_dataset(str(data), autodownload=False)
    except (FileNotFoundError, SyntaxError, KeyError, ValueError) as e:
        raise DistillError(f"data '{data}': {plain_message(e)}") from None


def split_images(entry: str | Path | list | None) -> list[str]:
    """Return the absolute image paths of a split entry (folder, ``.txt`` list, or a list of either), sorted."""
    from ultralytics.data.utils import IMG_FORMATS

    if not entry:
        return []
    files: list[str] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = Path(str(item))
        if path.is_dir():
            files += [str(p.resolve()) for p in path.rglob("*") if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS]
        elif path.is_file():
            for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
                line = line.strip()
                if line:
                    files.append(str((path.parent / line[2:]).resolve() if line.startswith("./") else Path(line)))
    return sorted(files)
