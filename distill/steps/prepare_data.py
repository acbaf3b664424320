"""Step 1, prepare-data: import, normalise, validate and publish a dataset.

A YOLO, COCO JSON or Pascal VOC dataset is normalised to the YOLO layout, validated with Ultralytics' own dataset
checks, and published under ``<prefix>/datasets/<content-hash>/``.

The published folder holds ``images/<split>/``, ``labels/<split>/``, ``data.yaml`` and ``manifest.json`` (every file
with its sha256, class names, image and instance counts per split). The hash is computed
over the content, so the same data always lands in the same place and is never uploaded twice; the manifest is
uploaded last, so a folder without one is an interrupted upload, never a dataset. Because the content is shared, its
manifest holds only what the content says: where it came from (source, format, COCO category ids, boxes dropped on
import: :data:`PROVENANCE`) is recorded per publication under ``<prefix>/publications/`` and in the step's result,
never in the manifest, which a later publication of the same content from elsewhere would find claiming the first.

With ``unlabeled`` set, an unlabelled image source is published beside the dataset as a pool
(``<prefix>/pools/<pool-hash>/``, :mod:`.unlabeled_pool`), checked against the dataset's splits before anything is
uploaded; the dataset's own manifest and hash do not change, the result gains ``unlabeled``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..data import storage
from ..data.dataset_files import verify_split
from ..data.image_files import Where, content_hash
from ..errors import DistillError
from ..yaml_files import read_yaml
from . import tracking
from .archive import safe_extract_zip
from .common import resolve_prefix
from .import_coco import from_coco
from .import_voc import from_voc
from .import_yolo import from_yolo
from .unlabeled_pool import COUNTS, POOL_KIND, build_pool, scan_pool

FORMATS = ("yolo", "coco", "voc")
#: Manifest fields that describe one publication, not the content the hash names (a pool's ``dataset`` and counts
#: included): left out of the published manifest and written per publication (:func:`record_publication`). Older
#: manifests still hold them; nothing reads them from a manifest.
PROVENANCE = ("format", "source", "category_ids", "dropped_boxes", "dataset", *COUNTS)


def prepare_data(
    source: str,
    format: str = "yolo",  # noqa: A002 (the CLI flag's name)
    dest: str | None = None,
    classes: list[str] | str | None = None,
    workdir: str | Path | None = None,
    run_id: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    unlabeled: str | None = None,
) -> dict[str, Any]:
    """Import, normalise, validate and publish a dataset; return ``uri``, ``data``, ``hash``, counts and names.

    The result's ``publication`` is the URI of this publication's record (source, format, category ids, boxes
    dropped: :func:`record_publication`); its ``category_ids`` and ``dropped_boxes`` are this import's.

    Args:
        source: A local folder, a local ``.zip``, an ``s3://`` prefix or an ``s3://...zip``.
        format: ``yolo`` (a folder with ``data.yaml``), ``coco`` (``annotations/*.json`` + images) or ``voc``.
        dest: ``s3://bucket/prefix`` to publish under (default ``$YOLO_DISTILL_S3_PREFIX``).
        classes: Class names in index order (VOC: default = sorted names found in the files).
        workdir: Scratch folder (default: a temporary one, removed afterwards).
        run_id: Pipeline run this step belongs to; when given, the step is tracked as its MLflow child run.
        experiment: MLflow experiment.
        tracking_uri: MLflow tracking URI.
        unlabeled: Unlabelled images to publish beside the dataset as a pool (a folder, a ``.zip``, an ``s3://``
            prefix or ``s3://...zip``; an ``s3://`` prefix is read as it is now). The result then has
            ``unlabeled``: the pool's ``uri``, ``hash`` (the snapshot used), ``images`` and what was left out
            (:data:`.unlabeled_pool.COUNTS`).

    Raises:
        DistillError: Unknown format, missing/invalid source, unsafe archive, unknown class, S3 errors; an
            unlabelled source without images, or left without any once leaks and repeats are dropped.
    """
    if format not in FORMATS:
        raise DistillError(f"unknown dataset format '{format}': choose one of {', '.join(FORMATS)}")
    prefix = resolve_prefix(dest)
    storage.check_bucket(prefix)  # fail before any work on a missing bucket or rejected credentials
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else classes
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        scan = None
        if unlabeled:  # sorted first: a source without images fails before the dataset's import
            scan = scan_pool(unlabeled, *open_source(unlabeled, tmp / "unlabeled", "unlabelled source"))
        manifest = import_dataset(source, tmp / "dataset", format, names, scratch=tmp)
        pool = build_pool(scan, tmp / "pool", manifest) if scan else None  # checked before anything is uploaded
        target = prefix.join("datasets", manifest["hash"])
        uploaded = publish(tmp / "dataset", manifest, target)
        publication = record_publication(prefix, manifest)
        pooled = _publish_pool(tmp / "pool", pool, prefix) if pool else None
    result = {
        "uri": str(target),
        "data": str(target.join("data.yaml")),
        "hash": manifest["hash"],
        "names": manifest["names"],
        "counts": manifest["counts"],
        "dropped_boxes": manifest["dropped_boxes"],
        **({"category_ids": manifest["category_ids"]} if "category_ids" in manifest else {}),
        "uploaded": uploaded,
        "publication": publication,
        **({"unlabeled": pooled} if pooled else {}),
    }
    if run_id:
        result["mlflow_run_id"] = _track(result, source, format, run_id, experiment, tracking_uri)
    return result


def publish(folder: Path, manifest: dict[str, Any], target: storage.S3Uri, shard_bytes: int | None = None) -> bool:
    """Upload a content-addressed folder as shards and then its manifest, unless ``target`` has one.

    The folder is packed into tar shards (:mod:`distill.data.shards`) beside it and uploaded several at a time; the
    manifest — every file's sha256 plus the shards — goes last (``data.yaml`` is also uploaded as an object of its
    own, so the result's ``data`` URI can be read directly), so a prefix without a manifest is an interrupted upload
    (uploaded again by the next run), never a dataset or pool; one with a manifest holds this very content (its hash
    is the folder's name). Returns whether anything was uploaded. ``manifest`` gains ``shards``. ``shard_bytes``: the
    largest shard (default :data:`distill.data.shards.SHARD_BYTES`; the data benchmark measures others). The manifest is
    uploaded without its :data:`PROVENANCE` fields (see :func:`record_publication`).
    """
    from ..data import shards

    if storage.head(target.join("manifest.json")) is not None:
        return False
    packed = folder.with_name(folder.name + "-shards")
    try:
        manifest["shards"] = shards.pack(folder, manifest["files"], packed, shard_bytes or shards.SHARD_BYTES)
        uploads = [(packed / s["name"], target.join("shards", s["name"])) for s in manifest["shards"]]
        if (folder / "data.yaml").is_file():  # also as an object: the result's ``data`` URI stays readable as it is
            uploads.append((folder / "data.yaml", target.join("data.yaml")))
        storage.upload_files(uploads)
    finally:
        shutil.rmtree(packed, ignore_errors=True)
    shared = {k: v for k, v in manifest.items() if k not in PROVENANCE}
    storage.upload_bytes(json.dumps(shared, indent=2).encode(), target.join("manifest.json"), "application/json")
    return True


def record_publication(prefix: storage.S3Uri, manifest: dict[str, Any]) -> str:
    """Write where this publication of a dataset or pool came from (its :data:`PROVENANCE`); return the record's URI.

    ``<prefix>/publications/<datasets|pools>/<hash>/<sha256[:16] of the record>.json``: one record per distinct
    provenance, so publishing the same content from the same source again adds nothing, and from another source (or
    format, or category ids) adds its own record instead of inheriting the first publisher's.
    """
    kind = manifest.get("kind", "dataset")
    record = {"hash": manifest["hash"], "kind": kind, **{k: manifest[k] for k in PROVENANCE if k in manifest}}
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    folder = "pools" if kind == POOL_KIND else "datasets"
    uri = prefix.join("publications", folder, manifest["hash"], f"{hashlib.sha256(body).hexdigest()[:16]}.json")
    if storage.head(uri) is None:
        storage.upload_bytes(body, uri, "application/json")
    return str(uri)


def _publish_pool(folder: Path, pool: dict[str, Any], prefix: storage.S3Uri) -> dict[str, Any]:
    """Publish a pool under ``<prefix>/pools/<pool-hash>/``; return the result's ``unlabeled`` (URI, hash, counts)."""
    target = prefix.join("pools", pool["hash"])
    uploaded = publish(folder, pool, target)
    return {"uri": str(target), **{k: pool[k] for k in ("hash", "source", "images", *COUNTS)}, "uploaded": uploaded,
            "publication": record_publication(prefix, pool)}  # fmt: skip


def open_source(source: str, folder: Path, what: str = "dataset source") -> tuple[Path, Where]:
    """Bring ``source`` to a local folder (see :func:`_materialise`); return it with how to name its files.

    A downloaded or extracted copy's files are named by the source as given; a local folder's by their own paths.
    """
    local = _materialise(source, folder, what)
    fetched = storage.is_s3(source) or str(source).lower().endswith(".zip")
    return local, Where(local, str(source) if fetched else None)


def import_dataset(
    source: str,
    out: str | Path,
    format: str = "yolo",  # noqa: A002 (the CLI flag's name)
    classes: list[str] | None = None,
    scratch: str | Path | None = None,
) -> dict[str, Any]:
    """Import a dataset into a local YOLO folder ``out`` (``data.yaml`` + images/labels) and return its manifest.

    The local half of :func:`prepare_data` (no upload, no tracking), also used by the benchmarks to import BCCD
    exactly as the pipeline does.

    Args:
        source: A local folder, a local ``.zip``, an ``s3://`` prefix or an ``s3://...zip``.
        out: Folder to write (must not hold another dataset).
        format: ``yolo``, ``coco`` or ``voc``.
        classes: Class names in index order (VOC: default = sorted names found in the files).
        scratch: Folder for downloads and extraction (default: a temporary one, removed afterwards).

    Returns:
        (dict): The manifest: ``hash`` (content hash), ``names``, ``counts`` per split, ``dropped_boxes``, ...
    """
    if format not in FORMATS:
        raise DistillError(f"unknown dataset format '{format}': choose one of {', '.join(FORMATS)}")
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        tmp = Path(tmp)
        local, where = open_source(source, tmp / "source")
        if format == "yolo":  # an extracted or downloaded copy's paths must resolve inside it
            report = from_yolo(local, out, where, confine=local if where.label else None)
        elif format == "voc":
            report = from_voc(local, out, classes, where)
        else:
            report = from_coco(local, out, tmp / "coco", where)
        report["unreadable"] = verify_labels(out, report.pop("origins"))
        _validate(out / "data.yaml")
        return _manifest(out, report, source, format)


def _track(result: dict[str, Any], source: str, fmt: str, run_id: str, experiment, tracking_uri) -> str:
    """Record the import as a ``prepare-data-<hash>`` child run of the pipeline run: params, counts, the URI.

    One child run per dataset, so a pipeline run that prepares two datasets (train and an extra test set) records
    both instead of failing on MLflow's "Changing param values is not allowed". With an unlabelled pool the run is
    ``prepare-data-<hash>-pool-<pool-hash>`` and also records the pool (source, URI, hash: the snapshot used, counts),
    so a rerun that finds more images under an ``s3://`` prefix records the new snapshot beside the old one.
    """
    pool = result.get("unlabeled")
    name = f"prepare-data-{result['hash'][:12]}" + (f"-pool-{pool['hash'][:12]}" if pool else "")
    with tracking.step_run(run_id, name, experiment, tracking_uri) as run:
        params = {"source": tracking.spelling(source), "format": fmt, "dataset": result["uri"], "hash": result["hash"],
                  "names": ",".join(result["names"]), "publication": result["publication"]}  # fmt: skip
        if "category_ids" in result:  # this import's ids: the shared manifest no longer holds them
            params["category_ids"] = ",".join(map(str, result["category_ids"]))
        metrics = {f"{split}/{k}": v for split, c in result["counts"].items() for k, v in c.items()}
        metrics["dropped_boxes"] = result["dropped_boxes"]
        if pool:
            params.update({f"unlabeled_{k}": pool[k] for k in ("source", "uri", "hash")})
            metrics.update({f"unlabeled/{k}": pool[k] for k in ("images", *COUNTS)})
        tracking.log_params(run.client, run.child_id, params)
        tracking.log_metrics(run.client, run.child_id, metrics, step=0)
    return run.child_id


def _materialise(source: str, folder: Path, what: str = "dataset source") -> Path:
    """Bring the source to a local folder (download from S3, extract archives safely); ``what`` names it in errors."""
    if storage.is_s3(source):
        if source.lower().endswith(".zip"):
            archive = storage.download_file(source, folder.with_suffix(".zip"))
            return safe_extract_zip(archive, folder, name=source)
        storage.download_prefix(source, folder)
        return folder
    path = Path(source)
    if not path.exists():
        raise DistillError(f"{what} '{source}' not found")
    if path.is_file() and path.suffix.lower() == ".zip":
        return safe_extract_zip(path, folder)
    return path


def verify_labels(out: Path, origins: dict[str, str]) -> dict[str, int]:
    """Check every imported image and label with Ultralytics' own verifier; return unreadable images per split.

    An image Ultralytics cannot read is removed with its label and counted (it would skip it at training time with a
    warning only; a split left without images is refused). A label it would refuse — a class beyond the names,
    coordinates outside the image, the wrong number of columns for the task — is one error naming the file it came
    from (``origins``: ``<split>/<image name>`` → the user's label or annotation file), because Ultralytics would drop
    that image's labels at training time and train on the image as if it held no objects. The check is the engine's
    too (:func:`distill.data.dataset_files.verify_split`), so ``train`` refuses what prepare-data refuses.
    """
    from ultralytics.utils import LOGGER

    spec = read_yaml(out / "data.yaml", "the imported data.yaml")
    dropped = {}
    for split_dir in sorted(p for p in (out / "images").iterdir() if p.is_dir()):
        split = split_dir.name
        pairs = [(image, out / "labels" / split / f"{image.stem}.txt") for image in sorted(split_dir.iterdir())]
        unreadable = verify_split(
            pairs, spec, split, origin=lambda image, label, s=split: origins.get(f"{s}/{image.name}", str(label))
        )
        for image, reason in unreadable.items():
            LOGGER.warning(f"prepare-data: skipping unreadable image '{image.name}' ({split}): {reason}")
            image.unlink()
            (out / "labels" / split / f"{image.stem}.txt").unlink(missing_ok=True)
        dropped[split] = len(unreadable)
    return dropped


def _validate(data_yaml: Path) -> None:
    """Run Ultralytics' own dataset check (no downloads) on the normalised dataset."""
    from ultralytics.data.utils import check_det_dataset

    try:
        check_det_dataset(str(data_yaml), autodownload=False)
    except Exception as e:
        raise DistillError(f"the imported dataset failed Ultralytics' checks: {e}") from None


def _manifest(out: Path, report: dict[str, Any], source: str, fmt: str) -> dict[str, Any]:
    files = {p.relative_to(out).as_posix(): storage.sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    counts = {}
    for split_dir in sorted((out / "images").iterdir()):
        labels = list((out / "labels" / split_dir.name).glob("*.txt"))
        counts[split_dir.name] = {
            "images": sum(1 for _ in split_dir.iterdir()),
            "instances": sum(len(p.read_text().splitlines()) for p in labels),
            "unreadable": report.get("unreadable", {}).get(split_dir.name, 0),
        }
    digest = content_hash(files)
    return {
        "hash": digest,
        "format": fmt,
        "source": tracking.spelling(str(source)),  # one spelling: a rerun with "data/" records the same source
        "names": report["names"],
        "counts": counts,
        "dropped_boxes": report["dropped_boxes"],
        **({"category_ids": report["category_ids"]} if "category_ids" in report else {}),
        "files": files,
    }
