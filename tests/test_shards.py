"""Datasets as shards (issue 22): packing, streaming unpack with sha256 checks, split-only and resumed fetches.

The fast tests pack and unpack real tar files on disk; the stack tests publish through prepare-data to the real S3
server and fetch as the steps do — every file checked against the manifest, damaged shards refused with nothing of
them cached, an interrupted fetch resumed without fetching finished shards again, datasets of the old layout read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from conftest import BCCD

from distill.data import shards, storage
from distill.data.shards import ShardError
from distill.progress import size_note


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_folder(root: Path) -> dict[str, str]:
    """A small dataset folder: two splits and a data.yaml; returns the manifest's ``files``."""
    content = {
        "data.yaml": b"train: images/train\nval: images/val\n",
        **{f"images/train/{i}.jpg": bytes([i]) * (1000 + i) for i in range(6)},
        **{f"labels/train/{i}.txt": f"0 0.5 0.5 0.1 0.1\n{i}".encode() for i in range(6)},
        "images/val/v.jpg": b"v" * 3000,
        "labels/val/v.txt": b"0 0.5 0.5 0.2 0.2\n",
    }
    for rel, data in content.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return {rel: sha(data) for rel, data in content.items()}


@pytest.mark.fast
def test_packing_groups_by_split_caps_the_size_and_is_deterministic(tmp_path, capsys):
    files = make_folder(tmp_path / "src")
    packed = shards.pack(tmp_path / "src", files, tmp_path / "a", shard_bytes=4000)
    total = sum((tmp_path / "src" / rel).stat().st_size for rel in files)
    size = size_note(total, total)
    said = capsys.readouterr().err  # off a terminal: one line at the end (and one every 30 s before)
    assert re.fullmatch(rf"pack: {len(packed)}/{len(packed)} shards, {size} \([0-9.]+ shards/s\)\n", said), said
    assert {s["split"] for s in packed} == {"", "train", "val"}
    assert all(len({shards.split_of(r) for r in s["files"]}) == 1 for s in packed)  # one split per shard
    assert sorted(r for s in packed for r in s["files"]) == sorted(files)  # every file exactly once
    train = [s for s in packed if s["split"] == "train"]
    sizes = {rel: (tmp_path / "src" / rel).stat().st_size for rel in files}
    assert len(train) > 1 and all(sum(sizes[r] for r in s["files"]) <= 4000 for s in train)  # capped
    assert [s["name"] for s in train] == [f"train-{i:05d}.tar" for i in range(len(train))]
    again = shards.pack(tmp_path / "src", files, tmp_path / "b", shard_bytes=4000)
    assert again == packed  # the same files make the same shards, byte for byte (sha256 included)
    for s in packed:
        assert shards._sha256(tmp_path / "a" / s["name"]) == s["sha256"]


@pytest.mark.fast
def test_unpack_round_trip_and_split_only(tmp_path, capsys):
    files = make_folder(tmp_path / "src")
    packed = shards.pack(tmp_path / "src", files, tmp_path / "shards", shard_bytes=4000)
    need = shards.wanted(packed, ("val",))
    assert {s["split"] for s in need} == {"", "val"}
    capsys.readouterr()
    fetched = shards.unpack_all(need, files, tmp_path / "out", shards.open_local(tmp_path / "shards"))
    assert fetched == len(need)
    assert capsys.readouterr().err.startswith(f"fetch: {len(need)}/{len(need)} shards, ")
    got = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {r for r in got if not r.startswith(".shards/")} == {"data.yaml", "images/val/v.jpg", "labels/val/v.txt"}
    assert shards.unpack_all(need, files, tmp_path / "out", shards.open_local(tmp_path / "shards")) == 0  # done
    assert shards.unpack_all(packed, files, tmp_path / "out", shards.open_local(tmp_path / "shards")) == len(
        packed
    ) - len(need)  # then the rest, not the finished ones again
    for rel, digest in files.items():
        assert sha((tmp_path / "out" / rel).read_bytes()) == digest


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.fast
@pytest.mark.parametrize(
    ("members", "listed", "message"),
    [
        ([member("images/train/a.jpg", b"changed")], {"images/train/a.jpg": b"original"}, "does not match its sha256"),
        ([member("../escape.txt", b"x")], {"../escape.txt": b"x"}, "outside the dataset"),
        ([member("images/train/other.jpg", b"x")], {"images/train/a.jpg": b"x"}, "does not list for it"),
        (
            [member("images/train/a.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")],
            {"images/train/a.jpg": b""},
            "not a regular file",
        ),  # fmt: skip
        ([member("images/train/a.jpg", b"a")], {"images/train/a.jpg": b"a", "images/train/b.jpg": b"b"}, "lacks 1"),
    ],
)
def test_a_hostile_or_damaged_shard_is_refused_and_leaves_nothing(tmp_path, members, listed, message):
    files = {rel: sha(data) for rel, data in listed.items()}
    shard = {"name": "train-00000.tar", "split": "train", "files": list(files)}
    with pytest.raises(ShardError, match=message):
        shards.unpack(tar_of(members), shard, files, tmp_path / "out")
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert left == []  # nothing of the shard, no .part file, no done mark
    assert not shards.done(tmp_path / "out", shard)


