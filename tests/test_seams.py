"""The contract with Ultralytics: each seam in ``distill.adapter.seams.SEAMS`` (a private name) exists as expected
and none is used anywhere else in ``distill/``; each assumption in ``distill.adapter.assumptions.ASSUMPTIONS``
(behaviour behind public names) still holds in Ultralytics' source, and names a function of ours that relies on it.

An Ultralytics upgrade that renames, removes or reshapes what we rely on fails here, naming the seam or assumption,
instead of deep in a training run or silently.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest
import torch
import ultralytics
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.distill_model import DistillationModel, FeatureHook
from ultralytics.nn.tasks import DetectionModel, PoseModel, SegmentationModel

import distill.engine.trainer
from distill.adapter import seams
from distill.adapter.assumptions import ASSUMPTIONS, Assumption
from distill.adapter.seams import CAPTURE_STATE, SEAMS, Seam
from distill.engine.model import KDModel

pytestmark = pytest.mark.fast  # in-process: the pinned Ultralytics' source and tiny stand-in models

DISTILL = Path(distill.__file__).parent
SEAMS_FILE = Path(seams.__file__)
TRAINERS = [*distill.engine.trainer.DISTILL_TRAINERS.values(), *distill.engine.trainer.PLAIN_TRAINERS.values()]


def private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def self_attributes(source: str, ctx: type[ast.expr_context]) -> set[str]:
    """Names ``X`` of every ``self.X`` in ``source`` stored (``ast.Store``) or read (``ast.Load``)."""
    return {
        node.attr
        for node in ast.walk(ast.parse(textwrap.dedent(source)))
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ctx)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def params(fn) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(fn).parameters if p != "self")


def seam_id(seam: Seam) -> str:
    return f"{getattr(seam.owner, '__name__', seam.owner)}.{seam.name}[{seam.kind}]"


# -- each seam exists as expected ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seam", SEAMS, ids=seam_id)
def test_seam_exists_with_the_expected_signature(seam):
    where = f"Ultralytics {ultralytics.__version__}: seam {seam_id(seam)} (used by {seam.site})"
    if seam.params is None:  # instance state: set by the owner's constructor
        stored = self_attributes(inspect.getsource(seam.owner.__init__), ast.Store)
        assert seam.name in stored, f"{where}: {seam.owner.__name__}.__init__ no longer sets self.{seam.name}"
    else:
        assert hasattr(seam.owner, seam.name), f"{where}: {seam.owner.__name__} has no attribute {seam.name} any more"
        now = params(getattr(seam.owner, seam.name))
        assert now == seam.params, f"{where}: parameters changed from {seam.params} to {now}"
    source = inspect.getsource(seam.owner)
    for fragment in seam.relies_on:
        assert fragment in source, f"{where}: {seam.owner.__name__} no longer contains `{fragment}` ({seam.why})"


@pytest.mark.parametrize("seam", [s for s in SEAMS if s.kind in {"override", "parameter"}], ids=seam_id)
def test_our_overrides_keep_ultralytics_signature(seam):
    overriders = {cls for t in TRAINERS for cls in t.__mro__ if cls.__module__.startswith("distill.")}
    defining = [cls for cls in overriders if seam.name in vars(cls)]
    assert defining, f"seam {seam_id(seam)}: no class of ours overrides it; drop it from SEAMS or restore the override"
    for cls in defining:
        ours = params(vars(cls)[seam.name])
        assert ours == seam.params, f"{cls.__name__}.{seam.name} takes {ours}, Ultralytics' {seam.params}"


def test_the_ddp_swap_reaches_the_class_ultralytics_builds():
    from ultralytics.engine import trainer as ul_trainer

    assert ul_trainer.nn.parallel is torch.nn.parallel, (
        "seam BaseTrainer._setup_train[patch]: ultralytics.engine.trainer no longer reaches DDP through torch's "
        "`nn.parallel` module, so distill.adapter.seams.cpu_ddp would not replace the class it builds"
    )


# -- KDModel skips DistillationModel.__init__: it must set everything the inherited methods read -------------------


def test_capture_state_is_all_the_private_state_distillation_model_has():
    stored = {n for n in self_attributes(inspect.getsource(DistillationModel), ast.Store) if private(n)}
    assert stored == set(CAPTURE_STATE), (
        f"DistillationModel's private instance state is now {sorted(stored)}, not {sorted(CAPTURE_STATE)}: KDModel "
        "skips its constructor, so distill.adapter.seams.start_feature_capture (and CAPTURE_STATE) must create the "
        "new state"
    )


def test_kdmodel_sets_everything_its_inherited_methods_read():
    set_by_kdmodel = self_attributes(inspect.getsource(KDModel.__init__), ast.Store) | set(CAPTURE_STATE)
    for name, member in vars(DistillationModel).items():
        if (
            name == "__init__"
            or name in vars(KDModel)
            or not (inspect.isfunction(member) or isinstance(member, property))
        ):
            continue
        fns = [member.fget, member.fset] if isinstance(member, property) else [member]
        for fn in filter(None, fns):
            read = self_attributes(inspect.getsource(fn), ast.Load)
            missing = {a for a in read if a not in set_by_kdmodel and not hasattr(KDModel, a)}
            assert not missing, (
                f"DistillationModel.{name} (inherited by KDModel) now reads self.{sorted(missing)}, which only "
                "DistillationModel.__init__ sets and KDModel skips: set it in KDModel.__init__"
            )


class Tiny(nn.Module):
    """A two-layer stand-in for a YOLO model: what the hook machinery needs is a ``.model`` layer list."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.ModuleList([nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.model:
            x = m(x)
        return x


