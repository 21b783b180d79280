"""The ShapeNet-part IoU against examples worked out by hand."""

from __future__ import annotations

import pytest
import torch

from pointgeo.metrics.part_iou import PartSegmentationIoU, restrict_logits_to_category

# Two categories: category 0 owns parts {0, 1, 2}, category 1 owns parts {3, 4}.
CATEGORY_PARTS = [[0, 1, 2], [3, 4]]


def test_hand_computed_shapes_with_an_absent_part() -> None:
    metric = PartSegmentationIoU(CATEGORY_PARTS, num_parts=5)
    # Shape A (category 0), 4 points. Part 2 is absent from both prediction and target -> IoU 1.
    #   target 0 0 1 1, pred 0 1 1 1: part 0 IoU = 1/2, part 1 IoU = 2/3, part 2 IoU = 1  -> (1/2 + 2/3 + 1) / 3
    # Shape B (category 1): target 3 3 4 4, pred 3 3 3 4: part 3 IoU = 2/3, part 4 IoU = 1/2 -> (2/3 + 1/2) / 2
    # Shape C (category 0): all correct, only part 0 present: parts 1, 2 absent -> IoU 1.
    pred = torch.tensor([[0, 1, 1, 1], [3, 3, 3, 4], [0, 0, 0, 0]])
    target = torch.tensor([[0, 0, 1, 1], [3, 3, 4, 4], [0, 0, 0, 0]])
    category = torch.tensor([0, 1, 0])
    metric.update(pred, target, category)
    a = (1 / 2 + 2 / 3 + 1) / 3
    b = (2 / 3 + 1 / 2) / 2
    c = 1.0
    out = metric.compute()
    assert out["miou_instance"].item() == pytest.approx((a + b + c) / 3, abs=1e-6)
    assert out["miou_class"].item() == pytest.approx(((a + c) / 2 + b) / 2, abs=1e-6)


def test_logits_are_restricted_to_the_category_parts() -> None:
    logits = torch.zeros(1, 2, 5)
    logits[0, :, 4] = 10.0  # the best logit is part 4, which category 0 does not own
    logits[0, 0, 1] = 1.0
    logits[0, 1, 2] = 1.0
    membership = PartSegmentationIoU(CATEGORY_PARTS, 5).membership
    pred = restrict_logits_to_category(logits, torch.tensor([0]), membership).argmax(-1)
    assert pred.tolist() == [[1, 2]]


def test_part_labels_outside_the_category_are_rejected() -> None:
    metric = PartSegmentationIoU(CATEGORY_PARTS, num_parts=5)
    with pytest.raises(ValueError, match="outside the shape's category"):
        metric.update(torch.tensor([[0, 0]]), torch.tensor([[0, 3]]), torch.tensor([0]))


def test_both_conventions_by_hand_name_their_metrics() -> None:
    # Category 0 owns parts {0, 1, 2}. Shape: target 0 0 1 1, pred 0 1 1 1; part 2 absent from both.
    #   part 0: IoU 1/2, part 1: 2/3, part 2: absent -> 1 (ShapeNet) or 0 (APEN).
    pred, target, category = torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), torch.tensor([0])
    shapenet = PartSegmentationIoU(CATEGORY_PARTS, 5, convention="shapenet")
    apen = PartSegmentationIoU(CATEGORY_PARTS, 5, convention="apen")
    shapenet.update(pred, target, category)
    apen.update(pred, target, category)
    s, a = shapenet.compute(), apen.compute()
    assert set(s) == {"miou_instance", "miou_class"} and set(a) == {"apen_miou_instance", "apen_miou_class"}
    assert s["miou_instance"].item() == pytest.approx((1 / 2 + 2 / 3 + 1) / 3, abs=1e-6)
    assert a["apen_miou_instance"].item() == pytest.approx((1 / 2 + 2 / 3 + 0) / 3, abs=1e-6)
    # a perfect prediction with an absent part: 1 under ShapeNet, 2/3 under APEN
    perfect = PartSegmentationIoU(CATEGORY_PARTS, 5, convention="apen")
    perfect.update(target, target, category)
    assert perfect.compute()["apen_miou_class"].item() == pytest.approx(2 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="convention must be one of"):
        PartSegmentationIoU(CATEGORY_PARTS, 5, convention="scannet")  # type: ignore[arg-type]


def test_partition_accuracy_by_hand() -> None:
    from pointgeo.metrics.partition import partition_accuracy

    target = torch.tensor([[0, 0, 0, 1, 1], [2, 2, 2, 2, 2]])
    pred = torch.tensor([[5, 5, 7, 7, 7], [0, 1, 2, 3, 4]])  # part 7 mixes 0 1 1: 4/5; singletons: 1
    assert partition_accuracy(pred, target).tolist() == [0.8, 1.0]
    assert partition_accuracy(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 1, 1, 1]])).tolist() == [0.75]
    with pytest.raises(ValueError, match="integer labels"):
        partition_accuracy(pred.double(), target)
