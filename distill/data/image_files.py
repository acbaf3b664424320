"""The image files of a dataset or a pool: which files are images, how a file is named to the user, content hashes.

Shared by the dataset importers and the pool scan (:mod:`distill.steps`) and by the pseudo-labeller
(:mod:`distill.engine.pseudo_labels`), which sits below the steps: the data layer, importing nothing of the layers
above. Errors name a file as the user knows it (:class:`Where`): a file of a local folder by its path, a file of an
archive or an S3 prefix by the source the user gave plus its path inside it (``s3://bucket/data.zip:coco/train.json``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
#: Suffixes and folder names of label files (YOLO ``.txt``, VOC ``.xml``, COCO ``.json``, ``labels/`` folders).
LABEL_SUFFIXES = frozenset({".txt", ".xml", ".json"})
LABEL_FOLDERS = frozenset({"labels", "annotations"})
#: How many files a warning names before "and N more".
SHOWN = 3


@dataclass(frozen=True)
class Where:
    """Names paths under ``root`` (the local copy of a source) the way the user knows them.

    ``label`` is the source as given (an ``s3://`` prefix, a ``.zip``) when ``root`` is a scratch copy of it, and
    ``None`` when ``root`` is the user's own folder (its paths are then the names).
    """

    root: Path
    label: str | None = None

    def __call__(self, path: str | Path) -> str:
        """Return the name of ``path`` for messages."""
        if self.label is None:
            return str(path)
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)
        if self.label.lower().endswith(".zip"):
            return f"{self.label}:{rel}"
        return f"{self.label.rstrip('/')}/{rel}"


def yolo_line(cls: int, box: tuple[float, ...]) -> str:
    """Format one YOLO detection label line (six decimals, as every importer writes them)."""
    return f"{cls} " + " ".join(f"{v:.6f}" for v in box)


def content_hash(files: dict[str, str]) -> str:
    """Return the 16-hex content hash of ``{relative path: sha256}``: the name of a published dataset or pool."""
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()[:16]


def classify(rel: Path) -> str:
    """Return ``image``, ``label`` or ``other`` for a file's path relative to the source's root.

    Examples:
        >>> [classify(Path(p)) for p in ("a/b.JPG", "labels/b.png", "b.txt", ".x/b.jpg", "notes.md")]
        ['image', 'label', 'label', 'other', 'other']
    """
    if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
        return "other"  # hidden files and macOS archive debris, such as __MACOSX/._b.jpg
    if any(part.lower() in LABEL_FOLDERS for part in rel.parts[:-1]) or rel.suffix.lower() in LABEL_SUFFIXES:
        return "label"
    return "image" if rel.suffix.lower() in IMAGE_SUFFIXES else "other"


def walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """Return the files under ``folder`` and the symbolic links to folders found there, both sorted.

    Links to folders are never followed (``Path.rglob`` does not descend into them): they are returned so the caller
    can say how many were skipped. A link to a file is a file here, as ``Path.is_file`` says.
    """
    files, links = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() and path.is_dir():
            links.append(path)
        elif path.is_file():
            files.append(path)
    return files, links


def warn_links(what: str, links: list[Path], where: Where) -> None:
    """Log one warning naming how many symbolic links to folders were skipped under ``what``, and why."""
    from ultralytics.utils import LOGGER

    if not links:
        return
    more = f" and {len(links) - SHOWN} more" if len(links) > SHOWN else ""
    shown = ", ".join(f"'{where(p)}'" for p in links[:SHOWN]) + more
    LOGGER.warning(f"{what}: {len(links)} symbolic links to folders skipped (a link can point anywhere; give its "
                   f"target as a source of its own to use it): {shown}")  # fmt: skip
