"""Molecule readers: the real .aselmdb / SQLite / JSON samples, fixtures written by the reference LMDB writer, and
one clear error for each kind of bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ase.db as ase_db
from ase_db_backends.aselmdb import LMDBDatabase

from pointgeo.datamodules.ase_readers import (
    AseDbReader,
    MoleculeRowError,
    RowConvention,
    find_shards,
    natoms_of,
    write_aselmdb,
)
from pointgeo.datamodules.molecules import build_index, record_to_data
from pointgeo.datamodules.readers import DatasetFileError

SPOOKY = RowConvention(charge_key="total_charge", spin_key="spin_multiplicity", spin_convention="unpaired")


@pytest.fixture(scope="module")
def derived(shared_data: Path) -> Path:
    return shared_data / "ase_db" / "derived_aselmdb" / "spookynet_carbene_ag3_sample.aselmdb"


def write_lmdb(path: Path, molecules: list[dict]) -> Path:
    """Write rows with the reference ASE-LMDB writer (ase-db-backends) through pointgeo's atomic wrapper."""
    return write_aselmdb(path, molecules)


def water(shift: float = 0.0, charge: int = 0, spin: int = 1, **extra) -> dict:
    pos = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.9266, 0.0]]) + shift
    forces = np.arange(9, dtype=np.float64).reshape(3, 3) / 10 - 0.4
    return {"numbers": [8, 1, 1], "positions": pos, "energy": -2079.5 + shift, "forces": forces,
            "data": {"charge": charge, "spin": spin}, **extra}


def test_derived_aselmdb_is_read_identically_to_ase_with_ase_db_backends(derived: Path, tmp_path: Path) -> None:
    reader = AseDbReader(derived)
    # LMDB opens a file once per process, so ASE reads a byte-identical copy
    copy = tmp_path / derived.name
    shutil.copy(derived, copy)
    assert copy.read_bytes() == derived.read_bytes()
    reference = ase_db.connect(str(copy), type="aselmdb", readonly=True)
    rows = list(reference.select())
    assert len(reader) == len(rows) == 100
    charges, spins = [], []
    for i, row in enumerate(rows):
        rec = reader.record(i)
        assert np.array_equal(rec.z, row.numbers)
        assert np.array_equal(rec.pos, row.positions)
        assert rec.energy == row.energy
        assert np.array_equal(rec.forces, row.forces)
        assert rec.charge == row.data["charge"] and rec.spin == row.data["spin"]
        assert np.array_equal(rec.pbc, row.pbc) and rec.cell is None
        data = record_to_data(rec, i, dtype=torch.float64)  # and the graph carries the same values
        assert torch.equal(data.pos, torch.from_numpy(row.positions))
        assert torch.equal(data.forces, torch.from_numpy(row.forces))
        assert data.energy.item() == row.energy and data.charge.item() == row.data["charge"]
        assert data.spin.item() == row.data["spin"] and data.natoms.item() == row.natoms
        charges.append(rec.charge)
        spins.append(rec.spin)
    # never silently zero: the sample holds 30 anions and 20 cations (ASE's own row.charge sums the initial
    # atomic charges and says 0 for every row, which is the trap this reader avoids)
    assert dict(zip(*np.unique(charges, return_counts=True))) == {-1: 30, 0: 50, 1: 20}
    assert dict(zip(*np.unique(spins, return_counts=True))) == {1: 75, 3: 25}
    assert all(row.charge == 0 for row in rows)


def test_reference_writer_fixtures_with_gaps_shards_metadata_and_periodic_rows(tmp_path: Path) -> None:
    split = tmp_path / "train_4M"
    split.mkdir()
    cell = np.array([[10.0, 0.0, 0.0], [1.0, 11.0, 0.0], [0.0, 0.5, 12.0]])
    write_lmdb(split / "data0000.aselmdb", [water(0.0), water(1.0, charge=-1, spin=2), water(2.0)])
    write_lmdb(split / "data0001.aselmdb", [
        water(3.0, data={"charge": 2, "spin": 3, "data_id": "elytes"}, cell=cell, pbc=[True, True, False]),
        {"numbers": [6, 1, 1, 1, 1], "positions": np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                                             [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]], float),
         "energy": -1100.25, "forces": np.zeros((5, 3)), "key_value_pairs": {"charge": 1, "spin": 2}},
    ])
    db = LMDBDatabase(split / "data0000.aselmdb", readonly=False)  # delete row 2: ids 1, 3 remain
    db.delete([2])
    db.close()
    Path(f"{split / 'data0000.aselmdb'}-lock").unlink(missing_ok=True)

    assert [p.name for p in find_shards(split)] == ["data0000.aselmdb", "data0001.aselmdb"]
    reader = AseDbReader(split)
    assert len(reader) == 4
    assert reader.where(1).endswith("data0000.aselmdb row 3")
    recs = [reader.record(i) for i in range(4)]
    assert [r.energy for r in recs] == [-2079.5, -2077.5, -2076.5, -1100.25]
    assert [(r.charge, r.spin) for r in recs] == [(0, 1), (0, 1), (2, 3), (1, 2)]  # kvp charge/spin read too
    assert recs[2].data_id == "elytes" and recs[0].data_id is None
    assert np.array_equal(recs[2].cell, cell) and recs[2].pbc.tolist() == [True, True, False]
    data = record_to_data(recs[2], 2, dtype=torch.float64)
    assert data.cell.shape == (1, 3, 3) and data.pbc.tolist() == [[True, True, False]]
    assert natoms_of(reader).tolist() == [3, 3, 3, 5]  # read from the rows: no metadata.npz yet

    np.savez(split / "metadata.npz", natoms=np.array([3, 3, 3, 5]), data_ids=np.array(["a", "a", "b", "b"]))
    assert natoms_of(reader).tolist() == [3, 3, 3, 5]
    assert reader.metadata()["data_ids"].tolist() == ["a", "a", "b", "b"]
    np.savez(split / "metadata.npz", natoms=np.array([3, 3, 3]))
    with pytest.raises(DatasetFileError, match=r"metadata.npz: 'natoms' has 3 entries but the shards hold 4 rows"):
        reader.metadata()


