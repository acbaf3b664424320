"""Export a model with Ultralytics' exporter and verify each export against PyTorch before it ships.

An export that loads is not yet an export that predicts the same: :func:`export_verified` runs the ``.pt`` and the
exported file on the same sample images through Ultralytics' own predictor (``YOLO(file)`` picks ONNX Runtime,
TorchScript or OpenVINO by suffix) and matches the detections one by one — same class, box IoU ≥ ``min_iou``,
confidence within ``conf_tol``, keypoints within ``kpt_tol_px`` pixels, mask IoU ≥ ``min_iou`` — in both
directions, ignoring only detections whose confidence sits within ``conf_tol`` of the threshold (they may fall on
either side of it). A mismatch is a :class:`~distill.errors.RunFailure`: the register step exports and verifies
before it touches the registry, so an export that fails verification leaves nothing registered. Both take seconds
to minutes, so each says on stderr what it does and, when done, how long it took (``export: ONNX (imgsz 640, dynamic)
...``, ``verify: ONNX vs PyTorch on 8 images ...``; the verification counts its images as it goes).

Formats come only from packages installed from the registry: ``onnx`` needs ``onnx`` + ``onnxruntime`` (+
``onnxslim``, dependencies of yolo-distill), ``openvino`` the ``openvino`` package; a format whose package is missing
is refused (Ultralytics would otherwise try to pip-install it at run time).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DistillError, RunFailure
from ..progress import Progress, Stage

#: Formats the register step can ship, with the packages each needs and the file or folder Ultralytics writes.
FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "onnx": (("onnx", "onnxruntime"), ".onnx"),
    "torchscript": ((), ".torchscript"),
    "openvino": (("openvino",), "_openvino_model"),
}
DEFAULT_FORMATS = ("onnx",)
#: How the progress lines name each format.
_LABELS = {"onnx": "ONNX", "torchscript": "TorchScript", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class Tolerance:
    """How close an export's predictions must be to PyTorch's on the same images."""

    conf_tol: float = 0.02
    min_iou: float = 0.9
    kpt_tol_px: float = 2.0
    conf: float = 0.01  # the predictor's threshold: low, so the comparison covers many detections


@dataclass
class Verification:
    """The outcome of comparing one export with PyTorch (logged beside the registered version)."""

    images: int = 0
    detections: int = 0
    matched: int = 0
    max_conf_diff: float = 0.0
    min_box_iou: float = 1.0
    max_kpt_diff_px: float = 0.0
    min_mask_iou: float = 1.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every detection matched within tolerance."""
        return not self.problems


