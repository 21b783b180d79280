"""The shipped APEN checkpoint (trained by ``pointgeo train`` on the built-in articulated set): loaded by name, it
reproduces the test mIoU recorded in its registry entry on its own deterministic synthetic test split, unrotated,
under SO(3) and under per-part motion (the robustness report's piecewise protocol), in both mIoU conventions."""

from __future__ import annotations

import pytest
import torch

from pointgeo import hub
from pointgeo.datamodules import ArticulatedPartsDataModule
from pointgeo.metrics.part_iou import PartSegmentationIoU
from pointgeo.robustness.protocol import ProtocolSettings, move_batch_parts
from pointgeo.tasks import APENSegmentationTask

NAME = "apen.articulated"
ABS_TOL = 0.005
"""The same shapes, motions and weights: only float32 summation order may differ, which can flip a point or two
(one point of 96 moves a shape's mIoU by < 0.02, the mean over the split's shapes by < 0.001)."""


def measure(name: str = NAME) -> dict[str, float]:
    """``test/{miou,apen_miou}_instance/{none,so3,piecewise}`` of checkpoint ``name`` on its stored test split:
    ``none`` the clouds as generated, ``so3`` the datamodule's seeded test rotations, ``piecewise`` every part of
    the unrotated clouds moved by its own seeded rigid motion (:func:`pointgeo.robustness.protocol.move_batch_parts`,
    repetition 0, the report's default settings)."""
    task = hub.from_pretrained(name)
    stored = torch.load(hub.fetch(name), weights_only=True)["datamodule_hyper_parameters"]
    dm = ArticulatedPartsDataModule(**{k: v for k, v in stored.items() if not k.startswith("_")})
    dm.setup("test")
    parts, num_parts = task.hparams.category_parts, task.hparams.num_parts
    settings = ProtocolSettings()
    measured: dict[str, float] = {}
    for mode in ("none", "so3", "piecewise"):
        dm.set_test_rotation("so3" if mode == "so3" else "none")
        metrics = [PartSegmentationIoU(parts, num_parts), PartSegmentationIoU(parts, num_parts, convention="apen")]
        for batch in dm.test_dataloader():
            if mode == "piecewise":
                batch = move_batch_parts(batch, 0, settings)
            with torch.no_grad():
                pred = task(batch).argmax(-1)
            for metric in metrics:
                metric.update(pred, batch["seg"], batch["category"])
        for metric in metrics:
            for key, value in metric.compute().items():
                if key.endswith("miou_instance"):
                    measured[f"test/{key}/{mode}"] = float(value)
    return measured


def test_the_shipped_apen_checkpoint_reproduces_its_recorded_miou() -> None:
    entry = hub.get_checkpoint(NAME)
    task = hub.from_pretrained(NAME)
    assert type(task) is APENSegmentationTask and not task.training and task.hparams.network == "apen"
    assert entry.size < 2 * 2**20
    measured = measure()
    assert set(measured) == set(entry.metrics)
    for key, value in entry.metrics.items():
        assert measured[key] == pytest.approx(value, rel=0, abs=ABS_TOL), key
    # it learned: the best constant part per shape scores at most 1/3 (a category's largest part, 40 % of it, out
    # of three or four parts), and the recorded piecewise score is well above that
    assert entry.metrics["test/miou_instance/piecewise"] > 0.5
