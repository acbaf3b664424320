"""Where this process stands in a ``torchrun`` launch: world size, global rank, local rank, from the environment.

Two launchers start ranks of a training run. Ultralytics' own single-node DDP (``device=0,1,...``) spawns
``torch.distributed.run`` on one node; an external ``torchrun --nnodes N`` (a Kubeflow Trainer ``TrainJob``, or a
user's own command line) starts ranks on several nodes. Both set ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE``; the trainer seam (:mod:`distill.engine.trainer`) takes the world from them so that every rank of
every node joins one process group, and the steps let only global rank 0 touch S3 and MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """A process's place in a distributed launch (a plain, single-process run is ``world_size == 1``).

    Attributes:
        world_size (int): Ranks over all nodes (``WORLD_SIZE``).
        rank (int): Global rank, ``-1`` outside a distributed launch (Ultralytics' convention).
        local_rank (int): Rank on this node, ``-1`` outside a distributed launch.
        local_world_size (int): Ranks on this node (``LOCAL_WORLD_SIZE``).
    """

    world_size: int = 1
    rank: int = -1
    local_rank: int = -1
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """True when this process is one rank of several."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """True on the one process that writes checkpoints, uploads outputs and talks to MLflow (global rank 0)."""
        return self.rank in {-1, 0}

    @property
    def nodes(self) -> int:
        """Number of nodes, assuming the same number of ranks on each (what ``torchrun`` starts)."""
        return max(1, self.world_size // max(1, self.local_world_size))


def current(environ: dict[str, str] | None = None) -> Launch:
    """Read the launch from ``environ`` (default ``os.environ``) as Ultralytics does.

    ``RANK`` and ``LOCAL_RANK`` only count when ``WORLD_SIZE > 1``.

    Examples:
        >>> current({})
        Launch(world_size=1, rank=-1, local_rank=-1, local_world_size=1)
        >>> current({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}).nodes
        2
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Launch()
    return Launch(
        world_size=world,
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
    )
