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


def write_checkpoint(task, path: Path) -> Path:
    """The checkpoint a Lightning run of ``task`` writes (weights, hyper-parameters, pointgeo's metadata)."""
    meta = {"version": __version__, "task": task.task_kind, "task_class": type(task).__name__}
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "pointgeo": meta}, path)
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


def test_register_model_misuse(pair, tmp_path: Path) -> None:
    src, tgt, _, _ = pair
    with pytest.raises(SystemExit, match="--estimator applies to a checkpoint"):
        main(["register", str(src), str(tgt), "--estimator", "lgr"])
    classifier = write_checkpoint(ClassificationTask(network="pointnet", num_classes=3), tmp_path / "cls.ckpt")
    with pytest.raises(SystemExit, match="ClassificationTask checkpoint, which cannot register pairs"):
        main(["register", str(src), str(tgt), "--model", str(classifier)])
    with pytest.raises(SystemExit, match="no_such_model"):
        main(["register", str(src), str(tgt), "--model", "no_such_model"])
