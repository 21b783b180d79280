"""Local-to-global registration (LGR; Qin et al., GeoTransformer, CVPR 2022): a deterministic estimator of the
rigid motion from grouped, weighted correspondences.

1. **Local hypotheses**: for every group (a matched patch pair) with at least ``min_local`` correspondences, the
   weighted Kabsch estimate (:func:`~pointgeo.geometry.estimate_rigid_transform`) from its correspondences alone.
2. **Selection**: the hypothesis that maps the most correspondences of *all* groups within ``distance`` (ties: the
   first group in the given order).
3. **Refinement**: ``refine_steps`` times, the weighted Kabsch estimate from the correspondences that are inliers of
   the current estimate.

Nothing is sampled, and every step is equivariant: for clouds moved by ``M₁`` (source) and ``M₂`` (target) with the
same correspondences, groups and weights, the estimate is ``M₂ · T̂ · M₁⁻¹`` (inlier tests compare invariant
distances; the Kabsch estimates are equivariant where their correspondences are not collinear).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.registration import MIN_INLIERS, RegistrationResult, _single_cloud
from pointgeo.geometry.rigid import estimate_rigid_transform


def _inliers(transform: Tensor, x: Tensor, y: Tensor, distance: float) -> Tensor:
    """``(…, K)`` bool: correspondences ``x (K, 3) → y (K, 3)`` that ``transform (…, 4, 4)`` maps within
    ``distance``."""
    moved = x @ transform[..., :3, :3].transpose(-1, -2) + transform[..., None, :3, 3]
    return (moved - y).norm(dim=-1) < distance


def local_to_global_registration(source: Tensor, target: Tensor, correspondences: Tensor, scores: Tensor,
                                 groups: Tensor, *, distance: float = 0.1, refine_steps: int = 5, min_local: int = 3,
                                 min_inliers: int = MIN_INLIERS) -> RegistrationResult:
    """LGR (module docstring) on ``correspondences (K, 2)`` (source index, target index) between ``source (N, 3)``
    and ``target (M, 3)``, with confidences ``scores (K,)`` (positive) and group labels ``groups (K,)``.

    Returns:
        A :class:`~pointgeo.geometry.registration.RegistrationResult` in the clouds' dtype promoted to float64
        where needed (``transform`` float64); ``success=False`` (identity, with the reason) when fewer than 3
        correspondences are given, no group has ``min_local`` of them, or the best estimate has fewer than
        ``min_inliers`` inliers.

    Raises:
        ValueError: clouds that are not finite ``(N, 3)`` tensors, indices outside them, mismatched lengths,
            negative or non-finite scores.
    """
    source = _single_cloud(source, "source", 1)
    target = _single_cloud(target, "target", 1)
    corr = torch.as_tensor(correspondences).long().reshape(-1, 2)
    k = len(corr)
    if scores.shape != (k,) or groups.shape != (k,):
        raise ValueError(f"scores and groups must have shape ({k},) like the correspondences; got "
                         f"{tuple(scores.shape)} and {tuple(groups.shape)}")
    if k and ((corr < 0).any() or (corr[:, 0] >= len(source)).any() or (corr[:, 1] >= len(target)).any()):
        raise ValueError("correspondences index points outside the source or target cloud")
    if not torch.isfinite(scores).all() or (scores < 0).any():
        raise ValueError("scores must be finite and non-negative")
    eye = torch.eye(4, dtype=torch.float64, device=source.device)
    if k < 3:
        return RegistrationResult(eye, corr, 0, distance, False,
                                  f"registration failed: {k} correspondences, at least 3 are needed")
    dtype = torch.promote_types(source.dtype, torch.float64)
    x, y, w = source[corr[:, 0]].to(dtype), target[corr[:, 1]].to(dtype), scores.to(dtype)
    labels, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(order)
    slot[order] = torch.arange(k, device=order.device) - start[inverse[order]]
    size = int(counts.max())
    xs = torch.zeros(len(labels), size, 3, dtype=dtype, device=x.device)
    ys, ws = torch.zeros_like(xs), torch.zeros(len(labels), size, dtype=dtype, device=x.device)
    xs[inverse, slot], ys[inverse, slot], ws[inverse, slot] = x, y, w
    usable = (counts >= min_local) & (ws.sum(-1) > 0)
    if not bool(usable.any()):
        return RegistrationResult(eye, corr, 0, distance, False,
                                  f"registration failed: no group holds {min_local} correspondences")
    local = estimate_rigid_transform(xs[usable], ys[usable], ws[usable])  # (G, 4, 4)
    votes = _inliers(local, x, y, distance).sum(-1)
    transform = local[int(votes.argmax())]
    for _ in range(refine_steps):
        inl = _inliers(transform, x, y, distance)
        if int(inl.sum()) < 3 or float(w[inl].sum()) <= 0:
            break
        transform = estimate_rigid_transform(x[inl][None], y[inl][None], w[inl][None])[0]
    inliers = int(_inliers(transform, x, y, distance).sum())
    if inliers < min_inliers:
        return RegistrationResult(eye, corr, inliers, distance, False,
                                  f"registration failed: {inliers} of {k} correspondences agree on one motion "
                                  f"(fewer than {min_inliers}); the clouds may not overlap")
    return RegistrationResult(transform.double(), corr, inliers, distance, True,
                              f"{inliers} of {k} correspondences are inliers within {distance:g} (LGR)")


__all__ = ["local_to_global_registration"]
