"""Adversarial point clouds for invariance tests: the shapes where sign and ordering ambiguities bite.

Every function returns ``(pos (N, 3), normal (N, 3))`` in float64, deterministic by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Cloud = tuple[Tensor, Tensor]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def box(n: int, seed: int = 0, extents: tuple[float, float, float] = (1.0, 0.6, 0.3)) -> Cloud:
    """Points on the faces of a box with distinct half extents (mirror symmetric about all three planes)."""
    g = _gen(seed)
    ext = torch.tensor(extents, dtype=torch.float64)
    axis = torch.randint(0, 3, (n,), generator=g)
    sign = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    pos = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1) * ext
    onehot = torch.nn.functional.one_hot(axis, 3).double()
    pos = torch.where(onehot > 0, sign[:, None] * ext, pos)
    return pos, onehot * sign[:, None]


def ellipsoid(n: int, seed: int = 0, axes: tuple[float, float, float] = (1.0, 0.6, 0.3)) -> Cloud:
    """An ellipsoid with distinct semi-axes (zero third moments along every principal axis)."""
    a = torch.tensor(axes, dtype=torch.float64)
    pos = _unit(torch.randn(n, 3, generator=_gen(seed), dtype=torch.float64)) * a
    return pos, _unit(pos / a**2)


def cylinder(n: int, seed: int = 0, radius: float = 0.4, height: float = 1.6) -> Cloud:
    """The side of a cylinder along z (two nearly equal eigenvalues)."""
    g = _gen(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    z = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * height
    normal = torch.stack([t.cos(), t.sin(), torch.zeros_like(t)], -1)
    return normal * radius + torch.stack([0 * z, 0 * z, z], -1), normal


def cone(n: int, seed: int = 0, radius: float = 0.5, height: float = 1.5) -> Cloud:
    """The lateral surface of a cone with its apex up (non-zero third moment along the axis)."""
    g = _gen(seed)
    frac = torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    t = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    pos = torch.stack([frac * radius * t.cos(), frac * radius * t.sin(), height / 2 - frac * height], -1)
    normal = _unit(torch.stack([height * t.cos(), height * t.sin(), torch.full_like(t, radius)], -1))
    return pos, normal


def mirror_symmetric(n: int, seed: int = 0) -> Cloud:
    """A random cloud made exactly symmetric under ``x -> -x`` (a zero third moment by construction)."""
    half_pos, half_normal = ellipsoid(n - n // 2, seed, (0.5, 1.0, 0.3))
    half_pos = half_pos + torch.tensor([0.3, 0.0, 0.1], dtype=torch.float64) * half_pos[:, 1:2] ** 2
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    pos = torch.cat([half_pos, half_pos * flip])[:n]
    return pos, torch.cat([half_normal, half_normal * flip])[:n]


def repeated_points(n: int, seed: int = 0) -> Cloud:
    """A box surface in which every point appears several times (kNN ties, duplicate FPS candidates)."""
    pos, normal = box(max(1, n // 4), seed)
    reps = -(-n // pos.shape[0])
    return pos.repeat(reps, 1)[:n], normal.repeat(reps, 1)[:n]


def planar(n: int, seed: int = 0) -> Cloud:
    """A flat elliptical disk in a tilted plane (third eigenvalue zero)."""
    g = _gen(seed)
    r = torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    t = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    pos = torch.stack([r * t.cos(), 0.5 * r * t.sin(), torch.zeros_like(r)], -1)
    tilt = torch.tensor([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]], dtype=torch.float64)
    return pos @ tilt.T, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 3) @ tilt.T


def collinear(n: int, seed: int = 0) -> Cloud:
    """Points on a line segment, unevenly spaced (two zero eigenvalues)."""
    s = torch.rand(n, generator=_gen(seed), dtype=torch.float64) ** 2
    direction = _unit(torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64))
    normal = _unit(torch.linalg.cross(direction, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)))
    return s[:, None] * direction, normal.expand(n, 3).clone()


ADVERSARIAL_SHAPES: dict[str, Callable[[int, int], Cloud]] = {
    "box": box, "ellipsoid": ellipsoid, "cylinder": cylinder, "cone": cone,
    "mirror_symmetric": mirror_symmetric, "repeated_points": repeated_points,
    "planar": planar, "collinear": collinear,
}
"""Name → ``fn(n, seed) -> (pos, normal)``."""


def adversarial_batch(n: int, names: list[str] | None = None, seed: int = 0) -> tuple[list[str], Tensor, Tensor]:
    """Stack adversarial shapes into a batch: ``(names, pos (B, n, 3), normal (B, n, 3))``, float64."""
    names = list(ADVERSARIAL_SHAPES) if names is None else names
    clouds = [ADVERSARIAL_SHAPES[name](n, seed) for name in names]
    return names, torch.stack([c[0] for c in clouds]), torch.stack([c[1] for c in clouds])
