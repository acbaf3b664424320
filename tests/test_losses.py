"""Loss modules against independent reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.losses import (
    ChannelWiseDistillationLoss,
    LogitLoss,
    MaskedGenerativeLoss,
    MimicLoss,
    head_outputs,
    random_spatial_mask,
    shared_outputs,
)


def cwd_reference(student: np.ndarray, teacher: np.ndarray, tau: float) -> float:
    """CWD written out in NumPy, loop by loop, from the paper's definition."""
    n, c = student.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            s = student[i, j].ravel() / tau
            t = teacher[i, j].ravel() / tau
            ps = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            pt = np.exp(t - t.max()) / np.exp(t - t.max()).sum()
            total += float(np.sum(pt * (np.log(pt) - np.log(ps))))
    return total * tau**2 / (n * c)


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_cwd_matches_numpy_reference(tau):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 3, 4, 5)).astype(np.float64)
    t = rng.normal(size=(2, 3, 4, 5)).astype(np.float64)
    got = float(ChannelWiseDistillationLoss(tau)(torch.from_numpy(s), torch.from_numpy(t)))
    assert got == pytest.approx(cwd_reference(s, t, tau), rel=1e-5)
    assert got > 0


def test_cwd_and_mimic_are_zero_for_identical_inputs():
    x = torch.randn(2, 8, 6, 6)
    assert float(ChannelWiseDistillationLoss()(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(MimicLoss()(x, x.clone())) == 0.0


def test_mimic_is_mean_squared_error():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert float(MimicLoss()(s, t)) == pytest.approx(float(((s - t) ** 2).mean()), rel=1e-6)


def test_mgd_mask_drops_the_configured_fraction_of_positions():
    torch.manual_seed(0)
    mask = random_spatial_mask(torch.zeros(8, 5, 64, 64), 0.65)
    assert mask.shape == (8, 1, 64, 64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 1 - float(mask.mean()) == pytest.approx(0.65, abs=0.01)


def test_mgd_loss_is_alpha_times_sum_squared_error_over_batch():
    loss = MaskedGenerativeLoss(4, ratio=0.65, alpha=2e-5)
    for p in loss.generator.parameters():  # a zero generator outputs zeros: the loss is α·Σ t² / N exactly
        torch.nn.init.zeros_(p)
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    assert float(loss(s, t).detach()) == pytest.approx(2e-5 * float((t**2).sum()) / 3, rel=1e-5)


def test_mgd_generator_gets_gradients():
    loss = MaskedGenerativeLoss(4)
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    loss(s, torch.randn(2, 4, 6, 6)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.generator.parameters())
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_logit_loss_sums_mse_over_shared_outputs_only():
    student = {"boxes": torch.randn(2, 64, 10), "scores": torch.randn(2, 3, 10), "kpts": torch.randn(2, 51, 10)}
    teacher = {"boxes": torch.randn(2, 64, 10), "scores": torch.randn(2, 3, 10), "kpts": torch.randn(2, 17, 10)}
    keys = shared_outputs(student, teacher)
    assert keys == ["boxes", "scores"]  # kpts differ in shape
    expected = sum(float(((student[k] - teacher[k]) ** 2).mean()) for k in keys)
    assert float(LogitLoss(keys)(student, teacher)) == pytest.approx(expected, rel=1e-6)


def test_head_outputs_handles_eval_tuples_and_end_to_end_branches():
    d = {"boxes": torch.zeros(1, 4, 2), "scores": torch.zeros(1, 2, 2), "feats": [torch.zeros(1)]}
    assert set(head_outputs(d)) == {"boxes", "scores"}
    assert set(head_outputs((torch.zeros(1), d))) == {"boxes", "scores"}
    e2e = {"one2many": d, "one2one": {"scores": torch.ones(1, 2, 2)}}
    assert head_outputs(e2e)["scores"] is d["scores"]
