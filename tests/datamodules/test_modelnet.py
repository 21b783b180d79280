"""ModelNet40/10 readers on the real samples and on generated fixtures of every official format; bad input."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
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


def test_real_normal_resampled_sample_loads(modelnet40_txt_root: Path) -> None:
    dm = ModelNet40DataModule(root=str(modelnet40_txt_root), num_points=256, use_normals=True,
                              sampling="first", test_rotation="none", **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.dataset("train")) + len(dm.dataset("test")) == 72
    sample = dm.dataset("test")[0]
    assert sample["pos"].shape == (256, 3) and torch.allclose(sample["normal"].norm(dim=-1), torch.ones(256), atol=1e-4)
    assert dm.up_axis == "y" and dm.class_names == MODELNET40_CLASSES
    assert sample["pos"].norm(dim=-1).max() <= 1 + 1e-5  # normalised into the unit sphere
    assert list((modelnet40_txt_root / "processed").glob("*.npz"))
    table = dm.load_split("train")
    normals = table.normal[table.label == MODELNET40_CLASSES.index("table")]
    along = (np.abs(normals) > 0.95).mean(axis=(0, 1))
    assert along.argmax() == 1  # table tops face +-y: the txt release is y-up, as declared


def test_real_modelnet10_lists_select_their_classes(modelnet40_txt_root: Path,
                                                    shared_sample: Callable[..., Path]) -> None:
    root = modelnet40_txt_root
    raw = root / "modelnet40_normal_resampled"
    src = shared_sample("modelnet40", "modelnet40_normal_resampled")
    os.symlink(src / "modelnet10_shape_names.txt", raw / "modelnet10_shape_names.txt")
    for split in ("train", "test"):
        ids = [i for i in (src / f"modelnet10_{split}.txt").read_text().split() if (raw / i.rsplit("_", 1)[0]
                                                                                         / f"{i}.txt").exists()]
        (raw / f"modelnet10_{split}.txt").write_text("\n".join(ids))
    dm = ModelNet10DataModule(root=str(root), num_points=64, **SMALL)
    train, test = dm.load_split("train"), dm.load_split("test")
    assert len(train.label) + len(test.label) == 20 and set(train.label.tolist()) | set(test.label.tolist()) == set(
        range(10))


def test_real_off_meshes_sample_into_modelnet10(shared_sample: Callable[..., Path], tmp_path: Path) -> None:
    raw = tmp_path / "ModelNet10"
    (raw / "bathtub").mkdir(parents=True)
    os.symlink(shared_sample("modelnet10", "ModelNet10", "bathtub", "train"), raw / "bathtub" / "train")
    write_off(raw / "chair" / "test" / "chair_0001.off", *box_mesh(), glued_header=True)
    dm = ModelNet10DataModule(format="mesh", root=str(tmp_path), num_points=128, use_normals=True, **SMALL)
    dm.prepare_data()
    train = dm.load_split("train")
    assert train.pos.shape == (5, 128, 3) and (train.label == MODELNET10_CLASSES.index("bathtub")).all()
    assert np.allclose(np.linalg.norm(train.normal, axis=-1), 1, atol=1e-5)
    assert dm.up_axis == "z"
    lowest = np.ptp(train.pos, axis=1).argmin(axis=1)
    assert (lowest == 2).sum() >= 4  # bathtubs are lowest along z: the original meshes are z-up, as declared
    again = ModelNet10DataModule(format="mesh", root=str(tmp_path / "copy"), num_points=128, **SMALL)
    (tmp_path / "copy").mkdir()
    os.symlink(raw, tmp_path / "copy" / "ModelNet10")
    assert np.array_equal(again.load_split("train").pos, train.pos)  # seeded sampling


def test_h5_fixture_loads_for_both_variants(tmp_path: Path) -> None:
    write_modelnet_h5(tmp_path / "modelnet40_ply_hdf5_2048", MODELNET40_CLASSES, {"train": 80, "test": 40}, points=64)
    dm40 = ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, use_normals=True, **SMALL)
    dm40.setup("test")
    assert len(dm40.dataset("test")) == 40 and dm40.num_classes == 40
    dm10 = ModelNet10DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL)
    test10 = dm10.load_split("test")
    assert set(test10.label.tolist()) <= set(range(10)) and len(test10.label) == 10  # 1 of each of 10 classes
    cached = sorted((tmp_path / "processed").glob("*.npz"))
    stamps = [f.stat().st_mtime_ns for f in cached]
    ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL).prepare_data()
    assert [f.stat().st_mtime_ns for f in cached] == stamps  # a cache hit rewrites nothing
    ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=16, **SMALL).prepare_data()
    assert len(list((tmp_path / "processed").glob("*.npz"))) == len(cached) + 2  # other settings, other files


def test_release_archive_is_fetched_extracted_and_preprocessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pointgeo.datamodules import modelnet

    src = write_modelnet_h5(tmp_path / "src" / "modelnet40_ply_hdf5_2048", MODELNET40_CLASSES,
                            {"train": 40, "test": 40}, points=64)
    archive = tmp_path / "modelnet40_ply_hdf5_2048.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"modelnet40_ply_hdf5_2048/{f.name}")
        zf.writestr("__MACOSX/._junk", "x")
    monkeypatch.setitem(modelnet.RELEASES, (40, "hdf5"),
                        {"url": archive.as_uri(), "folder": "modelnet40_ply_hdf5_2048", "sha256": None})
    root = tmp_path / "root"
    dm = ModelNet40DataModule(format="hdf5", root=str(root), num_points=32, batch_size=8, val_fraction=0.0)
    dm.prepare_data()
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["pos"].shape == (8, 32, 3)
    assert sorted(p.name for p in root.iterdir()) == ["modelnet40_ply_hdf5_2048", "processed"]

    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("something_else/shape_names.txt", "airplane\n")
    monkeypatch.setitem(modelnet.RELEASES, (40, "hdf5"),
                        {"url": wrong.as_uri(), "folder": "modelnet40_ply_hdf5_2048", "sha256": None})
    other = tmp_path / "other"
    with pytest.raises(DatasetFileError, match="has no top folder modelnet40_ply_hdf5_2048"):
        ModelNet40DataModule(format="hdf5", root=str(other), num_points=32).prepare_data()
    assert not (other / "modelnet40_ply_hdf5_2048").exists() and wrong.exists()


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
    good = (f / "airplane" / "airplane_0003.txt").read_text()
    (f / "airplane" / "airplane_0003.txt").write_text(good[: len(good) // 2].rsplit(",", 2)[0])
    with pytest.raises(DatasetFileError, match="airplane_0003.txt is corrupt or truncated"):
        dm.prepare_data()
    f, dm = fresh()
    (f / "airplane" / "airplane_0003.txt").write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    with pytest.raises(DatasetFileError, match="cannot read .*airplane_0003.txt"):
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
    with h5py.File(shard, "w") as fh:
        fh["data"] = np.full((2, 64, 3), np.nan, dtype=np.float32)
        fh["label"] = np.zeros((2, 1), dtype=np.uint8)
    with pytest.raises(DatasetFileError, match="ply_data_test0.h5 contains NaN"):
        ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL).load_split("test")
    with h5py.File(shard, "w") as fh:
        fh["data"] = np.ones((2, 64, 3), dtype=np.float32)  # every point equal
        fh["label"] = np.zeros((2, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="modelnet40 test split: sample 0 is degenerate"):
        ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=32, **SMALL).setup("test")
    shard.unlink()
    with pytest.raises(DatasetFileError, match=r"test_files.txt names ply_data_test0.h5, but .* is missing"):
        ModelNet40DataModule(format="hdf5", root=str(tmp_path), num_points=64, **SMALL).load_split("test")
    (tmp_path / "e.off").write_text("")
    with pytest.raises(DatasetFileError, match="e.off is empty"):
        read_off(tmp_path / "e.off")
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


def test_mixed_polygons_are_fan_triangulated(tmp_path: Path) -> None:
    path = tmp_path / "mixed.off"
    path.write_text("OFF\n6 3 0\n" + "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n1 0 1\n" + "3 0 1 4\n4 0 1 2 3\n5 1 2 3 4 5\n")
    _, triangles = read_off(path)
    assert sorted(map(tuple, triangles.tolist())) == sorted(
        [(0, 1, 4), (0, 1, 2), (0, 2, 3), (1, 2, 3), (1, 3, 4), (1, 4, 5)])
    path.write_text("OFF\n6 3 0\n" + "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n1 0 1\n" + "3 0 1 4\n4 0 1 2 3\n5 1 2\n")
    with pytest.raises(DatasetFileError, match="mixed.off is corrupt or truncated"):
        read_off(path)


def test_missing_dataset_offline_names_url_and_folder(tmp_path: Path) -> None:
    dm = ModelNet40DataModule(format="hdf5", root=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError, match=r"modelnet40_ply_hdf5_2048\.zip and extract it into"):
        dm.prepare_data()
    assert not (tmp_path / "modelnet40_ply_hdf5_2048").exists()
