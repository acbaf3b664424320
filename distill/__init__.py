"""yolo-distill: knowledge distillation for Ultralytics YOLO inside the unmodified Ultralytics trainer.

Importing the package first keeps Ultralytics offline (see :mod:`distill.offline`), then exposes the API. The API
names are loaded on first use, so importing a light module (the CLI's argument parsing, ``--help``) does not import
torch and Ultralytics:

    >>> from distill import DistillConfig, distill, train  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .errors import DistillError
from .offline import configure as _configure_offline

_configure_offline()

__version__ = "0.1.0"
__all__ = ["DistillConfig", "DistillError", "RunResult", "distill", "model_task", "train", "__version__"]

#: Public name → the submodule that defines it (imported on first access, PEP 562).
_LAZY = {"DistillConfig": "config", "RunResult": "api", "distill": "api", "model_task": "api", "train": "api"}


def __getattr__(name: str) -> Any:
    """Import the public API on first use (``distill.train``, ``from distill import distill``)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
