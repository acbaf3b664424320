"""Paired-seed comparison: whether a student's gain over the baseline is larger than seed noise.

For every seed the baseline and each KD student start from the same seed (same initial weights, same augmentation
stream), so the per-seed difference cancels most of what makes one CPU run swing by several points. The statistics
are the usual paired ones: the mean of the per-seed gains, its 95% confidence interval from the t-distribution with
n − 1 degrees of freedom (``mean ± t · sd / √n``), and the number of seeds the student won.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy import stats

from distill import markdown as md


def paired_gain(student: dict[int, float], baseline: dict[int, float], level: float = 0.95) -> dict[str, Any]:
    """Compare two students seed by seed.

    Args:
        student: Seed → score of the student (e.g. test mAP50-95).
        baseline: Seed → score of the baseline on the same seeds.
        level: Confidence level of the interval.

    Returns:
        (dict): ``seeds`` (those both have), ``gains`` (per seed), ``mean``, ``sd`` (sample), ``ci`` (low, high;
        ``None`` with fewer than two seeds), ``wins`` (seeds with a gain > 0) and ``n``.

    Examples:
        >>> r = paired_gain({0: 0.30, 1: 0.32, 2: 0.31}, {0: 0.29, 1: 0.30, 2: 0.30})
        >>> r["gains"], r["mean"], r["wins"]
        ([0.01, 0.02, 0.01], 0.0133, 3)
    """
    seeds = sorted(set(student) & set(baseline))
    gains = [round(student[s] - baseline[s], 6) for s in seeds]
    n = len(gains)
    if n == 0:
        return {"seeds": [], "gains": [], "n": 0, "mean": None, "sd": None, "ci": None, "wins": 0}
    mean = statistics.fmean(gains)
    sd = statistics.stdev(gains) if n > 1 else None
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
        ci = [round(mean - half, 4), round(mean + half, 4)]
    return {
        "seeds": seeds,
        "gains": [round(g, 4) for g in gains],
        "n": n,
        "mean": round(mean, 4),
        "sd": None if sd is None else round(sd, 4),
        "ci": ci,
        "wins": sum(g > 0 for g in gains),
    }


def by_seed(runs: list[dict[str, Any]], name: str, metric: str) -> dict[int, float]:
    """Seed → ``test[metric]`` of the runs of student ``name`` (the report's ``runs`` list)."""
    return {r["seed"]: r["test"][metric] for r in runs if r["name"] == name and metric in r["test"]}


def paired_table(
    runs: list[dict[str, Any]], students: list[str], metric: str, baseline: str = "baseline"
) -> dict[str, dict[str, Any]]:
    """Return :func:`paired_gain` of every student but the baseline against the baseline, on ``metric``."""
    base = by_seed(runs, baseline, metric)
    return {s: paired_gain(by_seed(runs, s, metric), base) for s in students if s != baseline}


def markdown(
    runs: list[dict[str, Any]],
    students: list[str],
    metric: str,
    baseline: str = "baseline",
    default: str | None = None,
    scale: float = 100.0,
) -> str:
    """Return the paired table as markdown: per-seed scores, mean paired gain, 95% CI and wins, best mean first.

    Scores and gains are shown in points (``scale`` 100: mAP 0.305 → 30.5).
    """
    seeds = sorted({r["seed"] for r in runs if r["name"] in students})
    table = paired_table(runs, students, metric, baseline)

    def cells(name: str) -> list[str]:
        scores = by_seed(runs, name, metric)
        return [f"{scores[s] * scale:.1f}" if s in scores else "" for s in seeds]

    rows = [[baseline, *cells(baseline), "", "", ""]]
    order = sorted(table, key=lambda s: -(table[s]["mean"] if table[s]["mean"] is not None else -math.inf))
    for name in order:
        p = table[name]
        label = f"**{name}** (default)" if name == default else name
        if p["n"] == 0:
            rows.append([label, *cells(name), "", "", ""])
            continue
        ci = "" if p["ci"] is None else f"{p['ci'][0] * scale:+.1f} … {p['ci'][1] * scale:+.1f}"
        rows.append([label, *cells(name), f"{p['mean'] * scale:+.2f}", ci, f"{p['wins']}/{p['n']}"])
    return md.table(["student", *(f"seed {s}" for s in seeds), "mean gain", "95% CI", "wins"], rows)


def curve_gains(runs: list[dict[str, Any]], students: list[str], baseline: str = "baseline") -> dict[str, Any]:
    """Mean paired gain over the baseline after every epoch, from the runs' val curves (``val_curve``).

    Only seeds where the student and the baseline both have a curve of the same length count. The final score says
    whether a student ends better; this says when it was ahead — a student that leads mid-training and is caught up
    by the end learns faster from the teacher but does not end higher.

    Returns:
        (dict): Student → ``seeds`` used and ``mean`` (one mean gain per epoch); students without a pair are left out.

    Examples:
        >>> runs = [{"name": "baseline", "seed": 0, "val_curve": [0.1, 0.3]},
        ...         {"name": "kd", "seed": 0, "val_curve": [0.2, 0.3]}]
        >>> curve_gains(runs, ["baseline", "kd"])
        {'kd': {'seeds': [0], 'mean': [0.1, 0.0]}}
    """
    curves = {(r["name"], r["seed"]): r.get("val_curve") for r in runs}
    out: dict[str, Any] = {}
    for name in students:
        if name == baseline:
            continue
        pairs = {
            seed: (curve, curves.get((baseline, seed)))
            for (n, seed), curve in curves.items()
            if n == name and curve and curves.get((baseline, seed)) and len(curve) == len(curves[(baseline, seed)])
        }
        if pairs:
            seeds = sorted(pairs)
            epochs = len(pairs[seeds[0]][0])
            if all(len(pairs[s][0]) == epochs for s in seeds):
                mean = [statistics.fmean(pairs[s][0][e] - pairs[s][1][e] for s in seeds) for e in range(epochs)]
                out[name] = {"seeds": seeds, "mean": [round(m, 5) for m in mean]}
    return out


def curve_markdown(gains: dict[str, Any], every: int = 5, scale: float = 100.0) -> str:
    """Markdown of :func:`curve_gains`: mean paired val gain in points at every ``every``-th epoch and the last."""
    if not gains:
        return ""
    epochs = max(len(g["mean"]) for g in gains.values())
    shown = sorted({*range(every, epochs + 1, every), epochs})
    rows = [
        [
            name,
            str(len(g["seeds"])),
            *(f"{g['mean'][e - 1] * scale:+.1f}" if e <= len(g["mean"]) else "" for e in shown),
        ]
        for name, g in gains.items()
    ]
    return md.table(["student", "seeds", *(f"epoch {e}" for e in shown)], rows)


def span_gains(
    runs: list[dict[str, Any]], students: list[str], first: int, last: int, baseline: str = "baseline"
) -> dict[str, dict[str, Any]]:
    """:func:`paired_gain` of each student's mean val score over epochs ``first``..``last`` (1-based, inclusive).

    One number per seed and phase of training (say, the mosaic epochs after warm-up, then the mosaic-closed ones),
    so whether a student was ahead in a phase gets a confidence interval, not a reading of one noisy epoch.

    Examples:
        >>> runs = [{"name": "baseline", "seed": s, "val_curve": [0.1, 0.2, 0.3]} for s in (0, 1)]
        >>> runs += [{"name": "kd", "seed": s, "val_curve": [0.1, 0.25 + s / 100, 0.3]} for s in (0, 1)]
        >>> g = span_gains(runs, ["baseline", "kd"], 2, 2)["kd"]
        >>> g["gains"], g["wins"]
        ([0.05, 0.06], 2)
    """

    def means(name: str) -> dict[int, float]:
        return {
            r["seed"]: statistics.fmean(r["val_curve"][first - 1 : last])
            for r in runs
            if r["name"] == name and r.get("val_curve") and len(r["val_curve"]) >= last
        }

    base = means(baseline)
    return {s: paired_gain(means(s), base) for s in students if s != baseline and means(s)}
