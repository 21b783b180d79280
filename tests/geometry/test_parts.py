"""Per-part operations: sums by hand, frames and their determinacy, in-part kNN invariant to each part's motion."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import (
    apply_piecewise_motion,
    check_parts,
    knn_in_parts,
    part_frames,
    part_means,
    part_rank,
    part_sums,
    piecewise_motion,
)


def test_part_sums_and_means_by_hand() -> None:
    values = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])
    parts = torch.tensor([[0, 2, 0, 2]])
    assert part_sums(values, parts, 3).flatten().tolist() == [4.0, 0.0, 6.0]
    means, mass = part_means(values, parts, 3, weights=torch.tensor([[1.0, 1.0, 3.0, 1.0]]))
    assert means.flatten().tolist() == [2.5, 0.0, 3.0] and mass.flatten().tolist() == [4.0, 0.0, 2.0]


def test_frames_are_determined_only_where_three_distinct_variances_exist() -> None:
    g = torch.Generator().manual_seed(0)
    blob = torch.randn(30, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    flat = blob * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    line = blob * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    pos = torch.cat([blob, flat + 5, line + 10, torch.zeros(2, 3, dtype=torch.float64)])[None]
    parts = torch.cat([torch.full((30,), 0), torch.full((30,), 1), torch.full((30,), 2), torch.full((2,), 3)])[None]
    frames = part_frames(pos, parts, 5)
    assert frames.determined.tolist() == [[True, True, False, False, False]]  # blob, planar | line, 2 points, empty
    assert torch.allclose(torch.linalg.det(frames.axes[0, :2]), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert frames.count.tolist() == [[30, 30, 30, 2, 0]]


def test_knn_in_parts_stays_inside_the_part_and_follows_each_part_motion() -> None:
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(2, 60, 3, generator=g, dtype=torch.float64)
    parts = torch.randint(0, 5, (2, 60), generator=g)
    parts[:, :2] = 5  # a part of two points: its lists are padded with the point itself
    idx = knn_in_parts(pos, parts, 6, num_parts=6)
    assert (torch.gather(parts, 1, idx.flatten(1)).view(2, 60, 6) == parts[..., None]).all()
    assert (idx[..., 0] == torch.arange(60)).all()  # itself first
    assert idx[0, 0].tolist() == [0, 1, 0, 0, 0, 0]
    rot, shift, centre = piecewise_motion(pos, parts, g, translation_scale=10.0)
    moved, _ = apply_piecewise_motion(pos, None, parts, rot, shift, centre)
    perm = torch.randperm(60, generator=g)
    inverse = torch.argsort(perm)
    moved_idx = knn_in_parts(moved[:, perm], parts[:, perm], 6, num_parts=6)
    assert torch.equal(perm[moved_idx][:, inverse], idx)  # the same neighbours, whatever the motion and order


def test_ties_inside_a_part_are_decided_by_the_part_rank_in_every_pose() -> None:
    # a grid part (equidistant neighbours everywhere) with one point off the grid, so that no rotation maps the
    # part onto itself: every tie is decided by invariant keys (a part with such a symmetry is the documented limit)
    grid = torch.stack(torch.meshgrid(*(torch.arange(3.0, dtype=torch.float64),) * 3, indexing="ij"), -1)
    grid = torch.cat([grid.reshape(-1, 3), torch.tensor([[2.5, 2.2, 2.9]], dtype=torch.float64)])
    pos = torch.cat([grid * torch.tensor([1.0, 1.3, 1.7], dtype=torch.float64),
                     torch.randn(19, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 9])[None]
    parts = torch.cat([torch.zeros(28), torch.ones(19)]).long()[None]
    d = (grid[:, None] - grid[None]).norm(dim=-1).sort(-1).values[:, 1:8]
    assert (d.diff(dim=-1) == 0).any()  # real ties among the 7 nearest
    idx = knn_in_parts(pos, parts, 7)  # equidistant grid neighbours
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        rot, shift, centre = piecewise_motion(pos, parts, g, translation_scale=10.0)
        moved, _ = apply_piecewise_motion(pos, None, parts, rot, shift, centre)
        perm = torch.randperm(47, generator=g)
        again = knn_in_parts(moved[:, perm], parts[:, perm], 7)
        assert torch.equal(perm[again][:, torch.argsort(perm)], idx)
    frames = part_frames(pos, parts, 2)
    rank = part_rank(pos, parts, frames)
    assert sorted(rank[0].tolist()) == list(range(47))


def test_bad_partitions_get_one_clear_error() -> None:
    pos = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"partition must be integer part labels \(B, N\) = \(2, 5\)"):
        check_parts(torch.zeros(2, 4, dtype=torch.long), pos)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        check_parts(torch.full((2, 5), 3), pos, 3)
    with pytest.raises(ValueError, match="at least 6 are needed"):
        knn_in_parts(pos, torch.zeros(2, 5, dtype=torch.long), 6)
