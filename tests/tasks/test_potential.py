"""PotentialTask: conservative forces and stress by autograd, losses, training through Lightning, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from ase.calculators.morse import MorsePotential
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pointgeo.tasks import PotentialTask, TransIPPotentialTask, task_class_for
from pointgeo.tasks.potential import predict_potential
from pointgeo.testing.potentials import potential_test_batch, random_molecule

SMALL = {"channels": 16, "num_layers": 2, "num_basis": 8, "cutoff": 4.0}


def morse_dataset(n: int, seed: int, data_ids: tuple[str, ...] = ("spice", "ani2x")) -> list[Data]:
    """Conformers of random molecules labelled by ASE's Morse potential (energy in eV, forces in eV/Å)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = random_molecule(int(torch.randint(4, 9, (1,), generator=g)), g)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = MorsePotential(epsilon=0.3, r0=1.4, rho0=3.0, rcut1=2.5, rcut2=3.5)
        out.append(Data(pos=torch.tensor(atoms.positions), z=torch.tensor(atoms.numbers),
                        charge=torch.tensor([0]), spin=torch.tensor([1]),
                        energy=torch.tensor([atoms.get_potential_energy()]),
                        forces=torch.tensor(atoms.get_forces()), data_id=data_ids[k % len(data_ids)]))
    return out


def test_forces_are_minus_the_gradient_and_the_input_batch_is_left_alone() -> None:
    task = PotentialTask("painn", network_kwargs=SMALL).double()
    batch = potential_test_batch("random")
    before = batch.pos.clone()
    out = task(batch)
    pos = batch.pos.clone().requires_grad_()
    moved = batch.clone()
    moved.pos = pos
    grad = torch.autograd.grad(task.net(moved).sum(), pos)[0]
    assert torch.allclose(out["forces"], -grad, rtol=0, atol=1e-12)
    assert torch.equal(batch.pos, before) and not batch.pos.requires_grad


def test_stress_is_the_strain_derivative_of_the_energy_over_the_volume() -> None:
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=0)
    atoms.numbers[:] = [6, 14]
    data = Data(pos=torch.tensor(atoms.positions), z=torch.tensor(atoms.numbers), charge=torch.tensor([0]),
                spin=torch.tensor([1]), cell=torch.tensor(atoms.cell.array).unsqueeze(0),
                pbc=torch.tensor(atoms.pbc).unsqueeze(0))
    batch = Batch.from_data_list([data])
    task = PotentialTask("painn", network_kwargs=SMALL).double()
    stress = predict_potential(task.net, batch, stress=True)["stress"][0]
    volume = abs(np.linalg.det(atoms.cell.array))
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 2)]:
        energies = []
        for sign in (1, -1):
            eps = torch.zeros(3, 3, dtype=torch.float64)
            eps[a, b] += sign * h / 2
            eps[b, a] += sign * h / 2
            strained = batch.clone()
            strained.pos = batch.pos @ (torch.eye(3, dtype=torch.float64) + eps)
            strained.cell = batch.cell @ (torch.eye(3, dtype=torch.float64) + eps)
            energies.append(float(predict_potential(task.net, strained, forces=False)["energy"][0]))
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert abs(float(stress[a, b]) - fd) <= 1e-6 * float(stress.abs().max()), (a, b, float(stress[a, b]), fd)
    assert torch.allclose(stress, stress.T, rtol=0, atol=1e-12)


def trainer(epochs: int, inference_mode: bool = False, tmp_path=None) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, inference_mode=inference_mode,
                      default_root_dir=tmp_path)


def test_training_through_lightning_lowers_energy_and_force_errors() -> None:
    torch.manual_seed(0)
    train, val = morse_dataset(32, 1), morse_dataset(12, 2)
    task = PotentialTask("painn", network_kwargs=SMALL, lr=3e-3, scheduler="none", metric_subsets=("spice", "ani2x"))
    task = task.double()
    loaders = DataLoader(train, batch_size=8, shuffle=True), DataLoader(val, batch_size=12)
    before = trainer(1).validate(task, loaders[1], verbose=False)[0]
    trainer(4).fit(task, *loaders)
    after = trainer(1).validate(task, loaders[1], verbose=False)[0]
    assert after["val/force_mae"] < 0.7 * before["val/force_mae"], (before, after)
    assert after["val/energy_mae_per_atom"] < before["val/energy_mae_per_atom"], (before, after)
    assert {"val/force_mae/spice", "val/force_mae/ani2x", "val/energy_mae", "val/force_cos"} <= set(after)


