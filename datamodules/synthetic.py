"""A built-in synthetic set of procedural 3D shapes: the default dataset, needs no files and runs anywhere.

Eight classes whose difference is real 3D geometry (not colour, size or point count): box, ellipsoid, cylinder,
cone, torus, square pyramid, capsule and bowl. Every sample has random proportions, points sampled on the surface
with their exact unit normals, and a little noise. Shapes are generated **upright about z** (cones point up, bowls
open upwards), so a model trained with rotations about z only but tested under SO(3) suffers as it does on real
data. Everything is vectorised and deterministic by seed: the default 2500 shapes take about a second.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pointgeo.datamodules.base import CloudArrays, PointCloudDataModule, sample_seed
from pointgeo.geometry import RotationMode

Shape = tuple[np.ndarray, np.ndarray]  # pos (S, N, 3), normal (S, N, 3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _uniform(rng: np.random.Generator, s: int, lo: float, hi: float) -> np.ndarray:
    """``(S, 1)`` per-sample parameters, broadcastable over points."""
    return rng.uniform(lo, hi, size=(s, 1))


def _choose(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``(S, N)`` indices of surface pieces drawn with per-sample probabilities ``weights (S, K)``."""
    cdf = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
    u = rng.random((weights.shape[0], n, 1))
    return (u > cdf[:, None, :]).sum(-1).clip(max=weights.shape[1] - 1)


def _sphere_dirs(rng: np.random.Generator, s: int, n: int) -> np.ndarray:
    return _unit(rng.normal(size=(s, n, 3)))


