"""DFAUST human body-part segmentation in APEN's npz layout (Atzmon et al., ICLR 2024; spec §4.4).

APEN's released loader reads one npz per split, ``arr_0 (shapes, points, 11)``: xyz, normals, the part label (24
SMPL-style parts), the vote (offset to the part centre) and a class id (:func:`pointgeo.datamodules.readers.
read_apen_npz`). The file names replace ``_x_`` in the configured name by ``train`` / ``test``
(``train_random_pose.npz``, ``test_class.npz``, ...); here ``pattern`` with ``{split}``. DFAUST itself needs a
licence from MPI and APEN ships no preparation script, so nothing is downloaded: ``root`` names the folder that holds
the two files. Every shape is one category (``human``, parts 0–23); ``label`` is the file's class column. The vote
column is checked by the reader but not batched: the APEN task computes each part's centre from the labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointgeo.datamodules.base import CloudArrays, PartLabels, PointCloudDataModule
from pointgeo.datamodules.readers import DatasetFileError, read_apen_npz
from pointgeo.datamodules.release import DatasetNotFoundError
from pointgeo.geometry import RotationMode

NUM_PARTS = 24
"""SMPL-style body parts of APEN's DFAUST labels."""


class DFAUSTDataModule(PartLabels, PointCloudDataModule):
    """DFAUST part segmentation from APEN's npz files (module docstring).

    Args:
        root: folder holding ``pattern.format(split="train")`` and ``pattern.format(split="test")``.
        pattern: file name with ``{split}`` (released: ``{split}_random_pose.npz``).
        num_parts: part labels per shape (released: 24).
        Other arguments: :class:`~pointgeo.datamodules.base.PointCloudDataModule`.
    """

    name = "dfaust"
    up_axis = "y"

    def __init__(
        self,
        root: str | None = None,
        pattern: str = "{split}_random_pose.npz",
        num_parts: int = NUM_PARTS,
        num_points: int = 5000,
        use_normals: bool = True,
        batch_size: int = 8,
        num_workers: int = 0,
        train_rotation: RotationMode = "none",
        test_rotation: RotationMode = "none",
        val_fraction: float = 0.1,
        seed: int = 0,
        scale_augment: tuple[float, float] | None = None,
        jitter: float = 0.0,
    ) -> None:
        super().__init__(
            root=root, num_points=num_points, use_normals=use_normals, batch_size=batch_size,
            num_workers=num_workers, train_rotation=train_rotation, test_rotation=test_rotation,
            val_fraction=val_fraction, seed=seed, scale_augment=scale_augment, jitter=jitter,
        )
        if "{split}" not in pattern:
            raise ValueError(f"pattern must contain {{split}} (e.g. '{{split}}_random_pose.npz'); got {pattern!r}")
        if num_parts < 1:
            raise ValueError(f"num_parts must be >= 1; got {num_parts}")
        self.save_hyperparameters()
        self.pattern, self.parts = pattern, num_parts

    @property
    def class_names(self) -> list[str]:
        return ["human"]

    @property
    def category_parts(self) -> list[list[int]]:
        return [list(range(self.parts))]

    def load_split(self, split: str) -> CloudArrays:
        if self.root is None:
            raise DatasetNotFoundError("DFAUST (APEN's npz files) needs a licence from MPI and is never downloaded: "
                                       "pass root=<folder with " + self.pattern.format(split="train") + " and "
                                       + self.pattern.format(split="test") + ">")
        path = Path(self.root) / self.pattern.format(split=split)
        if not path.is_file():
            raise DatasetNotFoundError(f"missing {path}: put APEN's {split} npz there (DFAUST needs a licence from "
                                       f"MPI; nothing is downloaded)")
        arrays = read_apen_npz(path)
        if int(arrays["part"].max()) >= self.parts:
            raise DatasetFileError(f"{path}: part labels up to {int(arrays['part'].max())}, but num_parts is "
                                   f"{self.parts}")
        category = np.zeros(len(arrays["label"]), dtype=np.int64)
        return CloudArrays(arrays["pos"], arrays["label"], arrays["normal"], arrays["part"], category)
