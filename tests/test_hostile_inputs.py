"""Hostile inputs (issue 37): manifests, run ids and names that would make a step write outside its folders.

A manifest in S3 decides local paths (its ``hash`` names the cache folder, its ``files`` every file, its shards' names
the done marks), and a run id and a step name become key and folder segments. The fast tests drive the one helper
(:mod:`distill.paths`) and the manifest parser with generated hostile text, and unpack shards built from hostile
names into a temporary cache; the stack tests publish crafted datasets and pools to the real S3 server — a member
added to a shard with the manifest's sha256 updated to match, as an attacker with write access would — and fetch them
as the steps do, through the CLI too: one ``error:`` line, and the file outside the cache left as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TASK_DATA, cli, one_error_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill import settings as step_settings
from distill.data import shards, storage
from distill.data.shards import ShardError
from distill.errors import DistillError, Failure
from distill.paths import UnsafePath, check_name, confine
from distill.steps.common import parse_manifest

SCALE = int(os.environ.get("HYPOTHESIS_EXAMPLES", "1"))
HOSTILE = settings(max_examples=200 * SCALE, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
PWNED = b"overwritten by a hostile manifest\n"
ORIGINAL = b"the user's own file\n"

#: Pieces of hostile path text: climbing, absolute, empty segments, NUL and other controls, backslashes, unicode
#: (right-to-left override, an undecodable byte's surrogate), over-long names, a flag, and a link the cache holds.
ATOMS = ["..", ".", "", "/", "//", "\\", "..\\..", "\0", "\n", "\u202e", "\udc80", "é", "x" * 300, "-x", " ",
         "link", "images", "a.jpg", "/etc", "/tmp", "~"]  # fmt: skip
SEGMENT = st.one_of(st.sampled_from(ATOMS), st.text(max_size=12))
HOSTILE_TEXT = st.one_of(st.lists(SEGMENT, min_size=1, max_size=5).map("/".join), st.sampled_from(ATOMS), st.text())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inside(path: Path, root: Path) -> bool:
    resolved, base = path.resolve(), root.resolve()
    return resolved != base and resolved.is_relative_to(base)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed) and its content."""
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def outside_cache(files: dict[str, bytes], cache: Path) -> dict[str, bytes]:
    return {path: data for path, data in files.items() if not Path(path).is_relative_to(cache)}


# -- the one helper, and the names it admits --------------------------------------------------------------------------
@pytest.mark.fast
@HOSTILE
@given(parts=st.lists(HOSTILE_TEXT, min_size=1, max_size=3))
def test_confine_refuses_or_stays_inside_the_root(parts):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        root.mkdir()
        (root / "link").symlink_to(tmp)  # a link in the cache to its parent: following it would leave the cache
        try:
            path = confine(root, *parts)
        except UnsafePath as e:
            assert "\n" not in str(e)  # one error line, whatever the text
            return
        assert inside(path, root)


@pytest.mark.fast
@HOSTILE
@given(value=st.one_of(HOSTILE_TEXT, st.sampled_from(["run-a", "teacher", "distill-cwd-15_18_21", "_x", "a" * 129])))
def test_a_name_is_one_plain_segment_or_refused(value):
    try:
        name = check_name(value, "run_id")
    except UnsafePath as e:
        assert str(e).startswith("run_id '") and "\n" not in str(e)
        return
    assert name == value and "/" not in name and name not in {".", ".."} and not name.startswith((".", "-"))
    assert len(name) <= 128 and inside(Path("/cache") / name, Path("/cache"))


@st.composite
def manifests(draw) -> dict:
    """A manifest whose hash, file names and shard names may each be hostile; the rest well formed."""
    digest = draw(st.one_of(st.just("0123456789abcdef"), HOSTILE_TEXT))
    names = draw(st.lists(st.one_of(st.just("images/train/a.jpg"), HOSTILE_TEXT), min_size=1, max_size=4))
    files = {name: sha(name.encode("utf-8", "surrogatepass")) for name in names}
    shard = draw(st.one_of(st.just("train-00000.tar"), HOSTILE_TEXT))
    return {"hash": digest, "files": files, "shards": [{"name": shard, "split": "train", "files": list(files)}]}


