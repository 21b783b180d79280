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
TEST_DATA_SETTING = "POINTGEO_TEST_DATA"
"""The one setting that locates the real dataset samples: an environment variable naming their folder (relative
paths from the repository root); unset, ``../shared/data`` beside the checkout."""


def samples_folder() -> Path:
    """The folder of the real dataset samples, from :data:`TEST_DATA_SETTING`."""
    value = os.environ.get(TEST_DATA_SETTING)
    return (REPO_ROOT / value).resolve() if value else REPO_ROOT.parent / "shared" / "data"


def missing_sample(what: Path) -> None:
    """Skip the test (fail it when ``CI=true``: CI must run every sample test) because ``what`` is absent."""
    where = "" if os.environ.get(TEST_DATA_SETTING) else " (unset: ../shared/data beside the checkout)"
    reason = (f"real dataset sample {what} is missing: set {TEST_DATA_SETTING} to the folder of the samples"
              f"{where}")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 0, a private POINTGEO_HOME, offline mode, and two torch threads for every test."""
    torch.manual_seed(0)
    monkeypatch.setenv("POINTGEO_HOME", str(tmp_path_factory.mktemp("pointgeo_home")))
    monkeypatch.setenv("POINTGEO_OFFLINE", "1")
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real samples of the official dataset files (:data:`TEST_DATA_SETTING`, by default
    ``../shared/data`` beside the checkout). Absent, the test is skipped with a reason naming the setting, or fails
    under ``CI=true``."""
    folder = samples_folder()
    if not folder.is_dir():
        missing_sample(folder)
    return folder


@pytest.fixture(scope="session")
def shared_sample(shared_data: Path) -> Callable[..., Path]:
    """``shared_sample("modelnet40", "modelnet40_normal_resampled")``: that file or folder of the real samples;
    absent, the test is skipped (fails under ``CI=true``) like a missing :func:`shared_data` folder."""
    def need(*parts: str) -> Path:
        path = shared_data.joinpath(*parts)
        if not path.exists():
            missing_sample(path)
        return path

    return need


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


@pytest.fixture
def modelnet40_txt_root(shared_sample: Callable[..., Path], tmp_path: Path) -> Path:
    """A ModelNet40 txt layout (``modelnet40_normal_resampled``) in ``tmp_path`` over the real sample, the official
    split lists restricted to the shapes the sample holds; returns the root a datamodule takes."""
    src = shared_sample("modelnet40", "modelnet40_normal_resampled")
    raw = tmp_path / "modelnet40_normal_resampled"
    raw.mkdir(parents=True)
    present = set()
    for cls in src.iterdir():
        if cls.is_dir():
            os.symlink(cls, raw / cls.name)
            present |= {f.stem for f in cls.glob("*.txt")}
    os.symlink(src / "modelnet40_shape_names.txt", raw / "modelnet40_shape_names.txt")
    for split in ("train", "test"):
        ids = [i for i in (src / f"modelnet40_{split}.txt").read_text().split() if i in present]
        (raw / f"modelnet40_{split}.txt").write_text("\n".join(ids))
    return tmp_path
