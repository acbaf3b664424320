"""S3 storage through boto3: URI parsing, checksummed managed transfers, and errors that name the URI.

Configuration is the standard AWS one — credentials from the default chain (environment, shared files, instance
roles), the endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (SeaweedFS, MinIO, or AWS when unset).
Addressing style: ``YOLO_DISTILL_S3_ADDRESSING`` = ``path`` | ``virtual`` | ``auto``; path-style by default when a
custom endpoint is set (what SeaweedFS and MinIO need), boto3's ``auto`` otherwise. Retries with backoff come from
botocore's ``standard`` retry mode.

Every upload records the file's sha256 in the object metadata (``x-amz-meta-sha256``); every download verifies it.
Errors are :class:`StorageError` with one message naming the URI (never a secret), typed by cause
(:mod:`distill.errors`): :class:`NotFound` and :class:`InvalidUri` are bad input (exit 2), :class:`Unreachable` an
outage and :class:`AccessDenied` / a checksum mismatch a failure (exit 1).

Conditional writes (:func:`put_if`: ``If-None-Match: *`` / ``If-Match``, which S3, SeaweedFS and MinIO evaluate
atomically) give one process at a time a :class:`Lease` on a key — with a heartbeat, so a crashed holder's lease is
taken over instead of blocking forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO

from ..errors import DistillError, RunFailure, ServiceUnavailable
from ..paths import confine
from ..progress import Progress, size_note

SHA256_META = "sha256"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_CHUNK = 8 * 1024 * 1024


class StorageError(RunFailure):
    """An S3 operation failed (the base: a checksum mismatch or an error S3 gave no code for)."""


class NotFound(DistillError, StorageError):
    """The bucket, object or prefix named does not exist: bad input (exit 2)."""


class InvalidUri(DistillError, StorageError):
    """The text is not a valid ``s3://bucket/key`` URI: bad input (exit 2)."""


class Unreachable(ServiceUnavailable, StorageError):
    """The S3 endpoint could not be reached after botocore's retries: an outage (exit 1)."""


class AccessDenied(StorageError):
    """S3 refused the credentials, or there are none: the environment's configuration (exit 1)."""


@dataclass(frozen=True)
class S3Uri:
    """A parsed ``s3://bucket/key`` URI."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def join(self, *parts: str) -> S3Uri:
        """Return the URI with path parts appended (``/``-separated)."""
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p and p.strip("/"))
        return S3Uri(self.bucket, key)


def is_s3(uri: str | Path) -> bool:
    """Whether ``uri`` is an ``s3://`` URI."""
    return str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> S3Uri:
    """Parse and validate ``s3://bucket[/key]``.

    Examples:
        >>> parse_s3_uri("s3://models/runs/a/best.pt")
        S3Uri(bucket='models', key='runs/a/best.pt')
    """
    text = str(uri)
    if not text.startswith("s3://"):
        raise InvalidUri(f"'{text}' is not an s3:// URI")
    bucket, _, key = text[5:].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidUri(f"'{text}': '{bucket}' is not a valid S3 bucket name")
    if "//" in key or any(part in {".", ".."} for part in key.split("/")):
        raise InvalidUri(f"'{text}': the key has empty, '.' or '..' segments")
    return S3Uri(bucket, key.rstrip("/") if key.endswith("/") else key)


def as_uri(uri: str | S3Uri) -> S3Uri:
    """Return ``uri`` parsed (and validated) unless it already is an :class:`S3Uri`."""
    return uri if isinstance(uri, S3Uri) else parse_s3_uri(str(uri))


