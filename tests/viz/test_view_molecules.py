"""`pointgeo view` on a potential checkpoint: a molecule file drawn as element-coloured spheres with force arrows,
beside random rotations whose predicted forces are the rotated forces (PaiNN is equivariant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pointgeo.cli import main
from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.tasks import PotentialTask
from pointgeo.testing.potentials import random_molecule
from pointgeo.viz.molecules import PREDICTED, REFERENCE, build_molecule_views, molecule_scene, read_molecule


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PaiNN potential after one training step on random molecules (energy 0, forces 0 as labels)."""
    folder = tmp_path_factory.mktemp("view_potential")
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(2):
        atoms = random_molecule(5, g)
        rows.append(Data(pos=torch.tensor(atoms.positions, dtype=torch.float32), z=torch.tensor(atoms.numbers),
                         charge=torch.tensor([0]), spin=torch.tensor([1]), energy=torch.zeros(1),
                         forces=torch.zeros(len(atoms), 3)))
    torch.manual_seed(0)
    task = PotentialTask("painn", network_kwargs={"channels": 8, "num_layers": 1, "num_basis": 4, "cutoff": 4.0})
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
                         default_root_dir=folder)
    trainer.fit(task, DataLoader(rows, batch_size=2))
    trainer.save_checkpoint(folder / "painn.ckpt")
    return folder / "painn.ckpt"


@pytest.fixture(scope="module")
def molecule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extended-XYZ molecule of 6 atoms with reference forces and charge/spin in its info line."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    atoms = random_molecule(6, torch.Generator().manual_seed(3))
    atoms.info.update(charge=0, spin=1)
    forces = 0.03 * np.random.default_rng(0).normal(size=(len(atoms), 3))  # the size of the model's forces
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=forces)
    path = tmp_path_factory.mktemp("view_molecule") / "mol.extxyz"
    write(path, atoms)
    return path


