"""The one seam into the Ultralytics trainer.

Ultralytics builds its trainer from validated ``overrides`` (unknown keys are rejected) and callbacks; its DDP
launcher re-creates the trainer in every rank from ``type(trainer)``, ``args``, the model and the callbacks. So the
KD settings ride on a picklable callback object, :class:`DistillCallbacks`, which also applies the weight schedule and
saves the online teacher. The distillation trainers override two small methods for KD:

- ``set_model_attributes`` — after the stock attributes land on the student, wrap it in
  :class:`~distill.engine.model.KDModel`. It runs before compile, freezing, the AMP check, DDP wrapping, the EMA copy
  and the optimizer, so all of those see the finished model (adapters included).
- ``setup_model`` — on resume, rebuild the student from our checkpoint and keep the adapters/generators to restore
  (the stock code would rebuild a plain ``DistillationModel``).

While a run is set up, Ultralytics' console output is held back (:func:`held_logs`) until the run is accepted —
for distillation, until the teacher/student pair is validated — so a refused run prints its one ``error:`` line
and nothing before it (no banner, no argument dump, no model table).

Every trainer here (plain and distilling) also carries :class:`LaunchMixin`, which lets it run as one rank of an
external multi-node ``torchrun`` launch (Kubeflow Trainer): see its docstring for the three overrides and why.

The underscored Ultralytics names this relies on (two overridden private methods, ``_callbacks``, the DDP class swap,
the feature-hook helpers) are listed and checked in :mod:`distill.adapter.seams`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
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

from ..adapter.seams import clear_features, cpu_ddp, drop_feature_hooks
from ..config import DistillConfig
from ..devices import check_batch_divides
from ..errors import DistillError
from ..launch import Launch, current
from .model import KDModel, build_kd_model
from .online_pool import EMATeacher
from .schedule import kd_scale, resolve_off_epochs

TEACHER_WEIGHTS = "teacher.pt"


class DistillCallbacks:
    """Carries the :class:`DistillConfig` through trainer construction and DDP, and acts on training events.

    Registered on an Ultralytics model or trainer with :meth:`attach`; found again by the trainer with :meth:`find`.
    """

    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self.mean_teacher: EMATeacher | None = None  # pool_teacher ema/auto: made when it takes over
        self.teacher_fitness: float | None = None  # pool_teacher="auto": the frozen teacher's on the val split

    def attach(self, callbacks: dict[str, list]) -> dict[str, list]:
        """Return a copy of an Ultralytics callbacks dict with this object's handlers added (the input is untouched)."""
        out = {event: list(handlers) for event, handlers in callbacks.items()}
        out.setdefault("on_train_epoch_start", []).append(self.on_train_epoch_start)
        out.setdefault("on_train_batch_end", []).append(self.on_train_batch_end)
        out.setdefault("on_train_start", []).append(self.on_train_start)
        out.setdefault("on_fit_epoch_end", []).append(self.on_fit_epoch_end)
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
            self.start_mean_teacher(model, trainer.epoch)

    def start_mean_teacher(self, model: KDModel, epoch: int) -> None:
        """From epoch ``burn_in`` on, make online pool targets with the mean teacher (``pool_teacher="ema"``).

        It starts as a copy of the student at the first epoch past the burn-in (a resumed run: the student it resumes
        with) and follows it by :meth:`on_train_batch_end`. With ``auto`` the switch is :meth:`on_fit_epoch_end`'s;
        once made, every epoch start hands the mean teacher to the model again (a model rebuilt on resume).
        """
        cfg = self.config
        if cfg.pool_targets != "online" or cfg.pool_teacher == "frozen":
            return
        if self.mean_teacher is None and cfg.pool_teacher == "ema" and epoch >= cfg.burn_in:
            self.take_over(model.student_model, f"epoch {epoch + 1}")
        if self.mean_teacher is not None:
            model.set_target_teacher(self.mean_teacher.model)

    def take_over(self, student: Any, when: str) -> None:
        """Start the mean teacher from ``student``: from now on it makes the pool targets and the logit targets."""
        self.mean_teacher = EMATeacher(self.config.ema_decay)
        self.mean_teacher.start(student)
        if RANK in {-1, 0}:
            LOGGER.info(f"distill: {when}: the mean teacher (an EMA of the student, decay {self.config.ema_decay}) "
                        "makes the pool and logit targets from now on; the frozen teacher is not run")  # fmt: skip

    def on_train_start(self, trainer: Any) -> None:
        """``pool_teacher="auto"``: measure the frozen teacher's validation fitness once, the mark to pass (rank 0)."""
        cfg = self.config
        if cfg.pool_targets == "online" and cfg.pool_teacher == "auto" and RANK in {-1, 0}:
            self.teacher_fitness = teacher_fitness(trainer, cfg.teacher)
            LOGGER.info(f"distill: the frozen teacher's validation fitness is {self.teacher_fitness:.4f}: the mean "
                        "teacher takes over once the student's reaches it")  # fmt: skip

    def on_fit_epoch_end(self, trainer: Any) -> None:
        """``pool_teacher="auto"``: once the student's validation fitness reaches the teacher's, hand over.

        Rank 0 validates and decides; under DDP the decision is broadcast, as Ultralytics broadcasts its stop flag,
        so every rank starts the same mean teacher from its (identical) EMA of the student.
        """
        cfg = self.config
        if cfg.pool_targets != "online" or cfg.pool_teacher != "auto" or self.mean_teacher is not None:
            return
        passed = passed_teacher(trainer.fitness, self.teacher_fitness)
        if RANK != -1:
            import torch.distributed as dist

            flag = [passed if RANK == 0 else None]
            dist.broadcast_object_list(flag, 0)
            passed = bool(flag[0])
        if passed:  # the next epoch's start hands it to the model (start_mean_teacher), before any batch
            self.take_over(unwrap_model(trainer.ema.ema).student_model, f"epoch {trainer.epoch + 1}")

    def on_train_batch_end(self, trainer: Any) -> None:
        """Move the mean teacher toward the student after each optimizer step (when the trainer's EMA moved too)."""
        steps = getattr(trainer.ema, "updates", None)
        if self.mean_teacher is not None and steps != self.mean_teacher.steps:
            self.mean_teacher.steps = steps
            self.mean_teacher.update(unwrap_model(trainer.model).student_model)

    def on_model_save(self, trainer: Any) -> None:
        """In online mode, save the jointly trained teacher next to the student's checkpoints (rank 0)."""
        model = unwrap_model(trainer.model)
        if self.config.online and isinstance(model, KDModel):
            save_teacher(model, trainer, Path(trainer.wdir) / TEACHER_WEIGHTS)


