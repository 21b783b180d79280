"""The base of every fixed-size point-cloud datamodule: splits, rotation protocols, batching.

Subclasses provide the raw arrays of each split through :meth:`PointCloudDataModule.load_split`; this class
normalises the clouds, carves the validation split out of the training split, applies the rotation protocols and
builds the loaders. Batches are dicts (see ``ARCHITECTURE.md``).

Training is reproducible and resumable mid-epoch: the order of epoch ``e`` is a permutation drawn from
``(seed, e)`` (:class:`EpochSampler`, sharded over DDP ranks), every random choice of a training sample (point
subset, scale, jitter, rotation) is drawn from ``(seed, e, index)``, and the training loader
(:class:`ResumableLoader`) tells Lightning how many batches of the epoch it delivered, so a run resumed from a
checkpoint written inside an epoch skips exactly those and sees the rest in the same order.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pointgeo.geometry import POINT_CLOUD_FIELDS, RotationMode, apply_rigid_motion, sample_rotations

ROTATION_MODES = ("none", "z", "so3")


@dataclass
class CloudArrays:
    """The arrays of one split: ``pos (S, N, 3)``, ``label (S,)``, optional ``normal (S, N, 3)``, and for part
    segmentation per-point ``seg (S, N)`` part ids and ``category (S,)``."""

    pos: np.ndarray
    label: np.ndarray
    normal: np.ndarray | None = None
    seg: np.ndarray | None = None
    category: np.ndarray | None = None
    mask: np.ndarray | None = None
    """Optional per-point boolean ``(S, N)``, e.g. ScanObjectNN's object (True) / background (False) mask."""
    instance: np.ndarray | None = None
    """Optional per-point ``(S, N)`` integer ids ``0 … P-1`` of the rigid pieces (the objects of a multi-object
    scene) when ``seg`` does not already tell them apart; the partition piecewise motions follow
    (:func:`pointgeo.geometry.partition_of`)."""

    def __post_init__(self) -> None:
        if self.pos.ndim != 3 or self.pos.shape[-1] != 3:
            raise ValueError(f"pos must have shape (S, N, 3); got {self.pos.shape}")
        if self.label.shape != self.pos.shape[:1]:
            raise ValueError(f"label must have shape ({self.pos.shape[0]},); got {self.label.shape}")
        if self.normal is not None and self.normal.shape != self.pos.shape:
            raise ValueError(f"normal must have the shape of pos {self.pos.shape}; got {self.normal.shape}")
        if self.seg is not None and self.seg.shape != self.pos.shape[:2]:
            raise ValueError(f"seg must have shape {self.pos.shape[:2]}; got {self.seg.shape}")
        if self.category is not None and self.category.shape != self.label.shape:
            raise ValueError(f"category must have shape {self.label.shape}; got {self.category.shape}")
        if self.mask is not None and self.mask.shape != self.pos.shape[:2]:
            raise ValueError(f"mask must have shape {self.pos.shape[:2]}; got {self.mask.shape}")
        if self.instance is not None and self.instance.shape != self.pos.shape[:2]:
            raise ValueError(f"instance must have shape {self.pos.shape[:2]}; got {self.instance.shape}")

    def subset(self, index: np.ndarray) -> CloudArrays:
        """The rows ``index`` of every array."""
        def rows(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return CloudArrays(self.pos[index], self.label[index], rows(self.normal), rows(self.seg), rows(self.category),
                           rows(self.mask), rows(self.instance))


def normalize_unit_sphere(pos: np.ndarray, where: str = "pos") -> np.ndarray:
    """Centre every cloud ``(S, N, 3)`` at its centroid and scale it so its farthest point lies on the unit sphere
    (PointNet++'s ``pc_normalize``: ``(x - mean) / max ||x - mean||``).

    Raises:
        ValueError: a cloud holds NaN/inf, or all its points are equal (``where`` names the data in the message).
    """
    finite = np.isfinite(pos).all(axis=(1, 2))
    if not finite.all():
        raise ValueError(f"{where}: sample {int(np.flatnonzero(~finite)[0])} contains NaN or inf coordinates")
    centred = pos - pos.mean(axis=1, keepdims=True)
    radius = np.linalg.norm(centred, axis=-1).max(axis=1)
    flat = radius <= 1e-6 * np.maximum(np.abs(pos).max(axis=(1, 2)), 1.0)
    if flat.any():
        raise ValueError(f"{where}: sample {int(np.flatnonzero(flat)[0])} is degenerate (all its points are equal)")
    return centred / radius[:, None, None]


def sample_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (the same on every machine and worker)."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) | (len(parts) << 32)


class RotatedCloudDataset(Dataset):
    """Samples of one split with a rotation protocol applied to positions and normals together.

    Args:
        arrays: the split's clouds, already normalised.
        rotation: ``none``, ``z`` (about ``up_axis``) or ``so3``.
        up_axis: the dataset's up axis.
        seed: seed of the split's random choices, identical across runs, machines and loader workers.
        train: a training split: sample ``i`` of epoch ``e`` (the item ``(e, i)``, as :class:`EpochSampler`
            yields them; a plain ``i`` is epoch 0) gets a point subset, augmentations and rotation drawn from
            ``(seed, e, i)``, new each epoch. Otherwise sample ``i`` is fixed by ``(seed, i)`` (validation, test).
        num_points: points per sample; training takes a random subset, evaluation the first ``num_points``.
        use_normals: include the ``normal`` key.
        scale_range: random anisotropic scale ``U(lo, hi)`` per axis in training (``None``: off).
        jitter: standard deviation of Gaussian noise added in training (0: off).
    """

    fields = POINT_CLOUD_FIELDS
    """Which keys of a sample move (``pos`` with translation, ``normal`` without, the ``rotation`` record); the rest
    are invariant."""

    def __init__(
        self,
        arrays: CloudArrays,
        rotation: RotationMode,
        up_axis: str,
        *,
        seed: int,
        train: bool,
        num_points: int,
        use_normals: bool,
        scale_range: tuple[float, float] | None = None,
        jitter: float = 0.0,
    ) -> None:
        if rotation not in ROTATION_MODES:
            raise ValueError(f"rotation must be one of {ROTATION_MODES}; got {rotation!r}")
        if use_normals and arrays.normal is None:
            raise ValueError("use_normals=True but this dataset has no normals")
        if num_points > arrays.pos.shape[1]:
            raise ValueError(f"num_points={num_points} but the clouds have only {arrays.pos.shape[1]} points")
        self.arrays = arrays
        self.rotation = rotation
        self.up_axis = up_axis
        self.seed = seed
        self.train = train
        self.num_points = num_points
        self.use_normals = use_normals
        self.scale_range = scale_range
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.arrays.label)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (0, int(item))
        train = self.train
        gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index) if train else
                                            sample_seed(self.seed, index))
        n_total = self.arrays.pos.shape[1]
        if train and self.num_points < n_total:
            keep = torch.randperm(n_total, generator=gen)[: self.num_points]
        else:
            keep = torch.arange(self.num_points)
        pos = torch.from_numpy(self.arrays.pos[index]).float()[keep]
        normal = torch.from_numpy(self.arrays.normal[index]).float()[keep] if self.use_normals else None
        if train and self.scale_range is not None:
            lo, hi = self.scale_range
            scale = lo + (hi - lo) * torch.rand(3, generator=gen)
            pos = pos * scale
            if normal is not None:  # normals transform by the inverse transpose of the scaling
                normal = normal / scale
                normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if train and self.jitter > 0:
            pos = pos + self.jitter * torch.randn(pos.shape, generator=gen)
        rot = sample_rotations(self.rotation, 1, up_axis=self.up_axis, generator=gen)[0]
        sample = {
            "pos": pos,
            "label": torch.tensor(int(self.arrays.label[index]), dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
            "rotation": torch.eye(3),  # the record: apply_rigid_motion composes it into R
        }
        if normal is not None:
            sample["normal"] = normal
        if self.arrays.seg is not None:
            sample["seg"] = torch.from_numpy(self.arrays.seg[index]).long()[keep]
        if self.arrays.category is not None:
            sample["category"] = torch.tensor(int(self.arrays.category[index]), dtype=torch.long)
        if self.arrays.mask is not None:
            sample["mask"] = torch.from_numpy(self.arrays.mask[index]).bool()[keep]
        if self.arrays.instance is not None:
            sample["instance"] = torch.from_numpy(self.arrays.instance[index]).long()[keep]
        return apply_rigid_motion(sample, self.fields, rot)  # in float64, rounded once to float32


class EpochSampler(DistributedSampler):
    """The training order: epoch ``e`` visits a permutation of the split drawn from ``(seed, e)``, this rank's
    share of it (rank ``r`` of ``R`` takes every ``R``-th index from ``r``; the permutation is padded by its own
    start so the ranks get equal shares, as :class:`~torch.utils.data.DistributedSampler` does). It yields
    ``(epoch, index)`` items, so the dataset's per-epoch draws need no state in the loader's worker processes.

    A :class:`~torch.utils.data.DistributedSampler`, so Lightning keeps it under DDP instead of replacing it, and
    calls :meth:`set_epoch` before each epoch. :meth:`resume` makes the next pass over an epoch start part-way.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        dist = torch.distributed
        ranks, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() \
            else (1, 0)
        super().__init__(dataset, num_replicas=ranks, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0
        """Items of this rank's share of the current epoch already seen (skipped by the next pass)."""

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def resume(self, epoch: int, start: int) -> None:
        """Make the next pass visit epoch ``epoch`` from item ``start`` of this rank's share on."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"resume position {start} is outside this rank's {self.num_samples} training samples "
                             f"(was the checkpoint written with another dataset or batch size?)")
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self.dataset)  # type: ignore[arg-type]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(sample_seed(self.seed, self.epoch)))
        order = order.repeat(math.ceil(self.total_size / n))[: self.total_size] if n else order
        share = order[self.rank: self.total_size: self.num_replicas][self.start:].tolist()
        epoch, self.start = self.epoch, 0
        return iter([(epoch, index) for index in share])


class ResumableLoader(DataLoader):
    """The training loader: a :class:`~torch.utils.data.DataLoader` over an :class:`EpochSampler` that Lightning
    checkpoints (``state_dict``: the epoch and how many of its batches were delivered) and restores
    (``load_state_dict``: the next pass skips those batches). Counted where batches are handed to the training
    loop, so worker prefetching does not move the position."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position = {"epoch": 0, "batches": 0}

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        if not isinstance(sampler, EpochSampler):
            raise TypeError(f"ResumableLoader needs an EpochSampler; got {type(sampler).__name__}")
        position = {"epoch": sampler.epoch, "batches": sampler.start // self.batch_size}
        self._position = position
        for batch in super().__iter__():
            position["batches"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch and the number of its batches delivered so far (stored in checkpoints by Lightning)."""
        return dict(self._position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the epoch of ``state`` after its delivered batches."""
        self.sampler.resume(int(state["epoch"]), int(state["batches"]) * self.batch_size)  # type: ignore[attr-defined]


class SplitLoaders(ABC):
    """Lightning's four loader hooks of a datamodule, each the :meth:`_loader` of its split (prediction runs over the
    test split). Mixed in before ``pl.LightningDataModule``."""

    @abstractmethod
    def _loader(self, split: str) -> DataLoader:
        """The loader of ``split`` (``train``, ``val`` or ``test``)."""

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


class PartLabels(ABC):
    """What a part-segmentation datamodule tells its task: the global part ids of every category; the number of
    parts and of categories follow from them. Mixed in before :class:`PointCloudDataModule`."""

    @property
    @abstractmethod
    def category_parts(self) -> list[list[int]]:
        """Global part ids of every category."""

    @property
    def num_parts(self) -> int:
        return sum(map(len, self.category_parts))

    @property
    def num_categories(self) -> int:
        return len(self.category_parts)


class PointCloudDataModule(SplitLoaders, pl.LightningDataModule):
    """Base datamodule for fixed-size labelled clouds.

    Every argument is keyword-only: subclasses forward them by name, so that a subclass adding or reordering its own
    arguments can never shift one into another's place.

    Args:
        root: folder of the raw and processed files (subclasses default it into the pointgeo cache).
        num_points: points per sample.
        use_normals: include normals in the batches.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        train_rotation: rotation protocol of the training (and validation) split: ``none``, ``z``, ``so3``.
        test_rotation: rotation protocol of the test split.
        val_fraction: fraction of the training split held out for validation (stratified, seeded). The test
            split is never used for model selection.
        seed: seed of the split, of the training order and augmentations (a function of ``(seed, epoch,
            index)``, see :class:`EpochSampler`) and of the fixed evaluation rotations.
        scale_augment: random anisotropic scale range for training, e.g. ``[0.8, 1.25]`` (``None``: off).
        jitter: Gaussian jitter for training (0: off).
    """

    name = "pointclouds"
    up_axis = "z"
    fields = POINT_CLOUD_FIELDS
    """The kind of each batch key under a rigid motion (``pointgeo.geometry.apply_rigid_motion``)."""

    def __init__(
        self,
        *,
        root: str | None = None,
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
        super().__init__()
        for key, mode in (("train_rotation", train_rotation), ("test_rotation", test_rotation)):
            if mode not in ROTATION_MODES:
                raise ValueError(f"{key} must be one of {ROTATION_MODES}; got {mode!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
        self.root = Path(root).expanduser() if root is not None else None
        self.num_points = num_points
        self.use_normals = use_normals
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_rotation = train_rotation
        self.test_rotation = test_rotation
        self.val_fraction = val_fraction
        self.seed = seed
        self.scale_augment = tuple(scale_augment) if scale_augment is not None else None
        self.jitter = jitter
        self._splits: dict[str, CloudArrays] = {}

    # --- what subclasses provide -------------------------------------------------------------------------
    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Names of the classes, indexed by label."""

    @abstractmethod
    def load_split(self, split: str) -> CloudArrays:
        """Raw arrays of the official ``"train"`` or ``"test"`` split (and ``"val"`` when ``official_val``), before
        normalisation."""

    # --- shared behaviour ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def set_test_rotation(self, mode: RotationMode) -> None:
        """Switch the test split's rotation protocol (used to test one model under several protocols)."""
        if mode not in ROTATION_MODES:
            raise ValueError(f"test_rotation must be one of {ROTATION_MODES}; got {mode!r}")
        self.test_rotation = mode

    official_val = False
    """Whether ``load_split("val")`` gives the dataset's own validation split (else it is carved from train)."""

    def _load_normalized(self, split: str) -> CloudArrays:
        arrays = self.load_split(split)
        arrays.pos = normalize_unit_sphere(arrays.pos, f"{self.name} {split} split").astype(np.float32)
        return arrays

    def _train_val_indices(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        val = []
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            size = int(round(len(members) * self.val_fraction))
            if self.val_fraction > 0 and len(members) > 1:
                size = max(1, size)  # every class is validated, even in small sets
            val.append(members[:size])
        val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
        train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
        return train_idx, val_idx

    def setup(self, stage: str | None = None) -> None:
        """Load the splits a stage needs (``fit``/``validate`` → train and val, ``test``/``predict`` → test)."""
        if stage in (None, "fit", "validate") and "train" not in self._splits:
            full = self._load_normalized("train")
            if self.official_val:
                self._splits["train"], self._splits["val"] = full, self._load_normalized("val")
            else:
                train_idx, val_idx = self._train_val_indices(full.label)
                self._splits["train"] = full.subset(train_idx)
                self._splits["val"] = full.subset(val_idx)
        if stage in (None, "test", "predict") and "test" not in self._splits:
            self._splits["test"] = self._load_normalized("test")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v.label)}" for k, v in self._splits.items()) or "not set up"
        return (f"{type(self).__name__}({self.num_classes} classes, {sizes}; num_points={self.num_points}, "
                f"normals={self.use_normals}, rotation train={self.train_rotation} test={self.test_rotation} "
                f"about {self.up_axis}, batch_size={self.batch_size})")

    def dataset(self, split: str) -> RotatedCloudDataset:
        """The dataset of ``train``, ``val`` or ``test`` with its rotation protocol applied."""
        if split not in self._splits:
            self.setup("fit" if split in ("train", "val") else "test")
        train = split == "train"
        rotation = self.test_rotation if split == "test" else self.train_rotation
        return RotatedCloudDataset(
            self._splits[split],
            rotation,
            self.up_axis,
            seed=sample_seed(self.seed, {"train": 0, "val": 1, "test": 2}[split]),
            train=train,
            num_points=self.num_points,
            use_normals=self.use_normals,
            scale_range=self.scale_augment if train else None,
            jitter=self.jitter if train else 0.0,
        )

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        train = split == "train"
        return (ResumableLoader if train else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSampler(dataset, sample_seed(self.seed, 3)) if train else None,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(sample_seed(self.seed, 4)),  # worker seeds: not the global RNG
        )
