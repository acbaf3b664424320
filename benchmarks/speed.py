"""Speed benchmark: time per training step of our KD against its floor and against Ultralytics' built-in KD.

For each teacher→student pair every variant trains the same data (one real dataset repeated to ``warmup + steps``
batches, the same seed, so every variant sees the same batches), at the same batch and image size, in the unmodified
Ultralytics trainer. A step is timed from ``on_train_batch_start`` to ``on_train_batch_end``: preprocessing, forward,
task + KD losses, backward and the optimizer step (``nbs = batch``, so every step steps the optimizer); data loading
is excluded. The median of the steps after warm-up is reported.

Variants: ``plain`` (student alone), ``teacher`` (teacher inference alone, no grad, half precision on CUDA, on the
same batches), our ``cwd``/``mgd``/``mimic``/``logit``/``cwd+logit`` (offline) and ``online-cwd``,
``ultralytics-kd`` (``distill_model=``) and ``pool-online``: an unlabelled pool with ``pool_targets="online"``
and no KD term, where half of every epoch's images are pool images whose targets the teacher makes on each batch;
``pool-online-ema`` the same with the mean teacher (``pool_teacher="ema"`` from the first step: an EMA of the
student makes the targets and the big teacher is not run; its forward counts under ``losses`` in the breakdown).
Ratios:

- ``kd_over_floor[pair/variant]`` = KD step / (plain step + teacher inference) — what KD costs beyond the work it
  cannot avoid (target ≤ 1.05 offline). For ``online-cwd`` the floor is plain step + a plain teacher training step.
- ``ours_over_native[pair]`` = our shipped default's step / Ultralytics KD's step (target ≤ 1.0).
- ``pool_over_ltt[pair/variant]`` = a pool step / the plain step, for the ``pool-*`` variants and ``default`` (offline
  pseudo-labels + KD): what a pool epoch costs against label-then-train's, whose step is a plain step on the
  labelled and pseudo-labelled images (issue 38's cost target: ≤ 1.3 for the online teacher).

Each variant runs in a fresh Python process, one after another within one benchmark run, so its peak memory (RSS,
or CUDA peak allocated) is its own. The same work differs by up to ~10% between processes on a shared VM, so the
``cpu`` and ``full`` profiles run ``--rounds 3``: every variant of a pair once per round, rounds one after another
(interleaved, so a slow spell of the machine hits every variant alike). A variant's step is the median of its timed
steps pooled over the rounds; ``kd_over_floor_range`` gives the lowest and highest ratio of the single rounds, each
computed from processes that ran minutes apart.

This VM also switches between a fast and a slow state (~25%) within seconds, in the middle of a process: every part
of a step (teacher and student forward, backward) slows down together. A median then depends on how long a variant
spent in the slow state, so every step time is also reported as its 10th percentile (``p10_s``, the fast state's
speed over all rounds) with the same ratios on it (``kd_over_floor_p10``, ``ours_over_native_p10``); where median and
p10 ratios disagree, the machine moved, not the work. ``--from-report`` recomputes every ratio and the table from an
earlier report's recorded steps, without measuring again. Usage::

    python -m benchmarks.speed                        # CPU, the committed table (~80 min on 2 cores: 3 rounds)
    python -m benchmarks.speed --profile quick        # smoke: one pair, few steps
    python -m benchmarks.speed --device 0             # CUDA (teacher in half precision)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import report as reports
from benchmarks.step_timing import StepBreakdown, StepTimer, teacher_inference
from distill import markdown as md

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "tests" / "data"  # coco8, coco8-seg, coco8-pose ship with the repository

#: pair name → (task, teacher yaml, student yaml, dataset folder name under --data-root)
PAIRS = {
    "v8s-v8n": ("detect", "yolov8s.yaml", "yolov8n.yaml", "coco8"),
    "v8l-v8n": ("detect", "yolov8l.yaml", "yolov8n.yaml", "coco8"),
    "v8s-v8n-seg": ("segment", "yolov8s-seg.yaml", "yolov8n-seg.yaml", "coco8-seg"),
    "v8s-v8n-pose": ("pose", "yolov8s-pose.yaml", "yolov8n-pose.yaml", "coco8-pose"),
}
#: variant → our DistillConfig fields; ``plain``/``teacher``/``teacher-train``/``ultralytics-kd`` are special
VARIANTS: dict[str, Any] = {
    "plain": None,
    "teacher": None,
    "cwd": {"loss": "cwd", "logit": False},
    "mgd": {"loss": "mgd", "logit": False},
    "mimic": {"loss": "mimic", "logit": False},
    "logit": {"loss": "none", "logit": True},
    "cwd+logit": {"loss": "cwd", "logit": True},
    "default": {},  # whatever DistillConfig ships
    "online-cwd": {"loss": "cwd", "logit": False, "online": True},
    "teacher-train": None,
    "ultralytics-kd": None,
    "pool-online": {"pool_targets": "online", "pool_kd": False},  # trains on half labelled, half pool images
    # the same with the mean teacher (an EMA of the student, student-sized) from the first step
    "pool-online-ema": {"pool_targets": "online", "pool_kd": False, "pool_teacher": "ema", "burn_in": 0},
}
#: variants that train on an unlabelled pool: half of the batches' images come from it (:func:`pool_dataset`)
POOL_VARIANTS = ("pool-online", "pool-online-ema")
BREAKDOWN = ("teacher_forward", "student_forward", "losses", "backward_optimizer")
PROFILES = {
    "quick": {"pairs": ["v8s-v8n"], "steps": 8, "warmup": 3, "rounds": 1,
              "variants": ["plain", "teacher", "default", "ultralytics-kd"]},
    "cpu": {"pairs": list(PAIRS), "steps": 20, "warmup": 5, "rounds": 3, "variants": list(VARIANTS),
            "small_pair_variants": ["plain", "teacher", "cwd", "default", "ultralytics-kd"]},
    "full": {"pairs": list(PAIRS), "steps": 50, "warmup": 10, "rounds": 3, "variants": list(VARIANTS)},
}  # fmt: skip


def source_split(source: Path) -> tuple[dict[str, Any], list[Path]]:
    """Return ``source``'s ``data.yaml`` and its train images, sorted (what the benchmark's datasets are made of)."""
    from distill.yaml_files import read_yaml

    spec = read_yaml(source / "data.yaml", f"data '{source / 'data.yaml'}'")
    train = sorted(p for p in (source / spec["train"]).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return spec, train


def repeated_dataset(source: Path, out: Path, images: int) -> Path:
    """Write a dataset of ``images`` training images cycling through ``source``'s train split (links + label copies).

    Validation uses the source's val split as is. Returns the new ``data.yaml``.
    """
    spec, train = source_split(source)
    (out / "images" / "train").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "train").mkdir(parents=True, exist_ok=True)
    label_dir = source / "labels" / Path(spec["train"]).name
    for i in range(images):
        image = train[i % len(train)]
        (out / "images" / "train" / f"{i:05d}{image.suffix}").symlink_to(image.resolve())
        label = label_dir / f"{image.stem}.txt"
        if label.is_file():
            shutil.copy(label, out / "labels" / "train" / f"{i:05d}.txt")
    val = (source / spec["val"]).resolve()
    spec.update(path=str(out), train="images/train", val=str(val))
    (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out / "data.yaml"


def pool_dataset(source: Path, out: Path, images: int) -> tuple[Path, Path]:
    """Write the pool variants' data: ``images // 2`` labelled images and the rest as an unlabelled pool folder.

    Pool images are ``source``'s train images mirrored left to right, each with one pixel set to its index, so no
    two are byte copies of each other or of a labelled image (the pool refuses copies); the same size and content
    as the labelled ones, so a step costs what it would on new images. Returns ``(data.yaml, pool folder)``.
    """
    import cv2

    data = repeated_dataset(source, out / "data", images // 2)
    train = source_split(source)[1]
    pool = out / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for i in range(images - images // 2):
        image = cv2.flip(cv2.imread(str(train[i % len(train)])), 1)
        image[0, 0] = (i % 256, i // 256 % 256, 255)
        cv2.imwrite(str(pool / f"pool{i:05d}.png"), image)
    return data, pool


# -- one variant, in its own process --------------------------------------------------------------------------------
def run_variant(job: dict[str, Any]) -> dict[str, Any]:
    """Train one epoch of ``warmup + steps`` batches with one variant and return its median step and peak memory."""
    import torch

    import distill

    cuda = job["device"] not in ("cpu", "")
    timer = StepTimer(cuda)
    captured: dict[str, Any] = {}
    breakdown = StepBreakdown(timer)
    cbs = timer.callbacks()
    cbs["on_train_start"] = [breakdown.attach]
    cbs["on_train_epoch_end"] = [breakdown.detach]
    cbs["on_train_end"] = [lambda trainer: captured.setdefault("trainer", trainer)]
    common = dict(
        epochs=1, imgsz=job["imgsz"], batch=job["batch"], device=job["device"], seed=0, out=job["out"],
        plots=False, workers=0, nbs=job["batch"], val=False, callbacks=cbs, verbose=False,
    )  # fmt: skip
    name, spec = job["variant"], VARIANTS[job["variant"]]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if name in ("plain", "teacher"):
        distill.train(job["data"], job["student"], **common)
    elif name == "teacher-train":
        distill.train(job["data"], job["teacher"], **common)
    elif name == "ultralytics-kd":
        distill.train(job["data"], job["student"], distill_model=job["teacher"], **common)
    else:
        unlabeled = job["pool"] if name in POOL_VARIANTS else None
        config = distill.DistillConfig(teacher=job["teacher"], **spec)
        distill.distill(job["data"], job["student"], config, unlabeled=unlabeled, **common)
    times = timer.times[job["warmup"] :]
    parts = breakdown.medians(times, job["warmup"]) if name != "teacher" else {}
    if name == "teacher":  # the plain run above only supplied the data pipeline; time the teacher on its batches
        times = teacher_inference(job, captured["trainer"])[job["warmup"] :]
    if len(times) < job["steps"]:
        raise RuntimeError(f"{name}: only {len(times)} timed steps (expected {job['steps']})")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "median_s": statistics.median(times),
        "steps": len(times),
        "breakdown_s": parts,
        "times_s": [round(t, 5) for t in times],
        "peak_rss_mb": round(peak_rss_mb, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


def _worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    result = run_variant(job)
    Path(job["result"]).write_text(json.dumps(result) + "\n")


# -- orchestration --------------------------------------------------------------------------------------------------
def measure(job: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Run one variant in a fresh process; a failure is recorded with the last lines of its log, not raised."""
    tag = f"{job['pair']}-{job['variant']}-r{job['round']}".replace("+", "-")
    job = dict(job, out=str(scratch / tag), result=str(scratch / f"{tag}.json"))
    log = scratch / f"{tag}.log"
    code = reports.run_worker("benchmarks.speed", job, scratch / f"{tag}.job.json", log)
    if code != 0 or not Path(job["result"]).is_file():
        lines = log.read_text(errors="replace").strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {code}"}
    return json.loads(Path(job["result"]).read_text())


