"""The ASE calculator: energies, forces and stress as the task computes them, charge and spin from atoms.info,
checkpoints by path, relaxation, and NVE energy conservation (conservative models) vs drift (direct head)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from torch_geometric.loader import DataLoader

from pointgeo.calculators import PointGeoCalculator, atoms_to_batch, energy_drift
from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks import PotentialTask
from pointgeo.tasks.potential import predict_potential

PAINN = {"channels": 16, "num_layers": 2, "num_basis": 8, "cutoff": 4.0}


def network(name: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**get_model_entry(name).test_kwargs, **kwargs}).double()


def test_energy_and_forces_equal_the_task_and_charge_spin_come_from_atoms_info() -> None:
    net = network("painn")
    atoms = molecule("CH3CH2OH")
    atoms.calc = PointGeoCalculator(net)
    ref = predict_potential(net, atoms_to_batch(atoms, 0, 1, torch.float64, "cpu"))
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"].detach()[0]), rel=0, abs=1e-12)
    assert np.allclose(atoms.get_forces(), ref["forces"].numpy(), rtol=0, atol=1e-12)
    neutral = atoms.get_potential_energy()
    atoms.info.update(charge=1, spin=2)
    cation = atoms.get_potential_energy()
    charged = predict_potential(net, atoms_to_batch(atoms, 0, 1, torch.float64, "cpu"))["energy"].detach()
    assert cation != neutral and cation == pytest.approx(float(charged[0]), rel=0, abs=1e-12)
    atoms.info.update(spin=0)
    with pytest.raises(ValueError, match="spin multiplicity"):
        atoms.get_potential_energy()


def test_stress_of_a_periodic_cell_equals_ase_numerical_stress() -> None:
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=1)
    atoms.calc = PointGeoCalculator(network("painn"))
    stress = atoms.get_stress()
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    assert np.allclose(stress, numerical, rtol=0, atol=1e-6 * np.abs(stress).max())
    with pytest.raises(ValueError, match="needs a periodic structure"):
        mol = molecule("H2O")
        mol.calc = PointGeoCalculator(network("painn"))
        mol.get_stress()


def test_a_checkpoint_path_builds_the_calculator_and_a_relaxation_lowers_the_forces(tmp_path) -> None:
    from torch_geometric.data import Data

    task = PotentialTask("painn", network_kwargs=PAINN)
    data = [Data(pos=torch.tensor(molecule(m).positions, dtype=torch.float32), z=torch.tensor(molecule(m).numbers),
                 charge=torch.tensor([0]), spin=torch.tensor([1]), energy=torch.tensor([-1.0]),
                 forces=torch.zeros(len(molecule(m)), 3)) for m in ("H2O", "NH3")]
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, inference_mode=False, default_root_dir=tmp_path)
    trainer.fit(task, DataLoader(data, batch_size=2))
    path = tmp_path / "painn.ckpt"
    trainer.save_checkpoint(path)
    atoms = molecule("H2O")
    atoms.rattle(0.1, seed=0)
    atoms.calc = PointGeoCalculator(path, dtype=torch.float64)
    start = np.abs(atoms.get_forces()).max()
    BFGS(atoms, logfile=None).run(fmax=0.1 * start, steps=60)
    assert np.abs(atoms.get_forces()).max() < 0.1 * start


class _ReferencedMolecules(pl.LightningDataModule):
    """Two molecules whose datamodule, like :class:`~pointgeo.datamodules.MoleculeDataModule`, fitted per-element
    reference energies ``E0`` (H −13.6, C −1030, N −1480, O −2040 eV)."""

    def __init__(self) -> None:
        super().__init__()
        from torch_geometric.data import Data

        self.element_energies = torch.zeros(119, dtype=torch.float64)
        self.element_energies[[1, 6, 7, 8]] = torch.tensor([-13.6, -1030.0, -1480.0, -2040.0], dtype=torch.float64)
        self.data = [Data(pos=torch.tensor(molecule(m).positions, dtype=torch.float32),
                          z=torch.tensor(molecule(m).numbers), charge=torch.tensor([0]), spin=torch.tensor([1]),
                          energy=torch.tensor([-1.0]), forces=torch.zeros(len(molecule(m)), 3))
                     for m in ("H2O", "NH3")]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=2)


def test_the_calculator_adds_back_the_references_the_checkpoint_carries(tmp_path) -> None:
    task = PotentialTask("painn", network_kwargs=PAINN)
    data = _ReferencedMolecules()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, inference_mode=False, default_root_dir=tmp_path)
    trainer.fit(task, data)
    assert torch.equal(task.element_energies, data.element_energies)
    path = tmp_path / "painn.ckpt"
    trainer.save_checkpoint(path)
    atoms = molecule("CH3CH2OH")  # C2H6O: 2 C, 6 H, 1 O
    atoms.calc = PointGeoCalculator(path, dtype=torch.float64)
    learned = predict_potential(atoms.calc.net, atoms_to_batch(atoms, 0, 1, torch.float64, "cpu"))["energy"]
    references = 2 * -1030.0 + 6 * -13.6 - 2040.0
    assert atoms.get_potential_energy() == pytest.approx(float(learned[0]) + references, rel=0, abs=1e-9)
    # the same forces as the bare network: the references are constants of the composition
    bare = molecule("CH3CH2OH")
    bare.calc = PointGeoCalculator(atoms.calc.net)
    assert bare.get_potential_energy() == pytest.approx(float(learned[0]), rel=0, abs=1e-9)
    assert np.allclose(atoms.get_forces(), bare.get_forces(), rtol=0, atol=1e-12)
    # a checkpoint written before the references were task state loads with zero references and says so
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["element_energies"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.warns(UserWarning, match="no per-element reference energies"):
        calc = PointGeoCalculator(old, dtype=torch.float64)
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(float(learned[0]), rel=0, abs=1e-9)


def nve_drift(net: torch.nn.Module, steps: int = 160, dt_fs: float = 0.25) -> float:
    """Drift (eV/atom/ps) of ethanol's total energy under velocity Verlet, from 300 K; a run that ends with atoms
    on top of each other (the calculator refuses them) is measured up to there."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = PointGeoCalculator(net)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    energies, times = [atoms.get_total_energy()], [0.0]
    for k in range(steps // 10):
        try:
            dyn.run(10)
        except ValueError as exc:
            assert "apart" in str(exc) and len(energies) >= 3, exc
            break
        energies.append(atoms.get_total_energy())
        times.append((k + 1) * 10 * dt_fs)
    return energy_drift(np.array(energies), np.array(times), len(atoms))


def test_nve_conserves_energy_with_conservative_forces_and_drifts_with_the_direct_head() -> None:
    conservative = {name: abs(nve_drift(network(name))) for name in ("painn", "tinvnn_atoms")}
    direct = abs(nve_drift(network("painn", direct_forces=True)))
    # 40 fs of ethanol at 300 K with a 0.25 fs step: a gradient field drifts by well under 1 meV/atom/ps
    assert all(d < 1e-3 for d in conservative.values()), conservative
    assert direct > 100 * max(conservative.values()), (direct, conservative)
    print(f"NVE drift (eV/atom/ps): {conservative}, direct head {direct:.3g}")
