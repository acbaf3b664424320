"""Data benchmark (issue 22): publishing and fetching a dataset as one object per file (the old layout) vs shards.

For each size — synthetic detect images (``yolo-distill synth``, made once and cached in the work folder) imported
as prepare-data imports them — and each link — loopback, and loopback through :class:`LatencyProxy` with a delay per
request (20 ms: roughly a pod in front of a cloud object store) — against a SeaweedFS server of the project's own
stack started for the benchmark:

- ``publish``: the old layout (``storage.upload_dir`` and the manifest, what prepare-data did before shards) and the
  sharded one (``prepare_data.publish``: pack, upload side by side, manifest);
- ``fetch``: into an empty cache, in a fresh process (its peak RSS is the fetch's own), through the step's own
  ``fetch_dataset``: every split of each layout, and the sharded layout's ``val`` + ``test`` (evaluate's fetch);
- ``one object``: the same bytes as one tar, uploaded and downloaded with boto3's multipart transfer — the link's floor
  — and extracted with the system's ``tar`` (the floor of turning those bytes into the files training reads).

Each figure: seconds, MB/s, requests (counted by the proxy, which every transfer goes through, with no delay on
loopback) and, for fetches, peak RSS. Usage::

    python -m benchmarks.data                              # 1,000 and 3,200 images, loopback and 20 ms
    python -m benchmarks.data --sizes 10000,30000 --delays 20
    python -m benchmarks.data --profile quick              # smoke: 60 images
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import report as reports
from benchmarks.latency_proxy import LatencyProxy
from distill import markdown as md

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {"quick": {"sizes": [60], "delays": [0, 20]}, "default": {"sizes": [1000, 3200], "delays": [0, 20]}}


def make_dataset(images: int, imgsz: int, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """Return an imported synthetic set of ``images`` (80 % train, 10 % val, 10 % test) and its manifest (cached)."""
    from distill.data.synthetic import generate
    from distill.steps.prepare_data import import_dataset

    folder = workdir / f"synth-{images}-{imgsz}"
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        n_val = n_test = max(1, images // 10)
        generate(folder / "source", "detect", images - n_val - n_test, n_val, imgsz, seed=0, test=n_test)
        manifest = import_dataset(str(folder / "source"), folder / "dataset", "yolo")
        shutil.rmtree(folder / "source")
        manifest_file.write_text(json.dumps(manifest) + "\n")
    return folder / "dataset", json.loads(manifest_file.read_text())


@contextlib.contextmanager
def s3_stack(workdir: Path) -> Iterator[dict[str, str]]:
    """Start the project's stack in a folder of its own; yield its environment; stop and delete it afterwards."""
    from distill import stack

    folder = workdir / "stack"
    shutil.rmtree(folder, ignore_errors=True)
    stack.up(folder)
    try:
        yield stack.environment(folder)
    finally:
        stack.down(folder)
        shutil.rmtree(folder, ignore_errors=True)  # the uploaded copies: gigabytes at the larger sizes


@contextlib.contextmanager
def through(proxy: LatencyProxy, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Point this process's S3 client (keyed by the environment) and the fetch workers' at the proxy."""
    from distill.steps.tracking import environment

    routed = {**env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"}
    with environment(routed):
        yield routed


def timed(proxy: LatencyProxy, nbytes: int, work: Callable[[], Any]) -> dict[str, Any]:
    """Run ``work``; return its seconds, MB/s over ``nbytes`` and the requests it made."""
    before = proxy.count()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    return {"s": round(seconds, 2), "mb_s": round(nbytes / 1e6 / seconds, 2), "requests": proxy.count() - before}


def publish_old(folder: Path, manifest: dict[str, Any], target: str) -> None:
    """Publish as prepare-data did before shards: one object per file, then the manifest."""
    from distill.data import storage

    storage.upload_dir(folder, target)
    plain = {k: v for k, v in manifest.items() if k != "shards"}
    storage.upload_bytes(json.dumps(plain).encode(), f"{target}/manifest.json", "application/json")


def one_object(folder: Path, target: str, scratch: Path) -> tuple[Callable[[], Any], Callable[[], Any], int]:
    """Return the upload and the download of the folder as one tar object, and its size."""
    from distill.data import storage

    archive = scratch / "all.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=".")
    size = archive.stat().st_size
    back = scratch / "back.tar"
    return (lambda: storage.upload_file(archive, target)), (lambda: storage.download_file(target, back)), size


def untar(archive: Path, out: Path) -> None:
    """Extract ``archive`` with the system's tar (C): the floor for turning one object into a usable folder."""
    out.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)


