"""The promotion gate (issue 24) against the real stack: intervals from one evaluation, decisions in the registry.

Real training on a synthetic detection set (64 px; 32 train / 16 val / 48 test images): five epochs learn nothing
measurable, a hundred learn the shapes to a flat end (0.11–0.13 mAP50-95) — a real gain — and a hundred again with
another seed is the scheduled retraining where nothing got better. Every model goes through the evaluate step and
the register step as a pipeline run would. The regime was measured before it was chosen, with five seeds on this
machine: the seed-only pairs differ by up to 2.3 points and the gate kept every one of the 20 ordered pairs (the
closest lower bound −2.2); it promoted each of the five long runs over the short one (the lowest lower bound +5.6).
"""

from __future__ import annotations

import json

import pytest
from conftest import cli, one_error_line

from distill.data import storage
from distill.data.synthetic import CLASSES
from distill.registry.bootstrap import load_stats
from distill.steps import tracking

IMGSZ = 64
STEP = {"imgsz": IMGSZ, "batch": 8, "device": "cpu", "plots": False, "workers": 0}


@pytest.fixture(scope="module")
def weekly(stack_env, tmp_path_factory) -> dict[str, str]:
    """Dataset URI and the weights of three weekly runs: a short one, a long one, the long one with another seed."""
    from distill.data.synthetic import generate
    from distill.steps import training
    from distill.steps.prepare_data import prepare_data

    folder = tmp_path_factory.mktemp("gate-data")
    generate(folder, "detect", images=32, val=16, test=48, size=IMGSZ, seed=0)
    data = prepare_data(str(folder), "yolo", run_id="gate-data")["uri"]
    runs = {"short": (5, 0), "long": (100, 0), "reseeded": (100, 1)}
    out = {"data": data}
    for name, (epochs, seed) in runs.items():  # one checkpoint upload at the end, not one an epoch (~0.5 s each here)
        out[name] = training.train(data, "yolov8n.yaml", name, run_id=f"gate-{name}", epochs=epochs, seed=seed,
                                   checkpoint_every=epochs, **STEP)["best"]  # fmt: skip
    return out


def _evaluate(weekly: dict[str, str], baseline: str, distilled: str, run_id: str, **gate) -> dict:
    from distill.steps.evaluate import evaluate

    return evaluate(weekly["data"], weekly["short"], weekly[baseline], weekly[distilled], run_id=run_id,
                    imgsz=IMGSZ, batch=8, device="cpu", latency_images=1, **gate)  # fmt: skip


def test_evaluation_records_intervals_per_image_matches_and_per_class_table(stack_env, weekly, tmp_path):
    result = _evaluate(weekly, "short", "long", "gate-eval")
    report = json.loads(storage.read_bytes(result["metrics"]))
    gate = report["verdict"]["gate"]
    assert gate["rule"] == "ci" and gate["level"] == 0.9 and gate["images"] == 48 and gate["resamples"] > 100
    assert gate["low"] < gate["difference"] < gate["high"] and gate["difference"] == pytest.approx(
        report["verdict"]["gain_over_baseline"], abs=1e-4)  # fmt: skip
    assert all(n is not None and n >= 0 for n in gate["run_noise"])  # both training logs were found beside best.pt
    assert all(t >= gate["se"] for t in gate["run_terms"])  # each run's term at least the bootstrap's se
    assert gate["passes"] and gate["low"] > 0  # a hundred epochs against five: a real gain, the interval above zero
    path = tmp_path / "image_stats.npz"
    path.write_bytes(storage.read_bytes(result["metrics"].replace("metrics.json", "image_stats.npz")))
    stats = load_stats(path)
    for role, model in report["models"].items():  # the full sample is Ultralytics' own validation number
        assert stats[role].score("B") == pytest.approx(model["metrics"]["metrics/mAP50-95(B)"], abs=1e-4), role
    rows = report["per_class"]
    assert {r["class"] for r in rows} == set(CLASSES)  # every class of the test split, by name
    assert [r["gain"] for r in rows] == sorted((r["gain"] for r in rows), reverse=True)
    markdown = storage.read_bytes(result["report"]).decode()
    assert "**Gate** (ci, 48 test images" in markdown and "Per-class AP50-95(B)" in markdown
    assert "Gained most:" in markdown


