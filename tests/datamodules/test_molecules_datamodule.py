"""The molecule datamodule: splits, element references fitted on training only, atom-budget batches (also under
DDP), the data contract of its batches, the OMol25 gated-data message, and the shipped data configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch_geometric.data import Batch

from pointgeo.datamodules import MoleculeDataModule, OMol25DataModule
from pointgeo.datamodules.ase_readers import write_aselmdb as write_lmdb
from pointgeo.datamodules.batching import AtomBudgetBatchSampler, pack_by_budget
from pointgeo.datamodules.molecules import MOLECULE_FIELDS, composition_counts, fit_element_energies
from pointgeo.datamodules.release import DatasetNotFoundError
from pointgeo.geometry import apply_rigid_motion, random_rotations

E0 = {1: -13.6, 6: -1029.5, 7: -1484.0, 8: -2041.25}  # eV per element, exact in the synthetic set below


def synthetic_split(folder: Path, n: int = 60, seed: int = 0, metadata: bool = True) -> tuple[Path, list[dict]]:
    """``n`` random CHNO molecules of 2-12 atoms whose energies are exactly Σ E0[z] (+ a test-only outlier)."""
    rng = np.random.default_rng(seed)
    mols = []
    for i in range(n):
        size = int(rng.integers(2, 13))
        numbers = rng.choice(list(E0), size=size)
        pos = np.stack(np.meshgrid(np.arange(3), np.arange(3), np.arange(2), indexing="ij"), -1).reshape(-1, 3)
        pos = pos[rng.permutation(len(pos))[:size]] * 1.1 + rng.normal(0, 0.05, (size, 3))
        energy = float(sum(E0[int(z)] for z in numbers))
        mols.append({"numbers": numbers, "positions": pos, "energy": energy, "forces": rng.normal(size=(size, 3)),
                     "data": {"charge": int(rng.integers(-1, 2)), "spin": int(rng.integers(1, 3)),
                              "data_id": ["spice", "elytes"][i % 2]}})
    folder.mkdir(parents=True, exist_ok=True)
    write_lmdb(folder / "data0000.aselmdb", mols[: n // 2])
    write_lmdb(folder / "data0001.aselmdb", mols[n // 2:])
    if metadata:
        np.savez(folder / "metadata.npz", natoms=np.array([len(m["numbers"]) for m in mols]),
                 data_ids=np.array([m["data"]["data_id"] for m in mols]))
    return folder, mols


def test_splits_are_seeded_disjoint_and_carved_from_training(tmp_path: Path) -> None:
    folder, _ = synthetic_split(tmp_path / "set")
    dm = MoleculeDataModule(str(folder), val_fraction=0.2, test_fraction=0.1, seed=3, max_atoms=40)
    dm.setup()
    sizes = dm.split_sizes()
    assert sizes == {"train": 42, "val": 12, "test": 6}
    rows = {k: set(dm._splits[k][1].tolist()) for k in sizes}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    assert rows["train"] | rows["val"] | rows["test"] == set(range(60))
    again = MoleculeDataModule(str(folder), val_fraction=0.2, test_fraction=0.1, seed=3, max_atoms=40)
    again.setup()
    assert set(again._splits["val"][1].tolist()) == rows["val"]
    other = MoleculeDataModule(str(folder), val_fraction=0.2, test_fraction=0.1, seed=4, max_atoms=40)
    other.setup()
    assert set(other._splits["val"][1].tolist()) != rows["val"]
    subset = MoleculeDataModule(str(folder), data_ids=["elytes"], val_fraction=0.0, test_fraction=0.0)
    subset.setup()
    assert subset.split_sizes()["train"] == 30 and all(subset._splits["train"][1] % 2 == 1)
    with pytest.raises(ValueError, match=r"no row has a data_id in \['rgd'\]; the data_ids present are"):
        s = MoleculeDataModule(str(folder), data_ids=["rgd"])
        s.setup()


def test_element_references_are_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    folder, mols = synthetic_split(tmp_path / "set", n=80)
    dm = MoleculeDataModule(str(folder), val_fraction=0.2, test_fraction=0.2, seed=0, dtype="float64")
    dm.setup()
    e0 = dm.element_energies
    assert e0.shape == (119,) and e0.dtype == torch.float64
    for z, value in E0.items():  # energies are exact sums, so least squares recovers the references
        assert abs(e0[z].item() - value) < 1e-8
    assert torch.count_nonzero(e0).item() == 4

    # corrupt the energies of the held-out rows only: the references do not move
    train = set(dm._splits["train"][1].tolist())
    for i, mol in enumerate(mols):
        if i not in train:
            mol["energy"] += 500.0 * (1 + i % 3)
    shifted, _ = tmp_path / "shifted", None
    shifted.mkdir()
    write_lmdb(shifted / "data0000.aselmdb", mols[:40])
    write_lmdb(shifted / "data0001.aselmdb", mols[40:])
    dm2 = MoleculeDataModule(str(shifted), val_fraction=0.2, test_fraction=0.2, seed=0, dtype="float64")
    dm2.setup()
    assert torch.allclose(dm2.element_energies, e0, rtol=0, atol=1e-8)
    # and they are applied: energy_reference = Σ E0[z] of each molecule, in every split
    batch = next(iter(dm.val_dataloader()))
    expected = torch.zeros(batch.num_graphs, dtype=torch.float64).index_add_(0, batch.batch, e0[batch.z])
    assert torch.allclose(batch.energy_reference, expected, rtol=0, atol=1e-9)
    assert torch.allclose(batch.energy - batch.energy_reference, torch.zeros_like(batch.energy), rtol=0, atol=1e-8)

    # stored in the datamodule's state (checkpoints) and restored without refitting
    restored = MoleculeDataModule(str(folder), energy_references="none")
    restored.load_state_dict(dm.state_dict())
    restored.setup()
    assert torch.equal(restored.element_energies, e0)
    none = MoleculeDataModule(str(folder), energy_references="none")
    none.setup()
    assert torch.count_nonzero(none.element_energies).item() == 0


def test_least_squares_fit_by_hand() -> None:
    natoms = np.array([2, 3, 1])
    z = np.array([1, 1, 6, 1, 8, 8])
    counts = composition_counts(natoms, z, np.array([2, 0, 1]))
    assert counts[0, 8] == 1 and counts[1, 1] == 2 and counts[2, 6] == 1 and counts[2, 1] == 1
    assert counts[2, 8] == 1 and counts.sum() == 6
    # H2 = -2, CH+O = -10, O = -4 -> H = -1, O = -4, C = -5 exactly
    e0 = fit_element_energies(composition_counts(natoms, z, np.arange(3)), np.array([-2.0, -10.0, -4.0]))
    assert np.allclose(e0[[1, 6, 8]], [-1.0, -5.0, -4.0], rtol=0, atol=1e-12) and e0[7] == 0


def test_batches_follow_the_data_contract(tmp_path: Path) -> None:
    folder, mols = synthetic_split(tmp_path / "set", metadata=False)
    dm = MoleculeDataModule(str(folder), max_atoms=25, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    assert dm.fields is MOLECULE_FIELDS
    seen = 0
    for batch in dm.train_dataloader():
        assert isinstance(batch, Batch)
        assert int(batch.natoms.sum()) <= 25 and batch.pos.shape == (int(batch.natoms.sum()), 3)
        assert batch.pos.dtype == torch.float32 and batch.forces.dtype == torch.float32
        assert batch.z.dtype == torch.long and batch.charge.dtype == torch.long and batch.spin.dtype == torch.long
        assert batch.energy.shape == (batch.num_graphs,) and batch.batch.shape == (batch.pos.shape[0],)
        assert batch.charge.shape == (batch.num_graphs,) and len(batch.data_id) == batch.num_graphs
        for k in range(batch.num_graphs):
            row = int(batch.index[k])
            mol = mols[row]
            part = batch.get_example(k)
            assert part.z.tolist() == list(mol["numbers"])
            assert torch.equal(part.pos, torch.tensor(mol["positions"], dtype=torch.float32))
            assert part.charge.item() == mol["data"]["charge"] and part.spin.item() == mol["data"]["spin"]
            assert part.data_id == mol["data"]["data_id"]
        seen += batch.num_graphs
    assert seen == dm.split_sizes()["train"]


def test_rotation_protocols_move_positions_and_forces_together(tmp_path: Path) -> None:
    folder, _ = synthetic_split(tmp_path / "set")
    plain = MoleculeDataModule(str(folder), dtype="float64", test_fraction=0.2)
    rotated = MoleculeDataModule(str(folder), dtype="float64", test_fraction=0.2, test_rotation="so3")
    a, b = plain.dataset("test")[0], rotated.dataset("test")[0]
    assert torch.allclose(torch.cdist(a.pos, a.pos), torch.cdist(b.pos, b.pos), rtol=0, atol=1e-12)
    # the same rotation maps positions and forces: recover it from the positions, check the forces
    rot = torch.linalg.lstsq(a.pos - a.pos.mean(0), b.pos - b.pos.mean(0)).solution.T
    assert torch.allclose(b.forces, a.forces @ rot.T, rtol=0, atol=1e-9)
    assert torch.equal(b.energy, a.energy) and not torch.allclose(a.pos, b.pos)
    assert torch.equal(rotated.dataset("test")[0].pos, b.pos)  # fixed per row by the seed
    batch = Batch.from_data_list([a, a])
    moved = apply_rigid_motion(batch, MOLECULE_FIELDS, random_rotations(2, dtype=torch.float64))
    assert torch.equal(moved.energy, batch.energy) and moved.data_id == batch.data_id


def test_atom_budget_sampler_bounds_orders_and_balances() -> None:
    rng = np.random.default_rng(0)
    natoms = np.concatenate([rng.integers(1, 60, size=497), [350, 350, 349]])
    sampler = AtomBudgetBatchSampler(natoms, 400, shuffle=True, seed=5)
    epoch0 = list(sampler)
    assert all(natoms[b].sum() <= 400 for b in epoch0)
    assert sorted(i for b in epoch0 for i in b) == list(range(500))  # every molecule exactly once
    assert len(sampler) == len(epoch0)
    assert list(AtomBudgetBatchSampler(natoms, 400, shuffle=True, seed=5)) == epoch0  # deterministic
    sampler.sampler.set_epoch(1)  # Lightning calls set_epoch on batch_sampler.sampler
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(i for b in epoch1 for i in b) == list(range(500))
    ordered = list(AtomBudgetBatchSampler(natoms, 400))
    assert [i for b in ordered for i in b] == list(range(500))
    # greedy: no batch could have taken the next molecule of the order
    order = [i for b in ordered for i in b]
    for k, b in enumerate(ordered[:-1]):
        assert natoms[b].sum() + natoms[ordered[k + 1][0]] > 400

    ranks = [AtomBudgetBatchSampler(natoms, 400, shuffle=True, seed=5, num_replicas=3, rank=r) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    per_rank = [list(r) for r in ranks]
    assert len({len(p) for p in per_rank}) == 1  # the same number of batches on every rank
    covered = {i for p in per_rank for b in p for i in b}
    assert covered == set(range(500))  # padding repeats batches, nothing is lost
    totals = np.array([[natoms[b].sum() for b in p] for p in per_rank])  # (ranks, steps)
    spread = totals.max(0) - totals.min(0)
    # similar atom totals at every step but the one that holds the epoch's last, part-filled batch
    assert np.sort(spread)[-2] <= 0.05 * 400 and np.median(spread) <= 10
    drop = [list(AtomBudgetBatchSampler(natoms, 400, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert len({len(p) for p in drop}) == 1 and not {i for b in drop[0] for i in b} & {i for b in drop[1] for i in b}
    assert order == list(range(500))


def test_sampler_and_datamodule_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"molecule 2 has 350 atoms, more than the batch budget max_atoms=300"):
        AtomBudgetBatchSampler([3, 5, 350, 20], 300)
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas\)"):
        AtomBudgetBatchSampler([3], 10, num_replicas=2, rank=2)
    assert [list(r) for r in pack_by_budget(np.array([3, 3, 3, 1]), 6)] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        MoleculeDataModule("x", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="spin_convention must be 'multiplicity' \\(2S\\+1\\) or 'unpaired'"):
        MoleculeDataModule("x", spin_convention="2S")  # type: ignore[arg-type]
    folder, _ = synthetic_split(tmp_path / "big")
    dm = MoleculeDataModule(str(folder), max_atoms=5)
    with pytest.raises(ValueError, match=r"has 1[0-2] atoms, more than the batch budget max_atoms=5"):
        dm.train_dataloader()


def test_omol25_gated_message_and_split_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("POINTGEO_HOME", str(home))
    dm = OMol25DataModule()
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    target = home / "datasets" / "omol25" / "train_4M"
    for part in ("log in to Hugging Face", "accept the", "https://huggingface.co/facebook/OMol25",
                 "train_4M.tar.gz", f"{target}/"):
        assert part in message, part
    synthetic_split(home / "datasets" / "omol25" / "train_4M", n=40)
    synthetic_split(home / "datasets" / "omol25" / "val", n=20, seed=1)
    dm = OMol25DataModule(max_atoms=50)
    dm.setup()
    assert dm.split_sizes() == {"train": 40, "val": 20, "test": 0}
    assert dm._splits["val"][0] is not dm._splits["train"][0]
    assert torch.count_nonzero(dm.element_energies).item() == 4
    assert sum(b.num_graphs for b in dm.val_dataloader()) == 20
    with pytest.raises(ValueError, match=r"the test split of train_4M is empty"):
        dm.test_dataloader()


@pytest.mark.parametrize("name", ["omol25-train_4M", "omol25-val", "spookynet-carbene_ag3", "xtb-g2"])
def test_shipped_data_configs(name: str) -> None:
    from importlib import resources

    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    path = Path(str(resources.files("pointgeo.configs"))) / "molecules" / "data" / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["trainer"] == {"inference_mode": False, "use_distributed_sampler": False}
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    dm = parser.instantiate(parser.parse_object({"data": config["data"]})).data
    assert isinstance(dm, MoleculeDataModule) and dm.max_atoms >= 300


def test_spookynet_config_trains_on_the_real_sample(shared_data: Path) -> None:
    from importlib import resources

    path = Path(str(resources.files("pointgeo.configs"))) / "molecules" / "data" / "spookynet-carbene_ag3.yaml"
    args = yaml.safe_load(path.read_text())["data"]["init_args"]
    args["path"] = [str(shared_data / "ase_db" / "schnetpack" / Path(p).name) for p in args["path"]]
    dm = MoleculeDataModule(**args)
    dm.setup()
    assert dm.split_sizes() == {"train": 3520, "val": 440, "test": 440}
    batch = next(iter(dm.val_dataloader()))
    assert int(batch.natoms.sum()) <= 300
    assert set(batch.spin.tolist()) <= {1, 3} and set(batch.charge.tolist()) <= {-1, 0, 1}
    assert set(batch.z.tolist()) <= {1, 6, 47}
    residual = (batch.energy.double() - batch.energy_reference.double()).abs()
    assert residual.max() < 5.0  # eV: the references take out the ~10 eV per molecule totals


class ElementEnergyModel(pl.LightningModule):
    """A minimal energy model for driving a Trainer: E = Σ_i w[z_i] (one weight per element); it records the
    rows of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(119))
        self.seen: list[list[int]] = []

    def _loss(self, batch: Batch) -> torch.Tensor:
        energy = torch.zeros(batch.num_graphs).index_add_(0, batch.batch, self.w[batch.z])
        return ((energy - (batch.energy - batch.energy_reference)) ** 2).mean()

    def training_step(self, batch: Batch, _: int) -> torch.Tensor:
        self.seen.append(batch.index.tolist())
        return self._loss(batch)

    def validation_step(self, batch: Batch, _: int) -> None:
        self.log("val/loss", self._loss(batch), batch_size=batch.num_graphs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_a_trainer_draws_a_new_seeded_order_every_epoch(tmp_path: Path) -> None:
    folder, _ = synthetic_split(tmp_path / "set", n=40)
    dm = MoleculeDataModule(str(folder), max_atoms=30, val_fraction=0.2, test_fraction=0.0)
    model = ElementEnergyModel()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         inference_mode=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    per_epoch = len(dm.train_dataloader())
    first, second = model.seen[:per_epoch], model.seen[per_epoch:]
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == sorted(dm._splits["train"][1].tolist())
    assert first != second  # Lightning set the epoch on the batch sampler's sampler
    assert "val/loss" in trainer.callback_metrics



def test_omol25_sized_totals_keep_their_per_atom_residuals(tmp_path: Path) -> None:
    """Totals of 10⁴-10⁵ eV (OMol25: up to 350 atoms): reader → batch → ``energy − energy_reference`` in float64, so
    the residual of a few meV per atom survives to ≤ 1e-9 eV; float32 totals would be 8 meV apart."""
    from pointgeo.robustness.potentials import _cast
    from pointgeo.tasks.potential import target_energy

    e0 = {1: -13.5718, 6: -1029.8634, 7: -1485.3051, 8: -2042.6128, 16: -10832.1733, 17: -12567.4431}
    rng = np.random.default_rng(11)
    mols = []
    for i in range(24):
        size = int(rng.integers(20, 351))
        numbers = rng.choice(list(e0), size=size, p=[0.45, 0.3, 0.08, 0.1, 0.04, 0.03])
        pos = rng.uniform(0, 2.0 * size ** (1 / 3), (size, 3))
        residual = size * rng.uniform(-5e-3, 5e-3)  # a few meV per atom
        mols.append({"numbers": numbers, "positions": pos, "forces": np.zeros((size, 3)),
                     "energy": float(sum(e0[int(z)] for z in numbers)) + residual,
                     "data": {"charge": 0, "spin": 1, "data_id": "omol"}})
    (tmp_path / "big").mkdir()
    write_lmdb(tmp_path / "big" / "data0000.aselmdb", mols)
    dm = MoleculeDataModule(str(tmp_path / "big"), max_atoms=400, val_fraction=0.2, test_fraction=0.2,
                            min_distance=0.0)
    dm.setup()
    e_fit = dm.element_energies.numpy()
    assert dm.element_energies.dtype == torch.float64
    totals = np.array([m["energy"] for m in mols])
    assert np.abs(totals).max() > 5e4  # OMol25's magnitude
    checked, float32_loss = 0, 0.0
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            assert batch.energy.dtype == torch.float64 and batch.energy_reference.dtype == torch.float64
            assert batch.pos.dtype == torch.float32  # positions keep the configured dtype
            rows = batch.index.tolist()
            exact = torch.tensor([mols[r]["energy"] - e_fit[mols[r]["numbers"]].sum() for r in rows])
            natoms = batch.natoms.double()
            target = target_energy(batch)
            assert target.dtype == torch.float64
            assert torch.allclose(target, exact, rtol=0, atol=1e-9)
            # rounded to a float32 network's dtype only now: per-atom error far below a meV
            assert torch.allclose(target.float().double() / natoms, exact / natoms, rtol=0, atol=1e-6)
            float32_loss = max(float32_loss, float(((batch.energy.float() - batch.energy_reference.float()).double()
                                                    - exact).abs().max()))
            cast = _cast(batch.clone(), "cpu", torch.float32)  # the robustness report's cast keeps the totals
            assert cast.energy.dtype == torch.float64 and cast.pos.dtype == torch.float32
            assert torch.equal(target_energy(cast), target)
            checked += batch.num_graphs
    assert checked == len(mols)
    assert float32_loss > 1e-3  # what storing totals in float32 would have cost (> 1 meV): the test can fail