def test_spookynet_sqlite_samples_with_the_2s_convention(shared_data: Path) -> None:
    folder = shared_data / "ase_db" / "schnetpack"
    reader = AseDbReader([folder / "ase_carbene_2200.db", folder / "ase_ag3_2200.db"], SPOOKY)
    assert len(reader) == 4400
    picks = [0, 1, 7, 1500, 2200, 2201, 4399]
    reference = {"carbene": ase_db.connect(str(folder / "ase_carbene_2200.db")),
                 "ag3": ase_db.connect(str(folder / "ase_ag3_2200.db"))}
    for i in picks:
        rec = reader.record(i)
        row = reference["carbene" if i < 2200 else "ag3"].get(id=i % 2200 + 1)
        assert rec.spin == int(row.data["spin_multiplicity"][0]) + 1  # stored 2S, read as 2S+1
        assert rec.charge == int(row.data["total_charge"][0])
        assert rec.energy == float(row.data["energy"][0])
        assert np.array_equal(rec.forces, row.data["forces"].astype(np.float64))
    ag3 = AseDbReader(folder / "ase_ag3_2200.db", SPOOKY)
    assert sorted({ag3.record(i).charge for i in range(0, 2200, 37)}) == [-1, 1]
    carbene = AseDbReader(folder / "ase_carbene_2200.db", SPOOKY)
    assert sorted({carbene.record(i).spin for i in range(0, 2200, 37)}) == [1, 3]  # singlet and triplet CH2
    # read as if it stored 2S+1, the singlets (stored 0) are refused rather than taken as multiplicity 0
    with pytest.raises(MoleculeRowError, match="spin multiplicity 2S\\+1 must be >= 1; got 0.*spin_convention"):
        for i in range(40):
            AseDbReader(folder / "ase_carbene_2200.db", RowConvention(
                charge_key="total_charge", spin_key="spin_multiplicity")).record(i)


def test_other_ase_samples_load(shared_data: Path) -> None:
    base = shared_data / "ase_db"
    ethanol = AseDbReader(base / "schnetpack" / "test_ethanol.db",
                          RowConvention(default_charge=0, default_spin=1, energy_scale=0.0433641))
    rec = ethanol.record(0)
    assert len(ethanol) == 20 and rec.z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert -4300 < rec.energy < -4100  # MD17's kcal/mol (about -97 200) converted to eV
    qm9 = AseDbReader(base / "schnetpack" / "test_qm9.db", RowConvention(
        default_charge=0, default_spin=1, energy_key="energy_U0", require_forces=False))
    assert len(qm9) == 20 and qm9.record(3).forces is None and np.isfinite(qm9.record(3).energy)
    with pytest.raises(MoleculeRowError, match=r"test_qm9.db row 1: no forces .*require_forces=False"):
        AseDbReader(base / "schnetpack" / "test_qm9.db",
                    RowConvention(default_charge=0, default_spin=1, energy_key="energy_U0")).record(0)
    oc20 = AseDbReader(base / "fairchem" / "oc20_atoms.json", RowConvention(default_charge=0, default_spin=1))
    rec = oc20.record(0)
    row = ase_db.connect(str(base / "fairchem" / "oc20_atoms.json")).get(id=1)
    assert len(rec.z) == 34 and rec.pbc.all() and np.array_equal(rec.cell, np.asarray(row.cell))
    assert rec.energy == pytest.approx(-135.66393572, abs=1e-9) and np.array_equal(rec.forces, row.forces)


