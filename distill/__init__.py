"""yolo-distill: knowledge distillation for Ultralytics YOLO inside the unmodified Ultralytics trainer.

Importing the package changes nothing: no environment variable, no file, no Ultralytics import. Ultralytics is
configured (offline, a config dir of its own, a local font, integrations off) by :func:`configure`, which the entry
points call. The API names are loaded on first use; the ones that run Ultralytics configure it before importing it,
so a Python API user needs no call of their own:

    >>> import distill
    >>> from distill import DistillConfig, distill, train  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .errors import DistillError
from .offline import configure

__version__ = "0.1.0"
__all__ = ["DistillConfig", "DistillError", "RunResult", "configure", "distill", "model_task", "train", "__version__"]

#: Public name → the submodule that defines it (imported on first access, PEP 562).
_LAZY = {
    "DistillConfig": "config",
    "RunResult": "engine.api",
    "distill": "engine.api",
    "model_task": "engine.api",
    "train": "engine.api",
}
#: Submodules that import Ultralytics at their top: Ultralytics must be configured before they load.
_NEEDS_ULTRALYTICS = {"engine.api"}


def __getattr__(name: str) -> Any:
    """Import the public API on first use (``distill.train``, ``from distill import distill``)."""
    if name in _LAZY:
        import importlib

        if _LAZY[name] in _NEEDS_ULTRALYTICS:
            configure()  # before the submodule imports Ultralytics, which reads its environment once
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
