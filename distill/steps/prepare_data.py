"""Step 1, prepare-data: import, normalise, validate and publish a dataset.

A YOLO, COCO JSON or Pascal VOC dataset is normalised to the YOLO layout, validated with Ultralytics' own dataset
checks, and published under ``<prefix>/datasets/<content-hash>/``.

The published folder holds ``images/<split>/``, ``labels/<split>/``, ``data.yaml`` and ``manifest.json`` (every file
with its sha256, class names, image and instance counts per split, boxes dropped on import). The hash is computed
over the content, so the same data always lands in the same place and is never uploaded twice; the manifest is
uploaded last, so a folder without one is an interrupted upload, never a dataset.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .. import storage
from ..errors import DistillError
from . import tracking
from .archive import safe_extract_zip
from .common import resolve_prefix
from .import_coco import from_coco
from .import_common import Where
from .import_voc import from_voc
from .import_yolo import from_yolo

FORMATS = ("yolo", "coco", "voc")


def prepare_data(
    source: str,
    format: str = "yolo",  # noqa: A002 (the CLI flag's name)
    dest: str | None = None,
    classes: list[str] | str | None = None,
    workdir: str | Path | None = None,
    run_id: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Import, normalise, validate and publish a dataset; return ``uri``, ``data``, ``hash``, counts and names.

    Args:
        source: A local folder, a local ``.zip``, an ``s3://`` prefix or an ``s3://...zip``.
        format: ``yolo`` (a folder with ``data.yaml``), ``coco`` (``annotations/*.json`` + images) or ``voc``.
        dest: ``s3://bucket/prefix`` to publish under (default ``$YOLO_DISTILL_S3_PREFIX``).
        classes: Class names in index order (VOC: default = sorted names found in the files).
        workdir: Scratch folder (default: a temporary one, removed afterwards).
        run_id: Pipeline run this step belongs to; when given, the step is tracked as its MLflow child run.
        experiment: MLflow experiment.
        tracking_uri: MLflow tracking URI.

    Raises:
        DistillError: Unknown format, missing/invalid source, unsafe archive, unknown class, S3 errors.
    """
    if format not in FORMATS:
        raise DistillError(f"unknown dataset format '{format}': choose one of {', '.join(FORMATS)}")
    prefix = resolve_prefix(dest)
    storage.check_bucket(prefix)  # fail before any work on a missing bucket or rejected credentials
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else classes
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        out = tmp / "dataset"
        manifest = import_dataset(source, out, format, names, scratch=tmp)
        digest = manifest["hash"]
        target = prefix.join("datasets", digest)
        uploaded = False
        if storage.head(target.join("manifest.json")) is None:
            storage.upload_dir(out, target)
            storage.upload_bytes(
                json.dumps(manifest, indent=2).encode(), target.join("manifest.json"), "application/json"
            )
            uploaded = True
    result = {
        "uri": str(target),
        "data": str(target.join("data.yaml")),
        "hash": digest,
        "names": manifest["names"],
        "counts": manifest["counts"],
        "dropped_boxes": manifest["dropped_boxes"],
        **({"category_ids": manifest["category_ids"]} if "category_ids" in manifest else {}),
        "uploaded": uploaded,
    }
    if run_id:
        result["mlflow_run_id"] = _track(result, source, format, run_id, experiment, tracking_uri)
    return result


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
        local = _materialise(source, tmp / "source")
        fetched = storage.is_s3(source) or str(source).lower().endswith(".zip")  # extracted or downloaded here
        where = Where(local, str(source) if fetched else None)
        if format == "yolo":
            report = from_yolo(local, out, where, confine=local if fetched else None)
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
    both instead of failing on MLflow's "Changing param values is not allowed".
    """
    with tracking.step_run(run_id, f"prepare-data-{result['hash'][:12]}", experiment, tracking_uri) as run:
        params = {"source": source, "format": fmt, "dataset": result["uri"], "hash": result["hash"],
                  "names": ",".join(result["names"])}  # fmt: skip
        tracking.log_params(run.client, run.child_id, params)
        counts = {f"{split}/{k}": v for split, c in result["counts"].items() for k, v in c.items()}
        tracking.log_metrics(run.client, run.child_id, {**counts, "dropped_boxes": result["dropped_boxes"]}, step=0)
    return run.child_id


def _materialise(source: str, folder: Path) -> Path:
    """Bring the source to a local folder (download from S3, extract archives safely)."""
    if storage.is_s3(source):
        if source.lower().endswith(".zip"):
            archive = storage.download_file(source, folder.with_suffix(".zip"))
            return safe_extract_zip(archive, folder, name=source)
        storage.download_prefix(source, folder)
        return folder
    path = Path(source)
    if not path.exists():
        raise DistillError(f"dataset source '{source}' not found")
    if path.is_file() and path.suffix.lower() == ".zip":
        return safe_extract_zip(path, folder)
    return path


def verify_labels(out: Path, origins: dict[str, str]) -> dict[str, int]:
    """Check every imported image and label with Ultralytics' own verifier; return unreadable images per split.

    An image Ultralytics cannot read is removed with its label and counted (it would skip it at training time with a
    warning only; a split left without images is refused). A label it would refuse — a class beyond the names,
    coordinates outside the image, the wrong number of columns for the task — is one error naming the file it came
    from (``origins``: ``<split>/<image name>`` → the user's label or annotation file), because Ultralytics would drop
    that image's labels at training time and train on the image as if it held no objects.
    """
    from ultralytics.data.utils import check_image, verify_image_label
    from ultralytics.utils import LOGGER

    spec = yaml.safe_load((out / "data.yaml").read_text())
    kpt_shape = spec.get("kpt_shape") or [0, 0]
    dropped = {}
    for split_dir in sorted(p for p in (out / "images").iterdir() if p.is_dir()):
        images = sorted(split_dir.iterdir())
        bad = 0
        for image in images:
            label = out / "labels" / split_dir.name / f"{image.stem}.txt"
            try:
                check_image(str(image))
            except Exception as e:  # PIL's errors, Ultralytics' size/format assertions
                LOGGER.warning(f"prepare-data: skipping unreadable image '{image.name}' ({split_dir.name}): {e}")
                image.unlink()
                label.unlink(missing_ok=True)
                bad += 1
                continue
            args = (str(image), str(label), "", bool(spec.get("kpt_shape")), len(spec["names"]), *kpt_shape, False)
            checked = verify_image_label(args)
            if checked[0] is None:  # Ultralytics' corrupt-label result: its reason after the file name
                reason = str(checked[-1]).split("ignoring corrupt image/label: ")[-1]
                if "inhomogeneous" in reason:  # numpy's words for rows of different lengths
                    reason = "its rows have different numbers of columns"
                origin = origins.get(f"{split_dir.name}/{image.name}", str(label))
                raise DistillError(f"labels of image '{image.name}' from '{origin}': {reason}")
        if bad == len(images):
            raise DistillError(f"split '{split_dir.name}' has no readable images ({bad} unreadable)")
        dropped[split_dir.name] = bad
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
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()[:16]
    return {
        "hash": digest,
        "format": fmt,
        "source": str(source),
        "names": report["names"],
        "counts": counts,
        "dropped_boxes": report["dropped_boxes"],
        **({"category_ids": report["category_ids"]} if "category_ids" in report else {}),
        "files": files,
    }
