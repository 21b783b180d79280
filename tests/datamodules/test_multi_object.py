"""Multi-object scenes from ModelNet shapes: every object posed by its own rigid motion, labelled per class and
instance, deterministic, resumable; on fixtures written here and on the real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.datamodules import MultiObjectScenesDataModule
from pointgeo.datamodules.base import CloudArrays, ResumableLoader, normalize_unit_sphere
from pointgeo.datamodules.modelnet import MODELNET40_CLASSES
from pointgeo.datamodules.multi_object import compose_scenes, object_counts
from pointgeo.geometry import partition_of
from pointgeo.testing.fake_data import write_modelnet_txt


def shapes(count: int = 7, points: int = 40, seed: int = 0) -> CloudArrays:
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(count, points, 3)) * np.array([1.0, 0.5, 0.3]) + rng.normal(size=(count, 1, 3))
    normal = rng.normal(size=pos.shape)
    return CloudArrays(pos, np.arange(count) * 3 % 40, normal / np.linalg.norm(normal, axis=-1, keepdims=True))


def test_every_object_is_its_source_shape_moved_by_its_own_rigid_motion() -> None:
    source = shapes()
    scenes = compose_scenes(source, 5, 100, 3, seed=4)
    a, counts = scenes.arrays, object_counts(100, 3)
    unit = normalize_unit_sphere(source.pos)
    assert counts == [34, 33, 33] and a.pos.shape == (5, 100, 3) and a.instance.shape == (5, 100)
    for s in range(5):
        assert len(set(scenes.objects[s].tolist())) == 3  # distinct shapes when the split has enough
        for j, c in enumerate(counts):
            inside = a.instance[s] == j
            assert inside.sum() == c
            rot, t = scenes.rotation[s, j], scenes.translation[s, j]
            assert np.allclose(rot @ rot.T, np.eye(3), rtol=0, atol=1e-12) and np.linalg.det(rot) > 0
            back = (a.pos[s, inside].astype(np.float64) - t) @ rot  # undo x R^T + t
            rest = unit[scenes.objects[s, j], :c]
            gaps = np.linalg.norm(back[:, None] - rest[None], axis=-1)
            assert gaps.min(1).max() <= 1e-5 and gaps.min(0).max() <= 1e-5  # the same points, shuffled
            match = gaps.argmin(1)
            assert np.allclose(a.normal[s, inside], source.normal[scenes.objects[s, j], match] @ rot.T, rtol=0,
                               atol=1e-5)
            assert np.all(a.seg[s, inside] == source.label[scenes.objects[s, j]])  # the object's class
        assert not np.allclose(scenes.rotation[s, 0], scenes.rotation[s, 1])  # objects turn independently
    assert np.array_equal(a.category, np.zeros(5)) and np.array_equal(a.label, np.zeros(5))


def test_objects_never_overlap_and_points_are_interleaved() -> None:
    scenes = compose_scenes(shapes(), 20, 60, 4, seed=1, gap=0.25)
    t, a = scenes.translation, scenes.arrays
    centres = np.linalg.norm(t[:, :, None] - t[:, None], axis=-1) + 3 * np.eye(4)
    assert centres.min() >= 2  # unit bounding spheres are disjoint (touching at most)
    for s in range(20):
        for j in range(4):
            assert np.linalg.norm(a.pos[s, a.instance[s] == j] - t[s, j], axis=-1).max() <= 1 + 1e-5
        assert len(set(a.instance[s, :10].tolist())) > 1  # shuffled, not object after object
    with pytest.raises(ValueError, match="gap must be >= 0"):
        compose_scenes(shapes(), 2, 60, 4, seed=1, gap=-0.1)


def test_scenes_are_deterministic_by_seed_and_label_instances_on_request() -> None:
    one, two = compose_scenes(shapes(), 4, 50, 2, seed=3), compose_scenes(shapes(), 4, 50, 2, seed=3)
    assert np.array_equal(one.arrays.pos, two.arrays.pos) and np.array_equal(one.arrays.seg, two.arrays.seg)
    assert not np.allclose(one.arrays.pos, compose_scenes(shapes(), 4, 50, 2, seed=5).arrays.pos)
    inst = compose_scenes(shapes(), 4, 50, 2, seed=3, seg_labels="instance").arrays
    assert np.array_equal(inst.seg, inst.instance) and np.array_equal(inst.pos, one.arrays.pos)
    few = compose_scenes(shapes(count=2), 3, 30, 3, seed=0)  # fewer shapes than objects: drawn with repeats
    assert few.objects.max() <= 1 and few.arrays.pos.shape == (3, 30, 3)
    for bad, match in ((dict(seg_labels="part"), "seg_labels"), (dict(num_points=2), "num_points must be >= "),
                       (dict(num_scenes=0), "num_scenes must be >= 1")):
        args = dict(num_scenes=2, num_points=30, objects_per_scene=3, seed=0) | bad
        with pytest.raises(ValueError, match=match):
            compose_scenes(shapes(), args.pop("num_scenes"), args.pop("num_points"), args.pop("objects_per_scene"),
                           **args)
    with pytest.raises(ValueError, match="scenes need at least one shape of 20 points"):
        compose_scenes(shapes(points=10), 2, 60, 3, seed=0)


def fixture_root(tmp: Path) -> Path:
    write_modelnet_txt(tmp / "modelnet40_normal_resampled", MODELNET40_CLASSES, {"train": 10, "test": 4}, points=80)
    return tmp


def test_datamodule_batches_carry_the_partition_and_resume_mid_epoch(tmp_path: Path) -> None:
    settings = dict(root=str(fixture_root(tmp_path)), download=False, sampling="first", objects_per_scene=3,
                    num_train=14, num_test=4, num_points=90, batch_size=4, use_normals=True, val_fraction=0.0)
    dm = MultiObjectScenesDataModule(**settings)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader)
    batches = iter(loader)
    first = next(batches)
    assert first["pos"].shape == (4, 90, 3) and first["normal"].shape == (4, 90, 3)
    assert first["seg"].shape == first["instance"].shape == (4, 90) and first["category"].tolist() == [0] * 4
    assert torch.equal(partition_of(first), first["instance"])  # the objects, not the classes, are the pieces
    assert first["pos"].norm(dim=-1).max() <= 1 + 1e-5  # every scene normalised into the unit sphere
    assert dm.num_parts == 40 and dm.num_categories == 1 and dm.class_names == ["scene"] and dm.up_axis == "y"
    assert torch.allclose(first["normal"].norm(dim=-1), torch.ones(4, 90), rtol=0, atol=1e-5)
    state = loader.state_dict()
    expected = next(batches)
    again = MultiObjectScenesDataModule(**settings)
    again.setup("fit")
    resumed = again.train_dataloader()
    resumed.load_state_dict(state)
    got = next(iter(resumed))
    assert torch.equal(got["pos"], expected["pos"]) and torch.equal(got["instance"], expected["instance"])
    test = next(iter(dm.test_dataloader()))
    assert torch.equal(test["pos"], next(iter(again.test_dataloader()))["pos"])  # test scenes fixed by the seed
    assert MultiObjectScenesDataModule(**settings | dict(seg_labels="instance")).num_parts == 3
    for bad, match in ((dict(variant=20), "variant must be 40 or 10"), (dict(num_points=2), "num_points must be"),
                       (dict(num_test=0), "num_train and num_test")):
        with pytest.raises(ValueError, match=match):
            MultiObjectScenesDataModule(**settings | bad)
    with pytest.raises(ValueError, match="no partition"):
        partition_of({"pos": first["pos"]})


def test_real_modelnet_sample_composes_scenes(modelnet40_txt_root: Path) -> None:
    dm = MultiObjectScenesDataModule(root=str(modelnet40_txt_root), download=False, sampling="first", num_train=8, num_test=4,
                                     num_points=300, use_normals=True, val_fraction=0.0, batch_size=4)
    dm.prepare_data()
    scenes = dm.scenes("test")
    real = dm.source.load_split("test")
    assert scenes.arrays.pos.shape == (4, 300, 3) and set(scenes.objects.ravel()) <= set(range(len(real.label)))
    for s in range(4):
        for j in range(3):
            inside = scenes.arrays.instance[s] == j
            assert set(scenes.arrays.seg[s, inside]) == {int(real.label[scenes.objects[s, j]])}
    batch = next(iter(dm.test_dataloader()))
    assert batch["pos"].shape == (4, 300, 3) and set(batch["instance"].unique().tolist()) == {0, 1, 2}
    assert torch.allclose(batch["normal"].norm(dim=-1), torch.ones(4, 300), rtol=0, atol=1e-4)