def test_the_same_weights_twice_are_no_difference_and_never_promoted(stack_env, weekly):
    """Against the baseline (evaluate's decision) and against a champion with the same weights (register's)."""
    from distill.steps.register import register

    same = _evaluate(weekly, "long", "long", "gate-same")
    gate = same["verdict"]["gate"]
    assert gate["difference"] == 0.0 and gate["low"] <= 0.0 <= gate["high"] and not gate["passes"]
    assert same["verdict"]["gate"]["se"] == 0.0  # every resample scores both the same
    first = register(weekly["long"], _evaluate(weekly, "short", "long", "gate-same-1")["metrics"], "gate-same",
                     run_id="gate-same-1")  # fmt: skip
    again = register(weekly["long"], same["metrics"], "gate-same", run_id="gate-same-2")  # the champion's weights
    assert first["promoted"] and not again["promoted"], again["reason"]
    assert "+0.00 points over champion" in again["reason"] and "(recorded" in again["reason"]
    assert tracking.client().get_model_version_by_alias("gate-same", "champion").version == first["version"]


def test_scheduled_retraining_seed_noise_keeps_the_champion_a_real_gain_takes_it(stack_env, weekly):
    """Week 1 a short run is champion; week 2 the long run beats it; week 3 the long run with another seed does not
    take the title (its score differs, so today's point rule would have moved it one way or the other)."""
    from distill.steps.register import register

    name = "gate-weekly"
    decisions = {}
    for week, run in enumerate(("short", "long", "reseeded"), start=1):
        ev = _evaluate(weekly, "short", run, f"gate-week-{week}")
        decisions[run] = register(weekly[run], ev["metrics"], name, run_id=f"gate-week-{week}")
    assert decisions["short"]["promoted"] and decisions["short"]["reason"] == "first version: no champion yet"
    assert decisions["long"]["promoted"], decisions["long"]["reason"]
    assert decisions["long"]["reason"].startswith(f"beats champion v{decisions['short']['version']} (recorded")
    assert not decisions["reseeded"]["promoted"], decisions["reseeded"]["reason"]
    client = tracking.client()
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == decisions["long"]["version"]
    kept = client.get_model_version(name, decisions["reseeded"]["version"])
    low, high = float(kept.tags["gain_over_champion_low"]), float(kept.tags["gain_over_champion_high"])
    difference = float(kept.tags["gain_over_champion"])
    assert difference != 0.0 and low < 0 < high  # a real difference of scores, inside the noise
    assert kept.tags["yolo_distill.decision"] == "kept" and "gate ci" in kept.tags["yolo_distill.reason"]
    assert (kept.tags["gate"], kept.tags["gate_level"], kept.tags["min_gain"]) == ("ci", "0.9", "0.0")
    assert float(kept.tags["gain_over_baseline_low"]) < float(kept.tags["gain_over_baseline_high"])
    assert "**Registry decision**: kept" in kept.description and "Per-class AP50-95(B)" in kept.description
    assert "**Gate** (ci" in champion.description


def test_gate_settings_are_refused_in_one_line(stack_env, weekly):
    ev = _evaluate(weekly, "short", "long", "gate-bad")
    for flags, message in (
        (("--gate-level", "1.5"), "gate_level must be between 0 and 1"),
        (("--min-gain", "-0.1"), "min_gain must be >= 0"),
        (("--gate", "maybe"), "argument --gate: gate must be one of ci, point, got 'maybe'"),
    ):
        proc = cli("step", "register", "--model", weekly["long"], "--evaluation", ev["metrics"], "--name",
                   "gate-bad", "--run-id", "gate-bad", *flags, check=False)  # fmt: skip
        one_error_line(proc, 2, contains=message)
    assert tracking.client().search_registered_models("name = 'gate-bad'") == []
