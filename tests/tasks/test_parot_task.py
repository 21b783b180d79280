"""PaRot's task: the siamese training lowers the classification and direction losses and the measured
equivariance error of the orientations; its checkpoints rebuild as PaRot tasks; the shipped synthetic config trains
through ``pointgeo train``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pointgeo.cli import main
from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.hub import from_pretrained
from pointgeo.registry import get_model_entry
from pointgeo.tasks import PaRotClassificationTask
from pointgeo.geometry import random_rotations, rotate

SMALL = get_model_entry("parot_cls").test_kwargs


def orientation_error(task: PaRotClassificationTask, pos: torch.Tensor) -> float:
    """Mean ‖O(x Rᵀ) − O(x) Rᵀ‖ of the local and global orientations over random rotations (evaluation path,
    float64): the learned part of PaRot's invariance, which pose restoration turns into invariant relative poses."""
    training = task.net.training
    net = task.net.double().eval()
    pos = pos.double()
    rotations = random_rotations(pos.shape[0], generator=torch.Generator().manual_seed(0))  # (B, 3, 3)
    with torch.no_grad():
        plain = net.orientations(pos)
        moved = net.orientations(rotate(pos, rotations))
    error = sum(float((m - o @ rotations.transpose(-1, -2).unsqueeze(1)).norm(dim=(-2, -1)).mean())
                for m, o in zip(moved, plain)) / 2
    task.net.float().train(training)  # Lightning keeps the modes it finds
    return error


def test_siamese_training_lowers_the_losses_and_the_orientation_error(tmp_path: Path) -> None:
    pl.seed_everything(0)
    dm = SyntheticShapesDataModule(num_train=256, num_test=64, num_points=128, batch_size=32, train_rotation="z")
    task = PaRotClassificationTask("parot_cls", num_classes=8, network_kwargs={**SMALL, "dropout": 0.0}, lr=3e-3,
                                   scheduler="none", label_smoothing=0.2286)
    dm.setup("fit")
    probe = torch.stack([dm.dataset("test")[i]["pos"] for i in range(16)])
    before = orientation_error(task, probe)
    trainer = pl.Trainer(max_epochs=8, logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(task, datamodule=dm)
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))

    def epoch_mean(key: str, epoch: int) -> float:
        values = [float(r[key]) for r in rows if r.get(key) and int(r["epoch"]) == epoch]
        return sum(values) / len(values)

    for key in ("train/loss", "train/dir_local", "train/dir_global"):
        assert epoch_mean(key, 7) < 0.8 * epoch_mean(key, 0), key
    after = orientation_error(task, probe)
    assert after < 0.7 * before, (before, after)  # measured 2.43 -> 1.40

    path = tmp_path / "parot.ckpt"
    trainer.save_checkpoint(path)
    again = from_pretrained(str(path))
    assert type(again) is PaRotClassificationTask and again.loss_weights == task.loss_weights


def test_pointgeo_train_runs_the_shipped_synthetic_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["train", "--config", "synthetic/cls-parot_cls-z", "--trainer.max_epochs", "1",
          "--data.init_args.num_train", "64", "--data.init_args.num_test", "32", "--data.init_args.num_points", "128",
          "--model.init_args.network_kwargs", str(SMALL).replace("(", "[").replace(")", "]").replace(",]", "]"),
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
          "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    assert "none |" in out and "so3 |" in out


def test_unknown_loss_weights_and_other_networks_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown PaRot loss weights"):
        PaRotClassificationTask("parot_cls", network_kwargs=SMALL, loss_weights={"dir": 1.0})
    with pytest.raises(ValueError, match="no siamese training path"):
        PaRotClassificationTask("pointnet")
