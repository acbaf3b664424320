"""What every step shares: the S3 prefix, fetching inputs by URI, and the scratch folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from .. import storage
from ..errors import DistillError
from ..storage import S3Uri

PREFIX_ENV = "YOLO_DISTILL_S3_PREFIX"
#: Where a shared input-cache volume is mounted in a cluster's pods (``pipeline compile --cache-pvc``), and the
#: cache folder the steps then use (``$YOLO_DISTILL_CACHE``).
CACHE_MOUNT = "/var/cache/yolo-distill"
CACHE_ENV = {"YOLO_DISTILL_CACHE": f"{CACHE_MOUNT}/inputs"}
#: The splits evaluating and registering read (Ultralytics' validator also checks that ``val`` exists).
EVAL_SPLITS = ("val", "test")


def resolve_prefix(prefix: str | None) -> S3Uri:
    """Return the S3 prefix to write under: the given one, else ``$YOLO_DISTILL_S3_PREFIX``."""
    value = prefix or os.environ.get(PREFIX_ENV)
    if not value:
        raise DistillError(f"no S3 destination: pass an s3://bucket/prefix or set {PREFIX_ENV}")
    return storage.parse_s3_uri(value)


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
    local = cache_dir() / key / Path(storage.parse_s3_uri(uri).key).name
    if not local.is_file():
        storage.download_file(uri, local)
    return local


def fetch_dataset(uri: str, splits: tuple[str, ...] | None = None) -> Path:
    """Return a local ``data.yaml`` for a dataset URI.

    Accepts a dataset published by prepare-data (``s3://.../datasets/<hash>[/data.yaml]``) or a local dataset yaml;
    S3 datasets are downloaded once into the cache and every file is checked against the manifest. A sharded
    dataset (:mod:`distill.shards`) is streamed shard by shard, several at a time; ``splits`` (e.g. ``("val",
    "test")`` for evaluation) fetches only those splits' shards and the common files. Datasets published before
    shards existed (one object per file) are read file by file, as they always were.
    """
    if not storage.is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise DistillError(f"dataset '{uri}' not found")
        return path
    root = _dataset_root(uri)
    manifest = json.loads(storage.read_bytes(root.join("manifest.json")))
    local = cache_dir() / "datasets" / manifest["hash"]
    if manifest.get("shards"):
        fetch_shards(root, manifest, local, splits)
    elif not (local / ".complete").is_file():
        for rel, digest in manifest["files"].items():
            target = local / rel
            if not (target.is_file() and storage.sha256_file(target) == digest):
                storage.download_file(root.join(rel), target)
        (local / ".complete").write_text(manifest["hash"])
    data = local / "data.yaml"
    yaml.safe_load(data.read_text())  # readable
    return data


def dataset_counts(uri: str) -> dict[str, dict[str, int]] | None:
    """Return a published dataset's per-split counts from its manifest (``None`` for a local dataset yaml).

    A step that fetched only some splits (evaluate: no ``train``) still knows how many images the others hold.
    """
    if not storage.is_s3(uri):
        return None
    return json.loads(storage.read_bytes(_dataset_root(uri).join("manifest.json"))).get("counts")


def _dataset_root(uri: str) -> S3Uri:
    """Return the folder of a published dataset, given as the folder or its ``data.yaml``."""
    return storage.parse_s3_uri(uri[: -len("/data.yaml")] if uri.endswith("/data.yaml") else uri)


def fetch_shards(root: S3Uri, manifest: dict[str, Any], local: Path, splits: tuple[str, ...] | None = None) -> int:
    """Stream a sharded folder's shards (those ``splits`` need) into ``local``; return how many were fetched."""
    from .. import shards

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
    manifest = json.loads(storage.read_bytes(root.join("manifest.json")))
    if not isinstance(manifest, dict) or manifest.get("kind") != POOL_KIND:
        raise DistillError(f"'{uri}' is not an unlabelled pool (its manifest.json is not a pool's)")
    local = cache_dir() / "pools" / manifest["hash"]
    ok = local / ".complete"
    if manifest.get("shards"):
        fetch_shards(root, manifest, local)
    elif not ok.is_file():
        for rel, digest in manifest["files"].items():
            target = (local / rel).resolve()
            if not target.is_relative_to(local.resolve()):
                raise DistillError(f"'{uri}': its manifest names '{rel}', outside the pool")
            if not (target.is_file() and storage.sha256_file(target) == digest):
                storage.download_file(root.join(rel), target)
                if storage.sha256_file(target) != digest:
                    target.unlink()
                    raise storage.StorageError(f"'{root.join(rel)}' does not match the pool's manifest (changed)")
        ok.write_text(manifest["hash"])
    return local / "images"


def check_pool_source(unlabeled: str | None) -> None:
    """Refuse an ``unlabeled`` that is neither a pool URI (``s3://``) nor a local folder (before anything runs)."""
    if unlabeled and not unlabeled.startswith("s3://") and not Path(unlabeled).is_dir():
        raise DistillError(f"unlabeled '{unlabeled}' is neither a folder of images nor a pool URI (s3://.../pools/...)")


def pool_arguments(unlabeled: str | None) -> dict[str, Any]:
    """Return :func:`distill.api.distill`'s pool arguments for ``unlabeled`` (``{}`` without one).

    A prepare-data pool (``s3://``) is fetched and checked against its manifest (:func:`fetch_pool`); its hash keys
    the pseudo-labels' cache. A local folder is taken as it is (:mod:`distill.pool_data` checks it against val/test).
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
    from ..api import model_task

    if Path(uri).suffix.lower() in {".yaml", ".yml"}:
        return uri
    local = str(fetch(uri))
    try:
        model_task(local)
    except DistillError as e:
        raise DistillError(f"{role} '{uri}': {e}") from None
    return local