def passed_teacher(student_fitness: Any, teacher_fitness: float | None) -> bool:
    """Whether the student's validation fitness (``None`` where this rank did not validate) reached the teacher's."""
    if student_fitness is None or teacher_fitness is None:
        return False
    return float(student_fitness) >= teacher_fitness


def teacher_fitness(trainer: Any, teacher: str) -> float:
    """Return the frozen teacher's fitness on the run's validation split, scored as the trainer scores the student.

    Ultralytics' public ``YOLO(...).val`` on the trainer's dataset, image size, batch and device; its folder is
    ``<run>/teacher-val``.
    """
    from ultralytics import YOLO

    args = trainer.args
    metrics = YOLO(teacher).val(
        data=args.data, split="val", imgsz=args.imgsz, batch=trainer.batch_size, device=trainer.device,
        workers=args.workers, plots=False, verbose=False, project=str(trainer.save_dir), name="teacher-val",
        exist_ok=True, half=False,
    )  # fmt: skip
    return float(metrics.fitness)


def save_teacher(model: KDModel, trainer: Any, path: Path) -> None:
    """Write the online teacher as a plain Ultralytics checkpoint (loads with ``YOLO(path)``)."""
    clear_features(model)
    teacher = deepcopy(model.teacher_model).half()
    drop_feature_hooks(teacher)
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


class HeldLogs(logging.Handler):
    """Stands in for the handlers of Ultralytics' ``LOGGER`` and keeps its records until shown or discarded."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.saved: list[logging.Handler] | None = LOGGER.handlers[:]
        LOGGER.handlers = [self]

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102 (logging's hook)
        self.records.append(record)

    def show(self) -> None:
        """Put Ultralytics' handlers back and pass them the held records, in order (no-op once done).

        (Not ``release``: ``logging.Handler`` has one, for its lock, called on every record.)
        """
        if self.saved is None:
            return
        LOGGER.handlers, handlers, self.saved = self.saved, self.saved, None
        for record in self.records:
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self.records.clear()

    def discard(self) -> None:
        """Put Ultralytics' handlers back and forget the held records: the run was refused."""
        self.records.clear()
        self.show()


_HELD: list[HeldLogs] = []  # the holds in force in this process, outermost first


@contextmanager
def held_logs() -> Iterator[HeldLogs]:
    """Hold Ultralytics' console output in the block until :func:`release_logs`; drop it on a :class:`DistillError`.

    Any other way out of the block releases what was held, so a crash keeps its context on the console.
    """
    held = HeldLogs()
    _HELD.append(held)
    try:
        yield held
    except DistillError:
        held.discard()
        raise
    finally:
        held.show()
        _HELD.remove(held)


