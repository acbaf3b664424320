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
        DistillError: When a GPU asked for is not visible (:func:`check_device`), or the batch does not divide across
            the devices, naming both numbers.

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
    ids = gpu_ids(text)
    if ids is None:
        return DeviceChoice(text, [text])  # anything else is Ultralytics' to accept or refuse
    check_device(device, cuda_count)
    if len(ids) > 1:
        check_batch_divides(batch, len(ids), f"GPUs (devices {','.join(ids)})", ", or choose the GPUs with device=...")
    return DeviceChoice(",".join(ids), [f"cuda:{i}" for i in ids])


def gpu_ids(device: str | int | None) -> list[str] | None:
    """Return the CUDA ids of a device string (``"0,1"``, ``"cuda:2"``, ``3``), or ``None`` when it names none."""
    text = str(device if device is not None else "").strip().lower().replace("cuda:", "").replace(" ", "")
    ids = [p for p in text.split(",") if p]
    return ids if ids and all(p.isdigit() for p in ids) else None


def check_device(device: str | int | None, cuda_count: int | None = None) -> None:
    """Refuse a device string naming a GPU this process cannot see, before anything is built or downloaded.

    Ultralytics would refuse it too, but only once the trainer starts, with a traceback; any other device string
    (``cpu``, ``mps``, empty) is left to it. ``cuda_count``: visible CUDA devices (default: asked from torch).

    Raises:
        DistillError: Naming the device asked for and the devices that are visible.

    Examples:
        >>> check_device("0,1", cuda_count=2)
        >>> check_device("cuda:3", cuda_count=2)
        Traceback (most recent call last):
        distill.errors.DistillError: device 'cuda:3': GPU 3 is not visible here (visible: 0, 1): use those or cpu
    """
    ids = gpu_ids(device)
    if ids is None:
        return
    count = visible_cuda_devices() if cuda_count is None else cuda_count
    missing = ", ".join(i for i in ids if int(i) >= count)
    if not missing:
        return
    if not count:
        raise DistillError(f"device '{device}': no CUDA device is visible here (asked for GPU {missing}): use cpu")
    visible = ", ".join(map(str, range(count)))
    raise DistillError(f"device '{device}': GPU {missing} is not visible here (visible: {visible}): use those or cpu")


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
