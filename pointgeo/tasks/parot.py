"""PaRot's training (Zhang et al. 2023): what differs from plain classification and part segmentation, and nothing
else.

In training, every local and global patch is seen under two independent random rotations
(:meth:`pointgeo.nn.parot.PaRotNetwork.forward_siamese`); the loss is the label-smoothed cross-entropy of the first
branch plus the weighted direction-consistency, orthogonality and (off by default) feature-invariance losses
(spec §2.6). Validation, test and prediction use the deterministic evaluation path without rotations.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pointgeo.tasks.classification import ClassificationTask
from pointgeo.tasks.segmentation import PartSegmentationTask

DEFAULT_LOSS_WEIGHTS = {"dir_local": 1.0, "dir_global": 1.0, "orth_local": 0.2, "orth_global": 0.1,
                        "feat_local": 0.0, "feat_global": 0.0}
"""The released defaults (unchanged between its first and latest commit); the feature-invariance loss is off."""


def resolve_loss_weights(net: nn.Module, network: str, loss_weights: dict[str, float] | None) -> dict[str, float]:
    """The auxiliary loss weights: ``loss_weights`` over :data:`DEFAULT_LOSS_WEIGHTS`. ``ValueError`` for unknown
    keys or a network without a siamese training path."""
    unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown PaRot loss weights {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
    if not hasattr(net, "forward_siamese"):
        raise ValueError(f"network {network!r} has no siamese training path; use the plain task")
    return {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}


class SiameseTrainingStep:
    """The siamese training step shared by the PaRot tasks: the network's ``forward_siamese`` on the batch keys
    ``siamese_inputs``, the task's own loss of the first branch (``_step(batch, "train", output)``) and the
    weighted auxiliary losses, each logged."""

    siamese_inputs: tuple[str, ...]
    loss_weights: dict[str, float]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        output, losses = self.net.forward_siamese(*(batch[key] for key in self.siamese_inputs))
        loss = self._step(batch, "train", output)
        size = output.shape[0]
        for key, value in losses.items():
            self.log(f"train/{key}", value, batch_size=size)
            loss = loss + self.loss_weights[key] * value
        self.log("train/total_loss", loss, batch_size=size)
        return loss


class PaRotClassificationTask(SiameseTrainingStep, ClassificationTask):
    """:class:`ClassificationTask` for ``parot_cls`` with the siamese training step.

    Args:
        loss_weights: weights of the auxiliary losses (keys of :data:`DEFAULT_LOSS_WEIGHTS`; missing keys keep
            their default).
        label_smoothing: PaRot's ``ε = 0.2`` puts ``1 - ε`` on the target and ``ε / (C - 1)`` on the others, which
            is PyTorch's label smoothing of ``ε C / (C - 1)`` (0.2051 for 40 classes).
        Other arguments: :class:`ClassificationTask`.
    """

    siamese_inputs = ("pos",)

    def __init__(self, network: str = "parot_cls", *args: Any,
                 loss_weights: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(network, *args, **kwargs)
        self.loss_weights = resolve_loss_weights(self.net, network, loss_weights)


class PaRotSegmentationTask(SiameseTrainingStep, PartSegmentationTask):
    """:class:`PartSegmentationTask` for ``parot_seg`` with the siamese training step.

    Args:
        loss_weights: as :class:`PaRotClassificationTask`.
        label_smoothing: PaRot's ``ε = 0.2`` over the 50 parts is PyTorch's ``0.2 · 50 / 49 = 0.2041``.
        Other arguments: :class:`PartSegmentationTask`.
    """

    siamese_inputs = ("pos", "category")

    def __init__(self, network: str = "parot_seg", *args: Any,
                 loss_weights: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(network, *args, **kwargs)
        self.loss_weights = resolve_loss_weights(self.net, network, loss_weights)
