"""What is captured: resolving layer presets to indices, and probing a model for each layer's output shape.

Presets are derived from the model itself, never hard-coded per size, so any scale pair works:

- ``neck`` — the inputs of the Detect/Segment/Pose head (``head.f``): 15/18/21 on YOLOv8, 16/19/22 on YOLO11/YOLO26.
- ``backbone-neck`` — the output of every CSP block (``C2f`` and its subclasses such as ``C3k2``): on YOLOv8 that is
  2,4,6,8,12,15,18,21 (the seed implementation's set), on YOLO11/YOLO26 2,4,6,8,13,16,19,22.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from ultralytics.nn.distill_model import FeatureHook
from ultralytics.nn.modules.block import C2f
from ultralytics.nn.modules.head import Detect

from ..errors import DistillError


def detect_head(model: nn.Module) -> Detect:
    """Return the model's Detect-family head (Detect, Segment, Pose, ...), the last layer of a YOLO model."""
    head = model.model[-1]
    if not isinstance(head, Detect):
        raise DistillError(f"model has no Detect-family head (last layer is {type(head).__name__})")
    return head


def resolve_layers(spec: str | list[int], model: nn.Module, role: str) -> list[int]:
    """Turn a preset or explicit list into validated layer indices of ``model``.

    Args:
        spec (str | list[int]): ``neck``, ``backbone-neck`` or explicit indices.
        model (nn.Module): A YOLO ``BaseModel`` (its ``.model`` is the layer list).
        role (str): ``student`` or ``teacher``, for error messages.

    Returns:
        (list[int]): Layer indices, each a feature layer before the head.
    """
    head = detect_head(model)
    if spec == "neck":
        return list(head.f)
    if spec == "backbone-neck":
        indices = [m.i for m in model.model if isinstance(m, C2f)]
        if not indices:
            raise DistillError(f"layers='backbone-neck' found no C2f/C3k2 blocks in the {role}; give indices instead")
        return indices
    for i in spec:
        if not 0 <= i < head.i:
            raise DistillError(
                f"{role} layer {i} does not exist: valid feature layers are 0..{head.i - 1} "
                f"(layer {head.i} is the {type(head).__name__} head)"
            )
    return list(spec)


@dataclass
class LayerShape:
    """Output shape of one captured layer at the probe input."""

    index: int
    channels: int
    height: int
    width: int


def probe(model: nn.Module, layers: list[int], imgsz: int, channels: int = 3) -> tuple[list[LayerShape], object]:
    """Run one no-grad forward on zeros and record each layer's output shape and the head's output.

    Args:
        model (nn.Module): YOLO model (restored to its previous train/eval mode afterwards).
        layers (list[int]): Layer indices to capture.
        imgsz (int): Square probe input size.
        channels (int): Input channels.

    Returns:
        (tuple[list[LayerShape], object]): Per-layer shapes, and the model's eval-mode output.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = [model.model[i].register_forward_hook(FeatureHook(captured, i)) for i in layers]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, channels, imgsz, imgsz, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    shapes = []
    for i in layers:
        t = captured.get(i)
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise DistillError(f"layer {i} ({type(model.model[i]).__name__}) does not output a feature map")
        shapes.append(LayerShape(i, t.shape[1], t.shape[2], t.shape[3]))
    return shapes, out