def box(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Boxes with three distinct half extents; points on the six faces, area-weighted."""
    ext = np.sort(rng.uniform(0.25, 1.0, size=(s, 3)), axis=1)[:, ::-1].copy()
    ext[:, 1] *= rng.uniform(0.6, 0.85, size=s)  # keep the three extents apart
    ext[:, 2] *= rng.uniform(0.4, 0.7, size=s)
    ext = ext[:, rng.permutation(3)]
    areas = np.stack([ext[:, 1] * ext[:, 2], ext[:, 0] * ext[:, 2], ext[:, 0] * ext[:, 1]], axis=1)
    axis = _choose(rng, areas, n)  # (S, N): which face pair
    sign = rng.choice([-1.0, 1.0], size=(s, n))
    pos = rng.uniform(-1, 1, size=(s, n, 3)) * ext[:, None, :]
    onehot = np.eye(3)[axis]
    pos = np.where(onehot > 0, sign[..., None] * ext[:, None, :], pos)
    return pos, onehot * sign[..., None]


def ellipsoid(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Ellipsoids with distinct semi-axes; normals are the gradients of the implicit surface."""
    axes = np.concatenate([_uniform(rng, s, 0.8, 1.0), _uniform(rng, s, 0.45, 0.65), _uniform(rng, s, 0.2, 0.35)], 1)
    axes = axes[:, rng.permutation(3)][:, None, :]
    pos = _sphere_dirs(rng, s, n) * axes
    return pos, _unit(pos / axes**2)


def _disk(rng: np.random.Generator, s: int, n: int, radius: np.ndarray) -> np.ndarray:
    r = radius * np.sqrt(rng.random((s, n)))
    t = rng.uniform(0, 2 * np.pi, (s, n))
    return np.stack([r * np.cos(t), r * np.sin(t), np.zeros_like(r)], -1)


def cylinder(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Closed cylinders along z: the side and the two caps, area-weighted."""
    r, h = _uniform(rng, s, 0.25, 0.5), _uniform(rng, s, 0.6, 1.0)
    piece = _choose(rng, np.concatenate([2 * np.pi * r * 2 * h, np.pi * r**2, np.pi * r**2], 1), n)
    t = rng.uniform(0, 2 * np.pi, (s, n))
    side = np.stack([r * np.cos(t), r * np.sin(t), rng.uniform(-1, 1, (s, n)) * h], -1)
    side_n = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], -1)
    cap_sign = np.where(piece == 1, 1.0, -1.0)[..., None]
    cap = _disk(rng, s, n, r) + cap_sign * np.concatenate([np.zeros((s, 1, 2)), h[:, :, None]], -1)
    is_side = (piece == 0)[..., None]
    return np.where(is_side, side, cap), np.where(is_side, side_n, cap_sign * np.array([0, 0, 1.0]))


def cone(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Cones with the apex up and a closed base."""
    r, height = _uniform(rng, s, 0.35, 0.7), _uniform(rng, s, 1.0, 1.8)
    slant = np.sqrt(r**2 + height**2)
    piece = _choose(rng, np.concatenate([np.pi * r * slant, np.pi * r**2], 1), n)
    frac = np.sqrt(rng.random((s, n)))  # distance from the apex, area-uniform
    t = rng.uniform(0, 2 * np.pi, (s, n))
    lateral = np.stack([frac * r * np.cos(t), frac * r * np.sin(t), height / 2 - frac * height], -1)
    lateral_n = _unit(np.stack([height * np.cos(t), height * np.sin(t), np.broadcast_to(r, t.shape)], -1))
    base = _disk(rng, s, n, r) - np.concatenate([np.zeros((s, 1, 2)), height[:, :, None] / 2], -1)
    is_lat = (piece == 0)[..., None]
    return np.where(is_lat, lateral, base), np.where(is_lat, lateral_n, np.array([0, 0, -1.0]))


def torus(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Tori around z; the tube angle is drawn with density proportional to the area element."""
    big, small = _uniform(rng, s, 0.6, 0.8), _uniform(rng, s, 0.12, 0.3)
    # inverse-free rejection: draw 4 candidates per point and keep the first accepted one
    phi = rng.uniform(0, 2 * np.pi, (s, n, 4))
    accept = rng.random((s, n, 4)) * (big + small)[..., None] <= (big[..., None] + small[..., None] * np.cos(phi))
    phi = np.take_along_axis(phi, accept.argmax(-1)[..., None], -1)[..., 0]
    t = rng.uniform(0, 2 * np.pi, (s, n))
    ring = big + small * np.cos(phi)
    pos = np.stack([ring * np.cos(t), ring * np.sin(t), small * np.sin(phi)], -1)
    return pos, np.stack([np.cos(phi) * np.cos(t), np.cos(phi) * np.sin(t), np.sin(phi)], -1)


def _triangles(rng: np.random.Generator, tri: np.ndarray, n: int) -> Shape:
    """Area-weighted samples on per-sample triangle sets ``tri (S, T, 3, 3)``; normals from the winding."""
    cross = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    face = _choose(rng, np.linalg.norm(cross, axis=-1), n)
    u, v = rng.random((2, tri.shape[0], n, 1))
    flip = (u + v) > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    corners = np.take_along_axis(tri, face[..., None, None], axis=1)  # (S, N, 3, 3)
    pos = corners[:, :, 0] + u * (corners[:, :, 1] - corners[:, :, 0]) + v * (corners[:, :, 2] - corners[:, :, 0])
    return pos, _unit(np.take_along_axis(cross, face[..., None], axis=1))


def pyramid(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Square pyramids with the apex up: four triangular sides and the base (two triangles)."""
    a, height = _uniform(rng, s, 0.5, 0.8)[:, 0], _uniform(rng, s, 0.8, 1.5)[:, 0]
    c = np.stack([np.stack([a * x, a * y, -height / 2], -1) for x, y in ((1, 1), (-1, 1), (-1, -1), (1, -1))], 1)
    apex = np.stack([np.zeros_like(a), np.zeros_like(a), height / 2], -1)[:, None]
    sides = [np.stack([c[:, i], c[:, (i + 1) % 4], apex[:, 0]], 1) for i in range(4)]
    base = [np.stack([c[:, 0], c[:, 2], c[:, 1]], 1), np.stack([c[:, 0], c[:, 3], c[:, 2]], 1)]
    return _triangles(rng, np.stack(sides + base, 1), n)


def capsule(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Capsules along z: a cylinder with two hemispherical ends."""
    r, h = _uniform(rng, s, 0.25, 0.4), _uniform(rng, s, 0.4, 0.8)
    piece = _choose(rng, np.concatenate([2 * np.pi * r * 2 * h, 4 * np.pi * r**2], 1), n)
    t = rng.uniform(0, 2 * np.pi, (s, n))
    side_n = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], -1)
    side = side_n * r[..., None] + np.stack([0 * t, 0 * t, rng.uniform(-1, 1, (s, n)) * h], -1)
    d = _sphere_dirs(rng, s, n)
    end = d * r[..., None] + np.sign(d[..., 2:3]) * np.concatenate([np.zeros((s, 1, 2)), h[:, :, None]], -1)
    is_side = (piece == 0)[..., None]
    return np.where(is_side, side, end), np.where(is_side, side_n, d)


def bowl(rng: np.random.Generator, s: int, n: int) -> Shape:
    """Open bowls (lower half of an ellipsoid of revolution), opening upwards."""
    r, depth = _uniform(rng, s, 0.7, 1.0), _uniform(rng, s, 0.3, 0.8)
    d = _sphere_dirs(rng, s, n)
    d[..., 2] = -np.abs(d[..., 2])
    axes = np.concatenate([r, r, depth], 1)[:, None, :]
    pos = d * axes
    return pos, _unit(pos / axes**2)


SHAPES: dict[str, Callable[[np.random.Generator, int, int], Shape]] = {
    "box": box, "ellipsoid": ellipsoid, "cylinder": cylinder, "cone": cone,
    "torus": torus, "pyramid": pyramid, "capsule": capsule, "bowl": bowl,
}
"""The classes, in label order."""


def generate_shapes(num_samples: int, num_points: int, seed: int, noise: float = 0.005) -> CloudArrays:
    """Generate a balanced set of ``num_samples`` shapes with ``num_points`` points each, deterministically.

    Returns:
        :class:`CloudArrays` with ``pos (S, N, 3)`` float32, unit ``normal (S, N, 3)`` and ``label (S,)``,
        in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    counts = np.full(len(SHAPES), num_samples // len(SHAPES))
    counts[: num_samples % len(SHAPES)] += 1
    pos, normal, label = [], [], []
    for c, (fn, count) in enumerate(zip(SHAPES.values(), counts)):
        p, nrm = fn(rng, int(count), num_points)
        pos.append(p + noise * rng.normal(size=p.shape))
        normal.append(nrm)
        label.append(np.full(count, c))
    order = rng.permutation(num_samples)
    return CloudArrays(
        np.concatenate(pos)[order].astype(np.float32),
        np.concatenate(label)[order].astype(np.int64),
        _unit(np.concatenate(normal)[order]).astype(np.float32),
    )


class SyntheticShapesDataModule(PointCloudDataModule):
    """Procedural shapes (see the module docstring); the default dataset of ``pointgeo train``.

    Args:
        num_train: shapes in the training split (validation is carved from it).
        num_test: shapes in the test split.
        noise: standard deviation of the Gaussian noise added to the surface points.
        Other arguments: see :class:`~pointgeo.datamodules.base.PointCloudDataModule`.
    """

    name = "synthetic"
    up_axis = "z"

    def __init__(
        self,
        num_train: int = 2000,
        num_test: int = 500,
        noise: float = 0.005,
        num_points: int = 1024,
        use_normals: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        train_rotation: RotationMode = "z",
        test_rotation: RotationMode = "so3",
        val_fraction: float = 0.1,
        seed: int = 0,
        scale_augment: tuple[float, float] | None = None,
        jitter: float = 0.0,
    ) -> None:
        super().__init__(
            root=None, num_points=num_points, use_normals=use_normals, batch_size=batch_size,
            num_workers=num_workers, train_rotation=train_rotation, test_rotation=test_rotation,
            val_fraction=val_fraction, seed=seed, scale_augment=scale_augment, jitter=jitter,
        )
        if num_train < len(SHAPES) or num_test < 1:
            raise ValueError(f"num_train must be >= {len(SHAPES)} and num_test >= 1; got {num_train}, {num_test}")
        self.save_hyperparameters()
        self.num_train = num_train
        self.num_test = num_test
        self.noise = noise

    @property
    def class_names(self) -> list[str]:
        return list(SHAPES)

    def load_split(self, split: str) -> CloudArrays:
        size = {"train": self.num_train, "test": self.num_test}[split]
        return generate_shapes(size, self.num_points, sample_seed(self.seed, 7, {"train": 0, "test": 1}[split]),
                               self.noise)
