"""The evaluate step's pictures: per-class AP, learning curves with the KD phases, and the gate's interval.

Each function draws one PNG from what the evaluation already holds (its report, the training runs' ``results.csv``
and ``distill.json``), for the step's S3 folder, its MLflow run and the registered version's model card. They take
plain data, so a test or a notebook can draw them from a ``metrics.json`` as well.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

#: The three models, in the order and colours every chart uses.
COLOURS = {"teacher": "#7f7f7f", "baseline": "#1f77b4", "distilled": "#d62728"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_class_chart(rows: list[dict[str, Any]], metric: str, path: Path, split: str = "test") -> Path:
    """Draw each class's AP for teacher, baseline and distilled as grouped horizontal bars (largest gain on top)."""
    plt = _pyplot()
    roles = [r for r in COLOURS if rows and r in rows[0]]
    names = [str(r["class"]) for r in rows]
    height = 0.8 / max(len(roles), 1)
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.42 * len(rows) * max(len(roles), 1) / 2))
    for i, role in enumerate(roles):
        ys = [k + (len(roles) - 1 - i) * height for k in range(len(rows))]
        ax.barh(ys, [100 * r[role] for r in rows], height, label=role, color=COLOURS[role])
    ax.set_yticks([k + height * (len(roles) - 1) / 2 for k in range(len(rows))], names)
    ax.invert_yaxis()  # the first row (largest gain) on top
    label = metric.removeprefix("metrics/").replace("mAP", "AP")
    ax.set_xlabel(f"{label} (points, {split} images)")
    ax.set_title(f"Per-class {label}: distilled − baseline, largest gain first")
    if rows:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars, never on them
    else:
        ax.text(0.5, 0.5, "no per-class figures in this evaluation", ha="center", transform=ax.transAxes)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def read_curve(results_csv: str, metric: str, kd_columns: list[str] | None = None) -> dict[str, list[float]]:
    """Return ``epoch``, the validation ``metric`` and (given ``kd_columns``) the summed KD loss from a results.csv."""
    rows = list(csv.DictReader(io.StringIO(results_csv)))
    rows = [{k.strip(): v for k, v in row.items() if k} for row in rows]
    out = {"epoch": [float(r["epoch"]) for r in rows], "metric": [float(r.get(metric) or 0.0) for r in rows]}
    columns = [f"train/{c}" for c in kd_columns or [] if rows and f"train/{c}" in rows[0]]
    if columns:
        out["kd"] = [sum(float(r[c] or 0.0) for c in columns) for r in rows]
    return out


def learning_curves_chart(curves: dict[str, dict[str, list[float]]], metric: str, path: Path) -> Path:
    """Draw baseline and distilled validation ``metric`` per epoch on one plot, the epochs KD was on shaded.

    ``curves`` maps a role to :func:`read_curve`'s result; the distilled run's ``kd`` (its summed KD loss per epoch)
    marks the KD phase: shaded where it is above zero, with the epochs after it (``distill_off_epochs``) left clear.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for role, curve in curves.items():
        ax.plot(curve["epoch"], [100 * v for v in curve["metric"]], label=role, color=COLOURS.get(role), lw=1.8)
    if not curves:
        ax.text(0.5, 0.5, "no training curves: no results.csv beside the models' weights", ha="center",
                transform=ax.transAxes)  # fmt: skip
    kd = curves.get("distilled", {}).get("kd")
    if kd is not None:
        on = [e for e, v in zip(curves["distilled"]["epoch"], kd, strict=True) if v > 0]
        if on:
            ax.axvspan(min(on) - 0.5, max(on) + 0.5, color=COLOURS["distilled"], alpha=0.08, label="KD terms on")
        phase = "KD terms on in the shaded epochs" if on else "no KD term (labels and pseudo-labels only)"
    else:
        phase = "no KD term (labels and pseudo-labels only)"
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric.removeprefix('metrics/')} (points, validation)")
    ax.set_title(f"Learning curves — distilled: {phase}", fontsize=10)
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def gate_chart(gate: dict[str, Any], path: Path, split: str = "test") -> Path:
    """Draw the gain of distilled over baseline with the gate's interval against its threshold (``min_gain``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 2.2))
    d, low, high, threshold = (100 * gate[k] for k in ("difference", "low", "high", "min_gain"))
    colour = "#2ca02c" if gate["passes"] else "#d62728"
    ax.errorbar([d], [0], xerr=[[d - low], [high - d]], fmt="o", color=colour, capsize=8, lw=2,
                label=f"gain, {round(100 * gate['level'])} % interval")  # fmt: skip
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"min_gain {threshold:+.2f}")
    ax.axvline(0, color="#999999", lw=0.8)
    ax.set_yticks([])
    ax.set_xlabel(f"distilled − baseline (points of the primary metric, {split} images)")
    verdict = "passes" if gate["passes"] else "does not pass"
    ax.set_title(f"Promotion gate ({gate['rule']}): {verdict} — gain {d:+.2f}, interval {low:+.2f} … {high:+.2f}, "
                 f"min_gain {threshold:+.2f}", fontsize=10)  # fmt: skip
    span = max(abs(low), abs(high), abs(threshold), 0.5) * 1.3
    ax.set_xlim(-span, span)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
