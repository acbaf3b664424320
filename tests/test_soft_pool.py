"""``pool_targets="soft"``: the task loss ignores the teacher's objects on pool images (distill/engine/soft_pool.py).

Checked on Ultralytics' own assigner and criterion: the anchors assigned to a pool object leave the foreground and
their class loss has no gradient, while a labelled object's anchors train as before; the dataset marks pool
instances through mosaic and leaves labelled ones alone. Real training with it is in tests/test_pool_training.py.
"""

from __future__ import annotations

import pytest
import torch
from ultralytics.utils.tal import TaskAlignedAssigner

from distill import DistillConfig, DistillError
from distill.engine.soft_pool import IgnoreSoftTargets, SoftLabels, per_image_flags, soft_batch


def _assign(soft_rows: list[bool]) -> tuple[tuple, tuple, torch.Tensor]:
    """Two boxes in image 0 of a 1-image batch on an 8x8 grid of anchors (stride 8): hard vs soft assignment."""
    torch.manual_seed(0)
    anchors = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1).view(-1, 2) * 8 + 4
    pd_scores = torch.rand(1, 64, 2)
    pd_bboxes = torch.cat([anchors - 10, anchors + 10], 1)[None]
    gt_labels = torch.tensor([[[0.0], [1.0]]])
    gt_bboxes = torch.tensor([[[0.0, 0.0, 24.0, 24.0], [36.0, 36.0, 60.0, 60.0]]])
    mask_gt = torch.ones(1, 2, 1)
    assigner = TaskAlignedAssigner(topk=10, num_classes=2)
    args = (pd_scores, pd_bboxes, anchors, gt_labels, gt_bboxes, mask_gt)
    hard = assigner(*args)
    wrapper = IgnoreSoftTargets(assigner)
    wrapper.soft = (torch.zeros(2), torch.tensor(soft_rows))
    return hard, wrapper(*args), pd_scores


@pytest.mark.fast
def test_anchors_of_a_soft_object_are_neither_object_nor_background():
    hard, soft, pd_scores = _assign([False, True])  # box 0 labelled, box 1 from the pool
    _, _, hard_scores, hard_fg, gt_idx = hard
    _, _, soft_scores, soft_fg, _ = soft
    of_soft = hard_fg & (gt_idx == 1)
    of_hard = hard_fg & (gt_idx == 0)
    assert of_soft.any() and of_hard.any()
    assert not soft_fg[of_soft].any() and soft_fg[of_hard].all()  # no box/mask/keypoint loss on the pool object
    assert torch.equal(soft_scores[of_hard], hard_scores[of_hard])  # the labelled object trains as before
    assert torch.equal(soft_scores[~hard_fg], hard_scores[~hard_fg])  # so does the background
    logits = torch.logit(pd_scores).requires_grad_()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, soft_scores, reduction="sum").backward()
    assert torch.all(logits.grad[of_soft].abs() < 1e-6)  # the class loss has no gradient there
    assert torch.all(logits.grad[of_hard].abs().sum(-1) > 0)


@pytest.mark.fast
def test_without_soft_rows_the_assignment_is_untouched():
    hard, soft, _ = _assign([False, False])
    assert all(torch.equal(a, b) for a, b in zip(hard, soft, strict=True))


@pytest.mark.fast
def test_a_batch_without_any_object_is_assigned_as_the_assigner_does():
    """Online targets can leave a batch with no object at all (a weak teacher on pool tiles): nothing to ignore."""
    anchors = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1).view(-1, 2) * 8 + 4
    args = (torch.rand(2, 64, 2), torch.cat([anchors - 10, anchors + 10], 1)[None].repeat(2, 1, 1), anchors,
            torch.zeros(2, 0, 1), torch.zeros(2, 0, 4), torch.zeros(2, 0, 1))  # fmt: skip
    assigner = TaskAlignedAssigner(topk=10, num_classes=2)
    wrapper = IgnoreSoftTargets(assigner)
    wrapper.soft = (torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(assigner(*args), wrapper(*args), strict=True))


@pytest.mark.fast
def test_flags_follow_the_criterions_per_image_layout():
    batch_idx = torch.tensor([1.0, 0.0, 1.0, 1.0])
    flags = torch.tensor([True, False, False, True])
    assert per_image_flags(batch_idx, flags, 2, 3).tolist() == [[False, False, False], [True, False, True]]


@pytest.mark.fast
def test_the_criterion_sees_real_classes_and_its_assigner_is_armed_for_one_call():
    from ultralytics.nn.tasks import DetectionModel

    from distill.engine.soft_pool import disarm

    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.args = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
    batch = {"cls": torch.tensor([[0.0], [3.0]]), "batch_idx": torch.tensor([0.0, 0.0]),
             "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}  # fmt: skip
    out = soft_batch(student, batch, nc=2)
    assert out["cls"].view(-1).tolist() == [0.0, 1.0] and batch["cls"].view(-1).tolist() == [0.0, 3.0]
    assert isinstance(student.criterion.assigner, IgnoreSoftTargets)
    assert student.criterion.assigner.soft[1].tolist() == [False, True]
    assert student.criterion.assigner.topk == 10  # the wrapped assigner's settings read through
    disarm(student)
    assert student.criterion.assigner.soft is None


@pytest.mark.fast
def test_pool_instances_are_shifted_and_labelled_ones_are_not(tmp_path):
    import numpy as np

    seen = []
    marker = SoftLabels(lambda label: seen.append(label) or label, str(tmp_path / "pool"), nc=3)
    pool = marker({"im_file": str(tmp_path / "pool" / "a.jpg"), "cls": np.array([[0.0], [2.0]])})
    labelled = marker({"im_file": str(tmp_path / "pool-other" / "b.jpg"), "cls": np.array([[1.0]])})
    assert pool["cls"].ravel().tolist() == [3.0, 5.0] and labelled["cls"].ravel().tolist() == [1.0]
    assert len(seen) == 2  # Ultralytics' own update ran on both


@pytest.mark.fast
def test_pool_targets_is_validated():
    assert DistillConfig(teacher="t.pt").pool_targets == "pseudo"
    with pytest.raises(DistillError, match="pool_targets must be one of pseudo, soft, online, got 'hard'"):
        DistillConfig(teacher="t.pt", pool_targets="hard")
