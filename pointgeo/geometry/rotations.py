"""Rotations: Haar-uniform SO(3) sampling, rotations about an axis, angle sweeps, and applying them.

Convention used everywhere in pointgeo: points are **row vectors**, so a cloud ``pos (B, N, 3)`` rotated by
``R (B, 3, 3)`` is ``pos @ R.transpose(-1, -2)`` (see :func:`rotate`). Normals rotate the same way.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

RotationMode = Literal["none", "z", "so3"]
"""A rotation protocol: ``none``, ``z`` (about the dataset's up axis) or ``so3`` (Haar-uniform)."""

AXES = {"x": 0, "y": 1, "z": 2}


def axis_index(axis: int | str) -> int:
    """Return the coordinate index (0, 1, 2) of an axis given as ``0..2`` or ``"x" | "y" | "z"``."""
    if isinstance(axis, str):
        if axis.lower() not in AXES:
            raise ValueError(f"axis must be one of 'x', 'y', 'z' or 0, 1, 2; got {axis!r}")
        return AXES[axis.lower()]
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be one of 'x', 'y', 'z' or 0, 1, 2; got {axis!r}")
    return int(axis)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices from quaternions ``(w, x, y, z)``.

    Args:
        q: ``(..., 4)`` quaternions; they are normalised here.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    two = 2.0
    rows = [
        1 - two * (y * y + z * z), two * (x * y - z * w), two * (x * z + y * w),
        two * (x * y + z * w), 1 - two * (x * x + z * z), two * (y * z - x * w),
        two * (x * z - y * w), two * (y * z + x * w), 1 - two * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def random_rotations(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample ``n`` rotations from the Haar (uniform) measure on SO(3).

    A 4-d standard normal vector normalised to the unit sphere is a uniform unit quaternion, and unit
    quaternions cover SO(3) twice, uniformly (Shoemake, "Uniform random rotations", Graphics Gems III).
    Sampling is done in float64 and cast afterwards, so the same seed gives the same rotations in any dtype.

    Returns:
        ``(n, 3, 3)`` rotation matrices (orthonormal, determinant +1).
    """
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(dtype=dtype, device=device)


def axis_angle_to_matrix(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues' formula ``R = I + sin(a) K + (1 - cos(a)) K^2`` with ``K`` the cross-product matrix of ``axis``.

    Args:
        axis: ``(..., 3)`` rotation axes (normalised here).
        angle: ``(...)`` angles in radians.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    axis = axis / axis.norm(dim=-1, keepdim=True)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(axis.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device).expand_as(k)
    s = torch.sin(angle)[..., None, None]
    c = torch.cos(angle)[..., None, None]
    return eye + s * k + (1 - c) * (k @ k)


def rotations_about_axis(angles: Tensor, axis: int | str = "z") -> Tensor:
    """Rotations by ``angles (n,)`` radians about a coordinate axis; returns ``(n, 3, 3)``."""
    unit = torch.zeros(angles.shape + (3,), dtype=angles.dtype, device=angles.device)
    unit[..., axis_index(axis)] = 1.0
    return axis_angle_to_matrix(unit, angles)


def random_rotations_about_axis(
    n: int,
    axis: int | str = "z",
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` rotations about ``axis`` with angles uniform in ``[0, 2π)``; returns ``(n, 3, 3)``."""
    angles = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)
    return rotations_about_axis(angles, axis).to(dtype=dtype, device=device)


def sample_rotations(
    mode: RotationMode,
    n: int,
    *,
    up_axis: int | str = "z",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` rotations of a protocol: identity (``none``), about ``up_axis`` (``z``) or Haar SO(3) (``so3``)."""
    if mode == "none":
        return torch.eye(3, dtype=dtype, device=device).expand(n, 3, 3).clone()
    if mode == "z":
        return random_rotations_about_axis(n, up_axis, generator=generator, dtype=dtype, device=device)
    if mode == "so3":
        return random_rotations(n, generator=generator, dtype=dtype, device=device)
    raise ValueError(f"rotation mode must be 'none', 'z' or 'so3'; got {mode!r}")


def angle_sweep(step_degrees: float = 15.0, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Angles ``0, step, 2 step, ... < 360`` degrees, in radians; ``(360 / step,)``."""
    if not 0 < step_degrees <= 360:
        raise ValueError(f"step_degrees must be in (0, 360]; got {step_degrees}")
    return torch.deg2rad(torch.arange(0.0, 360.0, step_degrees, dtype=dtype))


def rotate(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate row vectors: ``x (..., N, 3)`` by ``rotation (..., 3, 3)`` → ``x @ rotation^T``."""
    return x @ rotation.transpose(-1, -2).to(x.dtype)


def rotation_defect(rotation: Tensor) -> Tensor:
    """How far matrices ``(..., 3, 3)`` are from SO(3): ``max(max|R Rᵀ − I|, |det R − 1|)`` per matrix, ``(...)``.

    Readers of poses stored in files use it to refuse matrices that are not rotations (reflections, scaled or
    corrupt entries) against a tolerance of their choosing.
    """
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
    orthogonality = (rotation @ rotation.transpose(-1, -2) - eye).abs().amax(dim=(-2, -1))
    return torch.maximum(orthogonality, (torch.linalg.det(rotation) - 1).abs())
