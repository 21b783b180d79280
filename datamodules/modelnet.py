"""ModelNet40 and ModelNet10 (Wu et al., "3D ShapeNets", CVPR 2015) from any of the three official formats.

| ``format`` | release | up axis | normals |
|---|---|---|---|
| ``normal_resampled`` | ``modelnet40_normal_resampled`` (PointNet++; 10 000 points per shape, txt) | y | yes |
| ``hdf5`` | ``modelnet40_ply_hdf5_2048`` (PointNet; 2048 points per shape) | y | if the shards have them |
| ``mesh`` | the original ``ModelNet40.zip`` / ``ModelNet10.zip`` ``.off`` meshes, sampled here | z | face normals |

ModelNet10 is a 10-class subset with the same shape ids: from ``normal_resampled`` it uses the official
``modelnet10_*`` lists, from ``hdf5`` the ModelNet40 shards restricted to its classes, from ``mesh`` its own zip.

Up axes were checked on the real samples: in the txt release 67-75 % of a table's normals point along ±y and a
chair is tallest along y; the original bathtub meshes are lowest along z.

Points per shape: the txt clouds (10 000 points) are reduced to ``num_points`` by farthest point sampling from
:func:`pointgeo.geometry.farthest_point_sampling`, started at the point farthest from the centroid, as PointNet++'s
offline ``uniform`` option does (``sampling="first"`` keeps the first rows instead); the HDF5 clouds keep their first
``num_points`` of 2048 (the PointNet/DGCNN loaders' choice); meshes get ``num_points`` area-weighted surface samples
with their face normals, seeded per file.

Raw files are downloaded into ``root`` (default ``$POINTGEO_HOME/datasets/<name>``) and extracted atomically;
preprocessed arrays go to ``root/processed/`` under a name keyed by a hash of every preprocessing setting (format,
variant, num_points, sampling, seed), written atomically, with a progress bar. Preprocessing the full txt release
takes roughly 10-15 minutes on 2 CPU cores, once (measured: ~15 ms to read a shape, ~3 s of FPS per 64 shapes).

The hosts publish no checksums (``sha256`` is ``None`` in :data:`RELEASES`: the archives are **not** hash-verified;
public loaders only list MD5s of the individual HDF5 shards, which we could not confirm), and the Stanford host is
often down: an unreachable host gives one message with the URL and the folder to put the data in.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pointgeo.datamodules.base import CloudArrays, PointCloudDataModule, sample_seed
from pointgeo.datamodules.readers import DatasetFileError, read_h5_arrays, read_off, read_txt_cloud, sample_mesh
from pointgeo.datamodules.release import ensure_release, load_processed, processed_path, read_list, save_atomic
from pointgeo.download import cache_dir
from pointgeo.geometry import RotationMode, farthest_point_sampling

ModelNetFormat = Literal["normal_resampled", "hdf5", "mesh"]
Sampling = Literal["fps", "first"]

STANFORD = "https://shapenet.cs.stanford.edu/media"
RELEASES: dict[tuple[int, str], dict[str, str | None]] = {
    (40, "normal_resampled"): {"url": f"{STANFORD}/modelnet40_normal_resampled.zip",
                               "folder": "modelnet40_normal_resampled", "sha256": None},
    (10, "normal_resampled"): {"url": f"{STANFORD}/modelnet40_normal_resampled.zip",
                               "folder": "modelnet40_normal_resampled", "sha256": None},
    (40, "hdf5"): {"url": f"{STANFORD}/modelnet40_ply_hdf5_2048.zip", "folder": "modelnet40_ply_hdf5_2048",
                   "sha256": None},
    (10, "hdf5"): {"url": f"{STANFORD}/modelnet40_ply_hdf5_2048.zip", "folder": "modelnet40_ply_hdf5_2048",
                   "sha256": None},
    (40, "mesh"): {"url": "http://modelnet.cs.princeton.edu/ModelNet40.zip", "folder": "ModelNet40", "sha256": None},
    (10, "mesh"): {"url": "http://vision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
                   "folder": "ModelNet10", "sha256": None},
}
"""Official archive URL, the folder it extracts to, and its sha256 (``None``: no published checksum, not verified)."""
UP_AXIS = {"normal_resampled": "y", "hdf5": "y", "mesh": "z"}
PREPROCESS_VERSION = 2
"""Bumped when the cached arrays change: 2 = FPS deciding exact ties invariantly."""
MODELNET40_CLASSES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
]
MODELNET10_CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


class ModelNetDataModule(PointCloudDataModule):
    """ModelNet classification (``variant`` 40 or 10): use :class:`ModelNet40DataModule` or
    :class:`ModelNet10DataModule`.

    Args:
        format: ``normal_resampled``, ``hdf5`` or ``mesh`` (see the module docstring).
        root: data folder; default ``$POINTGEO_HOME/datasets/modelnet<variant>``.
        download: fetch the release when it is not in ``root``.
        sampling: how ``num_points`` are chosen from the txt clouds: farthest point sampling (``fps``, as
            PointNet++'s ``uniform`` option) or the first rows (``first``). Meshes are always sampled by area.
        Other arguments: see :class:`~pointgeo.datamodules.base.PointCloudDataModule`.
    """

    variant = 40

    def __init__(
        self,
        format: ModelNetFormat = "normal_resampled",
        root: str | None = None,
        download: bool = True,
        sampling: Sampling = "fps",
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
        if format not in UP_AXIS:
            raise ValueError(f"format must be one of {list(UP_AXIS)}; got {format!r}")
        if sampling not in ("fps", "first"):
            raise ValueError(f"sampling must be 'fps' or 'first'; got {sampling!r}")
        root = root if root is not None else str(cache_dir() / "datasets" / f"modelnet{self.variant}")
        super().__init__(root=root, num_points=num_points, use_normals=use_normals, batch_size=batch_size,
                         num_workers=num_workers, train_rotation=train_rotation, test_rotation=test_rotation,
                         val_fraction=val_fraction, seed=seed, scale_augment=scale_augment, jitter=jitter)
        self.save_hyperparameters()
        self.format = format
        self.download = download
        self.sampling = sampling
        self.name = f"modelnet{self.variant}"
        self.up_axis = UP_AXIS[format]
        self.release = RELEASES[(self.variant, format)]

    # --- locations ------------------------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """The extracted release folder."""
        return self.root / self.release["folder"]

    def _cache_path(self, split: str) -> Path:
        return processed_path(self.root, f"{self.name}_{self.format}", split,
                              [PREPROCESS_VERSION, self.variant, self.format, split, self.num_points, self.sampling,
                               self.seed])

    # --- download and preprocessing ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download and extract the release if needed, then preprocess both splits into the cache (rank 0)."""
        ensure_release(self.release["url"], self.raw_dir, self.root, allow_download=self.download,
                       label=f"{self.name} ({self.format})", sha256=self.release["sha256"])
        for split in ("train", "test"):
            if not self._cache_path(split).is_file():
                save_atomic(self._cache_path(split), self._preprocess(split))

    def load_split(self, split: str) -> CloudArrays:
        return load_processed(self._cache_path(split), self.prepare_data,
                              lambda d: CloudArrays(d["pos"], d["label"], d.get("normal")))

    @property
    def class_names(self) -> list[str]:
        """The official class names (alphabetical); the release's own list file is checked against them."""
        return MODELNET40_CLASSES if self.variant == 40 else MODELNET10_CLASSES

    def _check_names(self, list_file: Path, expected: list[str]) -> None:
        names = read_list(list_file)
        if names != expected:
            raise DatasetFileError(f"{list_file} does not list the {len(expected)} official class names in order")

    def _preprocess(self, split: str) -> dict[str, np.ndarray]:
        reader = {"normal_resampled": self._txt_split, "hdf5": self._h5_split, "mesh": self._mesh_split}[self.format]
        return reader(split)

    def _txt_split(self, split: str) -> dict[str, np.ndarray]:
        self._check_names(self.raw_dir / f"modelnet{self.variant}_shape_names.txt", self.class_names)
        classes = {name: i for i, name in enumerate(self.class_names)}
        ids = read_list(self.raw_dir / f"modelnet{self.variant}_{split}.txt")
        pos, normal, label = [], [], []
        for shape_id in tqdm(ids, desc=f"{self.name} {split}: reading txt"):
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in classes:
                raise DatasetFileError(
                    f"{shape_id} in modelnet{self.variant}_{split}.txt names an unknown class {cls!r}")
            path = self.raw_dir / cls / f"{shape_id}.txt"
            if not path.is_file():
                raise DatasetFileError(f"modelnet{self.variant}_{split}.txt names {shape_id}, but {path} is missing")
            rows = read_txt_cloud(path)
            if len(rows) < self.num_points:
                raise DatasetFileError(f"{path} has {len(rows)} points; num_points={self.num_points} are needed")
            pos.append(rows[:, :3])
            normal.append(rows[:, 3:])
            label.append(classes[cls])
        return self._subsample(pos, normal, np.asarray(label, dtype=np.int64))

    def _subsample(self, pos: list[np.ndarray], normal: list[np.ndarray], label: np.ndarray) -> dict[str, np.ndarray]:
        if self.sampling == "first":
            return {"pos": np.stack([p[: self.num_points] for p in pos]),
                    "normal": np.stack([n[: self.num_points] for n in normal]), "label": label}
        out_pos, out_normal = [], []
        for start in tqdm(range(0, len(pos), 64), desc=f"{self.name}: farthest point sampling"):
            p = torch.from_numpy(np.stack(pos[start : start + 64]))
            idx = farthest_point_sampling(p, self.num_points).numpy()
            out_pos.append(np.take_along_axis(p.numpy(), idx[..., None], 1))
            out_normal.append(np.take_along_axis(np.stack(normal[start : start + 64]), idx[..., None], 1))
        return {"pos": np.concatenate(out_pos), "normal": np.concatenate(out_normal), "label": label}

    def _h5_split(self, split: str) -> dict[str, np.ndarray]:
        list_file = self.raw_dir / f"{split}_files.txt"
        shards = [self.raw_dir / Path(line).name for line in read_list(list_file)]
        if not shards:
            raise DatasetFileError(f"{list_file} lists no HDF5 shards")
        for shard in shards:
            if not shard.is_file():
                raise DatasetFileError(f"{list_file} names {shard.name}, but {shard} is missing")
        parts = [read_h5_arrays(s) for s in tqdm(shards, desc=f"{self.name} {split}: reading h5")]
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if all(k in p for p in parts)}
        self._check_names(self.raw_dir / "shape_names.txt", MODELNET40_CLASSES)
        names40 = MODELNET40_CLASSES
        if arrays["label"].max() >= len(names40):
            raise DatasetFileError(f"labels in {self.raw_dir} exceed the {len(names40)} classes")
        if self.variant == 10:
            remap = np.full(len(names40), -1)
            for i, name in enumerate(MODELNET10_CLASSES):
                remap[names40.index(name)] = i
            keep = remap[arrays["label"]] >= 0
            arrays = {k: v[keep] for k, v in arrays.items()}
            arrays["label"] = remap[arrays["label"]]
        if arrays["pos"].shape[1] < self.num_points:
            raise DatasetFileError(f"the shards have {arrays['pos'].shape[1]} points per shape; "
                                   f"num_points={self.num_points} requested")
        return {k: (v[:, : self.num_points] if v.ndim == 3 else v) for k, v in arrays.items()}

    def _mesh_split(self, split: str) -> dict[str, np.ndarray]:
        classes = self.class_names
        files = [(c, p) for c, name in enumerate(classes) for p in sorted((self.raw_dir / name / split).glob("*.off"))]
        if not files:
            raise DatasetFileError(f"no .off meshes in {self.raw_dir}/<class>/{split}/")
        pos, normal = [], []
        for _, path in tqdm(files, desc=f"{self.name} {split}: sampling meshes"):
            vertices, triangles = read_off(path)
            seed = sample_seed(self.seed, zlib.crc32(path.name.encode())) % 2**32  # per mesh, whatever else is there
            p, n = sample_mesh(vertices, triangles, self.num_points, seed=seed, source=path)
            pos.append(p)
            normal.append(n)
        return {"pos": np.stack(pos), "normal": np.stack(normal),
                "label": np.asarray([c for c, _ in files], dtype=np.int64)}


class ModelNet40DataModule(ModelNetDataModule):
    """ModelNet40: 40 classes, 9843 train / 2468 test shapes."""

    variant = 40


class ModelNet10DataModule(ModelNetDataModule):
    """ModelNet10: 10 classes, 3991 train / 908 test shapes."""

    variant = 10
