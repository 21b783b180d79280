"""PaRot's tasks: the siamese training lowers the classification and direction losses and the measured
equivariance error of the orientations (on a probe and in the robustness report); checkpoints rebuild as PaRot
tasks; the shipped synthetic and ShapeNet-part configs train through ``pointgeo train``."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pointgeo.cli import main
from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.hub import from_pretrained
from pointgeo.registry import get_model_entry
from pointgeo.robustness import ProtocolSettings, run_robustness
from pointgeo.tasks import PaRotClassificationTask, PaRotSegmentationTask
from pointgeo.testing import measure_frame_equivariance
from pointgeo.testing.fake_data import write_shapenet_part_h5

SMALL = get_model_entry("parot_cls").test_kwargs


def orientation_error(task: PaRotClassificationTask, pos: torch.Tensor) -> float:
    """Mean ‖O(x Rᵀ) − O(x) Rᵀ‖ of the local and global orientations over random rotations (evaluation path,
    float64): the learned part of PaRot's invariance, which pose restoration turns into invariant relative poses."""
    training = task.net.training
    net = task.net.double().eval()
    error = measure_frame_equivariance(net.orientations, pos.double())
    task.net.float().train(training)  # Lightning keeps the modes it finds
    return error


def trainer(tmp_path: Path, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, **kwargs)


def test_siamese_training_lowers_the_losses_and_the_orientation_error(tmp_path: Path) -> None:
    """The losses fall, and the orientations' equivariance error falls both on a probe and in the robustness report
    of the checkpoints before and after training."""
    pl.seed_everything(0)
    dm = SyntheticShapesDataModule(num_train=256, num_test=32, num_points=128, batch_size=32, train_rotation="z")
    task = PaRotClassificationTask("parot_cls", num_classes=8, network_kwargs={**SMALL, "dropout": 0.0}, lr=3e-3,
                                   scheduler="none", label_smoothing=0.2286)
    dm.setup("fit")
    probe = torch.stack([dm.dataset("test")[i]["pos"] for i in range(16)])
    before = orientation_error(task, probe)
    untrained = trainer(tmp_path / "untrained", max_steps=0)
    untrained.fit(task, datamodule=dm)
    untrained.save_checkpoint(tmp_path / "untrained.ckpt")
    fit = trainer(tmp_path, max_epochs=8)
    fit.fit(task, datamodule=dm)
    rows = list(csv.DictReader(next(tmp_path.glob("lightning_logs/*/metrics.csv")).open()))

    def epoch_mean(key: str, epoch: int) -> float:
        values = [float(r[key]) for r in rows if r.get(key) and int(r["epoch"]) == epoch]
        return sum(values) / len(values)

    for key in ("train/loss", "train/dir_local", "train/dir_global"):
        assert epoch_mean(key, 7) < 0.8 * epoch_mean(key, 0), key
    after = orientation_error(task, probe)
    assert after < 0.7 * before, (before, after)  # measured 2.43 -> 1.40

    path = tmp_path / "parot.ckpt"
    fit.save_checkpoint(path)
    again = from_pretrained(str(path))
    assert type(again) is PaRotClassificationTask and again.loss_weights == task.loss_weights

    data = tmp_path / "data.yaml"  # the checkpoints come from Trainer.fit, not the CLI: name their data
    data.write_text("data:\n  class_path: pointgeo.datamodules.SyntheticShapesDataModule\n  init_args: "
                    "{num_train: 256, num_test: 32, num_points: 128}\n")
    report = run_robustness([str(tmp_path / "untrained.ckpt"), str(path)], tmp_path / "report", double=True,
                            data_config=str(data), settings=ProtocolSettings(n_rotations=2, sweep_step=90, seed=1))
    errors = [model["protocols"]["so3"]["mean_orientation_error"] for model in report["models"]]
    assert errors[1] < 0.7 * errors[0], errors
    assert [row["orientation_error_so3"] for row in report["table"]] == errors
    assert "mean orientation error" in (tmp_path / "report" / "report.html").read_text()


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


def test_pointgeo_train_lowers_the_parot_segmentation_losses(tmp_path: Path, train_through_cli: Callable) -> None:
    """The shipped PaRot ShapeNet-part config (hdf5 release), shrunk to test size, trains through the CLI on fixtures:
    the part loss and the direction losses fall; the checkpoint rebuilds as a PaRot segmentation task whose robustness
    report carries the orientation error."""
    write_shapenet_part_h5(tmp_path / "hdf5_data", {"train": 32, "val": 4, "test": 4}, points=128,
                           categories=4)
    small = get_model_entry("parot_seg").test_kwargs
    out, per_epoch = train_through_cli(
        "shapenet_part/partseg-parot_seg-z", "--trainer.max_epochs", "8",
        "--data.init_args.root", str(tmp_path), "--data.init_args.download", "false",
        "--data.init_args.num_points", "128", "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "4", "--model.init_args.lr", "0.01", "--model.init_args.scheduler", "none",
        "--model.init_args.label_smoothing", "0",  # random fixture labels: the floor is the category prior
        "--model.init_args.network_kwargs", json.dumps(small))
    assert "test rotation | miou_instance" in out
    for key in ("train/loss", "train/dir_local", "train/dir_global"):
        values = per_epoch(key)
        assert values[7] < 0.8 * values[0], (key, values)

    checkpoint = next((tmp_path / "logs").rglob("last.ckpt"))
    task = from_pretrained(str(checkpoint))
    assert type(task) is PaRotSegmentationTask and task.hparams.network == "parot_seg"
    report = run_robustness([str(checkpoint)], tmp_path / "report",
                            settings=ProtocolSettings(n_rotations=1, sweep_step=180, seed=0))
    so3 = report["models"][0]["protocols"]["so3"]
    assert report["task"] == "segmentation" and 0 < so3["mean_orientation_error"] < 2 * 3**0.5
