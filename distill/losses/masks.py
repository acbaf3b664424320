"""Instance-mask distillation on assembled masks (segment heads, ``logit_loss="kl"``).

A YOLO segment head predicts, per anchor, coefficients that mix the model's own prototype masks: mask =
sigmoid(coefficients · prototypes). Student and teacher learn different prototypes, so their raw coefficients are not
comparable even when the masks agree. Here both models' masks are assembled (as Ultralytics' segmentation loss does,
``einsum("na,nhw->ahw")``) on the anchors where the teacher is most confident — the top ``max_anchors`` per image by
teacher confidence — and the student's mask logits are pulled to the teacher's probabilities with a per-pixel binary
KL inside the teacher's box (Ultralytics' ``crop_mask``), averaged over the box area:

    L = Σ_a w_a · [Σ_{pixels in box_a} KL(Bern(m^t_a) ‖ Bern(m^s_a)) / area_a] / Σ_a w_a

w_a is the teacher's confidence. The prototypes' resolution is the teacher's (the student's is resized if it differs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.ops import crop_mask

from .scores import binary_kl


class MaskDistillationLoss(nn.Module):
    """Binary KL between assembled student and teacher masks on the teacher's most confident anchors.

    Args:
        max_anchors (int): Anchors per image whose masks are assembled (64 bounds the memory: 64 masks at the
            prototype resolution, 160×160 at 640 px).

    Examples:
        >>> coef, proto = torch.randn(1, 4, 10), torch.randn(1, 4, 8, 8)
        >>> boxes = torch.tensor([0.0, 0.0, 8.0, 8.0]).expand(1, 10, 4)
        >>> float(MaskDistillationLoss()(coef, proto, coef, proto, boxes, torch.ones(1, 10))) < 1e-6
        True
    """

    def __init__(self, max_anchors: int = 64) -> None:
        super().__init__()
        self.max_anchors = max_anchors

    def forward(
        self,
        student_coef: torch.Tensor,
        student_proto: torch.Tensor,
        teacher_coef: torch.Tensor,
        teacher_proto: torch.Tensor,
        boxes: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """Return the confidence-weighted, box-averaged mask KL.

        Args:
            student_coef (torch.Tensor): Student mask coefficients ``(B, nm_s, A)``.
            student_proto (torch.Tensor): Student prototypes ``(B, nm_s, H_s, W_s)``.
            teacher_coef (torch.Tensor): Teacher mask coefficients ``(B, nm_t, A)``.
            teacher_proto (torch.Tensor): Teacher prototypes ``(B, nm_t, H, W)``.
            boxes (torch.Tensor): Teacher boxes ``(B, A, 4)``, xyxy in teacher-prototype pixels.
            weight (torch.Tensor): Teacher confidence ``(B, A)``.

        Returns:
            (torch.Tensor): Scalar loss.
        """
        h, w = teacher_proto.shape[-2:]
        if student_proto.shape[-2:] != (h, w):
            student_proto = F.interpolate(student_proto, (h, w), mode="bilinear", align_corners=False)
        k = min(self.max_anchors, weight.shape[1])
        total = student_coef.new_zeros((), dtype=torch.float32)
        weight_sum = total.clone()
        for i in range(weight.shape[0]):
            wi, idx = weight[i].detach().float().topk(k)
            s = torch.einsum("na,nhw->ahw", student_coef[i][:, idx].float(), student_proto[i].float())
            t = torch.einsum("na,nhw->ahw", teacher_coef[i][:, idx].detach().float(), teacher_proto[i].detach().float())
            box = boxes[i, idx].detach().float()
            area = (box[:, 2].clamp(0, w) - box[:, 0].clamp(0, w)) * (box[:, 3].clamp(0, h) - box[:, 1].clamp(0, h))
            per_anchor = crop_mask(binary_kl(s, t), box).sum(dim=(1, 2)) / area.clamp_min(1.0)
            total = total + (per_anchor * wi).sum()
            weight_sum = weight_sum + wi.sum()
        return total / weight_sum.clamp_min(1e-9)
