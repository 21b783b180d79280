"""Shape classification: a registered network trained with (label-smoothed) cross-entropy.

Metrics (torchmetrics, ``average`` always explicit): overall accuracy (``micro``) and mean class accuracy
(``macro``), one instance per stage, logged as ``{stage}/acc`` and ``{stage}/macc``. Checkpoints are selected on
``val/acc``, measured on a validation split carved from the training set, never on the test set.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks.base import OptimizerName, PointGeoTask, SchedulerName

class ClassificationTask(PointGeoTask):
    """Train and evaluate a registered classification network.

    Args:
        network: registry name of the network (``pointgeo models`` lists them).
        num_classes: number of classes (linked from the datamodule by the CLI).
        network_kwargs: extra constructor arguments of the network.
        use_normals: feed normals to the network (linked from the datamodule by the CLI).
        label_smoothing: label smoothing of the cross-entropy.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: initial learning rate.
        weight_decay: weight decay.
        momentum: SGD momentum.
        scheduler: ``cosine`` (to ``min_lr`` over ``trainer.max_epochs``), ``step`` (× ``gamma`` every
            ``step_size`` epochs, not below ``min_lr``) or ``none``.
        min_lr: final learning rate of the cosine schedule, floor of the step schedule.
        step_size: epochs between steps of the step schedule.
        gamma: factor of the step schedule.
    """

    def __init__(
        self,
        network: str = "tinvnn_pointnet",
        num_classes: int = 40,
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
        gamma: float = 0.7,
    ) -> None:
        super().__init__()
        entry = get_model_entry(network)
        if entry.task != "classification":
            raise ValueError(f"network {network!r} is a {entry.task} network, not a classification one")
        self.save_hyperparameters()
        self.net = create_model(network, num_classes=num_classes, use_normals=use_normals, **(network_kwargs or {}))
        # One metric instance per stage; keys avoid clashing with nn.Module attributes such as ``train``.
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_metrics": MetricCollection({
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "macc": MulticlassAccuracy(num_classes, average="macro"),
            }, prefix=f"{stage}/")
            for stage in ("train", "val", "test")
        })

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, num_classes)`` of a dict batch (``pos``, and ``normal`` when the network uses normals)."""
        if self.hparams.use_normals and "normal" not in batch:
            raise ValueError("the model was trained with normals but the batch has no 'normal' key")
        return self.net(batch["pos"], batch.get("normal") if self.hparams.use_normals else None)

    def _step(self, batch: dict[str, Tensor], stage: str, logits: Tensor | None = None) -> Tensor:
        """Cross-entropy, metrics and logs of one batch (``logits`` when already computed)."""
        logits = self(batch) if logits is None else logits
        label = batch["label"]
        if label.min() < 0 or label.max() >= self.hparams.num_classes:
            raise ValueError(
                f"labels must be in [0, {self.hparams.num_classes}); got [{int(label.min())}, {int(label.max())}]"
            )
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, label, label_smoothing=smoothing)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), label)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=label.shape[0])
        self.log_dict(metrics, prog_bar=stage == "val", on_step=False, on_epoch=True, batch_size=label.shape[0])
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        prob = self(batch).softmax(dim=-1)
        conf, pred = prob.max(dim=-1)
        return {"index": batch["index"], "pred": pred, "confidence": conf, "prob": prob}
