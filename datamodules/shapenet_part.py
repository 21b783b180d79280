"""ShapeNet part segmentation (Yi et al., SIGGRAPH Asia 2016): 16 categories, 50 parts.

| ``format`` | release | normals |
|---|---|---|
| ``normal_resampled`` | ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` (PointNet++; txt rows ``x y z nx ny nz part`` + ``train_test_split/shuffled_{train,val,test}_file_list.json``) | yes |
| ``hdf5`` | ``shapenet_part_seg_hdf5_data`` (PointNet; ``data``, ``label`` (category), ``pid`` (part) per shard) | no |

Both releases are y-up. Part ids are global (0–49); each category owns a contiguous range (:data:`CATEGORY_PARTS`).
Batches add ``seg (B, N)`` and ``category (B,)``; ``label`` is the category too. The official validation split is
used for validation. Shapes have about 2500 points each; ``num_points`` are drawn per shape, without replacement
(with replacement for smaller shapes), seeded, when the split is preprocessed. The Stanford host publishes no
checksums and is often down: without the files the error names the URL and the folder to extract them into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from pointgeo.datamodules.base import CloudArrays, PartLabels, PointCloudDataModule, sample_seed
from pointgeo.datamodules.release import ensure_release, load_processed, processed_path, read_list, save_atomic
from pointgeo.datamodules.readers import DatasetFileError, read_h5_arrays, read_split_json, read_txt_cloud
from pointgeo.download import cache_dir
from pointgeo.geometry import RotationMode

CATEGORIES = ["Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife", "Lamp", "Laptop", "Motorbike",
              "Mug", "Pistol", "Rocket", "Skateboard", "Table"]
SYNSETS = ["02691156", "02773838", "02954340", "02958343", "03001627", "03261776", "03467517", "03624134", "03636649",
           "03642806", "03790512", "03797390", "03948459", "04099429", "04225987", "04379243"]
PART_COUNTS = [4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3]
CATEGORY_PARTS = [list(range(sum(PART_COUNTS[:c]), sum(PART_COUNTS[: c + 1]))) for c in range(len(CATEGORIES))]
"""Global part ids of every category, in category order (Airplane 0–3, ..., Table 47–49)."""
NUM_PARTS = sum(PART_COUNTS)

STANFORD = "https://shapenet.cs.stanford.edu/media"
RELEASES = {
    "normal_resampled": {"url": f"{STANFORD}/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip",
                         "folder": "shapenetcore_partanno_segmentation_benchmark_v0_normal"},
    "hdf5": {"url": f"{STANFORD}/shapenet_part_seg_hdf5_data.zip", "folder": "hdf5_data"},
}
PREPROCESS_VERSION = 1
ShapeNetFormat = Literal["normal_resampled", "hdf5"]


def check_parts(seg: np.ndarray, category: np.ndarray, where: str) -> None:
    """Raise if a category is unknown or any point's part id lies outside its shape's category parts."""
    if len(category) and (category.min() < 0 or category.max() >= len(CATEGORIES)):
        raise DatasetFileError(f"{where}: category labels outside 0..{len(CATEGORIES) - 1}")
    lo = np.asarray([parts[0] for parts in CATEGORY_PARTS])[category][:, None]
    hi = np.asarray([parts[-1] for parts in CATEGORY_PARTS])[category][:, None]
    bad = np.flatnonzero(((seg < lo) | (seg > hi)).any(1))
    if len(bad):
        raise DatasetFileError(f"{where}: part labels outside the category's parts (shape {int(bad[0])}, category "
                               f"{CATEGORIES[int(category[bad[0]])]} owns parts {CATEGORY_PARTS[int(category[bad[0]])]})")


class ShapeNetPartDataModule(PartLabels, PointCloudDataModule):
    """ShapeNet part segmentation.

    Args:
        format: ``normal_resampled`` or ``hdf5`` (see the module docstring).
        root: data folder; default ``$POINTGEO_HOME/datasets/shapenet_part``.
        download: fetch the release when it is not in ``root``.
        Other arguments: see :class:`~pointgeo.datamodules.base.PointCloudDataModule` (``num_points`` default 2048).
    """

    name = "shapenet_part"
    up_axis = "y"
    official_val = True

    def __init__(
        self,
        format: ShapeNetFormat = "normal_resampled",
        root: str | None = None,
        download: bool = True,
        num_points: int = 2048,
        use_normals: bool = False,
        batch_size: int = 16,
        num_workers: int = 0,
        train_rotation: RotationMode = "z",
        test_rotation: RotationMode = "so3",
        seed: int = 0,
        scale_augment: tuple[float, float] | None = None,
        jitter: float = 0.0,
    ) -> None:
        if format not in RELEASES:
            raise ValueError(f"format must be one of {list(RELEASES)}; got {format!r}")
        root = root if root is not None else str(cache_dir() / "datasets" / "shapenet_part")
        super().__init__(root=root, num_points=num_points, use_normals=use_normals, batch_size=batch_size,
                         num_workers=num_workers, train_rotation=train_rotation, test_rotation=test_rotation,
                         val_fraction=0.0, seed=seed, scale_augment=scale_augment, jitter=jitter)
        self.save_hyperparameters()
        self.format = format
        self.download = download
        self.release = RELEASES[format]

    @property
    def class_names(self) -> list[str]:
        return CATEGORIES

    @property
    def category_parts(self) -> list[list[int]]:
        """Global part ids of every category."""
        return CATEGORY_PARTS

    @property
    def raw_dir(self) -> Path:
        return self.root / self.release["folder"]

    def _cache_path(self, split: str) -> Path:
        return processed_path(self.root, f"{self.name}_{self.format}", split,
                              [PREPROCESS_VERSION, self.format, split, self.num_points, self.seed])

    def prepare_data(self) -> None:
        """Download and extract the release if needed, then preprocess the three splits (rank 0)."""
        ensure_release(self.release["url"], self.raw_dir, self.root, allow_download=self.download,
                       label=f"ShapeNet part ({self.format})")
        for split in ("train", "val", "test"):
            if not self._cache_path(split).is_file():
                reader = self._txt_split if self.format == "normal_resampled" else self._h5_split
                arrays = reader(split)
                check_parts(arrays["seg"], arrays["category"], f"{self.raw_dir} ({split})")
                save_atomic(self._cache_path(split), arrays)

    def load_split(self, split: str) -> CloudArrays:
        return load_processed(self._cache_path(split), self.prepare_data,
                              lambda d: CloudArrays(d["pos"], d["category"], d.get("normal"), d["seg"], d["category"]))

    def _choose(self, n: int, shape: int) -> np.ndarray:
        rng = np.random.default_rng(sample_seed(self.seed, shape))
        return rng.choice(n, self.num_points, replace=n < self.num_points)

    def _txt_split(self, split: str) -> dict[str, np.ndarray]:
        lines = [line.split() for line in read_list(self.raw_dir / "synsetoffset2category.txt")]
        synsets = {words[1]: i for i, words in enumerate(lines) if len(words) == 2}
        if sorted(synsets.values()) != list(range(len(CATEGORIES))) or len(synsets) != len(CATEGORIES):
            raise DatasetFileError(f"{self.raw_dir / 'synsetoffset2category.txt'} must list the 16 categories")
        list_file = self.raw_dir / "train_test_split" / f"shuffled_{split}_file_list.json"
        pos, normal, seg, category = [], [], [], []
        for i, (synset, shape_id) in enumerate(tqdm(read_split_json(list_file),
                                                    desc=f"shapenet_part {split}: reading txt")):
            entry = f"{synset}/{shape_id}"
            if synset not in synsets:
                raise DatasetFileError(f"{list_file} names {entry} of an unknown category {synset}")
            path = self.raw_dir / synset / f"{shape_id}.txt"
            if not path.is_file():
                raise DatasetFileError(f"{list_file} names {entry}, but {path} is missing")
            rows = read_txt_cloud(path, columns=7)
            if (rows[:, 6] != np.round(rows[:, 6])).any():
                raise DatasetFileError(f"{path}: the part labels (7th column) must be integers")
            check_parts(rows[None, :, 6].astype(np.int64), np.asarray([synsets[synset]]), str(path))
            keep = self._choose(len(rows), i)
            pos.append(rows[keep, :3])
            normal.append(rows[keep, 3:6])
            seg.append(rows[keep, 6].astype(np.int64))
            category.append(synsets[synset])
        return {"pos": np.stack(pos), "normal": np.stack(normal), "seg": np.stack(seg),
                "category": np.asarray(category, dtype=np.int64)}

    def _h5_split(self, split: str) -> dict[str, np.ndarray]:
        shards = [self.raw_dir / Path(line).name for line in read_list(self.raw_dir / f"{split}_hdf5_file_list.txt")]
        parts = [read_h5_arrays(s, extra=("pid",)) for s in tqdm(shards, desc=f"shapenet_part {split}: reading h5")]
        for shard, part in zip(shards, parts):
            check_parts(part["pid"], part["label"], str(shard))
        pos = np.concatenate([p["pos"] for p in parts])
        seg = np.concatenate([p["pid"] for p in parts]).astype(np.int64)
        if pos.shape[1] < self.num_points:
            raise DatasetFileError(f"the shards have {pos.shape[1]} points per shape; num_points={self.num_points}")
        return {"pos": pos[:, : self.num_points], "seg": seg[:, : self.num_points],
                "category": np.concatenate([p["label"] for p in parts])}