@pytest.mark.fast
@pytest.mark.parametrize("cut", [0.5, 0.06, 0.07])  # mid-archive, and inside the first members' data
def test_a_truncated_shard_is_damaged(tmp_path, cut):
    files = make_folder(tmp_path / "src")
    (packed,) = [s for s in shards.pack(tmp_path / "src", files, tmp_path / "s") if s["split"] == "train"]
    data = (tmp_path / "s" / packed["name"]).read_bytes()
    with pytest.raises(ShardError, match="damaged|lacks"):
        shards.unpack(io.BytesIO(data[: int(len(data) * cut)]), packed, files, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no file, no .part, no mark


# -- through S3, as the steps fetch ---------------------------------------------------------------------------------
def test_prepare_data_publishes_shards_and_steps_fetch_only_what_they_need(stack_env, tmp_path, monkeypatch, capsys):
    from distill.steps.common import fetch_dataset
    from distill.steps.prepare_data import prepare_data

    monkeypatch.setenv("YOLO_DISTILL_CACHE", str(tmp_path / "cache"))
    result = prepare_data(str(BCCD), "voc")
    manifest = json.loads(storage.read_bytes(f"{result['uri']}/manifest.json"))
    said = capsys.readouterr().err
    uploads = len(manifest["shards"]) + 1  # and data.yaml as an object of its own
    upload_said = re.search(rf"^upload: {uploads}/{uploads} files, [0-9.]+/[0-9.]+ [kMG]B \(", said, re.M)
    assert (upload_said is not None) == result["uploaded"], said  # said when published now (not by an earlier test)
    root = storage.parse_s3_uri(result["uri"]).key
    keys = sorted(storage.list_keys(result["uri"]))
    shard_keys = [f"{root}/shards/{s['name']}" for s in manifest["shards"]]
    assert keys == sorted([f"{root}/manifest.json", f"{root}/data.yaml", *shard_keys])
    assert sha(storage.read_bytes(result["data"])) == manifest["files"]["data.yaml"]  # the data URI is readable
    for s in manifest["shards"]:
        assert storage.head(f"{result['uri']}/shards/{s['name']}") == {"size": s["size"], "sha256": s["sha256"]}

    data = fetch_dataset(result["data"], splits=("val", "test"))  # evaluate's fetch: no train images
    local = data.parent
    assert not (local / "images" / "train").exists() and len(list((local / "images" / "test").iterdir())) == 3
    full = fetch_dataset(result["data"])  # a training step's fetch adds the train shards to the same cache
    assert full == data
    for rel, digest in manifest["files"].items():
        assert storage.sha256_file(local / rel) == digest


def test_an_interrupted_fetch_resumes_and_a_damaged_shard_is_not_cached(stack_env, tmp_path, monkeypatch):
    from distill.steps.common import fetch_dataset
    from distill.steps.prepare_data import prepare_data

    monkeypatch.setenv("YOLO_DISTILL_CACHE", str(tmp_path / "cache"))
    result = prepare_data(str(BCCD), "voc")
    manifest = json.loads(storage.read_bytes(f"{result['uri']}/manifest.json"))
    (train,) = [s for s in manifest["shards"] if s["split"] == "train"]
    uri = storage.parse_s3_uri(f"{result['uri']}/shards/{train['name']}")
    original = storage.read_bytes(uri)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte inside a member
    storage.client().put_object(Bucket=uri.bucket, Key=uri.key, Body=bytes(damaged))
    try:
        with pytest.raises(storage.StorageError, match=f"shard '{train['name']}'"):
            fetch_dataset(result["data"])
        local = tmp_path / "cache" / "datasets" / result["hash"]
        assert not (local / "images" / "train").exists() or not any((local / "images" / "train").iterdir())
        assert not shards.done(local, train)
        # The shards that arrived stay done; one not yet started when the damaged shard failed is not fetched (and
        # leaves nothing), so which are done depends on the threads' timing: the rerun below fetches just the rest.
        others = [s for s in manifest["shards"] if s is not train]
        for shard in others:
            assert shards.done(local, shard) or not any((local / rel).exists() for rel in shard["files"]), shard["name"]
        missing = [s["name"] for s in manifest["shards"] if not shards.done(local, s)]
        assert train["name"] in missing

        opened = []
        real = storage.open_stream
        monkeypatch.setattr(storage, "open_stream", lambda u: opened.append(str(u)) or real(u))
    finally:
        storage.upload_bytes(original, uri)  # repaired (with its sha256 back in the metadata)
    fetch_dataset(result["data"])
    assert sorted(opened) == sorted(f"{result['uri']}/shards/{name}" for name in missing)  # only those fetched again
    for rel, digest in manifest["files"].items():
        assert storage.sha256_file(local / rel) == digest


def test_a_dataset_of_the_old_layout_is_still_read(stack_env, tmp_path, monkeypatch):
    """Published before shards existed: one object per file and a manifest without ``shards``."""
    from distill.steps.common import fetch_dataset
    from distill.steps.prepare_data import import_dataset

    monkeypatch.setenv("YOLO_DISTILL_CACHE", str(tmp_path / "cache"))
    manifest = import_dataset(str(BCCD), tmp_path / "ds", "voc")
    target = storage.parse_s3_uri(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/old-layout/datasets/{manifest['hash']}")
    storage.upload_dir(tmp_path / "ds", target)
    storage.upload_bytes(json.dumps(manifest).encode(), target.join("manifest.json"))
    data = fetch_dataset(str(target.join("data.yaml")))
    for rel, digest in manifest["files"].items():
        assert storage.sha256_file(data.parent / rel) == digest
