"""What every pointgeo task shares: the optimizer and learning-rate schedule from config, checkpoint metadata, and
the random-number state that makes a resumed run continue exactly where it stopped."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LambdaLR

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


def cosine_factor(epoch: int, epochs: int, floor: float) -> float:
    """The cosine schedule's multiplier of the base learning rate after ``epoch`` of ``epochs`` epochs:
    ``floor + (1 - floor) (1 + cos(π min(epoch, epochs) / epochs)) / 2`` (SGDR without restarts, closed form, so
    it depends on the epoch count only and a resumed run, even one given more epochs, follows it exactly)."""
    t = min(epoch, epochs) / max(1, epochs)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def check_sync_batchnorm(module: torch.nn.Module) -> None:
    """Raise ``ValueError`` if a :mod:`pointgeo.nn.linear_bn` layer holds a ``SyncBatchNorm`` (what
    ``Trainer(sync_batchnorm=True)`` makes of every BatchNorm): those layers compute BatchNorm in their own autograd
    functions from the module's parameters and buffers and never call its forward, so statistics would silently stay
    per rank. Stock ``nn.BatchNorm*d`` layers (PointNet, DGCNN, TinvNN's backbones) synchronise as usual."""
    from pointgeo.nn.linear_bn import LinearBN

    for name, layer in module.named_modules():
        if isinstance(layer, LinearBN) and any(isinstance(m, torch.nn.SyncBatchNorm) for m in layer.modules()):
            raise ValueError(f"sync_batchnorm=True is not supported by {name!r} ({type(layer).__name__}): pointgeo's "
                             f"fused Linear+BatchNorm layers use per-rank batch statistics under DDP; train without "
                             f"sync_batchnorm (or with a larger per-rank batch)")


class PointGeoTask(pl.LightningModule):
    """Base of the tasks. Subclasses call ``save_hyperparameters()`` with these optimizer arguments among theirs:

    ``optimizer`` (``adam``, ``adamw``, ``sgd``), ``lr``, ``weight_decay``, ``momentum`` (SGD), ``scheduler``
    (``cosine`` to ``min_lr`` over ``trainer.max_epochs``, ``step`` × ``gamma`` every ``step_size`` epochs but not
    below ``min_lr``, or ``none``).

    Checkpoints also hold the torch random-number states (dropout, random rotations drawn inside a training step);
    a resumed run puts them back just before its first training step, so it draws what the uninterrupted run drew.
    """

    task_kind = "classification"
    test_metric = "test/acc"
    """The headline test figure, printed by ``pointgeo train`` for each test rotation."""

    _rng_to_restore: dict[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which pointgeo version and task wrote the checkpoint (checked by :mod:`pointgeo.hub`) and the
        random-number states of this process."""
        from pointgeo import __version__

        checkpoint["pointgeo"] = {"version": __version__, "task": self.task_kind, "task_class": type(self).__name__}
        if self._trainer is not None and self.trainer.datamodule is not None:
            checkpoint["pointgeo"]["datamodule_class"] = type(self.trainer.datamodule).__name__
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["pointgeo_rng"] = rng

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the saved random-number states for the first training step of a resumed run; under
        ``precision="64-true"`` turn the module to float64 first, because Lightning loads the weights before its
        precision plugin converts the module (they would be rounded through float32)."""
        self._rng_to_restore = checkpoint.get("pointgeo_rng")
        if self._trainer is not None and str(self.trainer.precision).startswith("64"):
            self.double()

    def on_fit_start(self) -> None:
        check_sync_batchnorm(self)

    def on_train_start(self) -> None:
        """Set the learning rates to the schedule's value at the current epoch (a run resumed with another
        ``max_epochs`` continues on the new horizon's curve instead of the old one's)."""
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if isinstance(sched, LambdaLR):
                for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                    group["lr"] = base * factor(sched.last_epoch)
                sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Put back the random-number states of the checkpoint a run resumed from (once, before its first step:
        what ran in between — sanity checks, loader set-up — must not shift the stream)."""
        if self._rng_to_restore is not None:
            torch.set_rng_state(self._rng_to_restore["torch"])
            if "cuda" in self._rng_to_restore and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng_to_restore["cuda"])
            self._rng_to_restore = None

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(self.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        if hp.scheduler == "none":
            return opt
        floor = hp.min_lr / hp.lr if hp.lr > 0 else 0.0
        if hp.scheduler == "cosine":
            sched = LambdaLR(opt, lambda epoch: cosine_factor(epoch, max(1, self.trainer.max_epochs or 1), floor))
        elif hp.scheduler == "step":
            sched = LambdaLR(opt, lambda epoch: max(hp.gamma ** (epoch // hp.step_size), floor))
        else:
            raise ValueError(f"scheduler must be 'cosine', 'step' or 'none'; got {hp.scheduler!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