@pytest.mark.parametrize("network", ["tinvnn_atoms", "transip"])
def test_the_force_loss_trains_the_transformer_potentials_through_the_frame(network: str) -> None:
    torch.manual_seed(0)
    kwargs = {"channels": 16, "num_layers": 1, "heads": 2, "num_basis": 8, "radius": 6.0}
    task = PotentialTask(network, network_kwargs=kwargs).double()
    batch = Batch.from_data_list(morse_dataset(8, 1))
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = task._step(batch, "train")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.95 * losses[0], losses


def test_validation_also_works_under_lightning_inference_mode() -> None:
    task = PotentialTask("painn", network_kwargs=SMALL).double()
    val = DataLoader(morse_dataset(8, 3), batch_size=4)
    with_grad = trainer(1, inference_mode=False).validate(task, val, verbose=False)[0]
    inference = trainer(1, inference_mode=True).validate(task, val, verbose=False)[0]
    assert inference["val/force_mae"] == pytest.approx(with_grad["val/force_mae"], rel=1e-9)


def test_transip_task_adds_the_contrastive_term_and_trains(tmp_path) -> None:
    torch.manual_seed(0)
    kwargs = {"channels": 16, "num_layers": 1, "heads": 2, "num_basis": 8, "radius": 6.0, "latent_dim": 8}
    task = TransIPPotentialTask(network_kwargs=kwargs, contrastive_weight=0.5, lr=3e-3, scheduler="none").double()
    batch = Batch.from_data_list(morse_dataset(6, 4))
    loss = task.training_step(batch, 0)
    supervised = task._step(batch, "train")
    assert loss > supervised  # InfoNCE over 6 molecules is positive
    assert task.hparams.contrastive_weight == 0.5 and task.hparams.network == "transip"
    trainer(2, tmp_path=tmp_path).fit(task, DataLoader(morse_dataset(16, 5), batch_size=8))


def test_energy_only_mode_and_missing_labels() -> None:
    task = PotentialTask("painn", network_kwargs=SMALL, force_weight=0.0).double()
    data = morse_dataset(4, 6)
    for d in data:
        del d.forces
    loss = task.training_step(Batch.from_data_list(data), 0)
    assert loss.requires_grad and torch.isfinite(loss)
    with pytest.raises(ValueError, match="no 'forces'; set force_weight: 0"):
        PotentialTask("painn", network_kwargs=SMALL).double().training_step(Batch.from_data_list(data), 0)
    for d in data:
        del d.energy
    with pytest.raises(ValueError, match="no 'energy'"):
        task.training_step(Batch.from_data_list(data), 0)


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="not a potential one"):
        PotentialTask("pointnet")
    with pytest.raises(ValueError, match="not both 0"):
        PotentialTask("painn", energy_weight=0.0, force_weight=0.0)
    with pytest.raises(ValueError, match="trains the 'transip' network"):
        TransIPPotentialTask("painn")


def test_checkpoints_rebuild_the_task(tmp_path) -> None:
    task = PotentialTask("painn", network_kwargs=SMALL, energy_weight=3.0)
    t = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, inference_mode=False, default_root_dir=tmp_path)
    t.fit(task, DataLoader([_float(d) for d in morse_dataset(4, 7)], batch_size=4))
    path = tmp_path / "potential.ckpt"
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    cls = task_class_for(checkpoint["pointgeo"], str(path))
    assert cls is PotentialTask
    loaded = cls.load_from_checkpoint(path)
    batch = potential_test_batch("random", torch.float32)
    assert loaded.hparams.energy_weight == 3.0
    assert torch.equal(loaded.eval()(batch)["energy"], task.eval()(batch)["energy"])


def _float(d: Data) -> Data:
    d = d.clone()
    for key in ("pos", "energy", "forces"):
        setattr(d, key, getattr(d, key).float())
    return d
