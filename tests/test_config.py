"""DistillConfig validation, layer parsing, the KD schedule and CLI argument parsing."""

from __future__ import annotations

import pytest

from distill import DistillConfig, DistillError
from distill.cli import build_parser, parse_overrides
from distill.config import DEFAULT_FEATURE_WEIGHTS, parse_layers
from distill.engine.schedule import kd_scale, resolve_off_epochs

#: In-process only (no training, server or subprocess): part of `make test-fast`.
pytestmark = pytest.mark.fast


def test_defaults_are_documented_values():
    cfg = DistillConfig(teacher="t.pt")
    assert (cfg.loss, cfg.logit, cfg.layers, cfg.online) == ("mimic", True, "neck", False)  # the BCCD benchmark's best
    assert (cfg.feat_weight, cfg.logit_weight, cfg.tau, cfg.mgd_ratio, cfg.mgd_alpha) == (1.0, 0.25, 1.0, 0.65, 2e-5)
    assert (cfg.schedule, cfg.distill_off_epochs) == ("constant", "close_mosaic")  # KD off when mosaic closes
    assert (cfg.logit_loss, cfg.logit_tau, cfg.logit_conf_weight) == ("mse", 10.0, None)  # kl: opt-in for now


def test_confidence_weighting_defaults_on_for_pose_only_and_an_explicit_choice_stays():
    cfg = DistillConfig(teacher="t.pt")
    assert [cfg.for_task(t).logit_conf_weight for t in ("detect", "segment", "pose")] == [False, False, True]
    assert cfg.logit_conf_weight is None  # resolving returns a copy
    for chosen in (True, False):
        assert DistillConfig(teacher="t.pt", logit_conf_weight=chosen).for_task("pose").logit_conf_weight is chosen
        assert DistillConfig(teacher="t.pt", logit_conf_weight=chosen).for_task("detect").logit_conf_weight is chosen


@pytest.mark.parametrize(("loss", "weight"), [("pkd", 10.0), ("ncwd", 1.0), ("cwd", 1.0)])
def test_new_feature_losses_take_their_reference_weights(loss, weight):
    assert DistillConfig(teacher="t.pt", loss=loss).feat_weight == weight == DEFAULT_FEATURE_WEIGHTS[loss]
    assert DistillConfig(teacher="t.pt", loss=loss, feat_weight=2).feat_weight == 2.0


def test_logit_loss_and_close_mosaic_settings_are_normalised():
    cfg = DistillConfig(teacher="t.pt", loss="ncwd", logit_loss="KL", logit_tau=4, distill_off_epochs=-1)
    assert (cfg.logit_loss, cfg.logit_tau, cfg.distill_off_epochs) == ("kl", 4.0, "close_mosaic")
    assert DistillConfig(teacher="t.pt", distill_off_epochs=" Close_Mosaic ").distill_off_epochs == "close_mosaic"
    assert DistillConfig(teacher="t.pt", distill_off_epochs="3").distill_off_epochs == 3
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "kl"}, "loss must be one of .*, got 'kl'"),
        ({"schedule": "step"}, "schedule must be one of constant, linear, cosine, got 'step'"),
        ({"layers": "15,x"}, "layers='15,x' is neither a preset"),
        ({"layers": []}, "non-empty list"),
        ({"layers": [15, 15]}, "repeats a layer index"),
        ({"teacher_layers": "neckk"}, "teacher_layers='neckk'"),
        ({"feat_weight": -1}, "feat_weight must be a non-negative number"),
        ({"tau": 0}, "tau must be > 0"),
        ({"mgd_ratio": 1.0}, "mgd_ratio must be in"),
        ({"distill_off_epochs": -2}, "distill_off_epochs must be a non-negative integer"),
        ({"distill_off_epochs": "mosaic"}, "distill_off_epochs must be .* or 'close_mosaic' \\(-1\\), got 'mosaic'"),
        ({"distill_off_epochs": 1.5}, "distill_off_epochs must be a non-negative integer .*got 1.5"),
        ({"logit_loss": "l2"}, "logit_loss must be one of mse, kl, got 'l2'"),
        ({"logit_tau": 0}, "logit_tau must be > 0"),
        ({"logit_tau": -1}, "logit_tau must be a non-negative number, got -1"),
        ({"logit_conf_weight": "yes"}, "logit_conf_weight must be true or false, got 'yes'"),
        ({"pool_rounds": 0}, "pool_rounds must be a whole number >= 1, got 0"),
        ({"pool_rounds": 1.5}, "pool_rounds must be a whole number >= 1, got 1.5"),
    ],
)
def test_bad_settings_raise_one_error_naming_the_value(kwargs, message):
    with pytest.raises(DistillError, match=message):
        DistillConfig(teacher="t.pt", **kwargs)


def test_no_kd_term_is_label_then_train_with_a_pool_and_nothing_to_distil_without():
    config = DistillConfig(teacher="t.pt", loss="none", logit=False)
    assert not config.distils
    config.check_run(epochs=10, pool=True)  # label-then-train: the teacher only labels the pool
    with pytest.raises(DistillError, match="nothing to distil"):
        config.check_run(epochs=10, pool=False)


