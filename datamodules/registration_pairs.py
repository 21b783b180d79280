"""Registration pairs made from real geometry on any machine: overlapping crops of 3DMatch fragments and partial
views of ModelNet40 shapes, each cloud under its own random rigid motion, batched exactly like
:class:`~pointgeo.datamodules.ThreeDMatchDataModule` (:class:`~pointgeo.datamodules.threedmatch.FragmentPair`,
``follow_batch=["src_pos", "tgt_pos"]``; keys ``src_pos``, ``tgt_pos``, ``transform``, ``src_motion``,
``tgt_motion``, ``overlap``, ``scene``, ``src_id``, ``tgt_id``, ``index``).

The geometry is a list of **items**, each a source cloud, a target cloud and the pose ``T`` mapping the source into
the target's frame:

* a 3DMatch fragment (``fragments``, PREDATOR's ``cloud_bin_<k>.pth`` or ``.npy``, relative to ``threedmatch_root``):
  source = target = the fragment, ``T = I``;
* the GeoTransformer demo pair (``demo_pair``: ``src.npy``, ``ref.npy``, ``gt.npy``): two real scans and their
  ground-truth pose;
* a ModelNet40 shape (``modelnet_root``, the ``modelnet40_normal_resampled`` txt layout; the shapes present are
  used, whatever the list files name), centred and scaled so its farthest point lies ``modelnet_radius`` from the
  centre; source = target = the shape, ``T = I``.

Splits: 3DMatch fragments and the ModelNet shapes absent from the official ``modelnet40_test.txt`` are training
items; the demo pair and the official test shapes are test items, never seen in training. Validation pairs are
fresh crops of the training items (too little real geometry is available to hold more out). A split has
``<split>_pairs_per_item`` pairs per item; pair ``i`` is pair ``i mod k`` of item ``i // k``, and ``scene`` is the
item's index in :attr:`RegistrationPairsDataModule.scenes` of the split.

A pair, drawn from ``(seed, epoch, index, attempt)`` in training and from ``(seed, index, attempt)`` otherwise (so
validation and test pairs are fixed; they are built once, at set-up):

1. **Half-space crops with a controlled overlap.** An overlap ``o ~ U(overlap_range)`` and a Haar direction ``d``;
   with ``f = 1 / (2 − o)`` the source keeps the fraction ``f`` of its points lowest along ``d`` and the target the
   fraction ``f`` highest along ``d``, both measured in the target's frame (the source moved by ``T``). For two crops
   of one cloud the shared slab holds ``2f − 1`` of the points, i.e. the fraction ``(2f − 1) / f = o`` of the
   source crop.
2. **A rigid motion per crop**: a rotation about a uniform random axis by an angle uniform in ``[0, motion_angle]``
   degrees and a translation ``N(0, motion_translation²)`` per axis, source and target independently, applied by
   :func:`pointgeo.geometry.apply_pair_motion` (so ``transform = M_tgt · T · M_src⁻¹``; ``src_motion``,
   ``tgt_motion`` record ``M_src``, ``M_tgt``).
3. **Resampling**: each moved crop is averaged into voxels of ``voxel_size``
   (:func:`pointgeo.geometry.voxel_downsample`, a grid fixed in the moved frame, so the two crops of one cloud are
   sampled differently, as two scans are), then clouds above ``num_points`` keep a random subset.
4. **Overlap**: the fraction of source points with a target point within ``overlap_radius`` once moved by the true
   ``transform`` (nearest neighbours from :func:`pointgeo.geometry.knn`), stored as ``overlap``.

Rules for bad pairs: a crop with fewer than ``min_points`` points raises ``ValueError``; a pair whose measured
overlap is below ``min_overlap`` is redrawn (next ``attempt``), and after ``MAX_ATTEMPTS`` draws ``ValueError``
names the item. At set-up, an item whose clouds cannot give a crop of ``min_points`` points, or whose whole clouds
overlap less than ``min_overlap`` under ``T`` (e.g. a wrong pose), raises ``ValueError``.

Rotation protocols, as in :class:`~pointgeo.datamodules.ThreeDMatchDataModule`, applied to **one** cloud about its
origin after the steps above (the same points, rotated): ``train_rotation`` ``none`` / ``haar``; ``test_rotation``
(validation and test) ``none`` / ``haar`` (one Haar rotation per pair from ``(seed, index)`` on ``rotated_cloud``) /
``roitr_euler`` (RoITr's seeded Euler draw). ``augment_noise`` adds uniform noise ``(u − ½) · augment_noise`` to
every training coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pointgeo.datamodules.base import normalize_unit_sphere, sample_seed
from pointgeo.datamodules.readers import DatasetFileError, read_txt_cloud
from pointgeo.datamodules.registration_readers import POSE_TOLERANCE, read_fragment
from pointgeo.datamodules.release import read_list
from pointgeo.datamodules.threedmatch import (
    FragmentPair,
    PairSplits,
    RotatedCloud,
    TestRotation,
    pair_rotation,
)
from pointgeo.geometry import (
    FRAGMENT_PAIR_FIELDS,
    apply_pair_motion,
    axis_angle_to_matrix,
    knn,
    rigid_matrix,
    rotation_defect,
    transform_points,
    voxel_downsample,
)

MAX_ATTEMPTS = 10
"""Draws of a pair before a measured overlap below ``min_overlap`` becomes an error."""
DEFAULT_FRAGMENTS = ("assets/cloud_bin_21.pth", "assets/cloud_bin_34.pth")
DEFAULT_DEMO_PAIR = "geotransformer/data/demo"


@dataclass(frozen=True)
class PairItem:
    """One piece of geometry pairs are cut from: ``source (N, 3)`` and ``target (M, 3)`` float64 and the pose
    ``transform (4, 4)`` mapping the source into the target's frame (the same array twice and ``I`` for crops of one
    cloud)."""

    name: str
    source: np.ndarray
    target: np.ndarray
    transform: np.ndarray


@dataclass(frozen=True)
class PairSettings:
    """How pairs are cut and moved (the datamodule's arguments of the same names)."""

    overlap_range: tuple[float, float]
    overlap_radius: float
    min_overlap: float
    voxel_size: float | None
    num_points: int | None
    min_points: int
    motion_angle: float
    motion_translation: float


def _compose(outer: Tensor, inner: Tensor) -> Tensor:
    """The record ``outer · inner`` of two motions ``(…, 4, 4)`` (``inner`` first)."""
    return outer @ inner


def _random_motion(gen: torch.Generator, max_degrees: float, translation: float) -> tuple[Tensor, Tensor]:
    """A rotation ``(3, 3)`` about a uniform axis by an angle uniform in ``[0, max_degrees]`` and a translation
    ``(3,)`` with ``N(0, translation²)`` coordinates, float64."""
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    angle = torch.rand((), generator=gen, dtype=torch.float64) * math.radians(max_degrees)
    shift = torch.randn(3, generator=gen, dtype=torch.float64) * translation
    return axis_angle_to_matrix(axis, angle), shift


def source_overlap(source: Tensor, target: Tensor, transform: Tensor, radius: float) -> float:
    """The fraction of ``source (N, 3)`` points that ``transform (4, 4)`` moves within ``radius`` of a point of
    ``target (M, 3)`` (nearest neighbours by :func:`pointgeo.geometry.knn`, in float32)."""
    moved = transform_points(source.double(), transform.double()).float()
    _, sqdist = knn(moved.unsqueeze(0), target.float().unsqueeze(0), 1)
    return float((sqdist[0, :, 0] < radius**2).double().mean())


def _resample(points: Tensor, settings: PairSettings, gen: torch.Generator) -> Tensor:
    if settings.voxel_size is not None:
        points = voxel_downsample(points, settings.voxel_size)
    if settings.num_points is not None and len(points) > settings.num_points:
        points = points[torch.randperm(len(points), generator=gen)[: settings.num_points].sort().values]
    return points


def crop_pair(item: PairItem, settings: PairSettings, gen: torch.Generator) -> dict[str, Tensor]:
    """Steps 1-4 of the module docstring for one draw: the moved, resampled crops (float64), ``transform``,
    ``src_motion``, ``tgt_motion`` ``(1, 4, 4)`` and ``overlap`` ``(1,)``.

    Raises:
        ValueError: a crop has fewer than ``min_points`` points after resampling.
    """
    lo, hi = settings.overlap_range
    overlap = lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))
    keep = 1.0 / (2.0 - overlap)
    direction = torch.randn(3, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm()
    source, target = torch.from_numpy(item.source), torch.from_numpy(item.target)
    pose = torch.from_numpy(item.transform)
    along_src = transform_points(source, pose) @ direction
    along_tgt = target @ direction
    src = source[along_src <= torch.quantile(along_src, keep)]
    tgt = target[along_tgt >= torch.quantile(along_tgt, 1.0 - keep)]
    (r1, t1), (r2, t2) = (_random_motion(gen, settings.motion_angle, settings.motion_translation) for _ in range(2))
    sample = apply_pair_motion({"src_pos": src, "tgt_pos": tgt, "transform": pose.unsqueeze(0)},
                               FRAGMENT_PAIR_FIELDS, source=(r1, t1), target=(r2, t2))
    for key, side in (("src_pos", "source"), ("tgt_pos", "target")):
        sample[key] = _resample(sample[key], settings, gen)
        if len(sample[key]) < settings.min_points:
            raise ValueError(f"{item.name}: the {side} crop has {len(sample[key])} points after resampling "
                             f"(voxel_size={settings.voxel_size}, num_points={settings.num_points}); min_points="
                             f"{settings.min_points} are needed: use a denser cloud or a smaller voxel_size")
    measured = source_overlap(sample["src_pos"], sample["tgt_pos"], sample["transform"][0], settings.overlap_radius)
    sample["src_motion"] = rigid_matrix(r1, t1).unsqueeze(0)
    sample["tgt_motion"] = rigid_matrix(r2, t2).unsqueeze(0)
    sample["overlap"] = torch.tensor([measured], dtype=torch.float64)
    return sample


class CroppedPairDataset(Dataset):
    """The pairs of one split (see the module docstring). ``train``: items are ``(epoch, index)`` from
    :class:`~pointgeo.datamodules.base.EpochSampler` and every pair is drawn afresh; otherwise every pair is drawn
    once, here (so a pair that cannot be made fails at construction)."""

    def __init__(self, items: list[PairItem], pairs_per_item: int, settings: PairSettings, *, rotation: str,
                 rotated_cloud: RotatedCloud, seed: int, train: bool, augment_noise: float = 0.0) -> None:
        self.items = items
        self.pairs_per_item = pairs_per_item
        self.settings = settings
        self.rotation = rotation
        self.rotated_cloud = rotated_cloud
        self.seed = seed
        self.train = train
        self.augment_noise = augment_noise
        self._fixed = None if train else [self._draw(0, index) for index in range(len(self))]

    def __len__(self) -> int:
        return len(self.items) * self.pairs_per_item

    def _draw(self, epoch: int, index: int) -> dict[str, Tensor]:
        item = self.items[index // self.pairs_per_item]
        measured = []
        for attempt in range(MAX_ATTEMPTS):
            parts = (self.seed, epoch, index, attempt) if self.train else (self.seed, index, attempt)
            sample = crop_pair(item, self.settings, torch.Generator().manual_seed(sample_seed(*parts)))
            if float(sample["overlap"][0]) >= self.settings.min_overlap:
                sample["src_pos"], sample["tgt_pos"] = sample["src_pos"].float(), sample["tgt_pos"].float()
                return sample
            measured.append(float(sample["overlap"][0]))
        raise ValueError(f"{item.name}: pair {index} overlapped less than min_overlap={self.settings.min_overlap} in "
                         f"{MAX_ATTEMPTS} draws (measured {max(measured):.3f} at best, radius "
                         f"{self.settings.overlap_radius}); the clouds may not overlap: raise overlap_range or "
                         f"overlap_radius, or lower min_overlap")

    def __getitem__(self, item: int | tuple[int, int]) -> FragmentPair:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (0, int(item))
        if not 0 <= index < len(self):
            raise IndexError(f"pair {index} is outside this split's {len(self)} pairs")
        sample = self._draw(epoch, index) if self._fixed is None else \
            {key: value.clone() for key, value in self._fixed[index].items()}  # the stored pair stays intact
        turn, on_source = pair_rotation(self.rotation, self.seed, epoch, index, train=self.train,
                                        rotated_cloud=self.rotated_cloud)
        if turn is not None:
            side = "source" if on_source else "target"
            sample = apply_pair_motion(sample, FRAGMENT_PAIR_FIELDS, **{side: (turn, None)})
            key = "src_motion" if on_source else "tgt_motion"
            sample[key] = _compose(rigid_matrix(turn.double()).unsqueeze(0), sample[key])
        if self.train and self.augment_noise > 0:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index, MAX_ATTEMPTS))
            for key in ("src_pos", "tgt_pos"):
                sample[key] = sample[key] + (torch.rand(sample[key].shape, generator=gen) - 0.5) * self.augment_noise
        scene = index // self.pairs_per_item
        number = index % self.pairs_per_item
        return FragmentPair(**sample, scene=torch.tensor([scene]), src_id=torch.tensor([2 * number]),
                            tgt_id=torch.tensor([2 * number + 1]), index=torch.tensor([index]))


