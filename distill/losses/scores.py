"""Soft-target distillation of the class scores: the teacher's sigmoid probabilities as targets.

YOLO heads score every class independently with a sigmoid, so the soft targets are per-class Bernoulli
probabilities p_t = sigmoid(t) (Hinton et al.'s soft targets, in the binary form YOLO KD implementations use). The
student's logits s are trained with binary cross-entropy against them; the teacher's own entropy is subtracted, which
leaves the gradient unchanged and makes the term a binary KL divergence (0 when the student matches):

    L = mean over anchors of Σ_c [BCE(s_c, p_t,c) − H(p_t,c)] = Σ_c KL(Bern(p_t,c) ‖ Bern(sigmoid(s_c)))

No temperature (T = 1). Optionally weighted per anchor by the teacher's confidence (``logit_conf_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .weighting import anchor_mean


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Return the element-wise KL(Bern(sigmoid(t)) ‖ Bern(sigmoid(s))) = BCE(s, p_t) − BCE(t, p_t).

    Examples:
        >>> x = torch.randn(3, 4)
        >>> float(binary_kl(x, x).abs().max()) < 1e-6
        True
    """
    t = teacher_logits.detach().float()
    p = t.sigmoid()
    cross = F.binary_cross_entropy_with_logits(student_logits.float(), p, reduction="none")
    return cross - F.binary_cross_entropy_with_logits(t, p, reduction="none")


class ScoreDistillationLoss(nn.Module):
    """Binary KL of the class scores, summed over classes, averaged (optionally weighted) over anchors.

    Examples:
        >>> s, t = torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
        >>> float(ScoreDistillationLoss()(s, t))
        0.0
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Return the (weighted) anchor mean of Σ_c binary_kl(student, teacher); inputs ``(B, nc, A)``."""
        return anchor_mean(binary_kl(student, teacher).sum(dim=1), weight)
