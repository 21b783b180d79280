"""Adversarial point clouds for invariance tests: the shapes where sign, tie and ordering ambiguities bite.

Every function returns ``(pos (N, 3), normal (N, 3))`` in float64, deterministic by ``seed``; ``N = n`` for the
randomly sampled shapes and the smallest regular structure with ``N >= n`` points for the exact ones (grids,
mirrored and threefold composites). The set covers: randomly sampled near-degenerate shapes (``box`` …
``collinear``); exactly axisymmetric clouds on regular grids (``grid_cylinder``, ``grid_cone``, ``grid_sphere``:
two exactly equal eigenvalues, exact distance ties everywhere); a box with sides ``1 : 1.001 : 2`` on a face grid
(two eigenvalues 0.2 % apart, mirror symmetric about its three planes); a chair-like composite of several parts
mirrored exactly (``mirror_composite``); a chiral threefold shape (``threefold``: two exactly equal eigenvalues and
non-zero third moments); a randomly sampled cone at scales ``1e-3`` and ``1e3`` and at an offset of ``1e3`` times its
size (the tolerances must follow the cloud's scale; the harness's own translations are in units of its size too).
:data:`SHAPE_CLASSES` adds ``modelnet40_symmetric``, the real samples of rotationally symmetric ModelNet40 classes
(:func:`modelnet40_symmetric`). Registry entries name these classes when they exclude them from a guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from pointgeo.geometry import POINT_CLOUD_FIELDS, apply_rigid_motion

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
    normal = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 3)
    tilted = apply_rigid_motion({"pos": pos, "normal": normal}, POINT_CLOUD_FIELDS, tilt)
    return tilted["pos"], tilted["normal"]


def collinear(n: int, seed: int = 0) -> Cloud:
    """Points on a line segment, unevenly spaced (two zero eigenvalues)."""
    s = torch.rand(n, generator=_gen(seed), dtype=torch.float64) ** 2
    direction = _unit(torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64))
    normal = _unit(torch.linalg.cross(direction, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)))
    return s[:, None] * direction, normal.expand(n, 3).clone()


def _rings(n: int) -> tuple[int, int]:
    """``(rings, sectors)`` of a regular grid with ``rings * sectors >= n`` and about twice as many sectors."""
    sectors = max(3, math.ceil(math.sqrt(2 * n)))
    return max(2, math.ceil(n / sectors)), sectors


def _surface_of_revolution(n: int, profile: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]) -> Cloud:
    """Points on a regular (ring, sector) grid of the surface swept by ``profile(s) -> (radius, z, dr, dz)``
    (``s`` in (0, 1), ring centres) about the z axis: exactly axisymmetric under the sector rotations."""
    rings, sectors = _rings(n)
    s = (torch.arange(rings, dtype=torch.float64) + 0.5) / rings
    t = torch.arange(sectors, dtype=torch.float64) * (2 * math.pi / sectors)
    radius, z, dr, dz = profile(s)
    c, sn = t.cos()[None], t.sin()[None]
    pos = torch.stack([radius[:, None] * c, radius[:, None] * sn, z[:, None].expand(-1, sectors)], -1)
    normal = torch.stack([dz[:, None] * c, dz[:, None] * sn, -dr[:, None].expand(-1, sectors)], -1)
    return pos.reshape(-1, 3), _unit(normal.reshape(-1, 3))


def grid_cylinder(n: int, seed: int = 0) -> Cloud:
    """The side of a cylinder (radius 0.4, height 1.6) on a regular grid: exactly axisymmetric and mirror
    symmetric, every point with equidistant neighbours."""
    return _surface_of_revolution(n, lambda s: (torch.full_like(s, 0.4), 1.6 * (s - 0.5), 0 * s, 1.6 + 0 * s))


def grid_cone(n: int, seed: int = 0) -> Cloud:
    """The lateral surface of a cone (base radius 0.5, height 1.5) on a regular grid: exactly axisymmetric with a
    non-zero third moment along its axis."""
    return _surface_of_revolution(n, lambda s: (0.5 * s, 0.75 - 1.5 * s, 0.5 + 0 * s, -1.5 + 0 * s))


def grid_sphere(n: int, seed: int = 0) -> Cloud:
    """A unit sphere on a latitude-longitude grid: exactly axisymmetric and mirror symmetric about its equator."""
    return _surface_of_revolution(
        n, lambda s: ((math.pi * s).sin(), (math.pi * s).cos(), (math.pi * s).cos(), -(math.pi * s).sin())
    )


def box_1_1001_2(n: int, seed: int = 0) -> Cloud:
    """The faces of a box with sides ``1 : 1.001 : 2`` on a regular grid (``g x g`` cells a face): two principal
    eigenvalues 0.2 % apart, exactly mirror symmetric about its three planes."""
    g = math.ceil(math.sqrt(n / 6))
    u = (torch.arange(g, dtype=torch.float64) + 0.5) / g * 2 - 1
    a, b = (x.flatten() for x in torch.meshgrid(u, u, indexing="ij"))
    faces, normals = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            face = torch.zeros(g * g, 3, dtype=torch.float64)
            others = [i for i in range(3) if i != axis]
            face[:, others[0]], face[:, others[1]], face[:, axis] = a, b, sign
            faces.append(face)
            normals.append(torch.zeros_like(face).index_fill_(1, torch.tensor([axis]), sign))
    half = torch.tensor([0.5, 0.5005, 1.0], dtype=torch.float64)
    return torch.cat(faces) * half, torch.cat(normals)


def _solid_box(g: torch.Generator, m: int, centre: tuple[float, ...], half: tuple[float, ...]) -> Cloud:
    """``m`` random points on the faces of an axis-aligned box."""
    pos, normal = box(m, int(torch.randint(0, 2**31, (1,), generator=g)), half)
    return pos + torch.tensor(centre, dtype=torch.float64), normal


def mirror_composite(n: int, seed: int = 0) -> Cloud:
    """A chair-like composite (seat, back, two legs on each side) sampled at random on one side of the plane
    ``x = 0`` and mirrored exactly onto the other: distinct eigenvalues, zero third moment across the plane. (No
    part touches the plane: a point on it would meet its mirror image with the opposite face normal.)"""
    g = _gen(seed)
    half = -(-n // 2)
    parts = [((0.27, 0.0, 0.0), (0.25, 0.5, 0.05), 0.45), ((0.27, 0.45, 0.5), (0.25, 0.05, 0.45), 0.3),
             ((0.42, -0.42, -0.4), (0.04, 0.04, 0.38), 0.125), ((0.42, 0.42, -0.4), (0.04, 0.04, 0.38), 0.125)]
    counts = [round(half * share) for *_, share in parts]
    counts[0] += half - sum(counts)
    clouds = [_solid_box(g, m, centre, size) for (centre, size, _), m in zip(parts, counts)]
    pos, normal = torch.cat([c[0] for c in clouds]), torch.cat([c[1] for c in clouds])
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    return torch.cat([pos, pos * flip]), torch.cat([normal, normal * flip])


def threefold(n: int, seed: int = 0) -> Cloud:
    """A chiral blade cloud repeated under rotations by 0, 120 and 240 degrees about z: two exactly equal
    principal eigenvalues (threefold symmetry) with non-zero third moments in the plane and along z."""
    g = _gen(seed)
    m = -(-n // 3)
    u, v = torch.rand(m, generator=g, dtype=torch.float64), torch.rand(m, generator=g, dtype=torch.float64)
    blade = torch.stack([0.3 + 0.7 * u, 0.25 * v * u + 0.1 * u**2, 0.6 * u * v - 0.2], -1)
    normal = _unit(torch.stack([-0.1 * v - 0.2 * u, torch.ones_like(u), -0.4 + 0 * u], -1))
    turns = torch.arange(3, dtype=torch.float64) * (2 * math.pi / 3)
    rot = torch.zeros(3, 3, 3, dtype=torch.float64)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = (
        turns.cos(), -turns.sin(), turns.sin(), turns.cos(), 1.0)
    turned = apply_rigid_motion({"pos": blade.expand(3, m, 3), "normal": normal.expand(3, m, 3)}, POINT_CLOUD_FIELDS,
                                rot)
    return turned["pos"].reshape(-1, 3), turned["normal"].reshape(-1, 3)


def _scaled(scale: float, offset: float = 0.0) -> Callable[[int, int], Cloud]:
    def shape(n: int, seed: int = 0) -> Cloud:
        pos, normal = cone(n, seed)
        size = pos.norm(dim=-1).amax()
        direction = _unit(torch.tensor([0.6, -0.3, 0.74], dtype=torch.float64))
        return (pos + offset * size * direction) * scale, normal

    shape.__doc__ = f"The random cone scaled by {scale:g}" + (f" at {offset:g} times its size" if offset else "")
    return shape


ADVERSARIAL_SHAPES: dict[str, Callable[[int, int], Cloud]] = {
    "box": box, "ellipsoid": ellipsoid, "cylinder": cylinder, "cone": cone,
    "mirror_symmetric": mirror_symmetric, "repeated_points": repeated_points,
    "planar": planar, "collinear": collinear,
    "grid_cylinder": grid_cylinder, "grid_cone": grid_cone, "grid_sphere": grid_sphere,
    "box_1_1001_2": box_1_1001_2, "mirror_composite": mirror_composite, "threefold": threefold,
    "scale_1e-3": _scaled(1e-3), "scale_1e3": _scaled(1e3), "offset_1e3": _scaled(1.0, 1e3),
}
"""Name → ``fn(n, seed) -> (pos (N, 3), normal (N, 3))`` of the synthetic adversarial shapes."""

MODELNET40_SYMMETRIC = ("bottle", "bowl", "cone", "cup", "flower_pot", "vase")
"""ModelNet40 classes whose shapes are (nearly) rotationally symmetric about an axis."""

SHAPE_CLASSES: tuple[str, ...] = (*ADVERSARIAL_SHAPES, "modelnet40_symmetric")
"""Every shape class the harness measures; registry entries may exclude any of them, with a reason."""


def check_declared_shapes(name: str, declared: dict[str, str], known: tuple[str, ...] | None = None) -> None:
    """Raise ``ValueError`` unless every key of ``declared`` (a registry entry's ``not_guaranteed`` or
    ``float64_only``, of network ``name``) is one of ``known`` (default :data:`SHAPE_CLASSES`; registration
    networks: :data:`PAIR_SHAPE_CLASSES`) with a non-empty reason."""
    known = SHAPE_CLASSES if known is None else known
    unknown = sorted(set(declared) - set(known))
    if unknown:
        raise ValueError(f"{name} declares unknown shape classes {unknown}; known: {', '.join(known)}")
    empty = sorted(shape for shape, reason in declared.items() if not str(reason).strip())
    if empty:
        raise ValueError(f"{name} declares shape classes without a reason: {empty}")


def guaranteed_shapes(excluded: dict[str, str]) -> list[str]:
    """The shape classes of :data:`SHAPE_CLASSES` not in ``excluded`` (e.g. ``entry.excluded_shapes(dtype)``)."""
    return [shape for shape in SHAPE_CLASSES if shape not in excluded]


def modelnet40_symmetric(root: Path, n: int) -> list[tuple[str, Tensor, Tensor]]:
    """The real samples of :data:`MODELNET40_SYMMETRIC` under ``root`` (a ``modelnet40_normal_resampled`` folder
    of ``<class>/<class>_<id>.txt`` files, rows ``x,y,z,nx,ny,nz``): ``[(name, pos (n, 3), normal (n, 3))]``,
    float64, the first ``n`` points of each (the release's own order, as the datamodules read it).

    Raises:
        FileNotFoundError: no sample of these classes under ``root``.
    """
    samples = []
    for cls in MODELNET40_SYMMETRIC:
        for path in sorted((Path(root) / cls).glob(f"{cls}_*.txt")):
            rows = [line.split(",") for line in path.read_text().splitlines()[:n] if line.strip()]
            data = torch.tensor([[float(x) for x in row[:6]] for row in rows], dtype=torch.float64)
            samples.append((path.stem, data[:, :3], data[:, 3:]))
    if not samples:
        raise FileNotFoundError(f"no ModelNet40 sample of {', '.join(MODELNET40_SYMMETRIC)} under {root}")
    return samples


def adversarial_batch(n: int, names: list[str] | None = None, seed: int = 0) -> tuple[list[str], Tensor, Tensor]:
    """Stack adversarial shapes into a batch: ``(names, pos (B, n, 3), normal (B, n, 3))``, float64 (the first
    ``n`` points of each: shapes with more points lose their exact symmetry here; measure them one at a time)."""
    names = list(ADVERSARIAL_SHAPES) if names is None else names
    clouds = [ADVERSARIAL_SHAPES[name](n, seed) for name in names]
    return names, torch.stack([c[0][:n] for c in clouds]), torch.stack([c[1][:n] for c in clouds])


def _wall_points(g: torch.Generator, m: int, origin: tuple[float, ...], u: tuple[float, ...],
                 v: tuple[float, ...]) -> Tensor:
    """``m`` uniform random points of the parallelogram ``origin + a u + b v``, ``a, b ∈ [0, 1]``."""
    ab = torch.rand(m, 2, generator=g, dtype=torch.float64)
    o, du, dv = (torch.tensor(x, dtype=torch.float64) for x in (origin, u, v))
    return o + ab[:, :1] * du + ab[:, 1:] * dv


def overlapping_crops(points: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two overlapping fragments of ``points``: the ``n`` points nearest to each of two centres 0.3 RMS radii
    apart (random direction), in a random order."""
    c = points.mean(0)
    rms = (points - c).pow(2).sum(-1).mean().sqrt()
    step = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0) * 0.3 * rms
    out = []
    for centre in (c - step, c + step):
        near = (points - centre).norm(dim=-1).argsort()[:n]
        out.append(points[near[torch.randperm(n, generator=g)]])
    return out[0], out[1]


