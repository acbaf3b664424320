"""How outputs are compared: one module per loss, each with its paper, formula and defaults in its docstring."""

from .cwd import ChannelWiseDistillationLoss
from .distribution import DistributionLogitLoss
from .keypoints import KeypointDistillationLoss
from .ld import LocalizationDistillationLoss, dfl_kl_divergence
from .logit import LogitLoss, head_dict, head_outputs, shared_outputs
from .masks import MaskDistillationLoss
from .mgd import MaskedGenerativeLoss, random_spatial_mask
from .mimic import MimicLoss
from .ncwd import NormalizedChannelWiseLoss, batch_standardize
from .pkd import PearsonDistillationLoss, standardize_channels
from .scores import ScoreDistillationLoss, binary_kl
from .weighting import anchor_mean, teacher_confidence

__all__ = [
    "ChannelWiseDistillationLoss",
    "DistributionLogitLoss",
    "KeypointDistillationLoss",
    "LocalizationDistillationLoss",
    "LogitLoss",
    "MaskDistillationLoss",
    "MaskedGenerativeLoss",
    "MimicLoss",
    "NormalizedChannelWiseLoss",
    "PearsonDistillationLoss",
    "ScoreDistillationLoss",
    "anchor_mean",
    "batch_standardize",
    "binary_kl",
    "dfl_kl_divergence",
    "head_dict",
    "head_outputs",
    "random_spatial_mask",
    "shared_outputs",
    "standardize_channels",
    "teacher_confidence",
]
