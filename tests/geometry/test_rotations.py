"""Rotation sampling: orthonormal, proper, seeded, Haar-uniform; axis rotations keep their axis."""

from __future__ import annotations

import math

import pytest
import torch

from pointgeo.geometry import angle_sweep, random_rotations, rotation_defect, rotations_about_axis, sample_rotations


def test_random_rotations_are_proper_and_orthonormal_in_float64() -> None:
    rot = random_rotations(1000, generator=torch.Generator().manual_seed(0))
    assert rot.dtype == torch.float64
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye.expand_as(rot), rtol=0, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(1000, dtype=torch.float64), rtol=0, atol=1e-12)


def test_seeded_sampling_is_reproducible_across_dtypes() -> None:
    a = random_rotations(5, generator=torch.Generator().manual_seed(3))
    b = random_rotations(5, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    assert torch.equal(a.float(), b)


def test_rotation_angle_follows_the_haar_density() -> None:
    """Under the Haar measure the angle θ has density (1 - cos θ) / π on [0, π]: a chi-square test on 10 bins."""
    rot = random_rotations(20000, generator=torch.Generator().manual_seed(1))
    cos = ((rot.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    theta = torch.arccos(cos)
    edges = torch.linspace(0, math.pi, 11, dtype=torch.float64)
    cdf = (edges - torch.sin(edges)) / math.pi
    expected = (cdf[1:] - cdf[:-1]) * len(theta)
    observed = torch.histc(theta, bins=10, min=0, max=math.pi)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # 99.9 % quantile of chi-square with 9 degrees of freedom


def test_euler_angle_sampling_would_fail_the_same_test() -> None:
    """The uniformity test has power: uniform random axis-angle (a common mistake) is rejected."""
    g = torch.Generator().manual_seed(1)
    theta = torch.rand(20000, generator=g, dtype=torch.float64) * math.pi
    edges = torch.linspace(0, math.pi, 11, dtype=torch.float64)
    cdf = (edges - torch.sin(edges)) / math.pi
    expected = (cdf[1:] - cdf[:-1]) * len(theta)
    observed = torch.histc(theta, bins=10, min=0, max=math.pi)
    assert float(((observed - expected) ** 2 / expected).sum()) > 27.9


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_axis_rotations_fix_their_axis(axis: str) -> None:
    rot = sample_rotations("z", 8, up_axis=axis, generator=torch.Generator().manual_seed(0))
    unit = torch.zeros(3, dtype=torch.float64)
    unit["xyz".index(axis)] = 1
    assert torch.allclose(rot @ unit, unit.expand(8, 3), rtol=0, atol=1e-12)


def test_angle_sweep_and_quarter_turn() -> None:
    angles = angle_sweep(15)
    assert len(angles) == 24 and float(angles[1]) == pytest.approx(math.radians(15))
    quarter = rotations_about_axis(torch.tensor([math.pi / 2], dtype=torch.float64), "z")[0]
    assert torch.allclose(quarter @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)


def test_bad_modes_and_axes_are_rejected() -> None:
    with pytest.raises(ValueError, match="rotation mode"):
        sample_rotations("xyz", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="axis"):
        sample_rotations("z", 1, up_axis="w")


def test_rotation_defect_is_zero_on_rotations_and_measures_reflections_and_scaling():
    rotations = random_rotations(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert rotation_defect(rotations).max() < 1e-14
    reflection = rotations[0] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    assert torch.isclose(rotation_defect(reflection), torch.tensor(2.0, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.isclose(rotation_defect(1.01 * rotations[1]), torch.tensor(1.01**3 - 1, dtype=torch.float64),
                         rtol=0, atol=1e-12)