def wrapper_without_the_parent_constructor() -> DistillationModel:
    """A ``DistillationModel`` set up the way ``KDModel`` sets itself up."""
    model = DistillationModel.__new__(DistillationModel)
    nn.Module.__init__(model)
    model.student_model, model.teacher_model = Tiny(), Tiny()
    model.feats_idx, model.teacher_feats_idx = [0, 1], [1, 0]
    seams.start_feature_capture(model)
    return model


def test_feature_capture_helpers_fill_clear_copy_and_drop():
    model = wrapper_without_the_parent_constructor()
    x = torch.zeros(1, 3, 4, 4)
    model.student_model(x), model.teacher_model(x)
    student, teacher = seams.captured_features(model)
    assert sorted(student) == sorted(teacher) == [0, 1]
    assert teacher[0].shape[1] == 4  # level 0 of the teacher is its layer 1

    twin = copy.deepcopy(model)  # the parent's __getstate__/__setstate__ re-attach the hooks to the copy's dicts
    assert not seams.captured_features(twin)[0]
    twin.student_model(x)
    assert sorted(seams.captured_features(twin)[0]) == [0, 1]

    seams.clear_features(model)
    assert seams.captured_features(model) == ({}, {})
    model.teacher_model.requires_grad_(True).train()
    seams.freeze_teacher(model)
    assert not model.teacher_model.training and not any(p.requires_grad for p in model.teacher_model.parameters())
    seams.drop_feature_hooks(model.teacher_model)
    assert not any(isinstance(h, FeatureHook) for m in model.teacher_model.modules() for h in m._forward_hooks.values())
    model.teacher_model(x)
    assert not teacher


def test_cpu_ddp_wraps_a_cpu_model_and_puts_the_class_back(tmp_path):
    import torch.distributed as dist

    original = torch.nn.parallel.DistributedDataParallel
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError):  # what Ultralytics' wrap does on CPU without the swap
            original(nn.Linear(2, 2), device_ids=[None])
        with seams.cpu_ddp():
            wrapped = torch.nn.parallel.DistributedDataParallel(nn.Linear(2, 2), device_ids=[None])
        assert isinstance(wrapped, original)
        assert torch.nn.parallel.DistributedDataParallel is original
    finally:
        dist.destroy_process_group()


# -- no underscored Ultralytics name outside the seams module -------------------------------------------------------


def ultralytics_private_names() -> set[str]:
    """Underscored names Ultralytics defines on the classes we extend or call (not those torch's ``nn.Module`` has)."""
    roots = [DistillationModel, FeatureHook, DetectionModel, SegmentationModel, PoseModel, YOLO, *TRAINERS]
    names: set[str] = set()
    for cls in {c for root in roots for c in root.__mro__ if c.__module__.startswith("ultralytics.")}:
        names |= {n for n in vars(cls) if private(n)}
        names |= {n for n in self_attributes(inspect.getsource(cls), ast.Store) if private(n)}
    return names - set(vars(nn.Module))


PRIVATE = ultralytics_private_names()
OVERRIDE_SITES = {tuple(s.site.split()[:2]) for s in SEAMS if s.kind == "override"}  # (path, "Class.method")