def p10(times: list[float]) -> float:
    """Return the 10th percentile of step times: the fast state's speed (a minimum would be one lucky step)."""
    return round(statistics.quantiles(times, n=10, method="inclusive")[0], 5) if len(times) > 1 else times[0]


def step_figures(times: list[float]) -> dict[str, float]:
    """Return the figures a variant's step is reported as: ``median_s`` and ``p10_s`` of its timed steps."""
    return {"median_s": statistics.median(times), "p10_s": p10(times)}


def pool(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine one variant's measurements from several rounds into one result.

    The step is the median of every timed step of every round, ``round_median_s`` keeps each round's own median,
    the breakdown is the median of the rounds' breakdowns and peak memory the highest of the rounds. A failed round
    fails the variant (its error is kept): a pooled figure that silently lost rounds would not be comparable.
    """
    failed = [r for r in rounds if "error" in r]
    if failed:
        return {"error": failed[0]["error"], "rounds": len(rounds)}
    times = [t for r in rounds for t in r["times_s"]]
    parts = [r["breakdown_s"] for r in rounds if r.get("breakdown_s")]  # none for the teacher-alone variant
    keys = [k for k in BREAKDOWN if parts and k in parts[0]]
    cuda = [r["peak_cuda_mb"] for r in rounds if r.get("peak_cuda_mb") is not None]
    return {
        **step_figures(times),
        "steps": len(times),
        "rounds": len(rounds),
        "round_median_s": [round(r["median_s"], 5) for r in rounds],
        "breakdown_s": {k: round(statistics.median(p[k] for p in parts), 5) for k in keys},
        "times_s": times,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
        "peak_cuda_mb": max(cuda) if cuda else None,
    }


def ratio_ranges(results: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Return ``pair/variant`` → [lowest, highest] ``kd_over_floor`` of the single rounds (from ``round_median_s``).

    Each round's ratio divides by the plain and teacher steps of the same round, measured minutes apart rather than
    across the whole run, so the range shows how far the machine's drift moves the ratio.
    """
    counts = {len(v.get("round_median_s", [])) for variants in results.values() for v in variants.values()}
    n = min(counts - {0}, default=0)
    per_round = []
    for i in range(n):
        view = {
            pair: {name: {"median_s": v["round_median_s"][i]} for name, v in variants.items() if "round_median_s" in v}
            for pair, variants in results.items()
        }
        per_round.append(ratios(view)[0])
    keys = set().union(*per_round) if per_round else set()
    return {k: [min(r[k] for r in per_round if k in r), max(r[k] for r in per_round if k in r)] for k in sorted(keys)}


def ratios(results: dict[str, dict[str, Any]], key: str = "median_s") -> tuple[dict[str, float], dict[str, float]]:
    """Compute ``kd_over_floor`` (``pair/variant`` → ratio) and ``ours_over_native`` (pair → ratio) on ``key``."""
    kd_over_floor: dict[str, float] = {}
    ours_over_native: dict[str, float] = {}
    for pair, variants in results.items():
        step = {k: v[key] for k, v in variants.items() if key in v}
        if "plain" not in step or "teacher" not in step:
            continue
        floor = step["plain"] + step["teacher"]
        for name, seconds in step.items():
            if name in ("plain", "teacher", "teacher-train", "ultralytics-kd"):
                continue
            if VARIANTS[name].get("pool_teacher") == "ema":  # the big teacher is not run: pool_over_ltt says it
                continue
            if VARIANTS[name].get("online"):
                if "teacher-train" in step:
                    kd_over_floor[f"{pair}/{name}"] = round(seconds / (step["plain"] + step["teacher-train"]), 3)
                continue
            kd_over_floor[f"{pair}/{name}"] = round(seconds / floor, 3)
        if "default" in step and "ultralytics-kd" in step:
            ours_over_native[pair] = round(step["default"] / step["ultralytics-kd"], 3)
    return kd_over_floor, ours_over_native


def pool_over_ltt(results: dict[str, dict[str, Any]], key: str = "median_s") -> dict[str, float]:
    """Return ``pair/variant`` → a pool variant's (or the offline KD ``default``'s) step / the plain step, on ``key``.

    Label-then-train's step is a plain step (its pool images carry the teacher's labels from before training), so
    this is what a pool epoch costs against label-then-train's at the same images per epoch.
    """
    out: dict[str, float] = {}
    for pair, variants in results.items():
        plain = variants.get("plain", {}).get(key)
        for name in (*POOL_VARIANTS, "default"):
            seconds = variants.get(name, {}).get(key)
            if plain and seconds:
                out[f"{pair}/{name}"] = round(seconds / plain, 3)
    return out


def markdown(report: dict[str, Any]) -> str:
    """Return the README table: per pair and variant the step (median · p10), its ratios, breakdown, peak memory."""
    rows: list[list[str]] = []
    spread = report.get("kd_over_floor_range", {})
    fast = report.get("kd_over_floor_p10", {})
    for pair, variants in report["results"].items():
        native = variants.get("ultralytics-kd", {})
        for name, r in variants.items():
            if "error" in r:
                rows.append([pair, name, f"failed: {r['error'][:80]}", "", "", "", "", ""])
                continue
            key = f"{pair}/{name}"
            over, low, high = report["kd_over_floor"].get(key), *spread.get(key, (None, None))
            shown = "" if over is None else f"{over:.3f}" + (f" ({low:.2f}–{high:.2f})" if low != high else "")
            shown += f" · {fast[key]:.3f}" if key in fast else ""
            vs_native = ""
            if "median_s" in native and name not in ("plain", "teacher"):
                vs_native = f"{r['median_s'] / native['median_s']:.3f}"
                vs_native += f" · {r['p10_s'] / native['p10_s']:.3f}" if "p10_s" in r and "p10_s" in native else ""
            step = f"{r['median_s'] * 1000:.0f}" + (f" · {r['p10_s'] * 1000:.0f}" if "p10_s" in r else "")
            cuda = "" if r["peak_cuda_mb"] is None else f"{r['peak_cuda_mb']:.0f}"
            parts = r.get("breakdown_s") or {}
            split = " / ".join(f"{parts[k] * 1000:.0f}" for k in BREAKDOWN if k in parts)
            rows.append([pair, name, step, shown, vs_native, split, f"{r['peak_rss_mb']:.0f}", cuda])
    header = ["pair", "variant", "step ms median · p10", "/ floor median (rounds) · p10",
              "/ Ultralytics KD median · p10", "teacher fwd / student fwd / losses / backward+opt ms",
              "peak RSS MB", "peak CUDA MB"]  # fmt: skip
    return md.table(header, rows)


def summarise(results: dict[str, dict[str, Any]], head: dict[str, Any]) -> dict[str, Any]:
    """Return the report: ``head`` (benchmark, profile, settings, machine, ...), ``results`` and every ratio."""
    kd_over_floor, ours_over_native = ratios(results)
    kd_over_floor_p10, ours_over_native_p10 = ratios(results, key="p10_s")
    return {
        **head,
        "results": results,
        "kd_over_floor": kd_over_floor,
        "ours_over_native": ours_over_native,
        "kd_over_floor_range": ratio_ranges(results),
        "kd_over_floor_p10": kd_over_floor_p10,
        "ours_over_native_p10": ours_over_native_p10,
        "pool_over_ltt": pool_over_ltt(results),
        "pool_over_ltt_p10": pool_over_ltt(results, key="p10_s"),
    }


def resummarise(path: Path) -> dict[str, Any]:
    """Recompute an earlier report's pooled statistics and ratios from the step times it recorded (no measuring).

    Each variant's ``times_s`` holds every timed step of every round, so its median and p10 follow from them; the
    machine, settings and per-round medians are the original measurement's.
    """
    old = json.loads(path.read_text())
    results = old["results"]
    for variants in results.values():
        for r in variants.values():
            if r.get("times_s"):
                r.update(step_figures(r["times_s"]))
    derived = ("kd_over", "ours_over", "pool_over")
    head = {k: v for k, v in old.items() if k != "results" and not k.startswith(derived)}
    return summarise(results, dict(head, resummarised_from=path.name))


def report_lines(report: dict[str, Any]) -> None:
    """Print the table and every ratio of a report."""
    print(markdown(report))
    for key in (
        "kd_over_floor",
        "ours_over_native",
        "kd_over_floor_range",
        "kd_over_floor_p10",
        "ours_over_native_p10",
        "pool_over_ltt",
        "pool_over_ltt_p10",
    ):
        print(f"{key}:", json.dumps(report.get(key, {})))


def report_name(profile: str, device: str) -> str:
    """Return the report's name: ``speed-<profile>`` on the CPU, ``speed-cuda-<profile>`` on a GPU."""
    return f"speed-{profile}" if device == "cpu" else f"speed-cuda-{profile}"


def arg_parser() -> argparse.ArgumentParser:
    """Return the benchmark's command line (the worker's ``--worker`` and the report options included)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--imgsz", type=int, default=None, help="default: 128 on CPU, 640 on CUDA")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="times every variant is measured, interleaved (default: the profile's; quick 1, cpu and full 3)",
    )
    ap.add_argument("--pairs", default=None, help="comma-separated subset of: " + ", ".join(PAIRS))
    ap.add_argument("--variants", default=None, help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument(
        "--data-root",
        type=Path,
        default=TEST_DATA,
        help="folder holding coco8, coco8-seg, coco8-pose (default: tests/data)",
    )
    ap.add_argument("--from-report", type=Path, default=None, help="recompute an earlier report's ratios and table "
                    "from its recorded steps (writes it again under today's date)")  # fmt: skip
    reports.add_report_args(ap)
    return ap


def republish(args: argparse.Namespace) -> int:
    """``--from-report``: recompute an earlier report's ratios and table from its recorded steps, print and write it."""
    if not args.from_report.is_file():
        raise SystemExit(f"report '{args.from_report}' not found")
    report = resummarise(args.from_report)
    report_lines(report)
    reports.publish(args, report_name(report["profile"], report["machine"]["device"]), report)
    return 0


def chosen_pairs(args: argparse.Namespace, profile: dict[str, Any]) -> tuple[list[str], list[str] | None]:
    """Return the pairs to measure and the variants ``--variants`` asks for (``None``: the profile's), both checked."""
    pairs = args.pairs.split(",") if args.pairs else profile["pairs"]
    chosen = args.variants.split(",") if args.variants else None
    for name in pairs:
        if name not in PAIRS:
            raise SystemExit(f"unknown pair '{name}': choose from {', '.join(PAIRS)}")
    for name in chosen or []:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant '{name}': choose from {', '.join(VARIANTS)}")
    return pairs, chosen


def measure_pair(
    pair: str, variants: list[str], rounds: int, scratch: Path, data_root: Path, settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Measure every variant of one teacher→student pair ``rounds`` times, interleaved; return each one's pooled result.

    The pair's data (its dataset repeated to ``warmup + steps`` batches) and a random-init teacher are written under
    ``scratch``; ``settings`` are the jobs' ``imgsz``, ``batch``, ``steps``, ``warmup`` and ``device``.
    """
    from ultralytics import YOLO

    task, teacher_yaml, student_yaml, data_name = PAIRS[pair]
    source = data_root / data_name
    if not (source / "data.yaml").is_file():
        raise SystemExit(f"dataset '{source}' not found (pass --data-root)")
    images = settings["batch"] * (settings["warmup"] + settings["steps"])
    data = repeated_dataset(source, scratch / pair / "data", images)
    pooled = pool_dataset(source, scratch / pair / "pooled", images) if set(variants) & set(POOL_VARIANTS) else None
    teacher = scratch / pair / f"{Path(teacher_yaml).stem}.pt"
    model = YOLO(teacher_yaml, task=task)  # random init: speed does not depend on the values
    names = source_split(source)[0]["names"]
    model.model.names = names if isinstance(names, dict) else dict(enumerate(names))  # the pool checks the classes
    model.save(teacher)
    measured: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for i in range(rounds):  # interleaved: round 1 of every variant, then round 2, ...
        for variant in variants:
            job = dict(pair=pair, variant=variant, round=i, data=str(data), teacher=str(teacher),
                       student=student_yaml, **settings)  # fmt: skip
            if variant in POOL_VARIANTS:
                job.update(data=str(pooled[0]), pool=str(pooled[1]))
            r = measure(job, scratch / pair)
            measured[variant].append(r)
            shown = f"{r['median_s'] * 1000:.0f} ms/step" if "median_s" in r else f"FAILED: {r['error']}"
            print(f"  {pair:<14} {variant:<15} round {i + 1}/{rounds}  {shown}", flush=True)
    return {variant: pool(rs) for variant, rs in measured.items()}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure every pair × variant in turn, write and print the report."""
    args = reports.start(arg_parser(), argv, _worker)
    if args is None:
        return 0
    if args.from_report:
        return republish(args)

    profile = PROFILES[args.profile]
    pairs, chosen = chosen_pairs(args, profile)
    imgsz = args.imgsz or (128 if args.device == "cpu" else 640)
    steps, warmup = profile["steps"], profile["warmup"]
    rounds = profile["rounds"] if args.rounds is None else args.rounds
    if rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {rounds}")
    settings = dict(imgsz=imgsz, batch=args.batch, steps=steps, warmup=warmup, device=args.device)

    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="yolo-distill-speed-") as tmp:
        for pair in pairs:
            variants = chosen or profile["variants"]
            if pair != "v8s-v8n" and not chosen and "small_pair_variants" in profile:
                variants = profile["small_pair_variants"]  # every variant on v8s→v8n; the key ones elsewhere
            results[pair] = measure_pair(pair, variants, rounds, Path(tmp), args.data_root, settings)
    head = {
        "benchmark": "speed",
        "profile": args.profile,
        "settings": {"imgsz": imgsz, "batch": args.batch, "steps": steps, "warmup": warmup, "rounds": rounds,
                     "pairs": pairs},
        "machine": reports.machine(args.device),
        "wall_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    report = summarise(results, head)
    report_lines(report)
    reports.publish(args, report_name(args.profile, args.device), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
