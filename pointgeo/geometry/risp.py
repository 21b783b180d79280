"""RISurConv's rotation-invariant surface properties (RISP): angular neighbour ordering and the 14-d descriptor.

For a centre ``p`` with unit normal ``n`` and its ``K`` neighbours ``x_j`` (Zhang et al., RISurConv, 2024; built on
RIConv++):

* **Ordering** (:func:`angular_order`): project ``v_j = x_j - p`` onto the tangent plane, ``t_j = v_j - (v_j·n) n``;
  the reference direction ``r`` is the unit projection of the neighbour with the largest ``‖t_j‖``; the walk
  starts at ``r`` and visits the neighbours by the angle ``atan2((û_j × r)·n, û_j·r)`` in ``[0, 2π)``. Directions
  within ``√ε`` of the line of ``r`` count as exactly on it (angle 0 or π), neighbours on the normal through ``p``
  (no tangent direction) at angle 0, and angles within ``√ε`` of each other are one tie walked in the incoming
  order; likewise ``r`` is the first neighbour (incoming order) whose ``‖t_j‖`` is within ``√ε`` of the largest.
  With the incoming order decided invariantly (:func:`~pointgeo.geometry.neighbors.knn`), rounding cannot reorder
  equidistant, collinear or duplicated neighbours. The order is as invariant as the sign of ``n``.
* **Descriptor** (:func:`risp_features`): with ``i-``/``i+`` the neighbours ``step`` places before/after ``i`` (cyclic),
  the 14 channels are distances, angles and normal angles of the triangles ``(p, x_i, x_{i-})`` and
  ``(p, x_i, x_{i+})`` (table in the docstring of :func:`risp_features`). All are dot products of vectors that rotate
  with the cloud, so they are exactly invariant given equivariant normals and a rotation-independent order.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-7


def _unit(v: Tensor) -> Tensor:
    """``v / (‖v‖ + 1e-7)``: zero vectors stay zero."""
    return v / (v.norm(dim=-1, keepdim=True) + EPS)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def angular_order(centre: Tensor, normal: Tensor, neighbours: Tensor) -> Tensor:
    """The permutation that sorts each neighbourhood angularly around its centre's normal.

    Args:
        centre: ``(..., 3)`` centre positions.
        normal: ``(..., 3)`` unit normals at the centres.
        neighbours: ``(..., K, 3)`` neighbour positions.

    Returns:
        ``(..., K)`` long indices into ``K`` (ties, within ``√ε``, keep the incoming order).
    """
    v = neighbours - centre.unsqueeze(-2)
    n = normal.unsqueeze(-2)
    t = v - _dot(v, n).unsqueeze(-1) * n
    length = t.norm(dim=-1)
    tol = torch.finfo(length.dtype).eps ** 0.5
    longest = length.amax(-1, keepdim=True)
    u = t / torch.where(length > 0, length, 1.0).unsqueeze(-1)
    # the first neighbour (in the incoming order) whose projection is within √ε of the longest
    ref_index = (length >= (1 - tol) * longest).int().argmax(-1, keepdim=True)
    ref = torch.gather(u, -2, ref_index.unsqueeze(-1).expand(*u.shape[:-2], 1, 3))
    cos = _dot(u, ref)
    # Directions (anti)parallel to r (a line through p, duplicated points) have no side: within √ε, which bounds
    # the rounding of nearby points' directions, they are put exactly at angle 0 or π.
    across = _dot(torch.linalg.cross(u, ref.expand_as(u)), n)
    across = torch.where(across.abs() > tol, across, 0.0)
    angle = torch.atan2(across, cos).remainder(2 * torch.pi)  # (..., K) in [0, 2π) around n from r
    angle = torch.where(length > tol * longest, angle, 0.0)  # on the normal through p: no direction, angle 0
    key = angle.scatter(-1, ref_index, -1.0)  # the walk starts at r itself
    # angles within √ε of their predecessor are one tie, walked in the incoming order
    order = key.argsort(dim=-1, stable=True)
    sorted_key = key.gather(-1, order)
    split = torch.ones_like(sorted_key, dtype=torch.bool)
    split[..., 1:] = sorted_key[..., 1:] - sorted_key[..., :-1] > tol
    tie = split.long().cumsum(-1)
    return order.gather(-1, (tie * key.shape[-1] + order).argsort(dim=-1))


def risp_features(centre: Tensor, centre_normal: Tensor, neighbours: Tensor, neighbour_normals: Tensor,
                  step: int = 1) -> Tensor:
    """The 14-d RISP descriptor of every (centre, ordered neighbour) pair.

    Args:
        centre: ``(..., 3)``; ``centre_normal``: ``(..., 3)``.
        neighbours: ``(..., K, 3)`` in angular order; ``neighbour_normals``: ``(..., K, 3)``.
        step: distance in the order between a neighbour and its triangle partners (RISurConv uses 2 when there
            are 1024 or more centres, else 1).

    Returns:
        ``(..., K, 14)``, channels (``v_i = x_i - p``, ``u(·)`` the unit vector):

        ====  ==========================================  ====  ==========================================
        1     ‖v_i‖                                      8     -u(x_i - x_{i-})·n_i
        2     u(v_i)·n_p                                 9     u(x_i - x_{i-})·n_{i-}
        3     -u(v_i)·n_i                                10    u(v_{i+})·u(v_i)
        4     u(v_i)·u(v_{i-})                           11    u(x_{i+} - p)·u(x_{i+} - x_i)
        5     u(v_{i-})·n_p                              12    u(x_{i+} - x_i)·n_{i+}
        6     -u(v_{i-})·n_{i-}                          13    u(v_i)·n_{i+}
        7     u(x_{i-} - p)·u(x_{i-} - x_i)              14    (u(v_{i+}) × u(v_i))·(u(v_{i-}) × u(v_i))
        ====  ==========================================  ====  ==========================================
    """
    v = neighbours - centre.unsqueeze(-2)
    n_p = centre_normal.unsqueeze(-2).expand_as(v)
    n_i = neighbour_normals
    prev = lambda t: torch.roll(t, shifts=step, dims=-2)  # noqa: E731  (element i holds i - step)
    nxt = lambda t: torch.roll(t, shifts=-step, dims=-2)  # noqa: E731  (element i holds i + step)
    x_i, x_m, x_p = neighbours, prev(neighbours), nxt(neighbours)
    n_m, n_pl = prev(n_i), nxt(n_i)
    u_i, u_m, u_pl = _unit(v), _unit(prev(v)), _unit(nxt(v))
    u_im = _unit(x_i - x_m)  # from x_{i-} to x_i
    u_ip = _unit(x_p - x_i)  # from x_i to x_{i+}
    p = centre.unsqueeze(-2)
    features = [
        v.norm(dim=-1),
        _dot(u_i, n_p),
        -_dot(u_i, n_i),
        _dot(u_i, u_m),
        _dot(u_m, n_p),
        -_dot(u_m, n_m),
        _dot(_unit(x_m - p), -u_im),
        -_dot(u_im, n_i),
        _dot(u_im, n_m),
        _dot(u_pl, u_i),
        _dot(_unit(x_p - p), u_ip),
        _dot(u_ip, n_pl),
        _dot(u_i, n_pl),
        _dot(torch.linalg.cross(u_pl, u_i), torch.linalg.cross(u_m, u_i)),
    ]
    return torch.stack(features, dim=-1)
