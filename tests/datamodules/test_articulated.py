"""The articulated synthetic set: rigid parts, each with its own seeded motion per sample; labels per part."""

from __future__ import annotations

import numpy as np
import pytest

from pointgeo.datamodules.articulated import (
    CATEGORIES,
    CATEGORY_PARTS,
    NUM_PARTS,
    ArticulatedPartsDataModule,
    generate_articulated,
)


def test_every_part_is_its_rest_pose_moved_by_its_own_rigid_motion() -> None:
    moved = generate_articulated(12, 64, seed=3, noise=0.0)
    rest = generate_articulated(12, 64, seed=3, noise=0.0, motion=False)
    a, r = moved.arrays, rest.arrays
    assert np.array_equal(a.seg, r.seg) and np.array_equal(a.category, r.category)
    for s in range(12):
        parts = CATEGORY_PARTS[a.category[s]]
        for j, part in enumerate(parts):
            inside = a.seg[s] == part
            assert inside.any()
            c, rot, t = moved.centre[s, j], moved.rotation[s, j], moved.translation[s, j]
            expected = (r.pos[s, inside].astype(np.float64) - c) @ rot.T + c + t
            assert np.allclose(a.pos[s, inside], expected, rtol=0, atol=1e-5)  # float32 storage
            assert np.allclose(rot @ rot.T, np.eye(3), rtol=0, atol=1e-12) and np.linalg.det(rot) > 0
            assert np.allclose(a.normal[s, inside], r.normal[s, inside] @ rot.T, rtol=0, atol=1e-5)
        rots = moved.rotation[s, : len(parts)]
        assert not np.allclose(rots[0], rots[1])  # the parts move independently
    assert np.allclose(np.linalg.norm(a.normal, axis=-1), 1, rtol=0, atol=1e-5)


def test_the_set_is_balanced_deterministic_by_seed_and_labelled_per_part() -> None:
    one, two = generate_articulated(9, 50, seed=1).arrays, generate_articulated(9, 50, seed=1).arrays
    assert np.array_equal(one.pos, two.pos) and np.array_equal(one.seg, two.seg)
    assert not np.allclose(one.pos, generate_articulated(9, 50, seed=2).arrays.pos)
    assert np.bincount(one.category).tolist() == [3, 3, 3] and np.array_equal(one.label, one.category)
    for s in range(9):
        assert set(one.seg[s]) == set(CATEGORY_PARTS[one.category[s]])  # every part present, no other
    assert NUM_PARTS == sum(len(p) for p in CATEGORIES.values()) == 10


def test_the_datamodule_gives_part_segmentation_batches() -> None:
    dm = ArticulatedPartsDataModule(num_train=12, num_test=6, num_points=48, batch_size=4, use_normals=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pos"].shape == (4, 48, 3) and batch["normal"].shape == (4, 48, 3)
    assert batch["seg"].shape == (4, 48) and batch["category"].shape == (4,)
    assert dm.num_parts == 10 and dm.num_categories == 3 and dm.class_names == ["lamp", "scissors", "figure"]
    for b in range(4):
        assert set(batch["seg"][b].tolist()) <= set(CATEGORY_PARTS[int(batch["category"][b])])
    with pytest.raises(ValueError, match="num_points must be >= 4"):
        ArticulatedPartsDataModule(num_points=3)
    with pytest.raises(ValueError, match="num_train must be >= 3"):
        ArticulatedPartsDataModule(num_train=2)
