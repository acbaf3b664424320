"""Timing one training step of the speed benchmark from inside the unmodified Ultralytics trainer.

:class:`StepTimer` times each step through Ultralytics' callbacks, :class:`StepBreakdown` splits it into teacher
forward, student forward, losses and backward + optimizer with forward hooks, and :func:`teacher_inference` times
the teacher alone on the batches a run trained on (the floor's second half). Used by :mod:`benchmarks.speed`'s
workers, one variant per process.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


class StepTimer:
    """Ultralytics callbacks timing each training step (batch start → batch end, CUDA synchronised)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.times: list[float] = []
        self._start = 0.0

    def sync(self) -> None:
        """Wait for queued CUDA work, so a clock read covers it (no-op on CPU)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def start(self, trainer: Any) -> None:
        """``on_train_batch_start``: note the time."""
        self.sync()
        self._start = time.perf_counter()

    def end(self, trainer: Any) -> None:
        """``on_train_batch_end``: record the step's seconds."""
        self.sync()
        self.times.append(time.perf_counter() - self._start)

    def callbacks(self) -> dict[str, list]:
        """Return the callbacks dict for :func:`distill.train` / :func:`distill.distill`."""
        return {"on_train_batch_start": [self.start], "on_train_batch_end": [self.end]}


class StepBreakdown:
    """Forward pre/post hooks splitting each step into teacher forward, student forward, losses, backward+optimizer.

    Attached at ``on_train_start`` (after the EMA copy, so no hook lands in a checkpoint) to the trained module, its
    ``teacher_model`` and its ``student_model`` (ours and Ultralytics' ``DistillationModel`` name them alike; a plain
    model is its own student), and removed at ``on_train_epoch_end``, before anything is saved. ``losses`` is the
    model call minus the two forwards (task loss, KD losses and adapters); ``backward_optimizer`` is the step minus
    the model call (backward, clipping, optimizer, EMA).
    """

    def __init__(self, timer: StepTimer) -> None:
        self.timer = timer
        self.parts: dict[str, list[float]] = {"model": [], "teacher_forward": [], "student_forward": []}
        self._open: dict[str, float] = {}
        self._handles: list = []

    def _pre(self, key: str):
        def hook(module, args):
            self.timer.sync()
            self._open[key] = time.perf_counter()

        return hook

    def _post(self, key: str):
        def hook(module, args, output):
            self.timer.sync()
            if key in self._open:
                self.parts[key].append(time.perf_counter() - self._open.pop(key))

        return hook

    def attach(self, trainer: Any) -> None:
        """``on_train_start``: hook the model, its teacher and its student."""
        from ultralytics.utils.torch_utils import unwrap_model

        model = unwrap_model(trainer.model)
        student = getattr(model, "student_model", None) or model
        spans = {"model": (model, model), "student_forward": (student.model[0], student.model[-1])}
        teacher = getattr(model, "teacher_model", None)
        if teacher is not None:
            spans["teacher_forward"] = (teacher.model[0], teacher.model[-1])
        for key, (first, last) in spans.items():  # a network's forward runs from its first layer to its head
            self._handles.append(first.register_forward_pre_hook(self._pre(key)))
            self._handles.append(last.register_forward_hook(self._post(key)))

    def detach(self, trainer: Any) -> None:
        """``on_train_epoch_end``: remove every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def medians(self, steps: list[float], warmup: int) -> dict[str, float]:
        """Median seconds of each part over the timed steps."""
        model = self.parts["model"][warmup:]
        student = self.parts["student_forward"][warmup:]
        teacher = self.parts["teacher_forward"][warmup:] or [0.0] * len(model)
        n = min(len(steps), len(model), len(student), len(teacher))
        if n == 0:
            return {}
        steps, model, student, teacher = steps[:n], model[:n], student[:n], teacher[:n]
        losses = [m - t - s for m, t, s in zip(model, teacher, student, strict=True)]
        return {
            "teacher_forward": round(statistics.median(teacher), 5),
            "student_forward": round(statistics.median(student), 5),
            "losses": round(statistics.median(losses), 5),
            "backward_optimizer": round(statistics.median(st - m for st, m in zip(steps, model, strict=True)), 5),
        }


def teacher_inference(job: dict[str, Any], trainer: Any) -> list[float]:
    """Time the teacher's no-grad forward (half precision on CUDA) on the batches ``trainer`` trained on."""
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    device = trainer.device
    teacher = load_checkpoint(job["teacher"])[0].to(device).eval()
    if device.type == "cuda":
        teacher = teacher.half()
    dtype = next(teacher.parameters()).dtype
    times = []
    with torch.no_grad():
        for i, batch in enumerate(trainer.train_loader):
            if i >= job["warmup"] + job["steps"]:
                break
            img = trainer.preprocess_batch(batch)["img"].to(dtype)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            teacher(img)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times
