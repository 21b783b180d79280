"""CDVAE's crystal metrics on hand-worked examples, and on rows of the official perov_5 test file compared with
themselves (a perfect model: every crystal matched, RMSE 0, full coverage)."""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Element, Lattice, Structure

from pointgeo.metrics.crystals import (
    COV_CUTOFFS,
    Crystal,
    CrystalReconstruction,
    EvaluatedCrystal,
    build_structure,
    composition_validity,
    coverage,
    crystals_from_batch,
    evaluate,
    property_statistics,
    SR_THRESHOLDS,
    reconstruction,
    structure_validity,
    success_rates,
    validity,
)


def Z(*symbols: str) -> list[int]:
    return [Element(s).Z for s in symbols]


def cubic(symbols: list[str], frac: list[list[float]], a: float) -> Crystal:
    return Crystal(np.array(frac, dtype=float), np.array(Z(*symbols)), np.full(3, a), np.full(3, 90.0))


@pytest.mark.parametrize(("symbols", "expected", "why"), [
    (("Na", "Cl"), True, "Na+ Cl-"),
    (("Na", "Na", "Cl", "Cl"), True, "reduced by the gcd to NaCl"),
    (("Na", "Cl", "Cl"), False, "no integer oxidation states of Na and Cl balance NaCl2"),
    (("Fe", "Fe", "O", "O", "O"), True, "Fe3+ and O2-"),
    (("Fe", "Fe"), True, "one element"),
    (("Cu", "Zn"), True, "all metals: an alloy"),
    (("Li", "F", "F", "F"), False, "LiF3 needs F at -1/3"),
    (("H", "H", "H", "Cl"), False, "balanced only as H-(x3) Cl3+, which fails the Pauling test"),
])
def test_composition_validity_hand_worked(symbols: tuple[str, ...], expected: bool, why: str) -> None:
    assert composition_validity(Z(*symbols)) is expected, why


def test_the_pauling_test_is_what_refuses_h3cl() -> None:
    assert composition_validity(Z("H", "H", "H", "Cl"), use_pauling_test=False)
    assert not composition_validity(Z("Cu", "Zn"), include_alloys=False)  # no oxidation states balance CuZn alone


