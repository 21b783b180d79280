"""ShapeNet part: the real txt sample, generated txt and HDF5 fixtures, batches with parts, and bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.datamodules import DatasetFileError, DatasetNotFoundError, ShapeNetPartDataModule
from pointgeo.datamodules.shapenet_part import CATEGORY_PARTS, NUM_PARTS
from pointgeo.testing.fake_data import write_shapenet_part_h5, write_shapenet_part_txt

FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
SMALL = dict(download=False, batch_size=2)


def test_category_part_table_is_the_standard_one() -> None:
    assert NUM_PARTS == 50 and CATEGORY_PARTS[0] == [0, 1, 2, 3] and CATEGORY_PARTS[15] == [47, 48, 49]
    assert [p for parts in CATEGORY_PARTS for p in parts] == list(range(50))


def test_real_sample_loads_with_parts_and_categories(shared_sample: Callable[..., Path], tmp_path: Path) -> None:
    src = shared_sample("shapenet_part", FOLDER)
    raw = tmp_path / FOLDER
    raw.mkdir()
    for synset in ("04225987", "04379243"):
        os.symlink(src / synset, raw / synset)
    ids = {s: sorted(p.stem for p in (src / s).glob("*.txt")) for s in ("04225987", "04379243")}
    write_shapenet_part_txt(raw, {"train": [("04225987", ids["04225987"][0]), ("04379243", ids["04379243"][0])],
                                  "val": [("04225987", ids["04225987"][1])],
                                  "test": [("04379243", ids["04379243"][1])]})
    dm = ShapeNetPartDataModule(root=str(tmp_path), num_points=1024, use_normals=True, test_rotation="none", **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.dataset("train")), len(dm.dataset("val")), len(dm.dataset("test"))) == (2, 1, 1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["seg"].shape == (2, 1024) and set(batch["category"].tolist()) == {14, 15}
    table = dm.dataset("test")[0]
    assert table["category"] == 15 and set(table["seg"].tolist()) <= {47, 48, 49}
    assert dm.up_axis == "y" and dm.num_parts == 50 and dm.num_categories == 16


def test_rotation_keeps_part_labels_attached_to_their_points(tmp_path: Path) -> None:
    write_shapenet_part_txt(tmp_path / FOLDER, {"train": [("02691156", "a")], "val": [("02691156", "b")],
                                                "test": [("03001627", "c")]})
    dm = ShapeNetPartDataModule(root=str(tmp_path), num_points=32, test_rotation="none", **SMALL)
    dm.setup("test")
    plain = dm.dataset("test")[0]
    dm.set_test_rotation("so3")
    turned = dm.dataset("test")[0]
    assert torch.equal(plain["seg"], turned["seg"])
    assert torch.allclose(plain["pos"].double() @ turned["rotation"].double().T, turned["pos"].double(), atol=1e-5)


def test_h5_fixture_loads(tmp_path: Path) -> None:
    write_shapenet_part_h5(tmp_path / "hdf5_data", {"train": 16, "val": 4, "test": 8})
    dm = ShapeNetPartDataModule(format="hdf5", root=str(tmp_path), num_points=64, **SMALL)
    test = dm.load_split("test")
    assert test.seg.shape == (8, 64) and test.normal is None and test.category.tolist() == list(range(8))


def test_bad_inputs(tmp_path: Path) -> None:
    folder = write_shapenet_part_txt(tmp_path / FOLDER, {"train": [("02691156", "a")], "val": [("02691156", "b")],
                                                         "test": [("02691156", "c")]})
    dm = ShapeNetPartDataModule(root=str(tmp_path), num_points=16, **SMALL)
    rows = np.loadtxt(folder / "02691156" / "c.txt")
    rows[:, 6] = 48  # Table parts on an Airplane
    np.savetxt(folder / "02691156" / "c.txt", rows, fmt="%.6f")
    with pytest.raises(DatasetFileError, match="outside the category's parts"):
        dm.prepare_data()
    (folder / "train_test_split" / "shuffled_test_file_list.json").write_text(json.dumps(["shape_data/02691156/zz"]))
    with pytest.raises(DatasetFileError, match="zz.txt is missing"):
        dm.prepare_data()
    (folder / "train_test_split" / "shuffled_test_file_list.json").write_text("[not json")
    with pytest.raises(DatasetFileError, match="not valid JSON"):
        dm.prepare_data()
    assert not list((tmp_path / "processed").glob("*test*"))
    with pytest.raises(DatasetNotFoundError, match="shapenet_part_seg_hdf5_data.zip"):
        ShapeNetPartDataModule(format="hdf5", root=str(tmp_path / "none")).prepare_data()
