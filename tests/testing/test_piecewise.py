"""The piecewise-motion protocol: every part moved by its own seeded Haar rotation and translation."""

from __future__ import annotations

import pytest
import torch

from pointgeo.testing import measure, measure_piecewise
from pointgeo.geometry import apply_piecewise_motion, piecewise_motion


def two_part_clouds() -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples of 40 points, anisotropic, in three parts of uneven size: ``pos (2, 40, 3)``, ``parts (2, 40)``."""
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(2, 40, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6, 0.3]).double()
    parts = torch.cat([torch.zeros(2, 20), torch.ones(2, 12), torch.full((2, 8), 2.0)], 1).long()
    return pos + 3.0 * parts[..., None].double(), parts


def distance_to_own_part(pos: torch.Tensor, normal: torch.Tensor | None, parts: torch.Tensor) -> torch.Tensor:
    """Per point: its distance to the centroid of its part and that part's mean distance (given the partition)."""
    onehot = torch.nn.functional.one_hot(parts, int(parts.max()) + 1).to(pos.dtype)  # (B, N, P)
    centre = onehot.transpose(1, 2) @ pos / onehot.sum(1)[..., None]  # (B, P, 3)
    d = (pos - onehot @ centre).norm(dim=-1)  # (B, N)
    mean = (onehot.transpose(1, 2) @ d[..., None]) / onehot.sum(1)[..., None]  # (B, P, 1)
    return torch.stack([d, (onehot @ mean)[..., 0]], -1)  # (B, N, 2)


def distance_to_centroid(pos: torch.Tensor, normal: torch.Tensor | None) -> torch.Tensor:
    """Per point: its distance to the whole cloud's centroid (globally, not piecewise, invariant)."""
    return (pos - pos.mean(1, keepdim=True)).norm(dim=-1, keepdim=True)


def test_each_part_moves_rigidly_and_by_its_own_motion() -> None:
    pos, parts = two_part_clouds()
    normal = torch.nn.functional.normalize(pos, dim=-1)
    rot, shift, centre = piecewise_motion(pos, parts, torch.Generator().manual_seed(1), translation_scale=10.0)
    moved, turned = apply_piecewise_motion(pos, normal, parts, rot, shift, centre)
    for p in range(3):
        inside = parts[0] == p
        a, b = pos[0, inside], moved[0, inside]
        assert torch.allclose(torch.cdist(a, a), torch.cdist(b, b), rtol=0, atol=1e-12)  # rigid within the part
        assert torch.allclose(turned[0, inside], normal[0, inside] @ rot[0, p].T, rtol=0, atol=1e-12)
    across = torch.cdist(pos[0, parts[0] == 0], pos[0, parts[0] == 1])
    assert (torch.cdist(moved[0, parts[0] == 0], moved[0, parts[0] == 1]) - across).abs().max() > 1.0
    assert not torch.allclose(rot[0, 0], rot[0, 1])


def test_a_network_given_the_partition_is_exactly_piecewise_invariant() -> None:
    pos, parts = two_part_clouds()
    report = measure_piecewise(distance_to_own_part, pos, None, parts, pass_parts=True, trials=16)
    assert report.max_rel < 1e-12 and report.within() and report.trials == 16


def test_a_globally_invariant_network_fails_under_piecewise_motion() -> None:
    pos, parts = two_part_clouds()
    assert measure(distance_to_centroid, pos).within()
    report = measure_piecewise(distance_to_centroid, pos, None, parts, trials=8)
    assert report.max_rel > 1e-1 and not report.within()


def test_bad_part_labels_get_one_clear_error() -> None:
    pos, parts = two_part_clouds()
    with pytest.raises(ValueError, match=r"parts must be non-negative integer labels \(B, N\) = \(2, 40\)"):
        measure_piecewise(distance_to_centroid, pos, None, parts[:, :10])
    with pytest.raises(ValueError, match="parts must be"):
        measure_piecewise(distance_to_centroid, pos, None, parts.double())