def test_a_pool_run_is_label_then_train_unless_the_kd_terms_are_asked_for_or_the_task_is_pose():
    config = DistillConfig(teacher="t.pt", loss="cwd", logit_weight=0.5)
    alone = config.for_pool(False, "detect")  # without a pool the KD terms always apply; pool_kd means nothing
    assert (alone.loss, alone.logit, alone.pool_kd) == ("cwd", True, None)
    assert DistillConfig(teacher="t.pt", pool_kd=False).for_pool(False, "detect").pool_kd is None
    plain = config.for_pool(True, "detect")
    assert (plain.loss, plain.logit, plain.distils, plain.logit_weight, plain.pool_kd) == ("none", False, False, 0.5,
                                                                                           False)  # fmt: skip
    assert config.loss == "cwd" and config.pool_kd is None  # resolving returns a copy
    assert config.for_pool(True, "segment").loss == "none"
    pose = config.for_pool(True, "pose")  # the keypoints: the KD terms on by default
    assert (pose.loss, pose.logit, pose.pool_kd, pose.logit_conf_weight) == ("cwd", True, True, True)
    assert DistillConfig(teacher="t.pt", pool_kd=False).for_pool(True, "pose").loss == "none"
    kd = DistillConfig(teacher="t.pt", loss="cwd", pool_kd=True).for_pool(True, "detect")
    assert (kd.loss, kd.logit, kd.pool_kd) == ("cwd", True, True)
    assert DistillConfig(teacher="t.pt", pool_targets="soft").for_pool(True, "detect").pool_kd is True
    with pytest.raises(DistillError, match="pool_targets=soft .* needs pool_kd"):
        DistillConfig(teacher="t.pt", pool_targets="soft", pool_kd=False)
    with pytest.raises(DistillError, match="pool_kd must be true or false"):
        DistillConfig(teacher="t.pt", pool_kd="yes")
    assert DistillConfig(teacher="t.pt", pool_targets="online").for_pool(True, "detect").pool_targets == "online"


def test_pool_images_without_a_pseudo_label_are_kept_for_online_targets_unless_asked_otherwise():
    assert DistillConfig(teacher="t.pt", pool_targets="online").keeps_empty
    assert not DistillConfig(teacher="t.pt", pool_targets="online", pool_keep_empty=False).keeps_empty
    assert not DistillConfig(teacher="t.pt").keeps_empty  # pseudo: only the images it found objects in
    assert DistillConfig(teacher="t.pt", pool_keep_empty=True).keeps_empty  # as background
    with pytest.raises(DistillError, match="pool_keep_empty must be true or false, got 'no'"):
        DistillConfig(teacher="t.pt", pool_keep_empty="no")


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


@pytest.mark.parametrize(
    ("setting", "epochs", "close_mosaic", "off_epochs"),
    [
        (2, 10, 3, [8, 9]),
        ("close_mosaic", 10, 3, [7, 8, 9]),
        ("close_mosaic", 10, 0, []),
        ("close_mosaic", 2, 5, []),  # no mosaic stage (Ultralytics closes it from the start): KD stays on
        ("close_mosaic", 10, 10, []),
    ],
)
def test_kd_off_epochs_can_follow_the_trainers_close_mosaic(setting, epochs, close_mosaic, off_epochs):
    off = resolve_off_epochs(setting, epochs, close_mosaic)
    assert [e for e in range(epochs) if kd_scale("constant", e, epochs, off) == 0] == off_epochs
    if setting == "close_mosaic" and 0 < close_mosaic < epochs:  # Ultralytics' gate: closed once epoch >= epochs - N
        assert off_epochs == [e for e in range(epochs) if e >= epochs - close_mosaic]


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
            "--logit-loss",
            "kl",
            "--logit-tau",
            "4",
            "--logit-conf-weight",
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
    assert (args.logit_loss, args.logit_tau, args.logit_conf_weight) == ("kl", 4.0, True)
    assert parse_overrides(args.overrides) == {"lr0": 0.001, "plots": False}
    with pytest.raises(DistillError, match="'lr0' is not key=value"):
        parse_overrides(["lr0"])


def test_cli_and_step_defaults_are_the_configs_shipped_defaults():
    """One source of defaults: what the CLI falls back to is exactly DistillConfig's (the step takes the rest)."""
    from distill.config import DEFAULTS

    args = build_parser().parse_args(["distill", "--data", "d.yaml", "--teacher", "t.pt", "--student", "s.yaml"])
    for key in DEFAULTS:
        assert getattr(args, key) == DEFAULTS[key], key
    assert DistillConfig(teacher="t.pt").to_dict() == {
        "teacher": "t.pt",
        **DEFAULTS,
        "extra": {},
        "feat_weight": DistillConfig(teacher="t.pt").feat_weight,
    }


def test_cli_parses_the_new_loss_choices_and_close_mosaic(capsys):
    base = ["distill", "--data", "d.yaml", "--teacher", "t.pt", "--student", "s.yaml"]
    args = build_parser().parse_args([*base, "--loss", "pkd", "--distill-off-epochs", "close_mosaic"])
    assert (args.loss, args.logit_loss, args.distill_off_epochs) == ("pkd", "mse", "close_mosaic")
    assert build_parser().parse_args([*base, "--loss", "ncwd", "--distill-off-epochs", "-1"]).distill_off_epochs == (
        "close_mosaic"
    )
    for bad, message in (
        (["--logit-loss", "l1"], "logit_loss must be one of mse, kl, got 'l1'"),
        (["--distill-off-epochs", "x"], "got 'x'"),
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, *bad])
        assert message in capsys.readouterr().err


def test_training_defaults_are_ultralytics_own():
    from ultralytics.utils import DEFAULT_CFG_DICT

    from distill.settings import TRAINING

    declared = {o.name: o.default for o in TRAINING if o.default is not None}
    assert set(declared) == {"epochs", "imgsz", "batch", "seed"}
    assert declared == {key: DEFAULT_CFG_DICT[key] for key in declared}