def endpoint_url() -> str | None:
    """Return the S3 endpoint from the standard environment, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _client_key() -> tuple:
    keys = (
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "YOLO_DISTILL_S3_ADDRESSING",
    )
    return tuple(os.environ.get(k) for k in keys)


def client():
    """Return a boto3 S3 client for the current environment (cached per configuration)."""
    return _client(_client_key())


@lru_cache(maxsize=8)
def _client(_key: tuple):
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url()
    style = os.environ.get("YOLO_DISTILL_S3_ADDRESSING") or ("path" if endpoint else "auto")
    if style not in {"path", "virtual", "auto"}:
        raise DistillError(f"YOLO_DISTILL_S3_ADDRESSING='{style}' must be path, virtual or auto")
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=_CHUNK, multipart_chunksize=_CHUNK, max_concurrency=4)


def translate(error: Exception, uri: S3Uri | str) -> StorageError:
    """Turn a boto3/botocore exception into one :class:`StorageError` naming the URI (never credentials)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    where = f"'{uri}'"
    if isinstance(error, EndpointConnectionError | ConnectionError):
        return Unreachable(f"cannot reach the S3 endpoint {endpoint_url() or '(AWS default)'} for {where}")
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"no usable S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)"
        )
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchBucket"}:
            return NotFound(f"bucket '{S3Uri(*_split(uri)).bucket}' does not exist ({where})")
        if code in {"NoSuchKey", "404", "NotFound"}:
            return NotFound(f"{where} not found")
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken"}:
            return AccessDenied(f"S3 rejected the credentials for {where} ({code})")
        return StorageError(f"S3 error for {where}: {code or error}")
    return StorageError(f"S3 error for {where}: {type(error).__name__}: {error}")


def _split(uri: S3Uri | str) -> tuple[str, str]:
    u = as_uri(uri)
    return u.bucket, u.key


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_bucket(uri: str | S3Uri) -> None:
    """Fail fast (before any work) when the bucket is missing, unreachable or the credentials are rejected."""
    u = as_uri(uri)
    try:
        client().head_bucket(Bucket=u.bucket)
    except Exception as e:
        err = translate(e, u)
        if isinstance(err, NotFound):  # head_bucket's 404 has no body, so no NoSuchBucket code
            err = NotFound(f"bucket '{u.bucket}' does not exist ('{u}')")
        raise err from None


def upload_file(path: str | Path, uri: str | S3Uri, sha256: str | None = None) -> str:
    """Upload a file (multipart above 8 MiB) with its sha256 in the metadata; return the sha256."""
    u = as_uri(uri)
    digest = sha256 or sha256_file(path)
    try:
        client().upload_file(
            str(path), u.bucket, u.key, ExtraArgs={"Metadata": {SHA256_META: digest}}, Config=_transfer_config()
        )
    except Exception as e:
        raise translate(e, u) from None
    return digest


def upload_bytes(data: bytes, uri: str | S3Uri, content_type: str = "application/octet-stream") -> str:
    """Upload a small in-memory object with its sha256; return the sha256."""
    u = as_uri(uri)
    digest = hashlib.sha256(data).hexdigest()
    try:
        client().put_object(
            Bucket=u.bucket, Key=u.key, Body=data, ContentType=content_type, Metadata={SHA256_META: digest}
        )
    except Exception as e:
        raise translate(e, u) from None
    return digest


def head(uri: str | S3Uri) -> dict | None:
    """Return the object's metadata (``size``, ``sha256``) or ``None`` when it does not exist."""
    u = as_uri(uri)
    try:
        r = client().head_object(Bucket=u.bucket, Key=u.key)
    except Exception as e:
        err = translate(e, u)
        if isinstance(err, NotFound):
            return None
        raise err from None
    return {"size": r["ContentLength"], "sha256": r.get("Metadata", {}).get(SHA256_META)}


#: A partial file (:func:`part_path`) left untouched this long is a dead writer's: removed by the next fetch into its
#: folder. A live writer touches its file every read buffer and gives up after the client's 60 s read timeout, so
#: 15 minutes never catches one, even on a cache volume shared by pods whose clocks differ by a few minutes.
STALE_PART_S = 15 * 60
#: The partial files this module and :mod:`distill.data.shards` write: ``.<name>.<pid>-<thread>.part``, and the
#: temporary file boto3 downloads it through (``<that>.<8 random characters>``).
_PART_RE = re.compile(r"\..+\.\d+-\d+\.part(\.[0-9A-Za-z]{8})?")
_swept: set[str] = set()
_swept_lock = threading.Lock()


def part_path(path: str | Path) -> str:
    """Return the partial file to write ``path`` through: hidden, and unique to this process and thread.

    Pods sharing a cache volume may fetch the same file at once: each writes its own partial file and renames it.
    """
    folder, base = os.path.split(os.fspath(path))
    return os.path.join(folder, f".{base}.{os.getpid()}-{threading.get_ident()}.part")


