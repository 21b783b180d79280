"""Multi-object scenes assembled from ModelNet shapes, each object posed on its own, for piecewise segmentation.

A scene holds ``objects_per_scene`` shapes of one ModelNet split (a seeded choice, distinct shapes when the split has
enough), each normalised to the unit sphere, turned by its own Haar rotation and placed in its own cell of a cubic
grid of spacing ``2 + gap`` (with a jitter of at most ``gap / 2`` per axis), so the objects' bounding spheres never
overlap. Every object moves rigidly on its own, as the furniture of a room does: exactly the piecewise motions
APEN is built for, and those under which a globally invariant network has no guarantee.

Per point the batches carry ``seg`` (the ModelNet class of its object, or its object index with
``seg_labels="instance"``) and ``instance`` (the object index ``0 … K-1``, the partition that piecewise motions and
APEN's parts follow: two chairs of a scene share a class but not an instance); ``category`` is 0 (one category,
"scene", whose parts are the classes). Scenes are generated from the seeded source objects when a split is loaded
(vectorised over the scenes), deterministic by ``seed``; training order and augmentations follow the resumable
:class:`~pointgeo.datamodules.base.EpochSampler` pattern of every datamodule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pointgeo.datamodules.base import CloudArrays, PartLabels, PointCloudDataModule, normalize_unit_sphere, sample_seed
from pointgeo.datamodules.modelnet import ModelNet10DataModule, ModelNet40DataModule, ModelNetFormat, Sampling
from pointgeo.geometry import RotationMode, apply_piecewise_motion, random_rotations

SegLabels = Literal["class", "instance"]


@dataclass
class Scenes:
    """Composed scenes: the arrays (``instance`` set), the source shape of every object ``objects (S, K)`` and each
    object's motion from its normalised source pose, ``x ↦ x R^T + t``: ``rotation (S, K, 3, 3)``,
    ``translation (S, K, 3)``."""

    arrays: CloudArrays
    objects: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray


def object_counts(num_points: int, objects: int) -> list[int]:
    """Points of each object of a scene: ``num_points`` split evenly, the first objects taking the remainder."""
    if objects < 1 or num_points < objects:
        raise ValueError(f"num_points must be >= objects_per_scene >= 1 to give every object a point; got "
                         f"num_points={num_points}, objects_per_scene={objects}")
    base, extra = divmod(num_points, objects)
    return [base + (k < extra) for k in range(objects)]


def compose_scenes(source: CloudArrays, num_scenes: int, num_points: int, objects_per_scene: int, seed: int, *,
                   gap: float = 0.5, seg_labels: SegLabels = "class") -> Scenes:
    """``num_scenes`` scenes of ``num_points`` points from the shapes ``source`` (``pos (M, n, 3)``, ``label
    (M,)``, optional ``normal``), each of ``objects_per_scene`` objects posed independently (module docstring).

    Object ``k`` keeps the first ``object_counts(...)[k]`` points of its shape (a farthest-point ordering stays a
    farthest-point sample of any prefix); the points of a scene are then shuffled. Returns :class:`Scenes`.

    Raises:
        ValueError: no shapes, too few points per shape, a bad count, ``gap < 0`` or an unknown ``seg_labels``.
    """
    if seg_labels not in ("class", "instance"):
        raise ValueError(f"seg_labels must be 'class' or 'instance'; got {seg_labels!r}")
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1; got {num_scenes}")
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0 (clearance between objects, in object radii); got {gap}")
    counts = object_counts(num_points, objects_per_scene)
    shapes, size = source.pos.shape[:2]
    if shapes < 1 or size < counts[0]:
        raise ValueError(f"the source split has {shapes} shapes of {size} points; scenes need at least one shape of "
                         f"{counts[0]} points")
    k = objects_per_scene
    rng = np.random.default_rng(seed)
    motions = torch.Generator().manual_seed(sample_seed(seed, 1))
    shape_pos = normalize_unit_sphere(source.pos.astype(np.float64), "multi-object source shapes")
    if shapes >= k:  # distinct shapes within a scene
        objects = np.argsort(rng.random((num_scenes, shapes)), axis=1)[:, :k]
    else:
        objects = rng.integers(0, shapes, (num_scenes, k))
    pos = np.concatenate([shape_pos[objects[:, j], :c] for j, c in enumerate(counts)], 1)
    normal = None if source.normal is None else np.concatenate(
        [source.normal[objects[:, j], :c] for j, c in enumerate(counts)], 1).astype(np.float64)
    instance = np.repeat(np.arange(k), counts)[None].repeat(num_scenes, 0)  # (S, N)
    rotation = random_rotations(num_scenes * k, generator=motions).reshape(num_scenes, k, 3, 3)
    side = max(1, math.ceil(round(k ** (1 / 3), 9)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3) - (side - 1) / 2
    cells = np.argsort(rng.random((num_scenes, len(grid))), axis=1)[:, :k]
    shift = grid[cells] * (2 + gap) + rng.uniform(-gap / 2, gap / 2, (num_scenes, k, 3))  # (S, K, 3)
    moved, turned = apply_piecewise_motion(
        torch.from_numpy(pos), None if normal is None else torch.from_numpy(normal), torch.from_numpy(instance),
        rotation, torch.from_numpy(shift[:, :, None]), torch.zeros(num_scenes, k, 1, 3, dtype=torch.float64))
    order = np.argsort(rng.random(instance.shape), axis=1)
    shuffle = lambda a: np.take_along_axis(a, order[..., None] if a.ndim == 3 else order, 1)  # noqa: E731
    classes = source.label.astype(np.int64)[objects]  # (S, K)
    seg = np.take_along_axis(classes, instance, 1) if seg_labels == "class" else instance
    if turned is not None:
        turned = turned / turned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    zeros = np.zeros(num_scenes, dtype=np.int64)
    arrays = CloudArrays(shuffle(moved.numpy()).astype(np.float32), zeros,
                         None if turned is None else shuffle(turned.numpy()).astype(np.float32),
                         shuffle(seg).astype(np.int64), zeros, instance=shuffle(instance).astype(np.int64))
    return Scenes(arrays, objects, rotation.numpy(), shift)


class MultiObjectScenesDataModule(PartLabels, PointCloudDataModule):
    """Scenes of several ModelNet objects, each posed independently (see the module docstring), for segmentation
    per class (``seg_labels="class"``: the ModelNet classes are the parts of the one category ``scene``) or per
    object (``"instance"``: the parts are the object slots ``0 … K-1``).

    Args:
        variant: ModelNet40 or ModelNet10 as the source of the objects.
        format, root, download, sampling: of the source :class:`~pointgeo.datamodules.ModelNetDataModule`; its
            official train split gives the training (and validation) scenes' objects, its test split the test
            scenes'.
        objects_per_scene: objects ``K`` in every scene.
        num_train: scenes in the training split (validation is carved from it); num_test: test scenes.
        gap: clearance between the objects' unit bounding spheres is at least 0, their cells ``2 + gap`` apart.
        seg_labels: what ``seg`` holds, ``class`` or ``instance``; ``instance`` is in every batch.
        Other arguments: see :class:`~pointgeo.datamodules.base.PointCloudDataModule`.
    """

    name = "multi_object"

    def __init__(
        self,
        variant: int = 40,
        format: ModelNetFormat = "normal_resampled",
        root: str | None = None,
        download: bool = True,
        sampling: Sampling = "fps",
        objects_per_scene: int = 3,
        num_train: int = 400,
        num_test: int = 100,
        gap: float = 0.5,
        seg_labels: SegLabels = "class",
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
        if variant not in (10, 40):
            raise ValueError(f"variant must be 40 or 10; got {variant!r}")
        if seg_labels not in ("class", "instance"):
            raise ValueError(f"seg_labels must be 'class' or 'instance'; got {seg_labels!r}")
        if num_train < 1 or num_test < 1:
            raise ValueError(f"num_train and num_test must be >= 1; got {num_train}, {num_test}")
        if not gap >= 0:
            raise ValueError(f"gap must be >= 0; got {gap}")
        counts = object_counts(num_points, objects_per_scene)
        source = (ModelNet40DataModule if variant == 40 else ModelNet10DataModule)(
            format=format, root=root, download=download, sampling=sampling, num_points=counts[0], seed=seed)
        super().__init__(
            root=str(source.root), num_points=num_points, use_normals=use_normals, batch_size=batch_size,
            num_workers=num_workers, train_rotation=train_rotation, test_rotation=test_rotation,
            val_fraction=val_fraction, seed=seed, scale_augment=scale_augment, jitter=jitter,
        )
        self.save_hyperparameters()
        self.source = source
        self.up_axis = source.up_axis
        self.objects_per_scene, self.num_train, self.num_test = objects_per_scene, num_train, num_test
        self.gap, self.seg_labels = gap, seg_labels

    @property
    def class_names(self) -> list[str]:
        return ["scene"]

    @property
    def part_names(self) -> list[str]:
        """Name of every part id: the source's class names, or ``object 0 … K-1``."""
        if self.seg_labels == "class":
            return list(self.source.class_names)
        return [f"object {k}" for k in range(self.objects_per_scene)]

    @property
    def category_parts(self) -> list[list[int]]:
        """One category, ``scene``, whose parts are all the part ids."""
        return [list(range(len(self.part_names)))]

    def prepare_data(self) -> None:
        """Fetch and preprocess the source ModelNet release (see :meth:`ModelNetDataModule.prepare_data`)."""
        self.source.prepare_data()

    def scenes(self, split: str) -> Scenes:
        """The composed scenes of the ``train`` or ``test`` split, with their objects and motions."""
        size = {"train": self.num_train, "test": self.num_test}[split]
        return compose_scenes(self.source.load_split(split), size, self.num_points, self.objects_per_scene,
                              sample_seed(self.seed, 13, {"train": 0, "test": 1}[split]), gap=self.gap,
                              seg_labels=self.seg_labels)

    def load_split(self, split: str) -> CloudArrays:
        return self.scenes(split).arrays
