"""Masked generative distillation (MGD).

Yang, Li, Shen, Zhan, Yuan, Yuan — "Masked Generative Distillation", ECCV 2022. A random spatial mask drops a fraction
λ of the positions of the (aligned) student feature map; a small generator (3×3 conv → ReLU → 3×3 conv) must
reconstruct the teacher's full feature map from what is left. Loss: Σ (generated − teacher)² / N, scaled by α.
Defaults are the paper's detection setting: λ = 0.65, α = 2e-5. Default weight 1.0: the loss's scale lives in α
(``mgd_alpha``), as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import LossSettings, feature_loss


def random_spatial_mask(feature: torch.Tensor, ratio: float) -> torch.Tensor:
    """Return an ``(N, 1, H, W)`` mask with ones where positions are kept and zeros on a ``ratio`` fraction dropped.

    Examples:
        >>> m = random_spatial_mask(torch.zeros(4, 3, 32, 32), 0.65)
        >>> 0.6 < 1 - float(m.mean()) < 0.7
        True
    """
    n, _, h, w = feature.shape
    return (torch.rand(n, 1, h, w, device=feature.device) >= ratio).to(feature.dtype)


@feature_loss("mgd", default_weight=1.0)
class MaskedGenerativeLoss(nn.Module):
    """MGD loss for one layer pair; owns that layer's generator, so it is trained and checkpointed with the model.

    Args:
        channels (int): Teacher channels (the student map is aligned to them before masking).
        ratio (float): Fraction λ of spatial positions masked out.
        alpha (float): Loss scale α.

    Examples:
        >>> loss = MaskedGenerativeLoss(8)
        >>> float(loss(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4))) > 0
        True
    """

    def __init__(self, channels: int, ratio: float = 0.65, alpha: float = 2e-5) -> None:
        super().__init__()
        self.ratio = ratio
        self.alpha = alpha
        self.generator = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    @classmethod
    def from_config(cls, config: LossSettings, channels: int) -> MaskedGenerativeLoss:
        """Return the loss with a generator for ``channels`` and the configured ``mgd_ratio`` / ``mgd_alpha``."""
        return cls(channels, ratio=config.mgd_ratio, alpha=config.mgd_alpha)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return α · Σ (generator(student · mask) − teacher)² / N."""
        masked = student * random_spatial_mask(student, self.ratio)
        generated = self.generator(masked)
        return ((generated.float() - teacher.float()) ** 2).sum() / student.shape[0] * self.alpha
