"""DFAUST in APEN's npz layout: fixtures the tests write load as part-segmentation batches; missing files and wrong
labels get one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pointgeo.datamodules import DatasetFileError, DFAUSTDataModule
from pointgeo.datamodules.release import DatasetNotFoundError
from pointgeo.testing.fake_data import write_apen_npz


def test_fixtures_load_as_one_category_of_parts(tmp_path: Path) -> None:
    write_apen_npz(tmp_path / "train_random_pose.npz", 12, points=40, parts=5, classes=3)
    write_apen_npz(tmp_path / "test_random_pose.npz", 4, points=40, parts=5, classes=3, seed=1)
    dm = DFAUSTDataModule(root=str(tmp_path), num_parts=5, num_points=32, batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pos"].shape == (4, 32, 3) and batch["normal"].shape == (4, 32, 3)
    assert batch["seg"].shape == (4, 32) and int(batch["seg"].max()) < 5 and batch["category"].tolist() == [0] * 4
    assert dm.category_parts == [[0, 1, 2, 3, 4]] and dm.num_parts == 5 and dm.num_classes == 1
    dm.setup("test")
    test = next(iter(dm.test_dataloader()))
    raw = np.load(tmp_path / "test_random_pose.npz")["arr_0"]
    assert test["seg"][0].tolist() == raw[0, :32, 6].astype(int).tolist()  # the first num_points, in file order


def test_missing_files_and_bad_labels_get_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="licence from MPI"):
        DFAUSTDataModule(root=None).setup("fit")
    with pytest.raises(DatasetNotFoundError, match="missing .*train_class.npz"):
        DFAUSTDataModule(root=str(tmp_path), pattern="{split}_class.npz").setup("fit")
    write_apen_npz(tmp_path / "train_random_pose.npz", 4, points=16, parts=6)
    with pytest.raises(DatasetFileError, match="part labels up to 5, but num_parts is 3"):
        DFAUSTDataModule(root=str(tmp_path), num_parts=3, num_points=16).setup("fit")
    with pytest.raises(ValueError, match="pattern must contain"):
        DFAUSTDataModule(root=str(tmp_path), pattern="train.npz")
