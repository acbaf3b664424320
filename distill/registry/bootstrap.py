"""Paired bootstrap of a metric difference between two models scored on the same images (the promotion gate's evidence).

One evaluation gives one mAP50-95 per model, and on a few dozen test images it moves by a point or two from seed to
seed. To tell a real gain from that noise without training again, the test images are resampled: every bootstrap
sample draws the images with replacement, both models are scored on *the same* draw, and the spread of the
difference over many draws is the uncertainty of the comparison (paired: the image-to-image variation that both
models share cancels).

The per-image statistics come from Ultralytics' own validator — the matches it computes for its metric (``tp`` at the
ten IoU thresholds, ``conf``, ``pred_cls``, ``target_cls`` per image; ``tp_m`` for masks, ``tp_p`` for keypoints),
captured by a callback after its last batch, before it aggregates them — and every resample is scored with its own
``ap_per_class``, so the full sample gives exactly the number ``model.val()`` reports.

What it measures is the *test set's* sampling noise, not training noise: two BCCD students that differ by their seed
alone (160 px, 30 epochs, 72 test images) differ by −2.1 points with a 90 % interval of −3.1 … −1.1 — on these images
one really is worse, though neither configuration is. A gate on this interval alone would still swap champions on
seed noise; it needs a margin for the run-to-run spread as well (issue 24).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: The validator's per-image match array behind each metric suffix: boxes, masks, keypoints.
TP_KEYS = {"B": "tp", "M": "tp_m", "P": "tp_p"}
STAT_KEYS = ("conf", "pred_cls", "target_cls")


@dataclass
class ImageStats:
    """One model's per-image matching statistics on a split, in the dataloader's (fixed) image order."""

    tp: dict[str, list[np.ndarray]]  # suffix (B/M/P) -> per image (n_pred, 10) bool
    conf: list[np.ndarray]
    pred_cls: list[np.ndarray]
    target_cls: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.target_cls)

    def same_images(self, other: ImageStats) -> bool:
        """Whether ``other`` was scored on the same images in the same order (the same targets, image by image)."""
        return len(other) == len(self) and all(
            np.array_equal(a, b) for a, b in zip(self.target_cls, other.target_cls, strict=True)
        )

    def score(self, suffix: str = "B", images: np.ndarray | None = None) -> float:
        """mAP50-95 of ``suffix`` over ``images`` (indices, repeats allowed; None: every image), by ``ap_per_class``."""
        ap, _ = self._ap(suffix, images)
        return float(ap.mean()) if len(ap) else 0.0

    def per_class(self, suffix: str = "B") -> dict[int, float]:
        """AP50-95 of ``suffix`` per class present in the targets (what Ultralytics' per-class table prints)."""
        ap, classes = self._ap(suffix, None)
        return {int(c): float(a) for c, a in zip(classes, ap.mean(1), strict=True)}

    def _ap(self, suffix: str, images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``ap_per_class``'s AP (classes × 10 IoU thresholds) and its classes, over ``images``."""
        from ultralytics.utils.metrics import ap_per_class

        take = range(len(self)) if images is None else images
        target = np.concatenate([self.target_cls[i] for i in take])
        if not target.size:
            return np.zeros((0, 10)), np.zeros(0, dtype=int)
        out = ap_per_class(
            np.concatenate([self.tp[suffix][i] for i in take]),
            np.concatenate([self.conf[i] for i in take]),
            np.concatenate([self.pred_cls[i] for i in take]),
            target,
        )
        return out[5], out[6]

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Return the statistics as flat arrays (every per-image list concatenated, plus each image's count)."""
        out = {f"{prefix}counts_pred": np.array([len(c) for c in self.conf], dtype=np.int64),
               f"{prefix}counts_target": np.array([len(t) for t in self.target_cls], dtype=np.int64)}  # fmt: skip
        for name in STAT_KEYS:
            out[prefix + name] = _joined(getattr(self, name))
        for suffix, tp in self.tp.items():
            out[f"{prefix}tp_{suffix}"] = _joined(tp, width=10).astype(bool)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str = "") -> ImageStats:
        """Rebuild statistics written by :meth:`arrays` (from a mapping such as an opened ``.npz``)."""
        pred = np.cumsum(arrays[f"{prefix}counts_pred"])[:-1]
        target = np.cumsum(arrays[f"{prefix}counts_target"])[:-1]
        tp = {key[len(prefix) + 3 :]: np.split(arrays[key], pred) for key in arrays
              if key.startswith(f"{prefix}tp_")}  # fmt: skip
        return cls(tp=tp, conf=np.split(arrays[prefix + "conf"], pred),
                   pred_cls=np.split(arrays[prefix + "pred_cls"], pred),
                   target_cls=np.split(arrays[prefix + "target_cls"], target))  # fmt: skip


def _joined(parts: list[np.ndarray], width: int | None = None) -> np.ndarray:
    """Concatenate per-image arrays (an empty list gives an empty array of the right shape)."""
    if parts:
        return np.concatenate([np.asarray(p) for p in parts])
    return np.zeros((0, width) if width else (0,))


def save_stats(path: Path, stats: dict[str, ImageStats]) -> None:
    """Write several models' statistics (``{role: stats}``) into one compressed ``.npz``."""
    arrays = {k: v for role, s in stats.items() for k, v in s.arrays(f"{role}/").items()}
    with open(path, "wb") as f:  # np.savez_compressed would append ".npz" to a str path without it
        np.savez_compressed(f, **arrays)


def load_stats(source: Path | BinaryIO) -> dict[str, ImageStats]:
    """Read what :func:`save_stats` wrote (a file, or its bytes as a binary stream): ``{role: stats}``."""
    with np.load(source) as npz:
        arrays = {k: npz[k] for k in npz.files}
    roles = sorted({k.split("/", 1)[0] for k in arrays})
    return {role: ImageStats.from_arrays(arrays, f"{role}/") for role in roles}


def capture(model: Any) -> dict[str, Any]:
    """Register a callback on an Ultralytics ``YOLO`` model that keeps its next validation's per-image statistics.

    Returns a holder whose ``"stats"`` is an :class:`ImageStats` once ``model.val(...)`` has run. The callback runs
    after every batch (the validator clears its lists when it aggregates them, after the last batch) and keeps
    references to the per-image arrays, not copies.
    """
    holder: dict[str, Any] = {}

    def keep(validator: Any) -> None:
        stats = validator.metrics.stats
        holder["stats"] = ImageStats(
            tp={s: list(stats[k]) for s, k in TP_KEYS.items() if k in stats},
            **{k: list(stats[k]) for k in STAT_KEYS},
        )

    model.add_callback("on_val_batch_end", keep)
    return holder


def paired_difference(
    base: ImageStats,
    other: ImageStats,
    suffix: str = "B",
    resamples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Bootstrap ``other − base`` of mAP50-95 (as a fraction, 0–1) over the images both were scored on.

    Args:
        base: The reference model's statistics (the baseline or the champion).
        other: The challenger's, on the same images in the same order.
        suffix: Which metric: ``B`` boxes, ``M`` masks, ``P`` keypoints.
        resamples: Bootstrap samples.
        level: Two-sided confidence level of the percentile interval.
        seed: Seed of the resampling: the same inputs give the same interval.

    Returns:
        (dict): ``difference`` (on every image), ``mean``, ``se`` (standard deviation) and ``low``/``high`` (the
        percentile interval) of the resampled differences, with ``level``, ``resamples``, ``seed`` and ``images``.
    """
    n = len(base)
    if not base.same_images(other):
        raise ValueError("the two models were not scored on the same images (targets differ image by image)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for r in range(resamples):
        images = rng.integers(0, n, n)
        diffs[r] = other.score(suffix, images) - base.score(suffix, images)
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return {
        "difference": other.score(suffix) - base.score(suffix),
        "mean": float(diffs.mean()),
        "se": float(diffs.std(ddof=1)) if resamples > 1 else 0.0,
        "low": float(low),
        "high": float(high),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "images": n,
    }
