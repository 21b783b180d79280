"""Neighbour search: batched k-nearest neighbours and ball query, plus gathering neighbour features.

All functions take dense batches ``(B, N, 3)`` and never build a ``(B, M, N)`` distance matrix larger than
``max_elements``: queries are processed in chunks. Distances returned are recomputed exactly from the chosen
neighbours (``||q - p||^2`` in the input dtype), so they are differentiable and free of the cancellation error of
the matrix-product formula used for the search itself.

Exact ties (equidistant neighbours: regular grids, symmetric CAD parts) are decided invariantly
(:mod:`pointgeo.geometry.ties`): the fast search returns ``k + 1`` candidates with its own distances; only the
queries where two of them may lie within the cloud's tie tolerance once computed exactly (a gap below the tolerance
plus the search's rounding bound) are decided again: distances recomputed in float64, those within the tolerance
ordered by the points' invariant rank (given as ``rank=``, or computed for those clouds only), and a query whose
tie at the ``k``-th place reaches the last candidate is searched again over all points. So which neighbour is the
``k``-th, and the order of equidistant ones, turn with the cloud instead of with rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.backends import Backend, choose, open3d_ops
from pointgeo.geometry.checks import check_points
from pointgeo.geometry.ties import check_rank, invariant_rank, smallest_with_ties, tie_break, tie_scale

MAX_ELEMENTS = 1 << 25
"""Largest number of entries of one chunk of the query-by-point distance matrix (128 MiB in float32)."""


def index_points(x: Tensor, idx: Tensor) -> Tensor:
    """Gather per-point rows by index, batched.

    Args:
        x: ``(B, N, C)`` per-point values.
        idx: ``(B, *S)`` integer indices into ``N``.

    Returns:
        ``(B, *S, C)`` with ``out[b, s] = x[b, idx[b, s]]``.
    """
    b, n, c = x.shape
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, c))
    return out.reshape(idx.shape + (c,))


def _pairwise_sqdist(query: Tensor, points: Tensor) -> Tensor:
    """``(B, M, N)`` squared distances by ``|q|^2 + |p|^2 - 2 q.p`` (fast; used only to rank candidates)."""
    d = torch.baddbmm(
        (points * points).sum(-1).unsqueeze(1), query, points.transpose(1, 2), beta=1.0, alpha=-2.0
    )
    return d.add_((query * query).sum(-1, keepdim=True))


def _knn_torch(query: Tensor, points: Tensor, k: int, max_elements: int) -> tuple[Tensor, Tensor]:
    """``(idx, sqdist)`` ``(B, M, k)`` nearest first; ``sqdist`` by the matrix-product formula (ranking only)."""
    b, m, _ = query.shape
    chunk = max(1, max_elements // max(1, b * points.shape[1]))
    found = [_pairwise_sqdist(query[:, s : s + chunk], points).topk(k, dim=-1, largest=False, sorted=True)
             for s in range(0, m, chunk)]
    return torch.cat([f.indices for f in found], 1), torch.cat([f.values for f in found], 1)


def _knn_open3d(query: Tensor, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(idx, sqdist)`` ``(B, M, k)`` nearest first, from Open3D's kernel (float32 squared distances)."""
    b, m, _ = query.shape
    n = points.shape[1]
    result = open3d_ops().knn_search(
        points.reshape(-1, 3).contiguous(), query.reshape(-1, 3).contiguous(), k,
        torch.arange(b + 1, dtype=torch.int64) * n, torch.arange(b + 1, dtype=torch.int64) * m,
        return_distances=True,
    )
    offsets = (torch.arange(b) * n).view(b, 1, 1)
    return result.neighbors_index.long().view(b, m, k) - offsets, result.neighbors_distance.view(b, m, k)