def sweep_stale_parts(folder: str | Path, older_than: float = STALE_PART_S) -> int:
    """Remove the partial files a killed fetch left in ``folder`` (once per folder and process); return how many.

    ``kill -9`` mid-write leaves a partial file no ``finally`` removed. Only files named like ours
    (:data:`_PART_RE`) and untouched for ``older_than`` seconds go: a concurrent writer's live file is never removed
    (see :data:`STALE_PART_S`), and a process id is no test of liveness on a volume several pods share.
    """
    key = os.path.realpath(folder)
    with _swept_lock:
        if key in _swept:
            return 0
        _swept.add(key)
    removed, cutoff = 0, time.time() - older_than
    try:
        entries = list(os.scandir(key))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and _PART_RE.fullmatch(entry.name):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # its writer finished, or another sweeper took it
                continue
    return removed


def download_file(uri: str | S3Uri, path: str | Path, verify: bool = True) -> Path:
    """Download an object to ``path`` atomically and verify its recorded sha256.

    The bytes arrive in a partial file of this process's own (:func:`part_path`), renamed once checked; the partial
    files a killed earlier fetch left in the folder are removed first (:func:`sweep_stale_parts`).
    """
    u = as_uri(uri)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(path.parent)
    meta = head(u)
    if meta is None:
        raise NotFound(f"'{u}' not found")
    tmp = Path(part_path(path))
    try:
        client().download_file(u.bucket, u.key, str(tmp), Config=_transfer_config())
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise translate(e, u) from None
    if verify and meta.get("sha256") and sha256_file(tmp) != meta["sha256"]:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"'{u}' failed its sha256 check (corrupt or modified object)")
    tmp.replace(path)
    return path


def read_bytes(uri: str | S3Uri) -> bytes:
    """Return a small object's content, verified against its recorded sha256."""
    u = as_uri(uri)
    try:
        r = client().get_object(Bucket=u.bucket, Key=u.key)
        data = r["Body"].read()
    except Exception as e:
        raise translate(e, u) from None
    expected = r.get("Metadata", {}).get(SHA256_META)
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise StorageError(f"'{u}' failed its sha256 check (corrupt or modified object)")
    return data


def list_keys(uri: str | S3Uri) -> Iterator[str]:
    """Yield the keys under a prefix."""
    u = as_uri(uri)
    prefix = f"{u.key}/" if u.key else ""
    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=u.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]
    except Exception as e:
        raise translate(e, u) from None


def upload_dir(folder: str | Path, uri: str | S3Uri) -> dict[str, str]:
    """Upload every file under ``folder`` to ``uri``; return ``{relative path: sha256}``."""
    u = as_uri(uri)
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        out[rel] = upload_file(path, u.join(rel))
    return out


def upload_files(
    pairs: list[tuple[Path, str | S3Uri]], concurrency: int = 8, desc: str = "upload", unit: str = "files"
) -> list[str]:
    """Upload several files side by side (each multipart above 8 MiB); return their sha256s, in order.

    Progress is counted in files (``desc``, ``unit``: what the progress line calls them), with the bytes sent in its
    note: publishing a dataset's shards can take minutes. The first failure is raised once the uploads in flight have
    ended; those not started are not (nothing is left half-written: an S3 object appears only when its upload
    completes).
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    sizes = [Path(path).stat().st_size for path, _ in pairs]
    total, sent = sum(sizes), 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool, Progress(len(pairs), desc, unit) as bar:
        futures = {pool.submit(upload_file, path, uri): i for i, (path, uri) in enumerate(pairs)}
        for future in as_completed(futures):
            if future.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                future.result()
            sent += sizes[futures[future]]
            bar.update(1, size_note(sent, total))
    return [f.result() for f in futures]  # in the order of ``pairs`` (a dict keeps its insertion order)


def open_stream(uri: str | S3Uri) -> IO[bytes]:
    """Return an object's body as a stream, read as it arrives (the caller checks what it reads, and closes it)."""
    u = as_uri(uri)
    try:
        return client().get_object(Bucket=u.bucket, Key=u.key)["Body"]
    except Exception as e:
        raise translate(e, u) from None


