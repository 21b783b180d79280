"""A built-in articulated set: shapes assembled from rigid parts, each part moved by its own rigid motion.

Three categories of several parts each (global part ids as in ShapeNet part: each category owns a contiguous
range, :data:`CATEGORY_PARTS`): a ``lamp`` (base, stem, shade), a pair of ``scissors`` (two blades, the pivot ring)
and a ``figure`` (torso, head, two arms). A part is one of the procedural primitives of
:mod:`pointgeo.datamodules.synthetic` with random proportions, stretched to its extents; in every sample each part
gets its own Haar rotation about its centre and a translation from its rest position (standard deviation
``motion_translation`` times the part's size), seeded, so the parts move independently, as the limbs of a body or
the objects of a scene do. Nothing but the part labels tells which points belong together. Deterministic by seed,
vectorised over the samples of a category; batches carry ``seg (B, N)`` and ``category (B,)`` like ShapeNet part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pointgeo.datamodules.base import CloudArrays, PartLabels, PointCloudDataModule, sample_seed
from pointgeo.datamodules.synthetic import SHAPES
from pointgeo.geometry import RotationMode, apply_piecewise_motion, random_rotations


@dataclass(frozen=True)
class Part:
    """One rigid part: a primitive of :data:`~pointgeo.datamodules.synthetic.SHAPES`, its extents (scale per axis),
    its rest position and its share of the sample's points."""

    primitive: str
    extents: tuple[float, float, float]
    rest: tuple[float, float, float]
    share: float


CATEGORIES: dict[str, tuple[Part, ...]] = {
    "lamp": (Part("cylinder", (0.6, 0.6, 0.12), (0.0, 0.0, -1.0), 0.3),
             Part("capsule", (0.15, 0.15, 0.6), (0.0, 0.0, 0.0), 0.3),
             Part("cone", (0.5, 0.5, 0.35), (0.0, 0.0, 1.0), 0.4)),
    "scissors": (Part("ellipsoid", (0.9, 0.18, 0.06), (0.5, 0.0, 0.0), 0.4),
                 Part("ellipsoid", (0.9, 0.18, 0.06), (-0.5, 0.0, 0.0), 0.4),
                 Part("torus", (0.35, 0.35, 0.35), (0.0, 0.8, 0.0), 0.2)),
    "figure": (Part("box", (0.45, 0.3, 0.6), (0.0, 0.0, 0.0), 0.4),
               Part("ellipsoid", (0.3, 0.3, 0.3), (0.0, 0.0, 1.0), 0.2),
               Part("capsule", (0.12, 0.12, 0.5), (0.8, 0.0, 0.1), 0.2),
               Part("capsule", (0.12, 0.12, 0.5), (-0.8, 0.0, 0.1), 0.2)),
}
"""The categories, in label order, and their parts, in part-id order."""
CATEGORY_PARTS: list[list[int]] = []
for _parts in CATEGORIES.values():
    CATEGORY_PARTS.append(list(range(sum(map(len, CATEGORY_PARTS)), sum(map(len, CATEGORY_PARTS)) + len(_parts))))
NUM_PARTS = sum(map(len, CATEGORY_PARTS))
"""Global part ids of every category (lamp 0–2, scissors 3–5, figure 6–9) and their number."""


@dataclass
class Articulated:
    """Generated samples: the arrays, and each sample's part motions ``rotation (S, P, 3, 3)`` (row vectors:
    ``x ↦ (x - c) R^T + c + t``), ``translation (S, P, 3)`` and part centres at rest ``centre (S, P, 3)`` (``P`` the
    most parts of a category; unused slots hold the identity)."""

    arrays: CloudArrays
    rotation: np.ndarray
    translation: np.ndarray
    centre: np.ndarray


def part_counts(parts: tuple[Part, ...], num_points: int) -> list[int]:
    """Points of each part: ``num_points`` split by the shares (at least one point each)."""
    shares = np.array([p.share for p in parts]) / sum(p.share for p in parts)
    counts = np.maximum(1, np.floor(shares * num_points).astype(int))
    counts[0] += num_points - counts.sum()
    if counts[0] < 1:
        raise ValueError(f"num_points must be >= {len(parts)} to give every part a point; got {num_points}")
    return counts.tolist()


