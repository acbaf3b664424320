"""What every step shares: the S3 prefix, fetching inputs by URI, and the scratch folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..data import storage
from ..data.storage import S3Uri
from ..errors import DistillError, shown
from ..paths import check_name, check_relative, confine
from ..yaml_files import read_yaml

PREFIX_ENV = "YOLO_DISTILL_S3_PREFIX"
#: Where a shared input-cache volume is mounted in a cluster's pods (``pipeline compile --cache-pvc``), and the
#: cache folder the steps then use (``$YOLO_DISTILL_CACHE``).
CACHE_MOUNT = "/var/cache/yolo-distill"
CACHE_ENV = {"YOLO_DISTILL_CACHE": f"{CACHE_MOUNT}/inputs"}
#: The splits evaluating and registering read (Ultralytics' validator also checks that ``val`` exists).
EVAL_SPLITS = ("val", "test")
#: A published folder's name: its content hash (16 hex digits today; 8 to 64 accepted).
_HASH_RE = re.compile(r"[0-9a-f]{8,64}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def resolve_prefix(prefix: str | None) -> S3Uri:
    """Return the S3 prefix to write under: the given one, else ``$YOLO_DISTILL_S3_PREFIX``."""
    value = prefix or os.environ.get(PREFIX_ENV)
    if not value:
        raise DistillError(f"no S3 destination: pass an s3://bucket/prefix or set {PREFIX_ENV}")
    return storage.parse_s3_uri(value)


def run_folder(prefix: str | S3Uri | None, run_id: str, name: str | None = None) -> S3Uri:
    """Return where a pipeline run's step writes: ``<prefix>/runs/<run_id>[/<name>]``, both names checked first.

    The one place a run id and a step name become S3 keys (and, through the step's work folder, local paths): a
    value that is no plain name (``../x``, ``a/b``) is bad input, refused before any request.
    """
    check_name(run_id, "run id")
    if name is not None:
        check_name(name, "step name")
    root = prefix if isinstance(prefix, S3Uri) else resolve_prefix(prefix)
    return root.join("runs", run_id, name) if name is not None else root.join("runs", run_id)


def cache_dir() -> Path:
    """Local cache for downloaded inputs (``$YOLO_DISTILL_CACHE``, default ``~/.cache/yolo-distill/inputs``)."""
    path = Path(os.environ.get("YOLO_DISTILL_CACHE") or Path.home() / ".cache" / "yolo-distill" / "inputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch(uri: str) -> Path:
    """Return a local path for a local file or an ``s3://`` object (downloaded once, sha256-verified)."""
    if not storage.is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise DistillError(f"'{uri}' not found")
        return path
    meta = storage.head(uri)
    if meta is None:
        raise storage.NotFound(f"'{uri}' not found")
    key = hashlib.sha256(f"{uri}\0{meta.get('sha256')}".encode()).hexdigest()[:16]
    local = confine(cache_dir(), key, Path(storage.parse_s3_uri(uri).key).name, what=f"'{uri}': the object name")
    if not local.is_file():
        storage.download_file(uri, local)
    return local


def fetch_dataset(uri: str, splits: tuple[str, ...] | None = None) -> Path:
    """Return a local ``data.yaml`` for a dataset URI.

    Accepts a dataset published by prepare-data (``s3://.../datasets/<hash>[/data.yaml]``) or a local dataset yaml;
    S3 datasets are downloaded once into the cache and every file is checked against the manifest. A sharded
    dataset (:mod:`distill.data.shards`) is streamed shard by shard, several at a time; ``splits`` (e.g. ``("val",
    "test")`` for evaluation) fetches only those splits' shards and the common files. Datasets published before
    shards existed (one object per file) are read file by file, as they always were.
    """
    if not storage.is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise DistillError(f"dataset '{uri}' not found")
        return path
    root = _dataset_root(uri)
    manifest = read_manifest(root)
    if "data.yaml" not in manifest["files"]:
        raise DistillError(f"'{uri}' is not a dataset: its manifest lists no data.yaml")
    local = confine(cache_dir(), "datasets", manifest["hash"], what="manifest hash")
    if manifest.get("shards"):
        fetch_shards(root, manifest, local, splits)
    else:
        fetch_files(root, manifest, local)
    data = local / "data.yaml"
    read_yaml(data, f"'{root.join('data.yaml')}'")  # readable, and bounded as every user file is
    return data


def dataset_counts(uri: str) -> dict[str, dict[str, int]] | None:
    """Return a published dataset's per-split counts from its manifest (``None`` for a local dataset yaml).

    A step that fetched only some splits (evaluate: no ``train``) still knows how many images the others hold.
    """
    if not storage.is_s3(uri):
        return None
    return read_manifest(_dataset_root(uri)).get("counts")


def _dataset_root(uri: str) -> S3Uri:
    """Return the folder of a published dataset, given as the folder or its ``data.yaml``."""
    return storage.parse_s3_uri(uri[: -len("/data.yaml")] if uri.endswith("/data.yaml") else uri)


def read_manifest(root: S3Uri) -> dict[str, Any]:
    """Return a published folder's ``manifest.json``, checked (:func:`parse_manifest`) before any of it is used."""
    uri = root.join("manifest.json")
    return parse_manifest(storage.read_bytes(uri), str(uri))


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """Return a dataset's or pool's manifest from its bytes, refusing one a fetch could not use safely.

    The manifest decides local paths (the cache folder is its ``hash``, every file one of its ``files``) and S3 keys
    (its shards' names), and it comes from S3, where anyone with write access may have changed it. So before any of
    it is used: a JSON object; ``hash`` a content hash (hex); ``files`` relative paths inside the folder
    (:func:`distill.paths.check_relative`) with sha256 digests; ``shards`` (optional) entries with a plain ``name``
    (:func:`distill.paths.check_name`), a ``split`` and ``files`` the manifest lists; ``counts`` a mapping.

    Raises:
        DistillError: One line naming ``where`` and the first bad value (:class:`~distill.paths.UnsafePath` for a
            path that would leave the cache): a manifest that does not parse is bad input (exit 2).
    """
    try:
        manifest = json.loads(data)
        if not isinstance(manifest, dict):
            raise DistillError(f"a JSON {type(manifest).__name__}, not an object")
        digest = manifest.get("hash")
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest):
            raise DistillError(f"its hash {shown(digest)} is not a content hash (8 to 64 hex digits)")
        _check_files(manifest.get("files"))
        if manifest.get("shards") is not None:
            _check_shards(manifest["shards"], manifest["files"])
        if not isinstance(manifest.get("counts", {}), dict) or not isinstance(manifest.get("kind", ""), str):
            raise DistillError("its counts are not a mapping, or its kind is not text")
    except (ValueError, RecursionError) as e:  # json's errors, DistillError (a ValueError too), "[[[[..." nested
        kind = type(e) if isinstance(e, DistillError) else DistillError
        reason = str(e) if isinstance(e, DistillError) else f"not JSON ({type(e).__name__}: {e})"
        raise kind(f"'{where}' is not a valid manifest: {reason}") from None
    return manifest


