"""The shipped molecule configs train through ``pointgeo train``: PaiNN, TinvNN-atoms and TransIP on a subset of
the real SpookyNet sample (CH2 singlet/triplet, Ag3 cation/anion), energy and force MAE falling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from pointgeo.configs import shipped_config

ROWS_PER_FILE = 80
"""Molecules taken from each SpookyNet file, evenly spaced (the files alternate charge and spin states)."""
EPOCHS = 8
LR = {"painn": "0.005", "tinvnn_atoms": "0.01", "transip": "0.01"}
FORCES_LEARNED = ("painn",)
"""Networks whose force MAE is asserted to fall at test size. The atom transformers (tinvnn_atoms, transip) start
with forces ~10x too small and, at 16 channels and a few hundred steps, do not move them (measured: 358 -> 355
meV/Å in 14 epochs, also with the energy weighted 0.1 or 1, or lr 0.03): their energy MAE is asserted instead."""
TINY = {
    "painn": "{channels: 16, num_layers: 2, num_basis: 8, cutoff: 5.0}",
    "tinvnn_atoms": "{channels: 16, num_layers: 1, heads: 2, num_basis: 8, radius: 6.0}",
    "transip": "{channels: 16, num_layers: 1, heads: 2, num_basis: 8, radius: 6.0, latent_dim: 8}",
}


@pytest.fixture(scope="module")
def spookynet_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Evenly spaced rows of the two real SpookyNet databases, copied row by row (atoms and data) with ASE."""
    from ase import db as ase_db

    folder = tmp_path_factory.mktemp("spookynet")
    paths = []
    for name in ("ase_carbene_2200.db", "ase_ag3_2200.db"):
        out = folder / name
        with ase_db.connect(shared_data / "ase_db" / "schnetpack" / name) as src, ase_db.connect(out) as dst:
            dst.metadata = src.metadata
            for i in range(1, 2201, 2200 // ROWS_PER_FILE)[:ROWS_PER_FILE]:
                row = src.get(id=i)
                dst.write(row.toatoms(), data=row.data)
        paths.append(str(out))
    return paths


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from intra-op threads, and on a busy machine spinning threads cost 10×."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("network", sorted(TINY))
def test_spookynet_config_trains_and_mae_falls(network: str, spookynet_subset: list[str], train_through_cli) -> None:
    out, per_epoch = train_through_cli(
        f"molecules/spookynet-{network}", "--data.init_args.path", f"[{','.join(spookynet_subset)}]",
        "--model.init_args.network_kwargs", TINY[network], "--model.init_args.lr", LR[network],
        "--data.init_args.max_atoms", "60", "--trainer.max_epochs", str(EPOCHS))
    energy, forces = per_epoch("val/energy_mae"), per_epoch("val/force_mae")
    last = EPOCHS - 1
    assert sorted(energy) == list(range(EPOCHS)) and sorted(forces) == list(range(EPOCHS))
    assert energy[last] < 0.95 * energy[0], energy
    if network in FORCES_LEARNED:
        assert forces[last] < 0.95 * forces[0], forces
    print(f"{network}: val energy MAE {energy[0]:.0f} -> {energy[last]:.0f} meV, force MAE {forces[0]:.0f} -> "
          f"{forces[last]:.0f} meV/Å")
    if network == "transip":
        assert per_epoch("train/loss_contrastive"), "the contrastive objective was not trained"
    # pointgeo train ends by testing the best checkpoint unrotated and under SO(3), in meV and meV/Å
    assert "test rotation | energy MAE | force MAE" in out
    rows = {line.split("|")[0].strip(): line for line in out.splitlines() if "meV/Å" in line}
    assert set(rows) == {"none", "so3"}


@pytest.mark.parametrize("model", sorted(TINY))
def test_molecule_configs_share_the_data_configs(model: str) -> None:
    """The full configs inline the data sections of configs/molecules/data (one source of truth, checked here)."""
    for full, data, changed in (("spookynet", "spookynet-carbene_ag3", {}),
                                ("omol25", "omol25-train_4M", {"test_split": "val"})):
        config = yaml.safe_load(shipped_config(f"molecules/{full}-{model}").read_text())
        part = yaml.safe_load(shipped_config(f"molecules/data/{data}").read_text())
        expected = {**part["data"], "init_args": {**part["data"]["init_args"], **changed}}
        assert config["data"] == expected
        assert {k: config["trainer"][k] for k in part["trainer"]} == part["trainer"]
        assert config["trainer"]["inference_mode"] is False
        assert config["checkpoint"] == {"monitor": "val/force_mae", "mode": "min"}
        assert config["model"]["init_args"]["network"] == model


def test_omol25_config_explains_the_gated_data(tmp_path: Path) -> None:
    from pointgeo.cli import main
    from pointgeo.datamodules import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="huggingface.co/facebook/OMol25"):
        main(["train", "--config", "molecules/omol25-painn", "--data.init_args.root", str(tmp_path),
              "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger", "false"])
