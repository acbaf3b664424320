"""yolo-distill: knowledge distillation for Ultralytics YOLO inside the unmodified Ultralytics trainer.

Importing the package first keeps Ultralytics offline (see :mod:`distill.offline`), then exposes the API:

    >>> from distill import DistillConfig, distill, train  # doctest: +SKIP
"""

from .offline import configure as _configure_offline

_configure_offline()

from .api import RunResult, distill, model_task, train  # noqa: E402
from .config import DistillConfig  # noqa: E402
from .errors import DistillError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["DistillConfig", "DistillError", "RunResult", "distill", "model_task", "train", "__version__"]
