"""The one seam into the Ultralytics trainer.

Ultralytics builds its trainer from validated ``overrides`` (unknown keys are rejected) and callbacks; its DDP
launcher re-creates the trainer in every rank from ``type(trainer)``, ``args``, the model and the callbacks. So the
KD settings ride on a picklable callback object, :class:`DistillCallbacks`, which also applies the weight schedule and
saves the online teacher. The trainer subclasses override two small methods and nothing else:

- ``set_model_attributes`` — after the stock attributes land on the student, wrap it in :class:`~distill.model.KDModel`.
  It runs before compile, freezing, the AMP check, DDP wrapping, the EMA copy and the optimizer, so all of those see
  the finished model (adapters included).
- ``setup_model`` — on resume, rebuild the student from our checkpoint and keep the adapters/generators to restore
  (the stock code would rebuild a plain ``DistillationModel``).
"""

from __future__ import annotations

import json
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics import __version__ as ultralytics_version
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from .config import DistillConfig
from .errors import DistillError
from .model import KDModel, build_kd_model
from .schedule import kd_scale, resolve_off_epochs

TEACHER_WEIGHTS = "teacher.pt"


class DistillCallbacks:
    """Carries the :class:`DistillConfig` through trainer construction and DDP, and acts on training events.

    Registered on an Ultralytics model or trainer with :meth:`attach`; found again by the trainer with :meth:`find`.
    """

    def __init__(self, config: DistillConfig) -> None:
        self.config = config

    def attach(self, callbacks: dict[str, list]) -> dict[str, list]:
        """Return a copy of an Ultralytics callbacks dict with this object's handlers added (the input is untouched)."""
        out = {event: list(handlers) for event, handlers in callbacks.items()}
        out.setdefault("on_train_epoch_start", []).append(self.on_train_epoch_start)
        out.setdefault("on_model_save", []).append(self.on_model_save)
        return out

    @staticmethod
    def find(callbacks: dict[str, list]) -> DistillCallbacks:
        """Return the instance attached to ``callbacks``; raise if the trainer was started without one."""
        for handler in callbacks.get("on_train_epoch_start", []):
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, DistillCallbacks):
                return owner
        raise DistillError("distillation trainer started without a DistillConfig; use distill.distill()")

    def on_train_epoch_start(self, trainer: Any) -> None:
        """Apply the KD weight schedule for this epoch (every rank runs it)."""
        model = unwrap_model(trainer.model)
        if isinstance(model, KDModel):
            cfg = self.config
            off = resolve_off_epochs(cfg.distill_off_epochs, trainer.epochs, trainer.args.close_mosaic)
            if off >= trainer.epochs and trainer.epoch == trainer.start_epoch and RANK in {-1, 0}:
                LOGGER.warning(
                    f"distill: distill_off_epochs={cfg.distill_off_epochs!r} covers all {trainer.epochs} epochs "
                    f"(close_mosaic={trainer.args.close_mosaic}): KD is off for the whole run"
                )
            model.kd_scale = kd_scale(cfg.schedule, trainer.epoch, trainer.epochs, off)

    def on_model_save(self, trainer: Any) -> None:
        """In online mode, save the jointly trained teacher next to the student's checkpoints (rank 0)."""
        model = unwrap_model(trainer.model)
        if self.config.online and isinstance(model, KDModel):
            save_teacher(model, trainer, Path(trainer.wdir) / TEACHER_WEIGHTS)


def save_teacher(model: KDModel, trainer: Any, path: Path) -> None:
    """Write the online teacher as a plain Ultralytics checkpoint (loads with ``YOLO(path)``)."""
    model._teacher_feats.clear()
    teacher = deepcopy(model.teacher_model).half()
    for m in teacher.modules():
        DistillationModel._clear_feature_hooks(m)
    teacher.criterion = None
    teacher.args = dict(vars(trainer.args))
    for p in teacher.parameters():
        p.requires_grad = False
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "epoch": -1,
            "model": teacher,
            "train_args": dict(vars(trainer.args)),
            "date": datetime.now().astimezone().isoformat(),
            "version": ultralytics_version,
            "license": "AGPL-3.0 (https://ultralytics.com/license)",
        },
        tmp,
    )
    tmp.replace(path)  # never leave a half-written teacher.pt


class DistillTrainerMixin:
    """Adds distillation to an Ultralytics task trainer through ``set_model_attributes`` and ``setup_model``."""

    def __init__(self, cfg: Any = None, overrides: dict | None = None, _callbacks: dict | None = None) -> None:
        from ultralytics.utils import DEFAULT_CFG

        super().__init__(DEFAULT_CFG if cfg is None else cfg, overrides, _callbacks)
        self.distill = DistillCallbacks.find(self.callbacks)
        self.distill_plan: dict[str, Any] | None = None
        self._kd_resume_state: dict | None = None

    def setup_model(self):
        """On resume, rebuild the student from our checkpoint and keep the KD parts for :meth:`set_model_attributes`."""
        if self.resume and not isinstance(self.model, nn.Module):
            weights, ckpt = load_checkpoint(self.model)
            if isinstance(weights, KDModel):
                student = weights.student_model
                self.model = self.get_model(cfg=student.yaml, weights=student, verbose=RANK in {-1, 0})
                self._kd_resume_state = weights.kd_state_dict()
                online_teacher = Path(self.wdir) / TEACHER_WEIGHTS
                if self.distill.config.online and online_teacher.is_file():
                    self._kd_resume_state["teacher"] = str(online_teacher)
                return ckpt
        return super().setup_model()

    def set_model_attributes(self):
        """Set the stock attributes on the student, then wrap it in the :class:`KDModel` (validated up front)."""
        super().set_model_attributes()
        if isinstance(unwrap_model(self.model), KDModel):
            return
        self.model, self.distill_plan = build_kd_model(
            self.model, self, self.distill.config, resume_state=self._kd_resume_state
        )
        if RANK in {-1, 0}:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "distill.json").write_text(json.dumps(self.distill_plan, indent=2) + "\n")
            pairs = ", ".join(
                f"{p['student']['index']}->{p['teacher']['index']} ({p['adapter']})" for p in self.distill_plan["pairs"]
            )
            LOGGER.info(
                f"distill: {self.distill_plan['mode']} {self.distill.config.loss} "
                f"(weight {self.distill.config.feat_weight}), logit={self.distill_plan['logit_loss'] or False} "
                f"on {self.distill_plan['logit_outputs']}; pairs: {pairs or 'none'}"
            )


class DistillDetectionTrainer(DistillTrainerMixin, DetectionTrainer):
    """Ultralytics ``DetectionTrainer`` with knowledge distillation."""


class DistillSegmentationTrainer(DistillTrainerMixin, SegmentationTrainer):
    """Ultralytics ``SegmentationTrainer`` with knowledge distillation."""


class DistillPoseTrainer(DistillTrainerMixin, PoseTrainer):
    """Ultralytics ``PoseTrainer`` with knowledge distillation."""


DISTILL_TRAINERS = {
    "detect": DistillDetectionTrainer,
    "segment": DistillSegmentationTrainer,
    "pose": DistillPoseTrainer,
}
PLAIN_TRAINERS = {"detect": DetectionTrainer, "segment": SegmentationTrainer, "pose": PoseTrainer}
