"""What every pointgeo task shares: the optimizer and learning-rate schedule from config, and checkpoint metadata."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch

OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["cosine", "step", "none"]


def build_optimizer(
    params: Any, name: OptimizerName, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd'; got {name!r}")


class PointGeoTask(pl.LightningModule):
    """Base of the tasks. Subclasses call ``save_hyperparameters()`` with these optimizer arguments among theirs:

    ``optimizer`` (``adam``, ``adamw``, ``sgd``), ``lr``, ``weight_decay``, ``momentum`` (SGD), ``scheduler``
    (``cosine`` to ``min_lr`` over ``trainer.max_epochs``, ``step`` × ``gamma`` every ``step_size`` epochs but not
    below ``min_lr``, or ``none``).
    """

    task_kind = "classification"
    test_metric = "test/acc"
    """The headline test figure, printed by ``pointgeo train`` for each test rotation."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which pointgeo version and task wrote the checkpoint (checked by :mod:`pointgeo.hub`)."""
        from pointgeo import __version__

        checkpoint["pointgeo"] = {"version": __version__, "task": self.task_kind, "task_class": type(self).__name__}

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(self.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "cosine":
            epochs = max(1, self.trainer.max_epochs or 1)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=hp.min_lr)
        elif hp.scheduler == "step":
            floor = hp.min_lr / hp.lr if hp.lr > 0 else 0.0
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda epoch: max(hp.gamma ** (epoch // hp.step_size), floor))
        else:
            raise ValueError(f"scheduler must be 'cosine', 'step' or 'none'; got {hp.scheduler!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
