"""Farthest point sampling (FPS), batched, with a rotation- and permutation-invariant start point."""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.backends import Backend, choose, open3d_ops
from pointgeo.geometry.checks import check_points
from pointgeo.geometry.neighbors import index_points
from pointgeo.geometry.ties import check_rank, invariant_rank, tie_scale

TIE_BIAS = 1e-6
"""Relative weight of the tie-breaking term in FPS's distances (see :func:`tie_weights`)."""


def tie_weights(pos: Tensor, rank: Tensor | None = None) -> Tensor:
    """Per-point weights ``1 + 1e-6 (rank + 1) / N`` of clouds ``(B, N, 3) -> (B, N)``, ``rank (B, N)`` the points'
    invariant rank (default :func:`~pointgeo.geometry.ties.invariant_rank`).

    FPS multiplies its distances by them, so exact ties (mirror images, the points of a grid) are decided by the
    rank, the same way in every orientation: one rank step (``1e-6 / N``, ``1e-9`` at ``N = 1024``) is far above
    float64 rounding. Elsewhere they change a pick only between distances within 1e-6 of each other, and
    invariantly so.
    """
    n = pos.shape[1]
    rank = invariant_rank(pos) if rank is None else check_rank(rank, pos)
    return 1 + TIE_BIAS * (rank + 1).to(pos.dtype) / n


def farthest_from_centroid(pos: Tensor, weights: Tensor | None = None) -> Tensor:
    """Index of the point farthest from its cloud's centroid, distances weighted by :func:`tie_weights`:
    ``(B, N, 3) -> (B,)``.

    This start point is invariant to rotations, translations and permutations of the cloud, unlike PyG's random
    start or the CUDA kernels' fixed index 0; only points that no invariant key tells apart (duplicates, points
    exchanged by a rotational symmetry of the cloud) are left tied.
    """
    centred = pos - pos.mean(dim=1, keepdim=True)
    weights = tie_weights(pos) if weights is None else weights
    return ((centred * centred).sum(-1) * weights).argmax(dim=1)


def _farthest_tied(pos: Tensor) -> bool:
    """Whether the largest distance from the centroid of some cloud ``(B, N, 3)`` is tied within the tie tolerance
    (then only the invariant rank decides the start point)."""
    x = pos.detach().double()
    radius = (x - x.mean(dim=1, keepdim=True)).norm(dim=-1)
    top = radius.topk(min(2, radius.shape[1]), dim=-1).values
    return top.shape[1] > 1 and bool((top[:, 0] - top[:, 1] <= tie_scale(pos)).any())


def _fps_torch(pos: Tensor, m: int, far: Tensor, weights: Tensor) -> Tensor:
    b, n, _ = pos.shape
    idx = torch.empty(b, m, dtype=torch.long, device=pos.device)
    mindist = torch.full((b, n), float("inf"), dtype=pos.dtype, device=pos.device)
    batch = torch.arange(b, device=pos.device)
    for i in range(m):
        idx[:, i] = far
        d = ((pos - pos[batch, far].unsqueeze(1)) ** 2).sum(-1)
        mindist = torch.minimum(mindist, d)
        far = (mindist * weights).argmax(dim=1)
    return idx


