"""``pointgeo register``: FPFH + RANSAC on the real 3DMatch demo pair recovers its ground-truth pose within the
benchmark's 0.2 m threshold (from .npy arrays and from 3DMatch .pth fragments), writes the aligned source
atomically, says so when registration fails, and gives one clear error for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.cli import main
from pointgeo.geometry import transform_points
from pointgeo.testing.fake_data import write_3dmatch_fragment
from pointgeo.viz.io import read_points


@pytest.fixture(scope="module")
def demo(shared_sample) -> Path:
    return shared_sample("3dmatch", "geotransformer", "data", "demo")


def printed_transform(out: str) -> torch.Tensor:
    rows = out.split("transform (source -> target):\n")[1].splitlines()[:4]
    return torch.tensor([[float(v) for v in row.split()] for row in rows], dtype=torch.float64)


def test_register_recovers_the_demo_pair(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    aligned = tmp_path / "out" / "aligned.ply"
    main(["register", str(demo / "src.npy"), str(demo / "ref.npy"), "--voxel-size", "0.05",
          "--truth", str(demo / "gt.npy"), "--out", str(aligned)])
    out = capsys.readouterr().out
    assert re.search(r"correspondences: \d+", out) and re.search(r"inlier ratio 0\.\d+", out)
    match = re.search(r"RRE ([\d.]+) deg, RTE ([\d.]+), mean distance ([\d.]+) \(accepted at 0.2\)", out)
    assert match, out
    assert float(match.group(1)) < 5.0 and float(match.group(3)) < 0.2
    transform = printed_transform(out)
    source = torch.from_numpy(np.load(demo / "src.npy"))
    written = torch.from_numpy(read_points(aligned)[0]).double()
    assert torch.allclose(written, transform_points(source, transform), rtol=0, atol=1e-4)  # 6 printed decimals
    assert [p.name for p in aligned.parent.iterdir()] == ["aligned.ply"]  # no temporary file left


def test_register_reads_3dmatch_fragments(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_3dmatch_fragment(tmp_path / "cloud_bin_1.pth", np.load(demo / "src.npy"))
    tgt = write_3dmatch_fragment(tmp_path / "cloud_bin_0.pth", np.load(demo / "ref.npy"))
    main(["register", str(src), str(tgt), "--voxel-size", "0.05", "--truth", str(demo / "gt.npy"),
          "--out", str(tmp_path / "aligned.npy")])
    out = capsys.readouterr().out
    assert "(accepted at 0.2)" in out
    assert np.load(tmp_path / "aligned.npy").shape == (15953, 3)


def test_register_failure_is_reported(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two disjoint thirds of one fragment share no surface: registration fails, nothing is written."""
    points = np.load(demo / "src.npy")
    low, high = np.quantile(points[:, 0], [0.3, 0.7])
    np.save(tmp_path / "a.npy", points[points[:, 0] < low])
    np.save(tmp_path / "b.npy", points[points[:, 0] > high])
    with pytest.raises(SystemExit, match="registration failed.*no transform is reported"):
        main(["register", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--voxel-size", "0.05",
              "--out", str(tmp_path / "aligned.ply")])
    assert "transform (source" not in capsys.readouterr().out
    assert not (tmp_path / "aligned.ply").exists()


def test_register_bad_input(tmp_path: Path) -> None:
    good = tmp_path / "good.xyz"
    np.savetxt(good, np.random.default_rng(0).uniform(0, 2, (400, 3)))
    cases = {
        "nan.xyz": ("1 2 3\nnan 0 0\n", "NaN"),
        "empty.xyz": ("", "empty"),
        "few.xyz": ("0 0 0\n1 1 1\n2 2 2\n", "after 0.025 voxel downsampling; at least 30"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(SystemExit, match=match):
            main(["register", str(tmp_path / name), str(good)])
    with pytest.raises(SystemExit, match="no such file"):
        main(["register", str(tmp_path / "absent.ply"), str(good)])
    with pytest.raises(SystemExit, match="--voxel-size must be positive"):
        main(["register", str(good), str(good), "--voxel-size", "0"])
    np.save(tmp_path / "flat.npy", np.zeros((10, 2)))
    with pytest.raises(SystemExit, match=r"\(N, 3\)"):
        main(["register", str(tmp_path / "flat.npy"), str(good)])
