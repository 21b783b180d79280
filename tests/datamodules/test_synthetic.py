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
    train = dm.dataset("train")  # a new rotation each epoch, a function of (seed, epoch, index)
    assert not torch.equal(train[(0, 0)]["rotation"], train[(1, 0)]["rotation"])
    assert torch.equal(train[(1, 0)]["rotation"], dm.dataset("train")[(1, 0)]["rotation"])
    assert torch.equal(train[0]["pos"], train[(0, 0)]["pos"])


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


def test_evaluation_rotations_are_the_same_across_instances_and_loader_workers() -> None:
    first = small(test_rotation="so3", batch_size=16)
    batch = next(iter(first.test_dataloader()))
    again = next(iter(small(test_rotation="so3", batch_size=16).test_dataloader()))
    workers = next(iter(small(test_rotation="so3", batch_size=16, num_workers=2).test_dataloader()))
    for key in ("pos", "normal", "rotation", "label"):
        assert torch.equal(batch[key], again[key]) and torch.equal(batch[key], workers[key])
    other_seed = next(iter(small(test_rotation="so3", batch_size=16, seed=1).test_dataloader()))
    assert not torch.equal(batch["rotation"], other_seed["rotation"])
    val = first.dataset("val")
    assert torch.equal(val[0]["rotation"], val[0]["rotation"])


def test_validation_is_carved_from_train_stratified_seeded_and_disjoint() -> None:
    dm = small(num_train=400, val_fraction=0.2)
    labels = generate_shapes(400, 8, seed=0).label
    train, val = dm._train_val_indices(labels)
    assert np.intersect1d(train, val).size == 0 and np.union1d(train, val).tolist() == list(range(400))
    assert np.bincount(labels[val], minlength=8).tolist() == [10] * 8  # a fifth of 50 per class
    assert np.array_equal(val, small(num_train=400, val_fraction=0.2)._train_val_indices(labels)[1])
    assert not np.array_equal(val, small(num_train=400, val_fraction=0.2, seed=5)._train_val_indices(labels)[1])


def test_training_augmentation_is_off_by_default_and_keeps_normals_unit() -> None:
    plain = small(train_rotation="none")
    plain.setup("fit")
    sample = plain.dataset("train")[0]
    raw = torch.from_numpy(plain._splits["train"].pos[0])
    assert torch.equal(torch.sort(sample["pos"], dim=0).values, torch.sort(raw, dim=0).values)  # a subset, unchanged
    aug = small(train_rotation="none", scale_augment=(0.5, 2.0), jitter=0.01, num_points=64)
    aug.setup("fit")
    a = aug.dataset("train")[0]
    assert not torch.allclose(torch.sort(a["pos"], dim=0).values, torch.sort(raw, dim=0).values, atol=1e-3)
    assert torch.allclose(a["normal"].norm(dim=-1), torch.ones(64), atol=1e-5)
    test = aug.dataset("test")[0]
    assert torch.equal(test["pos"], small(train_rotation="none").dataset("test")[0]["pos"])  # evaluation untouched


def test_shapes_are_upright_about_z() -> None:
    cones = generate_shapes(80, 512, seed=0, noise=0.0)
    pos = cones.pos[cones.label == list(SHAPES).index("cone")]
    apex = pos[np.arange(len(pos)), pos[..., 2].argmax(1)]
    assert np.abs(apex[:, :2]).max() < 0.05  # the highest point of every cone is its apex, on the z axis
    bowls = cones.pos[cones.label == list(SHAPES).index("bowl")]
    assert (bowls[..., 2] <= 1e-6).all()  # bowls lie below their rim plane: they open upwards


def test_degenerate_or_non_finite_clouds_are_rejected() -> None:
    from pointgeo.datamodules.base import normalize_unit_sphere

    pos = np.random.default_rng(0).normal(size=(3, 16, 3))
    pos[1] = 0.25
    with pytest.raises(ValueError, match="sample 1 is degenerate"):
        normalize_unit_sphere(pos, "test split")
    pos[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="sample 1 contains NaN"):
        normalize_unit_sphere(pos)
    assert np.allclose(np.linalg.norm(normalize_unit_sphere(pos[[0, 2]]), axis=-1).max(1), 1)


def test_summary_names_the_settings() -> None:
    dm = small()
    dm.setup("fit")
    text = repr(dm)
    assert "SyntheticShapesDataModule(8 classes" in text and "train=" in text and "about z" in text
