"""A picture of an accuracy report: each student's per-seed scores, their mean and its 95% interval (issue 40).

The JSON report holds every number, and the README's tables hold the means; neither shows at a glance how far
the seeds spread, whether a student's interval clears the baseline's, or how far all of them stay below the
teacher. :func:`render` draws ``accuracy-X.json`` as ``accuracy-X.png`` beside it: one column per student in the
report's order, its seeds as points, its mean with the t-interval over seeds as an error bar, the baseline in grey
with its mean as a dotted line, and the teacher's score as a dashed reference line. Segment and pose reports are
drawn on the metric they are scored on (masks', keypoints'), where the runs recorded it.

The benchmark's CLI renders each report it writes; older reports are drawn with::

    python -m benchmarks.accuracy.figure benchmarks/results/accuracy-cpu-f25-2026-11-30.json
    python -m benchmarks.accuracy.figure --all    # every benchmarks/results/accuracy-*.json

Older reports lack some fields (no ``task``, no ``students`` summary, a rescored report with ``teacher_test``); a
row without numbers is left out, and a report without any still gets a picture that says so.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.accuracy.metrics import METRIC, TASK_METRIC
from benchmarks.report import RESULTS

#: Size of the picture: 900 × 450 px.
FIGSIZE, DPI = (9.0, 4.5), 100
SCALE = 100.0  # mAP 0.305 is drawn as 30.5 points
#: How the metric reads on the axis.
METRIC_WORDS = {
    METRIC: "mAP50-95",
    TASK_METRIC["segment"]: "mask mAP50-95(M)",
    TASK_METRIC["pose"]: "keypoint mAP50-95(P)",
}


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None]:
    """Return the mean of ``values`` and the half-width of its t-interval (``None`` with fewer than two values).

    The half-width is ``t(0.5 + level/2, n − 1) · sd / √n``, the interval :mod:`benchmarks.paired` gives the gains.

    Examples:
        >>> mean, half = mean_ci([1.0, 2.0, 3.0])
        >>> mean, round(half, 3)
        (2.0, 2.484)
    """
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    t = float(stats.t.ppf(0.5 + level / 2, len(values) - 1))
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def report_metric(report: dict[str, Any]) -> str:
    """Return the metric a report scores: its task's own where any run recorded it, else the boxes'."""
    metric = TASK_METRIC.get(report.get("task") or "detect", METRIC)
    runs = report.get("runs") or []
    return metric if any(metric in (r.get("test") or {}) for r in runs) else METRIC


def rows(report: dict[str, Any], metric: str) -> list[tuple[str, list[float]]]:
    """Return each student's scores on ``metric`` by seed, in the report's order; students without any are left out.

    The scores come from the runs (``runs[i]["test"]``); a student no run records falls back to its summary's
    ``map50_95`` when the metric is the boxes'. A report without a ``students`` list is ordered by its runs.
    """
    by_name: dict[str, dict[Any, float]] = {}
    for r in report.get("runs") or []:
        value = (r.get("test") or {}).get(metric)
        if r.get("name") is not None and isinstance(value, int | float):
            by_name.setdefault(r["name"], {})[r.get("seed")] = float(value)
    names = [s.get("name") for s in report.get("students") or [] if s.get("name") is not None]
    names += [n for n in by_name if n not in names]
    summaries = {s.get("name"): s for s in report.get("students") or []}
    out = []
    for name in names:
        scores = list(by_name.get(name, {}).values())
        if not scores and metric == METRIC:
            scores = [float(v) for v in summaries.get(name, {}).get("map50_95") or [] if isinstance(v, int | float)]
        if scores:
            out.append((name, scores))
    return out


def teacher_score(report: dict[str, Any], metric: str) -> float | None:
    """Return the teacher's test score on ``metric`` (a rescored report keeps it as ``teacher_test``)."""
    test = (report.get("teacher") or {}).get("test") or report.get("teacher_test") or {}
    value = test.get(metric)
    return float(value) if isinstance(value, int | float) else None


