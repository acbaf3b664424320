"""KD weight over epochs: constant, linear or cosine decay, and switching KD off for the last epochs.

Switching KD off at the end mirrors RTMDet's distillation recipe, which stops the KD losses when mosaic augmentation
closes so the student settles on clean data with its own task loss alone.
"""

from __future__ import annotations

import math


def kd_scale(schedule: str, epoch: int, epochs: int, off_epochs: int = 0) -> float:
    """Return the factor (0..1) applied to every KD term during ``epoch`` (0-based) of ``epochs``.

    Args:
        schedule (str): ``constant``, ``linear`` (1 → 0) or ``cosine`` (1 → 0, half cosine).
        epoch (int): Current epoch, 0-based.
        epochs (int): Total epochs of the run.
        off_epochs (int): KD is 0 for the last ``off_epochs`` epochs.

    Examples:
        >>> kd_scale("constant", 3, 10)
        1.0
        >>> kd_scale("linear", 5, 10)
        0.5
        >>> kd_scale("constant", 9, 10, off_epochs=1)
        0.0
    """
    if off_epochs and epoch >= epochs - off_epochs:
        return 0.0
    progress = epoch / max(epochs, 1)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0
