"""Mimic: plain feature imitation.

Li, Jin, Yan — "Mimicking Very Efficient Network for Object Detection", CVPR 2017. The student's (channel-aligned)
feature map regresses the teacher's with a mean squared error.

Default weight 1.0: the error is already a mean per element, so it does not grow with the maps' size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LossSettings, feature_loss


@feature_loss("mimic", default_weight=1.0)
class MimicLoss(nn.Module):
    """Mean squared error between aligned student and teacher feature maps.

    Examples:
        >>> x = torch.randn(2, 8, 4, 4)
        >>> float(MimicLoss()(x, x))
        0.0
    """

    @classmethod
    def from_config(cls, config: LossSettings, channels: int) -> MimicLoss:
        """Return the loss (it has no setting)."""
        return cls()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return mean((student - teacher)²)."""
        return F.mse_loss(student.float(), teacher.float())
