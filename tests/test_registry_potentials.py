"""Every registered potential is checked by the harness of :mod:`pointgeo.testing.potentials` for what it declares.

* ``invariant`` / ``equivariant``: energy invariant and forces equivariant under Haar rotations, translations and
  permutations within each molecule (norm-wise relative error ≤ 1e-8 in float64, ≤ 1e-3 in float32), on random
  molecules and on the adversarial ones (CO2, C6H6, CH4, SF6) with charge and spin, except the molecules a network
  declares ``not_guaranteed`` — which must really fail; forces equal the finite-difference gradient (≤ 1e-6) and
  have zero curl. ``approximate`` networks are measured and shown *not* to be exactly invariant.
* every potential: the direct force head is reported not conservative; a molecule's energy does not depend on its
  batch-mates; a state_dict round trip reproduces the outputs.
"""

from __future__ import annotations

import pytest
import torch

from pointgeo.registry import create_model, get_model_entry, list_models
from pointgeo.tasks.potential import predict_potential
from pointgeo.testing.potentials import (
    ADVERSARIAL_MOLECULES,
    assert_conservative,
    assert_potential_symmetric,
    measure_conservation,
    measure_potential,
    potential_test_batch,
)

POTENTIALS = list_models(task="potential")
EXACT = [n for n in POTENTIALS if get_model_entry(n).invariance in ("invariant", "equivariant")]


def build(name: str, dtype: torch.dtype = torch.float64, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**get_model_entry(name).test_kwargs, **kwargs}).to(dtype)


def batch_for(name: str, kind: str, dtype: torch.dtype) -> object:
    return potential_test_batch(kind, dtype, exclude=list(get_model_entry(name).not_guaranteed))


def test_the_three_families_are_registered() -> None:
    assert {"painn", "tinvnn_atoms", "transip"} <= set(POTENTIALS)
    assert get_model_entry("transip").invariance == "approximate"


@pytest.mark.parametrize("kind", ["random", "adversarial"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", EXACT)
def test_exact_potentials_pass_the_symmetry_harness(name: str, dtype: torch.dtype, kind: str) -> None:
    assert_potential_symmetric(build(name, dtype), batch_for(name, kind, dtype))


@pytest.mark.parametrize("kind", ["random", "adversarial"])
@pytest.mark.parametrize("name", EXACT)
def test_exact_potentials_forces_are_the_gradient_of_the_energy(name: str, kind: str) -> None:
    report = assert_conservative(build(name), batch_for(name, kind, torch.float64))
    assert report.fd_error <= 1e-6 and report.curl <= 1e-6


@pytest.mark.parametrize("name", [n for n in EXACT if get_model_entry(n).not_guaranteed])
def test_molecules_declared_outside_the_guarantee_are_documented_and_really_outside(name: str) -> None:
    declared = get_model_entry(name).not_guaranteed
    assert set(declared) <= set(ADVERSARIAL_MOLECULES) and all(declared.values())
    net = build(name)
    for molecule in declared:  # a molecule that passes belongs back in the guarantee
        batch = potential_test_batch("adversarial", exclude=[m for m in ADVERSARIAL_MOLECULES if m != molecule])
        report = measure_potential(net, batch)
        assert not report.within(), f"{name} passes on {molecule} ({report}): declare it guaranteed"


@pytest.mark.parametrize("name", POTENTIALS)
def test_the_direct_force_head_is_reported_not_conservative(name: str) -> None:
    net = build(name, direct_forces=True)
    batch = batch_for(name, "random", torch.float64)
    report = measure_conservation(net, batch)
    assert not report.conservative and "NOT conservative" in str(report)
    assert report.fd_error > 1e-2 and report.curl > 1e-3
    with pytest.raises(AssertionError, match="not conservative"):
        assert_conservative(net, batch)


@pytest.mark.parametrize("name", [n for n in POTENTIALS if get_model_entry(n).invariance == "approximate"])
def test_approximate_potentials_are_measurably_not_exact(name: str) -> None:
    report = measure_potential(build(name), potential_test_batch("random"))
    assert report.energy["rotation"] > 1e-6 and report.energy["translation"] <= 1e-8  # centred, not canonicalised


@pytest.mark.parametrize("name", POTENTIALS)
def test_energies_do_not_depend_on_batch_mates_and_survive_a_state_dict_round_trip(name: str) -> None:
    net = build(name).eval()
    batch = potential_test_batch("random")
    full = predict_potential(net, batch)
    for k, mol in enumerate(batch.to_data_list()):
        from torch_geometric.data import Batch

        alone = predict_potential(net, Batch.from_data_list([mol]))
        assert torch.allclose(alone["energy"], full["energy"][k : k + 1], rtol=0, atol=1e-10)
        sel = batch.batch == k
        assert torch.allclose(alone["forces"], full["forces"][sel], rtol=0, atol=1e-10)
    clone = build(name)
    for p in clone.parameters():
        p.data.add_(1.0)  # the round trip, not the seed, must restore the weights
    clone.load_state_dict(net.state_dict())
    assert torch.equal(predict_potential(clone.eval(), batch)["energy"], full["energy"])
