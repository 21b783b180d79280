"""Energy and force metrics equal their definitions (fairchem's OMol25 evaluator), overall and per data_id."""

from __future__ import annotations

import pytest
import torch

from pointgeo.metrics.potential import EnergyMAE, ForceCosine, ForceMAE


def test_energy_mae_in_mev_and_per_atom_overall_and_per_data_id() -> None:
    pred, target = torch.tensor([1.0, 2.0, 3.5]), torch.tensor([1.1, 2.0, 3.0])
    natoms = torch.tensor([2, 5, 10])
    ids = ["spice", "elytes", "spice"]
    mae, per_atom = EnergyMAE(), EnergyMAE(per_atom=True)
    mae.update(pred[:2], target[:2], natoms[:2], ids[:2])
    mae.update(pred[2:], target[2:], natoms[2:], ids[2:])  # accumulates over batches
    per_atom.update(pred, target, natoms, ids)
    out, out_atom = mae.compute(), per_atom.compute()
    assert float(out[""]) == pytest.approx((100 + 0 + 500) / 3)
    assert float(out["spice"]) == pytest.approx(300.0) and float(out["elytes"]) == pytest.approx(0.0)
    assert "biomolecules" not in out  # subsets without structures are not reported
    assert float(out_atom[""]) == pytest.approx((100 / 2 + 0 + 500 / 10) / 3)


def test_force_mae_is_over_all_atoms_and_components_and_cosine_over_atoms() -> None:
    pred = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
    target = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    index = torch.tensor([0, 0, 1])
    mae, cos = ForceMAE(data_ids=("a", "b")), ForceCosine(data_ids=("a", "b"))
    mae.update(pred, target, index, 2, ["a", "b"])
    cos.update(pred, target, index, 2, ["a", "b"])
    m, c = mae.compute(), cos.compute()
    assert float(m[""]) == pytest.approx(1000 * (0 + 2 + 1) / 9)
    assert float(m["a"]) == pytest.approx(1000 * 2 / 6) and float(m["b"]) == pytest.approx(1000 * 1 / 3)
    assert float(c[""]) == pytest.approx((1 + 0 + 1) / 3) and float(c["a"]) == pytest.approx(0.5)


def test_unknown_data_ids_count_overall_only_and_shapes_are_checked() -> None:
    mae = EnergyMAE(data_ids=("spice",))
    mae.update(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1]), ["mystery"])
    out = mae.compute()
    assert set(out) == {""} and float(out[""]) == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="one subset per structure"):
        mae.update(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([1, 1]), ["spice"])
    with pytest.raises(ValueError, match=r"forces must be \(N, 3\)"):
        ForceMAE().update(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 1)
