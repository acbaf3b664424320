"""Promotion-gate benchmark (issue 24): how often each gate rule swaps the champion on noise, and finds a real gain.

An accuracy benchmark's work folder holds many trained students: several configurations, each over paired seeds,
all scored on the same test split. Two runs of *one* configuration that differ by their seed alone are the
scheduled-retraining case where nothing got better: a gate that promotes one over the other swapped the champion on
noise. Two configurations whose five-seed paired CI (the accuracy report's) excludes zero are a real difference: the
gate should promote the better over the worse on the same seed, and never the worse over the better.

Every run's ``best.pt`` is validated again with the evaluate step's own ``measure(..., keep_stats=True)`` (the
per-image matches, cached as ``gate-stats.npz`` in the run's folder; the full-sample score must equal the one the
accuracy benchmark recorded). Every bootstrap resample draws the same images for every model (one index matrix per
folder, as :func:`distill.registry.bootstrap.paired_difference` draws them), so a pair's distribution is one
subtraction.

Rules, each a lower bound of challenger − champion that must be > 0 to promote (``min_gain`` 0):

* ``point`` — the difference itself (today's gate);
* ``bootstrap`` — the paired bootstrap's lower percentile at ``--level`` (test-set sampling noise only);
* ``bootstrap+runK`` — ``difference − z·√(se² + r₁² + r₂²)``: the bootstrap's standard error plus each run's own
  run-to-run term ``r``, from its training log — the standard deviation of its validation score over its last K
  epochs (``--late``; what the product can know from one run);
* ``ci (shipped)`` — the product's rule (:func:`distill.registry.gate.judge`): as ``bootstrap+run10``, each run's term
  at least ``RUN_FLOOR × se``;
* ``bootstrap+seed`` — the same with the configuration's true seed standard deviation (an oracle: it needs the very
  seeds the gate is meant to spare; the best any run-to-run term could do).

::

    python -m benchmarks.gate benchmarks/.work/accuracy-160px-b16-yolov8n benchmarks/.work/accuracy-128px-b16-yolov8n
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report as reports
from benchmarks.paired import paired_gain
from distill import markdown as md
from distill.registry.gate import LATE_EPOCHS, RUN_FLOOR, run_noise

RUN_RE = re.compile(r"^(?P<config>.+)-s(?P<seed>\d+)-(?P<data>[0-9a-f]{16})$")
METRIC = "metrics/mAP50-95(B)"
STATS_FILE = "gate-stats.npz"


@dataclass
class Run:
    """One trained student: its configuration, seed, recorded test score, run-to-run term and resampled scores."""

    folder: Path
    config: str
    seed: int
    test: float
    late_sd: dict[int, float]  # epochs at the end -> spread of the validation score over them
    resampled: np.ndarray = field(default_factory=lambda: np.zeros(0))


def load_runs(workdir: Path, late: tuple[int, ...]) -> list[Run]:
    """Every finished student run (not the teacher) of an accuracy work folder."""
    runs = []
    for result in sorted(workdir.glob("*/result.json")):
        match = RUN_RE.match(result.parent.name)
        csv_file = result.parent / "train" / "results.csv"
        if not match or match["config"].startswith("teacher") or not csv_file.is_file():
            continue
        recorded = json.loads(result.read_text())
        if METRIC not in recorded.get("test", {}):
            continue
        best = str(result.parent / "train" / "weights" / "best.pt")  # the product's run noise, per window
        spread = {k: run_noise(best, METRIC, k) or 0.0 for k in late}
        runs.append(Run(result.parent, match["config"], int(match["seed"]), recorded["test"][METRIC], spread))
    return runs


def image_stats(run: Run) -> Any:
    """Return the run's per-image matches on its test split: cached, else from the evaluate step's ``measure``."""
    from distill.registry.bootstrap import load_stats, save_stats
    from distill.steps.evaluate import measure

    cache = run.folder / STATS_FILE
    if cache.is_file():
        return load_stats(cache)["model"]
    job = json.loads((run.folder / "result.json").read_text())["job"]
    best = run.folder / "train" / "weights" / "best.pt"
    split = job.get("score_split", "test")
    scored = measure(str(best), Path(job["data"]), split, job["imgsz"], job["batch"], "cpu", 1, keep_stats=True)
    if abs(scored["metrics"][METRIC] - run.test) > 1e-4:
        raise SystemExit(f"{run.folder}: scored {scored['metrics'][METRIC]} now, {run.test} when trained")
    save_stats(cache, {"model": scored["stats"]})
    return scored["stats"]


def resample_scores(runs: list[Run], resamples: int, seed: int) -> None:
    """Score every run on the same bootstrap draws of the test images (the draws ``paired_difference`` makes)."""
    stats = [image_stats(r) for r in runs]
    n = len(stats[0])
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    for run, s in zip(runs, stats, strict=True):
        if len(s) != n:
            raise SystemExit(f"{run.folder}: {len(s)} test images, others {n}")
        cache = run.folder / f"gate-resampled-{resamples}-{seed}.npy"
        if not cache.is_file():
            np.save(cache, np.array([s.score("B", d) for d in draws]))
        run.resampled = np.load(cache)


def lower_bounds(a: Run, b: Run, z: float, level: float, seed_sd: dict[str, float]) -> dict[str, float]:
    """Return each rule's lower bound of ``a − b`` (``a`` the challenger)."""
    diffs = a.resampled - b.resampled
    d = a.test - b.test
    se = float(diffs.std(ddof=1))
    tail = (1 - level) / 2
    run = {f"bootstrap+run{k}": d - z * float(np.sqrt(se**2 + a.late_sd[k] ** 2 + b.late_sd[k] ** 2))
           for k in sorted(a.late_sd)}  # fmt: skip
    shipped = [max(r.late_sd[LATE_EPOCHS], RUN_FLOOR * se) for r in (a, b)]  # distill.registry.gate.judge's terms
    return {
        "point": d,
        "bootstrap": float(np.quantile(diffs, tail)),
        **run,
        "ci (shipped)": d - z * float(np.sqrt(se**2 + shipped[0] ** 2 + shipped[1] ** 2)),
        "bootstrap+seed": d - z * float(np.sqrt(se**2 + seed_sd[a.config] ** 2 + seed_sd[b.config] ** 2)),
    }


