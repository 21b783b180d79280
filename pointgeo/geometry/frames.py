"""Principal-axis (PCA / classical MDS) canonical frames with deterministic sign rules.

Classical MDS of a cloud ``X (N, 3)`` double-centres the squared distances, ``B = -1/2 J D J = X_c X_c^T``, and
embeds with the top eigenvectors of ``B``: ``Y = U Λ^{1/2}``. The non-zero spectrum of the ``N × N`` matrix ``B``
equals that of the ``3 × 3`` scatter ``X_c^T X_c = V Λ V^T``, and ``Y = X_c V`` (up to column signs), so everything
here works on the ``3 × 3`` problem in ``O(N)``.

Guarantees (given eigenvalues that are pairwise distinct): the frame ``V`` of a rotated cloud ``X R^T`` is
``R V S`` with ``S`` a diagonal sign matrix, so the canonical coordinates ``X_c V`` change only by column signs.
:func:`canonical_frame` removes those signs by the third-moment rule; :func:`sign_flips` enumerates them for frame
averaging, which is exact whatever the third moments are. Repeated eigenvalues (rotationally symmetric clouds) leave
the frame arbitrary inside the eigenspace; no sign rule fixes that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.ties import invariant_rank, tie_fraction, tie_scale

_PROPER_FLIPS = ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))


def centre(pos: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Subtract the (weighted) centroid: ``pos (..., N, 3) -> (centred (..., N, 3), centroid (..., 1, 3))``."""
    if weights is None:
        c = pos.mean(dim=-2, keepdim=True)
    else:
        w = weights.unsqueeze(-1)
        c = (w * pos).sum(-2, keepdim=True) / w.sum(-2, keepdim=True).clamp_min(torch.finfo(pos.dtype).tiny)
    return pos - c, c