def findings(source: str, path: str) -> list[str]:
    """Every use of an underscored Ultralytics name in ``source`` that is not a listed override site."""
    out = []

    def visit(node: ast.AST, cls: str | None, method: str | None) -> None:
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ultralytics"):
            out.extend(f"{where}: imports {node.module}.{a.name}" for a in node.names if private(a.name))
            if any(map(private, node.module.split("."))):
                out.append(f"{where}: imports from {node.module}")
        if isinstance(node, ast.ClassDef):
            cls = node.name
        if isinstance(node, ast.FunctionDef) and cls is not None and method is None:
            method = node.name
            if node.name in PRIVATE and (path, f"{cls}.{node.name}") not in OVERRIDE_SITES:
                out.append(f"{where}: {cls} overrides {node.name}, which is not an override seam in SEAMS")
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            is_super = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "super"
            if not (is_super and node.attr == method and (path, f"{cls}.{method}") in OVERRIDE_SITES):
                out.append(f"{where}: .{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child, cls, method)

    visit(ast.parse(source), None, None)
    return out


def test_no_underscored_ultralytics_name_outside_the_seams_module():
    assert {s.name for s in SEAMS} - {"__init__"} <= PRIVATE  # the scan knows every seam's name
    found = []
    for file in sorted(DISTILL.rglob("*.py")):
        if file.parent != SEAMS_FILE.parent:  # the adapter package: the seams, and the assumptions' owners
            found += findings(file.read_text(), str(file.relative_to(DISTILL.parent)))
    assert not found, "underscored Ultralytics names outside distill/adapter/ (go through its seams): " + "; ".join(
        found
    )


def test_seams_module_uses_only_names_its_table_lists():
    used = {f.rsplit(".", 1)[-1] for f in findings(SEAMS_FILE.read_text(), "distill/adapter/seams.py")}
    assert used <= {s.name for s in SEAMS}, (
        f"distill/adapter/seams.py uses {sorted(used - {s.name for s in SEAMS})}: add to SEAMS"
    )


@pytest.mark.parametrize(
    "source",
    [
        "def f(model):\n    model._freeze_teacher()\n",
        "class K:\n    def train(self):\n        self._register_feature_hooks()\n",
        "from ultralytics.cfg import _YOLO_CLI_COMMAND\n",
        "class T:\n    def _do_train(self):\n        return super()._do_train()\n",
        "class LaunchMixin:\n    def final_eval(self):\n        return super()._setup_train()\n",
    ],
    ids=["stray call", "call on self", "private import", "unlisted override", "super call from elsewhere"],
)
def test_the_scan_catches_a_stray_private_name(source):
    assert findings(source, "distill/engine/trainer.py")


def test_the_scan_allows_only_the_listed_override_sites():
    source = "class LaunchMixin:\n    def _setup_ddp(self):\n        return super()._setup_ddp()\n"
    assert not findings(source, "distill/engine/trainer.py")
    assert findings(source, "distill/engine/model.py")


# -- each assumption still holds ----------------------------------------------------------------------------------


def unmet(source: str, fragments: tuple[str, ...], ordered: bool) -> list[str]:
    """The fragments missing from ``source`` (with ``ordered``: missing after the one before them)."""
    if not ordered:
        return [f for f in fragments if f not in source]
    at = 0
    for i, fragment in enumerate(fragments):
        found = source.find(fragment, at)
        if found < 0:
            return list(fragments[i:])
        at = found + len(fragment)
    return []


def sites(assumption: Assumption) -> list[tuple[str, str]]:
    return [tuple(site.split(":")) for site in assumption.site.split(", ")]


@pytest.mark.parametrize("assumption", ASSUMPTIONS, ids=lambda a: a.name)
def test_assumption_still_holds(assumption):
    owner = assumption.owner
    name = getattr(owner, "__qualname__", None) or owner.__name__
    missing = unmet(inspect.getsource(owner), assumption.fragments, assumption.ordered)
    assert not missing, (
        f"Ultralytics {ultralytics.__version__}: assumption {assumption.name} (relied on by {assumption.site}): "
        f"{name} no longer contains {missing}{' in this order' if assumption.ordered else ''}. {assumption.why}"
    )


@pytest.mark.parametrize("assumption", ASSUMPTIONS, ids=lambda a: a.name)
def test_assumption_names_the_functions_relying_on_it(assumption):
    for module, qualname in sites(assumption):
        assert module.startswith("distill."), f"assumption {assumption.name}: site {module} is not in distill/"
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part, None)
            assert target is not None, f"assumption {assumption.name}: {module}:{qualname} does not exist"
        assert inspect.isfunction(target) or isinstance(target, property), (
            f"assumption {assumption.name}: {module}:{qualname} is not a function"
        )


def test_assumption_names_are_unique_and_owners_are_ultralytics():
    names = [a.name for a in ASSUMPTIONS]
    assert len(names) == len(set(names))
    for a in ASSUMPTIONS:
        module = a.owner.__name__ if inspect.ismodule(a.owner) else a.owner.__module__
        assert module.startswith("ultralytics."), f"assumption {a.name}: owner {a.owner!r} is not Ultralytics'"


def test_the_order_check_refuses_fragments_out_of_order():
    source = "a()\nb()\nc()\n"
    assert not unmet(source, ("a()", "b()", "c()"), ordered=True)
    assert unmet(source, ("b()", "a()"), ordered=True) == ["a()"]
    assert not unmet(source, ("b()", "a()"), ordered=False)
    assert unmet(source, ("a()", "d()"), ordered=False) == ["d()"]
