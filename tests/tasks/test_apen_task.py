"""APEN's task: the vote loss by hand, a short training lowers the vote loss and the cross-entropy, both mIoU
conventions and the partition accuracy are logged, and the checkpoint rebuilds as the APEN task."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pointgeo.datamodules import ArticulatedPartsDataModule
from pointgeo.hub import from_pretrained
from pointgeo.nn.apen import TEST_KWARGS
from pointgeo.tasks import APENSegmentationTask, PartSegmentationTask
from pointgeo.tasks.apen import vote_loss


def test_vote_loss_by_hand() -> None:
    pos = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [5.0, 5, 5]]])
    seg = torch.tensor([[0, 0, 1]])
    centres = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [5.0, 5, 5]]])  # part 0's centroid, part 1's only point
    assert vote_loss([centres], pos, seg).item() == 0.0
    shifted = centres + torch.tensor([0.0, 3.0, 0.0])  # every seed 3 off: 9 per point, twice for two blocks
    assert vote_loss([shifted, shifted], pos, seg).item() == pytest.approx(18.0)


def test_a_short_training_lowers_both_losses_and_logs_both_conventions(tmp_path: Path) -> None:
    pl.seed_everything(0)
    dm = ArticulatedPartsDataModule(num_train=48, num_test=6, num_points=48, use_normals=True, batch_size=8,
                                    val_fraction=0.125)
    task = APENSegmentationTask("apen", num_classes=3, num_parts=10, use_normals=True,
                                network_kwargs=dict(TEST_KWARGS), optimizer="adamw", lr=3e-3, scheduler="none")
    trainer = pl.Trainer(max_epochs=5, logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         gradient_clip_val=0.1)
    trainer.fit(task, datamodule=dm)
    rows = list(csv.DictReader(next(tmp_path.glob("lightning_logs/*/metrics.csv")).open()))

    def epoch_mean(key: str, epoch: int) -> float:
        values = [float(r[key]) for r in rows if r.get(key) and int(r["epoch"]) == epoch]
        return sum(values) / len(values)

    for key in ("train/vote_loss", "train/loss"):
        assert epoch_mean(key, 4) < epoch_mean(key, 0), key
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"val/miou_instance", "val/apen_miou_instance", "val/apen_miou_class", "val/partition_accuracy",
            "train/total_loss", "val/predicted_parts"} <= logged
    shapenet = [float(r["val/miou_instance"]) for r in rows if r.get("val/miou_instance")]
    apen = [float(r["val/apen_miou_instance"]) for r in rows if r.get("val/apen_miou_instance")]
    assert all(a <= s for a, s in zip(apen, shapenet))  # absent parts count 0 instead of 1
    trainer.save_checkpoint(tmp_path / "apen.ckpt")
    task2 = from_pretrained(str(tmp_path / "apen.ckpt"))
    assert type(task2) is APENSegmentationTask and not task2.training
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    with torch.no_grad():
        assert torch.equal(task2(batch), task(batch))


def test_the_task_refuses_a_network_without_segment() -> None:
    with pytest.raises(ValueError, match="has no segment"):
        APENSegmentationTask("pointnet_seg", num_classes=3, num_parts=10)
    assert issubclass(APENSegmentationTask, PartSegmentationTask)


def test_votes_aim_at_the_objects_of_a_scene_not_at_the_centre_of_their_shared_class() -> None:
    """Two objects of one class (``seg`` 0 for both, ``instance`` 0 and 1, 3 apart): the vote loss and the partition
    accuracy are taken against the instances; the centre of the class lies between the objects, in neither."""
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 32, 3, generator=g) * torch.tensor([0.3, 0.2, 0.1])
    instance = (torch.arange(32) % 2)[None]
    pos[..., 0] += 3.0 * instance
    normal = torch.nn.functional.normalize(torch.randn(1, 32, 3, generator=g), dim=-1)
    batch = {"pos": pos, "normal": normal, "seg": torch.zeros_like(instance), "instance": instance,
             "category": torch.zeros(1, dtype=torch.long)}
    task = APENSegmentationTask("apen", num_classes=1, num_parts=2, category_parts=[[0, 1]], use_normals=True,
                                network_kwargs=dict(TEST_KWARGS)).eval()
    logged: dict[str, float] = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    with torch.no_grad():
        task._step(batch, "val")
        seeds = task.net.segment(pos, normal).seeds
    by_instance, by_class = vote_loss(seeds, pos, instance).item(), vote_loss(seeds, pos, batch["seg"]).item()
    assert by_class > by_instance + 1.0  # ~2.25 per block from the shared centre
    assert logged["val/vote_loss"] == pytest.approx(by_instance, rel=1e-6)
