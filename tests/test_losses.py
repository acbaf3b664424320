"""Loss modules against independent reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.utils.tal import make_anchors

from distill.losses import (
    ChannelWiseDistillationLoss,
    DistributionLogitLoss,
    KeypointDistillationLoss,
    LocalizationDistillationLoss,
    LogitLoss,
    MaskDistillationLoss,
    MaskedGenerativeLoss,
    MimicLoss,
    NormalizedChannelWiseLoss,
    PearsonDistillationLoss,
    ScoreDistillationLoss,
    anchor_mean,
    batch_standardize,
    head_dict,
    head_outputs,
    random_spatial_mask,
    shared_outputs,
    standardize_channels,
    teacher_confidence,
)

#: In-process only (no training, server or subprocess): part of `make test-fast`.
pytestmark = pytest.mark.fast


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


def test_confidence_weighted_logit_loss_ignores_what_the_teacher_calls_background():
    """``logit_conf_weight`` with ``mse``: an error only at anchors the teacher is sure are background costs ~nothing,
    the same error where it sees an object costs in full; uniform weights give the plain MSE."""
    teacher = {"scores": torch.full((1, 2, 8), -20.0), "kpts": torch.zeros(1, 24, 8)}
    teacher["scores"][0, 0, :2] = 20.0  # an object on anchors 0 and 1, background elsewhere
    off_background = {"scores": teacher["scores"].clone(), "kpts": torch.zeros(1, 24, 8)}
    off_background["kpts"][..., 2:] = 3.0
    off_object = {"scores": teacher["scores"].clone(), "kpts": torch.zeros(1, 24, 8)}
    off_object["kpts"][..., :2] = 3.0
    weighted, plain = LogitLoss(["scores", "kpts"], conf_weight=True), LogitLoss(["scores", "kpts"])
    assert float(weighted(off_background, teacher)) < 1e-6 < 8.9 < float(weighted(off_object, teacher)) < 9.1
    assert float(plain(off_background, teacher)) == pytest.approx(9.0 * 6 / 8)  # the uniform mean counts it
    assert weighted.terms == {"scores": "mse-conf", "kpts": "mse-conf"} and plain.terms["kpts"] == "mse"
    uniform = {"scores": torch.zeros(1, 2, 8)}  # every anchor weighted alike: the plain MSE again
    s, t = (
        {"scores": uniform["scores"], "kpts": torch.randn(1, 24, 8)},
        {"scores": uniform["scores"], "kpts": torch.randn(1, 24, 8)},
    )
    assert float(LogitLoss(["kpts"], conf_weight=True)(s, t)) == pytest.approx(
        float(LogitLoss(["kpts"])(s, t)), rel=1e-5
    )


def test_head_outputs_handles_eval_tuples_and_end_to_end_branches():
    d = {"boxes": torch.zeros(1, 4, 2), "scores": torch.zeros(1, 2, 2), "feats": [torch.zeros(1)]}
    assert set(head_outputs(d)) == {"boxes", "scores"}
    assert set(head_outputs((torch.zeros(1), d))) == {"boxes", "scores"}
    e2e = {"one2many": d, "one2one": {"scores": torch.ones(1, 2, 2)}}
    assert head_outputs(e2e)["scores"] is d["scores"]


# -- PKD ---------------------------------------------------------------------------------------------------------------
def pkd_reference(student: np.ndarray, teacher: np.ndarray) -> float:
    """PKD written out in NumPy: z-score each channel over all of its N·H·W values, then half the mean squared error."""
    n, c = student.shape[:2]
    total = 0.0
    for j in range(c):
        s, t = student[:, j].ravel(), teacher[:, j].ravel()
        zs = (s - s.mean()) / (s.std(ddof=1) + 1e-6)
        zt = (t - t.mean()) / (t.std(ddof=1) + 1e-6)
        total += float(((zs - zt) ** 2).sum())
    return total / student.size / 2


def test_pkd_matches_numpy_reference_and_pearson_correlation():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, 4, 5, 6))
    t = 0.5 * s + rng.normal(size=(3, 4, 5, 6))  # correlated, not identical
    got = float(PearsonDistillationLoss()(torch.from_numpy(s), torch.from_numpy(t)))
    assert got == pytest.approx(pkd_reference(s, t), rel=1e-5)
    m = s.shape[0] * s.shape[2] * s.shape[3]
    r = [np.corrcoef(s[:, j].ravel(), t[:, j].ravel())[0, 1] for j in range(s.shape[1])]
    assert got == pytest.approx((m - 1) / m * float(np.mean(1 - np.array(r))), rel=1e-4)  # the paper's 1 − r


def test_pkd_is_zero_for_identical_inputs_and_ignores_per_channel_scale_and_shift():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 4)
    scale, shift = torch.rand(1, 5, 1, 1) * 10 + 0.1, torch.randn(1, 5, 1, 1) * 100
    loss = PearsonDistillationLoss()
    assert float(loss(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x * scale + shift, x)) == pytest.approx(0.0, abs=1e-5)
    m = 2 * 4 * 4
    assert float(loss(-x, x)) == pytest.approx(2 * (m - 1) / m, rel=1e-4)  # r = −1 on every channel


def test_pkd_standardizes_over_the_batch_not_per_sample():
    x = torch.randn(2, 3, 4, 4)
    x[1] += 5.0  # a per-sample offset survives batch-level normalisation
    z = standardize_channels(x)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    assert float(z[1].mean() - z[0].mean()) > 1.0


# -- NCWD --------------------------------------------------------------------------------------------------------------
def batch_norm_reference(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        v = x[:, j]
        out[:, j] = (v - v.mean()) / np.sqrt(v.var() + eps)  # biased variance, as BatchNorm's batch statistics
    return out


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_ncwd_is_cwd_on_batch_normalised_maps(tau):
    rng = np.random.default_rng(2)
    s = rng.normal(size=(2, 3, 4, 5)) * 3 + 1
    t = rng.normal(size=(2, 3, 4, 5)) * 0.2 - 4
    got = float(NormalizedChannelWiseLoss(tau)(torch.from_numpy(s), torch.from_numpy(t)))
    expected = cwd_reference(batch_norm_reference(s), batch_norm_reference(t), tau)
    assert got == pytest.approx(expected, rel=1e-5)
    assert got > 0


def test_ncwd_normalisation_is_non_affine_batch_norm_in_any_mode():
    x = torch.randn(4, 6, 5, 5) * 7 + 2
    bn = torch.nn.BatchNorm2d(6, affine=False, track_running_stats=False).eval()  # MMYOLO's norm_cfg
    assert torch.allclose(batch_standardize(x), bn(x), atol=1e-5)


def test_ncwd_is_zero_for_identical_inputs_and_ignores_per_channel_scale_and_shift():
    x = torch.randn(2, 4, 6, 6)
    scale, shift = torch.rand(1, 4, 1, 1) * 5 + 0.5, torch.randn(1, 4, 1, 1) * 10
    loss = NormalizedChannelWiseLoss()
    assert float(loss(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x * scale + shift, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(ChannelWiseDistillationLoss()(x * scale + shift, x)) > 1e-3  # plain CWD is not invariant


# -- logit_loss="kl": LD, class soft targets, keypoints, masks ---------------------------------------------------------
def ld_reference(student: np.ndarray, teacher: np.ndarray, tau: float, weight: np.ndarray | None = None) -> float:
    """LD written out: softmax over the bins of each side, KL(t‖s)·T², mean over sides, (weighted) mean over anchors."""
    b, c, a = student.shape
    r = c // 4
    per_anchor = np.zeros((b, a))
    for i in range(b):
        for k in range(a):
            for side in range(4):
                s = student[i, side * r : (side + 1) * r, k] / tau
                t = teacher[i, side * r : (side + 1) * r, k] / tau
                ps, pt = np.exp(s) / np.exp(s).sum(), np.exp(t) / np.exp(t).sum()
                per_anchor[i, k] += np.sum(pt * np.log(pt / ps)) * tau**2 / 4
    w = np.ones((b, a)) if weight is None else weight
    return float((per_anchor * w).sum() / w.sum())


@pytest.mark.parametrize("tau", [1.0, 10.0])
def test_ld_matches_loop_reference(tau):
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(2, 4 * 8, 5)) * 3, rng.normal(size=(2, 4 * 8, 5)) * 3
    w = rng.uniform(size=(2, 5))
    loss = LocalizationDistillationLoss(tau)
    assert float(loss(torch.from_numpy(s), torch.from_numpy(t))) == pytest.approx(ld_reference(s, t, tau), rel=1e-5)
    weighted = float(loss(torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(w)))
    assert weighted == pytest.approx(ld_reference(s, t, tau, w), rel=1e-5)


def test_ld_is_zero_for_identical_or_shifted_logits():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 7)
    shift = torch.randn(2, 4, 1, 7).expand(2, 4, 16, 7).reshape(2, 64, 7)  # the same constant on all bins of a side
    assert float(LocalizationDistillationLoss()(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(LocalizationDistillationLoss()(x + shift, x)) == pytest.approx(0.0, abs=1e-5)  # softmax invariance


def test_ld_formula_approaches_half_the_centred_mse_at_high_temperature():
    """The docstring's scale argument, on the float64 reference: T → ∞ gives ½ · variance of the logit difference."""
    rng = np.random.default_rng(7)
    x, d = rng.normal(size=(1, 64, 3)), rng.normal(size=(1, 64, 3))
    centred = d.reshape(4, 16, 3) - d.reshape(4, 16, 3).mean(1, keepdims=True)
    assert ld_reference(x + d, x, tau=1000.0) == pytest.approx(float((centred**2).mean() / 2), rel=0.01)


