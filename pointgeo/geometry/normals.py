"""Normal estimation with a sign rule that is itself rotation invariant.

The normal of point ``p_i`` is the eigenvector of the smallest eigenvalue of its k-neighbourhood's scatter matrix
(PCA; Hoppe et al., SIGGRAPH 1992). Eigenvectors have no sign, and the usual fixes (towards a viewpoint or ``+z``)
are not rotation invariant: the normals of a rotated cloud are then not the rotated normals. Here the normals are
chosen from the cloud itself, so that ``normals(x R^T + t) = normals(x) R^T``:

* **Direction.** A neighbourhood without a plane leaves the smallest eigenvector undetermined. Where its second
  eigenvalue is at rounding level (``k (64 ε max|p|)^2 + 64 ε λ_1``: a line, e.g. duplicated or collinear
  points), the normal is the direction perpendicular to that line closest to the cloud's least-variance axis
  ``a`` (to its middle axis where the line runs along ``a``); where even its first eigenvalue is (all points
  equal), it is ``a`` itself. All of these turn with the cloud.
* **Sign**, in order, the first that is decided:

  1. ``n_i`` points away from the cloud's centroid ``c``: ``sign(n_i · (p_i - c))``, where ``|n_i · (p_i - c)|`` is
     above ``√ε`` of the cloud radius (not on a plane through the centroid);
  2. the neighbourhood's third moment along ``n_i``, ``sign(Σ_j ((p_j - m_i) · n_i)^3)``, where it is not rounding
     noise (:func:`~pointgeo.geometry.frames.skew_tolerance`);
  3. agreement with the cloud's signed least-variance axis (:func:`~pointgeo.geometry.frames.signed_least_axis`):
     for a planar cloud, the handedness of its in-plane principal axes.

  Only clouds that are planar *and* mirror symmetric within their plane, or collinear (where a normal has no
  meaning and its sign changes no RISP feature), are left without an invariant sign.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.checks import check_points
from pointgeo.geometry.frames import centre, principal_axes, signed_least_axis, skew_signs
from pointgeo.geometry.neighbors import index_points, knn


def estimate_normals(pos: Tensor, k: int = 16, rank: Tensor | None = None) -> Tensor:
    """Unit normals ``(B, N, 3)`` of clouds ``pos (B, N, 3)`` from their ``k``-neighbourhoods (``k >= 3``);
    ``rank (B, N)`` the points' invariant rank for the neighbours' ties and the cloud axis's sign (default
    :func:`~pointgeo.geometry.ties.invariant_rank`, see :func:`~pointgeo.geometry.knn`)."""
    if k < 3:
        raise ValueError(f"k must be >= 3 to estimate a normal; got {k}")
    check_points(pos, "pos", min_points=k)
    offsets, _ = centre(pos)  # (B, N, 3) from the cloud's centroid
    cloud_axes = principal_axes(offsets)[1][:, None]  # (B, 1, 3, 3), signs irrelevant
    idx, _ = knn(pos, pos, k, rank=rank)
    local, _ = centre(index_points(pos, idx))  # (B, N, k, 3) around each neighbourhood's mean
    evals, axes = principal_axes(local)
    eps = 64 * torch.finfo(pos.dtype).eps
    rounding = k * (eps * pos.abs().amax(dim=(1, 2)))[:, None, None] ** 2  # (B, 1, 1): coordinates' rounding
    line = axes[..., :1]  # (B, N, 3, 1)
    across_line = cloud_axes - line * (line * cloud_axes).sum(-2, keepdim=True)  # cloud axes minus their part along it
    length = across_line.norm(dim=-2)  # (B, N, 3)
    # the least axis across the line, or the middle one where the line runs (nearly) along the least axis
    unit = across_line / length.unsqueeze(-2).clamp_min(torch.finfo(pos.dtype).tiny)
    across = torch.where(length[..., 2:] > 0.1, unit[..., 2], unit[..., 1])
    planar = evals[..., 1:2] > rounding + eps * evals[..., :1]  # beyond the coordinates' and the solver's rounding
    normal = torch.where(planar, axes[..., 2], across)
    normal = torch.where(evals[..., :1] > rounding, normal, cloud_axes[..., 2])
    outward = (offsets * normal).sum(-1)
    radius = offsets.norm(dim=-1).amax(dim=1, keepdim=True)
    skew = skew_signs((local * normal.unsqueeze(2)).sum(-1, keepdim=True), lengths=local.norm(dim=-1)).squeeze(-1)
    agree = (normal * signed_least_axis(offsets, rank=rank).unsqueeze(1)).sum(-1)
    off_centre = outward.abs() > torch.finfo(pos.dtype).eps ** 0.5 * radius
    decided = torch.where(off_centre, outward, torch.where(skew != 0, skew, agree))
    return torch.where(decided.unsqueeze(-1) < 0, -normal, normal)