def download_prefix(uri: str | S3Uri, folder: str | Path) -> list[Path]:
    """Download every object under a prefix into ``folder``; return the files.

    Each key's path below the prefix must stay inside ``folder`` (:func:`distill.paths.confine`: a key such as
    ``prefix/../../x`` is refused, exit 2); folder markers (keys ending in ``/``, what S3 consoles create) hold no file.
    """
    u = as_uri(uri)
    folder = Path(folder).resolve()
    files = []
    for key in list_keys(u):
        if key.endswith("/"):
            continue
        rel = key[len(u.key) :].lstrip("/") if u.key else key
        target = confine(folder, rel, what=f"'s3://{u.bucket}/{key}': its path")
        files.append(download_file(S3Uri(u.bucket, key), target))
    if not files:
        raise NotFound(f"'{u}' not found (no objects under this prefix)")
    return files


#: S3's answers to a conditional write whose condition did not hold (412), or that lost to a concurrent one (409).
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
#: An ETag no object has: a write conditioned on it must be refused (how :class:`Lease` checks the server).
_NO_ETAG = '"00000000000000000000000000000000"'


def put_if(data: bytes, uri: str | S3Uri, *, absent: bool = False, etag: str | None = None) -> str | None:
    """Write a small object only if it is absent (``If-None-Match: *``) or still has ``etag`` (``If-Match``).

    S3 checks the condition and writes in one step, so of writers racing on one key exactly one succeeds (measured
    on SeaweedFS 4.48: 16 concurrent writers, 20 rounds each way, one winner every round).

    Returns:
        The object's new ETag, or ``None`` when the condition did not hold (nothing written).
    """
    from botocore.exceptions import ClientError

    if absent == (etag is not None):
        raise ValueError("put_if: give exactly one of absent=True or etag")
    u = as_uri(uri)
    condition = {"IfNoneMatch": "*"} if absent else {"IfMatch": etag}
    try:
        r = client().put_object(
            Bucket=u.bucket, Key=u.key, Body=data, Metadata={SHA256_META: hashlib.sha256(data).hexdigest()},
            **condition,
        )  # fmt: skip
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code", "")) in _CONDITION_FAILED:
            return None
        raise translate(e, u) from None
    except Exception as e:
        raise translate(e, u) from None
    return r["ETag"]


def read_with_etag(uri: str | S3Uri) -> tuple[bytes, str] | None:
    """Return a small object's content and ETag (what :func:`put_if` compares), or ``None`` when it is absent."""
    u = as_uri(uri)
    try:
        r = client().get_object(Bucket=u.bucket, Key=u.key)
        return r["Body"].read(), r["ETag"]
    except Exception as e:
        err = translate(e, u)
        if isinstance(err, NotFound):
            return None
        raise err from None


class LeaseLost(StorageError):
    """Another process took over a lease this one held (it saw no heartbeat for the stale period)."""


class LeaseBusy(StorageError):
    """A lease stayed held by a live holder for longer than the caller would wait."""


