"""RoITr's coarse-to-fine matching (GeoTransformer's): superpoint patches, dual-normalised superpoint matching,
optimal transport with a learnable dustbin inside matched patch pairs, mutual top-k correspondences.

1. **Patches**: every point goes to its nearest superpoint; a superpoint keeps at most ``patch_size`` of its nearest
   points among those assigned to it (the rest of its ``patch_size`` nearest are masked).
2. **Superpoint matching**: ``S_ij = exp(−‖f_i − f_j‖²)`` on the unit descriptors, ``S ← (S / Σ_j S) ⊙ (S / Σ_i S)``,
   the ``num_coarse`` largest entries.
3. **Optimal transport** per superpoint pair: ``C = F_src F_tgtᵀ / √d``, bordered by a dustbin row and column
   holding one learnable scalar ``α``; log-domain Sinkhorn with marginals ``1 / (m + n)`` on the real rows and
   columns, ``n / (m + n)`` and ``m / (m + n)`` on the dustbins; output the log-assignment ``+ log(m + n)``.
4. **Correspondences**: entries of ``exp`` of the log-assignment (dustbins dropped) among the ``topk`` largest of
   their row *and* of their column (ties at the ``k``-th value kept, so the choice follows the values, never the
   order) and above ``threshold``; the confidence is that value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pointgeo.geometry import knn

MASKED = -1e12
"""The log-score of masked rows and columns (finite, so no ``−inf − (−inf)`` appears in the iterations)."""


@dataclass
class Patches:
    """Patches of one cloud: ``index (S, K)`` point indices (padded), ``mask (S, K)`` the real ones,
    ``member (N,)`` the patch of each point (−1: in none)."""

    index: Tensor
    mask: Tensor
    member: Tensor


def build_patches(points: Tensor, superpoints: Tensor, point_rank: Tensor, superpoint_rank: Tensor,
                  patch_size: int) -> Patches:
    """Patches of ``points (N, 3)`` around ``superpoints (S, 3)`` (ranks ``(N,)``, ``(S,)`` decide ties)."""
    s, n = superpoints.shape[0], points.shape[0]
    assign = knn(points[None], superpoints[None], 1, rank=superpoint_rank[None])[0][0, :, 0]  # (N,)
    index = knn(superpoints[None], points[None], min(patch_size, n), rank=point_rank[None])[0][0]  # (S, K)
    mask = assign[index] == torch.arange(s, device=points.device).unsqueeze(1)
    member = torch.full((n,), -1, dtype=torch.long, device=points.device)
    rows = torch.arange(s, device=points.device).unsqueeze(1).expand_as(index)
    member[index[mask]] = rows[mask]
    return Patches(index, mask, member)


def superpoint_scores(src: Tensor, tgt: Tensor, src_valid: Tensor, tgt_valid: Tensor) -> Tensor:
    """Dual-normalised matching scores ``(S, T)`` of unit descriptors ``src (S, C)``, ``tgt (T, C)``; rows and
    columns of invalid (empty) superpoints are 0."""
    sq = (2 - 2 * src @ tgt.T).clamp_min(0)
    s = torch.exp(-sq) * (src_valid[:, None] & tgt_valid[None, :])
    tiny = torch.finfo(s.dtype).tiny
    return (s / s.sum(1, keepdim=True).clamp_min(tiny)) * (s / s.sum(0, keepdim=True).clamp_min(tiny))


def top_pairs(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest positive entries of ``scores (S, T)``: ``pairs (P, 2)`` (row, column), ``values (P,)``."""
    k = min(k, int((scores > 0).sum()))
    values, flat = scores.flatten().topk(k)
    return torch.stack([flat // scores.shape[1], flat % scores.shape[1]], dim=-1), values


class LearnableLogOptimalTransport(nn.Module):
    """Log-domain Sinkhorn with a learnable dustbin score ``α`` (init 1.0), ``iterations`` rounds (RoITr 100)."""

    def __init__(self, iterations: int = 100) -> None:
        super().__init__()
        self.iterations = iterations
        self.alpha = nn.Parameter(torch.tensor(1.0))

    def forward(self, scores: Tensor, row_mask: Tensor, col_mask: Tensor) -> Tensor:
        """``scores (P, m, n)``, masks ``(P, m)``, ``(P, n)`` → log-assignment ``(P, m + 1, n + 1)`` (last row and
        column: the dustbins; masked rows and columns at about ``MASKED``)."""
        p, m, n = scores.shape
        alpha = self.alpha.to(scores.dtype)
        padded = torch.cat([torch.cat([scores, alpha.expand(p, m, 1)], 2), alpha.expand(p, 1, n + 1)], 1)
        rows = torch.cat([row_mask, torch.ones_like(row_mask[:, :1])], 1)
        cols = torch.cat([col_mask, torch.ones_like(col_mask[:, :1])], 1)
        valid = rows.unsqueeze(2) & cols.unsqueeze(1)
        padded = torch.where(valid, padded, torch.full_like(padded, MASKED))
        num_rows, num_cols = row_mask.sum(1).to(scores.dtype), col_mask.sum(1).to(scores.dtype)  # (P,)
        norm = -torch.log(num_rows + num_cols)  # (P,)
        log_mu = torch.cat([norm[:, None].expand(p, m), (torch.log(num_cols) + norm)[:, None]], 1)
        log_nu = torch.cat([norm[:, None].expand(p, n), (torch.log(num_rows) + norm)[:, None]], 1)
        log_mu = torch.where(rows, log_mu, torch.full_like(log_mu, MASKED))
        log_nu = torch.where(cols, log_nu, torch.full_like(log_nu, MASKED))
        u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
        for _ in range(self.iterations):
            u = log_mu - torch.logsumexp(padded + v.unsqueeze(1), dim=2)
            v = log_nu - torch.logsumexp(padded + u.unsqueeze(2), dim=1)
        return padded + u.unsqueeze(2) + v.unsqueeze(1) - norm[:, None, None]


def extract_correspondences(log_assignment: Tensor, row_mask: Tensor, col_mask: Tensor, src_index: Tensor,
                            tgt_index: Tensor, topk: int = 3, threshold: float = 0.05
                            ) -> tuple[Tensor, Tensor, Tensor]:
    """Mutual top-``k`` correspondences of patch pairs.

    Args:
        log_assignment: ``(P, m + 1, n + 1)`` from :class:`LearnableLogOptimalTransport`.
        row_mask, col_mask: ``(P, m)``, ``(P, n)`` real patch points.
        src_index, tgt_index: ``(P, m)``, ``(P, n)`` their indices in the clouds.

    Returns:
        ``correspondences (K, 2)`` (source, target point index), ``scores (K,)``, ``group (K,)`` (the patch pair of
        each), ordered by patch pair, then source slot, then target slot.
    """
    m, n = row_mask.shape[1], col_mask.shape[1]
    s = log_assignment[:, :m, :n].exp() * (row_mask.unsqueeze(2) & col_mask.unsqueeze(1))
    row_kth = s.topk(min(topk, n), dim=2).values[..., -1:]
    col_kth = s.topk(min(topk, m), dim=1).values[:, -1:, :]
    keep = (s >= row_kth) & (s >= col_kth) & (s > threshold)
    p, i, j = keep.nonzero(as_tuple=True)
    return torch.stack([src_index[p, i], tgt_index[p, j]], dim=-1), s[p, i, j], p
