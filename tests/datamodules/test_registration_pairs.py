"""Registration pairs cut from real geometry: on files written here (a fragment in PREDATOR's pickle format, a demo
pair, ModelNet txt shapes) and on the shared 3DMatch and ModelNet40 samples. Keys and batching as the 3DMatch
datamodule's, poses consistent with the motions, the designed and measured overlap, determinism and resuming,
the rotation protocols, and the errors for pairs that cannot be made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.datamodules import DatasetFileError, RegistrationPairsDataModule
from pointgeo.datamodules.registration_pairs import source_overlap
from pointgeo.datamodules.threedmatch import roitr_euler_rotation
from pointgeo.geometry import invert_rigid, knn, rigid_matrix, transform_points
from pointgeo.testing.fake_data import write_3dmatch_fragment, write_modelnet_txt

KEYS = {"src_pos", "tgt_pos", "transform", "src_motion", "tgt_motion", "overlap", "scene", "src_id", "tgt_id",
        "index"}


def room(seed: int = 0, n: int = 1500) -> np.ndarray:
    """Points on a floor, two walls and a box (metres, ~1.5 m across): enough structure for crops and FPFH."""
    rng = np.random.default_rng(seed)
    u, v = rng.random((2, n))
    floor = np.stack([1.5 * u, 1.5 * v, 0 * u], 1)
    wall_a = np.stack([1.5 * u, 0 * u, v], 1)
    wall_b = np.stack([0 * u, 1.5 * u, v], 1)
    box = np.stack([0.6 + 0.3 * u, 0.6 + 0.3 * v, 0.4 * rng.random(n)], 1)
    return np.concatenate([floor, wall_a, wall_b, box])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3DMatch-like tree (one fragment, a demo pair whose target is the source under a known pose) and a
    ModelNet txt tree with 2 training and 1 test shape."""
    root = tmp_path_factory.mktemp("pairs")
    tdm = root / "3dmatch"
    write_3dmatch_fragment(tdm / "assets" / "cloud_bin_0.pth", room(0))
    demo = tdm / "demo"
    demo.mkdir(parents=True)
    pose = rigid_matrix(torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64),
                        torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)).numpy()
    source = room(1)
    np.save(demo / "src.npy", source)
    np.save(demo / "ref.npy", transform_points(torch.from_numpy(room(2)), torch.from_numpy(pose)).numpy())
    np.save(demo / "gt.npy", pose)
    modelnet = write_modelnet_txt(root / "modelnet", ["chair", "table"], {"train": 2, "test": 1}, points=2000)
    return {"threedmatch": tdm, "modelnet": modelnet, "pose": pose}


def module(written: dict, **kwargs) -> RegistrationPairsDataModule:
    options = dict(fragments=["assets/cloud_bin_0.pth"], demo_pair="demo", voxel_size=0.05, num_points=1000,
                   train_pairs_per_item=3, val_pairs_per_item=2, test_pairs_per_item=2, augment_noise=0.0)
    options.update(kwargs)
    return RegistrationPairsDataModule(str(written["threedmatch"]), str(written["modelnet"]), **options)


def test_pairs_keys_poses_and_designed_overlap(written: dict) -> None:
    dm = module(written, voxel_size=None, num_points=None, overlap_radius=1e-4, train_rotation="none", demo_pair=None)
    train = dm.dataset("train")
    assert dm.scenes["train"] == ["3dmatch:assets/cloud_bin_0.pth", "modelnet40:chair_0001", "modelnet40:table_0002"]
    assert len(train) == 9 and len(dm.dataset("val")) == 6
    base = torch.from_numpy(room(0))
    for index in (0, 1, 2):
        pair = train[(0, index)]
        assert set(pair.keys()) == KEYS
        assert pair.src_pos.dtype == torch.float32 and pair.transform.dtype == torch.float64
        assert pair.scene.tolist() == [0] and pair.index.tolist() == [index]
        assert (pair.src_id.tolist(), pair.tgt_id.tolist()) == ([2 * index], [2 * index + 1])
        # crops of one cloud: transform = M_tgt · M_src⁻¹, and each cloud is a subset of the fragment moved by its
        # own motion
        expected = pair.tgt_motion[0] @ invert_rigid(pair.src_motion[0])
        assert torch.allclose(pair.transform[0], expected, rtol=0, atol=1e-12)
        for key, motion in (("src_pos", pair.src_motion[0]), ("tgt_pos", pair.tgt_motion[0])):
            back = transform_points(pair[key].double(), invert_rigid(motion))
            _, sq = knn(back.float()[None], base.float()[None], 1)
            assert sq.max().sqrt() < 1e-5
        assert not torch.allclose(pair.src_motion, pair.tgt_motion, rtol=0, atol=1e-3)
        # no resampling: the shared slab is exactly the designed fraction o of the source crop, o in [0.3, 0.8]
        assert 0.3 - 2e-3 <= float(pair.overlap[0]) <= 0.8 + 2e-3
        recomputed = source_overlap(pair.src_pos, pair.tgt_pos, pair.transform[0], 1e-4)
        assert abs(recomputed - float(pair.overlap[0])) < 2e-3
    resampled = module(written)
    test = resampled.dataset("test")
    assert resampled.scenes["test"] == ["3dmatch:demo", "modelnet40:chair_0003"] and len(test) == 4
    demo = test[0]  # the demo pair: transform = M_tgt · gt · M_src⁻¹
    gt = torch.from_numpy(written["pose"])
    expected = demo.tgt_motion[0] @ gt @ invert_rigid(demo.src_motion[0])
    assert torch.allclose(demo.transform[0], expected, rtol=0, atol=1e-12)


