"""Open3D registration: seeded correspondence RANSAC (recovery with outliers, determinism), and the FPFH + RANSAC
baseline on the real 3DMatch demo pair (recovered within the benchmark's 0.2 m threshold), on clouds that do not
overlap (a failed result, never a silent identity) and on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointgeo.geometry import knn, random_rigid_motions, rotation_error_degrees, transform_points, translation_error
from pointgeo.geometry.registration import ransac_on_correspondences, register_fpfh_ransac
from pointgeo.metrics.registration import mean_distance_error

F64 = torch.float64


def test_ransac_recovers_with_outliers_and_is_seeded() -> None:
    gen = torch.Generator().manual_seed(0)
    truth = random_rigid_motions(1, generator=gen)[0]
    src = torch.rand(300, 3, generator=gen, dtype=F64) * 2
    tgt = transform_points(src, truth) + 0.002 * torch.randn(300, 3, generator=gen, dtype=F64)
    corr = torch.stack([torch.arange(300), torch.arange(300)], -1)
    corr[150:, 1] = torch.randint(0, 300, (150,), generator=gen)  # half of them wrong
    first = ransac_on_correspondences(src, tgt, corr, distance=0.02, seed=3)
    again = ransac_on_correspondences(src, tgt, corr, distance=0.02, seed=3)
    assert first.success and torch.equal(first.transform, again.transform)
    assert rotation_error_degrees(first.transform, truth) < 0.5 and translation_error(first.transform, truth) < 0.01
    assert 140 <= first.inliers <= 160 and abs(first.inlier_ratio - first.inliers / 300) < 1e-12
    too_few = ransac_on_correspondences(src, tgt, corr[:2], distance=0.02)
    assert not too_few.success and "at least 3" in too_few.message
    with pytest.raises(ValueError, match="outside"):
        ransac_on_correspondences(src, tgt, torch.tensor([[0, 300]]), distance=0.02)


@pytest.fixture(scope="module")
def demo_pair(shared_sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    folder = shared_sample("3dmatch", "geotransformer", "data", "demo")
    return tuple(torch.from_numpy(np.load(folder / f"{name}.npy")) for name in ("src", "ref", "gt"))


def test_fpfh_ransac_recovers_the_demo_pair(demo_pair) -> None:
    """Voxel 5 cm (tests stay fast; the command's default 2.5 cm is measured in the README). Accepted under both
    forms of the benchmark's 0.2 m test that need no gt.info: the mean distance over all source points (the rotated
    protocol's test) and the RMSE over the true correspondences (source points with a target point within 5 cm
    under the ground truth), which the gt.info statistic approximates."""
    src, tgt, gt = demo_pair
    result, small_src, small_tgt = register_fpfh_ransac(src, tgt, voxel_size=0.05, seed=0)
    assert result.success, result.message
    assert len(small_src) < len(src) and result.correspondences[:, 0].max() < len(small_src)
    assert result.correspondences[:, 1].max() < len(small_tgt)
    assert mean_distance_error(result.transform[None], gt[None], src[None]).item() < 0.2
    _, sq = knn(transform_points(src, gt).float()[None], tgt.float()[None], 1)
    overlap = src[sq[0, :, 0] < 0.05 ** 2]
    assert len(overlap) > 0.3 * len(src)
    rmse = (transform_points(overlap, result.transform) - transform_points(overlap, gt)).norm(dim=-1).pow(2).mean()
    assert rmse.sqrt() < 0.2
    assert rotation_error_degrees(result.transform, gt) < 5.0


def test_no_overlap_fails_and_says_so(demo_pair) -> None:
    src = demo_pair[0]
    low, high = src[:, 0].quantile(0.3), src[:, 0].quantile(0.7)
    result, _, _ = register_fpfh_ransac(src[src[:, 0] < low], src[src[:, 0] > high], voxel_size=0.05, seed=0)
    assert not result.success and result.message.startswith("registration failed")
    noise = torch.rand(4000, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 3
    result, _, _ = register_fpfh_ransac(src, noise, voxel_size=0.05, seed=0)
    assert not result.success and "may not overlap" in result.message


def test_bad_input() -> None:
    cloud = torch.rand(500, 3, dtype=F64)
    with pytest.raises(ValueError, match="NaN"):
        register_fpfh_ransac(torch.full((100, 3), float("nan"), dtype=F64), cloud)
    with pytest.raises(ValueError, match="at least 1"):
        register_fpfh_ransac(torch.zeros(0, 3, dtype=F64), cloud)
    with pytest.raises(ValueError, match="target has 1 points after 0.025 voxel"):
        register_fpfh_ransac(cloud, torch.zeros(50, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        register_fpfh_ransac(cloud[None], cloud)
