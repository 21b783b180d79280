"""Every datamodule forwards the base's arguments by name (each one lands where it belongs and is recorded by
``save_hyperparameters``), and a datamodule is rebuilt from the settings a checkpoint or a config stores."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pointgeo.datamodules import (
    ModelNet10DataModule,
    ModelNet40DataModule,
    PointCloudDataModule,
    ScanObjectNNDataModule,
    ShapeNetPartDataModule,
    SyntheticShapesDataModule,
)
from pointgeo.datamodules.settings import build_datamodule, public_settings

DATAMODULES = [ModelNet40DataModule, ModelNet10DataModule, ScanObjectNNDataModule, ShapeNetPartDataModule,
               SyntheticShapesDataModule]


def test_the_base_takes_its_arguments_by_name_only() -> None:
    parameters = list(inspect.signature(PointCloudDataModule.__init__).parameters.values())[1:]
    assert parameters and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)


@pytest.mark.parametrize("cls", DATAMODULES)
def test_every_base_argument_reaches_the_base_and_the_hyperparameters(cls: type, tmp_path: Path) -> None:
    """Distinct non-default values for each base argument a datamodule takes: each lands on its own attribute (a
    positional forward that shifted them would swap or misplace values) and in ``hparams``."""
    values = {"root": str(tmp_path), "num_points": 77, "use_normals": True, "batch_size": 5, "num_workers": 3,
              "train_rotation": "so3", "test_rotation": "none", "val_fraction": 0.25, "seed": 11,
              "scale_augment": (0.9, 1.1), "jitter": 0.01}
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in values.items() if k in accepted}
    assert len(kwargs) >= 9
    dm = cls(**kwargs)
    for key, value in kwargs.items():
        expected = Path(value) if key == "root" else value
        assert getattr(dm, key) == expected, key
        assert dm.hparams[key] == value, key
    if "val_fraction" not in accepted:  # ShapeNet part has an official validation split
        assert dm.val_fraction == 0.0


def test_a_datamodule_is_rebuilt_from_stored_or_config_settings() -> None:
    stored = {"_class_path": "pointgeo.datamodules.SyntheticShapesDataModule", "num_train": 20, "num_test": 4,
              "num_points": 64, "seed": 3}
    assert public_settings(stored) == {k: v for k, v in stored.items() if k != "_class_path"}
    dm = build_datamodule(stored, None)
    assert isinstance(dm, SyntheticShapesDataModule) and (dm.num_train, dm.num_points, dm.seed) == (20, 64, 3)
    override = {"class_path": "pointgeo.datamodules.SyntheticShapesDataModule", "init_args": {"num_test": 2}}
    assert build_datamodule(stored, override).num_test == 2


@pytest.mark.parametrize("data,message", [
    ({"num_points": 64}, "records no datamodule"),
    ({"_class_path": "pointgeo.datamodules.NoSuchDataModule"}, "cannot import"),
    ({"_class_path": "no_such_package.DataModule"}, "cannot import"),
    ({"_class_path": "pointgeo.datamodules.SyntheticShapesDataModule", "colour": "red"}, "do not build"),
])
def test_bad_stored_settings_get_one_clear_error(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_datamodule(data, None)