def test_resampling_determinism_and_resume(written: dict) -> None:
    dm = module(written, batch_size=2)
    train = dm.dataset("train")
    a, again, later = train[(0, 4)], module(written).dataset("train")[(0, 4)], train[(1, 4)]
    assert torch.equal(a.src_pos, again.src_pos) and torch.equal(a.transform, again.transform)
    assert not torch.equal(a.src_pos, later.src_pos)
    assert len(a.src_pos) <= 1000 and len(a.tgt_pos) <= 1000 and len(a.src_pos) >= 64
    # voxel grids fixed in each moved frame: the two crops of one cloud are sampled differently
    _, sq = knn(transform_points(a.src_pos.double(), a.transform[0]).float()[None], a.tgt_pos[None], 1)
    assert float(sq.sqrt().median()) > 1e-3
    assert float(a.overlap[0]) >= 0.1
    val, val_again = dm.dataset("val"), module(written).dataset("val")
    assert torch.equal(val[1].src_pos, val_again[1].src_pos) and torch.equal(val[1].src_pos, val[1].src_pos)
    other = module(written, seed=1).dataset("val")
    assert not torch.equal(val[1].src_pos, other[1].src_pos)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert batches[0].transform.shape == (2, 4, 4) and int(batches[0].src_pos_batch.max()) == 1
    for k in range(2):  # each pair's clouds and pose stay together through collation
        src = batches[0].src_pos[batches[0].src_pos_batch == k]
        tgt = batches[0].tgt_pos[batches[0].tgt_pos_batch == k]
        stored = float(batches[0].overlap[k])
        assert abs(source_overlap(src, tgt, batches[0].transform[k], 0.0375) - stored) < 0.02
    resumed_dm = module(written, batch_size=2)
    resumed = resumed_dm.train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches": 2})
    rest = list(resumed)
    assert len(rest) == len(batches) - 2
    assert torch.equal(rest[0].src_pos, batches[2].src_pos) and torch.equal(rest[0].index, batches[2].index)


