"""Shared test set-up: deterministic seeds, an isolated cache, no network, and the real dataset samples."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 0, a private POINTGEO_HOME, offline mode, and two torch threads for every test."""
    torch.manual_seed(0)
    monkeypatch.setenv("POINTGEO_HOME", str(tmp_path_factory.mktemp("pointgeo_home")))
    monkeypatch.setenv("POINTGEO_OFFLINE", "1")
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real samples of the official dataset files, which lies beside the repository checkout.

    The readers are tested on them, so a missing folder fails those tests with a message saying where it belongs.
    """
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the real dataset samples are missing: expected them in {SHARED_DATA} (../shared/data beside "
                    f"the checkout)")
    return SHARED_DATA


TrainedRun = tuple[str, Callable[[str], dict[int, float]]]


@pytest.fixture
def train_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> Callable[..., TrainedRun]:
    """``run(config, *args)`` runs ``pointgeo train`` with a CSV logger in ``tmp_path/logs`` (checkpoints there
    too) and returns its printed output and ``per_epoch(metric) -> {epoch: mean of the logged values}``."""
    from pointgeo.cli import main

    def run(config: str, *args: str) -> TrainedRun:
        main(["train", "--config", config, *args, "--trainer.default_root_dir", str(tmp_path / "runs"),
              "--trainer.log_every_n_steps", "1", "--trainer.logger", "CSVLogger",
              "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
              "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"])
        rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))

        def per_epoch(metric: str) -> dict[int, float]:
            values: dict[int, list[float]] = defaultdict(list)
            for row in rows:
                if row.get(metric):
                    values[int(row["epoch"])].append(float(row[metric]))
            return {epoch: sum(v) / len(v) for epoch, v in values.items()}

        return capsys.readouterr().out, per_epoch

    return run
