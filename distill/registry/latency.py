"""Inference time per image, the one way every part of yolo-distill measures it.

The evaluate step records it per model (``latency_ms`` in its report, MLflow and the model card) and the accuracy
benchmark draws it as the Pareto chart's x. Both time a model with Ultralytics' own predictor, one image per
``predict`` call (batch 1: given a list, Ultralytics batches it and its per-image ``speed`` becomes that batch's
mean), at the run's image size and device, after a short warm-up (the first calls allocate and pick kernels). The
time of one image is the sum of Ultralytics' own ``speed`` parts — preprocess, inference, postprocess, in ms, the
accelerator synchronised — and a model's figure is the median over the images (not the sum of the parts' medians).
Reading the image file is not part of it: it depends on the disk, not on the model.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

#: Ultralytics' per-image timings, in the order a prediction runs them.
PARTS = ("preprocess", "inference", "postprocess")
#: Predictions made (and not timed) before the timed pass.
WARMUP = 2


def time_per_image(
    model: Any, images: list[Path], imgsz: int, device: str | None, warmup: int = WARMUP
) -> dict[str, Any]:
    """Return the median per-image time (ms) of ``model`` (an Ultralytics ``YOLO``) over ``images``, and its parts.

    ``threads`` is what the run used, as Ultralytics left it: torch's (its ``select_device`` sets
    ``min(8, cores - 1)`` on CPU) or ONNX Runtime's intra-op setting (0: its default, the physical cores);
    ``providers`` ONNX Runtime's, where it ran.
    """
    import torch

    if not images:
        raise ValueError("time_per_image needs at least one image")
    for k in range(warmup):
        model.predict(str(images[k % len(images)]), imgsz=imgsz, device=device, verbose=False)
    parts: dict[str, list[float]] = {part: [] for part in PARTS}
    for image in images:
        (result,) = model.predict(str(image), imgsz=imgsz, device=device, verbose=False)
        for part in PARTS:
            parts[part].append(float(result.speed[part]))
    totals = [sum(values) for values in zip(*parts.values(), strict=True)]
    session = getattr(getattr(getattr(model.predictor, "model", None), "backend", None), "session", None)
    return {
        "ms_per_image": round(statistics.median(totals), 3),
        **{f"{part}_ms": round(statistics.median(parts[part]), 3) for part in PARTS},
        "images": len(totals),
        "threads": session.get_session_options().intra_op_num_threads if session else torch.get_num_threads(),
        "providers": session.get_providers() if session is not None else None,
    }
