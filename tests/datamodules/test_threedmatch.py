"""The 3DMatch datamodule on trees written here in both projects' layouts from the real demo pair (fragments as
PREDATOR's legacy torch.save pickles, metadata in each project's format, the real benchmark ground truth): keys and
shapes, voxel downsampling, the processed cache, both rotated protocols, training rotations, batching, and the
messages for missing data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.datamodules import DatasetFileError, DatasetNotFoundError, ThreeDMatchDataModule
from pointgeo.datamodules.registration_readers import read_benchmark_scene
from pointgeo.datamodules.threedmatch import FRAGMENTS_URL, TEST_SCENES, roitr_euler_rotation
from pointgeo.geometry import transform_points
from pointgeo.testing.fake_data import (
    write_3dmatch_fragment,
    write_geotransformer_metadata,
    write_predator_metadata,
)

SCENE = "7-scenes-redkitchen"


@pytest.fixture(scope="module")
def demo(shared_sample) -> dict:
    """The demo pair (every 4th point, to stay fast), its pose, and the first three pairs of the real 3DMatch
    kitchen ground truth (their fragment ids and gt.info rows)."""
    folder = shared_sample("3dmatch", "geotransformer", "data", "demo")
    bench = shared_sample("3dmatch", "configs", "benchmarks")
    scene = read_benchmark_scene(bench / "3DMatch" / SCENE)
    return {"src": np.load(folder / "src.npy")[::4], "ref": np.load(folder / "ref.npy")[::4],
            "gt": np.load(folder / "gt.npy"), "pairs": scene.pairs[:3], "info": scene.information[:3],
            "bench": bench}


def write_tree(root: Path, demo: dict, layout: str) -> Path:
    """Fragments ``cloud_bin_<i>`` = the demo's target, ``cloud_bin_<j>`` = its source (moved so that every pair's
    pose is the demo's), and the test metadata in ``layout``'s format."""
    frag_dir = root / ("data/indoor" if layout == "predator" else "data") / "test" / SCENE
    source, target, transform = [], [], []
    for i, j in demo["pairs"]:
        write_3dmatch_fragment(frag_dir / f"cloud_bin_{i}.pth", demo["ref"])
        write_3dmatch_fragment(frag_dir / f"cloud_bin_{j}.pth", demo["src"])
        source.append(f"test/{SCENE}/cloud_bin_{j}.pth")
        target.append(f"test/{SCENE}/cloud_bin_{i}.pth")
        transform.append(demo["gt"])
    writer = write_predator_metadata if layout == "predator" else write_geotransformer_metadata
    meta = root / ("configs/indoor" if layout == "predator" else "metadata") / "3DMatch.pkl"
    writer(meta, source, target, np.stack(transform), np.array([0.5, 0.4, 0.3]))
    return root


def module(root: Path, demo: dict, **kwargs) -> ThreeDMatchDataModule:
    return ThreeDMatchDataModule(str(root), benchmark_dir=str(demo["bench"]), voxel_size=0.05, **kwargs)


def test_pairs_in_both_layouts(tmp_path: Path, demo: dict) -> None:
    """Note: fragment ids repeat across the three pairs (0-1, 0-2, ...), so a fragment file is the last one written:
    the demo target and source alternate; the test compares against what each pair's files hold."""
    samples = {}
    for layout in ("predator", "geotransformer"):
        dm = module(write_tree(tmp_path / layout, demo, layout), demo, layout=layout)
        ds = dm.dataset("test")
        assert len(ds) == 3 and dm.scenes["test"][:8] == list(TEST_SCENES)
        samples[layout] = ds[0]
    a, b = samples["predator"], samples["geotransformer"]
    for key in ("src_pos", "tgt_pos", "transform", "information", "src_id", "tgt_id", "scene", "overlap"):
        assert torch.equal(a[key], b[key]), key
    assert a.src_pos.dtype == torch.float32 and a.transform.shape == (1, 4, 4) and a.transform.dtype == torch.float64
    assert a.src_pos.shape[0] < len(demo["src"])  # 5 cm voxels
    assert torch.allclose(a.transform[0], torch.from_numpy(demo["gt"]), rtol=0, atol=1e-12)
    assert torch.equal(a.information[0], torch.from_numpy(demo["info"][0]))
    assert (int(a.tgt_id), int(a.src_id)) == tuple(int(v) for v in demo["pairs"][0])
    assert int(a.scene) == 0 and float(a.overlap) == 0.5 and torch.equal(a.src_motion[0], torch.eye(4).double())


def test_cache_is_keyed_by_settings(tmp_path: Path, demo: dict) -> None:
    root = write_tree(tmp_path, demo, "predator")
    first = module(root, demo).dataset("test")[1]
    cached = sorted((root / "processed").glob("*.npz"))
    assert len(cached) == 1
    shutil.rmtree(root / "data" / "indoor" / "test" / SCENE)  # the cache alone now serves the same settings
    again = module(root, demo).dataset("test")[1]
    assert torch.equal(first.src_pos, again.src_pos)
    with pytest.raises(DatasetFileError, match="names the fragment"):
        module(root, demo, max_points=100).dataset("test")  # other settings: a new cache, built from the fragments


def consistent(moved, base) -> bool:
    """The moved pair's pose maps its source where the target's motion took the original's aligned source."""
    aligned = transform_points(base.src_pos.double(), base.transform[0])
    return torch.allclose(transform_points(moved.src_pos.double(), moved.transform[0]),
                          transform_points(aligned, moved.tgt_motion[0]), rtol=0, atol=1e-5)


