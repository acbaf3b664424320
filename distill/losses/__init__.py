"""How outputs are compared: one module per loss, each with its paper, formula and defaults in its docstring.

The names below load on first use (PEP 562): importing the package imports no torch, so that :mod:`distill.config`
can read the feature losses' declarations through :mod:`.registry` (a new feature loss is one new module here).
"""

from __future__ import annotations

from typing import Any

#: Public name → the module of this package that defines it.
_LAZY = {
    "ChannelWiseDistillationLoss": "cwd",
    "DistributionLogitLoss": "distribution",
    "KeypointDistillationLoss": "keypoints",
    "LocalizationDistillationLoss": "ld",
    "LogitLoss": "logit",
    "MaskDistillationLoss": "masks",
    "MaskedGenerativeLoss": "mgd",
    "MimicLoss": "mimic",
    "NormalizedChannelWiseLoss": "ncwd",
    "PearsonDistillationLoss": "pkd",
    "ScoreDistillationLoss": "scores",
    "anchor_mean": "weighting",
    "batch_standardize": "ncwd",
    "binary_kl": "scores",
    "dfl_kl_divergence": "ld",
    "head_dict": "logit",
    "head_outputs": "logit",
    "random_spatial_mask": "mgd",
    "shared_outputs": "logit",
    "standardize_channels": "pkd",
    "teacher_confidence": "weighting",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (``from distill.losses import MimicLoss``)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Return the module's names, the public ones not loaded yet included."""
    return sorted(set(globals()) | set(_LAZY))