def test_class_soft_targets_are_binary_kl_with_the_bce_gradient():
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(2, 3, 6)) * 2, rng.normal(size=(2, 3, 6)) * 2
    ps, pt = 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-t))
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    expected = float(kl.sum(1).mean())  # summed over classes, mean over anchors
    student = torch.from_numpy(s).requires_grad_()
    got = ScoreDistillationLoss()(student, torch.from_numpy(t))
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)
    got.backward()  # same gradient as BCE against the teacher's probabilities: (σ(s) − p_t) / anchors
    assert np.allclose(student.grad.numpy(), (ps - pt) / (2 * 6), atol=1e-6)
    assert float(ScoreDistillationLoss()(torch.from_numpy(t), torch.from_numpy(t))) == pytest.approx(0.0, abs=1e-9)
    w = torch.from_numpy(rng.uniform(size=(2, 6)))
    expected_w = float((kl.sum(1) * w.numpy()).sum() / w.numpy().sum())
    weighted = ScoreDistillationLoss()(torch.from_numpy(s), torch.from_numpy(t), w)
    assert float(weighted) == pytest.approx(expected_w, rel=1e-5)


def keypoint_reference(student, teacher, area, sigmas, weight) -> float:
    """OKS-style keypoint term written out per anchor and keypoint, plus the visibility binary KL."""
    n, k, _ = teacher.shape
    pos, vis = np.zeros(n), np.zeros(n)
    for a in range(n):
        for j in range(k):
            v = 1 / (1 + np.exp(-teacher[a, j, 2]))
            d2 = (student[a, j, 0] - teacher[a, j, 0]) ** 2 + (student[a, j, 1] - teacher[a, j, 1]) ** 2
            pos[a] += v * (1 - np.exp(-d2 / (8 * sigmas[j] ** 2 * area[a]))) / k
            q = 1 / (1 + np.exp(-student[a, j, 2]))
            vis[a] += (v * np.log(v / q) + (1 - v) * np.log((1 - v) / (1 - q))) / k
    return float(((pos + vis) * weight).sum() / weight.sum())