def _check_files(files: Any) -> None:
    """Refuse a manifest's ``files`` unless it maps relative paths inside the folder to sha256 digests."""
    if not isinstance(files, dict):
        raise DistillError(f"its files are {type(files).__name__}, not a mapping of path to sha256")
    for rel, digest in files.items():
        check_relative(rel, "file")
        if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
            raise DistillError(f"file '{rel}' has {shown(digest)} for its sha256 (64 hex digits)")


def _check_shards(shards: Any, files: dict[str, str]) -> None:
    """Refuse a manifest's ``shards`` unless each has a plain unique name, a split, and files the manifest lists."""
    if not isinstance(shards, list):
        raise DistillError(f"its shards are {type(shards).__name__}, not a list")
    names: set[str] = set()
    for shard in shards:
        if not isinstance(shard, dict):
            raise DistillError(f"a shard is {shown(shard)}, not an object")
        name = check_name(shard.get("name"), "shard name")
        if name in names:
            raise DistillError(f"shard '{name}' is listed twice")
        names.add(name)
        if not isinstance(shard.get("split"), str) or not isinstance(shard.get("files"), list):
            raise DistillError(f"shard '{name}' lacks a split (text) or files (a list)")
        unlisted = [rel for rel in shard["files"] if not isinstance(rel, str) or rel not in files]
        if unlisted:
            raise DistillError(f"shard '{name}' holds {shown(unlisted[0])}, which its files do not list")
        if not isinstance(shard.get("sha256", ""), str) or type(shard.get("size", 0)) is not int:
            raise DistillError(f"shard '{name}' has a sha256 that is not text or a size that is not a number")


