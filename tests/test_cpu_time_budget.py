"""CpuTimeBudget: training stops once its steps used the budget of process CPU time, validates once more, and
keeps the CPU time used across a resume."""

from __future__ import annotations

import time

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from pointgeo.lightning_cli import CpuTimeBudget

STEP_CPU_SECONDS = 0.02


class BusyRegression(pl.LightningModule):
    """A linear regression whose every training step burns about STEP_CPU_SECONDS of CPU time."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.validations = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        start = time.process_time()
        while time.process_time() - start < STEP_CPU_SECONDS:
            pass
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.validations += batch_idx == 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader() -> DataLoader:
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    return DataLoader(data, batch_size=4)  # 16 steps an epoch


def trainer(budget: CpuTimeBudget, tmp_path, max_epochs: int = 100) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, callbacks=[budget], default_root_dir=tmp_path, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      accelerator="cpu", devices=1)


def test_training_stops_after_its_cpu_budget_and_validates_at_the_stop(tmp_path) -> None:
    budget = CpuTimeBudget(max_cpu_seconds=0.3)  # ~15 steps: stops inside the first epoch
    model = BusyRegression()
    fit = trainer(budget, tmp_path)
    fit.fit(model, loader(), loader())
    assert fit.global_step < 16  # the budget, not max_epochs, ended the run
    assert budget.used >= 0.3
    assert budget.used <= 0.3 + 5 * STEP_CPU_SECONDS  # overshoot: at most the step that crossed it (+ overhead)
    assert model.validations == 1  # the stop is followed by one validation
    assert fit.global_step >= int(0.3 / (2 * STEP_CPU_SECONDS))  # and training did use the budget


def test_the_budget_survives_a_resume(tmp_path) -> None:
    first = CpuTimeBudget(max_cpu_seconds=0.5)
    fit = trainer(first, tmp_path, max_epochs=1)  # max_epochs stops it first, with budget left
    fit.fit(BusyRegression(), loader(), loader())
    assert 16 * STEP_CPU_SECONDS <= first.used < 0.5
    ckpt = tmp_path / "after_epoch.ckpt"
    fit.save_checkpoint(ckpt)
    resumed = CpuTimeBudget(max_cpu_seconds=0.5)
    fit = trainer(resumed, tmp_path)
    fit.fit(BusyRegression(), loader(), loader(), ckpt_path=ckpt)
    assert resumed.used >= 0.5
    steps_after_resume = fit.global_step - 16
    assert 0 < steps_after_resume < 16  # the rest of the budget (~0.18 s), not a fresh 0.5 s (25 steps)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_a_non_positive_budget_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="max_cpu_seconds must be > 0"):
        CpuTimeBudget(max_cpu_seconds=bad)
