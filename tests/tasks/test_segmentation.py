"""The part-segmentation task on ShapeNet-part fixtures: training lowers the loss, the CLI trains with the shipped
config, checkpoints keep the category table, and bad input is rejected."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pointgeo.cli import main
from pointgeo.datamodules import ShapeNetPartDataModule
from pointgeo.datamodules.shapenet_part import SYNSETS
from pointgeo.registry import get_model_entry
from pointgeo.tasks import PartSegmentationTask
from pointgeo.testing.fake_data import write_shapenet_part_txt

FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
TINY = {"channels": [16, 32], "head": [16]}


@pytest.fixture
def shapenet_root(tmp_path: Path) -> Path:
    shapes = {split: [(s, f"{split}{i}") for i, s in enumerate(SYNSETS[:4] * count)]
              for split, count in (("train", 2), ("val", 1), ("test", 1))}
    write_shapenet_part_txt(tmp_path / FOLDER, shapes, points=48)
    return tmp_path


class EpochLoss(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def test_training_lowers_the_loss_and_the_checkpoint_keeps_the_part_table(shapenet_root: Path) -> None:
    dm = ShapeNetPartDataModule(root=str(shapenet_root), download=False, num_points=32, batch_size=8,
                                train_rotation="none")
    task = PartSegmentationTask("pointnet_seg", num_classes=16, network_kwargs=TINY, lr=0.01, scheduler="none")
    record = EpochLoss()
    trainer = pl.Trainer(max_epochs=12, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[record], default_root_dir=shapenet_root)
    trainer.fit(task, datamodule=dm)
    assert record.losses[-1] < 0.7 * record.losses[0]
    assert task.hparams.category_parts == dm.category_parts  # taken from the datamodule, stored for checkpoints
    metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert 0 <= metrics["test/miou_instance"] <= 1 and "test/miou_class" in metrics
    path = shapenet_root / "seg.ckpt"
    trainer.save_checkpoint(path)
    again = PartSegmentationTask.load_from_checkpoint(path).eval()
    batch = next(iter(dm.test_dataloader()))
    prediction = again(batch).argmax(-1)
    allowed = torch.tensor([dm.category_parts[int(c)] + [-1] * (4 - len(dm.category_parts[int(c)]))
                            for c in batch["category"]])
    assert (prediction.unsqueeze(-1) == allowed.unsqueeze(1)).any(-1).all()  # only the category's own parts


def test_pointgeo_train_runs_the_shipped_config(shapenet_root: Path, capsys: pytest.CaptureFixture) -> None:
    main(["train", "--config", "shapenet_part/partseg-tinvnn_pointnet_seg-z", "--trainer.max_epochs", "1",
          "--data.init_args.root", str(shapenet_root), "--data.init_args.download", "false",
          "--data.init_args.num_points", "32", "--data.init_args.num_workers", "0",
          "--model.init_args.network_kwargs", '{"channels": [8, 16], "head": [8]}',
          "--trainer.default_root_dir", str(shapenet_root / "runs"), "--trainer.logger", "false",
          "--trainer.enable_model_summary", "false"])
    out = capsys.readouterr().out
    assert "test rotation | miou_instance" in out and "so3 |" in out


def test_wrong_network_kind_and_bad_tables_are_rejected() -> None:
    with pytest.raises(ValueError, match="classification network, not a segmentation one"):
        PartSegmentationTask("pointnet", num_classes=16)
    with pytest.raises(ValueError, match="for each of the 16 categories"):
        PartSegmentationTask("pointnet_seg", num_classes=16, category_parts=[[0, 1]], network_kwargs=TINY)
    task = PartSegmentationTask("pointnet_seg", num_classes=2, num_parts=4, category_parts=[[0, 1], [2, 3]],
                                network_kwargs=TINY)
    batch = {"pos": torch.randn(2, 16, 3), "category": torch.tensor([0, 1]), "seg": torch.full((2, 16), 7)}
    with pytest.raises(ValueError, match=r"part labels must be in \[0, 4\)"):
        task._step(batch, "train")


def test_pointgeo_train_lowers_the_risurconv_segmentation_loss(tmp_path: Path, train_through_cli: Callable) -> None:
    """The shipped RISurConv ShapeNet-part config, shrunk to test size, trains through the CLI on fixtures."""
    shapes = {split: [(s, f"{split}{i}") for i, s in enumerate(SYNSETS[:4] * count)]
              for split, count in (("train", 4), ("val", 1), ("test", 1))}
    write_shapenet_part_txt(tmp_path / FOLDER, shapes, points=160)
    small = get_model_entry("risurconv_seg").test_kwargs
    out, per_epoch = train_through_cli(
        "shapenet_part/partseg-risurconv_seg-z", "--trainer.max_epochs", "10",
        "--data.init_args.root", str(tmp_path), "--data.init_args.download", "false",
        "--data.init_args.num_points", "128", "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "8", "--model.init_args.lr", "0.01", "--model.init_args.scheduler", "none",
        "--model.init_args.network_kwargs", json.dumps(small))
    assert "test rotation | miou_instance" in out
    loss = per_epoch("train/loss")
    assert loss[9] < 0.7 * loss[0], loss
