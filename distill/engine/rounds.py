"""Self-training rounds with an unlabelled pool: each round's student teaches the next (``pool_rounds``).

Round 1 is the run as always: the teacher pseudo-labels the pool and distils into the student. A student trained on
the labelled images and the pool usually ends *above* the teacher that labelled it (Noisy Student: Xie et al. 2020;
so it does in make demo's regime, ``benchmarks/README.md``, section 'Unlabelled pool, make demo's regime'), so from
round 2 on the previous round's student is the teacher — it labels the pool again, better, and its outputs are the KD
targets — and a new student trains from the same start. The student model, data, seed and every other setting stay
those of the run.

Each round is one ordinary run: locally its own folder ``<out>-round<k>`` (a rerun reuses a finished round, for the
same inputs, and trains an unfinished one again), in a pipeline its own step ``<name>-round<k>`` with its own
checkpoint and ``result.json`` (a retried pod resumes the round it was in, from its last checkpoint).
The round a run is records itself in its config's ``extra`` (``{"round": k}``), written to ``distill.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..config import DistillConfig

ROUND = "round"


def needs_rounds(config: DistillConfig) -> bool:
    """Whether a run with a pool must train earlier rounds first: ``pool_rounds > 1`` and not itself one round."""
    return config.pool_rounds > 1 and ROUND not in config.extra


def run_rounds(config: DistillConfig, train_round: Callable[[int, DistillConfig], str]) -> DistillConfig:
    """Train rounds ``1 … pool_rounds − 1`` and return the last round's config (its teacher: the round before's best).

    Args:
        config: The run's configuration (``teacher``: the run's teacher; ``pool_rounds``: how many rounds in all).
        train_round: Trains round ``k`` with the config it is given and returns that student's best weights (a local
            path or a URI, whatever ``DistillConfig.teacher`` takes where the next round runs). It reuses a round
            that already finished: the caller knows where rounds are kept.

    Returns:
        (DistillConfig): The final round's config: ``extra`` marks it as round ``pool_rounds``; with one round,
        ``config`` unchanged.
    """
    if config.pool_rounds <= 1:
        return config
    teacher = config.teacher
    for k in range(1, config.pool_rounds):
        teacher = train_round(k, round_config(config, k, teacher))
    return round_config(config, config.pool_rounds, teacher)


def round_config(config: DistillConfig, k: int, teacher: str) -> DistillConfig:
    """Return round ``k``'s config: ``config`` with ``teacher`` and the round recorded in ``extra``."""
    return replace(config, teacher=teacher, extra={**config.extra, ROUND: k})
