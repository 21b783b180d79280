"""ScanObjectNN (Uy et al., ICCV 2019): 15 classes of real scanned objects, the h5 release's main split.

| ``variant`` | folder | files |
|---|---|---|
| ``OBJ_ONLY`` | ``main_split_nobg`` | ``{training,test}_objectdataset.h5`` |
| ``OBJ_BG`` | ``main_split`` | ``{training,test}_objectdataset.h5`` |
| ``PB_T50_RS`` | ``main_split`` | ``{training,test}_objectdataset_augmentedrot_scale75.h5`` (the hardest variant) |

Each file holds ``data (S, 2048, 3)``, ``label (S,)`` and ``mask (S, 2048)`` (object vs background points).
The data sit behind the authors' terms-of-use form, so nothing is downloaded: without the files the error names the
form and the exact paths to place them at. The files carry no normals; with ``use_normals`` they are estimated with
:func:`pointgeo.geometry.estimate_normals`, whose sign rule is rotation invariant (the released RISurConv pipeline's
unsigned LRA is not). ``num_points`` are chosen by farthest point sampling from the invariant start point.
The scans are y-up as released; the ``PB_T50_RS`` perturbations already rotate about that axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pointgeo.datamodules.base import CloudArrays, PointCloudDataModule
from pointgeo.datamodules.readers import DatasetFileError, read_h5_arrays
from pointgeo.datamodules.release import DatasetNotFoundError, load_processed, processed_path, save_atomic
from pointgeo.download import cache_dir
from pointgeo.geometry import RotationMode, estimate_normals, farthest_point_sampling, index_points

CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed", "pillow",
           "sink", "sofa", "toilet"]
VARIANTS = {
    "OBJ_ONLY": ("main_split_nobg", "objectdataset.h5"),
    "OBJ_BG": ("main_split", "objectdataset.h5"),
    "PB_T50_RS": ("main_split", "objectdataset_augmentedrot_scale75.h5"),
}
FORM = "https://hkust-vgd.github.io/scanobjectnn/"
PREPROCESS_VERSION = 2
"""Bumped when the cached arrays change: 2 = FPS deciding exact ties invariantly, normals of degenerate
neighbourhoods."""
Variant = Literal["OBJ_ONLY", "OBJ_BG", "PB_T50_RS"]


class ScanObjectNNDataModule(PointCloudDataModule):
    """ScanObjectNN classification.

    Args:
        variant: ``OBJ_ONLY``, ``OBJ_BG`` or ``PB_T50_RS``.
        root: folder holding ``h5_files/<split folder>/`` as extracted from the authors' ``h5_files.zip``;
            default ``$POINTGEO_HOME/datasets/scanobjectnn``.
        return_mask: add the per-point background mask to the batches as ``mask (B, N)`` (True on the object).
        normal_k: neighbours for the estimated normals (``use_normals``).
        Other arguments: see :class:`~pointgeo.datamodules.base.PointCloudDataModule`.
    """

    name = "scanobjectnn"
    up_axis = "y"

    def __init__(
        self,
        variant: Variant = "PB_T50_RS",
        root: str | None = None,
        return_mask: bool = False,
        normal_k: int = 32,
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
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}; got {variant!r}")
        root = root if root is not None else str(cache_dir() / "datasets" / "scanobjectnn")
        super().__init__(root=root, num_points=num_points, use_normals=use_normals, batch_size=batch_size,
                         num_workers=num_workers, train_rotation=train_rotation, test_rotation=test_rotation,
                         val_fraction=val_fraction, seed=seed, scale_augment=scale_augment, jitter=jitter)
        self.save_hyperparameters()
        self.variant, self.return_mask, self.normal_k = variant, return_mask, normal_k

    @property
    def class_names(self) -> list[str]:
        return CLASSES

    def h5_path(self, split: str) -> Path:
        """Where the h5 file of ``split`` (``train`` or ``test``) must be."""
        folder, suffix = VARIANTS[self.variant]
        return self.root / "h5_files" / folder / f"{'training' if split == 'train' else 'test'}_{suffix}"

    def _cache_path(self, split: str) -> Path:
        return processed_path(self.root, f"{self.name}_{self.variant}", split,
                              [PREPROCESS_VERSION, self.variant, split, self.num_points, self.use_normals,
                               self.return_mask, self.normal_k])

    def prepare_data(self) -> None:
        """Check the files are in place (they cannot be downloaded), then preprocess both splits (rank 0)."""
        missing = [self.h5_path(s) for s in ("train", "test") if not self.h5_path(s).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"ScanObjectNN {self.variant} is not in {self.root}: missing {', '.join(map(str, missing))}. The data "
                f"is distributed after accepting the authors' terms of use at {FORM}; extract their h5_files.zip "
                f"into {self.root} (so that {self.root / 'h5_files'} exists)."
            )
        for split in ("train", "test"):
            if not self._cache_path(split).is_file():
                save_atomic(self._cache_path(split), self._preprocess(split))

    def _preprocess(self, split: str) -> dict[str, np.ndarray]:
        path = self.h5_path(split)
        arrays = read_h5_arrays(path, extra=("mask",) if self.return_mask else ())
        if arrays["pos"].shape[1] < self.num_points:
            raise DatasetFileError(f"{path} has {arrays['pos'].shape[1]} points per object; num_points="
                                   f"{self.num_points} requested")
        if arrays["label"].min() < 0 or arrays["label"].max() >= len(CLASSES):
            raise DatasetFileError(f"{path} has labels outside 0..{len(CLASSES) - 1}")
        out = {"label": arrays["label"]}
        pos_all, normal_all, mask_all = [], [], []
        for start in tqdm(range(0, len(arrays["pos"]), 64), desc=f"scanobjectnn {split}: sampling"):
            pos = torch.from_numpy(arrays["pos"][start : start + 64])
            idx = farthest_point_sampling(pos, self.num_points)
            chosen = index_points(pos, idx)
            pos_all.append(chosen.numpy())
            if self.use_normals:
                normal_all.append(estimate_normals(chosen.double(), self.normal_k).float().numpy())
            if self.return_mask:
                mask = torch.from_numpy(np.asarray(arrays["mask"][start : start + 64]) != -1)  # background: -1
                mask_all.append(torch.gather(mask, 1, idx).numpy())
        out["pos"] = np.concatenate(pos_all)
        if self.use_normals:
            out["normal"] = np.concatenate(normal_all)
        if self.return_mask:
            out["mask"] = np.concatenate(mask_all)
        return out

    def load_split(self, split: str) -> CloudArrays:
        return load_processed(self._cache_path(split), self.prepare_data,
                              lambda d: CloudArrays(d["pos"], d["label"], d.get("normal"), mask=d.get("mask")))
