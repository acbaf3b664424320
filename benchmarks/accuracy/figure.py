"""A picture of an accuracy report: each student's per-seed scores, their mean and its 95% interval (issue 40).

The JSON report holds every number, and the README's tables hold the means; neither shows at a glance how far
the seeds spread, whether a student's interval clears the baseline's, or how far all of them stay below the
teacher. :func:`render` draws ``accuracy-X.json`` as ``accuracy-X.png`` beside it: one column per student in the
report's order, its seeds as points, its mean with the t-interval over seeds as an error bar, the baseline in grey
with its mean as a dotted line, and the teacher's score as a dashed reference line. Segment and pose reports are
drawn on the metric they are scored on (masks', keypoints'), where the runs recorded it.

A report with a ``latency`` section (:mod:`benchmarks.accuracy.latency`) also gets ``accuracy-X-pareto.png``
(:func:`render_pareto`): test score against inference time per image for the teacher, each student row and the
ONNX export, with the Pareto front — the models nothing beats on both — as a step line.

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


#: Size of the Pareto chart: 900 × 560 px.
PARETO_FIGSIZE = (9.0, 5.6)
#: How each kind of model is drawn on the Pareto chart: marker, colour, legend entry.
KINDS = {
    "teacher": ("s", "tab:red", "teacher (one run)"),
    "student": ("o", "tab:blue", "student: mean ± 95% CI over seeds"),
    "baseline": ("o", "0.45", "baseline"),
    "onnx": ("^", "tab:green", "ONNX export of a student (scored)"),
}
#: The legend entry of an ONNX export that was not scored (an architecture's), drawn hollow and left off the front.
UNSCORED = "ONNX export, not scored: at its row's mean"


def pareto_points(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the latency section's timed models as chart points: x in ms per image, y and its error in points.

    A model whose score is not its own (an ONNX export of an architecture, placed at its row's mean) is ``borrowed``;
    one timed on another device than the section's (ONNX Runtime without CUDA) says which in its name.
    """
    section, out = report.get("latency") or {}, []
    for m in section.get("models") or []:
        score = m.get("map") or {}
        if not isinstance(m.get("ms_per_image"), int | float) or not isinstance(score.get("mean"), int | float):
            continue  # a model that failed (its error is in the report) is not drawn
        kind = "baseline" if m.get("kind") == "student" and m.get("name") == "baseline" else m.get("kind", "student")
        elsewhere = m.get("device") and m["device"] != section.get("device")  # an export ONNX Runtime ran on CPU
        out.append({
            "name": m["name"] + (f" [{m['device']}]" if elsewhere else ""), "kind": kind,
            "x": float(m["ms_per_image"]), "y": score["mean"] * SCALE,
            "err": score["ci95"] * SCALE if score.get("ci95") else None, "architecture": m.get("weights") != "trained",
            "borrowed": kind == "onnx" and m.get("scored") is False,
        })  # fmt: skip
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Return, for each (time, score) point, whether no other point is as fast and as good and better in one.

    Examples:
        >>> pareto_front([(1.0, 30.0), (2.0, 40.0), (2.5, 35.0), (3.0, 40.0)])
        [True, True, False, False]
    """

    def dominated(i: int) -> bool:
        (x, y) = points[i]
        return any(a <= x and b >= y and (a < x or b > y) for j, (a, b) in enumerate(points) if j != i)

    return [not dominated(i) for i in range(len(points))]


def spread(values: list[float], gap: float, low: float, high: float) -> list[float]:
    """Return positions for labels wanted at ``values``: at least ``gap`` apart, each run of them centred, in bounds.

    Labels that would overlap join one run, placed where it moves its labels least (the mean of their wishes).

    Examples:
        >>> spread([10.0, 11.0, 30.0], gap=4.0, low=0.0, high=100.0)
        [8.5, 12.5, 30.0]
    """
    order = sorted(range(len(values)), key=values.__getitem__)
    runs: list[list[int]] = []

    def start(run: list[int]) -> float:
        first = statistics.fmean(values[i] - k * gap for k, i in enumerate(run))
        return min(max(first, low), high - (len(run) - 1) * gap)

    for i in order:
        runs.append([i])
        while len(runs) > 1 and start(runs[-1]) < start(runs[-2]) + len(runs[-2]) * gap:
            runs[-2:] = [runs[-2] + runs[-1]]
    out = [0.0] * len(values)
    for run in runs:
        for k, i in enumerate(run):
            out[i] = start(run) + k * gap
    return out


def x_groups(xs: list[float], span: float) -> list[list[int]]:
    """Return the indices of ``xs`` in groups of neighbours (each within ``span`` of the previous): one label column."""
    groups: list[list[int]] = []
    for i in sorted(range(len(xs)), key=xs.__getitem__):
        if groups and xs[i] - xs[groups[-1][-1]] <= span:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def device_words(section: dict[str, Any]) -> str:
    """Describe what the times were measured on: the GPU, or the CPU with the threads each runtime used.

    Examples:
        >>> device_words({"machine": {"cpu": "AMD EPYC", "cores": 2}, "models": [
        ...     {"format": "pt", "threads": 1, "device": "cpu"}, {"format": "onnx", "threads": 0, "device": "cpu"}]})
        'CPU: AMD EPYC, 2 cores; torch 1 thread, ONNX Runtime its default threads'
    """
    machine = section.get("machine") or {}
    if machine.get("gpu"):
        return f"GPU: {machine['gpu']}"
    cores = f", {machine['cores']} cores" if machine.get("cores") else ""
    words = []
    for fmt, runtime in (("pt", "torch"), ("onnx", "ONNX Runtime")):
        used = {m.get("threads") for m in section.get("models") or [] if m.get("format") == fmt and "threads" in m}
        if len(used) == 1:
            (n,) = used
            words.append(f"{runtime} its default threads" if n == 0 else f"{runtime} {n} thread{'s' * (n != 1)}")
    threads = "; " + ", ".join(words) if words else ""
    return f"CPU: {machine.get('cpu') or section.get('device', 'cpu')}{cores}{threads}"


def draw_pareto_points(ax: Any, points: list[dict[str, Any]], front: list[bool]) -> None:
    """Draw every point with its interval, and the Pareto front as a step line (faster to the left, better up).

    ``front`` marks the points on it (:func:`pareto_front` of the points whose score was measured).
    """
    drawn = set()
    for p in points:
        marker, colour, words = KINDS.get(p["kind"], KINDS["student"])
        if p["borrowed"]:
            words = UNSCORED
        label = words if words not in drawn else "_"
        drawn.add(words)
        ax.errorbar(p["x"], p["y"], yerr=p["err"], fmt=marker, ms=7, color=colour, ecolor=colour, elinewidth=1.5,
                    capsize=4, mfc="white" if p["borrowed"] else colour, mew=1.5, label=label,
                    zorder=5 if p["kind"] == "onnx" else 4)  # fmt: skip
    best = sorted((p["x"], p["y"]) for p, on in zip(points, front, strict=True) if on)
    if best:
        xs, ys = [x for x, _ in best], [y for _, y in best]
        ax.step(xs + [xs[-1] * 100], ys + [ys[-1]], where="post", color="0.3", lw=1.2, ls="--", zorder=2,
                label="Pareto front: nothing faster and better")  # fmt: skip


def pareto_labels(fig: Any, ax: Any, points: list[dict[str, Any]], mark: bool) -> int:
    """Label every point by name, a column per group of neighbours, on the side where it clashes least.

    Labels of one group (say the students of one architecture, at one time per image) are spread apart vertically
    with a leader line each; the side is the right unless labels there would cover another group's point or label,
    or leave the axes. Returns how many labels still clash (0 when every one is clear).
    """
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    at = [ax.transData.transform((p["x"], p["y"])) for p in points]
    gap = 13 * fig.dpi / 72  # 9 pt labels, a line apart
    marks = [Bbox.from_bounds(x - 6, y - 6, 12, 12) for x, y in at]
    placed: list[Any] = []
    clashes = 0
    for group in x_groups([x for x, _ in at], span=40):
        ys = spread([at[i][1] for i in group], gap, box.y0 + gap / 2, box.y1 - gap / 2)
        options = []
        for side in (1, -1):
            texts = label_column(ax, points, group, at, ys, side, mark)
            for t in texts:
                t.update_positions(renderer)  # the offsets become display positions (else only at drawing)
            boxes = [Text.get_window_extent(t, renderer) for t in texts]  # the text's, not its leader's
            others = [m for j, m in enumerate(marks) if j not in group] + placed
            bad = sum(any(b.overlaps(o) for o in others) or not box.contains(b.x0, b.y0) or not box.contains(b.x1, b.y1)
                      for b in boxes)  # fmt: skip
            options.append((bad, side, texts, boxes))
        options.sort(key=lambda o: (o[0], -o[1]))
        for _, _, texts, _ in options[1:]:
            for t in texts:
                t.remove()
        clashes += options[0][0]
        placed += options[0][3]
    return clashes


def label_column(ax: Any, points: list[dict[str, Any]], group: list[int], at: list[Any], ys: list[float], side: int,
                 mark: bool) -> list[Any]:  # fmt: skip
    """Write the labels of one group of points in a column beside it (``side`` 1: right, -1: left), with leaders.

    ``at`` holds the points' display positions and ``ys`` the labels' (pixels); a label sits 14 px beyond the
    group's outermost point, its leader line drawn from its point.
    """
    px_pt = 72 / ax.figure.dpi
    edge = max(at[i][0] for i in group) + 14 if side > 0 else min(at[i][0] for i in group) - 14
    texts = []
    for i, y in zip(group, ys, strict=True):
        name = points[i]["name"] + ("*" if mark and points[i]["architecture"] else "")
        texts.append(ax.annotate(
            name, (points[i]["x"], points[i]["y"]), xytext=((edge - at[i][0]) * px_pt, (y - at[i][1]) * px_pt),
            textcoords="offset points", fontsize=9, ha="left" if side > 0 else "right", va="center",
            annotation_clip=False, zorder=5, bbox={"fc": "white", "ec": "none", "pad": 0.3, "alpha": 0.85},
            arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.7, "shrinkA": 0, "shrinkB": 5},
        ))  # fmt: skip
    return texts


def chart_front(points: list[dict[str, Any]]) -> list[bool]:
    """Return which chart points are on the Pareto front; an unscored export's place is no measurement, never on it."""
    on = iter(pareto_front([(p["x"], p["y"]) for p in points if not p["borrowed"]]))
    return [False if p["borrowed"] else next(on) for p in points]


