"""Estimated normals: exact on simple surfaces, rotation equivariant with their sign, finite on degenerate clouds."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import estimate_normals, random_rotations, rotate
from pointgeo.testing.shapes import adversarial_batch, ellipsoid


def test_sphere_normals_point_outwards() -> None:
    pos = torch.nn.functional.normalize(torch.randn(1, 2000, 3, dtype=torch.float64), dim=-1)
    normals = estimate_normals(pos, k=12)
    assert (normals * pos).sum(-1).min() > 0.99


def test_normals_rotate_with_the_cloud_including_their_sign() -> None:
    pos, _ = ellipsoid(500)
    pos = torch.stack([pos, pos * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)])
    rot = random_rotations(2, generator=torch.Generator().manual_seed(4))
    expected = rotate(estimate_normals(pos), rot)
    assert torch.allclose(estimate_normals(rotate(pos, rot) + 2.0), expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("shape", ["planar", "repeated_points"])
def test_normals_of_flat_and_duplicated_clouds_rotate_with_them_including_their_sign(shape: str) -> None:
    # A plane's outward and local-skew rules vanish: the handedness of its in-plane axes decides. Duplicated points
    # make neighbourhoods that are lines: the direction across the line closest to the cloud's least axis.
    _, pos, _ = adversarial_batch(400, [shape] * 3, seed=2)
    rot = random_rotations(3, generator=torch.Generator().manual_seed(6))
    expected = rotate(estimate_normals(pos, k=8), rot)
    moved = rotate(pos, rot) + torch.tensor([4.0, -2.0, 9.0], dtype=torch.float64)
    assert torch.allclose(estimate_normals(moved, k=8), expected, rtol=0, atol=1e-8)


def test_a_line_gets_one_normal_across_it() -> None:
    _, pos, _ = adversarial_batch(200, ["collinear"])
    direction = torch.nn.functional.normalize(pos[0, -1] - pos[0, 0], dim=0)
    normals = estimate_normals(pos, k=8)[0]
    assert torch.allclose(normals, normals[:1].expand_as(normals), rtol=0, atol=1e-8)  # consistent along the line
    assert (normals @ direction).abs().max() < 1e-8


def test_adversarial_and_degenerate_clouds_give_finite_unit_normals() -> None:
    _, pos, _ = adversarial_batch(64)
    same = torch.ones(1, 64, 3, dtype=torch.float64)
    for cloud in (pos, same):
        normals = estimate_normals(cloud, k=8)
        assert torch.isfinite(normals).all()
        assert torch.allclose(normals.norm(dim=-1), torch.ones(normals.shape[:2], dtype=torch.float64))


def test_bad_k_is_rejected() -> None:
    with pytest.raises(ValueError, match="k must be >= 3"):
        estimate_normals(torch.randn(1, 10, 3), k=2)
    with pytest.raises(ValueError, match="at least 16"):
        estimate_normals(torch.randn(1, 10, 3), k=16)
