"""Keypoint distillation on decoded positions, OKS-style (pose heads, ``logit_loss="kl"``).

Raw ``kpts`` outputs are offsets whose meaning depends on the anchor, the level's stride and the head family (YOLOv8 /
YOLO11: ``2·y + anchor − 0.5``; YOLO26: ``y + anchor``), so comparing them raw weighs every level and family
differently. Here both models' keypoints are decoded with the student's own pose criterion (``kpts_decode`` on
Ultralytics' ``make_anchors`` grid, the decode its task loss uses, in grid units), and the student's positions are
pulled to the teacher's with the object-keypoint-similarity error of Ultralytics' ``KeypointLoss`` — the same
per-keypoint sigmas and cocoeval scale the pose loss uses, with the teacher's decoded box area as the object scale:

    L_pos = mean over anchors a (weight w_a) of 1/K · Σ_k v_ak · (1 − exp(−d²_ak / (8 σ_k² · area_a)))

v_ak is the teacher's visibility probability of keypoint k and w_a the teacher's confidence at anchor a, so only
keypoints the teacher sees on objects it detects count. When the head predicts visibility, the student's visibility
logits also get the binary KL towards the teacher's (:func:`~.scores.binary_kl`), mean over keypoints, weight w_a.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.utils.loss import KeypointLoss

from .scores import binary_kl
from .weighting import anchor_mean


class KeypointDistillationLoss(nn.Module):
    """OKS-style distance between decoded student and teacher keypoints (+ visibility KL when present).

    Examples:
        >>> k = torch.rand(6, 17, 3)
        >>> float(KeypointDistillationLoss()(k, k, torch.ones(6), torch.full((17,), 0.05)))
        0.0
    """

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        area: torch.Tensor,
        sigmas: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the weighted keypoint distance (plus visibility KL) over N anchors.

        Args:
            student (torch.Tensor): Decoded student keypoints ``(N, K, D)``, grid units; ``D = 3`` carries the
                visibility logit in the last slot.
            teacher (torch.Tensor): Decoded teacher keypoints, same shape (detached here).
            area (torch.Tensor): Teacher box area per anchor ``(N,)``, grid units².
            sigmas (torch.Tensor): Per-keypoint OKS sigmas ``(K,)`` (the student criterion's).
            weight (torch.Tensor | None): Per-anchor weights ``(N,)`` (the teacher's confidence); None: uniform.

        Returns:
            (torch.Tensor): Scalar loss.
        """
        teacher = teacher.detach().float()
        student = student.float()
        n, k, d = teacher.shape
        visible = teacher[..., 2].sigmoid() if d >= 3 else torch.ones(n, k, device=teacher.device)
        w = torch.ones(n, device=teacher.device) if weight is None else weight.float()
        w = w / w.mean().clamp_min(1e-9)  # mean 1: KeypointLoss's mean over anchors becomes the weighted mean
        loss = KeypointLoss(sigmas)(student, teacher, visible * w[:, None], area.float()[:, None])
        if d >= 3:
            loss = loss + anchor_mean(binary_kl(student[..., 2], teacher[..., 2]).mean(dim=1), weight)
        return loss