def test_rotation_protocols(written: dict) -> None:
    plain = module(written).dataset("test")
    haar_dm = module(written, test_rotation="haar", rotated_cloud="target")
    haar = haar_dm.dataset("test")
    for index in range(len(plain)):
        p, h = plain[index], haar[index]
        assert torch.equal(p.src_pos, h.src_pos) and torch.equal(p.src_motion, h.src_motion)
        turn = h.tgt_motion[0] @ invert_rigid(p.tgt_motion[0])  # a rotation about the origin, no translation
        assert torch.allclose(turn[:3, 3], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
        assert torch.allclose(h.tgt_pos.double(), transform_points(p.tgt_pos.double(), turn), rtol=0, atol=1e-5)
        assert torch.allclose(h.transform[0], turn @ p.transform[0], rtol=0, atol=1e-12)
    haar_dm.set_test_rotation("roitr_euler")
    for index in range(len(plain)):
        euler, on_source = roitr_euler_rotation(index)
        pair, base = haar[index], plain[index]
        key = "src_motion" if on_source else "tgt_motion"
        turn = pair[key][0] @ invert_rigid(base[key][0])
        assert torch.allclose(turn[:3, :3], torch.from_numpy(euler), rtol=0, atol=1e-12)
    trained = module(written, train_rotation="haar").dataset("train")
    still = module(written, train_rotation="none").dataset("train")
    a, b = trained[(0, 1)], still[(0, 1)]
    moved = [not torch.equal(a[k], b[k]) for k in ("src_pos", "tgt_pos")]
    assert sum(moved) == 1  # one cloud turned
    with pytest.raises(ValueError, match="test_rotation must be one of"):
        haar_dm.set_test_rotation("so3")


def test_bad_input(written: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs threedmatch_root or modelnet_root"):
        RegistrationPairsDataModule()
    with pytest.raises(ValueError, match="overlap_range"):
        module(written, overlap_range=(0.0, 0.5))
    with pytest.raises(ValueError, match="num_points=32 is below min_points=64"):
        module(written, num_points=32)
    with pytest.raises(ValueError, match="modelnet_classes names"):
        module(written, modelnet_classes=["sofa"]).dataset("train")
    # a demo pair whose pose puts the source far from the target: an error at construction, never a pair
    far = tmp_path / "far"
    far.mkdir()
    for name in ("src.npy", "ref.npy"):
        (far / name).write_bytes((written["threedmatch"] / "demo" / name).read_bytes())
    shifted = written["pose"].copy()
    shifted[:3, 3] += 50.0
    np.save(far / "gt.npy", shifted)
    with pytest.raises(ValueError, match="does not overlap"):
        RegistrationPairsDataModule(str(written["threedmatch"]), fragments=[], demo_pair=str(far)).dataset("test")
    np.save(far / "gt.npy", np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(DatasetFileError, match="not a rigid transform"):
        RegistrationPairsDataModule(str(written["threedmatch"]), fragments=[], demo_pair=str(far)).dataset("test")
    # too few points for the crops
    write_3dmatch_fragment(tmp_path / "tiny.pth", room(3, n=20))
    with pytest.raises(ValueError, match="fewer than min_points"):
        RegistrationPairsDataModule(str(tmp_path), fragments=["tiny.pth"], demo_pair=None).dataset("train")
    # an overlap the crops cannot reach: redrawn, then one error naming the item
    with pytest.raises(ValueError, match=r"cloud_bin_0.pth: pair 0 overlapped less than min_overlap=1.0 in 10"):
        RegistrationPairsDataModule(str(written["threedmatch"]), fragments=["assets/cloud_bin_0.pth"], demo_pair=None,
                                    min_overlap=1.0, val_pairs_per_item=1).dataset("val")


def test_shared_samples(shared_sample) -> None:
    threedmatch = shared_sample("3dmatch")
    modelnet = shared_sample("modelnet40", "modelnet40_normal_resampled")
    dm = RegistrationPairsDataModule(str(threedmatch), str(modelnet), modelnet_classes=["airplane", "chair"],
                                     num_points=2048, train_pairs_per_item=2, val_pairs_per_item=1,
                                     test_pairs_per_item=2, batch_size=2)
    dm.setup("fit")
    dm.setup("test")
    assert dm.scenes["train"][:2] == ["3dmatch:assets/cloud_bin_21.pth", "3dmatch:assets/cloud_bin_34.pth"]
    assert dm.scenes["test"][0] == "3dmatch:geotransformer/data/demo"
    assert all(name.startswith("modelnet40:") for name in dm.scenes["train"][2:] + dm.scenes["test"][1:])
    gt = torch.from_numpy(np.load(threedmatch / "geotransformer" / "data" / "demo" / "gt.npy"))
    for index in range(2):  # the real demo pair: pose = M_tgt · gt · M_src⁻¹, overlap measured on the real scans
        pair = dm.dataset("test")[index]
        expected = pair.tgt_motion[0] @ gt @ invert_rigid(pair.src_motion[0])
        assert torch.allclose(pair.transform[0], expected, rtol=0, atol=1e-12)
        assert 0.1 <= float(pair.overlap[0]) <= 1.0
        assert 64 <= len(pair.src_pos) <= 2048 and 64 <= len(pair.tgt_pos) <= 2048
    batch = next(iter(dm.train_dataloader()))
    assert batch.transform.shape == (2, 4, 4) and (batch.overlap >= 0.1).all()
    fragment = dm.dataset("train")[(0, 0)]  # a crop pair of cloud_bin_21 at 2.5 cm voxels
    assert float(fragment.overlap[0]) >= 0.1 and len(fragment.src_pos) == 2048