def pareto_figure(report: dict[str, Any], name: str) -> Any:
    """Return the Pareto chart of a report's latency section as a matplotlib Figure (``None`` without one).

    x: inference time per image (Ultralytics' preprocess + inference + postprocess, median, batch 1), y: the score
    (a row's mean over seeds with its 95% interval; the teacher's run; the ONNX export's own), one labelled point per
    model, the front as a step line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    section, points = report.get("latency") or {}, pareto_points(report)
    if not points:
        return None
    architecture = [p["architecture"] for p in points]
    mixed = any(architecture) and not all(architecture)
    fig = Figure(figsize=PARETO_FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    timed = ("* timed as its architecture (random weights: trained weights not on this machine)" if mixed
             else "times: architectures built from their yaml (random weights; trained weights not on this machine)"
             if all(architecture) else "times: the trained weights")  # fmt: skip
    fig.suptitle(f"{name}: accuracy against inference time\n{regime(report)}\n{timed}", fontsize=9.5)
    split, metric = section.get("split") or "test", section.get("metric") or METRIC
    ax.set_ylabel(f"{split} {METRIC_WORDS.get(metric, metric)} (points)")
    ax.set_xlabel(f"inference time per image, ms (median of preprocess + inference + postprocess)\n"
                  f"batch 1, {section.get('imgsz', '?')} px, {device_words(section)}")  # fmt: skip
    ax.grid(alpha=0.3)
    draw_pareto_points(ax, points, chart_front(points))
    fig.legend(fontsize=8, loc="lower center", ncol=3, framealpha=0.9)  # under the axes: never over a point
    low = min(p["y"] - (p["err"] or 0) for p in points)
    high = max(p["y"] + (p["err"] or 0) for p in points)
    ax.set_ylim(low - 0.08 * (high - low + 1), high + 0.08 * (high - low + 1))
    right = max(p["x"] for p in points)
    for widen in (1.15, 1.35, 1.6, 2.0):  # room on the right for the last column of labels
        ax.set_xlim(0, right * widen)
        fig.tight_layout(rect=(0, 0.1, 1, 1))  # the legend's two rows below
        for text in list(ax.texts):
            text.remove()
        if pareto_labels(fig, ax, points, mixed) == 0:
            break
    return fig


def render_pareto(report_path: Path) -> Path | None:
    """Draw a report's latency section as ``<report>-pareto.png`` beside it; ``None`` (no file) when it has none."""
    report_path = Path(report_path)
    fig = pareto_figure(json.loads(report_path.read_text()), report_path.stem)
    if fig is None:
        return None
    png = report_path.with_name(f"{report_path.stem}-pareto.png")
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
            pareto = render_pareto(path)
            if pareto is not None:
                print(pareto)
        except Exception as e:  # one bad report must not stop the others
            failed += 1
            print(f"warning: no figure for {path}: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
