"""Localization distillation (LD) of the DFL box distributions.

Zheng, Ye, Wang, Cao, Ren, Zuo, Cheng — "Localization Distillation for Dense Object Detection", CVPR 2022. A DFL head
predicts each box side (left, top, right, bottom) as a distribution over ``reg_max`` bins (the ``boxes`` head output,
shape ``(B, 4·reg_max, A)``). The student's distribution of every anchor-side is pulled towards the teacher's, both
softened with temperature T:

    L = T² · mean over anchors a and sides k of KL(softmax(t_ak / T) ‖ softmax(s_ak / T))

(the KL summed over bins; MMDetection's ``KnowledgeDistillationKLDivLoss`` averages over the bins instead, i.e. its
``loss_weight=0.25`` equals 0.25/17 here). Default T = 10, as in the paper and MMDetection's LD configs. At high T the
term approaches half the MSE of the centred logits, so it sits at the scale of the ``mse`` logit loss it replaces.
Heads without a distribution (``reg_max=1``, YOLO26) have nothing to soften: their boxes keep the MSE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .weighting import anchor_mean


def dfl_kl_divergence(student: torch.Tensor, teacher: torch.Tensor, tau: float = 10.0) -> torch.Tensor:
    """Return T² · KL(teacher ‖ student) per anchor, averaged over the 4 sides: shape ``(B, A)``.

    Args:
        student (torch.Tensor): Student DFL logits ``(B, 4·reg_max, A)``.
        teacher (torch.Tensor): Teacher DFL logits, same shape (detached here).
        tau (float): Temperature T.
    """
    b, c, a = student.shape
    s = student.float().view(b, 4, c // 4, a) / tau
    t = teacher.detach().float().view(b, 4, c // 4, a) / tau
    t_log = F.log_softmax(t, dim=2)
    kl = (t_log.exp() * (t_log - F.log_softmax(s, dim=2))).sum(dim=2)  # (B, 4, A)
    return kl.mean(dim=1) * tau**2


class LocalizationDistillationLoss(nn.Module):
    """LD loss over all anchors, optionally weighted per anchor.

    Args:
        tau (float): Temperature T (10 in the paper).

    Examples:
        >>> x = torch.randn(2, 64, 10)
        >>> float(LocalizationDistillationLoss()(x, x)) < 1e-6
        True
    """

    def __init__(self, tau: float = 10.0) -> None:
        super().__init__()
        self.tau = tau

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Return the (weighted) mean over anchors of :func:`dfl_kl_divergence`."""
        return anchor_mean(dfl_kl_divergence(student, teacher, self.tau), weight)
