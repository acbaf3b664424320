"""Deterministic synthetic datasets in the YOLO layout: shapes on textured backgrounds, for demos and smoke tests.

Each image holds a few filled shapes — squares, discs and triangles — of random size, colour and place on a noisy
background. Labels are written for the three tasks: boxes (detect), the shapes' polygons (segment) and, for pose, one
``shape`` class with 4 keypoints (the corners of the shape's bounding box, visible). Everything derives from the
seed, so the same call writes byte-identical files and prepare-data gives the same content hash.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

CLASSES = ("square", "disc", "triangle")
TASKS = ("detect", "segment", "pose")


def _polygon(kind: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Return the outline of a shape as an (N, 2) array of pixel coordinates."""
    if kind == 0:  # square, rotated
        n, start = 4, angle + math.pi / 4
    elif kind == 1:  # disc
        n, start = 24, 0.0
    else:  # triangle
        n, start = 3, angle
    t = start + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def generate(
    out: str | Path,
    task: str = "detect",
    images: int = 48,
    val: int = 16,
    size: int = 128,
    seed: int = 0,
    test: int = 0,
) -> Path:
    """Write a synthetic dataset and return its ``data.yaml``.

    Args:
        out: Output folder (created).
        task: ``detect``, ``segment`` or ``pose``.
        images: Training images.
        val: Validation images.
        size: Square image size in pixels.
        seed: Random seed; the same arguments give identical files.
        test: Held-out test images (drawn after train and val, so adding them leaves those two unchanged).
    """
    import cv2

    if task not in TASKS:
        raise ValueError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", val), ("test", test)):
        if count == 0 and split == "test":
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):  # one generator for every split, in order: the files depend on the seed alone
            img, lines = _draw_image(rng, task, size)
            cv2.imwrite(str(out / "images" / split / f"{split}_{i:04d}.png"), img)
            (out / "labels" / split / f"{split}_{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return _write_data_yaml(out, task, bool(test))


def _draw_image(rng: np.random.Generator, task: str, size: int) -> tuple[np.ndarray, list[str]]:
    """Draw one image — a noisy background and 1–3 filled shapes — and return it with its label lines for ``task``.

    The draws from ``rng`` come in a fixed order (background, then per shape: class, radius, centre, angle, colour),
    which is what makes a seed give the same files every time.
    """
    import cv2

    base = rng.integers(40, 120, size=3)
    img = np.clip(base + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
    lines = []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, len(CLASSES)))
        r = float(rng.uniform(size * 0.08, size * 0.2))
        cx, cy = (float(v) for v in rng.uniform(r, size - r, size=2))
        poly = _polygon(kind, cx, cy, r, float(rng.uniform(0, math.pi)))
        color = tuple(int(v) for v in rng.integers(150, 256, size=3))
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], color)
        values = _label(task, kind, poly, size)
        lines.append(" ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values))
    return img, lines


def _label(task: str, kind: int, poly: np.ndarray, size: int) -> list[float | int]:
    """Return one shape's YOLO label values for ``task``: class and box, class and polygon, or box and 4 keypoints.

    Coordinates are normalised to the image size and clipped to it; pose has a single ``shape`` class whose
    keypoints are the box's corners (all visible).
    """
    x1, y1 = np.clip(poly.min(0), 0, size - 1)
    x2, y2 = np.clip(poly.max(0), 0, size - 1)
    box = [(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size]
    if task == "detect":
        return [kind, *box]
    if task == "segment":
        return [kind, *(np.clip(poly, 0, size - 1) / size).ravel()]
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    return [0, *box, *(v for x, y in corners for v in (x / size, y / size, 2))]


def _write_data_yaml(out: Path, task: str, has_test: bool) -> Path:
    """Write the dataset's ``data.yaml`` (splits, class names; pose: keypoint shape and flip order) and return it."""
    data = {"train": "images/train", "val": "images/val", **({"test": "images/test"} if has_test else {})}
    if task == "pose":
        data.update({"kpt_shape": [4, 3], "flip_idx": [1, 0, 3, 2], "names": {0: "shape"}})
    else:
        data["names"] = dict(enumerate(CLASSES))
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
