"""APEN's training (spec §4.2, ``loss_seg.py``): what differs from plain part segmentation, and nothing else.

The loss is the vote loss summed over the blocks plus ``0.1 ×`` the per-point cross-entropy:

    L = Σ_blocks mean_i ‖s_i − c_{y_i}‖² + 0.1 · CE,

with ``s_i`` a block's seed ``w_i (x_i + Δ_i)`` and ``c_{y_i}`` the centroid of point ``i``'s ground-truth rigid
piece (the released ``x_i + vote_i``; its npz stores the offset to the part centre). The pieces are the batch's
partition (:func:`pointgeo.geometry.partition_of`): a multi-object scene's ``instance`` ids when the batch
has them (its ``seg`` labels classes: two chairs share a label but are two pieces, and one centre between them is
no part's), else the part labels ``seg``; ``partition_accuracy`` is measured against the same pieces. Logged per
stage: ``loss`` (the cross-entropy, as in :class:`~pointgeo.tasks.segmentation.PartSegmentationTask`),
``vote_loss``, ``total_loss``, ``partition_accuracy`` (:func:`pointgeo.metrics.partition.partition_accuracy` of the decoder's partition) and
``predicted_parts``, and both mIoU conventions: ShapeNet's ``miou_instance`` / ``miou_class`` (absent part: IoU 1)
and APEN's ``apen_miou_instance`` / ``apen_miou_class`` (absent part: IoU 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from pointgeo.geometry import gather_parts, part_means, partition_of
from pointgeo.metrics.part_iou import PartSegmentationIoU, restrict_logits_to_category
from pointgeo.metrics.partition import partition_accuracy
from pointgeo.tasks.segmentation import PartSegmentationTask


def vote_loss(seeds: Sequence[Tensor], pos: Tensor, seg: Tensor) -> Tensor:
    """``Σ_blocks mean_i ‖s_i − c_{y_i}‖²``: seeds ``(B, N, 3)`` per block, ``pos (B, N, 3)``, the true pieces
    ``seg (B, N)`` (part labels or instance ids); ``c`` the centroid of each piece."""
    centre = gather_parts(part_means(pos, seg, int(seg.max()) + 1)[0], seg)
    return sum(((s - centre) ** 2).sum(-1).mean() for s in seeds)


class APENSegmentationTask(PartSegmentationTask):
    """:class:`PartSegmentationTask` for ``apen``: APEN's loss and metrics (module docstring).

    Args:
        vote_weight: weight of the vote loss (released: 1).
        ce_weight: weight of the cross-entropy (released: 0.1).
        Other arguments: :class:`PartSegmentationTask` (the released recipe: AdamW, lr 1e-3, constant).
    """

    def __init__(self, network: str = "apen", *args: Any, vote_weight: float = 1.0, ce_weight: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(network, *args, **kwargs)
        if not hasattr(self.net, "segment"):
            raise ValueError(f"network {network!r} has no segment() (votes and partition); use the plain task")
        self.vote_weight, self.ce_weight = vote_weight, ce_weight

    def _set_category_parts(self, category_parts: list[list[int]]) -> None:
        super()._set_category_parts(category_parts)
        for stage in ("train", "val", "test"):
            self.metrics[f"{stage}_apen_metrics"] = PartSegmentationIoU(
                category_parts, self.hparams.num_parts, convention="apen").to(self.device)

    def _step(self, batch: dict[str, Tensor], stage: str, raw: Tensor | None = None) -> Tensor:
        if self.hparams.use_normals and "normal" not in batch:
            raise ValueError("the model was trained with normals but the batch has no 'normal' key")
        out = self.net.segment(batch["pos"], batch.get("normal") if self.hparams.use_normals else None,
                               batch["category"])
        ce = super()._step(batch, stage, out.logits)
        seg, b = batch["seg"], batch["seg"].shape[0]
        pred = restrict_logits_to_category(out.logits.detach(), batch["category"], self.membership).argmax(-1)
        self.metrics[f"{stage}_apen_metrics"].update(pred, seg, batch["category"])
        pieces = partition_of(batch)
        votes = vote_loss(out.seeds, batch["pos"], pieces)
        total = self.vote_weight * votes + self.ce_weight * ce
        self.log(f"{stage}/vote_loss", votes, batch_size=b)
        self.log(f"{stage}/total_loss", total, batch_size=b, prog_bar=stage == "train")
        self.log(f"{stage}/partition_accuracy", partition_accuracy(out.partition, pieces).mean().float(),
                 on_step=False, on_epoch=True, batch_size=b)
        self.log(f"{stage}/predicted_parts", out.num_parts.float().mean(), on_step=False, on_epoch=True,
                 batch_size=b)
        return total

    def _log_miou(self, stage: str) -> None:
        super()._log_miou(stage)
        metric = self.metrics[f"{stage}_apen_metrics"]
        for key, value in metric.compute().items():
            self.log(f"{stage}/{key}", value)
        metric.reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Labels and probabilities as the plain task, and the predicted partition and votes (for viewers)."""
        out = self.net.segment(batch["pos"], batch.get("normal") if self.hparams.use_normals else None,
                               batch["category"])
        prob = restrict_logits_to_category(out.logits, batch["category"], self.membership).softmax(-1)
        return {"index": batch["index"], "pred": prob.argmax(-1), "prob": prob, "partition": out.partition,
                "votes": out.votes}
