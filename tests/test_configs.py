"""Every shipped config parses and instantiates its model and datamodule (no data is read)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from pointgeo.lightning_cli import PointGeoCLI

CONFIGS = sorted(Path(str(resources.files("pointgeo.configs"))).glob("*/*.yaml"))


def test_configs_are_shipped() -> None:
    names = {f"{p.parent.name}/{p.stem}" for p in CONFIGS}
    assert {"synthetic/cls-tinvnn_pointnet-z", "synthetic/cls-pointnet-z"} <= names
    for model in ("pointnet", "dgcnn", "tinvnn_pointnet", "tinvnn_dgcnn"):
        assert {f"modelnet40/cls-{model}-z", f"modelnet40/cls-{model}-so3"} <= names
    assert {"articulated/partseg-apen", "dfaust/partseg-apen"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_instantiates(path: Path, tmp_path: Path) -> None:
    cli = PointGeoCLI(["--config", str(path), "--data.init_args.num_workers", "0"]
                      if "modelnet" in path.parent.name else ["--config", str(path)], run=False)
    if path.parent.name == "threedmatch":  # <network>[-<variant>]: registration, one pair per step
        assert cli.model.task_kind == "registration"
        assert cli.model.hparams.network == path.stem.split("-")[0]
        assert cli.datamodule.batch_size == 1 and cli.model.test_rotations == ("none", "haar")
        return
    assert cli.model.hparams.network == path.stem.split("-")[1]
    if path.parent.name == "molecules":  # <data>-<network>: potentials, autograd forces in every loop
        assert cli.model.task_kind == "potential"
        assert cli.trainer.validate_loop.inference_mode is False
        return
    if path.parent.name == "crystals":  # <dataset>-cdvae[-cpu]: crystal generation on CDVAE's benchmarks
        assert cli.model.task_kind == "crystal_generation"
        assert cli.datamodule.benchmark.name == path.stem.split("-")[0]
        assert cli.model.net.max_atoms == cli.datamodule.settings.max_atoms
        return
    fields = path.stem.split("-")  # <task>-<network>[-<training rotation>]
    if len(fields) == 3:
        assert cli.datamodule.train_rotation == fields[2]
    elif path.parent.name == "dfaust":  # trained unrotated, as released
        assert fields[1] == "apen", path
    else:  # data whose parts move on their own (articulated, multi-object scenes): trained and tested under SO(3)
        assert path.parent.name in ("articulated", "multi_object") and len(fields) == 2, path
        assert cli.datamodule.train_rotation == cli.datamodule.test_rotation == "so3"
        assert cli.model.hparams.num_parts == cli.datamodule.num_parts
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
