"""Mimic: plain feature imitation.

Li, Jin, Yan — "Mimicking Very Efficient Network for Object Detection", CVPR 2017. The student's (channel-aligned)
feature map regresses the teacher's with a mean squared error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MimicLoss(nn.Module):
    """Mean squared error between aligned student and teacher feature maps.

    Examples:
        >>> x = torch.randn(2, 8, 4, 4)
        >>> float(MimicLoss()(x, x))
        0.0
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return mean((student - teacher)²)."""
        return F.mse_loss(student.float(), teacher.float())