def test_keypoint_distillation_matches_oks_reference():
    rng = np.random.default_rng(5)
    teacher = rng.normal(size=(6, 4, 3)) * 2
    student = teacher + rng.normal(size=(6, 4, 3)) * 0.5
    area, sigmas, weight = rng.uniform(1, 9, size=6), np.array([0.03, 0.05, 0.08, 0.1]), rng.uniform(size=6)
    got = KeypointDistillationLoss()(
        torch.from_numpy(student), torch.from_numpy(teacher), torch.from_numpy(area), torch.from_numpy(sigmas),
        torch.from_numpy(weight),
    )  # fmt: skip
    assert float(got) == pytest.approx(keypoint_reference(student, teacher, area, sigmas, weight), rel=1e-5)
    same = KeypointDistillationLoss()(torch.from_numpy(teacher), torch.from_numpy(teacher), torch.from_numpy(area),
                                      torch.from_numpy(sigmas))  # fmt: skip
    assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_keypoint_error_is_scale_free_and_ignores_invisible_keypoints():
    teacher = torch.zeros(1, 2, 3)
    teacher[0, 1, 2] = -30.0  # keypoint 1 invisible to the teacher
    student = teacher.clone()
    student[0, 1, :2] = 5.0  # only the invisible keypoint is off
    sigmas = torch.tensor([0.1, 0.1])
    assert float(KeypointDistillationLoss()(student, teacher, torch.ones(1), sigmas)) < 1e-6
    small, big = teacher.clone(), teacher.clone()
    small[0, 0, 0], big[0, 0, 0] = 0.5, 5.0  # the same error relative to the object's size
    loss_small = KeypointDistillationLoss()(small, teacher, torch.ones(1), sigmas)
    loss_big = KeypointDistillationLoss()(big, teacher, torch.full((1,), 100.0), sigmas)
    assert float(loss_small) == pytest.approx(float(loss_big), rel=1e-5)


