"""Pearson-correlation feature distillation (PKD).

Cao, Zhang, Gao, Cheng, Cheng, Cheng — "PKD: General Distillation Framework for Object Detectors via Pearson
Correlation Coefficient", NeurIPS 2022. Each channel of the (aligned) student map and of the teacher map is
standardised to zero mean and unit variance over its M = N·H·W values (batch and positions together, as MMRazor's
``PKDLoss.norm`` does), then the two are compared with half a mean squared error:

    ẑ = (x − μ_c) / (σ_c + 1e-6),   L = ½ · mean((ẑ_s − ẑ_t)²)

With σ the unbiased standard deviation this equals (M − 1)/M · mean_c(1 − r_c), r_c the Pearson correlation of channel
c between student and teacher: the student copies the teacher's pattern, not its magnitude, so channels and levels with
large activations no longer dominate. Default weight 10 (declared on the class): MMRazor's PKD configs use
``loss_weight=10`` for one-stage RetinaNet students and 6 for two-stage Faster R-CNN students; YOLO is one-stage.
On BCCD PKD at 10 makes up most of the training loss and scored below the baseline (``benchmarks/README.md``,
section 'Screening'): pass a smaller ``feat_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LossSettings, feature_loss


def standardize_channels(feature: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Return ``(x − mean) / (std + eps)`` per channel over (N, H, W), unbiased std (0 for a single value).

    Examples:
        >>> z = standardize_channels(torch.randn(2, 3, 4, 4) * 5 + 7)
        >>> bool(z.mean((0, 2, 3)).abs().max() < 1e-5)
        True
    """
    x = feature.float().transpose(0, 1).reshape(feature.shape[1], -1)  # (C, N·H·W)
    std = x.std(dim=1, keepdim=True, correction=1 if x.shape[1] > 1 else 0)
    z = (x - x.mean(dim=1, keepdim=True)) / (std + eps)
    return z.reshape(feature.shape[1], feature.shape[0], *feature.shape[2:]).transpose(0, 1)


@feature_loss("pkd", default_weight=10.0)
class PearsonDistillationLoss(nn.Module):
    """PKD loss for one pair of (aligned student, teacher) feature maps of shape ``(N, C, H, W)``.

    Examples:
        >>> x = torch.randn(2, 8, 4, 4)
        >>> float(PearsonDistillationLoss()(x, 3 * x + 1)) < 1e-6  # invariant to a positive affine map
        True
    """

    @classmethod
    def from_config(cls, config: LossSettings, channels: int) -> PearsonDistillationLoss:
        """Return the loss (it has no setting)."""
        return cls()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return ½ · mean((standardize(student) − standardize(teacher))²)."""
        return F.mse_loss(standardize_channels(student), standardize_channels(teacher)) / 2
