"""Invariant tie-breaking: the decisions that exact ties leave to rounding, made the same way in every pose.

Real clouds hold exact ties: CAD samples have equidistant neighbours on regular grids, mirror-symmetric parts,
points at one distance from the centroid. Which neighbour is the ``k``-th, in which order equidistant neighbours
come, which of two equally far points FPS takes: rounding decides them, and rounding changes with every rotation
and translation. Here every such decision compares values only up to a **tie tolerance relative to the cloud's own
scale** and breaks what is tied by an invariant per-point key, so that it turns with the cloud.

* :func:`tie_scale`: ``τ = TIE(dtype) · s`` with ``s`` the cloud's RMS radius about its centroid and
  ``TIE = ε^{3/4}`` of the input dtype (float64 ``1.8e-12``, float32 ``6.4e-6``): above the rounding of the
  coordinates of a rotated cloud (``~ε`` of its extent, ``ε^{-1/4}`` times that for offsets up to ``~8000`` (float64)
  / ``~50`` (float32) times its size), far below the differences of distinct real values (``1e-6`` for
  coordinates stored with six decimals).
* :func:`invariant_rank`: a rank ``(B, N)`` of the points by invariant keys, each compared within its own
  tolerance: the distance to the centroid; the coordinate along every principal axis whose eigenvalue is separated
  from the others (signed by its third moment where that is significant, else its absolute value); the signed
  principal volume ``det(V) y_1 y_2 y_3`` (a pseudo-scalar: it tells mirror images apart). A key's tolerance grows
  with the conditioning of the axes it uses (``∝ λ_1 / gap``), so nearly repeated eigenvalues make it a tie rather
  than a coin flip. Points tied in every invariant key are exchanged by a symmetry of the cloud that no invariant
  quantity sees (exactly repeated eigenvalues: axisymmetric clouds), the one case left open: they are ordered by
  their centred coordinates, which does not depend on the input order (and is invariant where the coordinates
  already are: canonical frames, TinvNN), but does turn with the orientation. Exact duplicates keep index order.
* :func:`tie_break`: the order of values ``(..., K)`` ascending, values within a tolerance of their predecessor
  ordered by a secondary integer key (chained: a run of near-equal values is one tie); :func:`smallest_with_ties`
  the first ``k`` of that order from a partial selection.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SKEW = 1e-9
"""Third moments below this fraction of ``Σ ‖y‖^3`` (plus the axes' own error) give a principal coordinate no sign."""
ANCHORED = 1e-3
"""Axes whose relative error (``∝ λ_1 / gap``) is below this take their sign from an anchor point where no third
moment gives one (:func:`_anchored_signs`)."""


def tie_fraction(dtype: torch.dtype) -> float:
    """``ε^{3/4}`` of ``dtype``: the relative tolerance within which values count as tied."""
    return torch.finfo(dtype).eps ** 0.75


def tie_scale(points: Tensor) -> Tensor:
    """``(B,)`` float64 tie tolerance ``τ = ε^{3/4} · RMS radius`` of clouds ``(B, N, D)`` (a length)."""
    x = points.detach().double()
    radius = (x - x.mean(dim=1, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()
    tiny = torch.finfo(torch.float64).tiny
    return tie_fraction(points.dtype) * torch.where(radius > 0, radius, x.abs().amax(dim=(1, 2)).clamp_min(tiny))


def _refine(group: Tensor, keys: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The order ``(R,)`` that sorts elements within their groups ``group (R,)`` (non-decreasing integers) by
    ``keys`` ``[(key (R,), tol (R,)), ...]`` in turn, each splitting a group where a sorted key exceeds its
    predecessor by more than its tolerance; elements tied in every key keep their order."""
    order = torch.arange(group.shape[0], device=group.device)
    for key, tol in keys:
        k = key[order]
        by_key = k.argsort(stable=True)
        perm = by_key[group[by_key].argsort(stable=True)]
        order, g, k = order[perm], group[perm], k[perm]
        split = torch.ones_like(g, dtype=torch.bool)
        split[1:] = (g[1:] != g[:-1]) | (k[1:] - k[:-1] > tol[order][1:])
        group = split.long().cumsum(0)
    return order


def lexicographic_rank(keys: list[tuple[Tensor, Tensor]] | Callable[[], list[tuple[Tensor, Tensor]]],
                       first: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Ranks ``(B, N)`` (``0 … N-1``) of points ordered by ``keys``: ``[(key (B, N), tol (B, 1)), ...]`` compared
    in turn, each within its tolerance; points tied in every key keep their order by the first key (exact ties:
    their index order). With ``first`` given, ``keys`` may be a function building the further keys: it is called
    only if ``first`` leaves a tie. Only the points the first key leaves tied are sorted by the further keys."""
    if first is None:
        first, keys = (keys() if callable(keys) else keys)[0], (keys() if callable(keys) else keys)[1:]
    value, tol = first
    b, n = value.shape
    order = value.argsort(dim=-1, stable=True)
    v = value.gather(-1, order)
    joined = v[..., 1:] - v[..., :-1] <= tol  # (B, N - 1): sorted neighbours within the tolerance
    tied = torch.zeros_like(v, dtype=torch.bool)
    tied[..., 1:] |= joined
    tied[..., :-1] |= joined
    if bool(tied.any()):
        further = keys() if callable(keys) else keys
        if further:
            split = torch.ones_like(tied)
            split[..., 1:] = ~joined
            rows, cols = tied.nonzero(as_tuple=True)  # row-major: each run of ties is contiguous, groups ascending
            points = order[rows, cols]
            group = rows * (n + 1) + split.long().cumsum(-1)[rows, cols]
            refined = _refine(group, [(key[rows, points], t.expand(b, 1)[rows, 0]) for key, t in further])
            order = order.clone()
            order[rows, cols] = points[refined]
    return torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=order.device).expand(b, n))


@torch.no_grad()
def invariant_rank(points: Tensor) -> Tensor:
    """Rank ``(B, N)`` of the points of clouds ``(B, N, D)`` by rotation-, translation- and permutation-invariant
    keys (see the module docstring; for ``D != 3`` only the distance to the centroid). When no two points are at
    the same distance from the centroid, that distance alone decides and nothing else is computed."""
    x = points.detach().double()
    y = x - x.mean(dim=1, keepdim=True)
    tau = tie_scale(points)[:, None]  # (B, 1)
    radius = y.norm(dim=-1)
    return lexicographic_rank(lambda: _further_keys(y, radius, tau, points.dtype), first=(radius, tau))


def _further_keys(y: Tensor, radius: Tensor, tau: Tensor, dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    """The keys after the distance to the centroid: oriented principal coordinates and the signed principal volume
    (clouds in 3D; axes without a significant third moment signed by anchor points, see :func:`_anchored_signs`),
    then the centred coordinates ``y (B, N, D)``."""
    keys = []
    if y.shape[-1] == 3:
        scatter = y.transpose(1, 2) @ y
        evals, axes = torch.linalg.eigh(scatter)  # ascending
        evals, axes = evals.flip(-1), axes.flip(-1)
        gaps = (evals[:, :, None] - evals[:, None, :]).abs() + torch.diag_embed(torch.full_like(evals, torch.inf))
        # relative error of each axis: the scatter's perturbation (∝ the tie fraction) over its eigenvalue gap
        error = (6 * tie_fraction(dtype) * evals[:, :1] / gaps.amin(-1).clamp_min(1e-300)).clamp_max(1e300)
        coords = y @ axes  # (B, N, 3)
        r_max = radius.amax(-1, keepdim=True)  # (B, 1)
        moment, size = coords.pow(3).sum(1), radius.pow(3).sum(1, keepdim=True)  # (B, 3), (B, 1)
        signs = torch.where(moment.abs() > (SKEW + 3 * error) * size, torch.sign(moment), 0.0)  # (B, 3)
        tol = tau + r_max * error  # (B, 3)
        handedness = torch.sign((torch.linalg.cross(axes[..., 0], axes[..., 1]) * axes[..., 2]).sum(-1))  # det
        volume = (coords.prod(-1) * handedness[:, None],
                  r_max**3 * (3 * tie_fraction(dtype) + 3 * error.amax(-1, keepdim=True)))

        def principal(s: Tensor) -> list[tuple[Tensor, Tensor]]:
            oriented = torch.where(s[:, None] != 0, coords * s[:, None], coords.abs())
            return [(oriented[..., k], tol[:, k : k + 1]) for k in range(3)] + [volume]

        signs = _anchored_signs(coords, tol, signs, error < ANCHORED, handedness,
                                lambda s: lexicographic_rank(principal(s) + _coordinate_keys(y, tau), (radius, tau)))
        keys = principal(signs)
    return keys + _coordinate_keys(y, tau)


def _coordinate_keys(y: Tensor, tau: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The last resort, for points no invariant key tells apart: the centred coordinates ``y (B, N, D)``. Not
    rotation invariant, but independent of the input order, and invariant where the input already is (canonical
    frames)."""
    return [(y[..., d], tau) for d in range(min(3, y.shape[-1]))]


def _anchored_signs(coords: Tensor, tol: Tensor, signs: Tensor, conditioned: Tensor, handedness: Tensor,
                    rank: Callable[[Tensor], Tensor]) -> Tensor:
    """Signs ``(B, 3)`` of the principal axes, completed where third moments leave them open (``signs == 0``).

    A cloud whose axes carry no invariant sign has a symmetry (the box of sides ``1 : 1.001 : 2``: the half turns
    about its axes) whose orbits tie in every invariant key. One point of such an orbit must be chosen, and which
    one only the pose can say; what matters is that every later decision follows that one choice. So an open,
    well-conditioned (``conditioned (B, 3)``) axis takes the sign of the coordinate of an **anchor**: the point of
    highest ``rank(signs)`` (farthest out) with a coordinate beyond its tolerance on an open axis. Two signed axes
    fix the third by the handedness of a proper frame (rotations keep it); an anchor on an axis needs a second
    round. The rank that follows turns with the cloud up to that symmetry, the same symmetry for every point, so
    FPS and kNN decide like the rotated copy composed with one symmetry of the cloud.

    Shapes: ``coords (B, N, 3)`` principal coordinates, ``tol (B, 3)`` their tolerances, ``handedness (B,)``
    ``det`` of the axes; ``rank(signs) -> (B, N)``.
    """
    batch = torch.arange(coords.shape[0], device=coords.device)
    for _ in range(2):
        open_axes = (signs == 0) & conditioned
        if not bool(open_axes.any()):
            break
        beyond = coords.abs() > tol[:, None]  # (B, N, 3)
        eligible = (beyond & open_axes[:, None]).any(-1)  # (B, N)
        anchor = torch.where(eligible, rank(signs), -1).argmax(-1)  # (B,)
        at = coords[batch, anchor]  # (B, 3)
        signs = torch.where(open_axes & beyond[batch, anchor], torch.sign(at), signs)
        # a proper frame: the product of the three signs is the handedness of the axes
        last = (signs == 0) & conditioned & ((signs != 0).sum(-1, keepdim=True) == 2)
        completed = handedness[:, None] * torch.where(signs != 0, signs, 1.0).prod(-1, keepdim=True)
        signs = torch.where(last, completed, signs)
    return signs


def selection_rank(points: Tensor) -> Tensor:
    """The rank ``(B, N)`` of points whose order is itself invariant: ``0 … N-1`` in the given order. FPS centres
    come in their selection order, decided invariantly; passing this rank to the operations on them (``rank=`` of
    :func:`~pointgeo.geometry.knn`, :func:`~pointgeo.geometry.farthest_point_sampling`, ...) keeps their tie
    decisions tied to the choices made on the parent cloud, where a fresh :func:`invariant_rank` of a symmetric
    subset would choose again (and maybe differently from the features already computed on it)."""
    b, n = points.shape[:2]
    return torch.arange(n, device=points.device).expand(b, n)


def check_rank(rank: Tensor, points: Tensor, name: str = "rank") -> Tensor:
    """``rank`` as a long tensor, after checking that it is ``(B, N)`` for ``points (B, N, D)``."""
    if not isinstance(rank, Tensor) or rank.shape != points.shape[:2] or rank.is_floating_point():
        shape = tuple(rank.shape) if isinstance(rank, Tensor) else type(rank).__name__
        raise ValueError(f"{name} must be an integer tensor (B, N) = {tuple(points.shape[:2])}; got {shape}")
    return rank.to(device=points.device, dtype=torch.long)


def tie_break(values: Tensor, tol: Tensor, secondary: Tensor) -> tuple[Tensor, Tensor]:
    """Sort ``values (..., K)`` ascending, runs of values within ``tol`` (broadcast to ``(..., 1)``) of their
    predecessor counting as one tie, ordered by the integer ``secondary (..., K)`` (distinct within a row).

    Returns:
        ``(order, tie)``: the permutation ``(..., K)``, and ``tie (..., K)`` the index of the tie (run) each sorted
        value belongs to (non-decreasing).
    """
    order = values.argsort(dim=-1, stable=True)
    v = values.gather(-1, order)
    split = torch.ones_like(v, dtype=torch.bool)
    split[..., 1:] = v[..., 1:] - v[..., :-1] > tol
    tie = split.long().cumsum(-1)
    combined = tie * (int(secondary.amax()) + 1) + secondary.gather(-1, order)
    resort = combined.argsort(dim=-1)
    return order.gather(-1, resort), tie.gather(-1, resort)


def smallest_with_ties(values: Tensor, tol: Tensor, rank: Tensor, batch: Tensor, k: int) -> Tensor:
    """The first ``k`` of :func:`tie_break`'s order of ``values (R, N)`` (``tol (R, 1)``; entry ``j`` of row ``r``
    has the secondary key ``rank[batch[r], j]``, ``rank (B, N)``, ``batch (R,)``), without sorting whole rows: the
    ``4k`` smallest by ``topk``, tie-broken, and only rows whose ``k``-th tie reaches the last of them selected again
    from twice as many (up to ``N``). The ``c`` smallest hold the same values as the first ``c`` of the full order,
    so their runs are the same; a run that ends before the ``c``-th is whole. An infinite ``k``-th value (an
    excluded entry) stops the widening: the order of the infinite entries is then left undecided.

    Returns:
        ``(R, k)`` long indices into ``N``.
    """
    r, n = values.shape
    out = torch.empty(r, k, dtype=torch.long, device=values.device)
    rows = torch.arange(r, device=values.device)
    c = min(n, 4 * k)
    while rows.numel():
        vals, cand = values[rows].topk(c, dim=-1, largest=False, sorted=False)
        order, tie = tie_break(vals, tol[rows], rank[batch[rows, None], cand])
        out[rows] = cand.gather(-1, order[:, :k])
        if c == n:
            break
        kth = vals.gather(-1, order[:, k - 1 : k]).squeeze(-1)
        rows = rows[(tie[:, k - 1] == tie[:, -1]) & torch.isfinite(kth)]
        c = min(n, 2 * c)
    return out