class RegistrationPairsDataModule(PairSplits, pl.LightningDataModule):
    """Registration pairs cut from 3DMatch fragments and ModelNet40 shapes (see the module docstring).

    Args:
        threedmatch_root: folder of the 3DMatch files ``fragments`` and ``demo_pair`` are relative to (``None``: no
            3DMatch items).
        modelnet_root: a ``modelnet40_normal_resampled`` folder (``None``: no ModelNet items).
        fragments: 3DMatch fragment files cropped into training pairs.
        demo_pair: folder with ``src.npy``, ``ref.npy``, ``gt.npy`` (the test item; ``None``: none).
        modelnet_classes: the ModelNet classes used (``None``: every class of ``modelnet40_shape_names.txt``).
        modelnet_radius: radius (metres) ModelNet shapes are scaled to.
        train_pairs_per_item, val_pairs_per_item, test_pairs_per_item: pairs per item of each split.
        overlap_range: range of the designed overlap ``o`` of the crops, ``0 < lo ≤ hi < 1``.
        overlap_radius: distance (metres) within which a moved source point counts as overlapping.
        min_overlap: least measured overlap of a pair (below it the pair is redrawn).
        voxel_size: voxel edge (metres) of the resampling (``None``: off).
        num_points: most points per cloud (``None``: no cap).
        min_points: fewest points a crop may have.
        motion_angle: largest rotation angle (degrees) of each cloud's own random motion.
        motion_translation: standard deviation (metres) of each coordinate of each cloud's random translation.
        train_rotation, test_rotation, rotated_cloud, augment_noise: the rotation protocols and noise of
            :class:`~pointgeo.datamodules.ThreeDMatchDataModule`.
        batch_size, num_workers, seed: loaders and every seeded choice.
    """

    fields = FRAGMENT_PAIR_FIELDS

    def __init__(self, threedmatch_root: str | None = None, modelnet_root: str | None = None, *,
                 fragments: list[str] = list(DEFAULT_FRAGMENTS), demo_pair: str | None = DEFAULT_DEMO_PAIR,
                 modelnet_classes: list[str] | None = None, modelnet_radius: float = 1.0,
                 train_pairs_per_item: int = 8, val_pairs_per_item: int = 2, test_pairs_per_item: int = 4,
                 overlap_range: tuple[float, float] = (0.3, 0.8), overlap_radius: float = 0.0375,
                 min_overlap: float = 0.1, voxel_size: float | None = 0.025, num_points: int | None = 4096,
                 min_points: int = 64, motion_angle: float = 30.0, motion_translation: float = 0.5,
                 train_rotation: Literal["none", "haar"] = "haar", test_rotation: TestRotation = "none",
                 rotated_cloud: RotatedCloud = "source", augment_noise: float = 0.005, batch_size: int = 1,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if threedmatch_root is None and modelnet_root is None:
            raise ValueError("RegistrationPairsDataModule needs threedmatch_root or modelnet_root (or both)")
        choices = (("train_rotation", train_rotation, ("none", "haar")),
                   ("test_rotation", test_rotation, ("none", "haar", "roitr_euler")),
                   ("rotated_cloud", rotated_cloud, ("source", "target")))
        for name, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")
        lo, hi = (float(v) for v in overlap_range)
        if not 0 < lo <= hi < 1:
            raise ValueError(f"overlap_range must be (lo, hi) with 0 < lo <= hi < 1; got {tuple(overlap_range)}")
        positive = (("overlap_radius", overlap_radius), ("modelnet_radius", modelnet_radius),
                    ("voxel_size", voxel_size if voxel_size is not None else 1.0))
        for name, value in positive:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        if not 0 < min_overlap <= 1:
            raise ValueError(f"min_overlap must be in (0, 1]; got {min_overlap!r}")
        counts = (("min_points", min_points, 3), ("num_points", num_points if num_points is not None else 3, 3),
                  ("train_pairs_per_item", train_pairs_per_item, 1), ("val_pairs_per_item", val_pairs_per_item, 1),
                  ("test_pairs_per_item", test_pairs_per_item, 1))
        for name, value, least in counts:
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
        if num_points is not None and num_points < min_points:
            raise ValueError(f"num_points={num_points} is below min_points={min_points}")
        if not 0 <= motion_angle <= 180 or motion_translation < 0:
            raise ValueError(f"motion_angle must be in [0, 180] degrees and motion_translation >= 0; got "
                             f"{motion_angle!r}, {motion_translation!r}")
        self.save_hyperparameters()
        self.threedmatch_root = Path(threedmatch_root).expanduser() if threedmatch_root is not None else None
        self.modelnet_root = Path(modelnet_root).expanduser() if modelnet_root is not None else None
        self.fragments, self.demo_pair = list(fragments), demo_pair
        self.modelnet_classes, self.modelnet_radius = modelnet_classes, modelnet_radius
        self.pairs_per_item = {"train": train_pairs_per_item, "val": val_pairs_per_item, "test": test_pairs_per_item}
        self.settings = PairSettings((lo, hi), overlap_radius, min_overlap, voxel_size, num_points, min_points,
                                     motion_angle, motion_translation)
        self.train_rotation, self.test_rotation, self.rotated_cloud = train_rotation, test_rotation, rotated_cloud
        self.augment_noise, self.batch_size, self.num_workers, self.seed = augment_noise, batch_size, num_workers, seed
        self._items: dict[str, list[PairItem]] | None = None
        self._datasets: dict[str, CroppedPairDataset] = {}
        self.scenes: dict[str, list[str]] = {}
        """Per split, the item names its ``scene`` indices refer to."""

    # --- items -----------------------------------------------------------------------------------------------
    def _threedmatch_items(self) -> tuple[list[PairItem], list[PairItem]]:
        root = self.threedmatch_root
        train = []
        for name in self.fragments:
            points = read_fragment(root / name)
            train.append(PairItem(f"3dmatch:{name}", points, points, np.eye(4)))
        test = []
        if self.demo_pair is not None:
            folder = root / self.demo_pair
            source, target = read_fragment(folder / "src.npy"), read_fragment(folder / "ref.npy")
            test.append(PairItem(f"3dmatch:{self.demo_pair}", source, target, read_pose(folder / "gt.npy")))
        return train, test

    def _modelnet_items(self) -> tuple[list[PairItem], list[PairItem]]:
        root = self.modelnet_root
        classes = read_list(root / "modelnet40_shape_names.txt")
        wanted = classes if self.modelnet_classes is None else list(self.modelnet_classes)
        unknown = sorted(set(wanted) - set(classes))
        if unknown:
            raise ValueError(f"modelnet_classes names {unknown}, which are not in {root}/modelnet40_shape_names.txt")
        official_test = set(read_list(root / "modelnet40_test.txt"))
        train, test = [], []
        for cls in wanted:
            for path in sorted((root / cls).glob(f"{cls}_*.txt")):
                pos = read_txt_cloud(path)[:, :3].astype(np.float64)
                pos = normalize_unit_sphere(pos[None], str(path))[0] * self.modelnet_radius
                (test if path.stem in official_test else train).append(PairItem(f"modelnet40:{path.stem}", pos, pos,
                                                                                np.eye(4)))
        if not train and not test:
            raise DatasetFileError(f"{root} holds no shapes <class>/<class>_<NNNN>.txt of the classes {wanted}")
        return train, test

    def _check_item(self, item: PairItem) -> None:
        s = self.settings
        smallest = 1.0 / (2.0 - s.overlap_range[0])
        for side, cloud in (("source", item.source), ("target", item.target)):
            points = torch.from_numpy(cloud)
            size = len(voxel_downsample(points, s.voxel_size)) if s.voxel_size is not None else len(points)
            if size * smallest < s.min_points:
                raise ValueError(f"{item.name}: the {side} cloud has {size} points after voxel_size={s.voxel_size} "
                                 f"downsampling, so a crop keeping {smallest:.0%} of it has fewer than min_points="
                                 f"{s.min_points}")
        if item.source is not item.target:
            whole = source_overlap(torch.from_numpy(item.source), torch.from_numpy(item.target),
                                   torch.from_numpy(item.transform), s.overlap_radius)
            if whole < s.min_overlap:
                raise ValueError(f"{item.name}: only {whole:.1%} of the source lies within {s.overlap_radius} of the "
                                 f"target under its pose (min_overlap={s.min_overlap}); the pair does not overlap "
                                 f"(or its pose is wrong)")

    def items(self) -> dict[str, list[PairItem]]:
        """The items of ``train`` (also cut into the validation pairs) and ``test``, read and checked once."""
        if self._items is None:
            train, test = [], []
            for present, reader in ((self.threedmatch_root, self._threedmatch_items),
                                    (self.modelnet_root, self._modelnet_items)):
                if present is not None:
                    more_train, more_test = reader()
                    train += more_train
                    test += more_test
            for item in train + test:
                self._check_item(item)
            self._items = {"train": train, "test": test}
        return self._items

    # --- Lightning -----------------------------------------------------------------------------------------------
    def dataset(self, split: str) -> CroppedPairDataset:
        """The pairs of ``train``, ``val`` or ``test`` with their rotation protocol."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
        if split not in self._datasets:
            items = self.items()["test" if split == "test" else "train"]
            if not items:
                raise ValueError(f"the {split} split has no items: "
                                 + ("pass demo_pair or a modelnet_root with official test shapes" if split == "test"
                                    else "pass fragments or a modelnet_root with training shapes"))
            train = split == "train"
            self.scenes[split] = [item.name for item in items]
            self._datasets[split] = CroppedPairDataset(
                items, self.pairs_per_item[split], self.settings,
                rotation=self.train_rotation if train else self.test_rotation, rotated_cloud=self.rotated_cloud,
                seed=sample_seed(self.seed, {"train": 0, "val": 1, "test": 2}[split]), train=train,
                augment_noise=self.augment_noise if train else 0.0)
        return self._datasets[split]



def read_pose(path: Path) -> np.ndarray:
    """A ``(4, 4)`` rigid pose from an ``.npy`` file (no pickles), rotation orthonormal within ``POSE_TOLERANCE``.

    Raises:
        DatasetFileError: unreadable, not ``(4, 4)`` finite numbers, or not a rigid transform.
    """
    try:
        pose = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetFileError(f"{path} is not a readable .npy pose: {exc}") from exc
    if pose.shape != (4, 4) or pose.dtype.kind not in "iuf" or not np.isfinite(pose).all():
        raise DatasetFileError(f"{path} must hold a finite (4, 4) pose; got {pose.dtype} {pose.shape}")
    pose = pose.astype(np.float64)
    if float(rotation_defect(torch.from_numpy(pose[:3, :3]))) > POSE_TOLERANCE or \
            np.abs(pose[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise DatasetFileError(f"{path} is not a rigid transform (its rotation block is not a rotation, or its last "
                               f"row is not 0 0 0 1)")
    return pose