def generate_articulated(num_samples: int, num_points: int, seed: int, *, noise: float = 0.005,
                         motion: bool = True, motion_translation: float = 0.3) -> Articulated:
    """``num_samples`` samples of ``num_points`` points, categories balanced, in a seeded order.

    The primitives' points and the motions come from separate seeded streams, so ``motion=False`` gives the same
    parts at rest (what the tests compare against). Returns :class:`Articulated` with ``pos``, unit ``normal``,
    ``seg`` (global part ids), ``category`` and ``label`` (= category).
    """
    if num_samples < 1 or num_points < 1:
        raise ValueError(f"num_samples and num_points must be >= 1; got {num_samples}, {num_points}")
    rng = np.random.default_rng(seed)
    motions = torch.Generator().manual_seed(sample_seed(seed, 1))
    most = max(map(len, CATEGORIES.values()))
    counts = np.full(len(CATEGORIES), num_samples // len(CATEGORIES))
    counts[: num_samples % len(CATEGORIES)] += 1
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("pos", "normal", "seg", "category", "rot", "shift", "centre")}
    for c, (parts, s) in enumerate(zip(CATEGORIES.values(), counts.tolist())):
        rot = np.broadcast_to(np.eye(3), (s, most, 3, 3)).copy()
        shift, centre = np.zeros((s, most, 3)), np.zeros((s, most, 3))
        pos, normal, seg, local = [], [], [], []
        for j, (part, n) in enumerate(zip(parts, part_counts(parts, num_points))):
            p, nrm = SHAPES[part.primitive](rng, s, n)
            ext = np.asarray(part.extents) / np.abs(p).max(axis=1, keepdims=True).clip(1e-12)  # (S, 1, 3)
            p, nrm = p * ext, nrm / ext  # stretched to the extents; normals by the inverse stretch
            p = p - p.mean(1, keepdims=True) + np.asarray(part.rest)
            centre[:, j] = p.mean(1)
            r = random_rotations(s, generator=motions).numpy()  # drawn without motion too: streams stay aligned
            t = motion_translation * max(part.extents) * torch.randn(s, 3, generator=motions, dtype=torch.float64).numpy()
            if motion:
                rot[:, j], shift[:, j] = r, t
            pos.append(p)
            normal.append(nrm)
            local.append(np.full((s, n), j))
            seg.append(np.full((s, n), CATEGORY_PARTS[c][j]))
        moved, turned = apply_piecewise_motion(
            torch.from_numpy(np.concatenate(pos, 1)), torch.from_numpy(np.concatenate(normal, 1)),
            torch.from_numpy(np.concatenate(local, 1)), torch.from_numpy(rot), torch.from_numpy(shift[:, :, None]),
            torch.from_numpy(centre[:, :, None]))
        order = np.argsort(rng.random((s, num_points)), axis=1)  # parts interleaved in the point order
        for key, values in (("pos", moved.numpy()), ("normal", turned.numpy())):
            out[key].append(np.take_along_axis(values, order[..., None], 1))
        out["seg"].append(np.take_along_axis(np.concatenate(seg, 1), order, 1))
        out["category"].append(np.full(s, c))
        out["rot"].append(rot)
        out["shift"].append(shift)
        out["centre"].append(centre)
    shuffle = rng.permutation(num_samples)
    cat = {k: np.concatenate(v)[shuffle] for k, v in out.items()}
    pos = cat["pos"] + noise * rng.normal(size=cat["pos"].shape)
    normal = cat["normal"] / np.linalg.norm(cat["normal"], axis=-1, keepdims=True).clip(1e-12)
    category = cat["category"].astype(np.int64)
    arrays = CloudArrays(pos.astype(np.float32), category, normal.astype(np.float32), cat["seg"].astype(np.int64),
                         category)
    return Articulated(arrays, cat["rot"], cat["shift"], cat["centre"])


class ArticulatedPartsDataModule(PartLabels, PointCloudDataModule):
    """Articulated shapes with per-part motions (see the module docstring), for part segmentation.

    Args:
        num_train: samples in the training split (validation is carved from it).
        num_test: samples in the test split.
        noise: standard deviation of the Gaussian noise added to the surface points.
        motion_translation: standard deviation of each part's translation from rest, in units of its size.
        Other arguments: see :class:`~pointgeo.datamodules.base.PointCloudDataModule`.
    """

    name = "articulated"
    up_axis = "z"

    def __init__(
        self,
        num_train: int = 600,
        num_test: int = 150,
        noise: float = 0.005,
        motion_translation: float = 0.3,
        num_points: int = 1024,
        use_normals: bool = False,
        batch_size: int = 16,
        num_workers: int = 0,
        train_rotation: RotationMode = "so3",
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
        if num_train < len(CATEGORIES) or num_test < 1:
            raise ValueError(f"num_train must be >= {len(CATEGORIES)} and num_test >= 1; got {num_train}, {num_test}")
        if num_points < max(map(len, CATEGORIES.values())):
            raise ValueError(f"num_points must be >= {max(map(len, CATEGORIES.values()))}; got {num_points}")
        self.save_hyperparameters()
        self.num_train, self.num_test = num_train, num_test
        self.noise, self.motion_translation = noise, motion_translation

    @property
    def class_names(self) -> list[str]:
        return list(CATEGORIES)

    @property
    def category_parts(self) -> list[list[int]]:
        """Global part ids of every category."""
        return CATEGORY_PARTS

    def load_split(self, split: str) -> CloudArrays:
        size = {"train": self.num_train, "test": self.num_test}[split]
        seed = sample_seed(self.seed, 11, {"train": 0, "test": 1}[split])
        return generate_articulated(size, self.num_points, seed, noise=self.noise,
                                    motion_translation=self.motion_translation).arrays
