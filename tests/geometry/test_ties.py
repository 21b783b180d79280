"""Exact ties decided invariantly: kNN on grids, FPS on mirrored composites, the ball's surface, the RISP walk;
symmetric clouds (the 1 : 1.001 : 2 box) broken once, the same way for every decision."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import ball_query, farthest_point_sampling, index_points, knn, random_rotations, rotate
from pointgeo.geometry.frames import signed_least_axis
from pointgeo.geometry.risp import angular_order
from pointgeo.geometry.neighbors import distance_rows
from pointgeo.geometry.ties import invariant_rank, lexicographic_rank, smallest_with_ties, tie_break, tie_scale
from pointgeo.testing.shapes import box_1_1001_2, grid_cylinder, mirror_composite


def asymmetric_grid() -> torch.Tensor:
    """Integer grid points inside an asymmetric region: equidistant neighbours everywhere, no symmetry."""
    g = torch.stack(torch.meshgrid(*[torch.arange(8.0, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return g[(g[:, 0] + 0.7 * g[:, 1] ** 1.5 + 0.3 * g[:, 2] ** 2) < 14]


def moved(pos: torch.Tensor, seed: int, offset: float = 20.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pos (B, N, 3)`` rotated, permuted and shifted: ``(moved, rotation, permutation)``."""
    g = torch.Generator().manual_seed(seed)
    rot, perm = random_rotations(pos.shape[0], generator=g), torch.randperm(pos.shape[1], generator=g)
    return rotate(pos, rot)[:, perm] + offset * torch.tensor([1.0, -0.4, 0.3], dtype=torch.float64), rot, perm


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_knn_on_a_grid_picks_and_orders_equidistant_neighbours_the_same_way_in_every_pose(dtype) -> None:
    pos = asymmetric_grid()[None].expand(4, -1, -1)
    idx, _ = knn(pos.to(dtype), pos.to(dtype), 7)
    shifted, _, perm = moved(pos, 0)
    idx_moved, _ = knn(shifted.to(dtype), shifted.to(dtype), 7)
    inverse = torch.argsort(perm)
    # neighbour j of moved point i is original point perm[j]; moved point i is original point perm[i]
    assert torch.equal(perm[idx_moved][:, inverse], idx)


def test_before_the_tie_rule_rounding_reordered_almost_every_grid_neighbourhood() -> None:
    pos = asymmetric_grid()[None]
    d = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1)
    ties = (d.sort(-1).values[..., 1:8].diff(dim=-1) == 0).any(-1)
    assert ties.float().mean() > 0.9  # the grid really holds equidistant neighbours at almost every point


