"""Online targets on the unlabelled pool (``pool_targets="online"``): the pool's objects found on the student's view.

With ``pseudo`` (the default) the teacher labels each pool image once, on the clean image, and mosaic then cuts
those boxes up with the image. ``online`` makes a pool image's targets during training, from a teacher's
predictions on the very augmented batch the student trains on (issue 38, after Unbiased / Efficient Teacher):

- **Where the pool is** (:class:`PoolRegions`): the training dataset's ``update_labels_info`` — which every image
  passes through before augmentation, mosaic tiles included — replaces a pool image's objects by one *region*
  instance covering the whole image, class ``2 * nc``. Mosaic, perspective, flips and crops move it like any box, so
  in the batch it says which part of a mosaic came from a pool image. Pool images the teacher found nothing in on
  the clean image are trained on too: their targets are made on each view anew.
- **What the pool holds** (:func:`online_batch`): in the loss, the target teacher's detections on the batch (NMS,
  Ultralytics' own) whose centre lies in a pool region become that image's targets: at or above ``pseudo_conf`` an
  object, between ``uncertain_conf`` and ``pseudo_conf`` *uncertain* — neither object nor background for the task
  loss (the anchors are left out through :mod:`distill.engine.soft_pool`'s assigner wrapper, Efficient Teacher's
  pseudo-label assigner without an objectness branch to train them on). Labelled tiles keep their true labels.
- **Which teacher** (``pool_teacher``): ``frozen`` — the big teacher, whose forward the KD terms already pay for; or
  ``ema`` — after ``burn_in`` epochs, a mean teacher: an exponential moving average of the student (Ultralytics'
  ``ModelEMA``, decay ``ema_decay``), started from the student at the end of the burn-in, so the targets keep
  improving once the student passes its frozen teacher. It is kept by :class:`EMATeacher`, outside the model (not a
  parameter, not in the optimizer, the trainer's EMA or any checkpoint); a resumed run starts it again from the
  student.
- **Two views** (``strong_aug``): the teacher predicts on the batch as the dataset augmented it (the weak view) and
  the student trains on a stronger one of the images holding pool regions — colour jitter, noise and erased patches
  that move no box (:func:`strong_view`).

Detect, segment and pose: a segment target's mask is the teacher's (its prototypes and the row's coefficients,
cropped to the box, Ultralytics' ``process_mask``), a pose target's keypoints are the teacher's, visible from
``KPT_CONF`` as the offline pseudo-labels write them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DistillError
from .soft_pool import POOL_IMAGES_KEY

#: The tasks online pool targets are built for.
TASKS = ("detect", "segment", "pose")
#: A target keypoint is visible from this teacher confidence (:mod:`distill.engine.pseudo_labels`' ``kpt_conf``
#: default).
KPT_CONF = 0.5
#: IoU of Ultralytics' predictor and validator NMS (``iou`` in its ``default.yaml``).
NMS_IOU = 0.7
#: A region's polygon (segment): the whole image, normalised.
_WHOLE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=np.float32)


class PoolRegions:
    """Stands in for a dataset's ``update_labels_info``: a pool image's objects become one region instance.

    ``kpt_shape`` (pose): the region carries that many keypoints, none labelled, as every instance of the set must;
    ``segments`` (segment): its polygon is the whole image.
    """

    def __init__(
        self, update: Any, folder: str, nc: int, kpt_shape: list[int] | None = None, segments: bool = False
    ) -> None:
        self.update, self.folder, self.nc = update, folder.rstrip("/") + "/", nc
        self.kpt_shape, self.segments = kpt_shape, segments

    def __call__(self, label: dict[str, Any]) -> dict[str, Any]:
        """Replace a pool image's instances by its region (a copy: Ultralytics deep-copies each label first)."""
        if str(label.get("im_file", "")).startswith(self.folder):
            label["cls"] = np.array([[2 * self.nc]], dtype=np.float32)
            label["bboxes"] = np.array([[0.5, 0.5, 1.0, 1.0]], dtype=np.float32)  # xywh, normalised: the whole image
            label["segments"] = [_WHOLE.copy()] if self.segments else []
            if self.kpt_shape:
                label["keypoints"] = np.zeros((1, *self.kpt_shape), dtype=np.float32)
            label["normalized"], label["bbox_format"] = True, "xywh"
        return self.update(label)


def mark_pool_regions(dataset: Any, data: dict[str, Any]) -> int:
    """Make ``dataset`` (a training dataset) mark its pool images' regions; return how many images it lists there.

    ``data`` is the trainer's dataset dict; without :data:`~distill.engine.soft_pool.POOL_IMAGES_KEY` (no pool) nothing
    changes.
    """
    folder = data.get(POOL_IMAGES_KEY)
    if not folder:
        return 0
    marker = PoolRegions(dataset.update_labels_info, str(Path(folder).resolve()), len(data["names"]),
                         data.get("kpt_shape"), bool(getattr(dataset, "use_segments", False)))  # fmt: skip
    dataset.update_labels_info = marker
    return sum(f.startswith(marker.folder) for f in dataset.im_files)


