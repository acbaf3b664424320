"""Ultralytics' private seams: every underscored Ultralytics name this package relies on, named once, here.

Distillation runs inside the *unmodified* Ultralytics trainer, and a few things it needs have no public API: the
feature-capture machinery of ``DistillationModel`` (its hooks, their dicts and the teacher freeze) and the trainer's
DDP set-up. Each such name is listed in :data:`SEAMS` with its owner, the parameters it is expected to take and what we
use it for; ``tests/test_seams.py`` checks every entry against the installed Ultralytics (pinned: 8.4.190), so an
upgrade that renames or reshapes one fails in that one named test rather than deep inside a training run. The same
test refuses an underscored Ultralytics name anywhere else in ``distill/``.

Calls go through the functions below. Overrides cannot (Python dispatches on the method's name), so the two
``LaunchMixin`` overrides in :mod:`distill.engine.trainer` keep their names and are listed here as ``override`` seams,
with the caller in Ultralytics that must still reach them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.nn.distill_model import DistillationModel

CAPTURE_STATE = ("_teacher_feats", "_student_feats", "_teacher_hooks", "_student_hooks")
"""``DistillationModel``'s private per-instance state, set by its constructor and read by its hook methods,
``__getstate__``/``__setstate__`` and ``fuse``. ``KDModel`` skips that constructor, so :func:`start_feature_capture`
creates exactly these."""


@dataclass(frozen=True)
class Seam:
    """One underscored Ultralytics name we depend on.

    Attributes:
        owner (Any): The class (or module) that defines it.
        name (str): Its attribute name.
        params (tuple[str, ...] | None): Expected parameter names (``self`` left out); ``None`` for instance state.
        kind (str): ``call`` (we call it), ``override`` (we override it), ``state`` (we read/initialise it),
            ``parameter`` (an underscored parameter of a public method), ``patch`` (we swap what it looks up).
        site (str): Where ``distill/`` uses it.
        why (str): What it is for, and why no public API serves.
        relies_on (tuple[str, ...]): Source fragments of ``owner`` that must still be there (a call that reaches
            our override, a lookup our patch replaces).
    """

    owner: Any
    name: str
    params: tuple[str, ...] | None
    kind: Literal["call", "override", "state", "parameter", "patch"]
    site: str
    why: str
    relies_on: tuple[str, ...] = ()


_HOOK_STATE_WHY = (
    "dict/list shared with the FeatureHooks; no accessor exists and the parent's hook methods and pickling read it"
)
SEAMS: tuple[Seam, ...] = (
    Seam(
        DistillationModel,
        "_register_feature_hooks",
        (),
        "call",
        "distill/adapter/seams.py start_feature_capture (KDModel.__init__)",
        "attaches picklable FeatureHooks on feats_idx/teacher_feats_idx after removing stale ones, the same routine "
        "__setstate__ re-runs after a deepcopy/unpickle; only the constructor calls it publicly",
    ),
    Seam(
        DistillationModel,
        "_freeze_teacher",
        (),
        "call",
        "distill/adapter/seams.py freeze_teacher (KDModel.train)",
        "eval mode + requires_grad=False on teacher_model; the public train() always freezes, and an online "
        "teacher must not be frozen, so KDModel.train calls it only offline",
    ),
    Seam(
        DistillationModel,
        "_clear_feature_hooks",
        ("module",),
        "call",
        "distill/adapter/seams.py drop_feature_hooks (trainer.save_teacher)",
        "removes FeatureHook objects from a module's forward hooks, so a saved online teacher carries none",
    ),
    *(
        Seam(DistillationModel, name, None, "state", "distill/adapter/seams.py (KDModel.__init__, KDModel.loss)", why)
        for name, why in (
            ("_teacher_feats", "teacher features by level, written by its hooks; " + _HOOK_STATE_WHY),
            ("_student_feats", "student features by level, written by its hooks; " + _HOOK_STATE_WHY),
            ("_teacher_hooks", "teacher hook handles; " + _HOOK_STATE_WHY),
            ("_student_hooks", "student hook handles; " + _HOOK_STATE_WHY),
        )
    ),
    Seam(
        BaseTrainer,
        "__init__",
        ("cfg", "overrides", "_callbacks"),
        "parameter",
        "distill/engine/trainer.py LaunchMixin.__init__, DistillTrainerMixin.__init__ (and their callers)",
        "the trainer takes its callbacks only through the underscored _callbacks parameter; the DDP launcher "
        "re-creates our trainers with it, so our __init__ overrides keep the same signature",
    ),
    Seam(
        BaseTrainer,
        "_setup_ddp",
        (),
        "override",
        "distill/engine/trainer.py LaunchMixin._setup_ddp",
        "joins the process group; Ultralytics' assumes an accelerator, a CPU rank of an external torchrun needs gloo",
        relies_on=("self._setup_ddp()",),
    ),
    Seam(
        BaseTrainer,
        "_setup_train",
        (),
        "override",
        "distill/engine/trainer.py LaunchMixin._setup_train",
        "model, EMA, optimizer and DDP wrap in one private method: the only place to scope the CPU DDP swap to",
        relies_on=("self._setup_train()",),
    ),
    Seam(
        BaseTrainer,
        "_setup_train",
        (),
        "patch",
        "distill/adapter/seams.py cpu_ddp (LaunchMixin._setup_train)",
        "the DDP class swap: _setup_train wraps with nn.parallel.DistributedDataParallel(device_ids=[device.index]), "
        "looked up when called; [None] on CPU is refused by DDP, so cpu_ddp swaps the class for the call",
        relies_on=("nn.parallel.DistributedDataParallel(", "device_ids=[self.device.index]"),
    ),
)


def start_feature_capture(model: DistillationModel) -> None:
    """Create the capture state the skipped ``DistillationModel`` constructor would, then register the hooks.

    ``model`` must already hold ``student_model``, ``teacher_model``, ``feats_idx`` and ``teacher_feats_idx``.
    Features land in :func:`captured_features`' dicts, keyed by level (0, 1, ...), on every forward.
    """
    model._teacher_feats = {}
    model._student_feats = {}
    model._teacher_hooks = []
    model._student_hooks = []
    model._register_feature_hooks()


def captured_features(model: DistillationModel) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Return ``(student, teacher)``: the dicts the hooks fill, by level (live objects, not copies)."""
    return model._student_feats, model._teacher_feats


