"""The synthetic shapes: deterministic, balanced, normals valid; rotation protocols of the base datamodule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.datamodules.synthetic import SHAPES, generate_shapes
from pointgeo.geometry import rotate


def test_generation_is_deterministic_balanced_and_on_unit_normals() -> None:
    a, b = generate_shapes(80, 128, seed=3), generate_shapes(80, 128, seed=3)
    assert np.array_equal(a.pos, b.pos) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.pos, generate_shapes(80, 128, seed=4).pos)
    assert np.bincount(a.label).tolist() == [10] * len(SHAPES)
    assert np.allclose(np.linalg.norm(a.normal, axis=-1), 1, atol=1e-5)
    assert np.isfinite(a.pos).all()


def small(**kwargs: object) -> SyntheticShapesDataModule:
    defaults = dict(num_train=80, num_test=16, num_points=64, batch_size=8, use_normals=True)
    defaults.update(kwargs)
    return SyntheticShapesDataModule(**defaults)  # type: ignore[arg-type]


def test_batches_follow_the_documented_structure_and_splits_are_disjoint() -> None:
    dm = small()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pos"].shape == (8, 64, 3) and batch["normal"].shape == (8, 64, 3)
    assert batch["label"].dtype == torch.long and batch["rotation"].shape == (8, 3, 3)
    assert len(dm.dataset("train")) + len(dm.dataset("val")) == 80
    assert dm.num_classes == 8 and dm.class_names[0] == "box"


def test_evaluation_rotations_are_fixed_and_training_rotations_vary() -> None:
    dm = small(train_rotation="so3", test_rotation="so3")
    dm.setup("fit")
    dm.setup("test")
    test = dm.dataset("test")
    assert torch.equal(test[3]["pos"], dm.dataset("test")[3]["pos"])
    train = dm.dataset("train")
    assert not torch.equal(train[0]["rotation"], train[0]["rotation"])


def test_positions_and_normals_rotate_together() -> None:
    dm = small(test_rotation="none")
    dm.setup("test")
    plain = dm.dataset("test")[2]
    dm.set_test_rotation("so3")
    turned = dm.dataset("test")[2]
    rot = turned["rotation"].double()
    assert torch.allclose(rotate(plain["pos"].double(), rot).float(), turned["pos"], atol=1e-5)
    assert torch.allclose(rotate(plain["normal"].double(), rot).float(), turned["normal"], atol=1e-5)


def test_z_rotation_keeps_the_up_coordinate() -> None:
    dm = small(test_rotation="none")
    dm.setup("test")
    plain = dm.dataset("test")[0]["pos"]
    dm.set_test_rotation("z")
    assert torch.allclose(dm.dataset("test")[0]["pos"][:, 2], plain[:, 2], atol=1e-6)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="train_rotation"):
        small(train_rotation="xyz")
    with pytest.raises(ValueError, match="val_fraction"):
        small(val_fraction=1.5)
    with pytest.raises(ValueError, match="test_rotation"):
        small().set_test_rotation("sideways")  # type: ignore[arg-type]
