"""Rigid transforms as ``(…, 4, 4)`` homogeneous matrices: building, inverting, applying, comparing, and the
deterministic weighted least-squares estimate from correspondences (Kabsch / Umeyama without scale).

Convention: ``T = [[R, t], [0, 1]]`` maps a source point ``x`` (a row vector) to ``x Rᵀ + t`` — the
row-vector convention of :func:`pointgeo.geometry.rotate`. Registration transforms map the **source** fragment into
the **target** fragment's frame.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pointgeo.geometry.checks import check_points


def rigid_matrix(rotation: Tensor, translation: Tensor | None = None) -> Tensor:
    """``(…, 4, 4)`` homogeneous matrices from rotations ``(…, 3, 3)`` and translations ``(…, 3)`` (``None``:
    zero)."""
    if not isinstance(rotation, Tensor) or rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3); got {getattr(rotation, 'shape', type(rotation))}")
    if translation is not None and (not isinstance(translation, Tensor) or
                                    translation.shape != rotation.shape[:-1]):
        raise ValueError(f"translation must have shape {tuple(rotation.shape[:-1])}; "
                         f"got {getattr(translation, 'shape', type(translation))}")
    out = torch.zeros(rotation.shape[:-2] + (4, 4), dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    if translation is not None:
        out[..., :3, 3] = translation.to(rotation.dtype)
    out[..., 3, 3] = 1
    return out


def _check_transform(transform: Tensor, name: str) -> None:
    if not isinstance(transform, Tensor) or not transform.is_floating_point() or transform.shape[-2:] != (4, 4):
        shape = tuple(transform.shape) if isinstance(transform, Tensor) else type(transform).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., 4, 4); got {shape}")


def invert_rigid(transform: Tensor) -> Tensor:
    """The inverse ``[[Rᵀ, -Rᵀ t], [0, 1]]`` of rigid transforms ``(…, 4, 4)`` (exact for rigid ones, no solve)."""
    _check_transform(transform, "transform")
    rot_t = transform[..., :3, :3].transpose(-1, -2)
    return rigid_matrix(rot_t, -(rot_t @ transform[..., :3, 3:4]).squeeze(-1))


def transform_points(points: Tensor, transform: Tensor) -> Tensor:
    """``points (…, N, 3)`` moved by ``transform (…, 4, 4)``: ``x Rᵀ + t`` (in the wider dtype, cast back)."""
    _check_transform(transform, "transform")
    work = torch.promote_types(points.dtype, transform.dtype)
    t = transform.to(device=points.device, dtype=work)
    out = points.to(work) @ t[..., :3, :3].transpose(-1, -2) + t[..., None, :3, 3]
    return out.to(points.dtype)


def rotation_error_degrees(estimate: Tensor, truth: Tensor) -> Tensor:
    """Relative rotation error of ``(…, 4, 4)`` (or ``(…, 3, 3)``) estimates against the truths, in degrees; ``(…)``.

    The angle of ``ΔR = R̂ᵀ R*``, ``θ = atan2(‖ΔR − ΔRᵀ‖_F / (2√2), (tr ΔR − 1) / 2)``, which equals the benchmark's
    ``arccos((tr(R̂ᵀ R*) − 1) / 2)`` for rotation matrices and stays accurate near 0 and π, where arccos loses
    precision; for stored poses that are orthonormal only to ~1e-3 (as 3DMatch's are) it gives 0 for identical
    poses, where the arccos form reports up to a few tenths of a degree.
    """
    delta = estimate[..., :3, :3].transpose(-1, -2) @ truth[..., :3, :3].to(estimate.dtype)
    cos = (delta.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    sin = (delta - delta.transpose(-1, -2)).flatten(-2).norm(dim=-1) / (2 * math.sqrt(2))
    return torch.rad2deg(torch.atan2(sin, cos))


def translation_error(estimate: Tensor, truth: Tensor) -> Tensor:
    """Relative translation error ``‖t̂ − t*‖₂`` of ``(…, 4, 4)`` estimates against the truths; ``(…)``."""
    return (estimate[..., :3, 3] - truth[..., :3, 3].to(estimate.dtype)).norm(dim=-1)


def estimate_rigid_transform(source: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """The rigid transform minimising ``Σ_k w_k ‖R x_k + t − y_k‖²`` over correspondences ``(x_k, y_k)``.

    Weighted Kabsch / Umeyama without scale: with ``x̄ = Σ w x / Σ w`` (``ȳ`` alike) and the weighted
    cross-covariance ``H = Σ_k w_k (x_k − x̄)ᵀ (y_k − ȳ) = U S Vᵀ``,

        R = V diag(1, 1, det(V Uᵀ)) Uᵀ,        t = ȳ − R x̄

    (the diagonal correction turns the best orthogonal map into the best *rotation* when the unconstrained optimum is
    a reflection). Deterministic (no sampling) and equivariant:
    ``T̂(X R₁ᵀ + t₁, Y R₂ᵀ + t₂) = [R₂|t₂] · T̂(X, Y) · [R₁|t₁]⁻¹`` whenever the optimum is unique (the two
    smallest singular values of ``H`` distinct, i.e. the correspondences are not collinear).

    Args:
        source: ``(B, K, 3)`` source points ``x_k``.
        target: ``(B, K, 3)`` corresponding target points ``y_k``.
        weights: ``(B, K)`` non-negative confidences (``None``: all 1). Each batch element needs a positive total.

    Returns:
        ``(B, 4, 4)`` transforms mapping source into target (dtype of ``source``).

    Raises:
        TypeError / ValueError: shapes differ, fewer than 3 correspondences, NaN/inf, negative weights, a batch
            element whose weights are all zero.
    """
    check_points(source, "source", min_points=3)
    check_points(target, "target", min_points=3)
    if target.shape != source.shape:
        raise ValueError(f"target must have the shape of source {tuple(source.shape)}; got {tuple(target.shape)}")
    target = target.to(source.dtype)
    if weights is None:
        weights = torch.ones(source.shape[:2], dtype=source.dtype, device=source.device)
    if not isinstance(weights, Tensor) or weights.shape != source.shape[:2]:
        raise ValueError(f"weights must have shape {tuple(source.shape[:2])}; got "
                         f"{getattr(weights, 'shape', type(weights))}")
    weights = weights.to(source.dtype)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("weights must be finite and non-negative")
    total = weights.sum(-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError(f"every batch element needs a positive total weight; elements "
                         f"{(total[:, 0] <= 0).nonzero().flatten().tolist()[:10]} have none")
    w = (weights / total).unsqueeze(-1)
    src_mean = (w * source).sum(1, keepdim=True)
    tgt_mean = (w * target).sum(1, keepdim=True)
    cross = ((source - src_mean) * w).transpose(-1, -2) @ (target - tgt_mean)  # H (B, 3, 3)
    u, _, vh = torch.linalg.svd(cross)
    v = vh.transpose(-1, -2)
    sign = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    diag = torch.ones(source.shape[0], 3, dtype=source.dtype, device=source.device)
    diag[:, 2] = sign
    rotation = v @ torch.diag_embed(diag) @ u.transpose(-1, -2)
    translation = tgt_mean.squeeze(1) - (rotation @ src_mean.transpose(-1, -2)).squeeze(-1)
    return rigid_matrix(rotation, translation)


def matrix_to_quaternion(rotation: Tensor) -> Tensor:
    """Unit quaternions ``(w, x, y, z)`` with ``w ≥ 0`` of rotation matrices ``(…, 3, 3)``; ``(…, 4)``.

    Computed as the eigenvector of the largest eigenvalue of Bar-Itzhack's symmetric 4×4 matrix, which stays
    accurate for any rotation (also near 180°, where the trace formula loses precision), then signed ``w ≥ 0``.
    """
    m = rotation
    xx, xy, xz = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    yx, yy, yz = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    zx, zy, zz = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    k = torch.stack([
        xx - yy - zz, yx + xy, zx + xz, zy - yz,
        yx + xy, yy - xx - zz, zy + yz, xz - zx,
        zx + xz, zy + yz, zz - xx - yy, yx - xy,
        zy - yz, xz - zx, yx - xy, xx + yy + zz,
    ], dim=-1).reshape(m.shape[:-2] + (4, 4)) / 3
    _, vectors = torch.linalg.eigh(k)
    xyzw = vectors[..., -1]
    q = torch.cat([xyzw[..., 3:], xyzw[..., :3]], dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def random_rigid_motions(n: int, *, scale: float = 1.0, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` random rigid transforms ``(n, 4, 4)``: Haar rotations, Gaussian translations of standard deviation
    ``scale`` (tests, augmentation)."""
    from pointgeo.geometry.rotations import random_rotations  # noqa: PLC0415  (same layer; avoids an import cycle)

    rot = random_rotations(n, generator=generator, dtype=torch.float64)
    shift = scale * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return rigid_matrix(rot, shift).to(dtype)


def voxel_downsample(points: Tensor, voxel_size: float) -> Tensor:
    """The mean of the points in each occupied voxel of edge ``voxel_size``: ``(N, 3) -> (M, 3)``, ``M ≤ N``.

    Voxels are the cells ``floor(x / voxel_size)`` of the grid anchored at the origin (Open3D's
    ``voxel_down_sample`` averages the same way); the output is ordered by voxel index (lexicographic), so it is
    deterministic and independent of the input order up to floating-point summation order.

    Raises:
        ValueError: ``voxel_size`` not positive and finite, NaN/inf or empty input, or a cloud so large relative to
            the voxel that its cell indices overflow int64.
    """
    if not (isinstance(voxel_size, (int, float)) and math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive finite number; got {voxel_size!r}")
    check_points(points.unsqueeze(0) if isinstance(points, Tensor) and points.dim() == 2 else points, "points")
    if points.dim() != 2:
        raise ValueError(f"points must have shape (N, 3); got {tuple(points.shape)}")
    cells = torch.floor(points.double() / voxel_size)
    if cells.abs().max() > 2**52:
        raise ValueError(f"points span {cells.abs().max():.3g} voxels of size {voxel_size}; choose a larger voxel")
    cells = cells.long()
    low = cells.min(0).values
    span = (cells.max(0).values - low + 1).tolist()
    if span[0] * span[1] * span[2] < 2**62:  # one int64 key per cell, ordered as the rows (lexicographic)
        shifted = cells - low
        key = (shifted[:, 0] * span[1] + shifted[:, 1]) * span[2] + shifted[:, 2]
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    else:  # sparse clouds over a huge grid: unique rows (slower)
        _, inverse, counts = torch.unique(cells, dim=0, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), 3, dtype=torch.float64, device=points.device)
    sums.index_add_(0, inverse, points.double())
    return (sums / counts.unsqueeze(-1)).to(points.dtype)
