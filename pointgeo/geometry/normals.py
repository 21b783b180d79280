"""Normal estimation with a sign rule that is itself rotation invariant.

The normal of point ``p_i`` is the eigenvector of the smallest eigenvalue of its k-neighbourhood's scatter matrix
(PCA; Hoppe et al., SIGGRAPH 1992). Eigenvectors have no sign, and the usual fixes (towards a viewpoint or ``+z``)
are not rotation invariant: the normals of a rotated cloud are then not the rotated normals. Here the sign is chosen
from the cloud itself, so that ``normals(x R^T) = normals(x) R^T``:

1. ``n_i`` points away from the cloud's centroid ``c``: ``sign(n_i · (p_i - c))``;
2. where that is ambiguous (``|n_i · (p_i - c)|`` below ``1e-6`` of the cloud radius, e.g. the centre of a flat
   patch), the neighbourhood's third moment along ``n_i`` decides: ``sign(Σ_j ((p_j - m_i) · n_i)^3)``;
3. if both vanish (a perfectly flat, symmetric neighbourhood through the centroid), ``+`` is kept: only there is
   the sign not guaranteed invariant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.checks import check_points
from pointgeo.geometry.frames import centre, principal_axes
from pointgeo.geometry.neighbors import index_points, knn


def estimate_normals(pos: Tensor, k: int = 16) -> Tensor:
    """Unit normals ``(B, N, 3)`` of clouds ``pos (B, N, 3)`` from their ``k``-neighbourhoods (``k >= 3``)."""
    if k < 3:
        raise ValueError(f"k must be >= 3 to estimate a normal; got {k}")
    check_points(pos, "pos", min_points=k)
    idx, _ = knn(pos, pos, k)
    local, _ = centre(index_points(pos, idx))  # (B, N, k, 3) around each neighbourhood's mean
    _, axes = principal_axes(local)
    normal = axes[..., 2]  # (B, N, 3): smallest eigenvalue
    outward = ((pos - pos.mean(dim=1, keepdim=True)) * normal).sum(-1)
    radius = (pos - pos.mean(dim=1, keepdim=True)).norm(dim=-1).amax(dim=1, keepdim=True)
    skew = ((local * normal.unsqueeze(2)).sum(-1) ** 3).sum(-1)
    decided = torch.where(outward.abs() > 1e-6 * radius, outward, skew)
    return torch.where(decided.unsqueeze(-1) < 0, -normal, normal)
