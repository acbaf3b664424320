"""The promotion gate (issue 24): whether a challenger's gain over a reference model is real, from one evaluation.

Two sources of noise sit between a measured gain and a real one, and the gate's interval holds both:

* **the test images** — a few dozen of them; the paired bootstrap (:func:`distill.registry.bootstrap.paired_difference`)
  resamples them and scores both models on each draw: its standard error ``se``;
* **the training run** — retrained with another seed, the same configuration scores up to a few points apart. One
  run cannot show that spread; what it can show is how far its own validation score still moved over its last
  :data:`LATE_EPOCHS` epochs (``run_noise``: their standard deviation, from the ``results.csv`` beside the weights).
  A run whose score still moves that much near its end cannot be told from its retrain by less. On the accuracy
  benchmark's paired seeds this term is at least the configuration's seed standard deviation in all configurations
  but one, while the spread over fewer late epochs mostly falls below it (``benchmarks/README.md``, section
  'Promotion gate'). A run trained to a flat end (learning rate near zero) shows almost no movement, yet its retrain
  still lands elsewhere; and two seeds of one configuration differ by more than the bootstrap's standard error in
  most pairs. So each run's term is never taken below :data:`RUN_FLOOR` × ``se``; a model without a training log
  (weights from elsewhere) gets that floor.

``gate=ci`` passes when the lower bound of ``difference ± z·√(se² + noise_challenger² + noise_reference²)`` (``z``
of the two-sided ``gate_level``) is above zero and at least ``min_gain``; ``gate=point`` when the difference is at
least ``min_gain`` (the rule before the interval).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from ..data import storage
from .bootstrap import ImageStats, paired_difference

#: Epochs at the end of a training log whose validation scores give the run's own noise (Ultralytics' default
#: ``close_mosaic`` phase: the final one).
LATE_EPOCHS = 10
#: Bootstrap resamples of the test images (one ``ap_per_class`` per model per resample).
RESAMPLES = 500
#: The resampling seed: the same evaluation gives the same interval.
SEED = 0
#: The smallest run noise of a model, in units of the comparison's bootstrap standard error (see above).
RUN_FLOOR = 1.0


def run_noise(weights: str, metric: str, epochs: int = LATE_EPOCHS) -> float | None:
    """Return the spread of ``metric`` over the last ``epochs`` epochs of the run that made ``weights``.

    The run's ``results.csv`` is beside the weights (a step's outputs on S3) or one folder up (Ultralytics' own
    ``train/weights/best.pt``); ``None`` when there is none or it lacks the metric. Epochs whose value is not a finite
    number (``nan`` in a log) are left out: a spread with them is ``nan``, which would fail every comparison.
    """
    text = _training_log(weights)
    if text is None:
        return None
    rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
    try:
        values = [float(r[metric]) for r in rows[-epochs:]]
    except (KeyError, TypeError, ValueError):
        return None
    values = [v for v in values if math.isfinite(v)]
    return statistics.stdev(values) if len(values) > 1 else None


def _training_log(weights: str) -> str | None:
    if storage.is_s3(weights):
        uri = weights.rsplit("/", 1)[0] + "/results.csv"
        return storage.read_bytes(uri).decode() if storage.head(uri) is not None else None
    for folder in (Path(weights).parent, Path(weights).parent.parent):
        if (folder / "results.csv").is_file():
            return (folder / "results.csv").read_text()
    return None


def judge(
    challenger: ImageStats,
    reference: ImageStats,
    suffix: str,
    noise: tuple[float | None, float | None],
    settings: dict[str, Any],
    against: str,
) -> dict[str, Any]:
    """Judge ``challenger − reference`` on the primary metric ``suffix``; return the interval and the decision.

    Args:
        challenger: The challenger's per-image statistics.
        reference: The reference's (the baseline or the champion), on the same images.
        suffix: The primary metric (``B`` boxes, ``M`` masks, ``P`` keypoints).
        noise: ``run_noise`` of the challenger and the reference (``None``: no training log).
        settings: The gate's settings, as :func:`distill.settings.coerce_gate` returns them.
        against: What the reference is, for the sentence (``the baseline``, ``champion v3``).

    Returns:
        (dict): ``rule``, ``level``, ``min_gain``, ``difference``, ``low``/``high``, the bootstrap's ``se`` and
        percentile interval, ``run_noise`` (from the logs), ``run_terms`` (floored, as used), ``images``,
        ``resamples``, ``passes`` and ``reason`` (one sentence).
    """
    from scipy.stats import norm

    level = settings["gate_level"]
    boot = paired_difference(reference, challenger, suffix, RESAMPLES, level, SEED)
    d, se = boot["difference"], boot["se"]
    runs = [max(n if n is not None and math.isfinite(n) else 0.0, RUN_FLOOR * se) for n in noise]  # nan: no log
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(se**2 + sum(n**2 for n in runs))
    low, high = d - half, d + half
    if settings["gate"] == "ci":
        passes = low > 0 and low >= settings["min_gain"]
        rule = f"lower bound {low * 100:+.2f} of the {level:.0%} interval {'≥' if passes else '<'} min_gain"
    else:  # today's rule for distilled over baseline (the registry's, over the champion, also wants d > 0)
        passes = d >= settings["min_gain"]
        rule = f"difference {d * 100:+.2f} {'≥' if passes else '<'} min_gain"
    missing = "" if None not in noise else "; no training log for one of the two: its run noise is the floor"
    reason = (f"{d * 100:+.2f} points over {against} ({level:.0%} interval {low * 100:+.2f} … {high * 100:+.2f}); "
              f"gate {settings['gate']}: {rule} {settings['min_gain'] * 100:.2f}{missing}")  # fmt: skip
    return {
        "rule": settings["gate"], "level": level, "min_gain": settings["min_gain"], "against": against,
        "difference": round(d, 6), "low": round(low, 6), "high": round(high, 6), "se": round(se, 6),
        "bootstrap_low": round(boot["low"], 6), "bootstrap_high": round(boot["high"], 6),
        "run_noise": [None if n is None else round(n, 6) for n in noise], "run_terms": [round(n, 6) for n in runs],
        "images": boot["images"],
        "resamples": boot["resamples"], "passes": passes, "reason": reason,
    }  # fmt: skip
