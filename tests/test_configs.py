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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_instantiates(path: Path, tmp_path: Path) -> None:
    cli = PointGeoCLI(["--config", str(path), "--data.init_args.num_workers", "0"]
                      if "modelnet" in path.parent.name else ["--config", str(path)], run=False)
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
    rotation = path.stem.rsplit("-", 1)[1]
    assert cli.datamodule.train_rotation == rotation
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