def evaluate_rules(runs: list[Run], level: float) -> dict[str, Any]:
    """Promotion rates of every rule: on same-configuration seed pairs (noise) and on real differences."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + level / 2))
    configs = sorted({r.config for r in runs})
    by = {c: {r.seed: r for r in runs if r.config == c} for c in configs}
    seed_sd = {c: statistics.stdev([r.test for r in by[c].values()]) if len(by[c]) > 1 else 0.0 for c in configs}
    rules = tuple(lower_bounds(runs[0], runs[0], z, level, seed_sd))
    noise = {rule: [0, 0] for rule in rules}
    null_se: dict[str, list[float]] = {c: [] for c in configs}
    for c in configs:
        for a, b in itertools.permutations(by[c].values(), 2):  # ordered: a challenges b
            null_se[c].append(float((a.resampled - b.resampled).std(ddof=1)))
            for rule, low in lower_bounds(a, b, z, level, seed_sd).items():
                noise[rule][0] += low > 0
                noise[rule][1] += 1
    real = {rule: {"better_promoted": [0, 0], "worse_promoted": [0, 0]} for rule in rules}
    differences = []
    for c1, c2 in itertools.combinations(configs, 2):
        seeds = sorted(set(by[c1]) & set(by[c2]))
        gain = paired_gain({s: by[c1][s].test for s in seeds}, {s: by[c2][s].test for s in seeds})
        if gain["ci"] is None or gain["ci"][0] <= 0 <= gain["ci"][1]:
            continue  # not a real difference at 95 %
        better, worse = (c1, c2) if gain["mean"] > 0 else (c2, c1)
        found = dict.fromkeys(rules, 0)
        differences.append({"better": better, "worse": worse, "points": round(abs(gain["mean"]) * 100, 2),
                            "seeds": len(seeds), "promoted": found})  # fmt: skip
        for s in seeds:
            up = lower_bounds(by[better][s], by[worse][s], z, level, seed_sd)
            down = lower_bounds(by[worse][s], by[better][s], z, level, seed_sd)
            for rule in rules:
                found[rule] += up[rule] > 0
                real[rule]["better_promoted"][0] += up[rule] > 0
                real[rule]["better_promoted"][1] += 1
                real[rule]["worse_promoted"][0] += down[rule] > 0
                real[rule]["worse_promoted"][1] += 1
    return {"level": level, "z": round(z, 4), "noise_swaps": noise, "real": real, "differences": differences,
            "seed_sd": {c: round(v * 100, 2) for c, v in seed_sd.items()},
            "bootstrap_se": {c: round(statistics.fmean(v) * 100, 2) for c, v in null_se.items() if v},
            "late_sd": {c: {k: round(statistics.fmean(r.late_sd[k] for r in by[c].values()) * 100, 2)
                            for k in runs[0].late_sd} for c in configs}}  # fmt: skip


def table(name: str, result: dict[str, Any]) -> str:
    """Return the rules side by side: noise swaps, real gains found, wrong-way promotions."""

    def rate(pair: list[int]) -> str:
        return f"{pair[0]}/{pair[1]} ({100 * pair[0] / max(pair[1], 1):.0f} %)"

    rows = [
        [rule, rate(swaps), rate(result["real"][rule]["better_promoted"]), rate(result["real"][rule]["worse_promoted"])]
        for rule, swaps in result["noise_swaps"].items()
    ]
    header = ["rule", "seed-only pairs promoted", "better promoted", "worse promoted"]
    return "\n".join([f"{name} (level {result['level']}; {len(result['differences'])} real differences)",
                      *md.table_lines(header, rows)])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Score every run of the named work folders again, compare the rules, print and write the report."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gate", description=__doc__.split("\n\n")[0])
    ap.add_argument("workdirs", nargs="+", type=Path, help="accuracy benchmark work folders (detect)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--late", default="5,10", help="epochs at the end of training for the run-to-run term (a list)")
    ap.add_argument("--seed", type=int, default=0)
    reports.add_report_args(ap)
    args = reports.start(ap, argv)
    settings = {k: v for k, v in vars(args).items() if k in {"resamples", "level", "late", "seed"}}
    out: dict[str, Any] = {"settings": settings | {"workdirs": [str(w) for w in args.workdirs]}, "folders": {},
                           "machine": reports.machine("cpu")}  # fmt: skip
    for workdir in args.workdirs:
        runs = load_runs(workdir, tuple(sorted({LATE_EPOCHS, *(int(k) for k in str(args.late).split(","))})))
        print(f"{workdir}: {len(runs)} runs", file=sys.stderr, flush=True)
        resample_scores(runs, args.resamples, args.seed)
        result = evaluate_rules(runs, args.level)
        result["runs"] = [{"name": r.config, "seed": r.seed, "test": {METRIC: r.test},
                           "late_sd": {k: round(v, 5) for k, v in r.late_sd.items()}} for r in runs]  # fmt: skip
        out["folders"][workdir.name] = result
        print(table(workdir.name, result) + "\n", flush=True)
    reports.publish(args, "gate", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
