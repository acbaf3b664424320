"""The local stack's real servers, and S3 storage: checksums, multipart, and one clear error per failure."""

from __future__ import annotations

import hashlib
import os

import pytest

from distill import stack
from distill.data import storage
from distill.data.storage import StorageError


def test_stack_serves_and_reports_status(stack_env):
    info = stack.status(stack_env["STACK_DIR"])
    assert info["running"] and info["s3"]["serving"] and info["mlflow"]["serving"]
    assert stack_env["YOLO_DISTILL_S3_PREFIX"] == info["prefix"]
    assert stack_env["AWS_SECRET_ACCESS_KEY"] not in str(info)  # status never shows the secret


def test_upload_download_round_trip_with_sha256(stack_env, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 123))  # > 8 MiB: a multipart upload
    uri = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/tests/big.bin"
    digest = storage.upload_file(src, uri)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert storage.head(uri) == {"size": src.stat().st_size, "sha256": digest}
    etag = storage.client().head_object(**dict(zip(("Bucket", "Key"), uri[5:].split("/", 1), strict=True)))["ETag"]
    assert "-" in etag  # multipart
    out = storage.download_file(uri, tmp_path / "copy.bin")
    assert out.read_bytes() == src.read_bytes()


def test_corrupt_object_fails_its_checksum(stack_env, tmp_path):
    uri = storage.parse_s3_uri(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/tests/corrupt.pt")
    storage.client().put_object(Bucket=uri.bucket, Key=uri.key, Body=b"garbage", Metadata={"sha256": "0" * 64})
    with pytest.raises(StorageError, match="failed its sha256 check"):
        storage.download_file(uri, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists() and not list(tmp_path.glob(".*part"))


def test_missing_key_and_missing_bucket_name_the_uri(stack_env, tmp_path):
    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    with pytest.raises(StorageError, match=f"'{prefix}/tests/none.pt' not found"):
        storage.download_file(f"{prefix}/tests/none.pt", tmp_path / "n.pt")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        storage.check_bucket("s3://no-such-bucket/x")


def test_wrong_credentials_are_named_without_the_secret(stack_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-1234")
    with pytest.raises(StorageError, match="rejected the credentials") as err:
        storage.check_bucket(stack_env["YOLO_DISTILL_S3_PREFIX"])
    assert "not-the-secret-1234" not in str(err.value)
    assert stack_env["AWS_SECRET_ACCESS_KEY"] not in str(err.value)


def test_unreachable_endpoint(stack_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1:9"):
        storage.head(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/x")


@pytest.mark.fast
@pytest.mark.parametrize(
    ("uri", "message"),
    [("http://x/y", "not an s3:// URI"), ("s3://A_B/k", "not a valid S3 bucket name"), ("s3://ok-b/a/../b", "'..'")],
)
def test_bad_uris(uri, message):
    with pytest.raises(StorageError, match=message):
        storage.parse_s3_uri(uri)


def test_data_survives_a_stack_restart(stack_env):
    uri = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/tests/persist.txt"
    storage.upload_bytes(b"still here", uri)
    stack.down(stack_env["STACK_DIR"])
    assert not stack.status(stack_env["STACK_DIR"])["running"]
    stack.up(stack_env["STACK_DIR"])
    assert stack.status(stack_env["STACK_DIR"])["running"]
    assert storage.read_bytes(uri) == b"still here"
