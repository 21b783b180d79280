"""The CDVAE crystal datamodule on rows of the official perov_5, carbon_24 and mp_20 CSVs: CDVAE's preprocessing
checked against pymatgen, scalers fitted on training only, rotations of the cell alone, the processed cache, the
verified download, and one clear error for each kind of bad row."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from local_server import RangeServer
from pointgeo.datamodules import crystals
from pointgeo.datamodules.crystals import (
    CrystalBenchmark,
    CrystalDataModule,
    CrystalRowError,
    lattice_features,
)
from pointgeo.datamodules.release import DatasetNotFoundError
from pointgeo.download import ChecksumError
from pointgeo.geometry import frac_to_cart, lattice_params_to_matrix


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def perov_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The first 48 / 24 / 24 rows of the official perov_5 subset's train / val / test files."""
    root = tmp_path_factory.mktemp("perov_5")
    for split, n in (("train", 48), ("val", 24), ("test", 24)):
        header, rows = read_rows(shared_data / "cdvae" / "perov_5_dev" / f"{split}.csv")
        write_rows(root / f"{split}.csv", header, rows[:n])
    return root


def module(root: Path, tmp_path: Path, **kwargs) -> CrystalDataModule:
    return CrystalDataModule(root=str(root), download=False, cache=str(tmp_path / "cache"), **kwargs)


def structure_of(z: np.ndarray, frac: np.ndarray, cell: np.ndarray) -> Structure:
    return Structure(Lattice(cell), z.tolist(), frac, coords_are_cartesian=False)