def mask_reference(s_coef, s_proto, t_coef, t_proto, boxes, weight, k) -> float:
    """Mask term written out: top-k anchors by weight, assembled masks, per-pixel binary KL inside the box."""
    total, wsum = 0.0, 0.0
    for i in range(weight.shape[0]):
        for a in np.argsort(-weight[i], kind="stable")[:k]:
            ms = np.tensordot(s_coef[i, :, a], s_proto[i], axes=1)
            p = 1 / (1 + np.exp(-np.tensordot(t_coef[i, :, a], t_proto[i], axes=1)))
            q = 1 / (1 + np.exp(-ms))
            x1, y1, x2, y2 = boxes[i, a].astype(int)
            inside = np.zeros_like(p, dtype=bool)
            inside[y1:y2, x1:x2] = True
            kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
            total += weight[i, a] * kl[inside].sum() / ((x2 - x1) * (y2 - y1))
            wsum += weight[i, a]
    return total / wsum


def test_mask_distillation_matches_reference_on_the_teachers_confident_anchors():
    rng = np.random.default_rng(6)
    s_coef, t_coef = rng.normal(size=(2, 3, 9)), rng.normal(size=(2, 4, 9))  # different numbers of prototypes
    s_proto, t_proto = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 4, 8, 8))
    x1y1 = rng.integers(0, 4, size=(2, 9, 2))
    boxes = np.concatenate([x1y1, x1y1 + rng.integers(1, 5, size=(2, 9, 2))], -1).astype(np.float64)
    weight = rng.uniform(size=(2, 9))
    got = MaskDistillationLoss(max_anchors=4)(
        *(torch.from_numpy(v) for v in (s_coef, s_proto, t_coef, t_proto, boxes, weight))
    )
    assert float(got) == pytest.approx(mask_reference(s_coef, s_proto, t_coef, t_proto, boxes, weight, 4), rel=1e-4)


def test_mask_distillation_compares_masks_not_coefficients():
    torch.manual_seed(0)
    coef, proto = torch.randn(1, 4, 6), torch.randn(1, 4, 8, 8)
    mix = torch.linalg.qr(torch.randn(4, 4))[0]  # the same masks from another prototype basis
    boxes = torch.tensor([0.0, 0.0, 8.0, 8.0]).expand(1, 6, 4)
    other_coef, other_proto = torch.einsum("ij,bja->bia", mix.T, coef), torch.einsum("ij,bjhw->bihw", mix.T, proto)
    loss = MaskDistillationLoss()(other_coef, other_proto, coef, proto, boxes, torch.rand(1, 6))
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    assert float(((other_coef - coef) ** 2).mean()) > 0.1  # yet the raw coefficients (what MSE compares) differ


def test_distribution_logit_loss_chooses_each_outputs_comparison():
    assert DistributionLogitLoss(["boxes", "scores", "kpts"], reg_max=16).terms == {
        "boxes": "ld-kl", "scores": "binary-kl", "kpts": "oks",
    }  # fmt: skip
    assert DistributionLogitLoss(["boxes", "scores", "mask_coefficient"], reg_max=1).terms == {
        "boxes": "mse", "scores": "binary-kl", "mask_coefficient": "mask-kl",
    }  # fmt: skip
    assert DistributionLogitLoss(["scores", "kpts"], reg_max=16).terms == {"scores": "binary-kl", "kpts": "mse"}


