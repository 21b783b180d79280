"""Shared test set-up: deterministic seeds, an isolated cache, no network, and the real dataset samples."""

from __future__ import annotations

import os
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

    In CI it must be there (a missing folder fails the run); a user's copy without it skips these tests.
    """
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the real dataset samples are missing: expected them in {SHARED_DATA}")
        pytest.skip("the real dataset samples (../shared/data beside the checkout) are not present")
    return SHARED_DATA