def test_crystals_equal_the_official_cifs_after_niggli_reduction(perov_root: Path, tmp_path: Path) -> None:
    dm = module(perov_root, tmp_path, batch_size=16, dtype="float64")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 16 and batch.cell.shape == (16, 3, 3) and batch.y.shape == (16, 1)
    assert torch.equal(batch.natoms, torch.full((16,), 5))
    _, rows = read_rows(perov_root / "train.csv")
    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    for k in range(16):
        sel = batch.batch == k
        row = rows[int(batch.index[k])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            official = Structure.from_str(row["cif"], fmt="cif")
        ours = structure_of(batch.z[sel].numpy(), batch.frac_coords[sel].numpy(), batch.cell[k].numpy())
        rms = matcher.get_rms_dist(ours, official)
        assert rms is not None and rms[0] < 1e-6, f"row {row['material_id']}: rms {rms}"
        reduced = official.get_reduced_structure()
        assert np.allclose(batch.lengths[k].numpy(), reduced.lattice.abc, rtol=0, atol=1e-8)
        assert np.allclose(batch.cell[k].numpy(), Lattice.from_parameters(*reduced.lattice.parameters).matrix,
                           rtol=0, atol=1e-10)
        assert float(batch.y[k, 0]) == float(row["heat_ref"])
        assert ours.composition == official.composition
    lengths = batch.lengths
    assert (lengths[:, 0] <= lengths[:, 1] + 1e-9).all() and (lengths[:, 1] <= lengths[:, 2] + 1e-9).all()  # Niggli


def test_scalers_are_fitted_on_the_training_split_and_saved(perov_root: Path, tmp_path: Path) -> None:
    dm = module(perov_root, tmp_path)
    dm.setup()
    train = dm.split_arrays("train")
    natoms = torch.from_numpy(train["natoms"]).double()[:, None]
    feats = torch.cat([torch.from_numpy(train["lengths"]) / natoms ** (1 / 3), torch.from_numpy(train["angles"])], 1)
    assert torch.allclose(dm.lattice_scaler.mean, feats.mean(0), rtol=0, atol=1e-10)
    assert torch.allclose(dm.lattice_scaler.std, feats.std(0, correction=0) + 1e-5, rtol=0, atol=1e-10)
    y = torch.from_numpy(train["y"])
    assert torch.allclose(dm.property_scaler.std, y.std(0, correction=0) + 1e-5, rtol=0, atol=1e-12)
    val_y = torch.from_numpy(dm.split_arrays("val")["y"])
    assert not torch.allclose(dm.property_scaler.mean, val_y.mean(0), rtol=0, atol=1e-6)  # not fitted on val
    scaled = dm.property_scaler.transform(y)
    assert torch.allclose(scaled.mean(0), torch.zeros(1, dtype=torch.float64), rtol=0, atol=1e-10)
    assert torch.allclose(dm.property_scaler.inverse_transform(scaled), y, rtol=0, atol=1e-12)
    feats_again = lattice_features(torch.from_numpy(train["lengths"]), torch.from_numpy(train["angles"]),
                                   torch.from_numpy(train["natoms"]))
    assert torch.allclose(feats_again, feats, rtol=0, atol=0)
    tested = module(perov_root / "nowhere", tmp_path)
    tested.setup("test")  # testing reads no training file
    assert tested.lattice_scaler is None
    restored = module(perov_root, tmp_path)
    restored.load_state_dict(dm.state_dict())
    assert torch.equal(restored.lattice_scaler.mean, dm.lattice_scaler.mean)
    assert torch.equal(restored.property_scaler.std, dm.property_scaler.std)


def test_rotation_turns_the_cell_and_never_the_fractional_coordinates(perov_root: Path, tmp_path: Path) -> None:
    plain = module(perov_root, tmp_path, dtype="float64").dataset("test")
    turned = module(perov_root, tmp_path, dtype="float64", test_rotation="so3").dataset("test")
    a, b = plain[3], turned[3]
    assert torch.equal(a.frac_coords, b.frac_coords) and torch.equal(a.lengths, b.lengths)
    rot = torch.linalg.solve(a.cell[0], b.cell[0])  # b = a R^T
    assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    pa, pb = frac_to_cart(a.frac_coords, a.cell[0]), frac_to_cart(b.frac_coords, b.cell[0])
    assert torch.allclose(pa @ pa.T, pb @ pb.T, rtol=0, atol=1e-10)  # same crystal, turned
    assert torch.equal(turned[3].cell, b.cell), "validation/test rotations are fixed per row"
    assert not torch.allclose(a.cell, b.cell, rtol=0, atol=1e-3)


def test_other_benchmarks_and_properties(shared_data: Path, tmp_path: Path) -> None:
    carbon_header, carbon = read_rows(shared_data / "cdvae" / "carbon_24" / "test.csv")
    root = tmp_path / "carbon"
    for split in ("train", "val", "test"):
        write_rows(root / f"{split}.csv", carbon_header, carbon[:6])
    dm = module(root, tmp_path, dataset="carbon_24")
    arrays = dm.split_arrays("test")
    assert dm.properties == ["energy_per_atom"] and set(arrays["z"].tolist()) == {6}
    assert (arrays["natoms"] >= 6).all() and (arrays["natoms"] <= 24).all()
    mp = module(shared_data / "cdvae" / "mp_20", tmp_path, dataset="mp_20", properties=["band_gap", "e_above_hull"])
    arrays = mp.split_arrays("test")
    assert arrays["y"].shape == (4, 2) and arrays["material_id"][0].startswith(("mp-", "mvc-"))


def test_processed_cache_is_reused_keyed_by_settings_and_rebuilt_when_corrupt(
        perov_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = module(perov_root, tmp_path).split_arrays("val")
    files = sorted((tmp_path / "cache" / "processed").glob("perov_5_val_*.npz"))
    assert len(files) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(crystals, "process_csv", refuse)
        again = module(perov_root, tmp_path).split_arrays("val")
    assert all(np.array_equal(first[k], again[k]) for k in first)
    module(perov_root, tmp_path, niggli=False).split_arrays("val")
    assert len(list((tmp_path / "cache" / "processed").glob("perov_5_val_*.npz"))) == 2, "other settings, other file"
    files[0].write_bytes(files[0].read_bytes()[:200])  # truncated
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = module(perov_root, tmp_path).split_arrays("val")
    assert all(np.array_equal(first[k], rebuilt[k]) for k in first)
    assert not list((tmp_path / "cache" / "processed").glob(".*"))  # no temporary file left behind


def test_missing_files_offline_name_the_url_and_the_place(tmp_path: Path) -> None:
    dm = CrystalDataModule(root=str(tmp_path / "nowhere"), cache=str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        dm.split_arrays("train")
    message = str(info.value)
    assert "POINTGEO_OFFLINE" in message and str(tmp_path / "nowhere" / "train.csv") in message
    assert crystals.BENCHMARKS["perov_5"].url("train") in message and crystals.CDVAE_COMMIT in message


def test_download_is_verified_against_the_official_sha256(shared_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POINTGEO_OFFLINE", raising=False)
    server = RangeServer((shared_data / "cdvae" / "perov_5" / "test.csv").read_bytes())
    try:
        monkeypatch.setattr(CrystalBenchmark, "url", lambda self, split: server.url)
        dm = CrystalDataModule(root=str(tmp_path / "perov"), cache=str(tmp_path / "cache"))
        path = dm.csv_path("test")  # the official test file: its sha256 is the one listed
        assert path == tmp_path / "perov" / "test.csv" and path.stat().st_size == 3671842
        server.corrupt = True
        with pytest.raises(ChecksumError, match=crystals.BENCHMARKS["perov_5"].sha256["val"]):
            dm.csv_path("val")  # the test file served as val.csv: wrong hash, refused
        assert not (tmp_path / "perov" / "val.csv").exists()
    finally:
        server.close()


def bad_root(tmp_path: Path, shared_data: Path, edit) -> Path:
    header, rows = read_rows(shared_data / "cdvae" / "perov_5_dev" / "test.csv")
    rows = [dict(r) for r in rows[:3]]
    edit(rows[1])
    root = tmp_path / "bad"
    write_rows(root / "test.csv", header, rows)
    return root


def _overlap(row: dict[str, str]) -> None:
    lines = row["cif"].rstrip("\n").split("\n")
    atom = lines[-1].split()
    atom[1] = atom[1] + "x"
    atom[3] = f"{float(atom[3]) + 0.02:.6f}"  # 0.02 of a ~4 Å cell from its original: ~0.08 Å
    row["cif"] = "\n".join([*lines, "  " + "  ".join(atom)]) + "\n"


def _element(row: dict[str, str]) -> None:
    lines = row["cif"].rstrip("\n").split("\n")
    fields = lines[-1].split()
    fields[0] = "Xq"
    row["cif"] = "\n".join([*lines[:-1], "  " + "  ".join(fields)]) + "\n"


def _singular(row: dict[str, str]) -> None:
    for angle in ("alpha", "beta", "gamma"):
        start = row["cif"].index(f"_cell_angle_{angle}")
        end = row["cif"].index("\n", start)
        row["cif"] = row["cif"][:start] + f"_cell_angle_{angle}   120.00000000" + row["cif"][end:]


@pytest.mark.parametrize(("edit", "kwargs", "match"), [
    (lambda r: r.update(cif="this is not a CIF"), {}, "pymatgen cannot parse"),
    (_overlap, {}, r"overlapping atoms"),
    (_element, {}, r"element|cannot parse"),
    (_singular, {}, r"singular or has a negative volume"),
    (lambda r: None, {"max_atoms": 4}, r"5 atoms, more than max_atoms=4"),
    (lambda r: r.update(heat_ref="n/a"), {}, r"property 'heat_ref' is 'n/a', not a number"),
])
def test_bad_rows_raise_one_clear_error_naming_the_row(shared_data: Path, tmp_path: Path, edit, kwargs: dict,
                                                       match: str) -> None:
    root = bad_root(tmp_path, shared_data, edit)
    with pytest.raises(CrystalRowError, match=match) as info:
        module(root, tmp_path, **kwargs).split_arrays("test")
    message = str(info.value)
    assert "row 1 " in message or "row 0 " in message, message  # max_atoms fails on the first row already
    assert str(root / "test.csv") in message


def test_unknown_property_column_lists_the_columns(perov_root: Path, tmp_path: Path) -> None:
    with pytest.raises(CrystalRowError, match=r"unknown property column\(s\) \['band_gap'\].*'heat_ref'"):
        module(perov_root, tmp_path, properties=["band_gap"]).split_arrays("test")


def test_vocabulary_limit_names_the_element(perov_root: Path, tmp_path: Path) -> None:
    with pytest.raises(CrystalRowError, match=r"row 0 .*outside the vocabulary Z = 1..20"):
        module(perov_root, tmp_path, max_z=20).split_arrays("test")


def test_cells_are_rebuilt_in_pymatgens_convention(perov_root: Path, tmp_path: Path) -> None:
    dataset = module(perov_root, tmp_path, dtype="float64").dataset("val")
    expected = lattice_params_to_matrix(torch.from_numpy(dataset.arrays["lengths"]),
                                        torch.from_numpy(dataset.arrays["angles"]))
    assert torch.equal(torch.stack([dataset[i].cell[0] for i in range(len(dataset))]), expected)


def test_fuzzed_files_raise_only_dataset_file_errors(shared_data: Path, tmp_path: Path) -> None:
    header, rows = read_rows(shared_data / "cdvae" / "perov_5_dev" / "test.csv")
    seed = write_rows(tmp_path / "seed.csv", header, rows[:4]).read_bytes()
    rng = np.random.default_rng(0)
    outcomes = []
    for k in range(12):
        data = bytearray(seed)
        if k % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]  # truncated
        else:
            for at in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
                data[at] = int(rng.integers(0, 256) if k % 3 == 2 else rng.integers(32, 127))  # any / ASCII
        root = tmp_path / f"fuzz{k}"
        root.mkdir()
        (root / "test.csv").write_bytes(bytes(data))
        try:
            outcomes.append(len(module(root, tmp_path).split_arrays("test")["natoms"]))
        except crystals.DatasetFileError as exc:  # CrystalRowError is one too
            outcomes.append(type(exc).__name__)
    assert "CrystalRowError" in outcomes and "DatasetFileError" in outcomes, outcomes