def regime(report: dict[str, Any]) -> str:
    """Describe the regime in words: dataset, labelled fraction, epochs, image size, seeds, teacher."""
    settings = report.get("settings") or {}
    dataset = (report.get("dataset") or {}).get("name")
    parts = [dataset] if dataset else []
    if settings:
        fraction = settings.get("label_fraction")
        parts.append("all labelled" if not fraction else f"{fraction:.0%} labelled")
        if settings.get("epochs"):
            parts.append(f"{settings['epochs']} epochs")
        if settings.get("imgsz"):
            parts.append(f"{settings['imgsz']} px")
        seeds = settings.get("seeds") or []
        if seeds:
            parts.append(f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds")
        if settings.get("teacher"):
            epochs = f", {settings['teacher_epochs']} ep" if settings.get("teacher_epochs") else ""
            parts.append(f"teacher {Path(settings['teacher']).stem}{epochs}")
    if report.get("from"):
        images = f" on {report['test_images']} test images" if report.get("test_images") else ""
        parts.append(f"rescored{images} from {Path(report['from']).stem}")
    return ", ".join(str(p) for p in parts)


def render(report_path: Path) -> Path:
    """Draw the report at ``report_path`` as a PNG beside it (same name, ``.png``) and return the PNG's path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    report_path = Path(report_path)
    report = json.loads(report_path.read_text())
    metric = report_metric(report)
    data = rows(report, metric)
    split = (report.get("dataset") or {}).get("score_split") or "test"

    fig = Figure(figsize=FIGSIZE, dpi=DPI)  # not pyplot's: no display, no global figure to close
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.suptitle(f"{report_path.stem}\n{regime(report)}", fontsize=10)  # over the figure: the legend narrows the axes
    ax.set_ylabel(f"{split} {METRIC_WORDS.get(metric, metric)} (points)")
    ax.grid(axis="y", alpha=0.3)
    if not data:
        ax.text(0.5, 0.5, "no per-seed scores in this report", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])

    # The legend's markers are a student's (blue); the baseline's grey ones read by the baseline line's label.
    legend_row = next((name for name, _ in data if name != "baseline"), data[0][0] if data else None)
    one_seed = all(len(scores) < 2 for _, scores in data)
    mean_label = "mean (one seed: no interval)" if one_seed else "mean ± 95% CI (t over seeds)"
    for x, (name, scores) in enumerate(data):
        points = [s * SCALE for s in scores]
        mean, half = mean_ci(points)
        colour = "0.45" if name == "baseline" else "tab:blue"
        offsets = [0.0] if len(points) == 1 else [-0.2 + 0.4 * i / (len(points) - 1) for i in range(len(points))]
        ax.scatter([x - 0.12 + 0.3 * o for o in offsets], points, s=18, facecolors="none", edgecolors=colour,
                   linewidths=1, label="seed" if name == legend_row else "_", zorder=3)  # fmt: skip
        ax.errorbar(x + 0.12, mean, yerr=half, fmt="D", ms=6, color=colour, ecolor=colour, elinewidth=2, capsize=5,
                    label=mean_label if name == legend_row else "_", zorder=4)  # fmt: skip
        ax.annotate(f"{mean:.1f}", (x + 0.12, mean), xytext=(7, 0), textcoords="offset points", va="center",
                    fontsize=8, color=colour, bbox={"fc": "white", "ec": "none", "pad": 0.5, "alpha": 0.8})  # fmt: skip
    baseline = next((scores for name, scores in data if name == "baseline"), None)
    if baseline:
        ax.axhline(mean_ci([s * SCALE for s in baseline])[0], color="0.45", ls=":", lw=1, label="baseline mean")
    teacher = teacher_score(report, metric)
    if teacher is not None:
        ax.axhline(teacher * SCALE, color="tab:red", ls="--", lw=1.2, label=f"teacher ({teacher * SCALE:.1f})")

    if data:
        names = [name for name, _ in data]
        counts = {len(scores) for _, scores in data}
        if len(counts) > 1:  # seeds differ by row: say how many each has
            names = [f"{name} (n={len(scores)})" for name, scores in data]
        long = sum(len(n) for n in names) > 90 or max(len(n) for n in names) > 110 / len(names)
        ax.set_xticks(range(len(names)), names, rotation=25 if long else 0, ha="right" if long else "center")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)  # never over a point
    fig.tight_layout()
    png = report_path.with_suffix(".png")
    fig.savefig(png)
    return png


def main(argv: list[str] | None = None) -> int:
    """Render the reports named on the command line (or, with ``--all``, every committed accuracy report)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.accuracy.figure", description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="*", type=Path, help="accuracy report JSON files")
    ap.add_argument("--all", action="store_true", help=f"render every {RESULTS}/accuracy-*.json")
    args = ap.parse_args(argv)
    paths = list(args.reports) + (sorted(RESULTS.glob("accuracy-*.json")) if args.all else [])
    if not paths:
        ap.error("name a report, or --all")
    failed = 0
    for path in paths:
        try:
            print(render(path))
        except Exception as e:  # one bad report must not stop the others
            failed += 1
            print(f"warning: no figure for {path}: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
