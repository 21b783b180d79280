"""ModelNet40/10 readers on the real samples and on generated fixtures of every official format; bad input."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointgeo.datamodules import (
    DatasetFileError,
    DatasetNotFoundError,
    ModelNet10DataModule,
    ModelNet40DataModule,
)
from pointgeo.datamodules.modelnet import MODELNET10_CLASSES, MODELNET40_CLASSES
from pointgeo.datamodules.readers import read_off
from pointgeo.testing.fake_data import box_mesh, write_modelnet_h5, write_modelnet_txt, write_off

SMALL = dict(download=False, batch_size=4, val_fraction=0.0)


def real_txt_root(shared: Path, tmp: Path) -> Path:
    """A ModelNet40 txt layout over the real sample, with the official split lists restricted to its shapes."""
    src = shared / "modelnet40" / "modelnet40_normal_resampled"
    raw = tmp / "modelnet40_normal_resampled"
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
    return tmp


def test_real_normal_resampled_sample_loads(shared_data: Path, tmp_path: Path) -> None:
    dm = ModelNet40DataModule(root=str(real_txt_root(shared_data, tmp_path)), num_points=256, use_normals=True,
                              sampling="first", test_rotation="none", **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.dataset("train")) + len(dm.dataset("test")) == 72
    sample = dm.dataset("test")[0]
    assert sample["pos"].shape == (256, 3) and torch.allclose(sample["normal"].norm(dim=-1), torch.ones(256), atol=1e-4)
    assert dm.up_axis == "y" and dm.class_names == MODELNET40_CLASSES
    assert sample["pos"].norm(dim=-1).max() <= 1 + 1e-5  # normalised into the unit sphere
    assert list((tmp_path / "processed").glob("*.npz"))


def test_real_off_meshes_sample_into_modelnet10(shared_data: Path, tmp_path: Path) -> None:
    raw = tmp_path / "ModelNet10"
    (raw / "bathtub").mkdir(parents=True)
    os.symlink(shared_data / "modelnet10" / "ModelNet10" / "bathtub" / "train", raw / "bathtub" / "train")
    write_off(raw / "chair" / "test" / "chair_0001.off", *box_mesh(), glued_header=True)
    dm = ModelNet10DataModule(format="mesh", root=str(tmp_path), num_points=128, use_normals=True, **SMALL)
    dm.prepare_data()
    train = dm.load_split("train")
    assert train.pos.shape == (5, 128, 3) and (train.label == MODELNET10_CLASSES.index("bathtub")).all()
    assert np.allclose(np.linalg.norm(train.normal, axis=-1), 1, atol=1e-5)
    assert dm.up_axis == "z"


def test_h5_fixture_loads_for_both_variants(tmp_path: Path) -> None:
    write_modelnet_h5(tmp_path / "modelnet40_ply_hdf5_2048", MODELNET40_CLASSES, {"train": 80, "test": 40}, points=64)
    dm40 = ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, use_normals=True, **SMALL)
    dm40.setup("test")
    assert len(dm40.dataset("test")) == 40 and dm40.num_classes == 40
    dm10 = ModelNet10DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL)
    test10 = dm10.load_split("test")
    assert set(test10.label.tolist()) <= set(range(10)) and len(test10.label) == 10  # 1 of each of 10 classes


def test_txt_fixture_and_its_bad_inputs(tmp_path: Path) -> None:
    write_modelnet_txt(tmp_path / "modelnet40_normal_resampled", MODELNET40_CLASSES, {"train": 4, "test": 2})
    dm = ModelNet40DataModule(root=str(tmp_path), num_points=16, sampling="fps", **SMALL)
    dm.prepare_data()
    assert dm.load_split("test").pos.shape == (2, 16, 3)

    bad = tmp_path / "bad"
    def fresh() -> tuple[Path, ModelNet40DataModule]:
        f = write_modelnet_txt(bad / "modelnet40_normal_resampled", MODELNET40_CLASSES, {"train": 2, "test": 1},
                               points=20)
        return f, ModelNet40DataModule(root=str(bad), num_points=16, **SMALL)

    f, dm = fresh()
    (f / "airplane" / "airplane_0003.txt").write_text("")
    with pytest.raises(DatasetFileError, match="airplane_0003.txt is empty"):
        dm.prepare_data()
    f, dm = fresh()
    (f / "airplane" / "airplane_0003.txt").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetFileError, match="3 columns per row; expected 6"):
        dm.prepare_data()
    f, dm = fresh()
    (f / "airplane" / "airplane_0003.txt").write_text("1,2,3,0,0,1\n1,2,nan,0,0,1\n")
    with pytest.raises(DatasetFileError, match="NaN"):
        dm.prepare_data()
    f, dm = fresh()
    (f / "modelnet40_test.txt").write_text("vaze_0001\n")
    with pytest.raises(DatasetFileError, match="unknown class 'vaze'"):
        dm.prepare_data()
    f, dm = fresh()
    (f / "modelnet40_test.txt").write_text("cone_0099\n")
    with pytest.raises(DatasetFileError, match="cone_0099.txt is missing"):
        dm.prepare_data()
    f, dm = fresh()
    (f / "modelnet40_shape_names.txt").write_text("cone\ncup\n")
    with pytest.raises(DatasetFileError, match="official class names"):
        dm.prepare_data()
    assert not list((bad / "processed").glob("*test*")), "a failed preprocessing left a cache file"


def test_corrupt_h5_and_off_files(tmp_path: Path) -> None:
    folder = write_modelnet_h5(tmp_path / "modelnet40_ply_hdf5_2048", MODELNET40_CLASSES, {"train": 8, "test": 8},
                               points=64)
    shard = folder / "ply_data_test0.h5"
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(DatasetFileError, match="not a readable HDF5 file"):
        ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL).load_split("test")
    with h5py.File(shard, "w") as fh:
        fh["points"] = np.zeros((2, 4, 3))
    with pytest.raises(DatasetFileError, match="no data or label dataset"):
        ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL).load_split("test")
    off = write_off(tmp_path / "m.off", *box_mesh())
    off.write_text(off.read_text()[:60])
    with pytest.raises(DatasetFileError, match="corrupt or truncated"):
        read_off(off)
    (tmp_path / "n.off").write_text("PLY\n")
    with pytest.raises(DatasetFileError, match="not an OFF file"):
        read_off(tmp_path / "n.off")


def test_glued_off_header_is_read(tmp_path: Path) -> None:
    v, f = box_mesh()
    vertices, triangles = read_off(write_off(tmp_path / "g.off", v, f, glued_header=True))
    assert vertices.shape == (8, 3) and triangles.shape == (12, 3)


def test_missing_dataset_offline_names_url_and_folder(tmp_path: Path) -> None:
    dm = ModelNet40DataModule(format="hdf5", root=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError, match=r"modelnet40_ply_hdf5_2048\.zip and extract it into"):
        dm.prepare_data()
    assert not (tmp_path / "modelnet40_ply_hdf5_2048").exists()