def release_logs() -> None:
    """Print what :func:`held_logs` holds and stop holding: the run was accepted (a no-op when nothing is held)."""
    for held in reversed(_HELD):  # innermost first: it hands its records to the one it stands in for
        held.show()


class LaunchMixin:
    """Runs an Ultralytics task trainer as one rank of an external multi-node ``torchrun`` launch.

    Ultralytics sizes its process group from the devices named on *this* node (``device=0,1`` → 2), so under
    ``torchrun --nnodes 2`` node 0 trains alone and node 1 crashes; with ``device=cpu`` it never creates the group at
    all yet still builds a ``DistributedSampler``. The overrides, each only active when ``WORLD_SIZE > 1``:

    - ``__init__``: the trainer's ``world_size`` is the launch's (``WORLD_SIZE``); batch split, DDP wrapping, loss
      scaling and metric reduction then follow Ultralytics' own code. Under its own single-node DDP the two agree
      (and a batch that does not divide is refused only across nodes, where Ultralytics never ran).
    - ``_setup_ddp``: on CPU, one gloo group from the environment (Ultralytics' assumes an accelerator); on GPU its
      own (NCCL, ``cuda:LOCAL_RANK``). ``_setup_train`` wraps the model on CPU without ``device_ids`` (DDP refuses
      ``[None]``), scoped to that call.
    - ``final_eval``: across nodes, rank 0's ``best.pt`` is sent to ranks that lack it (pods share no filesystem;
      every rank must join the distributed final validation); on CPU ranks it is validated through the trainer
      (:class:`BestThroughTrainer`), as Ultralytics' own final validation puts every rank of a group on a GPU.
    """

    # ``_callbacks`` mirrors BaseTrainer.__init__ (a parameter seam: distill.adapter.seams.SEAMS)
    def __init__(self, cfg: Any = None, overrides: dict | None = None, _callbacks: dict | None = None) -> None:
        from ultralytics.utils import DEFAULT_CFG

        super().__init__(DEFAULT_CFG if cfg is None else cfg, overrides, _callbacks)
        self.launch: Launch = current()
        if self.launch.distributed:
            if self.device.type not in {"cpu", "mps"}:
                named = [d for d in str(self.args.device).split(":")[-1].split(",") if d]
                if len(named) < self.launch.local_world_size:
                    raise DistillError(
                        f"device '{self.args.device}' names {len(named)} GPU(s) but torchrun started "
                        f"{self.launch.local_world_size} processes on this node: pass --nproc_per_node "
                        f"{len(named) or 1} or name one GPU per process (device=0,1,...)"
                    )
            if self.launch.nodes > 1:
                check_batch_divides(self.args.batch, self.launch.world_size, f"ranks ({self.launch.nodes} node(s))")
            self.world_size = self.launch.world_size

    def _setup_ddp(self) -> None:  # an override seam: distill.adapter.seams.SEAMS (BaseTrainer._setup_ddp)
        """Join the launch's process group: gloo on CPU, else Ultralytics' own setup (NCCL on ``cuda:LOCAL_RANK``)."""
        if self.device.type != "cpu":
            return super()._setup_ddp()
        from datetime import timedelta

        import torch.distributed as dist

        dist.init_process_group(
            "gloo", timeout=timedelta(hours=3), rank=self.launch.rank, world_size=self.launch.world_size
        )

    def _setup_train(self) -> None:  # an override seam: distill.adapter.seams.SEAMS (BaseTrainer._setup_train)
        """Ultralytics' setup; on CPU ranks its DDP wrap runs without ``device_ids``."""
        if self.world_size > 1 and self.device.type == "cpu":
            with cpu_ddp():
                return super()._setup_train()
        return super()._setup_train()

    def final_eval(self) -> None:
        """Ultralytics' final validation of ``best.pt``, made to work across nodes and on CPU ranks."""
        if self.launch.nodes > 1:
            share_file(Path(self.best), self.launch)
        if self.launch.distributed and self.device.type == "cpu":
            self.validator = BestThroughTrainer(self)
        return super().final_eval()


