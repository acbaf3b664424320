"""One rank of a 2-process gloo DDP step on CPU, launched by ``torch.distributed.run`` like Ultralytics' DDP.

Each rank builds the KD model through the real trainer seam, wraps it exactly as the Ultralytics trainer does
(``DistributedDataParallel(find_unused_parameters=True)``), takes one SGD step on a *different* batch per rank, and
reports its KD losses and adapter weights. Rank 0 writes what all ranks reported to ``argv[1]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from test_model import make_trainer, real_batch  # noqa: E402

from distill import DistillConfig  # noqa: E402


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # identical initial weights (DDP also broadcasts rank 0's at wrap time)
    trainer = make_trainer(Path(tempfile.mkdtemp()), "detect", DistillConfig(teacher="yolov8s.yaml", loss="mgd"))
    model = trainer.model.train()
    initial = torch.cat([p.detach().flatten() for p in model.connectors.parameters()]).clone()
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    batch = real_batch(trainer, 2)
    if rank == 1:
        batch["img"] = batch["img"].flip(-1).contiguous() * 0.5  # a different batch on this rank
    optimizer = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1)
    loss, items = ddp(batch)
    loss.sum().backward()
    optimizer.step()
    adapters = torch.cat([p.detach().flatten() for p in model.connectors.parameters()])
    gathered = [torch.zeros_like(adapters) for _ in range(world)]
    dist.all_gather(gathered, adapters)
    report = {k: float(v) for k, v in items.items() if k in ("mgd_loss", "logit_loss")}
    reports = [None] * world
    dist.all_gather_object(reports, report)
    if rank == 0:
        Path(out).write_text(
            json.dumps(
                {
                    "kd": reports,
                    "adapters_equal": all(torch.equal(gathered[0], g) for g in gathered[1:]),
                    "adapters_moved": not torch.equal(gathered[0], initial),
                    "teacher_frozen": all(not p.requires_grad for p in model.teacher_model.parameters()),
                }
            )
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1])