class Lease:
    """An exclusive lease on one S3 key that survives a crashed holder, built only on conditional writes.

    The key holds a small JSON record (``owner``, ``token``, ``state``, ``beat``). A process takes the lease with
    ``If-None-Match: *`` when the key is absent, or with ``If-Match`` on the ETag it read when the record is not
    ``held`` (``done`` / ``released``) or its holder is presumed dead: the ETag did not change for ``stale_s`` seconds
    on the waiter's own clock (no clocks are compared across machines). While held, a thread rewrites the record
    every ``beat_s`` seconds (``If-Match`` on the holder's last ETag): a refused write means another process took
    the lease over, and :meth:`confirm` then raises :class:`LeaseLost`. Leaving the block writes ``done``, or
    ``released`` after an error, so the next process takes the lease at once. A server that ignores the conditions
    would make every claim succeed: the first claim checks that it refuses them and fails clearly otherwise.

    Used as ``with Lease(uri): ...``; a waiter polls every ``poll_s`` and gives up after ``wait_s`` with
    :class:`LeaseBusy`, calling ``on_wait(record, waited_s)`` when it starts waiting and every ``report_s`` after.
    """

    def __init__(
        self, uri: str | S3Uri, *, stale_s: float = 60.0, beat_s: float = 5.0, wait_s: float = 1800.0,
        poll_s: float = 1.0, report_s: float = 30.0, on_wait=None, owner: str | None = None,
    ) -> None:  # fmt: skip
        self.uri, self.stale_s, self.beat_s, self.wait_s = as_uri(uri), stale_s, beat_s, wait_s
        self.poll_s, self.report_s, self.on_wait = poll_s, report_s, on_wait
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.token, self.beat, self.etag = uuid.uuid4().hex, 0, None
        self.taken_from: dict | None = None  #: the presumed-dead holder's record, when this lease was taken over
        self._mutex, self._stop, self._thread = threading.Lock(), threading.Event(), None

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._beats, name=f"lease {self.uri}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release("released" if exc_type else "done")

    def _record(self, state: str) -> bytes:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        record = {"owner": self.owner, "token": self.token, "state": state, "beat": self.beat, "time": now}
        return json.dumps(record).encode()

    def acquire(self) -> None:
        """Take the lease: at once when free, else once its holder has finished or is presumed dead (bounded)."""
        started = time.monotonic()
        seen, since, reported = None, started, None
        while True:
            current = read_with_etag(self.uri)
            if current is None and self._take(absent=True):
                return
            record, etag = (_lease_record(current[0]), current[1]) if current else ({}, None)
            if current and record.get("token") == self.token:  # our claim went through; a retried request was refused
                self.etag = etag
                return
            now = time.monotonic()
            if etag != seen:
                seen, since = etag, now
            held = record.get("state") == "held"
            if current and (not held or now - since >= self.stale_s) and self._take(etag=etag):
                self.taken_from = record if held else None
                return
            waited = now - started
            if held and self.on_wait and (reported is None or waited - reported >= self.report_s):
                self.on_wait(record, waited)
                reported = waited
            if held and waited >= self.wait_s:
                raise LeaseBusy(f"'{self.uri}' is still held by {record.get('owner')} after {waited:.0f}s; rerun later")
            time.sleep(self.poll_s)

    def confirm(self) -> None:
        """Renew the lease now, raising :class:`LeaseLost` when another process has taken it over.

        Call right before an action only one process may take: the holder keeps the lease until ``stale_s`` after its
        last heartbeat, so an action taken right after a successful renewal cannot overlap a takeover.
        """
        self._write("held")

    def release(self, state: str = "done") -> None:
        """Stop the heartbeat and record ``state`` (best effort: a lease left held is taken over after ``stale_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._write(state)
        except Exception:  # noqa: S110 (leaving: the block's own outcome is what counts)
            pass

    def _take(self, absent: bool = False, etag: str | None = None) -> bool:
        self.beat = 0
        body = self._record("held")
        new = put_if(body, self.uri, absent=absent, etag=etag)
        if new is None:
            return False
        self.etag = new
        if put_if(body, self.uri, absent=True) is not None or put_if(body, self.uri, etag=_NO_ETAG) is not None:
            raise StorageError(
                f"the S3 endpoint {endpoint_url() or '(AWS default)'} ignores conditional writes (If-None-Match, "
                f"If-Match), so '{self.uri}' cannot be locked"
            )
        return True

    def _write(self, state: str) -> None:
        """Rewrite the record with ``state`` if it is still ours (If-Match on our last ETag)."""
        with self._mutex:
            if self.etag is None:
                raise LeaseLost(f"'{self.uri}' was taken over by another process")
            self.beat += 1
            new = put_if(self._record(state), self.uri, etag=self.etag)
            if new is None:
                current = read_with_etag(self.uri)
                record = _lease_record(current[0]) if current else {}
                if not (current and record.get("token") == self.token and record.get("beat") == self.beat):
                    self.etag = None
                    raise LeaseLost(f"'{self.uri}' was taken over by {record.get('owner') or 'another process'}")
                new = current[1]  # our write went through; a retried request was refused
            self.etag = new

    def _beats(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self._write("held")
            except LeaseLost:
                return
            except Exception:  # noqa: S112 (an outage: the next beat tries again)
                continue


def _lease_record(data: bytes) -> dict:
    """Parse a lease record; anything unreadable counts as free (an empty record)."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