def online_batch(
    batch: dict[str, Any], decoded: Any, nc: int, conf: float, low: float, overlap: bool = True
) -> dict[str, Any]:
    """Return ``batch`` with its pool regions' targets made from a teacher's decoded predictions on ``batch["img"]``.

    Args:
        batch: The training batch (``img``, ``cls``, ``bboxes`` normalised xywh, ``batch_idx``; pose: ``keypoints``
            normalised; segment: ``masks``), region rows of class ``2 * nc`` marking pool images.
        decoded: The teacher's eval-mode predictions on ``batch["img"]``: (images, 4 + nc [+ extra], anchors), xywh
            in pixels, scores after the sigmoid (pose: each keypoint's x, y in pixels and its confidence); segment:
            ``(predictions with mask coefficients, prototypes)``.
        nc: Number of classes.
        conf: Confidence from which a detection is an object (``pseudo_conf``).
        low: Confidence from which it is an uncertain object (``uncertain_conf``; ``conf`` for none).
        overlap: Segment: the masks are one map of instance ids per image (Ultralytics' ``overlap_mask``), else one
            mask per row.

    Returns:
        (dict): The batch with labelled rows unchanged, the region rows gone and, per image, the detections centred in
        one of its regions appended — objects with their class, uncertain ones with ``class + nc`` (read by
        :func:`distill.engine.soft_pool.soft_batch`) — rows ordered by image, as Ultralytics' loss expects them.
    """
    from ultralytics.utils.nms import non_max_suppression

    decoded, proto = (decoded[0], decoded[1]) if isinstance(decoded, tuple | list) else (decoded, None)
    cls, idx = batch["cls"].view(-1), batch["batch_idx"].view(-1)
    region = cls >= 2 * nc
    if not bool(region.any()):
        return batch
    keys = ["cls", "bboxes", "batch_idx", *(k for k in ("keypoints", "masks") if k in batch)]
    keys = [k for k in keys if not (k == "masks" and overlap)]  # one map per image: remade below, not per row
    rows = {k: [batch[k].view(len(cls), *batch[k].shape[1:])[~region]] for k in keys}
    detections = non_max_suppression(decoded.detach().float(), conf_thres=low, iou_thres=NMS_IOU, nc=nc)
    made: dict[int, torch.Tensor] = {}
    for i in idx[region].long().unique().tolist():
        mine = batch["bboxes"][region & (idx == i)]
        found = _targets(detections[i], mine, batch["img"].shape[2:], nc, conf, batch.get("keypoints"),
                         proto[i] if proto is not None else None, batch.get("masks"))  # fmt: skip
        if "masks" in found and overlap:
            made[i] = found.pop("masks")
        for k, v in found.items():
            rows[k].append(v.to(batch[k].dtype) if k != "batch_idx" else torch.full_like(v, i, dtype=idx.dtype))
    out = {k: torch.cat(v) for k, v in rows.items()}
    order = torch.sort(out["batch_idx"], stable=True).indices
    remade = {"masks": overlap_masks(batch["masks"], idx, region, made)} if "masks" in batch and overlap else {}
    return {**batch, **{k: v[order] for k, v in out.items()}, "cls": out["cls"][order].view(-1, 1), **remade}


def _targets(
    found: torch.Tensor,
    regions: torch.Tensor,
    hw: tuple[int, int],
    nc: int,
    conf: float,
    kpts: Any = None,
    proto: torch.Tensor | None = None,
    masks: Any = None,
) -> dict[str, torch.Tensor]:
    """Return the rows an image's detections centred in its ``regions`` (normalised xywh) make (see online_batch).

    Segment (``proto``): each row's mask at the batch masks' size, rows ordered by mask area, largest first — the
    order Ultralytics gives overlapping instances, whose ids follow it.
    """
    from ultralytics.utils.ops import process_mask, xywh2xyxy, xyxy2xywh

    h, w = hw
    scale = torch.tensor([w, h, w, h], device=regions.device, dtype=torch.float32)
    found = found.to(regions.device)
    mine = xywh2xyxy(regions.float()) * scale
    centre = (found[:, :2] + found[:, 2:4]) / 2
    found = found[((centre[:, None] >= mine[None, :, :2]) & (centre[:, None] <= mine[None, :, 2:])).all(-1).any(-1)]
    boxes = found[:, :4].clamp(min=torch.zeros(4, device=found.device), max=scale)
    out: dict[str, torch.Tensor] = {}
    if proto is not None:  # segment: the teacher's masks, from its prototypes, cropped to their boxes
        made = process_mask(proto.float(), found[:, 6:].float(), boxes, (h, w)).float()
        size = tuple(masks.shape[-2:])
        made = F.interpolate(made[None], size, mode="nearest")[0] if len(made) else made.new_zeros(0, *size)
        by_area = made.sum((1, 2)).argsort(descending=True)
        found, boxes, out["masks"] = found[by_area], boxes[by_area], made[by_area]
    out["cls"] = (found[:, 5] + nc * (found[:, 4] < conf).float()).view(-1, 1)
    out["bboxes"] = xyxy2xywh(boxes) / scale
    out["batch_idx"] = torch.zeros(len(found), device=found.device)
    if kpts is not None:  # pose: the teacher's keypoints, visible from KPT_CONF, else not labelled (0 0 0)
        k = found[:, 6:].view(len(found), *kpts.shape[1:]).clone()
        k[..., 0] /= w
        k[..., 1] /= h
        if k.shape[-1] == 3:
            seen = k[..., 2] >= KPT_CONF
            k[..., 2] = seen.float() * 2
            k[..., :2] *= seen[..., None]
        out["keypoints"] = k
    return out


