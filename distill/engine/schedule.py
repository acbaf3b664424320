"""KD weight over epochs: constant, linear or cosine decay, and switching KD off for the last epochs.

Switching KD off at the end mirrors RTMDet's distillation recipe, which stops the KD losses when mosaic augmentation
closes so the student settles on clean data with its own task loss alone; ``distill_off_epochs="close_mosaic"`` ties
the two together (:func:`resolve_off_epochs`).
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


def resolve_off_epochs(setting: int | str, epochs: int, close_mosaic: int) -> int:
    """Return how many final epochs run without KD: ``setting`` itself, or the trainer's mosaic-closed epochs.

    With ``setting == "close_mosaic"`` KD stops exactly when Ultralytics closes mosaic: its trainer turns mosaic off
    from epoch ``epochs - close_mosaic`` (0-based) when ``close_mosaic > 0``, i.e. for the last ``close_mosaic``
    epochs. A run with no mosaic stage — ``close_mosaic >= epochs``, which Ultralytics trains without mosaic from the
    start, or ``close_mosaic=0`` — has no second stage to hand over to, so KD stays on throughout (the setting is the
    shipped default; a 5-epoch fine-tune must not silently train without its teacher).

    Args:
        setting (int | str): ``DistillConfig.distill_off_epochs``.
        epochs (int): Total epochs of the run.
        close_mosaic (int): The trainer's ``close_mosaic`` argument.

    Examples:
        >>> resolve_off_epochs(3, 100, 10), resolve_off_epochs("close_mosaic", 100, 10)
        (3, 10)
        >>> resolve_off_epochs("close_mosaic", 100, 0), resolve_off_epochs("close_mosaic", 5, 10)
        (0, 0)
    """
    if setting == "close_mosaic":
        closed = max(int(close_mosaic or 0), 0)
        return closed if closed < epochs else 0
    return int(setting)
