"""Canonical frames: equivariance, sign rules, sign-flip group, degenerate clouds."""

from __future__ import annotations

import torch

from pointgeo.geometry import random_rotations, rotate
from pointgeo.geometry.frames import canonical_frame, principal_axes, sign_flips, signed_least_axis, skew_signs
from pointgeo.testing.shapes import adversarial_batch


def test_canonical_coordinates_are_invariant_for_generic_clouds() -> None:
    pos = torch.randn(5, 200, 3, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) ** 2
    frame, c = canonical_frame(pos)
    rot = random_rotations(5, generator=torch.Generator().manual_seed(0))
    moved = rotate(pos, rot) - 4.0
    frame2, c2 = canonical_frame(moved)
    assert torch.allclose((pos - c) @ frame, (moved - c2) @ frame2, rtol=0, atol=1e-10)
    assert torch.allclose(torch.linalg.det(frame), torch.ones(5, dtype=torch.float64))


def test_sign_flips_form_the_proper_group() -> None:
    frame, _ = canonical_frame(torch.randn(2, 50, 3, dtype=torch.float64))
    flips = sign_flips(frame)
    assert flips.shape == (2, 4, 3, 3)
    assert torch.allclose(torch.linalg.det(flips), torch.ones(2, 4, dtype=torch.float64))
    relative = frame.transpose(-1, -2).unsqueeze(1) @ flips  # diagonal sign matrices
    assert torch.allclose(relative.abs(), torch.eye(3, dtype=torch.float64).expand(2, 4, 3, 3), rtol=0, atol=1e-12)


def test_degenerate_clouds_give_finite_frames() -> None:
    _, pos, normal = adversarial_batch(64, ["planar", "collinear", "repeated_points"])
    same = torch.ones(1, 64, 3, dtype=torch.float64)
    for cloud, dirs in ((pos, normal), (pos, None), (same, None)):
        frame, c = canonical_frame(cloud, directions=dirs)
        assert torch.isfinite(frame).all() and torch.isfinite(c).all()
        assert torch.allclose(frame.transpose(-1, -2) @ frame, torch.eye(3, dtype=torch.float64).expand_as(frame),
                              atol=1e-10)


def test_frames_work_on_neighbourhood_batches() -> None:
    frame, c = canonical_frame(torch.randn(2, 7, 16, 3))
    assert frame.shape == (2, 7, 3, 3) and c.shape == (2, 7, 1, 3)


def test_the_signed_least_axis_of_a_plane_rotates_with_it() -> None:
    _, pos, _ = adversarial_batch(300, ["planar", "planar"], seed=1)
    centred = pos - pos.mean(dim=1, keepdim=True)
    assert (skew_signs(centred @ principal_axes(centred)[1])[:, 2] == 0).all()  # no third moment across the plane
    rot = random_rotations(2, generator=torch.Generator().manual_seed(8))
    expected = (signed_least_axis(centred).unsqueeze(1) @ rot.transpose(-1, -2)).squeeze(1)
    assert torch.allclose(signed_least_axis(rotate(centred, rot)), expected, rtol=0, atol=1e-10)
