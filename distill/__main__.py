"""``python -m distill`` is the ``yolo-distill`` command: the launch line under ``torchrun -m distill ...``."""

import sys

from .cli import main

sys.exit(main())