def distance_rows(query: Tensor, points: Tensor, batch: Tensor, index: Tensor,
                  max_elements: int = MAX_ELEMENTS) -> Tensor:
    """Exact float64 distances ``(R, N)`` from ``query[batch[r], index[r]]`` (``query (B, M, D)``) to every point of
    its cloud ``points[batch[r]]`` (``points (B, N, D)``): from coordinate differences (``torch.cdist`` without the
    matrix-product formula), never copying a cloud per row; the rows of each cloud are padded into one ``(B, w, D)``
    query batch, ``w`` at most ``max_elements / (B N)`` per call."""
    bsz, n, dim = points.shape
    r = batch.shape[0]
    out = torch.empty(r, n, dtype=torch.float64, device=points.device)
    if r == 0:
        return out
    counts = torch.bincount(batch, minlength=bsz)
    by_cloud = batch.argsort(stable=True)
    slot = torch.empty_like(batch)
    slot[by_cloud] = torch.arange(r, device=batch.device) - (counts.cumsum(0) - counts)[batch[by_cloud]]
    width = max(1, max_elements // max(1, bsz * n))
    pos = points.double()
    for start in range(0, int(counts.max()), width):
        sel = ((slot >= start) & (slot < start + width)).nonzero().flatten()
        col = slot[sel] - start
        pad = pos.new_zeros(bsz, int(col.max()) + 1, dim)
        pad[batch[sel], col] = query[batch[sel], index[sel]].double()
        out[sel] = torch.cdist(pad, pos, compute_mode="donot_use_mm_for_euclid_dist")[batch[sel], col]
    return out


def _maybe_tied(query: Tensor, points: Tensor, sqdist: Tensor, k: int, tau: Tensor) -> Tensor:
    """``(B, M)``: queries whose first ``k + 1`` fast-search distances ``sqdist (B, M, C)`` (ascending, in the
    input dtype) hold two values that may lie within the tie tolerance ``tau (B, 1, 1)`` of each other once
    computed exactly. A gap of squared distances ``d_2^2 - d_1^2 = (d_1 + d_2)(d_2 - d_1)`` above
    ``2 d_2 τ`` plus twice the fast search's rounding (``16 ε (‖q‖^2 + max ‖p‖^2)``, the matrix-product formula's
    bound) cannot close, so everywhere else the fast order is the exact order."""
    eps = torch.finfo(sqdist.dtype).eps
    scale = (query * query).sum(-1, keepdim=True) + (points * points).sum(-1).amax(-1)[:, None, None]  # (B, M, 1)
    d2 = sqdist[..., : k + 1].double().clamp_min(0)
    slack = 2 * d2[..., 1:].sqrt() * tau + 32 * eps * scale.double()
    return (d2.diff(dim=-1) <= slack).any(-1)


def _resolve_ties(query: Tensor, points: Tensor, candidates: Tensor, sqdist: Tensor, k: int, max_elements: int,
                  rank: Tensor | None) -> Tensor:
    """The ``k`` nearest among ``candidates (B, M, C)`` (``C > k`` unless ``C = N``; fast-search squared distances
    ``sqdist (B, M, C)``, ascending) with exact ties decided by the points' invariant rank. Only the queries whose
    fast distances may hold a tie among the first ``k + 1`` (:func:`_maybe_tied`) are looked at again: their
    candidates' distances are recomputed in float64, ties within the tolerance ordered by the rank (unless given,
    ``(B, N)``, computed only for their clouds), and those whose tie at the ``k``-th place reaches the last
    candidate are searched again over all points. Returns ``(B, M, k)``."""
    n = points.shape[1]
    tau = tie_scale(points)[:, None, None]  # (B, 1, 1)
    idx = candidates[..., :k].clone()
    maybe = _maybe_tied(query, points, sqdist, k, tau)
    if not bool(maybe.any()):
        return idx
    b, m = maybe.nonzero(as_tuple=True)  # (R,): only these queries are decided again
    q, p = query[b, m].double(), points.double()  # (R, D)
    cand = candidates[b, m]  # (R, C)
    dist = (p[b[:, None], cand] - q[:, None]).norm(dim=-1)  # (R, C) exact
    tol = tau[b, 0]  # (R, 1)
    dist, order = dist.sort(dim=-1, stable=True)
    cand = torch.gather(cand, -1, order)
    tied = (dist.diff(dim=-1)[..., :k] <= tol).any(-1)  # (R,): a real tie among the first k + 1
    idx[b, m] = cand[:, :k]
    if not bool(tied.any()):
        return idx
    b, m, cand, dist, tol = b[tied], m[tied], cand[tied], dist[tied], tol[tied]
    if rank is None:
        clouds = b.unique()
        rank = torch.zeros(points.shape[:2], dtype=torch.long, device=points.device)
        rank[clouds] = invariant_rank(points[clouds])
    order, tie = tie_break(dist, tol, rank[b[:, None], cand])
    chosen = torch.gather(cand, 1, order[:, :k])
    if cand.shape[-1] < n:
        unsure = (tie[:, k - 1] == tie[:, -1]).nonzero().flatten()  # the k-th's tie reaches the last candidate
        rows = max(1, max_elements // (4 * n))  # float64 rows, and as many again inside distance_rows
        for u in unsure.split(rows) if unsure.numel() else ():
            d = distance_rows(query, points, b[u], m[u], max_elements)  # (rows, N)
            chosen[u] = smallest_with_ties(d, tol[u], rank, b[u], k)
    idx[b, m] = chosen
    return idx


def knn(
    query: Tensor,
    points: Tensor,
    k: int,
    *,
    max_elements: int = MAX_ELEMENTS,
    backend: Backend = "auto",
    rank: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``points`` of every query point, batched, nearest first.

    Args:
        query: ``(B, M, D)`` query positions (``D = 3`` for clouds; any ``D`` for feature-space kNN).
        points: ``(B, N, D)`` candidate positions, ``N >= k``.
        k: number of neighbours.
        max_elements: bound on the entries of one chunk of the distance matrix (torch backend).
        backend: ``auto`` uses Open3D's kernel for float32 CPU clouds in 3D when it loads, else pure torch.
        rank: ``(B, N)`` invariant rank of ``points`` deciding exact ties; default
            :func:`~pointgeo.geometry.ties.invariant_rank`, computed only for clouds with a tie. Pass one rank to
            every operation on the same cloud (computed once), and :func:`~pointgeo.geometry.ties.selection_rank`
            for FPS centres.

    Returns:
        ``(idx, sqdist)``: ``idx (B, M, k)`` long indices into ``N`` sorted by increasing distance, distances
        within the tie tolerance (:func:`~pointgeo.geometry.ties.tie_scale`) ordered by the points' invariant rank;
        ``sqdist (B, M, k)`` the exact squared distances (differentiable w.r.t. both inputs).
    """
    check_points(points, "points", min_points=k, dim=None)
    check_points(query, "query", dim=points.shape[-1])
    if query.shape[0] != points.shape[0]:
        raise ValueError(f"query and points must have the same batch size; got {query.shape[0]} and {points.shape[0]}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    rank = None if rank is None else check_rank(rank, points)
    use = choose(backend, query, points) if points.shape[-1] == 3 else "torch"
    with torch.no_grad():
        centroid = points.detach().mean(dim=1, keepdim=True)  # the ranking formula loses digits far from 0
        q, p = query.detach() - centroid, points.detach() - centroid
        c = min(points.shape[1], k + 1)  # enough to see a tie at the k-th place; longer ties: a full search
        candidates, sqdist = _knn_open3d(q, p, c) if use == "open3d" else _knn_torch(q, p, c, max_elements)
        idx = _resolve_ties(q, p, candidates, sqdist, k, max_elements, rank)
    return idx, ((index_points(points, idx) - query.unsqueeze(2)) ** 2).sum(-1)


def ball_query(
    query: Tensor,
    points: Tensor,
    radius: float,
    k: int,
    *,
    max_elements: int = MAX_ELEMENTS,
    backend: Backend = "auto",
    rank: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Up to ``k`` neighbours within ``radius`` of every query, nearest first, padded with the nearest one.

    Unlike the PointNet++ CUDA kernel (the first ``k`` points *by index* inside the ball), the neighbours kept are
    the ``k`` nearest inside the ball, so the result does not depend on the order of the points. A neighbour
    within the tie tolerance of the sphere (:func:`~pointgeo.geometry.ties.tie_scale`, e.g. on a grid whose
    spacing is the radius) counts as inside, whatever the rounding in this pose. ``rank`` as in :func:`knn`.

    Returns:
        ``(idx, mask)``: ``idx (B, M, k)`` indices, ``mask (B, M, k)`` true where the neighbour is inside the
        ball. Padded entries repeat the nearest neighbour (which is inside the ball when the query is a point
        of the cloud).
    """
    if radius <= 0:
        raise ValueError(f"radius must be > 0; got {radius}")
    idx, sqdist = knn(query, points, k, max_elements=max_elements, backend=backend, rank=rank)
    mask = sqdist.detach().double().sqrt() <= radius + tie_scale(points)[:, None, None]
    idx = torch.where(mask, idx, idx[..., :1].expand_as(idx))
    return idx, mask
