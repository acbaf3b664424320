"""How outputs are compared: one module per loss, each with its paper, formula and defaults in its docstring."""

from .cwd import ChannelWiseDistillationLoss
from .logit import LogitLoss, head_outputs, shared_outputs
from .mgd import MaskedGenerativeLoss, random_spatial_mask
from .mimic import MimicLoss

__all__ = [
    "ChannelWiseDistillationLoss",
    "LogitLoss",
    "MaskedGenerativeLoss",
    "MimicLoss",
    "head_outputs",
    "random_spatial_mask",
    "shared_outputs",
]
