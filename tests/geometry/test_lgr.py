"""Local-to-global registration: recovers a motion from grouped correspondences with outliers, is equivariant to
independent motions of the two clouds (float64, 1e-8), reports failure instead of an identity, and refuses bad
input with one clear error."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import invert_rigid, random_rigid_motions, transform_points
from pointgeo.geometry.lgr import local_to_global_registration

D = torch.float64


def problem(seed: int = 0, outliers: float = 0.6):
    """200 source points, the target their image under a motion plus 5 mm noise; 120 correspondences in 12 groups
    of 10 (matched patch pairs), the first ``outliers`` of the groups wrong (random target points). (A group's
    local estimate is a plain weighted fit: LGR relies on groups that are mostly right, as patch-level OT gives.)"""
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(200, 3, generator=g, dtype=D)
    truth = random_rigid_motions(1, generator=g)[0]
    tgt = transform_points(src, truth) + 0.005 * torch.randn(200, 3, generator=g, dtype=D)
    corr = torch.stack([torch.arange(120), torch.arange(120)], -1)
    groups = torch.arange(120) // 10
    wrong = groups < round(12 * outliers)
    corr[wrong, 1] = torch.randint(0, 200, (int(wrong.sum()),), generator=g)
    scores = torch.rand(120, generator=g, dtype=D) + 0.1
    return src, tgt, truth, corr, scores, groups


def test_recovers_the_motion_despite_outliers() -> None:
    src, tgt, truth, corr, scores, groups = problem()
    result = local_to_global_registration(src, tgt, corr, scores, groups, distance=0.05)
    assert result.success and "LGR" in result.message
    assert float((result.transform - truth).abs().max()) < 0.02
    assert torch.equal(result.correspondences, corr)


def test_equivariant_to_independent_motions() -> None:
    src, tgt, _, corr, scores, groups = problem(1)
    reference = local_to_global_registration(src, tgt, corr, scores, groups, distance=0.05).transform
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        m1, m2 = random_rigid_motions(2, scale=10.0, generator=g)
        moved = local_to_global_registration(transform_points(src, m1), transform_points(tgt, m2), corr, scores,
                                             groups, distance=0.05).transform
        expected = m2 @ reference @ invert_rigid(m1)
        assert torch.allclose(moved, expected, rtol=0, atol=1e-8 * float(expected.abs().max()))


def test_no_consistent_motion_is_reported_as_failure() -> None:
    src, tgt, _, corr, scores, groups = problem(2, outliers=1.0)
    result = local_to_global_registration(src, tgt, corr, scores, groups, distance=0.001)
    assert not result.success and torch.equal(result.transform, torch.eye(4, dtype=D))
    assert "registration failed" in result.message
    few = local_to_global_registration(src, tgt, corr[:2], scores[:2], groups[:2])
    assert not few.success and "at least 3" in few.message
    single = local_to_global_registration(src, tgt, corr[:20], scores[:20], torch.arange(20), min_local=3)
    assert not single.success and "no group holds 3" in single.message


def test_bad_input() -> None:
    src, tgt, _, corr, scores, groups = problem()
    with pytest.raises(ValueError, match="outside the source or target"):
        local_to_global_registration(src, tgt[:50], corr, scores, groups)
    with pytest.raises(ValueError, match="scores and groups must have shape"):
        local_to_global_registration(src, tgt, corr, scores[:5], groups)
    with pytest.raises(ValueError, match="finite and non-negative"):
        local_to_global_registration(src, tgt, corr, -scores, groups)
    with pytest.raises(ValueError, match="NaN"):
        local_to_global_registration(src * float("nan"), tgt, corr, scores, groups)
