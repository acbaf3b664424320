"""The paired bootstrap behind the promotion gate, against answers known in advance.

The statistics are a detector's per-image matches as Ultralytics' validator records them, built here from the real
labels of the shipped BCCD slice: a model that finds every object (confidence 1, every IoU threshold a match) and
copies of it degraded on a known share of images. Scored with Ultralytics' own ``ap_per_class``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.registry.bootstrap import ImageStats, paired_difference

pytestmark = pytest.mark.fast

ANNOTATIONS = Path(__file__).parent / "data" / "bccd-mini" / "BCCD" / "Annotations"
CLASSES = {"RBC": 0, "WBC": 1, "Platelets": 2}


def _targets() -> list[np.ndarray]:
    """Each image's object classes, from the VOC annotations (14 images, three classes)."""
    import xml.etree.ElementTree as ET

    targets = [np.array([float(CLASSES[o.findtext("name").strip()]) for o in ET.parse(f).getroot().iter("object")])
               for f in sorted(ANNOTATIONS.glob("*.xml"))]  # fmt: skip
    assert len(targets) >= 10 and sum(len(t) for t in targets) > 50
    return targets


def _model(targets: list[np.ndarray], missed: set[int] = frozenset(), rng_seed: int = 0) -> ImageStats:
    """Every object found, except on the images in ``missed``: there each detection lands off its object (no match
    at any IoU threshold) — a copy whose boxes were degraded on those images."""
    rng = np.random.default_rng(rng_seed)
    tp = [np.full((len(t), 10), i not in missed) for i, t in enumerate(targets)]
    conf = [rng.uniform(0.5, 1.0, len(t)) for t in targets]
    return ImageStats(tp={"B": tp}, conf=conf, pred_cls=[t.copy() for t in targets], target_cls=targets)


def test_the_same_model_twice_is_no_difference():
    targets = _targets()
    model = _model(targets)
    result = paired_difference(model, model, resamples=200)
    assert result["difference"] == 0.0 and result["low"] == result["high"] == 0.0  # every resample: exactly 0


def test_a_copy_degraded_on_a_known_share_is_worse_with_the_interval_below_zero():
    targets = _targets()
    good = _model(targets)
    bad = _model(targets, missed=set(range(0, len(targets), 4)))  # a quarter of the images
    result = paired_difference(good, bad, resamples=300, level=0.9, seed=1)
    lost = sum(len(targets[i]) for i in range(0, len(targets), 4)) / sum(len(t) for t in targets)
    assert result["high"] < 0 and result["low"] <= result["difference"] <= result["high"]
    assert result["difference"] == pytest.approx(-lost, abs=0.15)  # about the share of objects lost
    assert paired_difference(bad, good, resamples=300, level=0.9, seed=1)["low"] > 0  # and the other way round


def test_the_full_sample_is_ultralytics_number_and_a_rerun_is_identical():
    from ultralytics.utils.metrics import ap_per_class

    targets = _targets()
    model = _model(targets, missed={1, 5})
    whole = ap_per_class(np.concatenate(model.tp["B"]), np.concatenate(model.conf), np.concatenate(model.pred_cls),
                         np.concatenate(targets))[5].mean()  # fmt: skip
    assert model.score("B") == pytest.approx(whole, abs=1e-12)
    other = _model(targets, missed={2})
    first = paired_difference(model, other, resamples=100, seed=7)
    assert first == paired_difference(model, other, resamples=100, seed=7)


def test_models_scored_on_other_images_are_refused():
    targets = _targets()
    with pytest.raises(ValueError, match="not scored on the same images"):
        paired_difference(_model(targets), _model(targets[1:] + targets[:1]), resamples=10)


def test_statistics_survive_a_round_trip_through_a_file(tmp_path):
    from distill.registry.bootstrap import load_stats, save_stats

    targets = _targets()
    targets[3] = np.zeros(0)  # an image without objects, and one without predictions
    model = _model(targets, missed={2})
    model.conf[5], model.pred_cls[5], model.tp["B"][5] = np.zeros(0), np.zeros(0), np.zeros((0, 10), bool)
    perfect = _model(targets)
    save_stats(tmp_path / "stats.npz", {"teacher": model, "distilled": perfect})
    back = load_stats(tmp_path / "stats.npz")
    assert set(back) == {"teacher", "distilled"} and len(back["teacher"]) == len(targets)
    assert back["teacher"].score("B") == model.score("B") < back["distilled"].score("B") == perfect.score("B")
    assert all(np.array_equal(a, b) for a, b in zip(back["teacher"].tp["B"], model.tp["B"], strict=True))
