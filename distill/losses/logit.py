"""Logit distillation: the student's head outputs regress the teacher's.

Every raw head output that both models produce in the same shape is compared with a mean squared error and the
per-output errors are summed: the box distribution (``boxes``, DFL logits) and class scores (``scores``) of a detect
head, plus ``mask_coefficient`` for segment and ``kpts`` for pose. End-to-end heads (YOLO26, YOLOv10) are compared
on their one-to-many branch, the one their task loss trains densely. Default weight 0.25 (the seed implementation's).
This is ``logit_loss="mse"``; :mod:`.distribution` is the distribution-aware ``"kl"`` alternative.

With ``conf_weight`` (``logit_conf_weight``) each output's squared error, averaged over its channels, is averaged over
anchors weighted by the teacher's confidence (:mod:`.weighting`) instead of uniformly. Most anchors are background,
and there a head's keypoint offsets and mask coefficients are never trained and mean nothing: on the tiger keypoint set
(one large object per image) only a small fraction of the anchors hold an object the teacher sees, and nearly all of
the uniform ``kpts`` error comes from the others — the student is taught the teacher's background noise
(``benchmarks/README.md``, section 'Pose on a real keypoint set (tiger)').
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .weighting import anchor_mean, teacher_confidence

#: Raw head outputs that are per-anchor predictions (``feats`` and ``proto`` are intermediate maps, not logits).
HEAD_OUTPUTS = ("boxes", "scores", "mask_coefficient", "kpts")


def head_dict(preds: Any) -> dict[str, Any]:
    """Return the raw head dict of a model's forward result: the per-anchor outputs plus ``feats`` (and ``proto``).

    Args:
        preds: A train-mode head dict, an eval-mode ``(decoded, dict)`` tuple, or an end-to-end dict with
            ``one2many`` / ``one2one`` branches (the one-to-many branch is returned).

    Returns:
        (dict): The head dict; empty when ``preds`` holds none.
    """
    if isinstance(preds, tuple | list):
        preds = next((p for p in preds if isinstance(p, dict)), {})
    if isinstance(preds, dict) and "one2many" in preds:
        preds = preds["one2many"]
    return preds if isinstance(preds, dict) else {}


def head_outputs(preds: Any) -> dict[str, torch.Tensor]:
    """Return the raw per-anchor head outputs of a model's forward result (train or eval mode).

    Args:
        preds: A train-mode head dict, an eval-mode ``(decoded, dict)`` tuple, or an end-to-end dict with
            ``one2many`` / ``one2one`` branches.

    Returns:
        (dict[str, torch.Tensor]): Outputs named in :data:`HEAD_OUTPUTS` that are present.
    """
    head = head_dict(preds)
    return {k: head[k] for k in HEAD_OUTPUTS if isinstance(head.get(k), torch.Tensor)}


def shared_outputs(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> list[str]:
    """Names of the head outputs both models produce in the same shape (ignoring the batch dimension)."""
    return [k for k in HEAD_OUTPUTS if k in student and k in teacher and student[k].shape[1:] == teacher[k].shape[1:]]


class LogitLoss(nn.Module):
    """Sum over shared head outputs of MSE(student, teacher), per anchor uniform or weighted by teacher confidence.

    Args:
        keys (list[str]): The output names to compare, fixed when the pair is validated.
        conf_weight (bool): Weight each anchor by the teacher's confidence (needs the teacher's ``scores``).

    Examples:
        >>> loss = LogitLoss(["scores"])
        >>> p = {"scores": torch.ones(2, 3, 5)}
        >>> float(loss(p, p))
        0.0
    """

    def __init__(self, keys: list[str], conf_weight: bool = False) -> None:
        super().__init__()
        self.keys = list(keys)
        self.conf_weight = conf_weight

    @property
    def terms(self) -> dict[str, str]:
        """How each compared output is compared (recorded in ``distill.json``)."""
        return dict.fromkeys(self.keys, "mse-conf" if self.conf_weight else "mse")

    def forward(
        self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], criterion: Any = None
    ) -> torch.Tensor:
        """Return Σ_k mean((student[k] − teacher[k])²); ``criterion`` is unused (the ``kl`` loss's call signature).

        With ``conf_weight`` the mean over anchors is weighted by the teacher's confidence (channels averaged first),
        which for uniform weights is the same number as the plain mean.
        """
        if not self.conf_weight:
            return sum(F.mse_loss(student[k].float(), teacher[k].detach().float()) for k in self.keys)
        weight = teacher_confidence(teacher["scores"])  # (B, A)
        errors = ((student[k].float() - teacher[k].detach().float()) ** 2 for k in self.keys)
        return sum(anchor_mean(e.mean(dim=1), weight) for e in errors)