def overlap_masks(
    masks: torch.Tensor, idx: torch.Tensor, region: torch.Tensor, made: dict[int, torch.Tensor]
) -> torch.Tensor:
    """Remake the per-image instance-id maps of overlapping masks after the region rows left and targets came.

    An image's map numbers its rows in batch order (1, 2, ...); its kept rows are renumbered in order, its region's
    pixels cleared, and its new targets (largest first) painted after them, never over a labelled object's pixels.
    """
    out = masks.clone()
    for i in idx[region].long().unique().tolist():
        keep = ~region[idx == i]
        lut = torch.zeros(len(keep) + 1, dtype=torch.long, device=masks.device)
        lut[1:][keep] = torch.arange(1, int(keep.sum()) + 1, device=masks.device)
        ids = lut[masks[i].long().clamp(max=len(keep))]
        base = int(keep.sum())
        for j, mask in enumerate(made.get(i, ())):  # largest first: a smaller target is painted over a larger one
            ids = torch.where(mask.bool() & ((ids == 0) | (ids > base)), base + j + 1, ids)
        out[i] = ids.to(out.dtype)
    return out


def has_regions(batch: dict[str, Any], nc: int) -> torch.Tensor:
    """Return a bool per image of the batch: whether it holds a pool region (class ``2 * nc`` rows)."""
    out = torch.zeros(batch["img"].shape[0], dtype=torch.bool, device=batch["img"].device)
    rows = batch["cls"].view(-1) >= 2 * nc
    out[batch["batch_idx"].view(-1)[rows].long()] = True
    return out


def strong_view(img: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Return ``img`` with the images ``which`` selects augmented strongly, by colour and erasing only (no box moves).

    Per image: brightness and contrast ×U(0.6, 1.4), Gaussian noise (σ 0.03) and one to three erased patches of
    2–15 % of the image each (mid grey), after Unbiased Teacher's strong view. ``img`` is in [0, 1].
    """
    if not bool(which.any()):
        return img
    out = img.clone()
    sel = out[which]
    n = sel.shape[0]
    gain = torch.empty(n, 1, 1, 1, device=img.device).uniform_(0.6, 1.4)
    contrast = torch.empty(n, 1, 1, 1, device=img.device).uniform_(0.6, 1.4)
    mean = sel.mean(dim=(1, 2, 3), keepdim=True)
    sel = ((sel * gain - mean) * contrast + mean + torch.randn_like(sel) * 0.03).clamp(0, 1)
    h, w = sel.shape[2:]
    for k in range(n):
        for _ in range(int(torch.randint(1, 4, ()))):
            area = float(torch.empty(()).uniform_(0.02, 0.15)) * h * w
            ph, pw = min(h, max(1, int(area**0.5))), min(w, max(1, int(area**0.5)))
            y, x = int(torch.randint(0, h - ph + 1, ())), int(torch.randint(0, w - pw + 1, ()))
            sel[k, :, y : y + ph, x : x + pw] = 0.5
    out[which] = sel.to(out.dtype)
    return out


class EMATeacher:
    """The mean teacher of ``pool_teacher="ema"``: an EMA of the student, started at the end of the burn-in.

    Held by the run's callbacks, never by the model, so it is no parameter, joins no optimizer, EMA or checkpoint.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: Any = None  # Ultralytics' ModelEMA, made by start()
        self.steps: int | None = None  # the trainer's EMA updates (optimizer steps) last followed

    def start(self, student: nn.Module) -> None:
        """Begin the average from the student as it is now (tau 1: the decay is ``decay`` from the first update)."""
        from ultralytics.utils.torch_utils import ModelEMA

        from ..adapter.seams import drop_feature_hooks

        self.ema = ModelEMA(student, decay=self.decay, tau=1)
        drop_feature_hooks(self.ema.ema)  # the student's feature hooks would fill the KD model's dicts

    def update(self, student: nn.Module) -> None:
        """Move the average one step toward ``student`` (a no-op before :meth:`start`)."""
        if self.ema is not None:
            self.ema.update(student)

    @property
    def model(self) -> nn.Module | None:
        """The averaged student in eval mode, or ``None`` before the burn-in ends."""
        return None if self.ema is None else self.ema.ema


def check_task(task: str) -> None:
    """Refuse ``pool_targets="online"`` for a task it is not built for yet (one line, before training)."""
    if task not in TASKS:
        raise DistillError(
            f"pool_targets=online is built for {', '.join(TASKS)} so far, not {task}: use pool_targets=pseudo"
        )
