"""DistillConfig validation, layer parsing, the KD schedule and CLI argument parsing."""

from __future__ import annotations

import pytest

from distill import DistillConfig, DistillError
from distill.cli import build_parser, parse_overrides
from distill.config import parse_layers
from distill.schedule import kd_scale


def test_defaults_are_documented_values():
    cfg = DistillConfig(teacher="t.pt")
    assert (cfg.loss, cfg.logit, cfg.layers, cfg.online) == ("mimic", True, "neck", False)  # the BCCD benchmark's best
    assert (cfg.feat_weight, cfg.logit_weight, cfg.tau, cfg.mgd_ratio, cfg.mgd_alpha) == (1.0, 0.25, 1.0, 0.65, 2e-5)
    assert (cfg.schedule, cfg.distill_off_epochs) == ("constant", 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "kl"}, "unknown loss 'kl'"),
        ({"schedule": "step"}, "unknown schedule 'step'"),
        ({"layers": "15,x"}, "layers='15,x' is neither a preset"),
        ({"layers": []}, "non-empty list"),
        ({"layers": [15, 15]}, "repeats a layer index"),
        ({"teacher_layers": "neckk"}, "teacher_layers='neckk'"),
        ({"feat_weight": -1}, "feat_weight must be a non-negative number"),
        ({"tau": 0}, "tau must be > 0"),
        ({"mgd_ratio": 1.0}, "mgd_ratio must be in"),
        ({"distill_off_epochs": -2}, "distill_off_epochs must be a non-negative integer"),
        ({"loss": "none", "logit": False}, "nothing to distil"),
    ],
)
def test_bad_settings_raise_one_error_naming_the_value(kwargs, message):
    with pytest.raises(DistillError, match=message):
        DistillConfig(teacher="t.pt", **kwargs)


def test_round_trip_and_unknown_keys():
    cfg = DistillConfig(teacher="t.pt", loss="mgd", layers="2,4", online=True)
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DistillError, match="unknown distillation setting"):
        DistillConfig.from_dict({**cfg.to_dict(), "temperature": 2})


def test_parse_layers():
    assert parse_layers("15, 18,21") == [15, 18, 21]
    assert parse_layers("Backbone-Neck") == "backbone-neck"
    assert parse_layers((1, 2)) == [1, 2]


@pytest.mark.parametrize(
    ("schedule", "epoch", "off", "expected"),
    [
        ("constant", 0, 0, 1.0),
        ("linear", 0, 0, 1.0),
        ("linear", 5, 0, 0.5),
        ("cosine", 5, 0, 0.5),
        ("cosine", 0, 0, 1.0),
        ("constant", 7, 3, 0.0),
        ("constant", 6, 3, 1.0),
    ],
)
def test_kd_schedule(schedule, epoch, off, expected):
    assert kd_scale(schedule, epoch, 10, off) == pytest.approx(expected)


def test_cli_parses_every_documented_flag():
    args = build_parser().parse_args(
        [
            "distill",
            "--data",
            "d.yaml",
            "--student",
            "s.yaml",
            "--teacher",
            "t.pt",
            "--loss",
            "mgd",
            "--no-logit",
            "--layers",
            "backbone-neck",
            "--teacher-layers",
            "2,4,6,8,13,16,19,22",
            "--online",
            "--feat-weight",
            "2",
            "--logit-weight",
            "0.5",
            "--tau",
            "2",
            "--schedule",
            "cosine",
            "--distill-off-epochs",
            "1",
            "--epochs",
            "3",
            "--imgsz",
            "64",
            "--batch",
            "8",
            "--device",
            "cpu",
            "--seed",
            "1",
            "--out",
            "o",
            "lr0=0.001",
            "plots=False",
        ]
    )
    assert (args.loss, args.logit, args.online, args.tau, args.distill_off_epochs) == ("mgd", False, True, 2.0, 1)
    assert parse_overrides(args.overrides) == {"lr0": 0.001, "plots": False}
    with pytest.raises(DistillError, match="'lr0' is not key=value"):
        parse_overrides(["lr0"])


def test_cli_and_step_defaults_are_the_configs_shipped_defaults():
    """One source of defaults: what the CLI and the pipeline step fall back to is exactly DistillConfig's."""
    import inspect

    from distill.config import DEFAULTS
    from distill.steps import training

    args = build_parser().parse_args(["distill", "--data", "d.yaml", "--teacher", "t.pt", "--student", "s.yaml"])
    step = inspect.signature(training.distill).parameters
    for key in ("loss", "logit", "layers", "logit_weight", "tau", "schedule", "distill_off_epochs"):
        assert getattr(args, key) == DEFAULTS[key] == step[key].default, key
    assert DistillConfig(teacher="t.pt").to_dict() == {
        "teacher": "t.pt",
        **DEFAULTS,
        "extra": {},
        "feat_weight": DistillConfig(teacher="t.pt").feat_weight,
    }
