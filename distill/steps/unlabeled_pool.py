"""Unlabelled image pools: the images of an unlabelled source, checked against a dataset and kept beside it.

An unlabelled source — a folder, a ``.zip``, an ``s3://`` prefix or an ``s3://...zip`` of images, no labels needed —
becomes a *pool*: its images only, each stored under its content hash (``images/<sha256[:16]><suffix>``: images of
the same name in different subfolders cannot collide, and an image given twice is stored once), and a
``manifest.json`` with every file's sha256. prepare-data publishes it under ``<prefix>/pools/<pool-hash>/``, and the
counts of what was left out, the source and the hash of the dataset the pool was checked against in a record of that
publication (:func:`distill.steps.prepare_data.record_publication`: the same images can come from another source,
checked against another dataset, so the shared manifest holds none of it); the pool hash is computed over the
files alone, so it names the snapshot: a scheduled run that reads a growing ``s3://`` prefix records which snapshot
it used, and the same images are never uploaded twice.

What is left out, and why nothing of it is refused:

- **Label files** (``.txt``, ``.xml``, ``.json``, anything under a ``labels/`` or ``annotations/`` folder) are
  ignored and counted (``ignored_label_files``), with a warning. A pool is unlabelled by definition; refusing
  would make users strip the label folders of a capture or export by hand before every run. Other files that are
  not images (and hidden files, ``__MACOSX/``) are ignored and counted too (``ignored_other_files``).
- **Unreadable images** — those Ultralytics' own ``check_image`` refuses, as for datasets — are dropped and counted
  (``unreadable``); a truncated JPEG it can restore is kept, restored.
- **Images identical to a val or test image** of the dataset (same sha256) are dropped and counted
  (``leaked_into_val_test``), with a warning naming a few: training on them would leak the held-out images into
  training and inflate every score. Dropped rather than refused, because a weekly production-capture prefix
  routinely holds frames that someone later labelled into val; refusing would break every scheduled run. Only
  identical files are found: a re-encoded or resized copy is not.
- **Images identical to a train image** (already labelled, ``in_labelled_train``) are dropped and counted, with a
  warning; repeats within the pool (``duplicates``) are dropped and counted.
- **Symbolic links to folders** inside a local folder source are not followed and are counted (``skipped_links``),
  with a warning: a link can point anywhere on the machine (a home folder, the dataset itself), so its target is
  pooled only when given as a source of its own.

Bad input is refused with one :class:`DistillError` (exit 2) before anything is uploaded: a source that is not a
folder, an archive or a prefix, a source without images, and a pool left with no image once the above are dropped.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import storage
from ..data.image_files import IMAGE_SUFFIXES, SHOWN, Where, classify, content_hash, walk, warn_links
from ..errors import DistillError

#: The manifest's ``kind``: tells a pool's manifest from a dataset's.
POOL_KIND = "unlabeled-pool"
#: What the result and manifest count besides the images kept, in this order.
COUNTS = ("ignored_label_files", "ignored_other_files", "unreadable", "leaked_into_val_test", "in_labelled_train",
          "duplicates", "skipped_links")  # fmt: skip
#: How the error for an empty pool names each reason an image was dropped.
DROPPED = {"unreadable": "unreadable", "leaked_into_val_test": "identical to val/test images",
           "in_labelled_train": "identical to train images", "duplicates": "repeats"}  # fmt: skip


@dataclass(frozen=True)
class PoolSource:
    """The files of an unlabelled source, sorted by path: its images and what is ignored.

    ``source`` is the source as given and ``where`` names its files the way the user knows them; ``links`` are the
    symbolic links to folders that were not followed (:func:`walk`).
    """

    source: str
    where: Where
    images: list[Path]
    label_files: list[Path]
    other_files: list[Path]
    links: list[Path] = field(default_factory=list)


def scan_pool(source: str, local: Path, where: Where) -> PoolSource:
    """Sort the files of a materialised unlabelled source (``local``) into images, label files and others.

    Raises:
        DistillError: ``local`` is not a folder, or holds no image (named by ``source``, with what it does hold).
    """
    if not local.is_dir():
        raise DistillError(f"unlabelled source '{source}' is not a folder, a .zip or an s3:// prefix")
    found: dict[str, list[Path]] = {"image": [], "label": [], "other": []}
    files, links = walk(local)
    for path in files:
        found[classify(path.relative_to(local))].append(path)
    warn_links(f"prepare-data: unlabelled source '{source}'", links, where)
    if not found["image"]:
        held = f"{len(found['label'])} label files and {len(found['other'])} other files"
        raise DistillError(
            f"unlabelled source '{source}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); it holds {held}"
        )
    scan = PoolSource(source, where, found["image"], found["label"], found["other"], links)
    _warn(scan, scan.label_files, "label files ignored (a pool is unlabelled)")
    _warn(scan, scan.other_files, "files that are not images ignored")
    return scan


def build_pool(scan: PoolSource, out: Path, dataset: dict[str, Any]) -> dict[str, Any]:
    """Store the usable images of ``scan`` in ``out/images`` under their content names; return the pool's manifest.

    Args:
        scan: The source's files, from :func:`scan_pool`.
        out: Folder to write (created; it must not exist yet).
        dataset: The manifest of the imported dataset the pool is checked against (its files' sha256 per split).

    Raises:
        DistillError: No image is left once the unreadable, leaked, already labelled and repeated ones are dropped.
    """
    known = _dataset_images(dataset)
    (out / "images").mkdir(parents=True)
    staging = out.with_name(f"{out.name}-staging")
    staging.mkdir()
    counts = dict.fromkeys(COUNTS, 0)
    counts.update(ignored_label_files=len(scan.label_files), ignored_other_files=len(scan.other_files),
                  skipped_links=len(scan.links))  # fmt: skip
    dropped: dict[str, list[str]] = {key: [] for key in COUNTS}
    for image in scan.images:
        why = _admit(image, out / "images", staging, known, scan.where)
        if why is not None:
            counts[why[0]] += 1
            dropped[why[0]].append(f"'{scan.where(image)}' ({why[1]})")
    shutil.rmtree(staging)
    _warn(scan, dropped["unreadable"], "unreadable images dropped")
    _warn(scan, dropped["leaked_into_val_test"], "images identical to val/test images dropped (a leak)")
    _warn(scan, dropped["in_labelled_train"], "images identical to train images dropped (already labelled)")
    files = {f"images/{p.name}": storage.sha256_file(p) for p in sorted((out / "images").iterdir())}
    if not files:
        lost = ", ".join(f"{counts[k]} {what}" for k, what in DROPPED.items() if counts[k])
        raise DistillError(
            f"unlabelled source '{scan.source}': no image is left to pool (of {len(scan.images)}: {lost})"
        )
    return {"hash": content_hash(files), "kind": POOL_KIND, "source": scan.source, "dataset": dataset["hash"],
            "images": len(files), **counts, "files": files}  # fmt: skip


def _dataset_images(dataset: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Return why a pool image with the sha256 of a dataset image is dropped: ``{sha256: (count key, detail)}``.

    Images of the held-out splits (val, test: any split but train) are leaks; they win over an identical train image.
    """
    train, held_out = {}, {}
    for rel, digest in dataset["files"].items():
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] == "images":
            if parts[1] == "train":
                train[digest] = ("in_labelled_train", f"= train/{parts[2]}")
            else:
                held_out[digest] = ("leaked_into_val_test", f"= {parts[1]}/{parts[2]}")
    return {**train, **held_out}


