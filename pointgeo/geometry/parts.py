"""Per-part operations on partitioned clouds: sums and means over parts, part frames, an invariant rank inside parts
and the nearest neighbours of every point inside its own part.

A partition is a label per point, ``parts (B, N)`` in ``[0, K)``; a part may be empty. Everything here is a dense
scatter/gather over the labels (``index_add_``, ``gather``), never a Python loop over parts or points, so ragged
parts (APEN's per-part computation, which the released code runs on MinkowskiEngine sparse tensors) cost ``O(B N)``
memory besides the ``(B, K, ...)`` per-part results.

Every quantity of a part depends only on that part's points, relative to its centroid: moving each part by its own
rigid motion ``x ↦ R_p (x − c_p) + c_p + t_p`` (:func:`pointgeo.geometry.piecewise_motion`) moves its frame to
``R_p V_p S`` (``S`` one of the four proper sign flips, given distinct principal variances), leaves its rank
(:func:`part_rank`) and its points' neighbours (:func:`knn_in_parts`) unchanged, whatever the other parts do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pointgeo.geometry.checks import check_points
from pointgeo.geometry.frames import scatter_axes
from pointgeo.geometry.neighbors import MAX_ELEMENTS, distance_rows
from pointgeo.geometry.ties import lexicographic_rank, smallest_with_ties, tie_break, tie_fraction


PARTITION_KEYS = ("instance", "seg")
"""Batch keys that can define the rigid pieces of a cloud, in order of preference: a multi-object scene's
``instance`` ids (its ``seg`` labels classes, shared by objects of one class), else the part labels ``seg`` (the
articulated set's parts)."""


def partition_of(batch: Mapping[str, Tensor]) -> Tensor:
    """The ``(B, N)`` long labels of the rigid pieces of a batch: its first key of :data:`PARTITION_KEYS`.

    Raises:
        ValueError: the batch has none of them.
    """
    for key in PARTITION_KEYS:
        if key in batch:
            return batch[key].long()
    raise ValueError(f"the batch has no partition: piecewise motions need one of the keys {PARTITION_KEYS} "
                     f"(part-segmentation or multi-object data); got keys {sorted(batch)}")


def check_parts(parts: Tensor, pos: Tensor, num_parts: int | None = None, name: str = "partition") -> Tensor:
    """``parts`` as a long tensor after checking it labels every point of ``pos (B, N, 3)`` with an integer in
    ``[0, num_parts)`` (any non-negative integer without ``num_parts``). One ``ValueError`` naming ``name``."""
    shape = tuple(parts.shape) if isinstance(parts, Tensor) else type(parts).__name__
    if not isinstance(parts, Tensor) or parts.shape != pos.shape[:2] or parts.is_floating_point() \
            or parts.dtype == torch.bool:
        raise ValueError(f"{name} must be integer part labels (B, N) = {tuple(pos.shape[:2])}; got {shape}")
    if parts.numel() and (int(parts.min()) < 0 or (num_parts is not None and int(parts.max()) >= num_parts)):
        bound = f"[0, {num_parts})" if num_parts is not None else ">= 0"
        raise ValueError(f"{name} labels must be in {bound}; got [{int(parts.min())}, {int(parts.max())}]")
    return parts.to(device=pos.device, dtype=torch.long)


def part_sums(values: Tensor, parts: Tensor, num_parts: int, weights: Tensor | None = None) -> Tensor:
    """``Σ_{i in part k} w_i v_i``: per-point ``values (B, N, ...)``, labels ``parts (B, N)``, optional weights
    ``(B, N)`` → ``(B, K, ...)`` (zero for empty parts). Differentiable w.r.t. ``values`` and ``weights``."""
    b, n = parts.shape
    rest = values.shape[2:]
    if weights is not None:
        values = values * weights.reshape(b, n, *([1] * len(rest)))
    flat = (parts + num_parts * torch.arange(b, device=parts.device)[:, None]).reshape(-1)
    out = values.new_zeros((b * num_parts, *rest)).index_add(0, flat, values.reshape(b * n, *rest))
    return out.reshape(b, num_parts, *rest)


def part_means(values: Tensor, parts: Tensor, num_parts: int, weights: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
    """``(means (B, K, ...), mass (B, K))``: the (weighted) mean of ``values (B, N, ...)`` over each part and the
    part's total weight (its point count without ``weights``); empty parts have mean 0."""
    ones = torch.ones(parts.shape, dtype=values.dtype, device=values.device)
    mass = part_sums(ones, parts, num_parts, weights)
    total = part_sums(values, parts, num_parts, weights)
    shape = mass.shape + (1,) * (values.dim() - 2)
    return total / mass.clamp_min(torch.finfo(values.dtype).tiny).reshape(shape), mass


def gather_parts(per_part: Tensor, parts: Tensor) -> Tensor:
    """Each point's value of its part: ``per_part (B, K, ...)``, ``parts (B, N)`` → ``(B, N, ...)``."""
    b, n = parts.shape
    rest = per_part.shape[2:]
    index = parts.reshape(b, n, *([1] * len(rest))).expand(b, n, *rest)
    return torch.gather(per_part, 1, index)


@dataclass(frozen=True)
class PartFrames:
    """The principal frame of every part of a partition.

    Attributes:
        centre: ``(B, K, 3)`` (weighted) centroids ``c_k``.
        axes: ``(B, K, 3, 3)`` proper principal axes (columns, variance descending, ``det = +1``), detached.
        variances: ``(B, K, 3)`` eigenvalues of the scatter ``Σ_i w_i (x_i − c_k)(x_i − c_k)^T``, descending.
        count: ``(B, K)`` points of each part (integers, whatever the weights).
        determined: ``(B, K)`` whether the axes are fixed up to the four proper sign flips: at least 3 points and
            the three variances pairwise apart by more than ``gap`` times the largest. Parts with fewer points,
            collinear parts and parts with two equal variances (axisymmetric) have no such frame.
    """

    centre: Tensor
    axes: Tensor
    variances: Tensor
    count: Tensor
    determined: Tensor


def frame_gap(dtype: torch.dtype) -> float:
    """``√ε`` of ``dtype``: principal variances closer than this fraction of the largest leave a part's axes
    undetermined (float64 ``1.5e-8``, float32 ``3.5e-4``: far above the rounding of the eigenvalues, ``~ε``)."""
    return torch.finfo(dtype).eps ** 0.5


def part_frames(pos: Tensor, parts: Tensor, num_parts: int, weights: Tensor | None = None,
                gap: float | None = None) -> PartFrames:
    """The principal frames of the parts of clouds ``pos (B, N, 3)`` labelled ``parts (B, N)`` (see
    :class:`PartFrames`): centroids and scatters by :func:`part_sums`, axes by
    :func:`~pointgeo.geometry.frames.scatter_axes`, made proper by ``V ← sign(det V) V``. ``weights (B, N)``
    weight the centroid and the scatter (APEN: the hard partition's straight-through weights); ``gap`` defaults
    to :func:`frame_gap` of the dtype."""
    centre, _ = part_means(pos, parts, num_parts, weights)
    y = (pos - gather_parts(centre, parts)).detach()
    scatter = part_sums(y.unsqueeze(-1) * y.unsqueeze(-2), parts, num_parts,
                        None if weights is None else weights.detach())
    variances, axes = scatter_axes(scatter)
    axes = axes * torch.sign(torch.linalg.det(axes))[..., None, None]
    count = part_sums(torch.ones(parts.shape, dtype=torch.long, device=parts.device), parts, num_parts)
    tol = (frame_gap(pos.dtype) if gap is None else gap) * variances[..., 0]
    determined = (count >= 3) & (variances[..., 0] - variances[..., 1] > tol) & \
        (variances[..., 1] - variances[..., 2] > tol)
    return PartFrames(centre, axes, variances, count, determined)


@torch.no_grad()
def part_rank(pos: Tensor, parts: Tensor, frames: PartFrames) -> Tensor:
    """A rank ``(B, N)`` of the points whose order *within each part* is invariant to that part's rigid motion
    and to permutations: by the distance to the part's centroid, then (in parts with a determined frame) the
    pseudo-scalar ``y_1 y_2 y_3`` of the principal coordinates (unchanged by the proper sign flips, it tells
    mirror images apart) and their absolute values; each key compared within the tie tolerance ``ε^{3/4}`` of the
    largest part's RMS radius (:mod:`pointgeo.geometry.ties`). Points tied in every key keep their index order."""
    x = pos.detach().double()
    y = x - gather_parts(frames.centre.detach().double(), parts)
    radius = y.norm(dim=-1)
    k = frames.centre.shape[1]
    rms = part_means(radius.pow(2), parts, k)[0].sqrt().amax(-1, keepdim=True)  # (B, 1)
    tau = tie_fraction(pos.dtype) * rms.clamp_min(torch.finfo(torch.float64).tiny)

    def further() -> list[tuple[Tensor, Tensor]]:
        coords = (y.unsqueeze(-2) @ gather_parts(frames.axes.double(), parts)).squeeze(-2)  # (B, N, 3)
        coords = coords * gather_parts(frames.determined, parts).unsqueeze(-1)
        v = frames.variances.double()
        gaps = torch.minimum(v[..., 0] - v[..., 1], v[..., 1] - v[..., 2]).clamp_min(torch.finfo(torch.float64).tiny)
        error = torch.where(frames.determined, v[..., 0] / gaps, torch.zeros_like(gaps)).amax(-1, keepdim=True)
        tol = tau + rms * 6 * tie_fraction(pos.dtype) * error
        volume = (coords.prod(-1), rms**3 * 3 * (tie_fraction(pos.dtype) + 6 * tie_fraction(pos.dtype) * error))
        return [volume, *((coords[..., d].abs(), tol) for d in range(3))]

    return lexicographic_rank(further, first=(radius, tau))


@torch.no_grad()
def knn_in_parts(pos: Tensor, parts: Tensor, k: int, *, num_parts: int | None = None, rank: Tensor | None = None,
                 max_elements: int = MAX_ELEMENTS) -> Tensor:
    """The ``k`` nearest points of every point **inside its own part** (itself, or a duplicate of
    it, first), batched.

    Distances are ranked on part-centred coordinates (so far-apart parts lose no digits), the ``k + 1`` candidates
    recomputed in float64, and distances within the part's tie tolerance (``ε^{3/4}`` of its RMS radius) ordered
    by ``rank`` (default :func:`part_rank`); a tie at the ``k``-th place that reaches the last candidate is decided
    over the whole part. (Neighbours tied in every key of the rank are exchanged by a proper symmetry of the part,
    e.g. the half turns of a box on a grid: their order follows the input order, the one case left open.) A part
    with fewer than ``k`` points pads its points' lists with the point itself, so no neighbour ever comes from
    another part.

    Args:
        pos: ``(B, N, 3)`` positions.
        parts: ``(B, N)`` labels in ``[0, num_parts)`` (default ``max + 1``).
        k: neighbours per point, ``1 <= k <= N``.
        rank: ``(B, N)`` invariant rank deciding exact ties (see :func:`part_rank`).

    Returns:
        ``(B, N, k)`` long indices into ``N``, nearest first.
    """
    check_points(pos, "pos", min_points=k)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    num_parts = int(parts.max()) + 1 if num_parts is None else num_parts
    parts = check_parts(parts, pos, num_parts)
    b, n, _ = pos.shape
    x = pos.detach()
    frames = None
    if rank is None:
        frames = part_frames(x.double(), parts, num_parts)
        rank = part_rank(x, parts, frames)
    centre = frames.centre.to(x.dtype) if frames is not None else part_means(x, parts, num_parts)[0]
    y = x - gather_parts(centre, parts)
    c = min(n, k + 1)
    chunk = max(1, max_elements // max(1, b * n))
    norms = (y * y).sum(-1)
    found = []
    for s in range(0, n, chunk):  # chunks of queries bound the (B, chunk, N) distance matrix
        d = torch.baddbmm(norms.unsqueeze(1), y[:, s:s + chunk], y.transpose(1, 2), alpha=-2.0)
        d = d + norms[:, s:s + chunk, None]
        d = d.masked_fill(parts[:, s:s + chunk, None] != parts[:, None, :], torch.inf)
        found.append(d.topk(c, dim=-1, largest=False, sorted=True).indices)
    cand = torch.cat(found, 1)  # (B, N, c)
    x64 = pos.detach().double()
    rms = part_means((y.double() ** 2).sum(-1), parts, num_parts)[0].sqrt()  # (B, K)
    tol = tie_fraction(pos.dtype) * gather_parts(rms, parts).unsqueeze(-1)  # (B, N, 1)
    batch = torch.arange(b, device=pos.device)[:, None, None]
    dist = (x64[batch, cand] - x64.unsqueeze(2)).norm(dim=-1)
    dist = dist.masked_fill(parts[batch, cand] != parts.unsqueeze(-1), torch.inf)
    order, tie = tie_break(dist, tol, rank[batch, cand])
    idx = torch.gather(cand, 2, order)[..., :k]
    sorted_dist = torch.gather(dist, 2, order)
    nearest_dist = sorted_dist[..., :k].clone()
    if c < n:
        long_tie = (tie[..., k - 1] == tie[..., -1]) & torch.isfinite(sorted_dist[..., -1])
        rows = long_tie.nonzero(as_tuple=True)
        if rows[0].numel():
            full = distance_rows(x64, x64, rows[0], rows[1], max_elements)  # (R, N)
            full = full.masked_fill(parts[rows[0]] != parts[rows].unsqueeze(-1), torch.inf)
            again = smallest_with_ties(full, tol[rows], rank, rows[0], k)
            idx[rows] = again
            nearest_dist[rows] = torch.gather(full, 1, again)
    inside = torch.isfinite(nearest_dist)
    return torch.where(inside, idx, idx[..., :1].expand_as(idx))
