"""Normalised channel-wise distillation (NCWD): RTMDet's distillation recipe in MMYOLO.

MMYOLO's RTMDet distillation configs (``configs/rtmdet/distillation/kd_*_rtmdet_*_neck_300e_coco.py``) combine PKD's
normalisation with CWD: the student map (after its 1×1 conv connector) and the teacher map each pass through a batch
norm without affine parameters and without running statistics (``norm_cfg=dict(type='BN', affine=False,
track_running_stats=False)``), i.e. every channel is standardised with the current batch's mean and biased variance
over (N, H, W):

    x̂ = (x − μ_c) / √(σ²_c + 1e-5)

and the normalised maps are compared with channel-wise distillation (Shu et al., ICCV 2021; see :mod:`.cwd`):
τ² · Σ KL(softmax(t̂/τ) ‖ softmax(ŝ/τ)) / (N·C). Defaults as in those configs: τ = 1, weight 1 (their
``ChannelWiseDivergence``, ``loss_weight=1``, ``tau=1``; the weight is declared on the class). The recipe also
stops KD when mosaic closes for the last epochs (MMRazor's ``StopDistillHook`` / ``DistillationLossDetachHook`` at
epoch 280 of 300); here that is ``distill_off_epochs="close_mosaic"``, the shipped default for every loss.
"""

from __future__ import annotations

import torch
from torch import nn

from .cwd import ChannelWiseDistillationLoss
from .registry import LossSettings, feature_loss


def batch_standardize(feature: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Return the map normalised like ``BatchNorm2d(affine=False, track_running_stats=False)`` in any mode.

    Examples:
        >>> x = torch.randn(4, 3, 5, 5)
        >>> bn = torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False)
        >>> bool(torch.allclose(batch_standardize(x), bn(x), atol=1e-5))
        True
    """
    x = feature.float()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)
    return (x - mean) / torch.sqrt(var + eps)


@feature_loss("ncwd", default_weight=1.0)
class NormalizedChannelWiseLoss(nn.Module):
    """NCWD loss for one pair of (aligned student, teacher) feature maps of shape ``(N, C, H, W)``.

    Args:
        tau (float): CWD softmax temperature; 1.0 in MMYOLO's RTMDet configs.

    Examples:
        >>> x = torch.randn(2, 8, 4, 4)
        >>> float(NormalizedChannelWiseLoss()(x, 2 * x + 3)) < 1e-5  # per-channel scale and shift are normalised away
        True
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.cwd = ChannelWiseDistillationLoss(tau=tau)

    @classmethod
    def from_config(cls, config: LossSettings, channels: int) -> NormalizedChannelWiseLoss:
        """Return the loss at the configured temperature ``tau``."""
        return cls(tau=config.tau)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return CWD(batch_standardize(student), batch_standardize(teacher))."""
        return self.cwd(batch_standardize(student), batch_standardize(teacher))
