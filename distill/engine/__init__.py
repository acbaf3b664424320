"""The distillation itself: the API, the trainer seam, the KD model, pools, pseudo-labels and self-training rounds.

:mod:`~distill.engine.api` (``train``/``distill``, re-exported by :mod:`distill`) drives
:mod:`~distill.engine.trainer`, which builds :mod:`~distill.engine.model` from :mod:`~distill.engine.layers`,
:mod:`~distill.engine.connectors` and :mod:`distill.losses`; an unlabelled pool comes in through
:mod:`~distill.engine.pool_data`, :mod:`~distill.engine.pseudo_labels`, :mod:`~distill.engine.soft_pool` and
:mod:`~distill.engine.online_pool`. The engine uses :mod:`distill.data` and the foundations, never the steps.
Importing the package imports nothing (no Ultralytics, no torch).
"""