@pytest.mark.fast
@HOSTILE
@given(manifest=manifests())
def test_a_parsed_manifest_names_only_paths_inside_the_cache(manifest):
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        try:
            parsed = parse_manifest(json.dumps(manifest).encode(), "s3://bkt/datasets/x/manifest.json")
        except DistillError as e:
            assert str(e).startswith("'s3://bkt/datasets/x/manifest.json' is not a valid manifest: ")
            assert "\n" not in str(e)
            return
        local = confine(cache, "datasets", parsed["hash"])
        assert inside(local, cache) and local.parent == cache / "datasets"  # the hash is one segment
        for rel in parsed["files"]:
            assert inside(confine(local, rel), local)
        for shard in parsed["shards"]:
            assert storage.parse_s3_uri(f"s3://bkt/datasets/x/shards/{shard['name']}")  # a valid key
            assert shards._mark(local, shard).parent == local / ".shards"


def tar_of(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.mark.fast
@HOSTILE
@given(names=st.lists(HOSTILE_TEXT, min_size=1, max_size=4, unique=True), shard_name=HOSTILE_TEXT)
def test_unpacking_a_shard_of_hostile_names_writes_nothing_outside_the_cache(names, shard_name):
    """Straight to the unpacker (no manifest check first): the second line of defence holds on its own."""
    members = {name: PWNED for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        outside, target = top / "outside", top / "cache" / "datasets" / "0123456789abcdef"
        outside.mkdir()
        (outside / "sentinel.txt").write_bytes(ORIGINAL)
        target.mkdir(parents=True)
        (target / "link").symlink_to(outside)  # a link already in the cache: "link/x" must not write through it
        before = snapshot(top)
        try:
            stream = tar_of(members)
        except (UnicodeError, ValueError):  # a name no tar can hold: nothing to unpack
            return
        shard = {"name": shard_name, "split": "train", "files": names}
        try:
            shards.unpack(stream, shard, {n: sha(PWNED) for n in names}, target)
        except (ShardError, UnsafePath) as e:  # refused: exit 1 (a damaged shard) or 2 (a bad name), one line each
            assert isinstance(e, Failure)
        after = snapshot(top)
        assert outside_cache(after, top / "cache") == outside_cache(before, top / "cache")
        assert (outside / "sentinel.txt").read_bytes() == ORIGINAL and sorted(os.listdir(outside)) == ["sentinel.txt"]


@pytest.mark.fast
def test_a_member_through_a_link_in_the_cache_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_bytes(ORIGINAL)
    target = tmp_path / "cache"
    target.mkdir()
    (target / "link").symlink_to(outside)
    files = {"link/sentinel.txt": sha(PWNED)}
    shard = {"name": "common-00000.tar", "split": "", "files": list(files)}
    with pytest.raises(ShardError, match="would be written outside the dataset"):
        shards.unpack(tar_of({"link/sentinel.txt": PWNED}), shard, files, target)
    assert (outside / "sentinel.txt").read_bytes() == ORIGINAL


@pytest.mark.fast
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"hash": "a", "shards": [', "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[1, 2, 3]", "a JSON list, not an object"),
        (b'"a string"', "a JSON str, not an object"),
        (b'{"files": {}}', "its hash None is not a content hash"),
        (b'{"hash": "/etc", "files": {}}', "its hash '/etc' is not a content hash"),
        (b'{"hash": "../../../../x", "files": {}}', "is not a content hash"),
        (b'{"hash": "0123456789abcdef"}', "its files are NoneType, not a mapping"),
        (b'{"hash": "0123456789abcdef", "files": {"/etc/passwd": "' + b"0" * 64 + b'"}}', "would leave its folder"),
        (b'{"hash": "0123456789abcdef", "files": {"a/../../b": "' + b"0" * 64 + b'"}}', "would leave its folder"),
        (b'{"hash": "0123456789abcdef", "files": {"a": 3}}', "file 'a' has 3 for its sha256"),
        (b'{"hash": "0123456789abcdef", "files": {}, "shards": {}}', "its shards are dict, not a list"),
        (b'{"hash": "0123456789abcdef", "files": {}, "shards": [1, 2, 3]}', "a shard is 1, not an object"),
        (b'{"hash": "0123456789abcdef", "files": {}, "shards": [{"name": "../x"}]}', "shard name '../x'"),
        (b'{"hash": "0123456789abcdef", "files": {}, "shards": [{"name": "s.tar"}]}', "lacks a split"),
        (
            b'{"hash": "0123456789abcdef", "files": {}, "shards": [{"name": "s.tar", "split": "", "files": ["b"]}]}',
            "holds 'b', which its files do not list",
        ),
        (b'{"hash": "0123456789abcdef", "files": {}, "counts": []}', "counts are not a mapping"),
    ],
)
def test_a_manifest_that_does_not_parse_is_one_error_line(data, reason):
    with pytest.raises(DistillError) as caught:
        parse_manifest(data, "s3://bkt/datasets/x/manifest.json")
    message = str(caught.value)
    assert message.startswith("'s3://bkt/datasets/x/manifest.json' is not a valid manifest: ") and reason in message
    assert "\n" not in message and caught.value.exit_code == 2


# -- run ids and step names: checked where they are declared ----------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize("value", ["../x", "..", ".", "", "a/b", "/abs", ".hidden", "-flag", "a b", "x" * 129])
def test_a_bad_run_id_or_name_is_refused_by_every_layer(value):
    options = {o.name: o for o in step_settings.STEP_OPTIONS["distill"]}
    for name in ("run_id", "name"):
        with pytest.raises(DistillError, match=f"{name} '"):
            options[name].coerce(value)
    with pytest.raises(DistillError, match="run_id '"):
        step_settings.pipeline_arguments({"data_source": "x", "run_id": value})
    assert options["run_id"].coerce("run-a") == "run-a" and options["name"].coerce("distill-cwd-15_18_21")


@pytest.mark.parametrize(
    ("step", "flags"),
    [
        ("train", ["--model", "yolov8n.yaml", "--name", "teacher", "--run-id", "../x"]),
        ("train", ["--model", "yolov8n.yaml", "--name", "../../x", "--run-id", "r"]),
        ("distill", ["--teacher", "t.pt", "--student", "yolov8n.yaml", "--name", "a/b", "--run-id", "r"]),
    ],
)
def test_a_bad_run_id_or_name_is_refused_before_any_s3_access(step, flags, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: touching S3 would be exit 1
    monkeypatch.setenv("YOLO_DISTILL_S3_PREFIX", "s3://bucket/prefix")
    started = time.monotonic()
    proc = cli("step", step, "--data", "s3://bucket/prefix/datasets/0123456789abcdef", *flags, check=False)
    line = one_error_line(proc, 2, contains="is not a valid name", alone=True)
    assert "run_id '../x'" in line or "name '" in line
    assert time.monotonic() - started < 120  # refused by the parser, not after S3 retries


# -- stale partial files ----------------------------------------------------------------------------------------------
def stale_and_live_parts(folder: Path, name: str) -> tuple[list[Path], list[Path]]:
    """Partial files a killed fetch left (an hour old), and a concurrent pod's live ones and a user's file (now)."""
    folder.mkdir(parents=True, exist_ok=True)
    stale = [folder / f".{name}.4242-139871.part", folder / f".{name}.4242-139871.part.a1B2c3D4"]
    live = [folder / f".{name}.4343-139872.part", folder / ".notes.part", folder / "b.jpg.1-2.part"]
    for path in stale + live:
        path.write_bytes(b"half")
    old = time.time() - 3600
    for path in stale:
        os.utime(path, (old, old))
    os.utime(live[1], (old, old))  # old, but not named like a partial file of ours: a user's file stays
    return stale, live


@pytest.mark.fast
def test_a_rerun_removes_the_partial_files_a_killed_unpack_left(tmp_path):
    files = {"images/train/a.jpg": sha(b"a"), "images/train/b.jpg": sha(b"b")}
    target = tmp_path / "cache"
    stale, live = stale_and_live_parts(target / "images" / "train", "a.jpg")
    shard = {"name": "train-00000.tar", "split": "train", "files": list(files)}
    shards.unpack(tar_of({"images/train/a.jpg": b"a", "images/train/b.jpg": b"b"}), shard, files, target)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    assert (target / "images" / "train" / "a.jpg").read_bytes() == b"a" and shards.done(target, shard)


def test_a_rerun_removes_the_partial_files_a_killed_download_left(stack_env, tmp_path):
    uri = f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/hostile/part/f.bin"
    storage.upload_bytes(b"content", uri)
    stale, live = stale_and_live_parts(tmp_path / "dl", "f.bin")
    storage.download_file(uri, tmp_path / "dl" / "f.bin")
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    assert (tmp_path / "dl" / "f.bin").read_bytes() == b"content"
    assert sorted(p.name for p in (tmp_path / "dl").iterdir() if p.name.startswith(".f.bin")) == [live[0].name]


# -- crafted datasets and pools in the real S3 server ------------------------------------------------------------------
@pytest.fixture
def victim(tmp_path, monkeypatch) -> dict:
    """A cache for the test, and a folder outside it holding the file a hostile manifest aims at."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("YOLO_DISTILL_CACHE", str(cache))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_bytes(ORIGINAL)
    return {"cache": cache, "outside": outside, "sentinel": outside / "sentinel.txt"}


def untouched(victim: dict) -> None:
    assert victim["sentinel"].read_bytes() == ORIGINAL
    assert sorted(os.listdir(victim["outside"])) == ["sentinel.txt"]  # nothing else written there either


def hostile_hash(kind: str, victim: dict, folder: str) -> str:
    """The manifest hash that points the cache folder at the victim's folder: absolute, or climbing out."""
    if kind == "absolute":
        return str(victim["outside"])
    return os.path.relpath(victim["outside"], victim["cache"] / folder)


def publish_crafted(tmp_path: Path, manifest: dict, where: str, folder: Path) -> storage.S3Uri:
    """Add ``sentinel.txt`` (the attacker's bytes) to ``folder`` and its manifest, and publish both as shards."""
    from distill.steps.prepare_data import publish

    (folder / "sentinel.txt").write_bytes(PWNED)
    manifest["files"]["sentinel.txt"] = sha(PWNED)  # "the sha256 updated to match"
    target = storage.parse_s3_uri(f"{os.environ['YOLO_DISTILL_S3_PREFIX']}/hostile/{where}")
    assert publish(folder, manifest, target)  # the real publisher: shards with the member, their sha256 recorded
    return target


@pytest.mark.fast
def test_a_long_hostile_value_is_named_with_its_closing_quote():
    """A path of any length in a manifest is named cut short, still quoted (the message's regex above relies on it)."""
    digest = "/" + "deep/" * 40 + "outside"
    with pytest.raises(DistillError) as refused:
        parse_manifest(json.dumps({"hash": digest, "files": {}}).encode(), "s3://b/manifest.json")
    named = re.search(r"its hash ('[^']*') is not a content hash", str(refused.value))
    assert named and named.group(1).startswith("'/deep/deep/") and named.group(1).endswith("...'"), refused.value
    assert len(named.group(1)) == 80


@pytest.mark.parametrize("kind", ["absolute", "climbing"])
def test_a_dataset_manifest_whose_hash_leaves_the_cache_is_refused(stack_env, victim, tmp_path, kind):
    from distill.steps.common import fetch_dataset
    from distill.steps.prepare_data import import_dataset

    manifest = import_dataset(str(TASK_DATA["detect"].parent), tmp_path / "ds", "yolo")
    manifest["hash"] = hostile_hash(kind, victim, "datasets")
    target = publish_crafted(tmp_path, manifest, f"dataset-{kind}-{time.time_ns()}", tmp_path / "ds")
    with pytest.raises(DistillError, match="is not a valid manifest: its hash '.*' is not a content hash"):
        fetch_dataset(str(target.join("data.yaml")))
    untouched(victim)
    proc = cli("step", "train", "--data", str(target.join("data.yaml")), "--model", "yolov8n.yaml", "--name", "t",
               "--run-id", f"hostile-{kind}", "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu",
               check=False)  # fmt: skip
    one_error_line(proc, 2, contains="is not a valid manifest")
    untouched(victim)


@pytest.mark.parametrize("kind", ["absolute", "climbing", "content hash"])
def test_a_pool_manifest_whose_hash_leaves_the_cache_is_refused(stack_env, victim, tmp_path, kind):
    """The same pool with a content hash for its name (the control) is fetched into the cache, and only there."""
    from distill.steps.common import fetch_pool
    from distill.steps.unlabeled_pool import POOL_KIND

    folder = tmp_path / "pool"
    (folder / "images").mkdir(parents=True)
    image = TASK_DATA["detect"].parent / "images" / "train" / "000000000009.jpg"
    (folder / "images" / "0000000000000009.jpg").write_bytes(image.read_bytes())
    files = {"images/0000000000000009.jpg": sha(image.read_bytes())}
    digest = f"{time.time_ns():016x}"[-16:] if kind == "content hash" else hostile_hash(kind, victim, "pools")
    manifest = {"hash": digest, "kind": POOL_KIND, "files": files}
    target = publish_crafted(tmp_path, manifest, f"pool-{kind.replace(' ', '-')}-{time.time_ns()}", folder)
    if kind == "content hash":
        images = fetch_pool(str(target))
        assert images == victim["cache"] / "pools" / digest / "images"
        assert [p.name for p in images.iterdir()] == ["0000000000000009.jpg"]
        assert (images.parent / "sentinel.txt").read_bytes() == PWNED  # the attacker's file, kept inside the cache
    else:
        with pytest.raises(DistillError, match="is not a content hash"):
            fetch_pool(str(target))
    untouched(victim)


def test_an_old_layout_manifest_naming_an_absolute_file_is_refused(stack_env, victim, tmp_path):
    from distill.steps.common import fetch_dataset

    data_yaml = (TASK_DATA["detect"].parent / "data.yaml").read_bytes()
    files = {"data.yaml": sha(data_yaml), str(victim["sentinel"]): sha(PWNED)}
    target = storage.parse_s3_uri(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/hostile/old-{time.time_ns()}")
    storage.upload_bytes(data_yaml, target.join("data.yaml"))
    storage.upload_bytes(PWNED, target.join(str(victim["sentinel"])))  # the key the old fetch would read it from
    storage.upload_bytes(
        json.dumps({"hash": "0123456789abcdef", "files": files}).encode(), target.join("manifest.json")
    )
    with pytest.raises(UnsafePath, match=re.escape(f"file '{victim['sentinel']}' would leave its folder")):
        fetch_dataset(str(target.join("data.yaml")))
    untouched(victim)


@pytest.mark.parametrize("garbage", [b'{"hash": "a", "shards": [', b"[1, 2, 3]"])
def test_a_garbage_manifest_is_one_error_line_through_the_cli(stack_env, tmp_path, garbage):
    target = storage.parse_s3_uri(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/hostile/garbage-{time.time_ns()}")
    storage.upload_bytes(garbage, target.join("manifest.json"))
    proc = cli("step", "train", "--data", str(target.join("data.yaml")), "--model", "yolov8n.yaml", "--name", "t",
               "--run-id", "hostile-garbage", "--device", "cpu", check=False)  # fmt: skip
    line = one_error_line(proc, 2, contains="is not a valid manifest")
    assert str(target.join("manifest.json")) in line


def test_a_prefix_download_keeps_keys_inside_and_skips_folder_markers(stack_env, tmp_path):
    """prepare-data's S3-prefix source: every key confined to the folder; a console's ``sub/`` marker holds no file."""
    prefix = storage.parse_s3_uri(f"{stack_env['YOLO_DISTILL_S3_PREFIX']}/hostile/prefix-{time.time_ns()}")
    storage.client().put_object(Bucket=prefix.bucket, Key=f"{prefix.key}/sub/", Body=b"")
    storage.upload_bytes(b"x", prefix.join("sub", "a.txt"))
    assert storage.download_prefix(prefix, tmp_path / "out") == [(tmp_path / "out" / "sub" / "a.txt").resolve()]
    assert (tmp_path / "out" / "sub" / "a.txt").read_bytes() == b"x"