@pytest.mark.parametrize("renderer", ["auto", "matplotlib"])
def test_snapshot_of_a_molecule_file(renderer: str, checkpoint: Path, molecule_file: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    import matplotlib.pyplot as plt

    out = tmp_path / "mol.png"
    main(["view", str(checkpoint), "--file", str(molecule_file), "--snapshot", str(out), "--size", "900x300",
          "--n-rotations", "2", "--renderer", renderer])
    printed = capsys.readouterr().out
    image = plt.imread(out)[..., :3]
    assert image.shape[:2] == (300, 900)
    assert image.std() > 0.05  # not a blank page
    for colour in (PREDICTED, REFERENCE):  # both kinds of arrows are visible
        assert (np.abs(image - np.asarray(colour)).max(-1) < 0.1).sum() >= 20
    assert printed.count("E = ") == 3 and "original" in printed and "rotation 2" in printed
    if renderer == "auto":
        assert "(renderer: open3d)" in printed


def test_scene_holds_one_sphere_per_atom_and_one_arrow_per_atom_per_copy(checkpoint: Path,
                                                                         molecule_file: Path) -> None:
    from pointgeo.hub import from_pretrained

    task = from_pretrained(str(checkpoint)).eval()
    molecule = read_molecule(molecule_file)
    views = build_molecule_views(task, molecule, n_rotations=3, seed=1)
    scene = molecule_scene(views)
    n, copies = 6, 4
    assert scene["sphere_centre"].shape == (n * copies, 3) and np.bincount(scene["sphere_cell"]).tolist() == [n] * 4
    # predicted and reference forces: one arrow each per atom and copy
    assert scene["arrow_vector"].shape == (2 * n * copies, 3)
    assert np.bincount(scene["arrow_cell"]).tolist() == [2 * n] * copies
    assert (scene["arrow_colour"] == PREDICTED).all(-1).sum() == n * copies
    # hydrogen (z = 1) is drawn smaller than carbon and in another colour
    z = np.tile(molecule.z.numpy(), copies)
    if {1, 6} <= set(z.tolist()):
        assert scene["sphere_radius"][z == 1].max() < scene["sphere_radius"][z == 6].min()
    # an equivariant model: the forces of each rotation are the rotated forces, the energy unchanged
    for view in views[1:]:
        assert view.equivariance_error < 1e-4
        np.testing.assert_allclose(view.forces, views[0].forces @ view.rotation.T, rtol=0, atol=1e-4)
        assert view.energy == pytest.approx(views[0].energy, rel=0, abs=1e-4)
        np.testing.assert_allclose(view.reference, molecule.forces.double().numpy() @ view.rotation.T, rtol=0,
                                   atol=1e-6)
    assert np.abs(views[0].forces).max() > 0  # the arrows have a length


def test_charge_and_spin_options_override_the_file(molecule_file: Path) -> None:
    default = read_molecule(molecule_file)
    assert int(default.charge) == 0 and int(default.spin) == 1
    moved = read_molecule(molecule_file, charge=-1, spin=2)
    assert int(moved.charge) == -1 and int(moved.spin) == 2


def test_a_bad_molecule_file_gives_one_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xyz"
    bad.write_text("three\nnot a molecule\nC 0 0 zero\n")
    with pytest.raises(DatasetFileError, match="bad.xyz"):
        read_molecule(bad)
    with pytest.raises(SystemExit, match=r"pointgeo view: .*bad\.xyz"):
        main(["view", str(checkpoint), "--file", str(bad), "--snapshot", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit, match="records no datamodule .* with --file"):
        main(["view", str(checkpoint), "--index", "0", "--snapshot", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["view", str(checkpoint), "--file", str(tmp_path / "missing.xyz"), "--snapshot", str(tmp_path / "x.png")])


def test_a_row_of_the_checkpoints_molecule_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--index``: a test row of the datamodule stored in the checkpoint, drawn with its reference forces."""
    import matplotlib.pyplot as plt

    from pointgeo.datamodules import MoleculeDataModule
    from pointgeo.datamodules.ase_readers import write_aselmdb

    g = torch.Generator().manual_seed(5)
    rng = np.random.default_rng(5)
    molecules = []
    for _ in range(8):
        atoms = random_molecule(5, g)
        molecules.append({"numbers": atoms.numbers, "positions": atoms.positions, "energy": float(rng.normal()),
                          "forces": 0.03 * rng.normal(size=(5, 3)), "data": {"charge": 0, "spin": 1}})
    path = write_aselmdb(tmp_path / "mols.aselmdb", molecules)
    dm = MoleculeDataModule(str(path), val_fraction=0.25, test_fraction=0.25, cache=str(tmp_path / "cache"))
    dm.hparams["_class_path"] = "pointgeo.datamodules.MoleculeDataModule"  # what LightningCLI (pointgeo train) records
    task = PotentialTask("painn", network_kwargs={"channels": 8, "num_layers": 1, "num_basis": 4, "cutoff": 4.0})
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
                         limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "painn.ckpt")
    out = tmp_path / "row.png"
    main(["view", str(tmp_path / "painn.ckpt"), "--index", "1", "--snapshot", str(out), "--size", "600x200",
          "--n-rotations", "1", "--renderer", "matplotlib"])
    printed = capsys.readouterr().out
    assert printed.count("E = ") == 2 and "force eq. err" in printed
    image = plt.imread(out)[..., :3]
    assert image.shape[:2] == (200, 600)
    assert (np.abs(image - np.asarray(REFERENCE)).max(-1) < 0.1).sum() >= 5  # the row's reference forces
    with pytest.raises(SystemExit, match="--index 9 is outside the test split"):
        main(["view", str(tmp_path / "painn.ckpt"), "--index", "9", "--snapshot", str(out)])


def test_a_periodic_cif_keeps_its_lattice_and_rotates_it(checkpoint: Path, tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    from pointgeo.hub import from_pretrained
    from pointgeo.tasks.potential import predict_potential

    crystal = bulk("NaCl", "rocksalt", a=5.64) * (1, 1, 2)
    crystal.positions[0] += 0.1  # forces are not all zero by symmetry
    write(tmp_path / "nacl.cif", crystal)
    molecule = read_molecule(tmp_path / "nacl.cif")
    assert molecule.cell.shape == (1, 3, 3) and bool(molecule.pbc.all())
    task = from_pretrained(str(checkpoint)).eval()
    views = build_molecule_views(task, molecule, n_rotations=2, seed=0)
    periodic = float(predict_potential(task.net, Batch.from_data_list([molecule]))["energy"][0].detach())
    del molecule.cell, molecule.pbc
    isolated = float(predict_potential(task.net, Batch.from_data_list([molecule]))["energy"][0].detach())
    assert views[0].energy == pytest.approx(periodic, rel=0, abs=1e-4)
    assert abs(periodic - isolated) > 1e-3  # the lattice's images were seen
    for view in views[1:]:
        assert view.equivariance_error < 1e-4 and view.energy == pytest.approx(views[0].energy, rel=0, abs=1e-4)


def test_a_periodic_structure_draws_its_unit_cell(checkpoint: Path, tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    from pointgeo.hub import from_pretrained
    from pointgeo.viz.render_open3d import CELL_COLOUR
    from pointgeo.viz.snapshot import _matplotlib_molecule, _open3d

    crystal = bulk("NaCl", "rocksalt", a=5.64)  # a triclinic primitive cell: three different edge directions
    write(tmp_path / "nacl.cif", crystal)
    task = from_pretrained(str(checkpoint)).eval()
    molecule = read_molecule(tmp_path / "nacl.cif")  # the CIF reader lays the cell out in ASE's standard orientation
    views = build_molecule_views(task, molecule, n_rotations=2, seed=0)
    scene = molecule_scene(views)
    assert np.bincount(scene["line_cell"]).tolist() == [12, 12, 12]  # the 12 edges of each copy's cell
    starts, ends = scene["line_start"].reshape(3, 12, 3), scene["line_end"].reshape(3, 12, 3)
    extent = np.linalg.norm(views[0].pos[0]) / np.linalg.norm(scene["sphere_centre"][0])
    edges = (ends[0] - starts[0]) * extent  # Å: each lattice vector four times
    for vector in molecule.cell[0].double().numpy():
        assert np.isclose(edges, vector, rtol=0, atol=1e-5).all(-1).sum() == 4
    for i, view in enumerate(views[1:], start=1):  # the cell turns with the atoms
        np.testing.assert_allclose(starts[i], starts[0] @ view.rotation.T, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ends[i], ends[0] @ view.rotation.T, rtol=0, atol=1e-6)
    assert np.abs(np.concatenate([starts, ends])).max() <= 1.0 + 1e-9  # the cell fits the copy's unit sphere
    # the snapshot draws the edges: the same scene without them differs where they are, in the cell's colour
    import matplotlib.pyplot as plt

    bare = {k: v for k, v in scene.items() if not k.startswith("line_")}
    captions = ["a", "b", "c"]
    renders = {"matplotlib": lambda s, out: _matplotlib_molecule(s, captions, out, 900, 300),
               "open3d": lambda s, out: _open3d({**s, "up": np.asarray(2)}, captions, [False] * 3, out, 900, 300,
                                                120.0)}
    for name, render in renders.items():
        if render(scene, tmp_path / f"{name}_cell.png") is False:
            continue  # Open3D cannot render here: the matplotlib fallback is what the snapshot uses
        render(bare, tmp_path / f"{name}_bare.png")
        with_cell, without = (plt.imread(tmp_path / f"{name}_{k}.png")[..., :3] for k in ("cell", "bare"))
        changed = np.abs(with_cell - without).max(-1) > 0.2
        assert changed.sum() >= 300, name
        assert (np.abs(with_cell[changed] - np.asarray(CELL_COLOUR)).max(-1) < 0.25).mean() > 0.5, name
