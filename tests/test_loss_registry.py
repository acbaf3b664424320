"""The feature-loss registry (issue 39, item 4): a feature loss is one file in ``distill/losses/``, declared once.

Each declared loss is a ``loss=`` choice of :class:`DistillConfig` and a ``--loss`` choice of the CLI, with its
declared default weight, and the model factory builds it as the if-chain it replaced did. A new file, written to a
temporary folder on the package's path, becomes all of that without another file touched; ``distill.config`` reads the
declarations without importing torch or the loss modules (a fresh interpreter, the one test here not in the fast tier).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pkgutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import ROOT

import distill.config
import distill.losses
from distill import DistillConfig, DistillError, settings
from distill.cli import build_parser
from distill.config import DEFAULT_FEATURE_WEIGHTS, FEATURE_LOSSES
from distill.engine.model import build_feature_loss
from distill.losses import (
    ChannelWiseDistillationLoss,
    MaskedGenerativeLoss,
    MimicLoss,
    NormalizedChannelWiseLoss,
    PearsonDistillationLoss,
    registry,
)

fast = pytest.mark.fast  # in-process only: part of `make test-fast` (all but the fresh-interpreter test)

BUILT_IN = {"cwd": 1.0, "mgd": 1.0, "mimic": 1.0, "ncwd": 1.0, "pkd": 10.0}
CLI_BASE = ["distill", "--data", "d.yaml", "--teacher", "t.pt", "--student", "s.yaml"]
#: What model.py's if-chain built for each loss, on a config of non-default settings: the class and its settings.
BUILT_BY_THE_IF_CHAIN = {
    "cwd": lambda m: type(m) is ChannelWiseDistillationLoss and m.tau == 2.0,
    "ncwd": lambda m: type(m) is NormalizedChannelWiseLoss and m.cwd.tau == 2.0,
    "pkd": lambda m: type(m) is PearsonDistillationLoss,
    "mgd": lambda m: type(m) is MaskedGenerativeLoss and (m.ratio, m.alpha) == (0.5, 1e-3)
                     and m.generator[0].in_channels == m.generator[-1].out_channels == 8,
    "mimic": lambda m: type(m) is MimicLoss,
}  # fmt: skip

#: A new feature loss, complete: what a contributor adds as ``distill/losses/scaled_l1.py``.
NEW_LOSS = '''"""Scaled L1: a test loss. Default weight 0.5."""

from __future__ import annotations

import torch
from torch import nn

from .registry import feature_loss


@feature_loss("scaledl1", default_weight=0.5)
class ScaledL1Loss(nn.Module):
    """Mean absolute difference, times ``tau``."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale

    @classmethod
    def from_config(cls, config, channels: int) -> ScaledL1Loss:
        return cls(channels, scale=config.tau)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (student.float() - teacher.float()).abs().mean() * self.scale
