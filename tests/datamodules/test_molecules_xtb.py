"""The OMol25-like set generator: GFN2-xTB labels through tblite, written as .aselmdb in OMol25's conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from tblite.ase import TBLite

from pointgeo.datamodules import MoleculeDataModule
from pointgeo.datamodules.ase_readers import AseDbReader
from pointgeo.datamodules.xtb_generate import generate_xtb_set, main


SMALL = ["H2O", "CH4", "NH3", "C2H4", "CO2", "HCN", "CH3OH", "H2CO", "CH3", "OH"]
SETTINGS = {"seed": 7, "shard_size": 5, "molecules": SMALL, "md_fraction": 0.5, "md_steps": 2, "dimer_fraction": 0.3,
            "progress": False}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("xtb") / "train"
    return out, generate_xtb_set(out, 8, **SETTINGS)


def test_generated_set_is_omol25_shaped_and_labelled_by_xtb(generated: tuple[Path, object]) -> None:
    out, report = generated
    assert report.written == 8 and report.shards == ["data0000.aselmdb", "data0001.aselmdb"]
    assert sorted(p.name for p in out.iterdir()) == ["data0000.aselmdb", "data0001.aselmdb", "metadata.npz"]
    assert sum(report.per_data_id.values()) == 8 and set(report.per_data_id) == {"g2_perturbed", "g2_md", "g2_dimer"}
    reader = AseDbReader(out)  # OMol25's default convention: charge and spin (2S+1) in the row's data
    meta = reader.metadata()
    assert len(reader) == 8 and meta["natoms"].sum() == sum(len(reader.record(i).z) for i in range(8))
    for i in range(8):
        rec = reader.record(i)
        row = reader.row(i)
        assert set(row.data) == {"charge", "spin", "data_id", "source", "method"}
        assert rec.data_id == meta["data_ids"][i] and rec.data_id in ("g2_perturbed", "g2_md", "g2_dimer")
        electrons = int(rec.z.sum()) - rec.charge
        assert (rec.spin - 1) % 2 == electrons % 2  # multiplicity consistent with the electron count
        assert row.calculator == "unknown" and rec.forces.shape == rec.pos.shape  # a single-point result
    # the stored labels are GFN2-xTB's for that charge and multiplicity
    rec = reader.record(0)
    atoms = Atoms(numbers=rec.z, positions=rec.pos)
    atoms.calc = TBLite(method="GFN2-xTB", charge=rec.charge, multiplicity=rec.spin, verbosity=0)
    assert abs(atoms.get_potential_energy() - rec.energy) < 1e-6
    # forces converge linearly in the SCF error (energies quadratically): equal to the SCF tolerance
    assert np.allclose(atoms.get_forces(), rec.forces, rtol=0, atol=1e-4)


def test_generation_is_seeded_and_trains_through_the_datamodule(generated: tuple[Path, object],
                                                                 tmp_path: Path) -> None:
    out, _ = generated
    again = generate_xtb_set(tmp_path / "again", 8, **SETTINGS)
    a, b = AseDbReader(out), AseDbReader(again.out)
    for i in range(8):  # the same structures, charges and spins; labels equal to the SCF tolerance
        ra, rb = a.record(i), b.record(i)
        assert np.array_equal(ra.z, rb.z) and (ra.charge, ra.spin, ra.data_id) == (rb.charge, rb.spin, rb.data_id)
        assert np.allclose(ra.pos, rb.pos, rtol=0, atol=1e-6)  # MD frames follow forces, equal to 1e-4 eV/A
        assert abs(ra.energy - rb.energy) < 1e-6 and np.allclose(ra.forces, rb.forces, rtol=0, atol=1e-4)
    dm = MoleculeDataModule(str(out), val_fraction=0.25, test_fraction=0.0, max_atoms=40)
    dm.setup()
    assert dm.split_sizes() == {"train": 6, "val": 2, "test": 0}
    batch = next(iter(dm.train_dataloader()))
    assert int(batch.natoms.sum()) <= 40 and batch.forces.shape == batch.pos.shape


def test_non_converged_structures_are_skipped_and_nothing_is_left_half_written(tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(RuntimeError, match=r"only 0 of 2 structures converged in 6 draws \(6 SCF failures\)"):
        generate_xtb_set(out, 2, molecules=["C6H6"], max_iterations=1, md_fraction=0.0, dimer_fraction=0.0,
                         progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"molecules \['unobtainium'\] are not in ase.collections.g2"):
        generate_xtb_set(out, 2, molecules=["unobtainium"], progress=False)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match=r"taken already exists; pass overwrite=True"):
        generate_xtb_set(tmp_path / "taken", 1, progress=False)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = main(["--out", str(tmp_path / "cli"), "--num", "3", "--seed", "1", "--molecules", "H2O", "CH4", "NH3",
                   "--md-fraction", "0", "--dimer-fraction", "0", "--no-progress"])
    assert report.written == 3 and len(AseDbReader(tmp_path / "cli")) == 3
    assert "wrote 3 structures in 1 shard(s)" in capsys.readouterr().out
