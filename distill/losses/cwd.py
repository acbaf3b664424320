"""Channel-wise distillation (CWD).

Shu, Liu, Gao, Yan, Shen — "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021.
Each channel's activation map is turned into a distribution over the H·W positions with a softmax at temperature
τ; the student's distribution is pulled towards the teacher's with KL(teacher ‖ student). The sum over channels and
positions is multiplied by τ² and divided by N·C (batch × channels).

Default weight 1.0: the loss is already normalised per channel, and on BCCD a larger weight, a linear decay and KD
off for the last epochs did not beat 1.0, constant (``benchmarks/README.md``, section 'Earlier table').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LossSettings, feature_loss


@feature_loss("cwd", default_weight=1.0)
class ChannelWiseDistillationLoss(nn.Module):
    """CWD loss for one pair of (aligned student, teacher) feature maps of shape ``(N, C, H, W)``.

    Args:
        tau (float): Softmax temperature; 1.0 in the paper's detection setting.

    Examples:
        >>> loss = ChannelWiseDistillationLoss()
        >>> x = torch.randn(2, 8, 4, 4)
        >>> float(loss(x, x)) < 1e-6
        True
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = tau

    @classmethod
    def from_config(cls, config: LossSettings, channels: int) -> ChannelWiseDistillationLoss:
        """Return the loss at the configured temperature ``tau``."""
        return cls(tau=config.tau)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return τ² · Σ KL(softmax(t/τ) ‖ softmax(s/τ)) / (N·C) over channels' spatial distributions."""
        n, c = student.shape[:2]
        s = student.float().reshape(n * c, -1) / self.tau
        t = teacher.float().reshape(n * c, -1) / self.tau
        t_log = F.log_softmax(t, dim=1)
        kl = (t_log.exp() * (t_log - F.log_softmax(s, dim=1))).sum()
        return kl * self.tau**2 / (n * c)