class BestThroughTrainer:
    """Stands in for the validator in the final evaluation of a CPU rank: ``best.pt`` validated the way epochs are.

    Ultralytics' final validation loads ``best.pt`` on ``cuda:<current device>`` on every rank of a process group, so
    CPU ranks cannot run it. Instead each rank loads ``best.pt``'s student weights into the trainer's EMA model and runs
    the per-epoch (trainer) validation, which shards the split and gathers the statistics on rank 0 like the original.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.validator = trainer.validator
        self.args = trainer.validator.args

    def __call__(self, model: str | Path) -> dict[str, float]:
        """Validate the checkpoint at ``model``; rank 0 returns the metrics, other ranks ``{}`` (as Ultralytics)."""
        weights = load_checkpoint(model)[0]
        weights = weights.student_model if isinstance(weights, DistillationModel) else weights
        ema = self.trainer.ema.ema
        target = ema.student_model if isinstance(ema, DistillationModel) else ema
        target.load_state_dict(weights.float().state_dict())
        metrics = self.validator(trainer=self.trainer)
        keys = set(self.validator.metrics.keys) | {"fitness"}
        return {k: v for k, v in (metrics or {}).items() if k in keys}


def share_file(path: Path, launch: Launch) -> None:
    """Send rank 0's ``path`` to every rank whose copy is missing or differs (collective: every rank calls it).

    Ranks on a shared filesystem already hold the same bytes and write nothing; a receiving rank writes through a
    temporary file, so a half-written copy never appears under ``path``.
    """
    import torch.distributed as dist

    local = path.read_bytes() if path.is_file() else None  # read once: hashed, and sent from rank 0
    mine = hashlib.sha256(local).hexdigest() if local is not None else None
    wanted = [mine if launch.rank == 0 else None]
    dist.broadcast_object_list(wanted, src=0)
    if wanted[0] is None:  # rank 0 has no best.pt (no epoch was saved): nothing to share
        return
    needs = [None] * launch.world_size
    dist.all_gather_object(needs, mine != wanted[0])
    if not any(needs):
        return
    payload = [local if launch.rank == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    if needs[launch.rank] and launch.rank != 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(payload[0])
        tmp.replace(path)


class DistillTrainerMixin:
    """Adds distillation to an Ultralytics task trainer through ``set_model_attributes`` and ``setup_model``."""

    def __init__(self, cfg: Any = None, overrides: dict | None = None, _callbacks: dict | None = None) -> None:
        super().__init__(cfg, overrides, _callbacks)
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

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        """Ultralytics' dataset; with ``pool_targets="soft"`` the training set marks its pool images' objects."""
        dataset = super().build_dataset(img_path, mode, batch)
        targets = self.distill.config.pool_targets
        if mode == "train" and targets == "soft":
            from .soft_pool import mark_pool_instances

            marked = mark_pool_instances(dataset, self.data)
            if RANK in {-1, 0}:
                LOGGER.info(f"distill: pool_targets=soft: the task loss ignores the objects on {marked} pool images")
        elif mode == "train" and targets == "online":
            from .online_pool import mark_pool_regions

            marked = mark_pool_regions(dataset, self.data)
            if RANK in {-1, 0}:
                LOGGER.info(f"distill: pool_targets=online: the targets of {marked} pool images are made on each view")
        return dataset

    def set_model_attributes(self):
        """Set the stock attributes on the student, then wrap it in the :class:`KDModel` (validated up front)."""
        super().set_model_attributes()
        if isinstance(unwrap_model(self.model), KDModel):
            release_logs()
            return
        self.model, self.distill_plan = build_kd_model(
            self.model, self, self.distill.config, resume_state=self._kd_resume_state
        )
        release_logs()  # the pair is valid: the run is accepted, the set-up output held so far can show
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


class DetectTrainer(LaunchMixin, DetectionTrainer):
    """Ultralytics ``DetectionTrainer`` that also runs under a multi-node ``torchrun`` launch."""


class SegmentTrainer(LaunchMixin, SegmentationTrainer):
    """Ultralytics ``SegmentationTrainer`` that also runs under a multi-node ``torchrun`` launch."""


class KeypointTrainer(LaunchMixin, PoseTrainer):
    """Ultralytics ``PoseTrainer`` that also runs under a multi-node ``torchrun`` launch."""


class DistillDetectionTrainer(DistillTrainerMixin, DetectTrainer):
    """Ultralytics ``DetectionTrainer`` with knowledge distillation."""


class DistillSegmentationTrainer(DistillTrainerMixin, SegmentTrainer):
    """Ultralytics ``SegmentationTrainer`` with knowledge distillation."""


class DistillPoseTrainer(DistillTrainerMixin, KeypointTrainer):
    """Ultralytics ``PoseTrainer`` with knowledge distillation."""


DISTILL_TRAINERS = {
    "detect": DistillDetectionTrainer,
    "segment": DistillSegmentationTrainer,
    "pose": DistillPoseTrainer,
}
PLAIN_TRAINERS = {"detect": DetectTrainer, "segment": SegmentTrainer, "pose": KeypointTrainer}