def _admit(image: Path, images: Path, staging: Path, known: dict[str, tuple[str, str]], where: Where) -> tuple | None:
    """Store one image in ``images`` as ``<sha256[:16]><suffix>``, or return why not: ``(count key, detail)``.

    ``known`` holds the sha256 of the dataset's images and of the pool's images kept so far (this adds to it). The
    image is checked on a copy (``check_image`` may rewrite a truncated JPEG; the user's own file is never touched),
    and compared by content before the check and after it (the dataset's images were restored the same way).
    """
    from ultralytics.data.utils import check_image

    raw = storage.sha256_file(image)
    if raw in known:
        return known[raw]
    copy = staging / f"image{image.suffix.lower()}"
    (shutil.move if where.label else shutil.copyfile)(image, copy)  # a scratch copy of the source is moved
    try:
        check_image(str(copy))
    except Exception as e:  # PIL's errors, Ultralytics' size/format assertions
        copy.unlink(missing_ok=True)
        if isinstance(e, ImportError):  # PIL could not identify it, and Ultralytics' HEIF fallback is not installed
            return "unreadable", "not an image format PIL can read"
        return "unreadable", (str(e).splitlines() or [type(e).__name__])[0]
    digest = storage.sha256_file(copy)
    if digest in known:
        copy.unlink()
        return known[digest]
    copy.replace(images / f"{digest[:16]}{copy.suffix}")
    known[raw] = known[digest] = ("duplicates", f"= '{where(image)}'")
    return None


def _warn(scan: PoolSource, items: list, what: str) -> None:
    """Log one warning: how many ``items`` and the first few of them (files, or names with a detail)."""
    from ultralytics.utils import LOGGER

    if not items:
        return
    shown = [f"'{scan.where(i)}'" if isinstance(i, Path) else str(i) for i in items[:SHOWN]]
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    LOGGER.warning(f"prepare-data: unlabelled source '{scan.source}': {len(items)} {what}: {', '.join(shown)}{more}")