def _repeat_after_exhaustion(pos: Tensor, idx: Tensor) -> Tensor:
    """Once every point lies on an earlier pick (duplicated points, ``m`` above the number of distinct points),
    FPS would pick among duplicates in index order, so *how many* copies of each point are picked would depend on
    the input order. The picks from there on repeat the distinct ones cyclically instead: ``(B, m) -> (B, m)``.
    """
    m = idx.shape[1]
    if m < 2:
        return idx
    picked = index_points(pos, idx)  # (B, m, 3)
    rounding = (64 * torch.finfo(pos.dtype).eps * pos.abs().amax(dim=(1, 2))) ** 2  # (B,)
    last = ((picked[:, :-1] - picked[:, -1:]) ** 2).sum(-1).amin(dim=1)  # exhausted: the last pick is a repeat
    exhausted = (last <= rounding).nonzero().flatten()
    if exhausted.numel() == 0:
        return idx
    later = torch.ones(m, m, dtype=torch.bool, device=pos.device).triu()  # (pick, earlier pick) pairs to ignore
    clouds = max(1, (1 << 24) // m**2)  # a few clouds at a time: (clouds, m, m) distances
    first_repeat = []
    for rows, tolerance in zip(picked[exhausted].split(clouds), rounding[exhausted].split(clouds)):
        gap = torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").masked_fill_(later, torch.inf)
        first_repeat.append((gap.amin(dim=-1) ** 2 <= tolerance[:, None]).int().argmax(dim=1))  # ≥ 1
    distinct = torch.cat(first_repeat)
    cycle = torch.arange(m, device=pos.device) % distinct.unsqueeze(1)
    idx = idx.clone()
    idx[exhausted] = torch.gather(idx[exhausted], 1, cycle)
    return idx


def _fps_open3d(pos: Tensor, m: int, start: Tensor) -> Tensor:
    """Open3D's kernel starts at index 0: swap each cloud's start point to the front, then map indices back."""
    b, n, _ = pos.shape
    perm = torch.arange(n).repeat(b, 1)
    batch = torch.arange(b)
    perm[batch, start] = 0
    perm[batch, 0] = start
    swapped = torch.gather(pos, 1, perm.unsqueeze(-1).expand(-1, -1, 3)).contiguous()
    idx = open3d_ops().furthest_point_sampling(swapped, m).long()
    return torch.gather(perm, 1, idx)


@torch.no_grad()
def farthest_point_sampling(
    pos: Tensor, m: int, *, start: Tensor | int | None = None, backend: Backend = "auto", rank: Tensor | None = None
) -> Tensor:
    """Select ``m`` points of each cloud by farthest point sampling.

    Iteratively picks the point maximising the distance to the already-picked set. The loop runs over the
    ``m`` picks; the batch is processed at once. The pure-torch backend weights the distances by
    :func:`tie_weights`, so exact ties (mirror images, grids) are decided invariantly at every pick; Open3D's
    kernel (the float32 fast path) does so for the start point only.

    Args:
        pos: ``(B, N, 3)`` positions, ``N >= m``.
        m: number of points to select.
        start: first index per cloud: a ``(B,)`` tensor, an int for all clouds, or ``None`` for
            :func:`farthest_from_centroid` (the invariant default).
        backend: ``auto`` uses Open3D's batched kernel for float32 CPU clouds when it loads, else pure torch.
        rank: ``(B, N)`` invariant rank deciding exact ties (default
            :func:`~pointgeo.geometry.ties.invariant_rank`; see :func:`~pointgeo.geometry.knn`).

    Returns:
        ``(B, m)`` long indices into ``N``, in selection order. When ``m`` exceeds the number of distinct points,
        the distinct picks repeat cyclically (see :func:`_repeat_after_exhaustion`).
    """
    check_points(pos, "pos", min_points=m)
    if m < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    b = pos.shape[0]
    use = choose(backend, pos)
    if use != "open3d" or rank is not None or (start is None and _farthest_tied(pos)):
        weights = tie_weights(pos, rank)
    else:  # Open3D's kernel reads the weights only through the start point, which no tie decides here
        weights = torch.ones_like(pos[..., 0])
    if start is None:
        far = farthest_from_centroid(pos, weights)
    elif isinstance(start, int):
        far = torch.full((b,), start, dtype=torch.long, device=pos.device)
    else:
        far = start.to(device=pos.device, dtype=torch.long)
    idx = _fps_open3d(pos, m, far) if use == "open3d" else _fps_torch(pos, m, far, weights)
    return _repeat_after_exhaustion(pos, idx)
