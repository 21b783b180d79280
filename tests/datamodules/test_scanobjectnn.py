"""ScanObjectNN on fixtures with the official keys: variants, background mask, estimated normals, missing files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pointgeo.datamodules import DatasetFileError, DatasetNotFoundError, ScanObjectNNDataModule
from pointgeo.geometry import estimate_normals, rotate
from pointgeo.testing.fake_data import write_scanobjectnn_h5

SMALL = dict(num_points=64, batch_size=4, val_fraction=0.0)


def fixture(root: Path, folder: str, suffix: str, **kwargs: object) -> None:
    for split, count in (("training", 30), ("test", 15)):
        write_scanobjectnn_h5(root / "h5_files" / folder / f"{split}_{suffix}", count, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("variant", "folder", "suffix"), [
    ("OBJ_ONLY", "main_split_nobg", "objectdataset.h5"),
    ("OBJ_BG", "main_split", "objectdataset.h5"),
    ("PB_T50_RS", "main_split", "objectdataset_augmentedrot_scale75.h5"),
])
def test_each_variant_reads_its_official_file(tmp_path: Path, variant: str, folder: str, suffix: str) -> None:
    fixture(tmp_path, folder, suffix)
    dm = ScanObjectNNDataModule(variant=variant, root=str(tmp_path), return_mask=True, **SMALL)  # type: ignore[arg-type]
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["pos"].shape == (4, 64, 3) and batch["mask"].dtype == torch.bool
    assert dm.num_classes == 15 and dm.class_names[-1] == "toilet"
    assert 0 < batch["mask"].float().mean() < 1  # object and background points both survive the sampling


def test_estimated_normals_rotate_with_the_points(tmp_path: Path) -> None:
    fixture(tmp_path, "main_split", "objectdataset_augmentedrot_scale75.h5")
    dm = ScanObjectNNDataModule(root=str(tmp_path), use_normals=True, normal_k=8, test_rotation="so3", **SMALL)
    dm.setup("test")
    sample = dm.dataset("test")[0]
    estimated = estimate_normals(sample["pos"][None].double(), 8)[0]
    assert torch.allclose(sample["normal"].double(), estimated.float().double(), atol=1e-3)
    plain = ScanObjectNNDataModule(root=str(tmp_path), use_normals=True, normal_k=8, test_rotation="none", **SMALL)
    plain.setup("test")
    unrotated = plain.dataset("test")[0]
    assert torch.allclose(rotate(unrotated["normal"].double(), sample["rotation"].double()).float(),
                          sample["normal"], atol=1e-5)


def test_missing_files_name_the_form_and_the_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"hkust-vgd\.github\.io/scanobjectnn.*h5_files"):
        ScanObjectNNDataModule(root=str(tmp_path)).prepare_data()


def test_a_file_without_mask_is_refused_only_when_the_mask_is_asked_for(tmp_path: Path) -> None:
    fixture(tmp_path, "main_split", "objectdataset.h5", with_mask=False)
    ScanObjectNNDataModule(variant="OBJ_BG", root=str(tmp_path), **SMALL).prepare_data()
    with pytest.raises(DatasetFileError, match="no mask dataset"):
        ScanObjectNNDataModule(variant="OBJ_BG", root=str(tmp_path), return_mask=True, **SMALL).prepare_data()