def test_knn_ties_past_the_candidates_are_searched_over_all_points() -> None:
    # 40 points on a circle around a centre point: the 2k + 2 = 8 candidates of k = 3 cannot hold the whole tie
    t = torch.arange(40, dtype=torch.float64) * (2 * torch.pi / 40)
    ring = torch.stack([t.cos(), t.sin(), 0 * t], -1)
    pos = torch.cat([torch.zeros(1, 3, dtype=torch.float64), ring, torch.tensor([[0.0, 0.0, 3.0]]).double()])[None]
    idx, d = knn(pos[:, :1], pos, 3)
    rank = invariant_rank(pos)[0]
    ring_ranks = rank[1:41]
    assert idx[0, 0, 0] == 0 and torch.allclose(d[0, 0, 1:], torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert rank[idx[0, 0, 1:]].tolist() == ring_ranks.sort().values[:2].tolist()  # the lowest ranks of the ring


@pytest.mark.parametrize("k", [1, 3, 8, 30])
def test_the_partial_selection_equals_the_first_k_of_the_full_tie_break(k: int) -> None:
    # Integer values: runs of equal values of every length, some longer than 4k and 8k (widened twice, or to N)
    g = torch.Generator().manual_seed(3)
    values = torch.randint(0, 6, (40, 300), generator=g).double()
    values[:10] = torch.randint(0, 300, (10, 300), generator=g).double()  # short runs: decided from 4k candidates
    tol = torch.full((40, 1), 0.5, dtype=torch.float64)
    rank = torch.stack([torch.randperm(300, generator=g) for _ in range(3)])
    batch = torch.randint(0, 3, (40,), generator=g)
    expected = tie_break(values, tol, rank[batch])[0][:, :k]
    assert torch.equal(smallest_with_ties(values, tol, rank, batch, k), expected)


def test_the_partial_selection_leaves_only_excluded_entries_undecided() -> None:
    # Two finite entries and 98 infinite ones (excluded): the finite ones come first, in order, and nothing widens
    values = torch.full((1, 100), torch.inf, dtype=torch.float64)
    values[0, 7], values[0, 70] = 2.0, 1.0
    chosen = smallest_with_ties(values, torch.full((1, 1), 1e-9, dtype=torch.float64),
                                torch.arange(100)[None], torch.zeros(1, dtype=torch.long), 5)
    assert chosen[0, :2].tolist() == [70, 7] and torch.isinf(values[0, chosen[0, 2:]]).all()


@pytest.mark.parametrize("max_elements", [1, 700, 1 << 25])
def test_distance_rows_are_the_exact_distances_of_any_rows_of_any_clouds(max_elements: int) -> None:
    g = torch.Generator().manual_seed(4)
    query, points = torch.randn(3, 20, 3, generator=g), torch.randn(3, 50, 3, generator=g)
    batch, index = torch.tensor([2, 0, 2, 2, 1, 0, 2]), torch.tensor([5, 1, 5, 19, 0, 7, 3])  # uneven, repeated
    expected = (points.double()[batch] - query.double()[batch, index][:, None]).norm(dim=-1)
    got = distance_rows(query, points, batch, index, max_elements)
    assert got.dtype == torch.float64 and torch.allclose(got, expected, rtol=0, atol=1e-14)
    assert distance_rows(query, points, batch[:0], index[:0]).shape == (0, 50)


def test_invariant_rank_turns_with_mirror_composites_and_ties_where_a_symmetry_exchanges_points() -> None:
    pos = torch.stack([mirror_composite(300, seed)[0] for seed in range(3)])
    shifted, _, perm = moved(pos, 1)
    assert torch.equal(invariant_rank(shifted), invariant_rank(pos)[:, perm])
    # an exactly axisymmetric grid: points exchanged by its rotations are tied in every invariant key, so their
    # rank falls to their coordinates: independent of the input order, but not of the orientation (the limit)
    cyl = grid_cylinder(96)[0][None]
    perm = torch.randperm(cyl.shape[1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(invariant_rank(cyl[:, perm]), invariant_rank(cyl)[:, perm])
    shifted, _, perm = moved(cyl, 2)
    assert not torch.equal(invariant_rank(shifted), invariant_rank(cyl)[:, perm])


def test_fps_on_mirror_composites_is_invariant_in_float64() -> None:
    pos = torch.stack([mirror_composite(400, seed)[0] for seed in range(3)])
    shifted, rot, _ = moved(pos, 3, offset=1e3)
    offset = shifted.mean(1, keepdim=True) - rotate(pos, rot).mean(1, keepdim=True)
    chosen = rotate(index_points(pos, farthest_point_sampling(pos, 150)), rot)
    chosen_moved = index_points(shifted, farthest_point_sampling(shifted, 150)) - offset
    assert torch.allclose(chosen, chosen_moved, rtol=0, atol=1e-9)


def test_ball_query_counts_neighbours_on_the_sphere_as_inside_in_every_pose() -> None:
    pos = asymmetric_grid()[None].expand(8, -1, -1)
    shifted, _, _ = moved(pos, 4, offset=50.0)
    for cloud in (pos, shifted):
        _, mask = ball_query(cloud, cloud, 1.0, 7)  # the grid spacing is the radius: axis neighbours on the sphere
        d = ((cloud[:, :, None] - cloud[:, None]) ** 2).sum(-1)
        exact = ((d - 1).abs() < 1e-9).sum(-1) + 1  # the point itself and its neighbours at exactly 1
        assert torch.equal(mask.sum(-1), exact.clamp_max(7))


def test_tie_break_orders_runs_of_near_equal_values_by_the_secondary_key() -> None:
    values = torch.tensor([[1.0, 0.5, 1.0 + 1e-14, 0.5 - 1e-14, 2.0]], dtype=torch.float64)
    order, tie = tie_break(values, torch.tensor([[1e-12]], dtype=torch.float64), torch.tensor([[4, 3, 0, 1, 2]]))
    assert order.tolist() == [[3, 1, 2, 0, 4]] and tie.tolist() == [[1, 1, 2, 2, 3]]
    assert tie_scale(torch.randn(2, 50, 3, dtype=torch.float64) * 1e-3).max() < 1e-14  # relative to the cloud


def test_the_risp_walk_starts_and_runs_through_ties_in_the_incoming_order() -> None:
    # Four neighbours at equal tangent length (a square) and two on one ray: the reference is the first of the
    # square in the incoming order and the ray's neighbours keep their incoming order, in every pose.
    centre = torch.zeros(3, dtype=torch.float64)
    normal = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    nbrs = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, -1, 0], [-1, 0, 0], [0.3, 0.3, 0], [0.6, 0.6, 0]],
                        dtype=torch.float64)
    expected = angular_order(centre, normal, nbrs)
    assert expected[0] == 0 and expected.tolist().index(4) + 1 == expected.tolist().index(5)
    rot = random_rotations(64, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([7.0, -2.0, 3.0], dtype=torch.float64)
    one = lambda v: rotate(v.expand(64, 1, 3), rot)[:, 0]  # noqa: E731
    orders = angular_order(one(centre) + shift, one(normal), rotate(nbrs.expand(64, 6, 3), rot) + shift)
    assert (orders == expected).all()


HALF_TURNS = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
"""The box's proper symmetries in its own frame: the identity and the half turns about its three axes."""


def test_fps_on_the_1_1001_2_box_follows_one_symmetry_of_the_box_in_every_pose() -> None:
    # Orbits of 4 points tie in every invariant key: which point FPS takes first only the pose decides, but the
    # whole selection of a rotated copy must be the reference's under one half turn (the rank is anchored once)
    pos = box_1_1001_2(150)[0][None]
    reference = index_points(pos, farthest_point_sampling(pos, 64))[0]
    used = set()
    for seed in range(8):
        shifted, rot, perm = moved(pos, 10 + seed)
        offset = shifted.mean(1, keepdim=True) - rotate(pos, rot).mean(1, keepdim=True)
        back = ((index_points(shifted, farthest_point_sampling(shifted, 64)) - offset) @ rot)[0]
        errors = [(back - reference * s).abs().max().item() for s in HALF_TURNS]
        assert min(errors) < 1e-12, errors
        used.add(min(range(4), key=errors.__getitem__))
    assert len(used) > 1  # the poses really choose different points of the first orbit


def test_the_signed_least_axis_of_a_centrally_symmetric_cloud_takes_its_sign_from_the_rank() -> None:
    g = torch.Generator().manual_seed(0)
    half = torch.randn(1, 20, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6, 0.3]).double()
    pos = torch.cat([half, -half], 1)  # every third moment vanishes: neither moments nor handedness decide
    rank = torch.arange(40)[None]  # an invariant order (e.g. FPS order), kept by the rotation
    axis = signed_least_axis(pos, rank=rank)
    rot = random_rotations(16, generator=g)
    moved_axes = signed_least_axis(rotate(pos.expand(16, -1, -1), rot), rank=rank.expand(16, -1))
    assert torch.allclose(moved_axes, rotate(axis.expand(16, 1, 3), rot)[:, 0], rtol=0, atol=1e-12)
    assert (pos[0, 39] @ axis[0]) * (pos[0, 19] @ axis[0]) < 0  # the highest rank's side is positive
    assert pos[0, 39] @ axis[0] > 0


