"""Part segmentation: per-point cross-entropy, predictions restricted to the shape's category parts, and the
ShapeNet-part metrics computed the official way (:class:`pointgeo.metrics.part_iou.PartSegmentationIoU`), logged as
``{stage}/miou_instance``, ``{stage}/miou_class`` and ``{stage}/point_acc``. Checkpoints are selected on
``val/miou_instance`` (the official validation split)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pointgeo.metrics.part_iou import PartSegmentationIoU, part_membership, restrict_logits_to_category
from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks.base import OptimizerName, PointGeoTask, SchedulerName


class PartSegmentationTask(PointGeoTask):
    """Train and evaluate a registered segmentation network ``net(pos, normal, category) -> (B, N, num_parts)``.

    Args:
        network: registry name of a segmentation network.
        num_classes: number of shape categories (linked from the datamodule by the CLI).
        num_parts: number of global part ids.
        category_parts: global part ids of every category; ``None`` takes them from the datamodule when training
            starts (they are then stored in the checkpoint's hyper-parameters).
        network_kwargs: extra constructor arguments of the network.
        use_normals: feed normals to the network (linked from the datamodule by the CLI).
        label_smoothing: label smoothing of the per-point cross-entropy.
        Optimizer and schedule arguments: see :class:`~pointgeo.tasks.base.PointGeoTask`.
    """

    task_kind = "segmentation"
    test_metric = "test/miou_instance"

    def __init__(
        self,
        network: str = "tinvnn_pointnet_seg",
        num_classes: int = 16,
        num_parts: int = 50,
        category_parts: list[list[int]] | None = None,
        network_kwargs: dict[str, Any] | None = None,
        use_normals: bool = False,
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        min_lr: float = 1e-5,
        step_size: int = 20,
        gamma: float = 0.5,
    ) -> None:
        super().__init__()
        entry = get_model_entry(network)
        if entry.task != "segmentation":
            raise ValueError(f"network {network!r} is a {entry.task} network, not a segmentation one")
        self.save_hyperparameters()
        self.net = create_model(network, num_parts=num_parts, num_categories=num_classes, use_normals=use_normals,
                                **(network_kwargs or {}))
        self.metrics = torch.nn.ModuleDict()
        if category_parts is not None:
            self._set_category_parts(category_parts)

    def _set_category_parts(self, category_parts: list[list[int]]) -> None:
        hp = self.hparams
        if len(category_parts) != hp.num_classes or max(p for parts in category_parts for p in parts) >= hp.num_parts:
            raise ValueError(f"category_parts must list, for each of the {hp.num_classes} categories, part ids below "
                             f"num_parts={hp.num_parts}")
        hp.category_parts = [list(parts) for parts in category_parts]
        self.register_buffer("membership", part_membership(category_parts, hp.num_parts), persistent=False)
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_metrics": PartSegmentationIoU(category_parts, hp.num_parts) for stage in ("train", "val", "test")}
        ).to(self.device)

    def setup(self, stage: str) -> None:
        """Take the category part table from the datamodule when it was not given."""
        if self.hparams.category_parts is None:
            data = getattr(self.trainer, "datamodule", None)
            if data is None or not hasattr(data, "category_parts"):
                raise ValueError("category_parts was not given and the datamodule has none")
            self._set_category_parts(data.category_parts)

    def _logits(self, batch: dict[str, Tensor]) -> Tensor:
        if self.hparams.use_normals and "normal" not in batch:
            raise ValueError("the model was trained with normals but the batch has no 'normal' key")
        return self.net(batch["pos"], batch.get("normal") if self.hparams.use_normals else None, batch["category"])

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-point logits ``(B, N, num_parts)``, parts outside each shape's category masked with ``-inf``."""
        if self.hparams.category_parts is None:
            raise ValueError("category_parts is unknown: pass it, or train/evaluate with a datamodule that has it")
        return restrict_logits_to_category(self._logits(batch), batch["category"], self.membership)

    def _step(self, batch: dict[str, Tensor], stage: str, raw: Tensor | None = None) -> Tensor:
        """Cross-entropy over all parts, metrics and logs of one batch (``raw`` logits when already computed)."""
        raw = self._logits(batch) if raw is None else raw
        seg = batch["seg"]
        if seg.min() < 0 or seg.max() >= self.hparams.num_parts:
            raise ValueError(f"part labels must be in [0, {self.hparams.num_parts}); got "
                             f"[{int(seg.min())}, {int(seg.max())}]")
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(raw.flatten(0, 1), seg.flatten(), label_smoothing=smoothing)  # over all parts
        pred = restrict_logits_to_category(raw.detach(), batch["category"], self.membership).argmax(-1)
        self.metrics[f"{stage}_metrics"].update(pred, seg, batch["category"])
        b = seg.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=b)
        self.log(f"{stage}/point_acc", (pred == seg).float().mean(), on_step=False, on_epoch=True, batch_size=b)
        return loss

    def _log_miou(self, stage: str) -> None:
        metric = self.metrics[f"{stage}_metrics"]
        for key, value in metric.compute().items():
            self.log(f"{stage}/{key}", value, prog_bar=stage == "val")
        metric.reset()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_miou("train")

    def on_validation_epoch_end(self) -> None:
        self._log_miou("val")

    def on_test_epoch_end(self) -> None:
        self._log_miou("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        prob = self(batch).softmax(dim=-1)
        return {"index": batch["index"], "pred": prob.argmax(-1), "prob": prob}
