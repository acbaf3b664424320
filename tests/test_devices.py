"""A training step's device when none is given: every GPU the pod can see (Ultralytics DDP), else the CPU."""

from __future__ import annotations

import pytest

from distill import DistillError
from distill.devices import choose_devices, visible_cuda_devices

#: In-process only (no training, server or subprocess): part of `make test-fast`.
pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("device", "cuda_count", "expected", "devices"),
    [
        ("", 4, "0,1,2,3", ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
        (None, 2, "0,1", ["cuda:0", "cuda:1"]),
        ("", 1, "0", ["cuda:0"]),
        ("", 0, "cpu", ["cpu"]),
        ("cpu", 8, "cpu", ["cpu"]),
        ("1", 8, "1", ["cuda:1"]),
        ("cuda:0, cuda:2", 8, "0,2", ["cuda:0", "cuda:2"]),
    ],
)
def test_device_choice(device, cuda_count, expected, devices):
    choice = choose_devices(device, 16, cuda_count=cuda_count)
    assert (choice.device, choice.devices) == (expected, devices)


def test_batch_must_divide_across_the_gpus_it_uses():
    with pytest.raises(DistillError, match=r"batch 10 does not divide across 4 GPUs \(devices 0,1,2,3\)"):
        choose_devices("", 10, cuda_count=4)
    with pytest.raises(DistillError, match="batch 9 does not divide across 2 GPUs"):
        choose_devices("0,1", 9, cuda_count=8)
    with pytest.raises(DistillError, match="batch -1 does not divide"):  # AutoBatch cannot span GPUs
        choose_devices("", -1, cuda_count=2)
    assert choose_devices("", 10, cuda_count=1).device == "0"  # one GPU: any batch
    assert choose_devices("", 10, cuda_count=0).device == "cpu"


def test_visible_devices_on_this_machine_match_torch():
    import torch

    expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert visible_cuda_devices() == expected
    assert choose_devices("", 16).devices == ([f"cuda:{i}" for i in range(expected)] or ["cpu"])
