"""Which devices a pipeline training step trains on: by default every GPU the pod was given.

The pipeline's ``gpus`` parameter sets the pod's accelerator limit; Ultralytics' own default (``device=None``) would
then train on GPU 0 alone and leave the others idle. So a step with no explicit device takes every visible CUDA
device and hands them to Ultralytics as ``"0,1,..."`` (its single-node DDP); with none visible it trains on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DistillError


@dataclass(frozen=True)
class DeviceChoice:
    """The device string given to Ultralytics and the devices it stands for.

    Attributes:
        device (str): Ultralytics ``device`` argument: ``cpu``, ``0`` or ``0,1,...``.
        devices (list[str]): What it uses, as torch device names (``cpu``, ``cuda:0``, ...), for the records.
    """

    device: str
    devices: list[str]


def visible_cuda_devices() -> int:
    """Return the number of CUDA devices this process can see (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_devices(device: str | None, batch: int, cuda_count: int | None = None) -> DeviceChoice:
    """Resolve a training step's device: the one asked for, else every visible CUDA device, else the CPU.

    Args:
        device: Ultralytics device string; ``None`` or empty selects automatically.
        batch: Total batch size; with several devices it must divide by their count (each rank gets an equal share).
        cuda_count: Visible CUDA devices (default: asked from torch; given explicitly in tests).

    Returns:
        (DeviceChoice): The device string for Ultralytics and the device list to record.

    Raises:
        DistillError: When the batch does not divide across the devices, naming both numbers.

    Examples:
        >>> choose_devices("", 16, cuda_count=4)
        DeviceChoice(device='0,1,2,3', devices=['cuda:0', 'cuda:1', 'cuda:2', 'cuda:3'])
        >>> choose_devices(None, 16, cuda_count=0).device
        'cpu'
        >>> choose_devices("cpu", 7, cuda_count=4).devices
        ['cpu']
    """
    text = (device or "").strip().lower().replace("cuda:", "").replace(" ", "")
    if not text:
        count = visible_cuda_devices() if cuda_count is None else cuda_count
        text = ",".join(str(i) for i in range(count)) if count else "cpu"
    if text in {"cpu", "mps"}:
        return DeviceChoice(text, [text])
    ids = [p for p in text.split(",") if p]
    if not all(p.isdigit() for p in ids):
        return DeviceChoice(text, [text])  # anything else is Ultralytics' to accept or refuse
    if len(ids) > 1:
        check_batch_divides(batch, len(ids), f"GPUs (devices {','.join(ids)})", ", or choose the GPUs with device=...")
    return DeviceChoice(",".join(ids), [f"cuda:{i}" for i in ids])


def check_batch_divides(batch: float, ranks: int, over: str, hint: str = "") -> None:
    """Refuse a total batch that does not split evenly over ``ranks`` processes (each trains ``batch / ranks``).

    Used for one node's GPUs (:func:`choose_devices`), the ranks of a multi-node launch and a TrainJob's nodes × GPUs;
    ``over`` names what the ranks are (``"GPUs (devices 0,1)"``), ``hint`` ends the message with another way out.

    Raises:
        DistillError: Naming the batch and the rank count; AutoBatch (``batch < 1``) cannot span ranks either.
    """
    if batch < 1 or batch % ranks:
        raise DistillError(
            f"batch {batch} does not divide across {ranks} {over}: pass a batch that is a multiple of {ranks}{hint}"
        )