def fetch_in_worker(env: dict[str, str], uri: str, splits: list[str] | None, scratch: Path) -> dict[str, Any]:
    """Fetch ``uri`` into an empty cache in a fresh process; return its seconds and peak RSS."""
    cache = scratch / f"cache-{time.monotonic_ns()}"
    job = {"uri": uri, "splits": splits, "env": {**env, "YOLO_DISTILL_CACHE": str(cache)}, "out": str(cache) + ".json"}
    code = reports.run_worker("benchmarks.data", job, scratch / "job.json", scratch / "worker.log")
    if code != 0:
        raise RuntimeError("fetch worker failed:\n" + (scratch / "worker.log").read_text()[-2000:])
    result = json.loads(Path(job["out"]).read_text())
    shutil.rmtree(cache, ignore_errors=True)
    return result


def peak_rss_mb() -> float:
    """Return this process's peak resident memory (``VmHWM``), in MB.

    Not ``getrusage``'s ``ru_maxrss``: across fork and exec it keeps the parent's peak (here the benchmark with torch
    loaded), so every worker would report that.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def _worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    os.environ.update(job["env"])
    from distill.steps.common import fetch_dataset

    base_mb = peak_rss_mb()  # the interpreter and its imports
    start = time.perf_counter()
    fetch_dataset(job["uri"], tuple(job["splits"]) if job["splits"] is not None else None)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    figures = {"s": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1), "rss_growth_mb": round(peak_mb - base_mb, 1)}
    Path(job["out"]).write_text(json.dumps(figures))


def measure_size(
    images: int, delays: list[int], args: argparse.Namespace, workdir: Path, env: dict[str, str]
) -> dict[str, Any]:
    """Every figure of one dataset size, at every delay."""
    imgsz, shard_bytes = args.imgsz, args.shard_mb * 1024 * 1024
    folder, manifest = make_dataset(images, imgsz, workdir)
    nbytes = sum((folder / rel).stat().st_size for rel in manifest["files"])
    port = int(env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1])
    row: dict[str, Any] = {"images": images, "files": len(manifest["files"]), "bytes": nbytes, "links": {}}
    row["import_s"] = import_seconds(folder, workdir)
    for delay in delays:
        prefix = f"{env['YOLO_DISTILL_S3_PREFIX']}/bench-{images}-{delay}ms-{args.shard_mb}mb"
        scratch = Path(tempfile.mkdtemp(dir=workdir))
        with LatencyProxy(("127.0.0.1", port), delay_s=delay / 1000) as proxy, through(proxy, env) as routed:
            link = measure_link(folder, manifest, nbytes, prefix, proxy, routed, scratch, shard_bytes, args.skip_old)
        shutil.rmtree(scratch, ignore_errors=True)
        row["links"][f"{delay}ms"] = link
        print(f"  {images} images, {delay} ms: " + ", ".join(f"{k} {v['s']} s" for k, v in link.items()), flush=True)
    return row


def import_seconds(folder: Path, workdir: Path) -> float:
    """Time prepare-data's local half (import, Ultralytics' checks, manifest) on the set, as a YOLO folder."""
    from distill.steps.prepare_data import import_dataset

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        start = time.perf_counter()
        import_dataset(str(folder), Path(tmp) / "out", "yolo")
        return round(time.perf_counter() - start, 2)


def measure_link(
    folder: Path,
    manifest: dict[str, Any],
    nbytes: int,
    prefix: str,
    proxy: LatencyProxy,
    env: dict[str, str],
    scratch: Path,
    shard_bytes: int,
    skip_old: bool = False,
) -> dict[str, Any]:
    """Publish and fetch one dataset both ways (or only as shards) through ``proxy``, and move it as one object."""
    from distill.data import storage
    from distill.steps.prepare_data import publish

    old, new = f"{prefix}/old/{manifest['hash']}", storage.parse_s3_uri(f"{prefix}/new/{manifest['hash']}")
    up, down, tar_bytes = one_object(folder, f"{prefix}/one.tar", scratch)
    link = {} if skip_old else {"publish_old": timed(proxy, nbytes, lambda: publish_old(folder, manifest, old))}
    link |= {
        "publish_shards": timed(proxy, nbytes, lambda: publish(folder, dict(manifest), new, shard_bytes)),
        "one_object_up": timed(proxy, tar_bytes, up),
        "one_object_down": timed(proxy, tar_bytes, down),
        "one_object_untar": timed(proxy, tar_bytes, lambda: untar(scratch / "back.tar", scratch / "untarred")),
    }
    fetches = [("fetch_shards", str(new), None), ("fetch_shards_val_test", str(new), ["val", "test"])]
    for name, uri, splits in ([] if skip_old else [("fetch_old", old, None)]) + fetches:
        before = proxy.count()
        link[name] = {**fetch_in_worker(env, uri, splits, scratch), "requests": proxy.count() - before}
        link[name]["mb_s"] = round(nbytes / 1e6 / link[name]["s"], 2) if splits is None else None
    return link


def ratios(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Return the issue's targets per link: speed-ups over the old layout, and the fetch against one object's move.

    ``prepare_data_speedup`` counts the import (the same in both layouts) with each publish, as prepare-data runs.
    ``fetch_over_one_object``: against the download alone; ``..._and_untar``: against download plus extraction (what
    turning one object into the files training reads costs at least). Speed-ups only when the old layout ran.
    """
    out = {}
    for link, f in row["links"].items():
        floor = f["one_object_down"]["s"] + f["one_object_untar"]["s"]
        out[link] = {
            "fetch_over_one_object": round(f["fetch_shards"]["s"] / f["one_object_down"]["s"], 2),
            "fetch_over_one_object_and_untar": round(f["fetch_shards"]["s"] / floor, 2),
        }
        if "fetch_old" in f:
            out[link]["fetch_speedup"] = round(f["fetch_old"]["s"] / f["fetch_shards"]["s"], 1)
            out[link]["publish_speedup"] = round(f["publish_old"]["s"] / f["publish_shards"]["s"], 1)
            before, after = row["import_s"] + f["publish_old"]["s"], row["import_s"] + f["publish_shards"]["s"]
            out[link]["prepare_data_speedup"] = round(before / after, 1)  # import + publish, end to end
    return out