def test_missing_charge_or_spin_is_an_error_unless_a_default_is_set(tmp_path: Path) -> None:
    path = write_lmdb(tmp_path / "x.aselmdb", [water(data={"spin": 1}), water(data={"charge": 0})])
    with pytest.raises(MoleculeRowError, match=r"x.aselmdb row 1: no total charge .*default_charge"):
        AseDbReader(path).record(0)
    with pytest.raises(MoleculeRowError, match=r"x.aselmdb row 2: no spin .*default_spin \(a multiplicity"):
        AseDbReader(path).record(1)
    reader = AseDbReader(path, RowConvention(default_charge=0, default_spin=1))
    assert [(reader.record(i).charge, reader.record(i).spin) for i in range(2)] == [(0, 1), (0, 1)]
    with pytest.raises(ValueError, match="default_spin is a multiplicity"):
        RowConvention(default_spin=0)
    bad = write_lmdb(tmp_path / "y.aselmdb", [water(data={"charge": 0.5, "spin": 1})])
    with pytest.raises(MoleculeRowError, match=r"y.aselmdb row 1: charge 'charge' must be one integer; got 0.5"):
        AseDbReader(bad).record(0)


@pytest.mark.parametrize(("molecule", "message"), [
    ({**water(), "energy": None}, r"row 1: no energy"),
    ({k: v for k, v in water().items() if k != "forces"}, r"row 1: no forces .*energy-only"),
    ({**water(), "numbers": [8, 1, 0]}, r"row 1: unknown element \(atomic number 0 at atom 2\)"),
    ({**water(), "positions": np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [1.0, 0.0, 0.0]])},
     r"row 1: atoms 0 and 1 are 0.0500 Å apart, closer than 0.1 Å"),
    ({**water(), "positions": np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0], [1.0, 0.0, 0.0]])},
     r"row 1: atom 1 has NaN or inf coordinates"),
])
def test_bad_rows_name_the_file_and_row(tmp_path: Path, molecule: dict, message: str) -> None:
    molecule = {k: v for k, v in molecule.items() if v is not None}
    path = write_lmdb(tmp_path / "bad.aselmdb", [molecule])
    with pytest.raises(MoleculeRowError, match=message) as info:
        AseDbReader(path).record(0)
    assert "bad.aselmdb" in str(info.value)


def test_energy_only_mode_accepts_rows_without_forces(tmp_path: Path) -> None:
    path = write_lmdb(tmp_path / "e.aselmdb", [{k: v for k, v in water().items() if k != "forces"}])
    rec = AseDbReader(path, RowConvention(require_forces=False)).record(0)
    assert rec.forces is None and rec.energy == -2079.5
    assert "forces" not in record_to_data(rec, 0)


def test_truncated_read_only_and_missing_shards(derived: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut" / "data0000.aselmdb"
    truncated.parent.mkdir()
    truncated.write_bytes(derived.read_bytes()[:5000])
    with pytest.raises(DatasetFileError, match=r"data0000.aselmdb is not a readable .aselmdb file: truncated \(5000 "):
        AseDbReader(truncated.parent)
    garbage = tmp_path / "garbage.aselmdb"
    garbage.write_bytes(b"not an lmdb file" * 100)
    with pytest.raises(DatasetFileError, match="garbage.aselmdb is not a readable .aselmdb file"):
        AseDbReader(garbage)

    # a shard on read-only media: opened read-only without a lock file, nothing is written beside it
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(derived, ro / "data0000.aselmdb")
    os.chmod(ro / "data0000.aselmdb", 0o444)
    os.chmod(ro, 0o555)
    try:
        reader = AseDbReader(ro)
        assert len(reader) == 100 and reader.record(99).z.tolist() == [47, 47, 47]
        assert sorted(p.name for p in ro.iterdir()) == ["data0000.aselmdb"]
    finally:
        os.chmod(ro, 0o755)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no shards here")
    with pytest.raises(DatasetFileError, match=r"empty holds no database shards"):
        AseDbReader(empty)
    with pytest.raises(DatasetFileError, match=r"missing does not exist"):
        AseDbReader(tmp_path / "missing")
    with pytest.raises(DatasetFileError, match=r"unknown database suffix '.xyz'"):
        (tmp_path / "a.xyz").write_text("3\n")
        AseDbReader(tmp_path / "a.xyz")


def test_index_cache_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good = write_lmdb(tmp_path / "good.aselmdb", [water(0.0), water(1.0, charge=1, spin=2)])
    index = build_index(AseDbReader(good), cache, arrays=True, progress=False)
    assert index["natoms"].tolist() == [3, 3] and index["charge"].tolist() == [0, 1]
    assert np.array_equal(index["pos"][3:], water(1.0)["positions"])
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("index_") and files[0].endswith(".npz")
    again = build_index(AseDbReader(good), cache, arrays=True, progress=False)  # read back from the cache
    assert np.array_equal(again["forces"], index["forces"])

    bad = write_lmdb(tmp_path / "bad.aselmdb", [water(0.0), {**water(2.0), "numbers": [8, 1, 200]}])
    with pytest.raises(MoleculeRowError, match=r"bad.aselmdb row 2: unknown element"):
        build_index(AseDbReader(bad), cache, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == files  # no partial or temporary file left behind
