"""How per-anchor KD terms are averaged: uniformly, or weighted by the teacher's confidence.

A dense head predicts at every anchor (8400 at 640 px), most of them background. Weighting an anchor by the teacher's
confidence — its highest sigmoid class probability — concentrates a term on the anchors where the teacher sees an
object, as Ultralytics' built-in ``DistillationModel`` does for its feature loss and Localization Distillation does by
restricting box distillation to positive regions. Weights are normalised by their sum, so a weighted term keeps the
scale of a plain mean.
"""

from __future__ import annotations

import torch


def teacher_confidence(scores: torch.Tensor) -> torch.Tensor:
    """Return the teacher's per-anchor confidence ``max_c sigmoid(scores)``, shape ``(B, A)``, detached.

    Args:
        scores (torch.Tensor): Class logits of shape ``(B, nc, A)``.

    Examples:
        >>> teacher_confidence(torch.zeros(2, 3, 5)).shape
        torch.Size([2, 5])
    """
    return scores.detach().float().sigmoid().amax(dim=1)


def anchor_mean(values: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``Σ w·v / Σ w`` (the plain mean when ``weight`` is None; 0 when every weight is 0).

    Examples:
        >>> float(anchor_mean(torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0])))
        1.5
    """
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1e-9)
