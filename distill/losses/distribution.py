"""Distribution logit distillation (``logit_loss="kl"``): each head output compared as what it predicts.

The ``mse`` logit loss (:mod:`.logit`) regresses raw logits. This one compares distributions and decoded geometry:

- ``boxes`` (DFL logits): Localization Distillation, T² · KL per anchor-side at temperature T (:mod:`.ld`, Zheng
  et al., CVPR 2022; T = 10). Heads without a box distribution (``reg_max = 1``, YOLO26) keep the MSE.
- ``scores``: binary KL towards the teacher's sigmoid probabilities, summed over classes (:mod:`.scores`).
- ``kpts`` (pose): OKS-style distance between decoded keypoints, weighted by the teacher's keypoint visibility and
  confidence, plus visibility KL (:mod:`.keypoints`).
- ``mask_coefficient`` (segment): binary KL between masks assembled from coefficients × prototypes on the teacher's
  most confident anchors (:mod:`.masks`).

The terms are summed. ``boxes`` and ``scores`` are averaged over all anchors, or — with ``conf_weight`` — weighted by
the teacher's confidence (:mod:`.weighting`); keypoints and masks are always confidence-weighted, since a background
anchor's keypoints or mask mean nothing. Keypoints and masks need the teacher's decoded boxes (same ``reg_max``) and
the student's task criterion (anchors, strides, keypoint decode and sigmas); without shared boxes they keep the MSE.
The default weight is the ``logit_weight`` shared with ``mse`` (0.25): at T = 10 the box term is about half the MSE of
centred logits, so the two modes start at a comparable scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.tal import make_anchors

from .keypoints import KeypointDistillationLoss
from .ld import LocalizationDistillationLoss
from .masks import MaskDistillationLoss
from .scores import ScoreDistillationLoss
from .weighting import teacher_confidence


class DistributionLogitLoss(nn.Module):
    """Sum over shared head outputs of the distribution-aware KD term of each (see the module docstring).

    Args:
        keys (list[str]): Shared head outputs, fixed when the pair is validated.
        reg_max (int): DFL bins per box side (``boxes`` channels / 4); 1 means no distribution.
        tau (float): LD temperature T for the box distributions.
        conf_weight (bool): Weight the ``boxes`` and ``scores`` terms per anchor by the teacher's confidence.
        max_mask_anchors (int): Anchors per image whose masks are assembled (segment).

    Examples:
        >>> loss = DistributionLogitLoss(["boxes", "scores"], reg_max=16)
        >>> p = {"boxes": torch.randn(2, 64, 7), "scores": torch.randn(2, 3, 7)}
        >>> float(loss(p, p)) < 1e-5
        True
        >>> loss.terms
        {'boxes': 'ld-kl', 'scores': 'binary-kl'}
    """

    def __init__(
        self, keys: list[str], reg_max: int, tau: float = 10.0, conf_weight: bool = False, max_mask_anchors: int = 64
    ) -> None:
        super().__init__()
        self.keys = list(keys)
        self.conf_weight = conf_weight
        self.box = LocalizationDistillationLoss(tau)
        self.score = ScoreDistillationLoss()
        self.keypoint = KeypointDistillationLoss()
        self.mask = MaskDistillationLoss(max_mask_anchors)
        decodable = "boxes" in self.keys and "scores" in self.keys
        methods = {
            "boxes": "ld-kl" if reg_max > 1 else "mse",
            "scores": "binary-kl",
            "kpts": "oks" if decodable else "mse",
            "mask_coefficient": "mask-kl" if decodable else "mse",
        }
        self.terms = {k: methods.get(k, "mse") for k in self.keys}

    def forward(self, student: dict[str, Any], teacher: dict[str, Any], criterion: Any = None) -> torch.Tensor:
        """Return the summed KD terms.

        Args:
            student (dict): The student's raw head dict (``head_dict``): the compared outputs plus ``feats`` and,
                for segment, ``proto``.
            teacher (dict): The teacher's raw head dict.
            criterion: The student's task criterion (``student.criterion``); needed for ``oks`` and ``mask-kl``.
        """
        conf = teacher_confidence(teacher["scores"]) if "scores" in self.keys else None
        dense = conf if self.conf_weight else None
        geometry = None
        total = torch.zeros((), device=student[self.keys[0]].device)
        for key, method in self.terms.items():
            if method == "ld-kl":
                total = total + self.box(student[key], teacher[key], dense)
            elif method == "binary-kl":
                total = total + self.score(student[key], teacher[key], dense)
            elif method in {"oks", "mask-kl"}:
                geometry = geometry or _geometry(criterion, student, teacher)
                if method == "oks":
                    total = total + self._keypoints(student[key], teacher[key], conf, geometry)
                else:
                    total = total + self._masks(student, teacher, conf, geometry)
            else:
                total = total + F.mse_loss(student[key].float(), teacher[key].detach().float())
        return total

    def _keypoints(
        self, student: torch.Tensor, teacher: torch.Tensor, conf: torch.Tensor, geometry: dict[str, Any]
    ) -> torch.Tensor:
        crit, anchors = geometry["criterion"], geometry["anchor_points"]
        b, _, a = student.shape
        shape = tuple(crit.kpt_shape)

        def decode(kpts: torch.Tensor) -> torch.Tensor:  # (B, nk, A) -> (B·A, K, D), grid units
            return crit.kpts_decode(anchors, kpts.float().permute(0, 2, 1).reshape(b, a, *shape)).flatten(0, 1)

        boxes = geometry["boxes"]
        area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).clamp_min(0).flatten()
        sigmas = crit.keypoint_loss.sigmas
        return self.keypoint(decode(student), decode(teacher.detach()), area, sigmas, conf.flatten())

    def _masks(
        self, student: dict[str, Any], teacher: dict[str, Any], conf: torch.Tensor, geometry: dict[str, Any]
    ) -> torch.Tensor:
        student_proto, teacher_proto = _proto(student), _proto(teacher)
        stride = float(geometry["criterion"].stride[0])
        img_h, img_w = (s * stride for s in student["feats"][0].shape[2:])
        ph, pw = teacher_proto.shape[-2:]
        scale = torch.tensor([pw / img_w, ph / img_h, pw / img_w, ph / img_h], device=conf.device)
        boxes = geometry["boxes"] * geometry["stride_tensor"] * scale  # grid units -> prototype pixels
        return self.mask(
            student["mask_coefficient"], student_proto, teacher["mask_coefficient"], teacher_proto, boxes, conf
        )


def _proto(head: dict[str, Any]) -> torch.Tensor:
    """Return the prototypes of a segment head dict (YOLO26 pairs them with a semantic map in a tuple)."""
    proto = head["proto"]
    return proto[0] if isinstance(proto, tuple | list) else proto


def _geometry(criterion: Any, student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """Anchors, strides and the teacher's decoded boxes (xyxy, grid units), from the student's task criterion."""
    crit = getattr(criterion, "one2many", criterion)  # end-to-end heads: the dense branch the logits come from
    if crit is None or not hasattr(crit, "bbox_decode"):
        raise ValueError("the 'kl' logit loss needs the student's task criterion to decode keypoints and masks")
    anchor_points, stride_tensor = make_anchors(student["feats"], crit.stride, 0.5)
    anchor_points, stride_tensor = anchor_points.float(), stride_tensor.float()
    boxes = crit.bbox_decode(anchor_points, teacher["boxes"].detach().float().permute(0, 2, 1).contiguous())
    return {"criterion": crit, "anchor_points": anchor_points, "stride_tensor": stride_tensor, "boxes": boxes}
