"""Lightning DDP with two CPU processes (gloo): what DDP promises, checked on one step. ``ddp_spawn`` because
``ddp`` would re-run pytest."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.registry import create_model
from pointgeo.tasks import ClassificationTask
from pointgeo.tasks.base import build_optimizer, check_sync_batchnorm


class PointMax(nn.Module):
    """A network without BatchNorm (so a sample's gradient depends on that sample only): per-point MLP, max, linear."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, pos: Tensor, normal: Tensor | None = None) -> Tensor:
        return self.head(self.point(pos).amax(dim=1))


class PointMaxTask(ClassificationTask):
    """The classification task around :class:`PointMax`."""

    def __init__(self, num_classes: int) -> None:
        super().__init__("pointnet", num_classes=num_classes, network_kwargs={"channels": [4], "head": [4]},
                         scheduler="none", lr=0.01)
        self.net = PointMax(num_classes)


class RecordRank(pl.Callback):
    """Saves each rank's first training batch and its weights after the first step into ``folder/rank{r}.pt``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.batch: dict[str, Tensor] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.batch = {k: batch[k].clone() for k in ("pos", "label")}

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        torch.save({"batch": self.batch, "weights": copy.deepcopy(module.net.state_dict()),
                    "world_size": trainer.world_size}, self.folder / f"rank{trainer.global_rank}.pt")


def test_after_a_ddp_step_both_ranks_equal_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    dm = SyntheticShapesDataModule(num_train=64, num_test=8, num_points=32, batch_size=4, train_rotation="so3")
    task = PointMaxTask(dm.num_classes).double()
    initial = copy.deepcopy(task.net.state_dict())
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1, precision="64-true",
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[RecordRank(tmp_path)])
    trainer.fit(task, datamodule=dm)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    batches = [r["batch"] for r in ranks]
    assert not torch.equal(batches[0]["pos"], batches[1]["pos"])  # the ranks trained on different shapes
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key  # identical weights on both ranks
        assert not torch.equal(value, initial[key]), key  # and the step changed them

    single = PointMax(dm.num_classes).double()
    single.load_state_dict(initial)
    opt = build_optimizer(single.parameters(), "adam", lr=0.01, weight_decay=1e-4, momentum=0.9)
    pos = torch.cat([b["pos"] for b in batches]).double()
    label = torch.cat([b["label"] for b in batches])
    F.cross_entropy(single(pos), label).backward()
    opt.step()
    for key, value in single.state_dict().items():
        assert torch.allclose(ranks[0]["weights"][key], value, rtol=0, atol=1e-12), key


@pytest.mark.parametrize("network", ["risurconv_cls", "parot_cls"])
def test_sync_batchnorm_is_refused_for_the_fused_linear_bn_layers(network: str) -> None:
    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(create_model(network, num_classes=4))
    with pytest.raises(ValueError, match="sync_batchnorm=True is not supported"):
        check_sync_batchnorm(net)
    check_sync_batchnorm(torch.nn.SyncBatchNorm.convert_sync_batchnorm(create_model("pointnet", num_classes=4)))