def test_distribution_logit_loss_sums_ld_and_class_terms_with_optional_teacher_weighting():
    torch.manual_seed(1)
    s = {"boxes": torch.randn(2, 64, 5), "scores": torch.randn(2, 3, 5)}
    t = {"boxes": torch.randn(2, 64, 5), "scores": torch.randn(2, 3, 5)}
    plain = DistributionLogitLoss(["boxes", "scores"], reg_max=16, tau=10.0)(s, t)
    box = LocalizationDistillationLoss(10.0)(s["boxes"], t["boxes"])
    score = ScoreDistillationLoss()(s["scores"], t["scores"])
    assert float(plain) == pytest.approx(float(box + score), rel=1e-6)
    conf = t["scores"].sigmoid().amax(1)  # teacher confidence: max class probability per anchor
    weighted = DistributionLogitLoss(["boxes", "scores"], reg_max=16, conf_weight=True)(s, t)
    expected = LocalizationDistillationLoss(10.0)(s["boxes"], t["boxes"], conf) + ScoreDistillationLoss()(
        s["scores"], t["scores"], conf
    )
    assert float(weighted) == pytest.approx(float(expected), rel=1e-6)
    assert float(teacher_confidence(t["scores"]).sub(conf).abs().max()) == 0.0
    assert float(anchor_mean(torch.ones(3), torch.zeros(3))) == 0.0  # nothing confident: no term, no NaN


@pytest.mark.parametrize(
    ("model_cls", "student", "teacher", "key"),
    [
        ("PoseModel", "yolov8n-pose.yaml", "yolov8s-pose.yaml", "kpts"),
        ("SegmentationModel", "yolov8n-seg.yaml", "yolov8s-seg.yaml", "mask_coefficient"),
        ("PoseModel", "yolo26n-pose.yaml", "yolo26s-pose.yaml", "kpts"),
    ],
)
def test_distribution_logit_loss_on_real_heads(model_cls, student, teacher, key):
    """Real Ultralytics heads: decoded with the student's criterion, 0 against itself, gradients reach the student."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn import tasks

    torch.manual_seed(0)
    s_model, t_model = (getattr(tasks, model_cls)(y, nc=2, verbose=False).train() for y in (student, teacher))
    s_model.args = get_cfg()
    img = torch.rand(2, 3, 64, 64)
    s_out, t_out = head_dict(s_model(img)), head_dict(t_model(img))
    keys = shared_outputs(head_outputs(s_out), head_outputs(t_out))
    assert key in keys
    loss = DistributionLogitLoss(keys, reg_max=s_out["boxes"].shape[1] // 4)
    assert loss.terms[key] in {"oks", "mask-kl"}
    criterion = s_model.init_criterion()
    value = loss(s_out, t_out, criterion)
    assert torch.isfinite(value) and float(value.detach()) > 0
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s_model.model[-1].parameters())
    assert all(p.grad is None for p in t_model.parameters())
    same = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in t_out.items()}
    assert float(loss(same, t_out, criterion)) == pytest.approx(0.0, abs=1e-5)


def test_pose_keypoints_are_compared_after_ultralytics_decode():
    """A raw offset of δ on a YOLOv8 pose head moves the decoded keypoint by 2δ grid cells (``2·y + anchor − 0.5``)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import PoseModel

    model = PoseModel("yolov8n-pose.yaml", nc=1, verbose=False).train()
    model.args = get_cfg()
    out = {k: (v.detach() if isinstance(v, torch.Tensor) else [f.detach() for f in v]) for k, v in
           head_dict(model(torch.rand(1, 3, 64, 64))).items()}  # fmt: skip
    out["scores"] = torch.full_like(out["scores"], 20.0)  # the teacher is confident everywhere
    out["kpts"] = out["kpts"].clone()
    out["kpts"][:, 2::3] = 20.0  # and sees every keypoint
    moved = dict(out, kpts=out["kpts"].clone())
    moved["kpts"][:, 0::3] += 0.25  # every x offset by δ = 0.25
    crit = model.init_criterion()
    anchors, _ = make_anchors(out["feats"], crit.stride, 0.5)
    boxes = crit.bbox_decode(anchors, out["boxes"].permute(0, 2, 1).contiguous())[0]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double()
    sigmas = crit.keypoint_loss.sigmas.double()
    expected = float((1 - torch.exp(-((2 * 0.25) ** 2) / (8 * sigmas[None] ** 2 * area[:, None]))).mean())
    got = DistributionLogitLoss(["boxes", "scores", "kpts"], reg_max=16)(moved, out, crit)  # boxes, scores equal: 0
    assert float(got) == pytest.approx(expected, rel=1e-3)