def fetch_files(root: S3Uri, manifest: dict[str, Any], local: Path) -> None:
    """Download a folder of the layout before shards (one object per file) into ``local``, checking each file.

    Every file is confined to ``local`` and checked against the manifest's sha256 after download too, so an object
    changed after publishing is refused rather than used; ``.complete`` marks the folder whole.

    Raises:
        StorageError: A file does not match its manifest (exit 1).
    """
    if (local / ".complete").is_file():
        return
    for rel, digest in manifest["files"].items():
        target = confine(local, rel, what="file")
        if not (target.is_file() and storage.sha256_file(target) == digest):
            storage.download_file(root.join(rel), target)
            if storage.sha256_file(target) != digest:
                target.unlink()
                raise storage.StorageError(f"'{root.join(rel)}' does not match its manifest (changed)")
    (local / ".complete").write_text(manifest["hash"])


def fetch_shards(root: S3Uri, manifest: dict[str, Any], local: Path, splits: tuple[str, ...] | None = None) -> int:
    """Stream a sharded folder's shards (those ``splits`` need) into ``local``; return how many were fetched."""
    from ..data import shards

    need = shards.wanted(manifest["shards"], splits)
    return shards.unpack_all(
        need, manifest["files"], local, lambda shard: storage.open_stream(root.join("shards", shard["name"]))
    )


def fetch_pool(uri: str) -> Path:
    """Return a local folder of an unlabelled pool's images (``s3://.../pools/<hash>``, published by prepare-data).

    Downloaded once into the cache; every file is checked against the pool's manifest (sha256), after download too,
    so a pool whose objects were changed after publishing is refused rather than trained on.

    Raises:
        DistillError: ``uri`` is not an ``s3://`` URI, has no manifest, or its manifest is not a pool's.
        StorageError: A file does not match its manifest (exit 1).
    """
    from .unlabeled_pool import POOL_KIND

    root = storage.parse_s3_uri(uri.rstrip("/"))
    manifest = read_manifest(root)
    if manifest.get("kind") != POOL_KIND:
        raise DistillError(f"'{uri}' is not an unlabelled pool (its manifest.json is not a pool's)")
    local = confine(cache_dir(), "pools", manifest["hash"], what="manifest hash")
    if manifest.get("shards"):
        fetch_shards(root, manifest, local)
    else:
        fetch_files(root, manifest, local)
    return local / "images"


def check_pool_source(unlabeled: str | None) -> None:
    """Refuse an ``unlabeled`` that is neither a pool URI (``s3://``) nor a local folder (before anything runs)."""
    if unlabeled and not unlabeled.startswith("s3://") and not Path(unlabeled).is_dir():
        raise DistillError(f"unlabeled '{unlabeled}' is neither a folder of images nor a pool URI (s3://.../pools/...)")


def pool_arguments(unlabeled: str | None) -> dict[str, Any]:
    """Return :func:`distill.engine.api.distill`'s pool arguments for ``unlabeled`` (``{}`` without one).

    A prepare-data pool (``s3://``) is fetched and checked against its manifest (:func:`fetch_pool`); its hash keys
    the pseudo-labels' cache. A local folder is taken as it is (:mod:`distill.engine.pool_data` checks it against
    val/test).
    """
    check_pool_source(unlabeled)
    if not unlabeled:
        return {}
    if unlabeled.startswith("s3://"):
        images = fetch_pool(unlabeled)
        return {"unlabeled": images, "pool_hash": images.parent.name}
    return {"unlabeled": unlabeled}


def fetch_model(uri: str, role: str) -> str:
    """Return a local model: a ``.yaml`` as is, weights fetched by URI and checked to load (error names the URI)."""
    from ..engine.api import model_task

    if Path(uri).suffix.lower() in {".yaml", ".yml"}:
        return uri
    local = str(fetch(uri))
    try:
        model_task(local)
    except DistillError as e:
        raise DistillError(f"{role} '{uri}': {e}") from None
    return local


def record_weights(artifact: Any, result: dict[str, Any], **metadata: Any) -> str:
    """Record a training step's ``best.pt`` in the component's output artifact; return its URI for the next step.

    The artifact's metadata carries the weights' S3 URI, sha256 and MLflow run id (lineage in the KFP UI; the same
    URIs are in MLflow) plus ``metadata``; its file is the step's whole result as JSON. ``artifact`` is a KFP output
    artifact (``.metadata``, ``.path``), typed loosely so this module never imports kfp.
    """
    best = result["outputs"]["best.pt"]
    artifact.metadata.update(
        {"s3_uri": best["uri"], "sha256": best["sha256"], "mlflow_run_id": result["mlflow_run_id"], **metadata}
    )
    Path(artifact.path).write_text(json.dumps(result))
    return result["best"]