def test_rotated_benchmarks(tmp_path: Path, demo: dict) -> None:
    root = write_tree(tmp_path, demo, "predator")
    plain = module(root, demo).dataset("test")
    haar = module(root, demo, test_rotation="haar", seed=7).dataset("test")
    for index in range(3):
        base, moved = plain[index], haar[index]
        rot = moved.src_motion[0, :3, :3]
        assert torch.equal(moved.tgt_pos, base.tgt_pos) and torch.equal(moved.tgt_motion[0], torch.eye(4).double())
        assert torch.allclose(moved.src_pos, transform_points(base.src_pos, moved.src_motion[0]), rtol=0, atol=1e-6)
        assert consistent(moved, base)
        assert torch.allclose(rot @ rot.T, torch.eye(3).double(), rtol=0, atol=1e-12)
    rotations = [haar[i].src_motion[0] for i in range(3)]
    assert not torch.equal(rotations[0], rotations[1])
    repeat = module(root, demo, test_rotation="haar", seed=7).dataset("test")[1]
    assert torch.equal(repeat.src_motion, haar[1].src_motion)
    on_target = module(root, demo, test_rotation="haar", seed=7, rotated_cloud="target").dataset("test")[0]
    assert torch.equal(on_target.src_pos, plain[0].src_pos) and torch.equal(on_target.tgt_motion, rotations[0][None])
    roitr = module(root, demo, test_rotation="roitr_euler").dataset("test")
    from scipy.spatial.transform import Rotation

    for index in range(3):
        rng = np.random.RandomState(index)
        expected = Rotation.from_euler("zyx", rng.rand(3) * 2 * np.pi).as_matrix()
        pair = roitr[index]
        motion = pair.src_motion if rng.rand(1)[0] > 0.5 else pair.tgt_motion
        assert np.allclose(motion[0, :3, :3].numpy(), expected, rtol=0, atol=1e-15)
        assert consistent(pair, plain[index])
    assert roitr_euler_rotation(0)[1] == (np.random.RandomState(0).rand(4)[3] > 0.5)


def test_training_rotations_and_batches(tmp_path: Path, demo: dict) -> None:
    root = write_tree(tmp_path, demo, "predator")
    meta = root / "configs" / "indoor"
    shutil.copy(meta / "3DMatch.pkl", meta / "train_info.pkl")
    dm = module(root, demo, augment_noise=0.005, batch_size=2)
    train = dm.dataset("train")
    a, b, again = train[(0, 1)], train[(1, 1)], train[(0, 1)]
    assert torch.equal(a.src_pos, again.src_pos) and not torch.equal(a.src_pos, b.src_pos)
    plain = module(root, demo, train_rotation="none", augment_noise=0.0).dataset("train")
    for sample in (a, b):  # rotated source or target, pose updated, noise below 2.5 mm per coordinate
        noisy = transform_points(sample.src_pos.double(), sample.transform[0])
        aligned = transform_points(transform_points(plain[1].src_pos.double(), plain[1].transform[0]),
                                   sample.tgt_motion[0])
        assert (noisy - aligned).abs().max() < 0.0026 * 2 and (noisy - aligned).abs().max() > 0
    batch = next(iter(dm.train_dataloader()))
    assert batch.transform.shape == (2, 4, 4) and batch.src_pos_batch.max() == 1 and batch.tgt_pos_batch.max() == 1
    assert batch.index.tolist() != [] and set(batch.index.tolist()) <= {0, 1, 2}
    for k in range(2):  # each pair's clouds and pose stay together through collation (noise aside)
        src, tgt = batch.src_pos[batch.src_pos_batch == k].double(), batch.tgt_pos[batch.tgt_pos_batch == k].double()
        moved = transform_points(src, batch.transform[k])
        from pointgeo.geometry import knn

        _, sq = knn(moved.float()[None], tgt.float()[None], 1)
        assert (sq[0, :, 0].sqrt() < 0.05).double().mean() > 0.3  # the demo pair overlaps by ~45 %


def test_missing_data_messages(tmp_path: Path, demo: dict) -> None:
    empty = ThreeDMatchDataModule(str(tmp_path / "none"))
    with pytest.raises(DatasetNotFoundError, match=r"raw.githubusercontent.com/prs-eth/OverlapPredator/.*3DMatch.pkl"):
        empty.dataset("test")
    offline = ThreeDMatchDataModule(str(tmp_path / "none"), download=True)
    with pytest.raises(DatasetNotFoundError, match="POINTGEO_OFFLINE"):
        offline.dataset("test")
    root = write_tree(tmp_path / "tree", demo, "predator")
    shutil.rmtree(root / "data")
    with pytest.raises(DatasetNotFoundError, match=FRAGMENTS_URL.replace(".", r"\.")):
        module(root, demo).dataset("test")
    root = write_tree(tmp_path / "tree2", demo, "predator")
    (root / "data" / "indoor" / "test" / SCENE / f"cloud_bin_{demo['pairs'][0][0]}.pth").unlink()
    with pytest.raises(DatasetFileError, match="names the fragment"):
        module(root, demo).dataset("test")
    with pytest.raises(ValueError, match="test_rotation"):
        ThreeDMatchDataModule(test_rotation="so3")  # type: ignore[arg-type]


def test_real_metadata_through_the_datamodule(shared_sample) -> None:
    """The shared folder is a PREDATOR checkout without data/: metadata and ground truth are found, the fragments
    are reported missing with the archive's URL."""
    root = shared_sample("3dmatch")
    dm = ThreeDMatchDataModule(str(root), benchmark="3DLoMatch")
    assert dm.metadata_path("test") == root / "configs" / "indoor" / "3DLoMatch.pkl"
    assert len(dm.benchmark_scenes()) == 8
    with pytest.raises(DatasetNotFoundError, match="data.zip"):
        dm.dataset("test")
