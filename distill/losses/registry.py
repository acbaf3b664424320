"""The feature-loss registry: a feature loss declares itself once, with :func:`feature_loss` on its class.

    @feature_loss("cwd", default_weight=1.0)
    class ChannelWiseDistillationLoss(nn.Module):
        @classmethod
        def from_config(cls, config: LossSettings, channels: int) -> ChannelWiseDistillationLoss:
            return cls(tau=config.tau)

As with torchdistill's ``@register_single_loss``, the name is what ``loss=`` selects; unlike it, that one line is read
two ways, because :mod:`distill.config` (plain data pickled into checkpoints, imported by light tools) must not import
torch, and every loss module does:

- :func:`declarations` lists this package's modules by file name (:func:`pkgutil.iter_modules`) and reads each
  decorator's literal name and default weight from the source (:mod:`ast`) without importing the module. The config's
  choices (``loss=``, the CLI's ``--loss``, the pipeline parameter) and its default weights come from there;
- :func:`build_feature_loss`, the model factory's one lookup, imports the declaring module, whose decorator registers
  the class, and calls its ``from_config`` with the run's config and the layer pair's teacher channels.

So a new feature loss is one new file in this folder. The name and weight must be literals (they are read, not run);
the reason for the weight goes in the module's docstring. ``none`` (no feature term) has no module: it is declared
here (:data:`NONE`).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import DistillError

if TYPE_CHECKING:
    from torch import nn

#: The ``loss`` that means no feature term: weight 0, no module, listed last among the choices.
NONE = "none"

_Class = TypeVar("_Class", bound=type)
#: Loss classes by name, filled by :func:`feature_loss` as their modules are imported.
_CLASSES: dict[str, type] = {}


class LossSettings(Protocol):
    """What a loss's ``from_config`` may read: the run's :class:`~distill.config.DistillConfig` has all of it.

    Named here, not imported from the config, so the losses depend on no module above them.
    """

    tau: float
    mgd_ratio: float
    mgd_alpha: float


@dataclass(frozen=True)
class Declaration:
    """One feature loss as its module declares it: the ``loss=`` name, its default weight, the declaring module."""

    name: str
    default_weight: float
    module: str


def feature_loss(name: str, default_weight: float) -> Callable[[_Class], _Class]:
    """Declare the decorated loss class as the feature loss ``name``, weighted ``default_weight`` unless configured.

    Both arguments must be literals (:func:`declarations` reads them from the source). The class must have a
    classmethod ``from_config(config, channels)`` returning the loss module for one layer pair: ``config`` is the
    run's :class:`~distill.config.DistillConfig`, ``channels`` the teacher map's channels (the student map is aligned
    to them before the loss sees it).
    """

    def register(cls: _Class) -> _Class:
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"feature loss {name!r}: {cls.__qualname__} has no from_config(config, channels)")
        _CLASSES[name] = cls
        return cls

    return register


def registered() -> dict[str, type]:
    """Return the loss classes registered so far (by the modules imported so far), by name."""
    return dict(_CLASSES)


@cache
def declarations() -> dict[str, Declaration]:
    """Return every feature loss this package's modules declare, by name in sorted order; none is imported.

    Raises:
        TypeError: A declaration whose name or weight is not a literal string / non-negative number.
        ValueError: Two declarations of one name, or one of :data:`NONE`.
    """
    package = sys.modules[__package__]
    found: dict[str, Declaration] = {}
    for info in pkgutil.iter_modules(package.__path__, f"{__package__}."):
        if info.ispkg:
            continue
        for declaration in _declared_in(info):
            if declaration.name == NONE or declaration.name in found:
                where = found[declaration.name].module if declaration.name in found else __name__
                raise ValueError(f"{declaration.module}: feature loss {declaration.name!r} is declared by {where}")
            found[declaration.name] = declaration
    return dict(sorted(found.items()))


def feature_loss_weights() -> dict[str, float]:
    """Return the default weight of every feature loss, by name (sorted), :data:`NONE` (weight 0) last."""
    return {name: d.default_weight for name, d in declarations().items()} | {NONE: 0.0}


def _declared_in(info: pkgutil.ModuleInfo) -> list[Declaration]:
    """Return the ``@feature_loss`` declarations on the top-level classes of a module, read from its source."""
    spec = info.module_finder.find_spec(info.name)  # finds the file, imports nothing
    source = spec.loader.get_source(info.name) if spec is not None and spec.loader is not None else None
    if not source or "feature_loss(" not in source:
        return []
    out = []
    for node in ast.parse(source, spec.origin or info.name).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and _called_name(decorator.func) == feature_loss.__name__:
                out.append(_read(decorator, info.name, node.name))
    return out


def _called_name(func: ast.expr) -> str | None:
    """Return the name a decorator calls: ``feature_loss(...)`` or ``registry.feature_loss(...)``."""
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _read(call: ast.Call, module: str, cls: str) -> Declaration:
    """Return the declaration a ``@feature_loss(...)`` call states, its arguments bound as the function binds them."""
    where = f"{module}.{cls}: @{feature_loss.__name__}"
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        if len(kwargs) != len(call.keywords):
            raise TypeError("**kwargs")
        bound = inspect.signature(feature_loss).bind(*args, **kwargs).arguments
    except (ValueError, TypeError, SyntaxError) as e:
        raise TypeError(f"{where} takes a literal name and default_weight ({e})") from None
    name, weight = bound["name"], bound["default_weight"]
    number = isinstance(weight, int | float) and not isinstance(weight, bool)
    word = isinstance(name, str) and name.isidentifier() and name == name.lower()  # the config lower-cases ``loss``
    if not (word and number and math.isfinite(weight) and weight >= 0):
        raise TypeError(f"{where} needs a lower-case word and a finite default_weight >= 0, got {name!r}, {weight!r}")
    return Declaration(name, float(weight), module)


def build_feature_loss(config: Any, channels: int) -> nn.Module:
    """Return the loss module ``config.loss`` names for one layer pair whose teacher map has ``channels`` channels.

    Imports the declaring module (its decorator registers the class) and returns ``cls.from_config(config, channels)``.
    A module of its own per layer pair: MGD's owns that layer's generator.

    Raises:
        DistillError: ``config.loss`` is :data:`NONE` (no feature term, nothing to build) or declared nowhere.
    """
    declaration = declarations().get(config.loss)
    if declaration is None:
        choices = ", ".join(feature_loss_weights())
        raise DistillError(f"unknown loss '{config.loss}': choose one of {choices}" if config.loss != NONE else
                           f"loss '{NONE}' has no feature-loss module to build")  # fmt: skip
    importlib.import_module(declaration.module)
    cls = _CLASSES.get(declaration.name)
    if cls is None:
        raise TypeError(f"{declaration.module} declares feature loss {declaration.name!r} but registered no class")
    return cls.from_config(config, channels)
