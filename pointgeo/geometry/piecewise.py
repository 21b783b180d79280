"""Piecewise rigid motions: every part of a cloud moved by its own rotation about its centroid and translation.

A scene of several objects, or a body whose limbs move on their own, is transformed part by part: point ``i`` of
part ``p`` goes to ``x ↦ R_p (x − c_p) + c_p + t_p`` and its normal to ``R_p n`` (row vectors, ``x @ R^T``, as
everywhere in pointgeo). The articulated datamodule poses its parts with it, and the harness's piecewise protocol
(:func:`pointgeo.testing.measure_piecewise`) and the robustness report's ``piecewise`` protocol draw and apply such
motions; :func:`move_parts` moves the fields of a dense batch that its declaration says move.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pointgeo.geometry.fields import FieldSpec
from pointgeo.geometry.rotations import random_rotations


def piecewise_motion(pos: Tensor, parts: Tensor, generator: torch.Generator, *, translation_scale: float
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """A random rigid motion of every part: ``(rotation (B, P, 3, 3), translation (B, P, 1, 3), centre (B, P, 1, 3))``
    for clouds ``pos (B, N, 3)`` with part labels ``parts (B, N)`` in ``[0, P)``; Haar rotations about each part's
    centroid ``centre`` (zero for an empty part), translations with standard deviation ``translation_scale`` times
    each cloud's RMS radius."""
    b, n, _ = pos.shape
    count = int(parts.max()) + 1
    x = pos.double()
    onehot = torch.nn.functional.one_hot(parts.long(), count).double()  # (B, N, P)
    centre = (onehot.transpose(1, 2) @ x / onehot.sum(1).clamp_min(1)[..., None]).unsqueeze(2)  # (B, P, 1, 3)
    rot = random_rotations(b * count, generator=generator).reshape(b, count, 3, 3)
    size = (x - x.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()[:, None, None, None]
    shift = translation_scale * size * torch.randn(b, count, 1, 3, generator=generator, dtype=torch.float64)
    return rot, shift, centre


def apply_piecewise_motion(pos: Tensor, normal: Tensor | None, parts: Tensor, rotation: Tensor, translation: Tensor,
                           centre: Tensor) -> tuple[Tensor, Tensor | None]:
    """Move point ``i`` of part ``p`` by ``x ↦ R_p (x - c_p) + c_p + t_p`` and its normal by ``R_p`` (row vectors,
    ``x @ R^T``; float64): shapes as in :func:`piecewise_motion`, ``-> (pos (B, N, 3), normal (B, N, 3) | None)``."""
    b, n, _ = pos.shape
    index = parts.long().reshape(b, n, 1, 1)
    r = torch.gather(rotation, 1, index.expand(b, n, 3, 3))  # (B, N, 3, 3): each point's rotation
    c = torch.gather(centre[:, :, 0], 1, index[..., 0].expand(b, n, 3))
    t = torch.gather(translation[:, :, 0], 1, index[..., 0].expand(b, n, 3))
    moved = ((pos.double() - c).unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2) + c + t
    turned = None if normal is None else (normal.double().unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2)
    return moved, turned


def move_parts(batch: Mapping[str, Tensor], fields: FieldSpec, parts: Tensor, rotation: Tensor, translation: Tensor,
               centre: Tensor) -> dict[str, Tensor]:
    """A copy of the dense batch ``batch`` with every part moved by its own motion (:func:`apply_piecewise_motion`,
    float64, each field returned in its dtype): the keys ``fields`` declares ``points`` move as positions, its
    ``vectors`` rotate with their part; ``record`` keys (one rotation per sample) and the rest are shared unchanged.

    Raises:
        ValueError: ``fields`` declares a lattice (a periodic cell has no parts).
    """
    if fields.lattice:
        raise ValueError(f"piecewise motions move parts of a cloud; fields declaring lattices {fields.lattice} have "
                         f"no parts")
    out = dict(batch)
    for key in fields.points + fields.vectors:
        if key in batch:
            value = batch[key]
            if key in fields.points:
                moved, _ = apply_piecewise_motion(value, None, parts, rotation, translation, centre)
            else:
                _, moved = apply_piecewise_motion(value, value, parts, rotation, translation, centre)
            out[key] = moved.to(value.dtype)
    return out