def pair_random(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two overlapping crops of an anisotropic Gaussian cloud."""
    g = _gen(seed)
    cloud = torch.randn(2 * n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.7, 0.4],
                                                                                    dtype=torch.float64)
    return overlapping_crops(cloud, n, g)


def pair_wall(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two overlapping crops of one planar wall (every normal equal, every PPF angle π/2 or 0)."""
    g = _gen(seed)
    return overlapping_crops(_wall_points(g, 2 * n, (0, 0, 0), (2.0, 0, 0), (0, 1.2, 0)), n, g)


def pair_corner(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two overlapping crops of a room corner: floor and two walls meeting at right angles."""
    g = _gen(seed)
    m = (2 * n) // 3 + 1
    cloud = torch.cat([_wall_points(g, m, (0, 0, 0), (1.5, 0, 0), (0, 1.2, 0)),
                       _wall_points(g, m, (0, 0, 0), (1.5, 0, 0), (0, 0, 1.0)),
                       _wall_points(g, m, (0, 0, 0), (0, 1.2, 0), (0, 0, 1.0))])
    return overlapping_crops(cloud, n, g)


def _grid_room(spacing: float, size: tuple[float, float, float]) -> Tensor:
    """The floor and four walls of a box room on a regular grid of ``spacing`` (exactly mirror symmetric about its
    two vertical mid-planes)."""
    lx, ly, lz = size
    xs = torch.arange(0, lx + 1e-9, spacing, dtype=torch.float64) - lx / 2
    ys = torch.arange(0, ly + 1e-9, spacing, dtype=torch.float64) - ly / 2
    zs = torch.arange(spacing, lz + 1e-9, spacing, dtype=torch.float64)
    floor = torch.cartesian_prod(xs, ys, torch.zeros(1, dtype=torch.float64))
    walls = [torch.cartesian_prod(xs, torch.tensor([y], dtype=torch.float64), zs) for y in (ys[0], ys[-1])]
    walls += [torch.cartesian_prod(torch.tensor([x], dtype=torch.float64), ys[1:-1], zs) for x in (xs[0], xs[-1])]
    return torch.cat([floor, *walls])


def pair_symmetric_room(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A gridded box room (floor and four walls, mirror symmetric) as the source and the same room on a finer grid
    as the target: exact distance ties everywhere and a symmetry no invariant key can break."""
    size = (2.0, 1.4, 1.0)
    spacing = (sum(a * b for a, b in ((size[0], size[1]), (2 * size[0], size[2]), (2 * size[1], size[2]))) / n) ** 0.5
    return _grid_room(spacing, size), _grid_room(spacing * 0.9, size)


ADVERSARIAL_PAIRS: dict[str, Callable[[int, int], tuple[Tensor, Tensor]]] = {
    "random": pair_random, "wall": pair_wall, "corner": pair_corner, "symmetric_room": pair_symmetric_room,
}
"""Name → ``fn(n, seed) -> (src (N, 3), tgt (M, 3))`` float64 fragment pairs for the pair protocol
(:mod:`pointgeo.testing.pairs`): random crops, a planar wall, a room corner, an exactly symmetric gridded room."""

PAIR_SHAPE_CLASSES: tuple[str, ...] = (*ADVERSARIAL_PAIRS, "threedmatch_fragment")
"""Every pair class the pair protocol measures (``threedmatch_fragment``: crops of a real 3DMatch fragment);
registration networks' entries may exclude any of them, with a reason."""