'''


@pytest.fixture
def losses_folder(tmp_path, monkeypatch) -> Path:
    """A temporary folder on ``distill.losses``' path: a file written there is a module of the package."""
    monkeypatch.setattr(distill.losses, "__path__", [*distill.losses.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_CLASSES", dict(registry._CLASSES))
    registry.declarations.cache_clear()
    yield tmp_path
    registry.declarations.cache_clear()  # read again, without the folder, on next use
    for name, module in list(sys.modules.items()):
        if name.startswith("distill.losses.") and str(getattr(module, "__file__", "")).startswith(str(tmp_path)):
            del sys.modules[name]
            vars(distill.losses).pop(name.rpartition(".")[2], None)


def fresh_config(monkeypatch) -> ModuleType:
    """Return ``distill.config`` imported anew, as a new process would (its choices are fixed when it is imported).

    The fresh module replaces the imported one for this test only; ``distill.settings`` derives the CLI flags from it.
    """
    spec = importlib.util.spec_from_file_location("distill.config", distill.config.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "distill.config", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(settings, "DistillConfig", module.DistillConfig)
    monkeypatch.setattr(settings, "KD", settings.kd_options())
    return module


def loss_choices(config_class: type) -> tuple[str, ...]:
    """The ``loss`` field's choices, as the CLI, the steps and the pipeline read them."""
    return next(f.metadata["choices"] for f in fields(config_class) if f.name == "loss")


@fast
def test_every_declared_loss_is_a_config_and_a_cli_choice_with_its_declared_weight():
    declared = registry.declarations()
    assert {name: d.default_weight for name, d in declared.items()} == BUILT_IN  # the five shipped, found by the reader
    assert FEATURE_LOSSES == (*sorted(BUILT_IN), "none") == loss_choices(DistillConfig)
    assert DEFAULT_FEATURE_WEIGHTS == {**BUILT_IN, "none": 0.0}
    assert next(o for o in settings.KD if o.name == "loss").choices == FEATURE_LOSSES
    for name in FEATURE_LOSSES:
        assert build_parser().parse_args([*CLI_BASE, "--loss", name]).loss == name
        assert DistillConfig(teacher="t.pt", loss=name.upper()).feat_weight == DEFAULT_FEATURE_WEIGHTS[name]


@fast
def test_an_unknown_loss_is_refused_as_before(capsys):
    with pytest.raises(DistillError) as e:
        DistillConfig(teacher="t.pt", loss="kl")
    assert str(e.value) == "loss must be one of cwd, mgd, mimic, ncwd, pkd, none, got 'kl'"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*CLI_BASE, "--loss", "kl"])
    assert "argument --loss: loss must be one of cwd, mgd, mimic, ncwd, pkd, none, got 'kl'" in capsys.readouterr().err
    with pytest.raises(DistillError, match="'none' has no feature-loss module"):
        build_feature_loss(DistillConfig(teacher="t.pt", loss="none"), 8)


@fast
def test_a_choice_is_taken_in_any_case_from_a_flag_or_a_pipeline_as_the_library_takes_it():
    from distill import settings

    assert DistillConfig(teacher="t.pt", loss="MIMIC").loss == "mimic"  # the library always did
    assert build_parser().parse_args([*CLI_BASE, "--loss", "MIMIC", "--pool-targets", "Online"]).loss == "mimic"
    assert settings.coerce_kd({"logit_loss": " KL "})["logit_loss"] == "kl"  # a pipeline's text
    assert settings.coerce_gate({"gate": "Point"})["gate"] == "point"
    with pytest.raises(DistillError, match="^pool_teacher must be one of frozen, ema, auto, got 'mean'$"):
        settings.coerce_kd({"pool_teacher": "mean"})


@fast
@pytest.mark.parametrize("name", [n for n in FEATURE_LOSSES if n != "none"])
def test_each_loss_builds_as_the_if_chain_did_and_gives_a_finite_scalar(name):
    config = DistillConfig(teacher="t.pt", loss=name, tau=2.0, mgd_ratio=0.5, mgd_alpha=1e-3)
    module = build_feature_loss(config, 8)
    assert BUILT_BY_THE_IF_CHAIN[name](module), module
    torch.manual_seed(0)
    student = torch.randn(2, 8, 6, 6, requires_grad=True)
    value = module(student, torch.randn(2, 8, 6, 6))
    value.backward()
    assert value.ndim == 0 and math.isfinite(value.item()) and value.item() > 0
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@fast
def test_every_registered_class_is_declared_in_its_own_module():
    """The reader and the decorator agree: an aliased decorator or a nested class would register unseen."""
    for info in pkgutil.iter_modules(distill.losses.__path__, "distill.losses."):
        importlib.import_module(info.name)
    registered = registry.registered()
    assert set(registered) == set(registry.declarations()) == set(BUILT_IN)
    assert all(registered[n].__module__ == d.module for n, d in registry.declarations().items())


@fast
def test_one_new_file_is_a_new_loss(losses_folder, monkeypatch, capsys):
    with pytest.raises(DistillError, match="loss must be one of .*, got 'scaledl1'"):
        DistillConfig(teacher="t.pt", loss="scaledl1")

    (losses_folder / "scaled_l1.py").write_text(NEW_LOSS)
    config_module = fresh_config(monkeypatch)

    assert "distill.losses.scaled_l1" not in sys.modules  # declared by reading it, not importing it
    assert config_module.FEATURE_LOSSES == (*sorted([*BUILT_IN, "scaledl1"]), "none")
    assert loss_choices(config_module.DistillConfig) == config_module.FEATURE_LOSSES
    assert build_parser().parse_args([*CLI_BASE, "--loss", "scaledl1"]).loss == "scaledl1"
    config = config_module.DistillConfig(teacher="t.pt", loss="scaledl1", tau=3.0)
    assert config.feat_weight == 0.5
    module = build_feature_loss(config, 8)
    assert (type(module).__name__, module.channels, module.scale) == ("ScaledL1Loss", 8, 3.0)
    value = module(torch.ones(2, 8, 4, 4), torch.zeros(2, 8, 4, 4))
    assert float(value) == 3.0


@fast
@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("NAME = 'x'\n\n@feature_loss(NAME, default_weight=1.0)\nclass X: ...\n", TypeError, "literal name"),
        ("@feature_loss('x', default_weight=-1)\nclass X: ...\n", TypeError, "default_weight >= 0"),
        ("@feature_loss('x', 1.0, 2.0)\nclass X: ...\n", TypeError, "literal name"),
        ("@feature_loss('Big', 1.0)\nclass X: ...\n", TypeError, "lower-case word"),
        ("@feature_loss('cwd', default_weight=2.0)\nclass X: ...\n", ValueError, "declared by distill.losses.cwd"),
        ("@feature_loss('none', default_weight=0)\nclass X: ...\n", ValueError, "declared by distill.losses.registry"),
    ],
)
def test_a_declaration_must_be_literal_and_its_name_new(losses_folder, source, error, message):
    (losses_folder / "zz_bad.py").write_text(f"from .registry import feature_loss\n\n\n{source}")
    with pytest.raises(error, match=message):
        registry.declarations()


def test_config_reads_the_declarations_without_importing_torch_or_a_loss(tmp_path):
    """In a fresh interpreter: a new loss file (which imports torch) is a choice; torch and the losses stay unloaded."""
    (tmp_path / "scaled_l1.py").write_text(NEW_LOSS)
    script = (
        "import sys, distill.losses\n"
        f"distill.losses.__path__.append({str(tmp_path)!r})\n"
        "import distill.config as c\n"
        "assert c.DEFAULT_FEATURE_WEIGHTS['scaledl1'] == 0.5 and 'scaledl1' in c.FEATURE_LOSSES, c.FEATURE_LOSSES\n"
        "heavy = sorted(m for m in sys.modules if m in ('torch', 'ultralytics') or m.startswith('distill.losses.'))\n"
        "assert heavy == ['distill.losses.registry'], heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