def test_structure_validity_and_construction_hand_worked() -> None:
    rock_salt = cubic(["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 2.82)  # 2.44 Å apart
    assert structure_validity(build_structure(rock_salt))
    across = cubic(["C", "C"], [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]], 10.0)  # 9.8 Å inside the cell, 0.2 Å periodic
    assert not structure_validity(build_structure(across))
    just = cubic(["C", "C"], [[0.0, 0.5, 0.5], [0.05, 0.5, 0.5]], 10.0)  # exactly 0.5 Å: still valid (>=)
    assert structure_validity(build_structure(just))
    single = cubic(["Fe"], [[0.0, 0.0, 0.0]], 1.0)  # its own images 1 Å away do not count; volume 1 Å^3
    assert structure_validity(build_structure(single))
    assert build_structure(cubic(["Fe"], [[0, 0, 0]], 0.4)) is None  # volume 0.064 Å^3 < 0.1: not constructed
    for bad_lengths in ([-2.0, 3, 3], [np.nan, 3, 3]):
        bad = Crystal(np.zeros((1, 3)), np.array([26]), np.array(bad_lengths), np.full(3, 90.0))
        assert build_structure(bad) is None
    nan_site = cubic(["Na", "Cl"], [[0, 0, 0], [0.5, np.nan, 0.5]], 2.82)  # a generator's NaN coordinate
    assert build_structure(nan_site) is None and not evaluate([nan_site])[0].struct_valid
    evaluated = evaluate([rock_salt, across, cubic(["Fe"], [[0, 0, 0]], 0.4), cubic(["Li", "F", "F", "F"],
                          [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], 4.0)])
    assert [e.valid for e in evaluated] == [True, False, False, False]
    assert validity(evaluated) == {"comp_valid": 0.75, "struct_valid": 0.5, "valid": 0.25}


def test_reconstruction_hand_worked() -> None:
    gt = cubic(["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 4.0)
    moved = cubic(["Cs", "Cl"], [[0, 0, 0], [0.5 + 0.1 / 4.0, 0.5, 0.5]], 4.0)  # Cl moved by 0.1 Å along x
    overlapping = cubic(["Cs", "Cl"], [[0, 0, 0], [0.01, 0.0, 0.0]], 4.0)  # invalid: a miss whatever it matches
    other = cubic(["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 4.0)  # another composition: no match
    preds, refs = evaluate([gt, moved, overlapping, other]), evaluate([gt] * 4)
    result = reconstruction(preds, refs)
    assert result["matched"] == 2 and result["match_rate"] == 0.5
    # after the best translation each atom is 0.05 Å off; pymatgen divides by (V / N)^(1/3) = (64 / 2)^(1/3)
    expected = (0 + 0.05 / 32 ** (1 / 3)) / 2
    assert math.isclose(result["rms_dist"], expected, rel_tol=0, abs_tol=1e-9)
    assert math.isnan(reconstruction(evaluate([other]), evaluate([gt]))["rms_dist"])
    with pytest.raises(ValueError, match="as many predictions"):
        reconstruction(preds, refs[:2])


def fingerprinted(struct_fp: list[float] | None, comp_fp: list[float] | None) -> EvaluatedCrystal:
    item = EvaluatedCrystal(Crystal(np.zeros((1, 3)), np.array([6]), np.ones(3), np.full(3, 90.0)), None, True, True)
    item.fingerprinted = True
    item.struct_fp = None if struct_fp is None else np.array(struct_fp, dtype=float)
    item.comp_fp = None if comp_fp is None else np.array(comp_fp, dtype=float)
    return item


def test_coverage_hand_worked_with_independent_minima() -> None:
    # x1 has y1's structure and x2 its composition: y1 is covered although no single x has both
    generated = [fingerprinted([0, 0], [10, 0]), fingerprinted([5, 0], [0, 0]), fingerprinted(None, None),
                 fingerprinted([0, 1.05], [0, 3.5])]
    reference = [fingerprinted([0, 0], [0, 0]), fingerprinted([0, 1], [0, 3])]
    got = coverage(generated, reference, *COV_CUTOFFS["perov_5"], composition_mean=np.zeros(2),
                   composition_std=np.ones(2))
    assert got["cov_recall"] == 1.0
    # x1: composition 10 away from everything; x2: structure 5 away; x3 has no fingerprint but counts in the
    # denominator; x4 is within (0.2, 4) of y2
    assert got["cov_precision"] == 0.25
    assert math.isclose(got["amsd_recall"], (0 + 0.05) / 2, rel_tol=0, abs_tol=1e-12)
    assert math.isclose(got["amcd_precision"], (10 + 0 + 0.5) / 3, rel_tol=0, abs_tol=1e-12)
    stricter = coverage(generated, reference, 0.01, 4.0, composition_mean=np.zeros(2), composition_std=np.ones(2))
    assert stricter["cov_recall"] == 0.5 and stricter["cov_precision"] == 0.0
    with pytest.raises(ValueError, match="none of the 1 generated"):
        coverage([fingerprinted(None, None)], reference, 0.2, 4.0)


def test_property_statistics_hand_worked() -> None:
    nacl = cubic(["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 2.82)
    cscl = cubic(["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 4.12)
    iron = cubic(["Fe"], [[0, 0, 0]], 2.87)
    rho = [build_structure(c).density for c in (nacl, cscl)]
    got = property_statistics(evaluate([nacl, nacl]), evaluate([nacl, cscl]), n_samples=2)
    assert math.isclose(got["wdist_density"], abs(rho[0] - rho[1]) / 2, rel_tol=1e-12, abs_tol=0)  # {a,a} vs {a,b}
    assert got["wdist_num_elems"] == 0.0
    assert property_statistics(evaluate([iron]), evaluate([nacl]), n_samples=1)["wdist_num_elems"] == 1.0
    with pytest.raises(ValueError, match="not enough valid"):
        property_statistics(evaluate([nacl]), evaluate([nacl]), n_samples=2)


class LatticeConstantModel:
    """A property model whose property is the first lattice length (NaN for a cell longer than 4 Å)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_property(self, crystals) -> np.ndarray:
        self.calls.append(len(crystals))
        return np.array([c.lengths[0] if c.lengths[0] < 4 else np.nan for c in crystals])


def test_property_emd_uses_the_model_on_both_sides_hand_worked() -> None:
    nacl = cubic(["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 2.82)
    kcl = cubic(["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 3.15)
    cscl = cubic(["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 4.12)
    model = LatticeConstantModel()
    got = property_statistics(evaluate([nacl, nacl]), evaluate([nacl, kcl, cscl]), n_samples=2,
                              property_model=model)
    # generated {2.82, 2.82}; reference {2.82, 3.15} (CsCl's NaN dropped): EMD = (3.15 - 2.82) / 2
    assert math.isclose(got["wdist_prop"], (3.15 - 2.82) / 2, rel_tol=1e-12, abs_tol=0)
    assert model.calls == [2, 3]
    assert "wdist_prop" not in property_statistics(evaluate([nacl]), evaluate([kcl]), n_samples=1)


def test_success_rates_hand_worked() -> None:
    # 3 runs (columns), 2 saved steps (rows); run 0's 0.2 is invalid, run 2 has no valid crystal
    props = np.array([[0.5, 0.3, 0.9], [0.2, 0.8, 0.7]])
    valid = np.array([[True, True, False], [False, True, False]])
    got = success_rates(props, valid, {"SR5": 0.4, "SR10": 0.6, "SR15": 1.0})
    assert got["best"] == [0.5, 0.3, math.inf]
    assert (got["SR5"], got["SR10"], got["SR15"]) == (1 / 3, 2 / 3, 2 / 3)
    perov = success_rates(np.array([[0.44, 0.4392, 0.7]]), np.ones((1, 3), bool), SR_THRESHOLDS["perov_5"])
    assert (perov["SR5"], perov["SR10"], perov["SR15"]) == (1 / 3, 2 / 3, 1.0)  # ≤ the percentile counts
    with pytest.raises(ValueError, match="same shape"):
        success_rates(props, valid[:1], {"SR5": 0.4})


@pytest.fixture(scope="module")
def perov_rows(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / "cdvae" / "perov_5" / "test.csv", newline="") as fh:
        return list(csv.DictReader(fh))[:16]  # a deterministic subset; the full file is measured in the README


def test_perfect_model_on_the_official_perov_5_test_rows(perov_rows: list[dict[str, str]], tmp_path: Path) -> None:
    from pointgeo.datamodules.crystals import CrystalDataModule

    root = tmp_path / "perov"
    root.mkdir()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(perov_rows[0]))
    writer.writeheader()
    writer.writerows(perov_rows)
    (root / "test.csv").write_text(buffer.getvalue())
    dm = CrystalDataModule(root=str(root), download=False, cache=str(tmp_path / "cache"), dtype="float64",
                           eval_batch_size=64)
    batch = next(iter(dm.test_dataloader()))  # the "model" outputs the test crystals themselves
    predictions = crystals_from_batch(batch.frac_coords, batch.z, batch.lengths, batch.angles, batch.natoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = [Structure.from_str(row["cif"], fmt="cif") for row in perov_rows]
    preds, refs = evaluate(predictions), evaluate(truth)
    scores = validity(refs)
    assert scores["struct_valid"] == 1.0 and scores["comp_valid"] >= 0.85, scores
    assert validity(preds) == scores
    result = reconstruction(preds, refs)
    assert result["match_rate"] == scores["valid"]  # every valid prediction matches; invalid ones are misses
    assert result["rms_dist"] < 1e-6
    every = reconstruction(preds, refs, require_valid=False)
    assert every["match_rate"] == 1.0 and every["rms_dist"] < 1e-6
    sub_p, sub_r = preds[:4], refs[:4]
    cov = coverage(sub_p, sub_r, *COV_CUTOFFS["perov_5"])
    assert cov["cov_recall"] == 1.0 and cov["cov_precision"] == 1.0
    assert cov["amsd_recall"] < 1e-6 and cov["amcd_recall"] < 1e-6
    valid_refs = [r for r in refs if r.valid]
    stats = property_statistics(preds, valid_refs, n_samples=len(valid_refs))  # the same crystals: distance 0
    assert stats["wdist_num_elems"] == 0.0 and stats["wdist_density"] < 1e-9


def as_batch(crystals: list[Crystal]) -> dict[str, torch.Tensor]:
    return {"frac_coords": torch.tensor(np.concatenate([c.frac_coords for c in crystals])),
            "z": torch.tensor(np.concatenate([c.atom_types for c in crystals])),
            "lengths": torch.tensor(np.stack([c.lengths for c in crystals])),
            "angles": torch.tensor(np.stack([c.angles for c in crystals])),
            "natoms": torch.tensor([len(c.atom_types) for c in crystals])}


def test_torchmetrics_reconstruction_equals_the_function_over_batches() -> None:
    gt = cubic(["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 4.0)
    moved = cubic(["Cs", "Cl"], [[0, 0, 0], [0.5 + 0.1 / 4.0, 0.5, 0.5]], 4.0)
    single = cubic(["Cs"], [[0, 0, 0]], 4.0)  # another atom count than its target: a miss
    metric = CrystalReconstruction()
    metric.update(as_batch([gt, moved]), as_batch([gt, gt]))
    metric.update(as_batch([single]), as_batch([gt]))
    got = metric.compute()
    expected = reconstruction(evaluate([gt, moved, single]), evaluate([gt, gt, gt]))
    assert math.isclose(float(got["match_rate"]), 2 / 3, rel_tol=0, abs_tol=1e-12)
    assert math.isclose(float(got["rms_dist"]), expected["rms_dist"], rel_tol=0, abs_tol=1e-12)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(ValueError, match="before any update"):
        metric.compute()


def test_crystals_from_batch_checks_shapes() -> None:
    frac, z = torch.zeros(3, 3), torch.tensor([6, 6, 8])
    crystals = crystals_from_batch(frac, z, torch.ones(2, 3), torch.full((2, 3), 90.0), torch.tensor([1, 2]))
    assert [len(c.atom_types) for c in crystals] == [1, 2] and crystals[1].atom_types.tolist() == [6, 8]
    with pytest.raises(ValueError, match="natoms sums to 4"):
        crystals_from_batch(frac, z, torch.ones(2, 3), torch.full((2, 3), 90.0), torch.tensor([2, 2]))


def test_a_crystal_built_from_a_pymatgen_lattice_round_trips() -> None:
    lattice = Lattice.from_parameters(3.1, 4.2, 5.3, 80.0, 95.0, 110.0)
    s = Structure(lattice, ["Si", "O"], [[0.1, 0.2, 0.3], [0.6, 0.5, 0.4]])
    built = build_structure(evaluate([s])[0].crystal)
    assert np.allclose(built.lattice.matrix, lattice.matrix, rtol=0, atol=1e-10)
    assert np.allclose(built.frac_coords, s.frac_coords, rtol=0, atol=0)
