"""kNN, ball query and FPS against brute force, with invariance and bad input."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import (
    ball_query,
    farthest_point_sampling,
    index_points,
    knn,
    random_rotations,
    rotate,
)
from pointgeo.testing.shapes import box, mirror_symmetric


def brute_knn(q: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    d = ((q[:, :, None] - p[:, None]) ** 2).sum(-1)
    return d.sort(dim=-1, stable=True).values[..., :k]


@pytest.mark.parametrize("max_elements", [1 << 25, 100])
def test_knn_matches_brute_force_distances(max_elements: int) -> None:
    q, p = torch.randn(3, 50, 3, dtype=torch.float64), torch.randn(3, 70, 3, dtype=torch.float64)
    idx, d = knn(q, p, 7, max_elements=max_elements)
    assert idx.shape == (3, 50, 7)
    assert torch.allclose(d, brute_knn(q, p, 7), rtol=0, atol=1e-12)
    assert torch.allclose(((index_points(p, idx) - q[:, :, None]) ** 2).sum(-1), d)


def test_knn_with_k_equal_to_n_and_repeated_points() -> None:
    p = torch.randn(2, 10, 3).repeat(1, 2, 1)
    idx, d = knn(p, p, 20)
    assert torch.equal(idx.sort(-1).values, torch.arange(20).expand(2, 20, 20))
    assert (d[..., :2] < 1e-10).all()  # each point and its duplicate


def test_knn_distances_are_differentiable() -> None:
    p = torch.randn(1, 30, 3, requires_grad=True)
    _, d = knn(p, p, 4)
    d.sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_ball_query_keeps_neighbours_inside_the_radius() -> None:
    p = torch.rand(2, 200, 3, dtype=torch.float64)
    idx, mask = ball_query(p[:, :20], p, 0.2, 16)
    d = ((index_points(p, idx) - p[:, :20, None]) ** 2).sum(-1).sqrt()
    assert (d[mask] <= 0.2 + 1e-12).all()
    assert torch.equal(idx[~mask], idx[..., :1].expand_as(idx)[~mask])


def brute_fps(pos: torch.Tensor, m: int, start: int) -> list[int]:
    chosen = [start]
    for _ in range(m - 1):
        d = torch.cdist(pos, pos[chosen]).min(dim=1).values
        chosen.append(int(d.argmax()))
    return chosen


def test_fps_matches_brute_force() -> None:
    pos = torch.randn(2, 300, 3, dtype=torch.float64)
    idx = farthest_point_sampling(pos, 40, start=5)
    for b in range(2):
        assert idx[b].tolist() == brute_fps(pos[b], 40, 5)


def test_default_fps_is_rotation_translation_and_permutation_invariant() -> None:
    pos = torch.randn(4, 500, 3, dtype=torch.float64)
    chosen = index_points(pos, farthest_point_sampling(pos, 64))
    rot = random_rotations(4, generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(500)
    moved = rotate(pos, rot)[:, perm] + 3.0
    chosen_moved = index_points(moved, farthest_point_sampling(moved, 64))
    assert torch.allclose(rotate(chosen, rot) + 3.0, chosen_moved, rtol=0, atol=1e-10)


@pytest.mark.parametrize("m", [100, 300])
def test_fps_decides_the_ties_of_a_mirror_symmetric_cloud_invariantly(m: int) -> None:
    pos = torch.stack([mirror_symmetric(400, seed)[0] for seed in range(3)])  # points in exact mirror pairs
    g = torch.Generator().manual_seed(5)
    rot, perm = random_rotations(3, generator=g), torch.randperm(400, generator=g)
    moved = rotate(pos, rot)[:, perm] + torch.tensor([3.0, -1.0, 7.0], dtype=torch.float64)
    chosen = rotate(index_points(pos, farthest_point_sampling(pos, m)), rot)
    chosen_moved = index_points(moved, farthest_point_sampling(moved, m)) - torch.tensor([3.0, -1.0, 7.0])
    assert torch.allclose(chosen, chosen_moved, rtol=0, atol=1e-10)


def test_fps_repeats_the_distinct_picks_once_every_point_is_taken() -> None:
    distinct, _ = box(32)
    pos = distinct.repeat(4, 1)[torch.randperm(128, generator=torch.Generator().manual_seed(0))].unsqueeze(0)
    chosen = index_points(pos, farthest_point_sampling(pos, 100))[0]
    assert torch.unique(chosen[:32], dim=0).shape[0] == 32  # every distinct point first
    assert torch.equal(chosen[32:], chosen[torch.arange(32, 100) % 32])  # then the same sequence again
    shuffled = pos[:, torch.randperm(128)]
    assert torch.equal(index_points(shuffled, farthest_point_sampling(shuffled, 100))[0], chosen)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: knn(torch.randn(1, 5, 3), torch.randn(1, 5, 3), 6), "at least 6"),
        (lambda: knn(torch.randn(5, 3), torch.randn(5, 3), 2), r"shape \(B, N, D\)"),
        (lambda: knn(torch.full((1, 5, 3), float("nan")), torch.randn(1, 5, 3), 2), "NaN"),
        (lambda: knn(torch.randn(1, 5, 3), torch.full((1, 5, 3), float("inf")), 2), "NaN or inf"),
        (lambda: knn(torch.ones(1, 5, 3, dtype=torch.long), torch.ones(1, 5, 3, dtype=torch.long), 2), "floating"),
        (lambda: farthest_point_sampling(torch.randn(1, 5, 3), 6), "at least 6"),
        (lambda: ball_query(torch.randn(1, 5, 3), torch.randn(1, 5, 3), -1.0, 2), "radius"),
    ],
)
def test_bad_input_gets_a_clear_error(call: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()  # type: ignore[operator]


def test_degenerate_clouds_are_handled() -> None:
    same = torch.ones(1, 32, 3)
    idx = farthest_point_sampling(same, 8)
    assert idx.shape == (1, 8) and (idx == idx[:, :1]).all()  # one distinct point: picked again and again
    assert farthest_point_sampling(torch.randn(2, 5, 3), 1).shape == (2, 1)
    i, d = knn(same, same, 4)
    assert (d == 0).all() and i.shape == (1, 32, 4)


open3d_loaded = pytest.mark.skipif(
    __import__("pointgeo.geometry.backends", fromlist=["open3d_ops"]).open3d_ops() is None,
    reason="open3d.ml.torch does not load with this torch build (it needs open3d-cpu built for it)",
)


@open3d_loaded
def test_open3d_backends_equal_the_torch_reference() -> None:
    pos = torch.rand(3, 1500, 3)
    for start in (None, 7, torch.tensor([0, 10, 1499])):
        assert torch.equal(farthest_point_sampling(pos, 200, start=start, backend="open3d"),
                           farthest_point_sampling(pos, 200, start=start, backend="torch"))
    query = pos[:, :300]
    i_o3d, d_o3d = knn(query, pos, 12, backend="open3d")
    i_ref, d_ref = knn(query, pos, 12, backend="torch")
    assert torch.equal(i_o3d, i_ref) and torch.allclose(d_o3d, d_ref)


def test_backend_selection() -> None:
    from pointgeo.geometry.backends import choose

    assert choose("auto", torch.zeros(1, 3, dtype=torch.float64)) == "torch"  # float64 always uses torch
    with pytest.raises(ValueError, match="backend must be"):
        choose("cuda-magic", torch.zeros(1, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="float32 CPU"):
        choose("open3d", torch.zeros(1, 3, dtype=torch.float64))
