"""Soft targets only on the unlabelled pool (``pool_targets="soft"``): the KD terms alone teach the pool's objects.

The task loss neither learns them nor learns their place as background. With the default (``pseudo``) the
teacher's pseudo-labels on pool images train the task loss like real labels, and the KD terms run on top. ``soft``
keeps the pseudo-labels only to say *where the teacher saw an object*: the task loss ignores the anchors assigned to
those objects (no box, class, mask or keypoint loss there, and not background either), so what the student learns
about them comes from the teacher's outputs and features alone — issue 21's "soft targets only" row. Pool images
stay in the same list, batches and mosaics as the labelled ones.

Two seams, both public Ultralytics API:

- **The dataset** (:func:`mark_pool_instances`): the training dataset's ``update_labels_info`` — which every image
  passes through before augmentation, mosaic tiles included — shifts the class of each pool instance by ``nc``, so a
  pool object stays recognisable through mosaic, mixup and copy-paste (Ultralytics' label check only ever sees the
  files, where classes are in range).
- **The loss** (:func:`soft_batch`): before the student's criterion runs, the shift is undone and the criterion's
  task-aligned assigner is wrapped (:class:`IgnoreSoftTargets`): anchors it assigns to a pool object leave the
  foreground, and their class targets become the student's own (detached) scores, whose binary cross-entropy has no
  gradient. The loss value still counts those anchors' entropy; the gradient does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import DistillError

#: The key of a pool dataset's ``data.yaml`` (:mod:`distill.engine.pool_data`) naming the folder of its pool images.
POOL_IMAGES_KEY = "pool_images"


class SoftLabels:
    """Stands in for a dataset's ``update_labels_info``: shifts the classes of pool images' instances by ``nc``."""

    def __init__(self, update: Any, folder: str, nc: int) -> None:
        self.update, self.folder, self.nc = update, folder.rstrip("/") + "/", nc

    def __call__(self, label: dict[str, Any]) -> dict[str, Any]:
        """Mark the instances of a pool image (a copy: Ultralytics deep-copies each label before this), then update."""
        if str(label.get("im_file", "")).startswith(self.folder) and len(label.get("cls", ())):
            label["cls"] = label["cls"] + self.nc
        return self.update(label)


def mark_pool_instances(dataset: Any, data: dict[str, Any]) -> int:
    """Make ``dataset`` (a training dataset) mark its pool images' instances; return how many images it lists there.

    ``data`` is the trainer's dataset dict; without :data:`POOL_IMAGES_KEY` (no pool) nothing changes.
    """
    folder = data.get(POOL_IMAGES_KEY)
    if not folder:
        return 0
    marker = SoftLabels(dataset.update_labels_info, str(Path(folder).resolve()), len(data["names"]))
    dataset.update_labels_info = marker
    return sum(f.startswith(marker.folder) for f in dataset.im_files)  # the images it will mark, by its own test


class IgnoreSoftTargets:
    """Wraps a task-aligned assigner: anchors assigned to a soft (pool) object are neither foreground nor background.

    ``soft`` is set by :func:`soft_batch` for one loss call: a bool per target row of the batch, in batch order.
    """

    def __init__(self, assigner: Any) -> None:
        self.assigner = assigner
        self.soft: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch_idx, soft flag) per target row

    def __getattr__(self, name: str) -> Any:  # the wrapped assigner's settings (topk, num_classes, ...)
        if name == "assigner":
            raise AttributeError(name)
        return getattr(self.assigner, name)

    def __call__(self, pd_scores: torch.Tensor, *args: torch.Tensor, **kwargs: Any) -> tuple:
        """Assign as the wrapped assigner does, then take the anchors of soft objects out of the loss.

        ``pd_scores`` are the predicted (sigmoid, detached) class scores; ``args`` the assigner's other inputs
        (predicted boxes, anchor points, gt labels, gt boxes, gt mask), ``kwargs`` its task-specific ones.
        """
        out = self.assigner(pd_scores, *args, **kwargs)
        gt_labels = args[2]
        if self.soft is None or gt_labels.shape[1] == 0:  # no object in the batch: nothing was assigned
            return out
        target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx = out
        per_gt = per_image_flags(*self.soft, gt_labels.shape[0], gt_labels.shape[1]).to(fg_mask.device)
        ignore = fg_mask & per_gt.gather(1, target_gt_idx.long())
        target_scores = torch.where(ignore[..., None], pd_scores.to(target_scores.dtype), target_scores)
        return target_labels, target_bboxes, target_scores, fg_mask & ~ignore, target_gt_idx


def per_image_flags(batch_idx: torch.Tensor, flags: torch.Tensor, images: int, slots: int) -> torch.Tensor:
    """Lay per-row flags out as the criterion's ``preprocess`` lays targets out: (images, slots), in row order."""
    out = torch.zeros(images, max(slots, 1), dtype=torch.bool)
    idx = batch_idx.view(-1).long().cpu()
    flags = flags.view(-1).cpu()
    for i in range(images):
        row = flags[idx == i]
        out[i, : len(row)] = row
    return out[:, :slots]


def assigners(criterion: Any) -> list[tuple[Any, str]]:
    """Return (owner, attribute) of every assigner the criterion uses (end-to-end heads have two criteria)."""
    owners = [criterion] + [getattr(criterion, n) for n in ("one2many", "one2one") if hasattr(criterion, n)]
    return [(o, "assigner") for o in owners if getattr(o, "assigner", None) is not None]


def soft_batch(student: Any, batch: dict[str, Any], nc: int) -> dict[str, Any]:
    """Return ``batch`` with pool instances' classes shifted back, and arm the student criterion's assigners.

    Call :func:`disarm` after the task loss: the flags hold for one call only.
    """
    if getattr(student, "criterion", None) is None:
        student.criterion = student.init_criterion()  # what BaseModel.loss does on its first call
    found = assigners(student.criterion)
    if not found:
        raise DistillError(
            f"pool_targets=soft: the student's loss {type(student.criterion).__name__} has no task-aligned assigner"
        )
    cls = batch["cls"]
    soft = cls.view(-1) >= nc
    for owner, name in found:
        wrapper = getattr(owner, name)
        if not isinstance(wrapper, IgnoreSoftTargets):
            wrapper = IgnoreSoftTargets(wrapper)
            setattr(owner, name, wrapper)
        wrapper.soft = (batch["batch_idx"], soft)
    return {**batch, "cls": torch.where(soft.view_as(cls), cls - nc, cls)}


def disarm(student: Any) -> None:
    """Forget the flags :func:`soft_batch` set (validation and the next batch assign as usual until armed again)."""
    for owner, name in assigners(getattr(student, "criterion", None) or object()):
        wrapper = getattr(owner, name)
        if isinstance(wrapper, IgnoreSoftTargets):
            wrapper.soft = None
