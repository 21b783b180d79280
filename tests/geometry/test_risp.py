"""RISP: angular ordering and the 14 features against a configuration worked out by hand; invariance."""

from __future__ import annotations

import math

import torch

from pointgeo.geometry import random_rotations, rotate
from pointgeo.geometry.risp import angular_order, risp_features

R2, R5 = math.sqrt(2), math.sqrt(5)


def test_ordering_and_features_match_the_hand_computed_example() -> None:
    # Centre at the origin with normal +z; neighbours A = (2,0,0) (largest tangent projection, so r = +x),
    # B = (0,1,0) and D = (1,-1,0). Angles atan2((u x r).n, u.r) from r: A is r itself (first); D: u x r = +z/sqrt2,
    # u.r = 1/sqrt2 -> pi/4; B: u x r = -z, u.r = 0 -> 3pi/2. The walk is A, D, B; we describe A with its
    # neighbours in the order D, A, B (i = 1).
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
    assert torch.allclose(describe(centre, normal, nbrs, nbr_normals), moved, rtol=0, atol=1e-10)


def test_neighbours_on_a_line_through_the_centre_keep_one_order_under_rotation() -> None:
    # Rounding gives collinear directions a random side; within √ε they are put at angle 0 (with r) or π.
    direction = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64), dim=0)
    normal = torch.nn.functional.normalize(torch.linalg.cross(direction, torch.tensor([0.0, 0, 1.0]).double()), dim=0)
    steps = torch.tensor([0.9, -0.3, 0.2, -0.7, 0.5, -0.05, 0.01], dtype=torch.float64)
    centre = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    nbrs = centre + steps[:, None] * direction
    assert angular_order(centre, normal, nbrs).tolist() == [0, 2, 4, 6, 1, 3, 5]  # r, same side, then opposite
    rot = random_rotations(64, generator=torch.Generator().manual_seed(3))
    shift = torch.tensor([5.0, -3.0, 8.0], dtype=torch.float64)
    one = lambda v: rotate(v.expand(64, 1, 3), rot)[:, 0]  # noqa: E731  (64 rotated copies of a vector)
    orders = angular_order(one(centre) + shift, one(normal), rotate(nbrs.expand(64, 7, 3), rot) + shift)
    assert (orders == torch.tensor([0, 2, 4, 6, 1, 3, 5])).all()
