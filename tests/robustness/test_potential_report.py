"""pointgeo robustness on potential checkpoints: MAEs under none/SO(3), measured symmetry, NVE drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from pointgeo.datamodules import MoleculeDataModule
from pointgeo.tasks import PotentialTask, TransIPPotentialTask

ROWS = 12


@pytest.fixture(scope="module")
def checkpoints(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PaiNN and TransIP checkpoints (one training step) on a few real SpookyNet rows."""
    from ase import db as ase_db

    folder = tmp_path_factory.mktemp("potential_ckpts")
    paths = []
    for name in ("ase_carbene_2200.db", "ase_ag3_2200.db"):
        with ase_db.connect(shared_data / "ase_db" / "schnetpack" / name) as src, ase_db.connect(folder / name) as dst:
            dst.metadata = src.metadata
            for i in range(1, 2201, 2200 // ROWS)[:ROWS]:
                row = src.get(id=i)
                dst.write(row.toatoms(), data=row.data)
        paths.append(str(folder / name))
    out = {"data": str(folder / "data.yaml")}
    Path(out["data"]).write_text(yaml.safe_dump({"data": {
        "class_path": "pointgeo.datamodules.MoleculeDataModule",
        "init_args": {"path": paths, "charge_key": "total_charge", "spin_key": "spin_multiplicity",
                      "spin_convention": "unpaired", "val_fraction": 0.25, "test_fraction": 0.25, "max_atoms": 30,
                      "cache": str(folder / "cache")}}}))
    torch.set_num_threads(1)
    for network, cls, kwargs in (("painn", PotentialTask, {"channels": 8, "num_layers": 1, "num_basis": 4}),
                                 ("transip", TransIPPotentialTask, {"channels": 8, "num_layers": 1, "heads": 2,
                                                                    "num_basis": 4, "latent_dim": 4})):
        dm = MoleculeDataModule(paths, charge_key="total_charge", spin_key="spin_multiplicity",
                                spin_convention="unpaired", val_fraction=0.25, test_fraction=0.25, max_atoms=30,
                                cache=str(folder / "cache"))
        task = cls(network=network, network_kwargs=kwargs)
        trainer = pl.Trainer(max_steps=1, inference_mode=False, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             default_root_dir=str(folder))
        trainer.fit(task, datamodule=dm)
        out[network] = str(folder / f"{network}.ckpt")
        trainer.save_checkpoint(out[network])
    return out


def test_painn_is_equivariant_and_transip_is_not(checkpoints: dict[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from pointgeo.robustness.command import main

    report = main([checkpoints["painn"], checkpoints["transip"], "--out", str(tmp_path / "rep"), "--double",
                   "--data", checkpoints["data"],
                   "--n-rotations", "2"])
    assert "NVE drift" in capsys.readouterr().out
    stored = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert stored["table"] == report["table"] and (tmp_path / "rep" / "report.html").is_file()
    painn, transip = report["models"]
    so3 = painn["protocols"]["so3"]
    assert so3["energy_invariance_error"] <= 1e-8 and so3["force_equivariance_error"] <= 1e-8
    assert so3["within_tolerance"] and so3["latent_alignment_error"] is None
    # equivariant forces: the MAE under SO(3) of the norm-wise figures is unchanged, the energy MAE exactly
    assert painn["protocols"]["none"]["energy_mae"] == pytest.approx(so3["energy_mae"], rel=1e-9)
    t = transip["protocols"]["so3"]
    assert t["energy_invariance_error"] > 1e-6 and t["force_equivariance_error"] > 1e-6 and not t["within_tolerance"]
    assert t["latent_alignment_error"] is not None and transip["guarantee"] == "approximate"
    for result in report["models"]:
        (run,) = result["nve"]
        assert len(run["total_energy_ev"]) == 201 and run["duration_fs"] == 100.0
        assert torch.isfinite(torch.tensor(run["drift_ev_per_atom_per_ps"]))
        t_ps = torch.tensor(run["time_fs"], dtype=torch.float64) / 1000
        e = torch.tensor(run["total_energy_ev"], dtype=torch.float64)
        slope = torch.linalg.lstsq(torch.stack([t_ps, torch.ones_like(t_ps)], 1), e[:, None]).solution[0, 0]
        assert run["drift_ev_per_atom_per_ps"] == pytest.approx(float(slope) / run["num_atoms"], rel=1e-6, abs=1e-12)


def test_velocity_verlet_conserves_a_harmonic_oscillator() -> None:
    """E = ½ k Σ‖x‖² (k = 1 eV/Å², H atoms: period ~64 fs): the total energy of 200 steps of 0.5 fs stays within
    the O(Δt²) fluctuation and does not drift; a non-conservative (rotational) force field drifts."""
    from pointgeo.testing.md import energy_drift, maxwell_boltzmann, velocity_verlet

    masses = torch.full((4,), 1.008, dtype=torch.float64)
    pos = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.1
    v0 = maxwell_boltzmann(masses, 300.0, torch.Generator().manual_seed(1))
    spring = lambda x: (0.5 * x.pow(2).sum(), -x)  # noqa: E731
    run = energy_drift(velocity_verlet(spring, pos, masses, v0, dt_fs=0.5, steps=200), 4)
    assert run["max_deviation_ev_per_atom"] < 1e-3 and abs(run["drift_ev_per_atom_per_ps"]) < 1e-3
    swirl = lambda x: (0.5 * x.pow(2).sum(), -x + 0.5 * torch.stack([-x[:, 1], x[:, 0], 0 * x[:, 2]], 1))  # noqa: E731
    pushed = energy_drift(velocity_verlet(swirl, pos, masses, v0, dt_fs=0.5, steps=200), 4)
    assert abs(pushed["drift_ev_per_atom_per_ps"]) > 10 * abs(run["drift_ev_per_atom_per_ps"])