def principal_axes(
    centred: Tensor, weights: Tensor | None = None, directions: Tensor | None = None, direction_weight: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the scatter matrix ``X_c^T W X_c`` of centred points ``(..., N, 3)``.

    ``directions`` (e.g. normals, ``(..., N, 3)``) add ``ε tr(S) / 3 · D^T D`` to the scatter ``S``: a rotation
    equivariant term that leaves ordinary clouds' axes practically unchanged and fixes the axes that positions
    alone leave undetermined (collinear clouds, or all points equal).

    Returns:
        ``(eigenvalues (..., 3), axes (..., 3, 3))``: eigenvalues in descending order and the matching unit
        eigenvectors as the **columns** of ``axes``.
    """
    xw = centred if weights is None else centred * weights.unsqueeze(-1)
    scatter = xw.transpose(-1, -2) @ centred
    if directions is not None:
        trace = scatter.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
        scale = torch.where(trace > 0, direction_weight * trace / 3, torch.ones_like(trace))
        scatter = scatter + scale * (directions.transpose(-1, -2) @ directions) / directions.shape[-2]
    return scatter_axes(scatter)


def scatter_axes(scatter: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of symmetric scatter matrices ``(..., 3, 3)``: ``(eigenvalues (..., 3) descending,
    axes (..., 3, 3))`` with the unit eigenvectors as the columns of ``axes`` (what :func:`principal_axes` returns
    for the scatter of a cloud; per-part scatters come from :func:`pointgeo.geometry.parts.part_frames`)."""
    evals, evecs = torch.linalg.eigh(scatter)
    return evals.flip(-1), evecs.flip(-1)


def skew_tolerance(dtype: torch.dtype) -> float:
    """``ε^{3/4}`` (the tie fraction, :func:`~pointgeo.geometry.ties.tie_fraction`): third moments below this
    fraction of ``sum_i w_i ‖y_i‖^3`` are rounding noise of a flat or symmetric direction, whose sign would flip
    under rotation. (The sum over a symmetric cloud cancels only to ``~ε`` of ``sum_i w_i ‖y_i‖^3`` in a rotated
    copy, far above the ``ε^1.5`` of flat extents: the box of sides ``1 : 1.001 : 2`` measured ``1e-16``.)"""
    return tie_fraction(dtype)


def skew_signs(coords: Tensor, weights: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
    """``(..., D)`` signs of the third moments ``sum_i w_i y_ik^3`` of coordinates ``(..., N, D)``, with ``0`` where
    a moment is within :func:`skew_tolerance` of zero (a direction without an invariant sign). The tolerance is
    relative to ``sum_i w_i l_i^3`` with ``lengths`` ``l (..., N)`` (default ``‖y_i‖``: pass the full offsets'
    lengths when ``coords`` holds only some directions)."""
    size = (coords.norm(dim=-1) if lengths is None else lengths) ** 3
    cubed = coords**3
    if weights is not None:
        cubed, size = cubed * weights.unsqueeze(-1), size * weights
    moment = cubed.sum(-2)
    significant = moment.abs() > skew_tolerance(coords.dtype) * size.sum(-1, keepdim=True)
    return torch.where(significant, torch.sign(moment), torch.zeros_like(moment))


def third_moment_signs(coords: Tensor, weights: Tensor | None = None) -> Tensor:
    """``(..., 3)`` signs ``s_k = sign(sum_i w_i y_ik^3)`` of canonical coordinates ``(..., N, 3)`` (0 → +1)."""
    return torch.where(skew_signs(coords, weights) < 0, -1.0, 1.0).to(coords.dtype)


def signed_least_axis(centred: Tensor, weights: Tensor | None = None, rank: Tensor | None = None) -> Tensor:
    """The least-variance axis ``(..., 3)`` of centred points ``(..., N, 3)`` with a rotation-equivariant sign.

    Its own third moment decides; where that vanishes (a flat cloud: the normal of a plane), the handedness of the
    two other axes signed by their third moments does (``a_3 = a_1 × a_2``), which turns with the cloud as well.
    Where neither does (a centrally symmetric cloud, e.g. FPS centres of a box, taken in antipodal pairs), the
    point of highest invariant ``rank (..., N)`` (default :func:`~pointgeo.geometry.ties.invariant_rank`) with a
    coordinate along the axis beyond the tie tolerance gives the sign. Only a cloud all in the plane through its
    centroid perpendicular to the axis and symmetric within it (or collinear) leaves the sign undetermined.
    """
    _, axes = principal_axes(centred, weights)
    signs = skew_signs(centred @ axes, weights)
    in_plane = axes[..., :2] * torch.where(signs[..., :2] < 0, -1.0, 1.0).to(axes.dtype).unsqueeze(-2)
    handed = torch.linalg.cross(in_plane[..., 0], in_plane[..., 1])
    least = torch.where(signs[..., 2:] != 0, signs[..., 2:] * axes[..., 2], handed)
    undecided = (signs[..., 2:] == 0) & ((signs[..., :1] == 0) | (signs[..., 1:2] == 0))  # (..., 1)
    if not bool(undecided.any()):
        return least
    n = centred.shape[-2]
    if rank is None:
        rank = invariant_rank(centred.reshape(-1, n, 3)).reshape(centred.shape[:-1])
    along = (centred * least.unsqueeze(-2)).sum(-1)  # (..., N)
    beyond = along.abs() > tie_scale(centred.reshape(-1, n, 3)).reshape(*centred.shape[:-2], 1)
    anchor = torch.where(beyond, rank, -1).argmax(-1, keepdim=True)
    sign = torch.sign(along.gather(-1, anchor)) * beyond.any(-1, keepdim=True)
    return torch.where(undecided & (sign < 0), -least, least)


def canonical_frame(
    pos: Tensor, weights: Tensor | None = None, *, proper: bool = True, directions: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The principal-axis frame of each cloud with the third-moment sign rule.

    Args:
        pos: ``(..., N, 3)`` points (any leading batch shape, e.g. ``(B, S, K, 3)`` neighbourhoods).
        weights: optional ``(..., N)`` non-negative point weights.
        proper: make the frame a rotation (``det = +1``): the first two axes take the third-moment signs and the
            third is their cross product. ``False`` signs all three axes independently (an O(3) frame).
        directions: optional unit vectors ``(..., N, 3)`` (normals) that break ties between vanishing
            eigenvalues (see :func:`principal_axes`).

    Returns:
        ``(frame (..., 3, 3), centroid (..., 1, 3))``; the canonical coordinates are
        ``(pos - centroid) @ frame``. Degenerate clouds (all points equal, collinear, planar) give finite frames.
    """
    centred, c = centre(pos, weights)
    _, axes = principal_axes(centred, weights, directions)
    axes = axes * third_moment_signs(centred @ axes, weights).unsqueeze(-2)
    if proper:
        axes = torch.cat([axes[..., :2], torch.linalg.cross(axes[..., 0], axes[..., 1]).unsqueeze(-1)], -1)
    return axes, c


def sign_flips(frame: Tensor) -> Tensor:
    """The 4 proper sign-flipped copies of frames ``(..., 3, 3) -> (..., 4, 3, 3)`` (columns negated in pairs).

    They form a group, so averaging any function over them removes the sign ambiguity of a proper principal
    frame exactly (frame averaging; Puny et al., ICLR 2022).
    """
    flips = torch.tensor(_PROPER_FLIPS, dtype=frame.dtype, device=frame.device)  # (4, 3)
    return frame.unsqueeze(-3) * flips[:, None, :]


def frame_from_directions(directions: Tensor, eps: float = 1e-12) -> Tensor:
    """The orientation matrix of two direction vectors: rows ``d_a, d_b, unit(d_a × d_b)``.

    PaRot's pose (Zhang et al. 2023): ``d_a, d_b`` are only softly orthogonal (a loss pushes them), so the rows are
    not orthonormalised. If the directions rotate with the input (``d → d Rᵀ`` for row vectors), the matrix does too
    (``O → O Rᵀ``), and relative poses such as ``O_1 O_2ᵀ`` or ``O c`` are invariant.

    Args:
        directions: ``(..., 2, 3)`` the two directions (unit vectors).

    Returns:
        ``(..., 3, 3)``.
    """
    a, b = directions[..., 0, :], directions[..., 1, :]
    cross = torch.nn.functional.normalize(torch.linalg.cross(a, b), dim=-1, eps=eps)
    return torch.stack([a, b, cross], dim=-2)
