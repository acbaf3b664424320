"""Datasets as a few large objects: tar shards, with every file's sha256 kept in the manifest (issue 22).

One object per file costs one request, one round trip and one sha256 per file: with a cloud object store's latency
per request a few thousand images took minutes to publish and to fetch, where the same bytes as one object took
seconds (``benchmarks/README.md``, section 'Data'). So a published folder is packed into shards — plain tar (images
are compressed already), one split per shard, at most ``shard_bytes`` each — and the manifest lists every shard
(name, split, size, sha256, its files) beside every file's sha256. Packing is deterministic (sorted members, zeroed
owners and times): the same files make the same shards.

Unpacking reads a shard as a stream (a member is written while the next bytes arrive, nothing is held in memory but
one read buffer) and admits a member only if the manifest names it for this shard, it is a regular file, and its
bytes hash to the manifest's sha256; each file lands under its final name only after its check. A shard's files are
marked done together (``.shards/<name>.done``): a rerun after an interruption fetches only the shards without a
mark, and a damaged shard leaves none of its files behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ..paths import UnsafePath, check_relative, confine
from ..progress import Progress, size_note
from .storage import StorageError, part_path, sweep_stale_parts

#: Largest shard, in bytes (the last shard of a split is smaller). Large enough that requests are few, small enough
#: that a split of a few hundred MB is fetched by several connections at once.
SHARD_BYTES = 256 * 1024 * 1024
#: The group of files every fetch takes (``data.yaml``, a pool's images): not under ``images/<split>/`` or
#: ``labels/<split>/``.
COMMON = ""
_DONE = ".shards"
_BUFFER = 1024 * 1024


class ShardError(StorageError):
    """A shard does not match its manifest (damaged, modified or hostile): refused, nothing of it kept."""


def split_of(rel: str) -> str:
    """Return the split a dataset file belongs to (``images/<split>/...``, ``labels/<split>/...``), else COMMON.

    Examples:
        >>> split_of("images/train/a.jpg"), split_of("labels/val/a.txt"), split_of("data.yaml")
        ('train', 'val', '')
    """
    parts = rel.split("/")
    return parts[1] if len(parts) > 2 and parts[0] in {"images", "labels"} else COMMON


def plan(files: dict[str, str], sizes: dict[str, int], shard_bytes: int = SHARD_BYTES) -> list[dict[str, Any]]:
    """Group files into shards: one split per shard, in path order, a new shard when the next file would overflow.

    Args:
        files: ``{relative path: sha256}`` (the manifest's ``files``).
        sizes: ``{relative path: bytes}``.
        shard_bytes: Largest shard (a single larger file gets a shard of its own).

    Returns:
        (list[dict]): ``name`` (``<split or common>-<nnnnn>.tar``), ``split`` and ``files`` of each shard.
    """
    groups: dict[str, list[str]] = {}
    for rel in sorted(files):
        groups.setdefault(split_of(rel), []).append(rel)
    shards: list[dict[str, Any]] = []
    for split, rels in sorted(groups.items()):
        chunks: list[list[str]] = [[]]
        size = 0
        for rel in rels:
            if chunks[-1] and size + sizes[rel] > shard_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(rel)
            size += sizes[rel]
        name = split or "common"
        shards += [{"name": f"{name}-{i:05d}.tar", "split": split, "files": c} for i, c in enumerate(chunks)]
    return shards


def pack(folder: Path, files: dict[str, str], out: Path, shard_bytes: int = SHARD_BYTES) -> list[dict[str, Any]]:
    """Pack ``folder``'s files into tar shards under ``out``; return the manifest's ``shards`` (with size, sha256).

    Deterministic: members in path order, owners, times and modes zeroed, so the same files make the same bytes.
    """
    sizes = {rel: (folder / rel).stat().st_size for rel in files}
    shards = plan(files, sizes, shard_bytes)
    out.mkdir(parents=True, exist_ok=True)
    total, packed = sum(sizes.values()), 0
    with Progress(len(shards), "pack", "shards") as bar:  # GBs of images are written and hashed once more
        for shard in shards:
            path = out / shard["name"]
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
                for rel in shard["files"]:
                    info = tarfile.TarInfo(rel)
                    info.size, info.mode, info.mtime = sizes[rel], 0o644, 0
                    with open(folder / rel, "rb") as fh:
                        tar.addfile(info, fh)
            shard["size"] = path.stat().st_size
            shard["sha256"] = _sha256(path)
            packed += sum(sizes[rel] for rel in shard["files"])
            bar.update(1, size_note(packed, total))
    return shards


def unpack(stream: IO[bytes], shard: dict[str, Any], files: dict[str, str], target: Path) -> None:
    """Unpack one shard read as a stream into ``target``, checking every member against the manifest.

    Args:
        stream: The shard's bytes, read sequentially (a local file or an S3 response body).
        shard: The manifest's entry for this shard (``name``, ``files``).
        files: The manifest's ``{relative path: sha256}``.
        target: The folder the dataset is unpacked into.

    Raises:
        ShardError: A member the manifest does not name for this shard, one that is not a regular file or whose
            bytes do not hash to the manifest's sha256, a named file missing, or a stream that is not a tar.
            The shard's files written so far are removed.
        UnsafePath: The shard's name would put its mark outside ``target`` (checked before anything is written).
    """
    mark = _mark(target, shard)
    writer = _Writer(target, {rel: files[rel] for rel in shard["files"]}, shard["name"])
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                writer.admit(tar, member)
    except (tarfile.TarError, EOFError, OSError) as e:
        writer.remove()
        raise ShardError(f"shard '{shard['name']}' is damaged ({type(e).__name__}: {e})") from None
    except ShardError:
        writer.remove()
        raise
    missing = sorted(set(writer.expected) - set(writer.written))
    if missing:
        writer.remove()
        raise ShardError(f"shard '{shard['name']}' lacks {len(missing)} of its files (first: '{missing[0]}')")
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(shard.get("sha256", ""))


def _mark(target: Path, shard: dict[str, Any]) -> Path:
    """Return the file that marks ``shard`` done (``.shards/<name>.done``), its name kept inside ``target``."""
    return confine(target, _DONE, f"{shard['name']}.done", what="shard name")


class _Writer:
    """Writes one shard's members under ``target``: each only if listed, inside, a regular file and as hashed.

    Plain ``os.path`` string work, and the file system touched once per folder (confined, created, swept of a killed
    fetch's partial files): a shard holds thousands of small files, and the per-file cost (not the bytes) is what a
    fetch spends its time on.
    """

    def __init__(self, target: Path, expected: dict[str, str], name: str) -> None:
        self.root, self.expected, self.name = os.path.realpath(target), expected, name
        self.written: list[str] = []
        self._folders: dict[str, str] = {}

    def admit(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Write one member to its final path if the manifest names it here and its bytes match."""
        rel = member.name
        if rel not in self.expected:
            raise ShardError(f"shard '{self.name}' holds '{rel}', which the manifest does not list for it")
        if not member.isreg():
            raise ShardError(f"shard '{self.name}': '{rel}' is not a regular file")
        folder_rel, _, base = rel.rpartition("/")
        try:  # a manifest read by distill.steps.common was checked already; this one may come from anywhere
            check_relative(rel, "member")
            folder = self._folder(folder_rel)
        except UnsafePath:
            raise ShardError(f"shard '{self.name}': '{rel}' would be written outside the dataset") from None
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has a reader
        path = os.path.join(folder, base)
        part = part_path(path)  # pods may share the cache: one partial file each
        digest = hashlib.sha256()
        try:
            with open(part, "wb") as out:
                for block in iter(lambda: source.read(_BUFFER), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != self.expected[rel]:
                raise ShardError(f"shard '{self.name}': '{rel}' does not match its sha256 in the manifest")
        except BaseException:  # a broken stream, a bad hash, an interrupt: no partial file stays behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        os.replace(part, path)
        self.written.append(rel)

    def _folder(self, rel: str) -> str:
        """Return the local folder of members under ``rel`` (``""``: the root): confined, created, swept; once each."""
        folder = self._folders.get(rel)
        if folder is None:
            folder = str(confine(self.root, rel, what="member folder")) if rel else self.root
            os.makedirs(folder, exist_ok=True)
            sweep_stale_parts(folder)  # a rerun after kill -9 removes what the killed fetch left half-written
            self._folders[rel] = folder
        return folder

    def remove(self) -> None:
        """Remove every file of the shard written so far (a shard is cached whole or not at all)."""
        for rel in self.written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.root, rel))


def done(target: Path, shard: dict[str, Any]) -> bool:
    """Whether ``shard`` was unpacked completely into ``target`` before (its mark is there, its files too)."""
    return _mark(target, shard).is_file() and all((target / r).is_file() for r in shard["files"])


def wanted(shards: Iterable[dict[str, Any]], splits: Iterable[str] | None) -> list[dict[str, Any]]:
    """Return the shards a fetch of ``splits`` needs (every shard for ``None``; the common files always)."""
    if splits is None:
        return list(shards)
    keep = {*splits, COMMON}
    return [s for s in shards if s["split"] in keep]


def unpack_all(
    shards: list[dict[str, Any]],
    files: dict[str, str],
    target: Path,
    opener: Callable[[dict[str, Any]], IO[bytes]],
    concurrency: int = 8,
) -> int:
    """Unpack the shards not done yet, ``concurrency`` streams at a time; return how many were fetched.

    ``opener(shard)`` returns the shard's byte stream (an S3 response body). The first failure is raised once the
    streams in flight have ended (shards not started yet are not); shards unpacked stay done, so a rerun fetches only
    the rest.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    todo = [s for s in shards if not done(target, s)]

    def one(shard: dict[str, Any]) -> None:
        stream = opener(shard)
        try:
            unpack(stream, shard, files, target)
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    total, moved = sum(s.get("size", 0) for s in todo), 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool, Progress(len(todo), "fetch", "shards") as bar:
        futures = {pool.submit(one, s): s for s in todo}
        for future in as_completed(futures):
            if future.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # the shards not started yet are left for a rerun
                future.result()
            moved += futures[future].get("size", 0)
            bar.update(1, size_note(moved, total))
    return len(todo)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BUFFER), b""):
            digest.update(block)
    return digest.hexdigest()


def open_local(folder: Path) -> Callable[[dict[str, Any]], IO[bytes]]:
    """Return an ``opener`` for :func:`unpack_all` that reads shards from a local folder (tests, a mounted cache)."""

    def opener(shard: dict[str, Any]) -> IO[bytes]:
        return io.BufferedReader(open(folder / shard["name"], "rb"))  # noqa: SIM115 (closed by unpack_all)

    return opener
