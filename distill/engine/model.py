"""The distillation model: student + teacher + adapters + losses in one ``nn.Module`` the trainer already knows.

:class:`KDModel` subclasses Ultralytics' own ``DistillationModel``. The unmodified trainer recognises that type and,
for it, freezes ``teacher_model.*``, strips the teacher from the EMA, saves only the student in the final
``best.pt``/``last.pt`` (``strip_optimizer``), and fuses to the student. We reuse its picklable feature hooks and
their (de)serialisation, and replace what it hard-codes: which layers, how channels are aligned, which losses.

``KDModel`` does not run ``DistillationModel.__init__`` (8.4.190): it calls ``nn.Module.__init__`` and sets the same
state itself (:func:`distill.adapter.seams.start_feature_capture`). The parent's constructor, checked against our needs:

- it runs a probe forward of two images at ``args.imgsz`` through both models. Our seam (``set_model_attributes``)
  runs before Ultralytics rounds ``imgsz`` to a stride multiple, so ``imgsz=100`` crashes in a ``Concat``; at 640 it
  costs ~3 s on CPU (v8n + v8s) for shapes we already probe at ``2 * stride``;
- it picks its own layers (the head's inputs plus the head) and registers a ``projector`` (Conv1x1-ReLU-Conv1x1 per
  level, ~0.5 M parameters for v8n -> v8s) that our losses never use: it would join the optimizer, the EMA and every
  checkpoint, and never receive a gradient;
- it freezes the teacher and registers it as ``teacher_model`` unconditionally: an online teacher must stay
  trainable, under ``online_teacher``;
- it reads ``args.dis``, the built-in KD's weight, which means nothing here.

Calling it and then undoing four of those would tie us to more of its internals than skipping it. What the inherited
methods (hooks, pickling, ``fuse``) read is set here, and ``tests/test_seams.py`` checks that it is all of it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import guess_model_task, load_checkpoint, yaml_model_load
from ultralytics.utils.torch_utils import copy_attr

from ..adapter.seams import captured_features, clear_features, freeze_teacher, start_feature_capture
from ..config import DistillConfig
from ..errors import DistillError
from ..losses import DistributionLogitLoss, LogitLoss, head_dict, head_outputs, shared_outputs
from ..losses.registry import build_feature_loss
from ..offline import TRUST_ENV, trusts_checkpoints
from .connectors import ChannelAdapter
from .layers import LayerShape, probe, resolve_layers


class KDModel(DistillationModel):
    """Student + teacher wrapper computing the task loss plus the configured KD losses in one student forward.

    Offline (default) the teacher is registered as ``teacher_model``: the trainer freezes it, it stays in eval mode
    and runs without autograd (in half precision on CUDA). Online it is registered as ``online_teacher`` so the
    trainer optimises it with the student on its own task loss; its features are detached inside the KD losses.
    ``teacher_model`` names whichever is present, the attribute Ultralytics' EMA and checkpoint code look for.

    Args:
        student (nn.Module): Student YOLO model (its names/nc/args already set by the trainer).
        teacher (nn.Module): Teacher YOLO model on the same device.
        config (DistillConfig): What to distil.
        student_shapes (list[LayerShape]): Student layers to distil, with their probed shapes.
        teacher_shapes (list[LayerShape]): Paired teacher layers.
        logit_keys (list[str]): Head outputs compared by the logit loss (empty when it is off).
        reg_max (int): DFL bins per box side of the heads (``boxes`` channels / 4), for the ``kl`` logit loss.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        config: DistillConfig,
        student_shapes: list[LayerShape],
        teacher_shapes: list[LayerShape],
        logit_keys: list[str],
        reg_max: int = 16,
    ) -> None:
        nn.Module.__init__(self)  # not DistillationModel.__init__: see the module docstring for why
        self.distill_config = config.to_dict()
        self.online = config.online
        self.student_model = student
        if config.online:
            self.online_teacher = teacher
        else:
            self.teacher_model = teacher
        self.feats_idx = [s.index for s in student_shapes]
        self.teacher_feats_idx = [t.index for t in teacher_shapes]
        self.connectors = nn.ModuleList(
            ChannelAdapter(s.channels, t.channels) for s, t in zip(student_shapes, teacher_shapes, strict=True)
        )
        self.feature_losses = nn.ModuleList(build_feature_loss(config, t.channels) for t in teacher_shapes)
        self.logit_loss = build_logit_loss(config, logit_keys, reg_max) if logit_keys else None
        self.feat_weight = config.feat_weight
        self.logit_weight = config.logit_weight
        self.kd_scale = 1.0  # set each epoch by the schedule callback
        self.kd_loss_names = kd_loss_names(config)
        start_feature_capture(self)  # the parent's hook state and hooks, as its constructor would make them
        copy_attr(self, student)
        self.train(student.training)

    # -- the teacher under whichever name the mode needs ------------------------------------------------------------
    @property
    def teacher_model(self) -> nn.Module | None:
        """The teacher (offline or online); ``None`` in EMA copies and after stripping."""
        for name in ("teacher_model", "online_teacher"):
            if self._modules.get(name) is not None:
                return self._modules[name]
        return None

    @teacher_model.setter
    def teacher_model(self, value: nn.Module | None) -> None:
        """Set the teacher under the registered name (reached for ``None`` assignments by the EMA)."""
        self._modules["online_teacher" if "online_teacher" in self._modules else "teacher_model"] = value

    def train(self, mode: bool = True) -> KDModel:
        """Set train/eval mode; an offline teacher always stays frozen in eval mode."""
        nn.Module.train(self, mode)
        if not self.online:
            freeze_teacher(self)
        return self

    @property
    def projector(self) -> nn.ModuleDict:
        """The trainable KD parts (adapters, MGD generators) under the name Ultralytics' trainer restores them by.

        When a loss turns NaN, Ultralytics' trainer reloads ``last.pt``'s EMA into the model: for a
        ``DistillationModel`` the student and ``model.projector`` (its own trainable part) separately. Ours are
        ``connectors`` and ``feature_losses``; this view (not a registered module: no second copy in the optimizer,
        the EMA or a checkpoint) lets that code restore them too instead of failing on a missing attribute.
        """
        return nn.ModuleDict({"connectors": self.connectors, "feature_losses": self.feature_losses})

    def kd_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Return the trainable KD parts (adapters, MGD generators) for restoring on resume."""
        return {"connectors": self.connectors.state_dict(), "feature_losses": self.feature_losses.state_dict()}

    def load_kd_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore adapters and generators saved by :meth:`kd_state_dict`."""
        self.connectors.load_state_dict(state["connectors"])
        self.feature_losses.load_state_dict(state["feature_losses"])

    # -- loss -------------------------------------------------------------------------------------------------------
    def loss(self, batch: dict, preds: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the student's task loss with the KD terms appended, and the loss items including the KD columns.

        Every term is multiplied by the batch size, as Ultralytics' criteria do, so KD weights mean the same at any
        batch size; loss items are per-image values, as the criteria report them.
        """
        img = batch["img"]
        if not self.training:  # validation during training: the student's loss, KD columns at zero
            if preds is None:
                preds = self.student_model(img)
            task_loss, items = self.student_model.loss(batch, preds)
            zero = torch.zeros(1, device=img.device)
            for name in self.kd_loss_names:
                items[name] = zero
            return torch.cat([task_loss, zero.expand(len(self.kd_loss_names))]), items

        clear_features(self)
        student_feats, teacher_feats = captured_features(self)
        teacher = self.teacher_model
        scale = float(self.kd_scale)
        pool_online = self.distill_config.get("pool_targets") == "online"
        mean = self.target_teacher if pool_online else None  # the mean teacher, once it took over
        teacher_preds = None
        if self.online:
            teacher_preds = teacher(img)
        elif mean is not None:  # the frozen teacher is not run: no feature term from here on
            with torch.no_grad():
                teacher_preds = mean(img)
        elif (scale > 0 and self.kd_loss_names) or pool_online:
            with torch.no_grad():
                teacher_preds = teacher(img.to(next(teacher.parameters()).dtype))
        if pool_online:
            batch, img = self.online_targets(batch, teacher_preds)
        preds = self.student_model(img)  # the one student forward; hooks capture its features
        task_loss, items = self.task_loss(self.student_model, batch, preds)

        bs = img.shape[0]
        terms = []
        zero = torch.zeros((), device=img.device)
        if self.distill_config["loss"] != "none":
            feat = zero
            if scale > 0 and mean is None:
                for i, (adapter, criterion) in enumerate(zip(self.connectors, self.feature_losses, strict=True)):
                    student_feat = adapter(student_feats[i])
                    feat = feat + criterion(student_feat, teacher_feats[i].detach())
                feat = feat * (self.feat_weight * scale)
            terms.append(feat)
        if self.logit_loss is not None:
            logit = zero
            if scale > 0:
                criterion = getattr(self.student_model, "criterion", None)  # built by the task loss just above
                logit = self.logit_loss(head_dict(preds), head_dict(teacher_preds), criterion)
                logit = logit * (self.logit_weight * scale)
            terms.append(logit)
        if self.online:
            teacher_loss, teacher_items = self.task_loss(teacher, batch, teacher_preds)
            terms.append(teacher_loss.sum() / bs)
        for name, term in zip(self.kd_loss_names, terms, strict=True):
            items[name] = term.detach().reshape(1)
        clear_features(self)
        if not terms:  # label-then-train: no KD term, the teacher only labelled the pool
            return task_loss, items
        return torch.cat([task_loss, torch.stack(terms) * bs]), items

    # -- online pool targets (distill.engine.online_pool) --------------------------------------------------------------
    @property
    def target_teacher(self) -> nn.Module | None:
        """The mean teacher once it took over (``pool_teacher`` ``ema`` or ``auto``), else ``None``: the frozen one."""
        return self.__dict__.get("_target_teacher", [None])[0]

    def set_target_teacher(self, model: nn.Module | None) -> None:
        """Make ``model`` (the run's mean teacher) the source of online pool targets; ``None``: the frozen teacher.

        Held in a list, so it is no submodule: not trained, not in the trainer's EMA, and dropped on pickling.
        """
        self.__dict__["_target_teacher"] = [model]

    def __getstate__(self) -> dict[str, Any]:
        """Return the parent's state without the mean teacher (a checkpoint or DDP copy holds the model, not a run)."""
        state = super().__getstate__()
        state.pop("_target_teacher", None)
        return state

    def online_targets(self, batch: dict, teacher_preds: Any) -> tuple[dict, torch.Tensor]:
        """Return the batch with its pool regions' targets made on this very view, and the image the student sees.

        The targets come from ``teacher_preds``, the target teacher's predictions on the batch (eval mode:
        ``(decoded, raw)``) — the mean teacher's once it took over, else the frozen teacher's; with ``strong_aug``
        the student sees a stronger view of the images that hold pool regions
        (:func:`distill.engine.online_pool.strong_view`).
        """
        from .online_pool import has_regions, online_batch, strong_view

        cfg, nc = self.distill_config, len(self.student_model.names)
        decoded = teacher_preds[0] if isinstance(teacher_preds, tuple | list) else teacher_preds
        args = getattr(self.student_model, "args", None)
        overlap = args.get("overlap_mask", True) if isinstance(args, dict) else getattr(args, "overlap_mask", True)
        pooled = has_regions(batch, nc)
        batch = online_batch(batch, decoded, nc, cfg["pseudo_conf"], cfg["uncertain_conf"], bool(overlap))
        img = strong_view(batch["img"], pooled) if cfg["strong_aug"] else batch["img"]
        return batch, img

    def task_loss(self, model: nn.Module, batch: dict, preds: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``model``'s task loss (the student's, or an online teacher's), ignoring soft pool objects.

        With ``pool_targets="soft"`` pool instances arrive with their class shifted by ``nc``
        (:func:`distill.engine.soft_pool.mark_pool_instances`), with ``"online"`` the uncertain pool objects
        (:func:`distill.engine.online_pool.online_batch`); :func:`~distill.engine.soft_pool.soft_batch` shifts them back
        and has the criterion's assigner leave their anchors out of the loss, for this call only.
        """
        if self.distill_config.get("pool_targets", "pseudo") == "pseudo":
            return model.loss(batch, preds)
        from .soft_pool import disarm, soft_batch

        try:
            return model.loss(soft_batch(model, batch, len(self.student_model.names)), preds)
        finally:
            disarm(model)


def kd_loss_names(config: DistillConfig) -> list[str]:
    """Loss-item names the KD terms get (columns of ``results.csv`` and the console table)."""
    names = [f"{config.loss}_loss"] if config.has_features else []
    if config.logit:
        names.append("logit_loss")
    if config.online:
        names.append("teacher_loss")
    return names


def build_logit_loss(config: DistillConfig, keys: list[str], reg_max: int) -> LogitLoss | DistributionLogitLoss:
    """Return the logit loss ``config.logit_loss`` names, comparing the shared head outputs ``keys``."""
    if config.logit_loss == "kl":
        return DistributionLogitLoss(keys, reg_max, tau=config.logit_tau, conf_weight=config.logit_conf_weight)
    return LogitLoss(keys, conf_weight=config.logit_conf_weight)


def load_teacher(source: str, trainer: Any) -> nn.Module:
    """Load the teacher: a ``.pt`` checkpoint, or a model ``.yaml`` built by the trainer (random init, for tests).

    Args:
        source (str): Local path to ``.pt`` weights, or a model yaml (a path or an Ultralytics built-in name).
        trainer: The Ultralytics trainer; its ``get_model`` builds a yaml teacher for this dataset (nc, kpt_shape).
    """
    suffix = Path(source).suffix.lower()
    if suffix in {".yaml", ".yml"}:
        try:
            task = guess_model_task(yaml_model_load(source))
        except FileNotFoundError:
            raise DistillError(f"teacher model yaml '{source}' not found") from None
        _check_task(task, trainer.args.task, source)
        return trainer.get_model(cfg=source, weights=None, verbose=False)
    if suffix != ".pt":
        raise DistillError(f"teacher '{source}' must be a .pt checkpoint or a model .yaml")
    if not Path(source).is_file():
        raise DistillError(f"teacher weights '{source}' not found")
    teacher = load_weights(source, "teacher")
    if isinstance(teacher, DistillationModel):
        teacher = teacher.student_model
    _check_task(getattr(teacher, "task", None) or guess_model_task(teacher), trainer.args.task, source)
    return teacher


def load_weights(path: str | Path, role: str) -> nn.Module:
    """Load an Ultralytics ``.pt`` and return its model (see :func:`read_checkpoint`)."""
    return read_checkpoint(path, role)[0]


def read_checkpoint(path: str | Path, role: str) -> tuple[nn.Module, dict[str, Any]]:
    """Load an Ultralytics ``.pt`` with Ultralytics' loader; return ``(model, checkpoint dict)``.

    A corrupt, foreign or unsafe file is a :class:`DistillError` naming it. Loading is restricted (see
    :mod:`distill.offline`): a pickle naming anything outside the allowlist of model classes is refused before any
    of it runs. Ultralytics reports both a refused and a damaged file as ``TypeError``; its message is the only
    thing that tells them apart.
    """
    import zipfile

    try:
        return load_checkpoint(path)
    except Exception as e:
        # A torch archive whose pickle names something off the allowlist (not a damaged file: that is no zip).
        refused = isinstance(e, TypeError) and "references types outside" in str(e) and zipfile.is_zipfile(path)
        if refused and not trusts_checkpoints():
            raise DistillError(
                f"{role} weights '{path}' refused: the file references code outside the Ultralytics checkpoint "
                f"format (a pickle can run it on load); if you trust it, set {TRUST_ENV}=1"
            ) from None
        raise DistillError(
            f"{role} weights '{path}' are not a readable Ultralytics checkpoint ({type(e).__name__})"
        ) from None


def _check_task(teacher_task: str, student_task: str, source: str) -> None:
    if teacher_task != student_task:
        raise DistillError(
            f"task mismatch: teacher '{source}' is a {teacher_task} model, the student is {student_task}"
        )


def build_kd_model(
    student: nn.Module, trainer: Any, config: DistillConfig, resume_state: dict | None = None
) -> tuple[KDModel, dict[str, Any]]:
    """Load the teacher, validate the pair, probe shapes and wire the :class:`KDModel`.

    Validation happens here, before any training step: same task, same number of classes (and ``kpt_shape`` for
    pose), every layer index exists, each pair has the same spatial size at a probe input, and the logit loss has
    at least one head output in common. Each failure raises :class:`DistillError` naming the bad value.

    Args:
        student (nn.Module): The trainer's student model (attributes already set).
        trainer: The Ultralytics trainer (for ``args``, ``data``, ``device`` and ``get_model``).
        config (DistillConfig): What to distil.
        resume_state (dict | None): Adapter/generator weights from a checkpoint being resumed.

    Returns:
        (tuple[KDModel, dict]): The model, and the resolved plan (written to ``distill.json``).
    """
    config = config.for_task(trainer.args.task)
    if config.pool_targets == "online":
        from .online_pool import check_task

        check_task(trainer.args.task)
    teacher_source = config.teacher
    if config.online and resume_state is not None and resume_state.get("teacher"):
        teacher_source = resume_state["teacher"]  # the online teacher as trained so far
    teacher = load_teacher(teacher_source, trainer)
    _check_labels(teacher, trainer, config.teacher)

    device = next(student.parameters()).device
    teacher = teacher.to(device).float()
    student_layers, teacher_layers = _pair_layers(student, teacher, config)
    stride = int(max(float(student.stride.max()), float(teacher.stride.max()), 32))
    probe_size = 2 * stride
    ch = int(trainer.data.get("channels", 3))
    student_shapes, student_out = probe(student, student_layers, probe_size, ch)
    teacher_shapes, teacher_out = probe(teacher, teacher_layers, probe_size, ch)
    _check_spatial(student_shapes, teacher_shapes, probe_size)
    logit_keys, reg_max = _logit_outputs(config, student_out, teacher_out)

    if config.online:
        teacher.args = trainer.args  # its own task loss uses the run's box/cls/dfl gains
        teacher.train()
    elif not getattr(teacher.model[-1], "end2end", False):  # fusing an end-to-end head drops a branch the KD reads
        teacher.fuse(verbose=False)  # frozen: Conv+BN folded once, the same outputs for less work on every batch
    model = KDModel(student, teacher, config, student_shapes, teacher_shapes, logit_keys, reg_max).to(device)
    if resume_state is not None:
        model.load_kd_state_dict(resume_state)
    if device.type == "cuda" and not config.online:
        model.teacher_model.half()  # frozen teacher: inference only, half the memory and time
    return model, _plan(model, config, trainer.args.task, student_shapes, teacher_shapes, logit_keys, probe_size)


def _check_labels(teacher: nn.Module, trainer: Any, name: str) -> None:
    """Refuse a teacher whose classes (and, for pose, ``kpt_shape``) differ from the dataset's.

    Its head would predict a different label space, so no logit or feature comparison would mean anything.
    ``name`` is the configured teacher, as the user wrote it, for the message.
    """
    data = trainer.data
    teacher_nc = int(getattr(teacher, "nc", None) or teacher.yaml.get("nc"))
    if teacher_nc != int(data["nc"]):
        raise DistillError(
            f"class mismatch: teacher '{name}' has nc={teacher_nc}, the dataset/student has nc={data['nc']}"
        )
    if trainer.args.task == "pose":
        t_kpt = list(getattr(teacher, "kpt_shape", None) or teacher.yaml.get("kpt_shape") or [])
        if t_kpt != list(data["kpt_shape"]):
            raise DistillError(
                f"kpt_shape mismatch: teacher '{name}' has {t_kpt}, the dataset has {list(data['kpt_shape'])}"
            )


def _pair_layers(student: nn.Module, teacher: nn.Module, config: DistillConfig) -> tuple[list[int], list[int]]:
    """Resolve the student's and the teacher's layer specs to indices, one teacher layer per student layer.

    The teacher uses ``config.teacher_layers`` when given, else the student's spec. Both are empty when no feature
    loss is configured (logit-only distillation).
    """
    student_layers = resolve_layers(config.layers, student, "student") if config.has_features else []
    teacher_spec = config.teacher_layers if config.teacher_layers is not None else config.layers
    teacher_layers = resolve_layers(teacher_spec, teacher, "teacher") if config.has_features else []
    if len(student_layers) != len(teacher_layers):
        raise DistillError(
            f"layer count mismatch: student layers {student_layers} vs teacher layers {teacher_layers}; "
            "pass --teacher-layers with one teacher layer per student layer"
        )
    return student_layers, teacher_layers


def _check_spatial(student_shapes: list[LayerShape], teacher_shapes: list[LayerShape], probe_size: int) -> None:
    """Refuse a layer pair whose feature maps differ in height or width at the probe input.

    The feature losses compare the maps position by position, and the 1x1 adapter only aligns channels.
    """
    for s, t in zip(student_shapes, teacher_shapes, strict=True):
        if (s.height, s.width) != (t.height, t.width):
            raise DistillError(
                f"spatial mismatch at a {probe_size}px probe: student layer {s.index} is {s.height}x{s.width}, "
                f"teacher layer {t.index} is {t.height}x{t.width}; pair layers of the same stride"
            )


def _logit_outputs(config: DistillConfig, student_out: Any, teacher_out: Any) -> tuple[list[str], int]:
    """Return the head outputs the logit loss compares and the student's DFL bins (``reg_max``).

    Only outputs of the same shape in both heads can be compared; with none in common the logit loss is refused.
    With the logit loss off: no outputs, and ``reg_max`` keeps its default (16), which nothing then reads.
    """
    if not config.logit:
        return [], 16
    logit_keys = shared_outputs(head_outputs(student_out), head_outputs(teacher_out))
    reg_max = head_outputs(student_out)["boxes"].shape[1] // 4 if "boxes" in logit_keys else 1
    if not logit_keys:
        raise DistillError(
            "logit loss: the teacher's and student's heads share no output of the same shape "
            "(different reg_max or head type); use --no-logit"
        )
    return logit_keys, reg_max


def _plan(
    model: KDModel,
    config: DistillConfig,
    task: str,
    student_shapes: list[LayerShape],
    teacher_shapes: list[LayerShape],
    logit_keys: list[str],
    probe_size: int,
) -> dict[str, Any]:
    """Return the resolved plan of a run, written to ``distill.json``.

    It records what the config resolved to on these two models (the layer pairs with their probed shapes, the head
    outputs the logit loss compares, the loss columns), which the config alone does not say.
    """
    return {
        "config": config.to_dict(),
        "mode": "online" if config.online else "offline",
        "task": task,
        "pairs": [
            {"student": asdict(s), "teacher": asdict(t), "adapter": f"conv1x1 {s.channels}->{t.channels}"}
            for s, t in zip(student_shapes, teacher_shapes, strict=True)
        ],
        "logit_loss": config.logit_loss if model.logit_loss is not None else None,
        "logit_outputs": logit_keys,
        "logit_terms": model.logit_loss.terms if model.logit_loss is not None else {},
        "loss_columns": model.kd_loss_names,
        "probe_imgsz": probe_size,
    }


def _own_module_classes() -> list[type]:
    """Every ``nn.Module`` class of this package: what an interrupted distillation's ``last.pt`` pickles."""
    import importlib
    import inspect
    import pkgutil
    import sys

    from .. import losses

    modules = [sys.modules[__name__], importlib.import_module(f"{__package__}.connectors")]
    modules += [importlib.import_module(f"{losses.__name__}.{m.name}") for m in pkgutil.iter_modules(losses.__path__)]
    return [
        obj
        for module in modules
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, nn.Module) and obj.__module__ == module.__name__
    ]


#: The modules whose classes a ``last.pt`` pickles, by the names they had before the engine became a package (issue
#: 39; until then every module stood at the top of ``distill``): a run interrupted before that move names
#: ``distill.model.KDModel`` and ``distill.connectors.ChannelAdapter``. Kept while such a run may still be resumed:
#: remove it, with :func:`_answer_to_old_names` and its test, at the next version after 0.1.0.
OLD_NAMES = {"distill.model": __name__, "distill.connectors": f"{__package__}.connectors"}


def _answer_to_old_names(classes: list[type]) -> None:
    """Let a checkpoint that names a class by its old module load: the one place where old names are mapped.

    Both of Ultralytics' loaders read ``last.pt``, ours (:func:`read_checkpoint`) and its own resume alike. The
    restricted one (the default, see :mod:`distill.offline`) looks each pickled name up in torch's allowlist, so each
    class is registered under its old name too. The trusting one (``YOLO_DISTILL_TRUST_CHECKPOINTS=1``) imports the
    pickled module by name, and Ultralytics answers a module it cannot import by trying to pip-install it: so the old
    names stand in ``sys.modules`` for the modules that hold the classes now. Every process that can load a
    ``last.pt`` imports this module first (the trainer and this reader live here).
    """
    import sys

    for old, new in OLD_NAMES.items():
        module = sys.modules[new]
        sys.modules.setdefault(old, module)
        torch.serialization.add_safe_globals(
            [(obj, f"{old}.{obj.__qualname__}") for obj in classes if obj.__module__ == new]
        )


# Ultralytics' restricted loader (distill.offline) allows its own and torch's model classes; ours join the allowlist.
_CLASSES = _own_module_classes()
torch.serialization.add_safe_globals(_CLASSES)
_answer_to_old_names(_CLASSES)