def test_a_rank_of_the_wrong_shape_is_one_clear_error() -> None:
    pos = torch.rand(2, 10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rank must be an integer tensor \(B, N\) = \(2, 10\)"):
        knn(pos, pos, 3, rank=torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="rank must be an integer tensor"):
        farthest_point_sampling(pos, 3, rank=torch.zeros(2, 10))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_screened_fast_search_equals_deciding_every_query_exactly(dtype) -> None:
    # Only queries whose fast-search distances may hold a tie are decided again; every other query must already
    # be in the exact order. Reference: float64 distances to all points, ties ordered by the same invariant rank.
    g = torch.Generator().manual_seed(5)
    pos = torch.rand(4, 600, 3, generator=g, dtype=torch.float64)
    pos[:, 300:] = torch.round(pos[:, 300:] * 8) / 8 + 0.001 * torch.arange(300, dtype=torch.float64)[:, None]
    pos = pos.to(dtype)  # half random, half near a grid: equidistant neighbours and near-ties both
    idx, _ = knn(pos, pos, 9)
    p = pos.double() - pos.double().mean(1, keepdim=True)
    d = (p[:, :, None] - p[:, None]).norm(dim=-1)  # (B, N, N)
    rank = invariant_rank(pos)
    expected = tie_break(d, tie_scale(pos)[:, None, None], rank[:, None].expand_as(d))[0][..., :9]
    assert torch.equal(idx, expected)


def test_lexicographic_rank_sorts_only_ties_further_and_chains_tolerances() -> None:
    first = torch.tensor([[0.0, 1.0, 1.0 + 1e-13, 2.0, 1.0 - 1e-13, 3.0]], dtype=torch.float64)
    second = torch.tensor([[9.0, 5.0, 4.0, 0.0, 4.0 + 1e-13, -1.0]], dtype=torch.float64)
    third = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    tol = torch.tensor([[1e-12]], dtype=torch.float64)
    rank = lexicographic_rank([(second, tol), (third, tol)], first=(first, tol))
    # point 0 first; then the tie {1, 2, 4} by the second key (2 and 4 tied there, 4 before 2 by the third key)
    assert rank.tolist() == [[0, 3, 2, 4, 1, 5]]
    assert lexicographic_rank(lambda: pytest.fail("no tie: the further keys are never built"),
                              first=(torch.arange(5.0)[None], tol)).tolist() == [[0, 1, 2, 3, 4]]
