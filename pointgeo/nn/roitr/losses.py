"""RoITr's ground truth and losses (GeoTransformer's): patch-pair overlaps, the overlap-aware circle loss on
superpoint descriptors and the optimal-transport negative log-likelihood on point matches.

Ground truth comes from the pair's pose ``T`` (source into target): the source moved by ``T`` and the target are
compared with :func:`pointgeo.geometry.ball_query` (patch overlaps) and exact distances inside patch pairs (point
matches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pointgeo.geometry import ball_query, transform_points
from pointgeo.nn.roitr.matching import Patches

OVERLAP_NEIGHBOURS = 32
"""Neighbours within the matching radius looked at per point when computing patch overlaps."""


def _covered(query: Tensor, points: Tensor, member: Tensor, num_patches: int, radius: float) -> Tensor:
    """``(Q, num_patches)`` bool: whether some point of each patch of ``points`` lies within ``radius`` of each
    query (``member (N,)`` the patch of each point, −1 for none)."""
    k = min(OVERLAP_NEIGHBOURS, points.shape[0])
    idx, inside = ball_query(query[None], points[None], radius, k)
    idx, inside = idx[0], inside[0]
    patch = member[idx]
    hit = torch.zeros(query.shape[0], num_patches + 1, dtype=torch.bool, device=query.device)
    rows = torch.arange(query.shape[0], device=query.device).unsqueeze(1).expand_as(idx)
    target = torch.where(inside & (patch >= 0), patch, num_patches)
    hit[rows.reshape(-1), target.reshape(-1)] = True
    return hit[:, :num_patches]


def _fraction(hit: Tensor, member: Tensor, num_patches: int) -> Tensor:
    """``(num_patches, P')``: per patch of the query cloud, the fraction of its points with a hit."""
    inside = member >= 0
    counts = torch.zeros(num_patches, hit.shape[1], dtype=torch.float64, device=hit.device)
    counts.index_add_(0, member[inside], hit[inside].double())
    sizes = torch.bincount(member[inside], minlength=num_patches).double().clamp_min(1)
    return counts / sizes.unsqueeze(1)


def patch_overlaps(src_pos: Tensor, tgt_pos: Tensor, transform: Tensor, src: Patches, tgt: Patches,
                   radius: float) -> Tensor:
    """``(S, T)`` float64 overlap of every (source patch, target patch) pair under ``transform (4, 4)``: the mean of
    the fraction of the source patch's points with a target-patch point within ``radius`` and the same from the
    target's side (GeoTransformer's ``get_node_correspondences``; RoITr ``matching_radius`` 0.05 m)."""
    moved = transform_points(src_pos, transform)
    s, t = src.index.shape[0], tgt.index.shape[0]
    from_src = _fraction(_covered(moved, tgt_pos, tgt.member, t, radius), src.member, s)
    from_tgt = _fraction(_covered(tgt_pos, moved, src.member, s, radius), tgt.member, t)
    return (from_src + from_tgt.T) / 2


def point_match_labels(src_pos: Tensor, tgt_pos: Tensor, transform: Tensor, src_index: Tensor, tgt_index: Tensor,
                       row_mask: Tensor, col_mask: Tensor, radius: float) -> Tensor:
    """``(P, m + 1, n + 1)`` bool labels of the OT output: real pairs within ``radius`` after ``transform``;
    real rows (columns) without a match labelled to the dustbin column (row)."""
    moved = transform_points(src_pos, transform)
    dist = (moved[src_index].unsqueeze(2) - tgt_pos[tgt_index].unsqueeze(1)).norm(dim=-1)  # (P, m, n)
    matched = (dist < radius) & row_mask.unsqueeze(2) & col_mask.unsqueeze(1)
    p, m, n = matched.shape
    labels = torch.zeros(p, m + 1, n + 1, dtype=torch.bool, device=matched.device)
    labels[:, :m, :n] = matched
    labels[:, :m, n] = row_mask & ~matched.any(2)
    labels[:, m, :n] = col_mask & ~matched.any(1)
    return labels


def optimal_transport_loss(log_assignment: Tensor, labels: Tensor) -> Tensor:
    """``L_fine = −mean`` of the log-assignment over the labelled entries (0, still in the graph, if none)."""
    if not bool(labels.any()):
        return log_assignment.sum() * 0
    return -log_assignment[labels].mean()


def overlap_aware_circle_loss(src_desc: Tensor, tgt_desc: Tensor, overlap: Tensor, src_valid: Tensor,
                              tgt_valid: Tensor, *, positive_overlap: float = 0.1, positive_margin: float = 0.1,
                              negative_margin: float = 1.4, positive_optimal: float = 0.1,
                              negative_optimal: float = 1.4, log_scale: float = 24.0) -> Tensor:
    """RoITr's coarse loss on unit superpoint descriptors ``src_desc (S, C)``, ``tgt_desc (T, C)``.

    With ``d_ij = ‖f_i − f_j‖``, positives ``overlap_ij > positive_overlap`` weighted ``λ_ij = √overlap_ij``,
    negatives ``overlap_ij = 0``, ``γ = log_scale``:

        β⁺_ij = λ_ij max(0, d_ij − O_p),   β⁻_ik = max(0, O_n − d_ik)                 (detached)
        L_i = softplus( logsumexp_j γ β⁺_ij (d_ij − Δ_p) + logsumexp_k γ β⁻_ik (Δ_n − d_ik) ) / γ

    averaged over the rows with a positive and a negative, the same over columns, and the two means averaged. As in
    the released code, entries that are not positives (negatives) enter the sums with weight 0, i.e. as ``exp(0)``.
    """
    dist = (2 - 2 * src_desc @ tgt_desc.T).clamp_min(1e-12).sqrt()
    valid = src_valid[:, None] & tgt_valid[None, :]
    overlap = overlap.to(dist.dtype)
    pos = (overlap > positive_overlap) & valid
    neg = (overlap == 0) & valid
    big = 1e5
    pos_w = ((dist - big * (~pos)) - positive_optimal).clamp_min(0) * overlap.clamp_min(0).sqrt()
    neg_w = (negative_optimal - (dist + big * (~neg))).clamp_min(0)
    pos_w, neg_w = pos_w.detach(), neg_w.detach()
    pos_term = log_scale * (dist - positive_margin) * pos_w
    neg_term = log_scale * (negative_margin - dist) * neg_w
    losses = []
    for dim in (1, 0):
        keep = pos.any(dim) & neg.any(dim)
        if bool(keep.any()):
            value = F.softplus(torch.logsumexp(pos_term, dim) + torch.logsumexp(neg_term, dim)) / log_scale
            losses.append(value[keep].mean())
    if not losses:
        return dist.sum() * 0
    return sum(losses) / len(losses)