@dataclass
class Export:
    """One exported file and its verification."""

    format: str
    path: Path
    imgsz: int
    opset: int | None
    dynamic: bool
    verification: Verification

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable record."""
        return {**asdict(self), "path": str(self.path), "verification": {**asdict(self.verification),
                                                                         "ok": self.verification.ok}}  # fmt: skip


def parse_formats(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Parse ``onnx,torchscript`` into a tuple of known formats (``onnx`` always first and always included).

    Examples:
        >>> parse_formats("torchscript, onnx")
        ('onnx', 'torchscript')
    """
    items = text.split(",") if isinstance(text, str) else list(text or ())
    chosen = [s.strip().lower() for s in items if s and s.strip()]
    for fmt in chosen:
        if fmt not in FORMATS:
            raise DistillError(f"unknown export format '{fmt}': choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(["onnx", *chosen]))


def check_packages(formats: tuple[str, ...]) -> None:
    """Refuse a format whose packages are not installed (never let the exporter install them at run time)."""
    for fmt in formats:
        missing = [p for p in FORMATS[fmt][0] if importlib.util.find_spec(p) is None]
        if missing:
            raise DistillError(f"export format '{fmt}' needs {', '.join(missing)}: pip install {' '.join(missing)}")


def export_verified(
    weights: str | Path,
    images: list[Path],
    imgsz: int,
    out: str | Path,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    tolerance: Tolerance = Tolerance(),  # noqa: B008 (frozen dataclass)
    stem: str = "model",
) -> list[Export]:
    """Export ``weights`` to each format in ``out`` and verify it on ``images``; raise if one does not match.

    Args:
        weights: The ``.pt`` to export (copied to ``out/<stem>.pt`` first: the exporter writes beside its input, so
            the files are ``<stem>.pt``, ``<stem>.onnx``, ... whatever the weights were called).
        images: Sample images (the evaluated dataset's) to compare predictions on.
        imgsz: Image size of the export's recorded default and of the comparison.
        out: Folder for the exported files.
        formats: Formats to export (see :data:`FORMATS`).
        tolerance: How close the predictions must be.
        stem: File name (without suffix) of the copied weights and so of the exports.

    Returns:
        (list[Export]): One record per format, every one verified.

    Raises:
        RunFailure: An export failed or its predictions differ from PyTorch's beyond ``tolerance``.
    """
    from ultralytics import YOLO

    check_packages(formats)
    if not images:
        raise DistillError("export verification needs at least one sample image")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    local = out / f"{stem}.pt"
    if Path(weights).resolve() != local.resolve():
        shutil.copyfile(weights, local)
    reference = YOLO(str(local))
    expected: list[Any] = []  # PyTorch's predictions, made once (during the first verification)
    records = []
    for fmt in formats:
        dynamic = fmt == "onnx"
        exported = _export(local, fmt, imgsz, dynamic, weights)
        export = YOLO(str(exported), task=reference.task)
        check = _verify(reference, export, fmt, images, imgsz, tolerance, expected, weights)
        records.append(Export(fmt, exported, imgsz, _opset(exported), dynamic, check))
    return records


def _export(local: Path, fmt: str, imgsz: int, dynamic: bool, weights: str | Path) -> Path:
    """Export ``local`` to ``fmt`` with Ultralytics' exporter (seconds to minutes): say so, and how long it took."""
    from ultralytics import YOLO

    shape = f"imgsz {imgsz}" + (", dynamic" if dynamic else "")
    with Stage(f"export: {_LABELS[fmt]} ({shape})") as stage:
        try:
            exported = Path(YOLO(str(local)).export(format=fmt, imgsz=imgsz, dynamic=dynamic, device="cpu",
                                                    verbose=False))  # fmt: skip
        except Exception as e:  # the exporter's own failure (an unsupported layer, a converter error)
            raise RunFailure(f"{fmt} export of '{weights}' failed: {type(e).__name__}: {e}") from None
        stage.note = f"{exported.name}, {_size(exported) / 1e6:.1f} MB"
    return exported


def _verify(
    reference: Any,
    exported: Any,
    fmt: str,
    images: list[Path],
    imgsz: int,
    tolerance: Tolerance,
    expected: list[Any],
    weights: str | Path,
) -> Verification:
    """Predict every image with the export (and PyTorch, the first time: ``expected`` is filled) and compare.

    One image at a time, so the progress counts images; each call is what a list would do image by image (batch 1).
    Raises :class:`RunFailure` when the predictions differ beyond ``tolerance``.
    """
    with Stage(f"verify: {_LABELS[fmt]} vs PyTorch on {len(images)} images") as stage:
        got = []
        with Progress(len(images), f"verify {_LABELS[fmt]}", "images") as bar:
            for i, image in enumerate(images):
                if i == len(expected):
                    expected.append(_predict(reference, image, imgsz, tolerance))
                got.append(_predict(exported, image, imgsz, tolerance))
                bar.update(1)
        check = compare(expected, got, tolerance)
        if not check.ok:
            raise RunFailure(f"{fmt} export of '{weights}' does not match PyTorch: {'; '.join(check.problems[:3])}")
        stage.note = f"{check.matched}/{check.detections} detections matched"
    return check


def _predict(model: Any, image: Path, imgsz: int, tolerance: Tolerance) -> Any:
    """Return Ultralytics' ``Results`` for one image at the comparison's threshold."""
    return model.predict(str(image), imgsz=imgsz, conf=tolerance.conf, verbose=False)[0]


def _size(path: Path) -> int:
    """Bytes of an exported file, or of every file in an exported folder (OpenVINO writes a folder)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _opset(path: Path) -> int | None:
    if path.suffix != ".onnx":
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def compare(expected: list[Any], got: list[Any], tolerance: Tolerance) -> Verification:
    """Match the detections of two lists of Ultralytics ``Results`` (the same images, in order) both ways.

    Every PyTorch detection must have its export counterpart (counted, measured, parts compared), and every export
    detection a PyTorch one (only checked): a detection either side of the confidence threshold may go unmatched.
    """
    v = Verification(images=len(expected))
    for index, (a, b) in enumerate(zip(expected, got, strict=True)):
        _match_one_way(a, b, index, "PyTorch", tolerance, v, record=True)
        _match_one_way(b, a, index, "export", tolerance, v, record=False)
    return v


def _match_one_way(
    first: Any, second: Any, index: int, side: str, tolerance: Tolerance, v: Verification, record: bool
) -> None:
    """Find each of ``first``'s detections in ``second`` (same class, best IoU) and note what does not match.

    With ``record``, the detections, matches and worst differences go into ``v`` and the matched pairs' keypoints
    and masks are compared too.
    """
    import torch
    from ultralytics.utils.metrics import box_iou

    boxes, others = first.boxes, second.boxes
    if boxes is None or len(boxes) == 0:
        return
    ious = box_iou(boxes.xyxy, others.xyxy) if others is not None and len(others) else None
    for k in range(len(boxes)):
        conf = float(boxes.conf[k])
        clear = conf >= tolerance.conf + tolerance.conf_tol  # not one that may fall either side
        v.detections += int(record)
        same = (others.cls == boxes.cls[k]).nonzero().flatten() if ious is not None else torch.empty(0, dtype=int)
        if len(same) == 0:
            if clear:
                v.problems.append(f"image {index}: a {side} detection (conf {conf:.3f}) has no counterpart")
            continue
        j = int(same[ious[k, same].argmax()])
        iou, dconf = float(ious[k, j]), abs(conf - float(others.conf[j]))
        if record:
            v.matched += 1
            v.min_box_iou = min(v.min_box_iou, iou)
            v.max_conf_diff = max(v.max_conf_diff, dconf)
        if clear and (iou < tolerance.min_iou or dconf > tolerance.conf_tol):
            v.problems.append(f"image {index}: box IoU {iou:.3f}, confidence difference {dconf:.3f}")
            continue
        if record:
            _compare_parts(first, second, k, j, index, tolerance, v)


def _compare_parts(a: Any, b: Any, k: int, j: int, index: int, tolerance: Tolerance, v: Verification) -> None:
    """Keypoints (pose) and masks (segment) of a matched detection pair."""
    if a.keypoints is not None and b.keypoints is not None:
        diff = float((a.keypoints.xy[k] - b.keypoints.xy[j]).norm(dim=-1).max())
        v.max_kpt_diff_px = max(v.max_kpt_diff_px, diff)
        if diff > tolerance.kpt_tol_px:
            v.problems.append(f"image {index}: keypoints differ by {diff:.1f} px")
    if a.masks is not None and b.masks is not None:
        ma, mb = a.masks.data[k] > 0.5, b.masks.data[j] > 0.5
        union = float((ma | mb).sum())
        iou = float((ma & mb).sum()) / union if union else 1.0
        v.min_mask_iou = min(v.min_mask_iou, iou)
        if iou < tolerance.min_iou:
            v.problems.append(f"image {index}: mask IoU {iou:.3f}")
