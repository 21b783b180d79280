"""Lightning DDP with two CPU processes (gloo) trains the task; `ddp_spawn` because `ddp` would re-run pytest."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.tasks import ClassificationTask


def test_two_process_cpu_ddp_trains_one_epoch(tmp_path: Path) -> None:
    dm = SyntheticShapesDataModule(num_train=64, num_test=8, num_points=32, batch_size=8)
    task = ClassificationTask("tinvnn_pointnet", num_classes=dm.num_classes,
                              network_kwargs={"channels": [8, 16], "head": [8]})
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    ckpt = next(tmp_path.glob("**/*.ckpt"))
    assert trainer.world_size == 2 and ckpt.stat().st_size > 0