def clear_features(model: DistillationModel) -> None:
    """Drop captured features in place (the hooks hold these very dicts), freeing their tensors and graphs."""
    model._student_feats.clear()
    model._teacher_feats.clear()


def freeze_teacher(model: DistillationModel) -> None:
    """Put the teacher in eval mode with gradients off (a no-op when it is ``None``, as in EMA copies)."""
    model._freeze_teacher()


def drop_feature_hooks(module: nn.Module) -> None:
    """Remove every ``FeatureHook`` from ``module`` and its submodules (e.g. a teacher copied out of the wrapper)."""
    for m in module.modules():
        DistillationModel._clear_feature_hooks(m)


@contextmanager
def cpu_ddp() -> Iterator[None]:
    """Within the block, DDP wraps a CPU model without ``device_ids`` (the DDP class swap).

    ``BaseTrainer._setup_train`` passes ``device_ids=[self.device.index]``, ``[None]`` for a CPU device, which DDP
    refuses; it looks ``nn.parallel.DistributedDataParallel`` up at call time, so a subclass put there for the block
    is what it builds.
    """
    from torch.nn import parallel

    original = parallel.DistributedDataParallel

    class CpuDDP(original):
        def __init__(self, module: nn.Module, device_ids: list | None = None, **kwargs: Any) -> None:
            super().__init__(module, device_ids=None if device_ids == [None] else device_ids, **kwargs)

    parallel.DistributedDataParallel = CpuDDP
    try:
        yield
    finally:
        parallel.DistributedDataParallel = original
