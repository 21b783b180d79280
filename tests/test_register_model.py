"""``pointgeo register --model CKPT [--estimator]``: a RoITr registration checkpoint registers a pair through its
``register_pair`` (the printed transform is the task's own on the voxelised clouds), ``--estimator`` overrides the
checkpoint's estimator, FPFH stays the default, and misuse gives one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo import __version__
from pointgeo.cli import main
from pointgeo.geometry import random_rigid_motions, transform_points, voxel_downsample
from pointgeo.nn.roitr.network import SMALL
from pointgeo.tasks import ClassificationTask, RegistrationTask
from pointgeo.testing import ADVERSARIAL_PAIRS


def write_checkpoint(task, path: Path, data: dict | None = None) -> Path:
    """The checkpoint a Lightning run of ``task`` writes (weights, hyper-parameters, pointgeo's metadata, and the
    datamodule's hyper-parameters ``data`` where given)."""
    meta = {"version": __version__, "task": task.task_kind, "task_class": type(task).__name__}
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "pointgeo": meta}
    torch.save(ckpt | ({"datamodule_hyper_parameters": data} if data is not None else {}), path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path, RegistrationTask]:
    """A wall-and-floor corner and the same surface under a motion (``.npy``), and a tiny untrained RoITr checkpoint
    that accepts estimates with one inlier."""
    folder = tmp_path_factory.mktemp("register_model")
    src = ADVERSARIAL_PAIRS["corner"](256, 0)[0]
    motion = random_rigid_motions(1, generator=torch.Generator().manual_seed(4))[0]
    np.save(folder / "src.npy", src.numpy())
    np.save(folder / "tgt.npy", transform_points(src, motion).numpy())
    torch.manual_seed(0)
    task = RegistrationTask(network_kwargs=SMALL, min_inliers=1)
    return folder / "src.npy", folder / "tgt.npy", write_checkpoint(task, folder / "roitr.ckpt"), task


def printed_transform(out: str) -> torch.Tensor:
    rows = out.split("transform (source -> target):\n")[1].splitlines()[:4]
    return torch.tensor([[float(v) for v in row.split()] for row in rows], dtype=torch.float64)


def test_register_with_a_roitr_checkpoint(pair, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, tgt, ckpt, task = pair
    main(["register", str(src), str(tgt), "--model", str(ckpt), "--voxel-size", "0.01",
          "--out", str(tmp_path / "aligned.npy")])
    out = capsys.readouterr().out
    count = int(re.search(r"correspondences: (\d+) \(roitr matches, lgr estimate\)", out).group(1))
    small_src = voxel_downsample(torch.from_numpy(np.load(src)), 0.01)
    small_tgt = voxel_downsample(torch.from_numpy(np.load(tgt)), 0.01)
    expected = task.register_pair(small_src, small_tgt)
    assert count == len(expected.correspondences) > 0
    assert torch.allclose(printed_transform(out), expected.transform, rtol=0, atol=1e-6)
    assert np.load(tmp_path / "aligned.npy").shape == (256, 3)
    main(["register", str(src), str(tgt), "--model", str(ckpt), "--voxel-size", "0.01", "--estimator", "ransac",
          "--distance", "0.05"])
    assert "(roitr matches, ransac estimate)" in capsys.readouterr().out


def test_register_prepares_the_clouds_as_the_checkpoints_training_data(pair, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    # A checkpoint trained at 2 cm voxels and 200 points per cloud: without options, register sees the same density
    src, tgt, _, task = pair
    ckpt = write_checkpoint(task, tmp_path / "capped.ckpt", {"voxel_size": 0.02, "num_points": 200})
    main(["register", str(src), str(tgt), "--model", str(ckpt), "--seed", "3"])
    out = capsys.readouterr().out
    clouds, generator = [], torch.Generator().manual_seed(3)
    for path in (src, tgt):
        cloud = voxel_downsample(torch.from_numpy(np.load(path)), 0.02)
        assert len(cloud) > 200
        clouds.append(cloud[torch.randperm(len(cloud), generator=generator)[:200].sort().values])
    expected = task.register_pair(*clouds)
    assert "(200 after 0.02 voxels, at most 200)" in out
    assert f"correspondences: {len(expected.correspondences)} " in out
    assert torch.allclose(printed_transform(out), expected.transform, rtol=0, atol=1e-6)
    main(["register", str(src), str(tgt), "--model", str(ckpt), "--max-points", "0", "--voxel-size", "0.03"])
    full = len(voxel_downsample(torch.from_numpy(np.load(src)), 0.03))
    assert f"({full} after 0.03 voxels); " in capsys.readouterr().out  # options win; 0: no cap


def test_register_model_misuse(pair, tmp_path: Path) -> None:
    src, tgt, _, _ = pair
    with pytest.raises(SystemExit, match="--estimator and --max-points apply to a checkpoint"):
        main(["register", str(src), str(tgt), "--estimator", "lgr"])
    with pytest.raises(SystemExit, match="--estimator and --max-points apply to a checkpoint"):
        main(["register", str(src), str(tgt), "--max-points", "100"])
    with pytest.raises(SystemExit, match="--max-points must be 0"):
        main(["register", str(src), str(tgt), "--max-points", "-1"])
    with pytest.raises(SystemExit, match="no checkpoint file"):
        main(["register", str(src), str(tgt), "--model", str(tmp_path / "absent.ckpt")])
    classifier = write_checkpoint(ClassificationTask(network="pointnet", num_classes=3), tmp_path / "cls.ckpt")
    with pytest.raises(SystemExit, match="ClassificationTask checkpoint, which cannot register pairs"):
        main(["register", str(src), str(tgt), "--model", str(classifier)])
    with pytest.raises(SystemExit, match="no_such_model"):
        main(["register", str(src), str(tgt), "--model", "no_such_model"])
