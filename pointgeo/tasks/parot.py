"""PaRot's training (Zhang et al. 2023): what differs from plain classification, and nothing else.

In training, every local and global patch is seen under two independent random rotations
(:meth:`pointgeo.nn.parot.PaRotClassifier.forward_siamese`); the loss is the label-smoothed cross-entropy of the
first branch plus the weighted direction-consistency, orthogonality and (off by default) feature-invariance losses
(spec §2.6). Validation, test and prediction use the deterministic evaluation path without rotations.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pointgeo.tasks.classification import ClassificationTask

DEFAULT_LOSS_WEIGHTS = {"dir_local": 1.0, "dir_global": 1.0, "orth_local": 0.2, "orth_global": 0.1,
                        "feat_local": 0.0, "feat_global": 0.0}
"""The released defaults (unchanged between its first and latest commit); the feature-invariance loss is off."""


class PaRotClassificationTask(ClassificationTask):
    """:class:`ClassificationTask` for ``parot_cls`` with the siamese training step.

    Args:
        loss_weights: weights of the auxiliary losses (keys of :data:`DEFAULT_LOSS_WEIGHTS`; missing keys keep
            their default).
        label_smoothing: PaRot's ``ε = 0.2`` puts ``1 - ε`` on the target and ``ε / (C - 1)`` on the others, which
            is PyTorch's label smoothing of ``ε C / (C - 1)`` (0.2051 for 40 classes).
        Other arguments: :class:`ClassificationTask`.
    """

    def __init__(self, network: str = "parot_cls", *args: Any,
                 loss_weights: dict[str, float] | None = None, **kwargs: Any) -> None:
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown PaRot loss weights {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        super().__init__(network, *args, **kwargs)
        if not hasattr(self.net, "forward_siamese"):
            raise ValueError(f"network {network!r} has no siamese training path; use ClassificationTask")
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, losses = self.net.forward_siamese(batch["pos"])
        loss = self._step(batch, "train", logits)
        for key, value in losses.items():
            self.log(f"train/{key}", value, batch_size=logits.shape[0])
            loss = loss + self.loss_weights[key] * value
        self.log("train/total_loss", loss, batch_size=logits.shape[0])
        return loss
