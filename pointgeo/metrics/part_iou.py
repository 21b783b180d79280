"""Part-segmentation IoU under its two conventions, named.

For every shape, with category ``c`` and its parts ``P_c``, the shape IoU is

    IoU(shape) = mean_{p in P_c} |pred == p AND gt == p| / |pred == p OR gt == p|,

where a part absent from both the prediction and the ground truth counts as IoU 1 under the **ShapeNet**
convention (``"shapenet"``: Qi et al., PointNet, 2017; PyG's ``pointnet2_segmentation``) and as IoU 0 under the
**APEN** convention (``"apen"``: the released DFAUST evaluation, a mean over all 24 classes per shape). Then

* **instance mIoU** is the mean of IoU(shape) over all shapes, and
* **class mIoU** is the mean over categories of the mean IoU(shape) within each category.

Predictions are expected to be restricted to the shape's category parts (see
:func:`restrict_logits_to_category`); a predicted part outside ``P_c`` simply never matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric


IoUConvention = Literal["shapenet", "apen"]
ABSENT_IOU: dict[str, float] = {"shapenet": 1.0, "apen": 0.0}
"""The IoU of a part absent from both prediction and ground truth, per convention."""
METRIC_PREFIX: dict[str, str] = {"shapenet": "", "apen": "apen_"}
"""Prefix of the metric names per convention: ``miou_instance`` (ShapeNet), ``apen_miou_instance`` (APEN)."""


def part_membership(category_parts: Sequence[Sequence[int]], num_parts: int) -> Tensor:
    """``(num_categories, num_parts)`` boolean table: ``True`` where the part belongs to the category."""
    table = torch.zeros(len(category_parts), num_parts, dtype=torch.bool)
    for c, parts in enumerate(category_parts):
        table[c, list(parts)] = True
    return table


def restrict_logits_to_category(logits: Tensor, category: Tensor, membership: Tensor) -> Tensor:
    """Mask the logits of parts outside each shape's category with ``-inf``.

    Args:
        logits: ``(B, N, P)`` per-point part logits.
        category: ``(B,)`` category index of each shape.
        membership: ``(C, P)`` table from :func:`part_membership`.

    Returns:
        ``(B, N, P)`` logits whose ``argmax`` is always a part of the shape's category.
    """
    allowed = membership.to(logits.device)[category]  # (B, P)
    return logits.masked_fill(~allowed[:, None, :], float("-inf"))


def shape_ious(pred: Tensor, target: Tensor, category: Tensor, membership: Tensor,
               convention: IoUConvention = "shapenet") -> Tensor:
    """Per-shape mean IoU over the shape's category parts (an absent part counts 1 under ``"shapenet"``, 0 under
    ``"apen"``).

    Args:
        pred: ``(B, N)`` predicted part ids.
        target: ``(B, N)`` ground-truth part ids.
        category: ``(B,)`` category of each shape.
        membership: ``(C, P)`` category-part table.
        convention: ``"shapenet"`` or ``"apen"`` (module docstring).

    Returns:
        ``(B,)`` float64 IoU per shape.
    """
    num_parts = membership.shape[1]
    parts = torch.arange(num_parts, device=pred.device)
    p = pred.unsqueeze(-1) == parts  # (B, N, P)
    t = target.unsqueeze(-1) == parts
    inter = (p & t).sum(1).double()  # (B, P)
    union = (p | t).sum(1).double()
    if convention not in ABSENT_IOU:
        raise ValueError(f"convention must be one of {sorted(ABSENT_IOU)}; got {convention!r}")
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, ABSENT_IOU[convention]))
    allowed = membership.to(pred.device)[category]  # (B, P)
    return (iou * allowed).sum(1) / allowed.sum(1)


class PartSegmentationIoU(Metric):
    """Accumulates per-shape IoUs and reports ``{"miou_instance": ..., "miou_class": ...}`` (ShapeNet convention)
    or ``{"apen_miou_instance": ..., "apen_miou_class": ...}`` (APEN convention).

    Args:
        category_parts: for every category, the list of its global part ids.
        num_parts: total number of part ids.
        convention: ``"shapenet"`` (absent part: IoU 1) or ``"apen"`` (absent part: IoU 0).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, category_parts: Sequence[Sequence[int]], num_parts: int,
                 convention: IoUConvention = "shapenet", **kwargs: object) -> None:
        super().__init__(**kwargs)
        if convention not in ABSENT_IOU:
            raise ValueError(f"convention must be one of {sorted(ABSENT_IOU)}; got {convention!r}")
        self.convention = convention
        self.register_buffer("membership", part_membership(category_parts, num_parts), persistent=False)
        num_categories = len(category_parts)
        self.add_state("iou_sum", torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("shape_count", torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, category: Tensor) -> None:
        """Add a batch: ``pred (B, N)`` part ids (or ``(B, N, P)`` logits), ``target (B, N)``, ``category (B,)``."""
        if pred.dim() == 3:
            pred = restrict_logits_to_category(pred, category, self.membership).argmax(-1)
        if pred.shape != target.shape or pred.dim() != 2 or category.shape != pred.shape[:1]:
            raise ValueError(
                f"expected pred and target (B, N) and category (B,); got {tuple(pred.shape)}, "
                f"{tuple(target.shape)}, {tuple(category.shape)}"
            )
        outside = ~self.membership[category].gather(1, target)
        if outside.any():
            raise ValueError("target contains part labels outside the shape's category parts")
        ious = shape_ious(pred, target, category, self.membership, self.convention)
        self.iou_sum.index_add_(0, category, ious)
        self.shape_count.index_add_(0, category, torch.ones_like(ious))

    def compute(self) -> dict[str, Tensor]:
        """Instance mIoU over all shapes and class mIoU over the categories that were seen."""
        seen = self.shape_count > 0
        instance = self.iou_sum.sum() / self.shape_count.sum().clamp_min(1)
        per_class = self.iou_sum[seen] / self.shape_count[seen]
        prefix = METRIC_PREFIX[self.convention]
        return {f"{prefix}miou_instance": instance.float(), f"{prefix}miou_class": per_class.mean().float()}
