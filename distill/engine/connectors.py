"""How channels are aligned: a 1×1 convolution from the student's channel count to the teacher's, per layer pair.

Adapters are ordinary submodules of the distillation model, so Ultralytics' optimizer builder gives them parameter
groups, warmup and the LR schedule, the EMA and checkpoints carry them for resume, and ``strip_optimizer`` drops them
from the final student weights together with the rest of the wrapper.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelAdapter(nn.Module):
    """Project an ``(N, C_student, H, W)`` feature map to ``(N, C_teacher, H, W)`` with a 1×1 conv.

    Args:
        student_channels (int): Channels of the student layer.
        teacher_channels (int): Channels of the paired teacher layer.

    Examples:
        >>> adapter = ChannelAdapter(64, 128)
        >>> adapter(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 128, 8, 8])
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.proj = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the student map projected to the teacher's channels."""
        return self.proj(x)
