"""RISP: angular ordering and the 14 features against a configuration worked out by hand; invariance."""

from __future__ import annotations

import math

import torch

from pointgeo.geometry import random_rotations, rotate
from pointgeo.geometry.risp import angular_order, risp_features

R2, R5 = math.sqrt(2), math.sqrt(5)


def test_ordering_and_features_match_the_hand_computed_example() -> None:
    # Centre at the origin with normal +z; neighbours A = (2,0,0) (largest tangent projection, so r = +x),
    # B = (0,1,0) and D = (1,-1,0). Keys s*c - (1 - s): A is r itself -> 1; D: s=+1, c=1/sqrt2 -> 0.707;
    # B: s=-1, c=0 -> -2. The walk is A, D, B; we describe A with its neighbours in the order D, A, B (i = 1).
    p = torch.zeros(3, dtype=torch.float64)
    n_p = torch.tensor([0.0, 0, 1], dtype=torch.float64)
    a, b, d = [torch.tensor(v, dtype=torch.float64) for v in ([2.0, 0, 0], [0.0, 1, 0], [1.0, -1, 0])]
    order = angular_order(p, n_p, torch.stack([a, b, d]))
    assert order.tolist() == [0, 2, 1]  # A, D, B
    normals = torch.stack([n_p, torch.tensor([1.0, 0, 1], dtype=torch.float64) / R2,
                           torch.tensor([0.0, 1, 0], dtype=torch.float64)])  # n_D, n_A, n_B
    feats = risp_features(p, n_p, torch.stack([d, a, b]), normals, step=1)
    # Row of A (i = 1): i- = D, i+ = B.
    expected = [2.0, 0.0, -1 / R2, 1 / R2, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0, 1 / R5, 1 / R5, 0.0, -1 / R2]
    assert torch.allclose(feats[1], torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_features_are_invariant_under_rotation_and_translation() -> None:
    g = torch.Generator().manual_seed(0)
    centre = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    normal = torch.nn.functional.normalize(torch.randn(4, 6, 3, generator=g, dtype=torch.float64), dim=-1)
    nbrs = centre.unsqueeze(-2) + 0.3 * torch.randn(4, 6, 8, 3, generator=g, dtype=torch.float64)
    nbr_normals = torch.nn.functional.normalize(torch.randn(4, 6, 8, 3, generator=g, dtype=torch.float64), dim=-1)

    def describe(c: torch.Tensor, n: torch.Tensor, x: torch.Tensor, xn: torch.Tensor) -> torch.Tensor:
        order = angular_order(c, n, x)
        take = lambda t: torch.gather(t, -2, order.unsqueeze(-1).expand_as(t))  # noqa: E731
        return risp_features(c, n, take(x), take(xn), step=2)

    rot = random_rotations(4, generator=g)  # one rotation per cloud: (4, 3, 3) for (4, 6, 3) centres
    shift = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    moved = describe(rotate(centre, rot) + shift, rotate(normal, rot), rotate(nbrs, rot[:, None]) + shift,
                     rotate(nbr_normals, rot[:, None]))
    assert torch.allclose(describe(centre, normal, nbrs, nbr_normals), moved, atol=1e-10)