def markdown(report: dict[str, Any]) -> str:
    """Return the report as a table: one row per size and link (``—`` where the old layout was not measured)."""

    def get(f: dict[str, Any], name: str, key: str = "s") -> Any:
        return f[name][key] if name in f else "—"

    rows = []
    for row in report["sizes"]:
        for link, f in row["links"].items():
            rows.append([
                f"{row['images']} ({row['files']}, {row['bytes'] / 1e6:.0f}, {row.get('import_s', '—')})", link,
                f"{get(f, 'publish_old')} → {f['publish_shards']['s']}",
                f"{get(f, 'fetch_old')} → {f['fetch_shards']['s']}",
                str(f["fetch_shards_val_test"]["s"]),
                f"{f['one_object_up']['s']} / {f['one_object_down']['s']} / {f['one_object_untar']['s']}",
                f"{get(f, 'fetch_old', 'requests')} → {f['fetch_shards']['requests']}",
                f"{get(f, 'fetch_old', 'rss_growth_mb')} → {f['fetch_shards']['rss_growth_mb']}",
            ])  # fmt: skip
    header = ["images (files, MB, import s)", "link", "publish old → shards (s)", "fetch old → shards (s)",
              "fetch val+test (s)", "one object up / down / untar (s)", "fetch requests old → shards",
              "fetch RSS growth (MB)"]  # fmt: skip
    return md.table(header, rows)


def main(argv: list[str] | None = None) -> int:
    """Measure every size at every delay against a fresh stack; write and print the report."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="default")
    ap.add_argument("--sizes", default=None, help="comma-separated image counts (default: the profile's)")
    ap.add_argument("--delays", default=None, help="comma-separated ms per request (default: 0,20)")
    ap.add_argument("--imgsz", type=int, default=128, help="synthetic image size (synth's 128 px: ~35 KB per image)")
    ap.add_argument("--shard-mb", type=int, default=256, help="largest shard in MiB (default: the product's, 256)")
    ap.add_argument("--skip-old", action="store_true", help="measure the sharded layout only (shard size tries)")
    ap.add_argument("--tag", default="", help="report name suffix (data-<profile>-<tag>-<date>.json)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".work" / "data")
    reports.add_report_args(ap)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0
    import distill

    distill.configure()
    profile = PROFILES[args.profile]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else profile["sizes"]
    delays = [int(d) for d in args.delays.split(",")] if args.delays else profile["delays"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with s3_stack(args.workdir) as env:
        rows = [measure_size(n, delays, args, args.workdir, env) for n in sizes]
    report = {"benchmark": "data", "profile": args.profile, "settings": {"sizes": sizes, "delays_ms": delays,
              "imgsz": args.imgsz, "shard_mb": args.shard_mb}, "machine": reports.machine("cpu"), "sizes": rows,
              "ratios": {str(r["images"]): ratios(r) for r in rows},
              "wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    print(markdown(report))
    print(json.dumps(report["ratios"], indent=1))
    reports.publish(args, "-".join(filter(None, ("data", args.profile, args.tag))), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
