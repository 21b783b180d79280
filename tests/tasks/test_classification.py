"""The classification task: metrics the field's way, checkpoint round trip, clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.tasks import ClassificationTask

TINY = {"channels": [8, 16], "head": [8]}


def test_overall_and_mean_class_accuracy_differ_as_defined() -> None:
    task = ClassificationTask("pointnet", num_classes=3, network_kwargs=TINY)
    metrics = task.metrics["test_metrics"]
    # 4 samples of class 0 all right, 1 sample of class 1 wrong, 1 of class 2 right: OA 5/6, mAcc (1 + 0 + 1)/3
    logits = torch.eye(3)[[0, 0, 0, 0, 0, 2]]
    metrics.update(logits, torch.tensor([0, 0, 0, 0, 1, 2]))
    out = metrics.compute()
    assert out["test/acc"].item() == pytest.approx(5 / 6)
    assert out["test/macc"].item() == pytest.approx(2 / 3)


def test_checkpoint_rebuilds_the_task_alone(tmp_path: Path) -> None:
    dm = SyntheticShapesDataModule(num_train=32, num_test=8, num_points=32, batch_size=8)
    task = ClassificationTask("tinvnn_pointnet", num_classes=dm.num_classes, network_kwargs=TINY)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    again = ClassificationTask.load_from_checkpoint(path).eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(task.eval()(batch), again(batch))
    assert torch.load(path, weights_only=True)["datamodule_hyper_parameters"]["train_rotation"] == "z"


def test_wrong_task_network_and_bad_labels_are_rejected() -> None:
    task = ClassificationTask("pointnet", num_classes=3, network_kwargs=TINY)
    batch = {"pos": torch.randn(2, 16, 3), "label": torch.tensor([0, 5])}
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        task._step(batch, "train")
    with pytest.raises(ValueError, match="no 'normal' key"):
        ClassificationTask("pointnet", num_classes=3, use_normals=True, network_kwargs=TINY)(batch)
    with pytest.raises(KeyError, match="unknown model"):
        ClassificationTask("pointnett", num_classes=3)


def test_pointgeo_train_lowers_the_risurconv_loss_on_the_synthetic_set(train_through_cli: Callable) -> None:
    """The shipped synthetic RISurConv config, shrunk to test size, trains through the CLI and the loss falls."""
    small = {"scale": 0.25, "channels": [8, 8, 16, 16, 32], "neighbours": [4, 4, 8, 8], "transformer_layers": 1,
             "transformer_heads": 2}
    out, per_epoch = train_through_cli(
        "synthetic/cls-risurconv_cls-z", "--trainer.max_epochs", "8", "--data.init_args.num_train", "96",
        "--data.init_args.num_test", "16", "--data.init_args.batch_size", "16", "--model.init_args.lr", "0.01",
        "--model.init_args.scheduler", "none", "--model.init_args.network_kwargs", json.dumps(small))
    assert "test rotation" in out
    loss = per_epoch("train/loss")
    assert loss[7] < 0.7 * loss[0], loss
