"""How a robustness run scores one kind of task. An :class:`Evaluator` turns a dict batch into outputs, a score per
shape and the group (class or category) each shape counts towards; the protocol runner does the rest (rotations,
averaging, invariance figures) the same way for every kind.

* classification: ``outputs`` are the logits ``(B, C)``; a shape scores 1 when ``argmax == label``; the headline
  figure is the overall accuracy, the per-class figure the mean class accuracy.
* part segmentation: ``outputs`` are per-point logits ``(B, N, P)`` restricted to the shape's category parts
  (``-inf`` elsewhere); a shape scores its ShapeNet-part IoU (mean over its category's parts, an absent part
  counting 1, :func:`pointgeo.metrics.part_iou.shape_ious`); the averages are the instance and class mIoU. The
  APEN convention (an absent part counting 0) is reported beside it as ``miou_instance_apen``.

Registration or energy/force models plug in with one more subclass registered in :data:`EVALUATORS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from pointgeo.geometry import partition_of
from pointgeo.metrics.part_iou import part_membership, shape_ious

Batch = dict[str, Tensor]


class Evaluator(ABC):
    """Scores one model of a task kind on dict batches (see ``ARCHITECTURE.md``)."""

    kind: ClassVar[str]
    """The task kind, as written in checkpoints (``checkpoint["pointgeo"]["task"]``)."""
    score_key: ClassVar[str]
    """Name of the mean per-shape score (e.g. ``accuracy``)."""
    class_score_key: ClassVar[str]
    """Name of the mean over groups of the mean per-shape score (e.g. ``mean_class_accuracy``)."""
    per_class_key: ClassVar[str]
    """Name of the per-group scores (e.g. ``per_class_accuracy``)."""

    def __init__(self, task: Any, name: str = "the model") -> None:
        self.task = task
        self.name = name

    def outputs(self, batch: Batch) -> Tensor:
        """The model's outputs ``(B, ...)``, the quantity whose change under rotation is measured; NaN outputs
        raise ``ValueError``."""
        with torch.inference_mode():
            out = self.task(batch)
        if torch.isnan(out).any():
            raise ValueError(f"{self.name} produced NaN outputs on test shapes {batch['index'].tolist()}")
        return out

    def outputs_and_orientations(self, batch: Batch) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """:meth:`outputs` and, for a network whose invariance is learned through predicted orientations (one with
        ``recording_orientations()``, e.g. PaRot), the orientations ``(B, S, 3, 3)`` of that same forward pass;
        ``None`` for other networks."""
        net = getattr(self.task, "net", None)
        if not hasattr(net, "recording_orientations"):
            return self.outputs(batch), None
        with net.recording_orientations() as recorded:
            out = self.outputs(batch)
        return out, recorded[-1]

    def measured_piecewise(self, batch: Batch, seed: int, *, trials: int, translation_scale: float
                           ) -> dict[str, Any] | None:
        """For a network that predicts its own partition (one with ``segment``, APEN): the figures of
        :func:`pointgeo.testing.measure_apen_piecewise` on ``batch`` (measured piecewise error with the predicted
        partition, partition accuracy), the true parts being the batch's partition
        (:func:`~pointgeo.geometry.partition_of`: a scene's objects, not its classes); ``None`` for other
        networks."""
        net = getattr(self.task, "net", None)
        if not hasattr(net, "segment"):
            return None
        from pointgeo.testing import measure_apen_piecewise

        with torch.no_grad():
            return measure_apen_piecewise(net, {**batch, "seg": partition_of(batch)}, seed=seed, trials=trials,
                                          translation_scale=translation_scale)

    def extra_scores(self, outputs: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Other conventions of the score, ``{name: (B,) float64}``, averaged like it (none by default)."""
        return {}

    def predictions(self, outputs: Tensor) -> Tensor:
        """Predicted labels ``(B, ...)``: the argmax over the last dimension."""
        return outputs.argmax(-1)

    @abstractmethod
    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        """``(B,)`` float64 score of every shape, in ``[0, 1]``."""

    @abstractmethod
    def groups(self, batch: Batch) -> Tensor:
        """``(B,)`` long group (class or category) of every shape."""

    @abstractmethod
    def check(self, datamodule: Any) -> None:
        """Raise ``ValueError`` naming the model when it cannot be scored on ``datamodule``."""


class ClassificationEvaluator(Evaluator):
    """Shape classification: a shape is correct when ``argmax(logits) == label``."""

    kind = "classification"
    score_key = "accuracy"
    class_score_key = "mean_class_accuracy"
    per_class_key = "per_class_accuracy"

    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        return (self.predictions(outputs) == batch["label"]).double()

    def groups(self, batch: Batch) -> Tensor:
        return batch["label"]

    def check(self, datamodule: Any) -> None:
        if self.task.hparams.num_classes != datamodule.num_classes:
            raise ValueError(f"{self.name} predicts {self.task.hparams.num_classes} classes but the data has "
                             f"{datamodule.num_classes}")


class PartSegmentationEvaluator(Evaluator):
    """ShapeNet-part segmentation: a shape scores the mean IoU of its category's parts."""

    kind = "segmentation"
    score_key = "miou_instance"
    class_score_key = "miou_class"
    per_class_key = "per_class_miou"

    def __init__(self, task: Any, name: str = "the model") -> None:
        super().__init__(task, name)
        parts = task.hparams.category_parts
        if parts is None:
            raise ValueError(f"{name} is a segmentation checkpoint without category_parts")
        self.membership = part_membership(parts, task.hparams.num_parts)

    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        return shape_ious(self.predictions(outputs), batch["seg"], batch["category"], self.membership).double()

    def extra_scores(self, outputs: Tensor, batch: Batch) -> dict[str, Tensor]:
        """The APEN convention, ``miou_instance_apen`` (a part absent from prediction and truth counts 0)."""
        return {"miou_instance_apen": shape_ious(self.predictions(outputs), batch["seg"], batch["category"],
                                                 self.membership, "apen").double()}

    def groups(self, batch: Batch) -> Tensor:
        return batch["category"]

    def check(self, datamodule: Any) -> None:
        if not hasattr(datamodule, "category_parts"):
            raise ValueError(f"{self.name} is a part-segmentation checkpoint but {type(datamodule).__name__} has no "
                             f"part labels; test it on part-segmentation data (e.g. --data "
                             f"shapenet_part/partseg-pointnet_seg-z)")
        hp = self.task.hparams
        if [list(p) for p in hp.category_parts] != [list(p) for p in datamodule.category_parts]:
            raise ValueError(f"{self.name} segments {hp.num_classes} categories into {hp.num_parts} parts, which "
                             f"is not the part table of the data ({datamodule.num_categories} categories, "
                             f"{datamodule.num_parts} parts)")


EVALUATORS: dict[str, type[Evaluator]] = {e.kind: e for e in (ClassificationEvaluator, PartSegmentationEvaluator)}
"""The evaluator of every supported task kind."""


def evaluator_for(task: Any, kind: str, name: str) -> Evaluator:
    """The evaluator of model ``name``, a task of ``kind``; an unsupported kind raises ``ValueError``."""
    if kind not in EVALUATORS:
        raise ValueError(f"{name} is a {kind!r} checkpoint; robustness reports support {', '.join(EVALUATORS)}")
    return EVALUATORS[kind](task, name)
