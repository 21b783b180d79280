"""Model-specific behaviour of the potentials: input ranges, the frame gradient, TinvNN near degenerate
eigenvalues, and TransIP's contrastive objective and equivariance error."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import attach_frame_gradient
from pointgeo.nn.transip import contrastive_loss
from pointgeo.testing.potentials import learned_equivariance_error
from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks.potential import predict_potential
from pointgeo.testing.potentials import adversarial_molecule, measure_potential, molecule_batch, potential_test_batch

POTENTIALS = ["painn", "tinvnn_atoms", "transip"]


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **get_model_entry(name).test_kwargs).double()


@pytest.mark.parametrize("name", POTENTIALS)
def test_charge_spin_and_elements_outside_the_embedding_raise(name: str) -> None:
    net = build(name)
    water = adversarial_molecule("H2O")
    for charge, spin, match in [(11, 1, "total charge"), (0, 0, r"2S\+1"), (0, 12, "spin multiplicity")]:
        with pytest.raises(ValueError, match=match):
            predict_potential(net, molecule_batch([water], [charge], [spin]))
    batch = molecule_batch([water], [0], [1])
    batch.z = torch.tensor([8, 1, 101])
    with pytest.raises(ValueError, match="atomic numbers"):
        predict_potential(net, batch)
    del batch.charge
    with pytest.raises(ValueError, match="total charge and spin"):
        predict_potential(net, batch)


def test_atoms_too_close_and_nan_positions_raise() -> None:
    net = build("painn")
    water = adversarial_molecule("H2O")
    water.positions[2] = water.positions[0] + 0.05
    with pytest.raises(ValueError, match="closer than 0.1"):
        predict_potential(net, molecule_batch([water], [0], [1]))
    batch = potential_test_batch("random")
    batch.pos[3, 1] = float("nan")
    for name in POTENTIALS:
        with pytest.raises(ValueError, match="NaN"):
            predict_potential(build(name), batch)


def test_the_frame_gradient_equals_eigh_for_distinct_eigenvalues_and_is_finite_when_they_meet() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 3, generator=g, dtype=torch.float64)
    s = (a @ a.transpose(-1, -2)).requires_grad_()
    weights = torch.randn(5, 3, 3, generator=g, dtype=torch.float64)
    _, v = torch.linalg.eigh(s)
    (reference,) = torch.autograd.grad((v * weights).sum(), s)
    signs = torch.where(torch.rand(5, 1, 3, generator=g) < 0.5, -1.0, 1.0).double()  # any column signs
    frame = attach_frame_gradient(s, (v * signs).detach())
    (ours,) = torch.autograd.grad((frame * weights * signs).sum(), s)
    assert torch.allclose(ours, 0.5 * (reference + reference.transpose(-1, -2)), rtol=0, atol=1e-8)
    degenerate = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone().requires_grad_()
    frame = attach_frame_gradient(degenerate, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    (grad,) = torch.autograd.grad((frame * weights[:2]).sum(), degenerate)
    assert torch.isfinite(grad).all()


def test_tinvnn_near_degenerate_eigenvalues_error_grows_as_the_gap_closes() -> None:
    """Tetrahedral CH4 distorted by δ: the relative eigenvalue gap is ~δ; the invariance error and the stiffness
    of the forces grow as it closes (declared in the module docstring), and at δ = 0.1 Å it is within 1e-8."""
    net = build("tinvnn_atoms")
    g = torch.Generator().manual_seed(3)
    direction = torch.randn(5, 3, generator=g, dtype=torch.float64)
    errors = {}
    for delta in (1e-1, 1e-3, 1e-5):
        ch4 = adversarial_molecule("CH4")
        ch4.positions += (delta * direction).numpy()
        report = measure_potential(net, molecule_batch([ch4], [0], [1]))
        errors[delta] = max(report.forces.values())
    assert errors[1e-1] <= 1e-8, errors
    assert errors[1e-5] > 10 * errors[1e-1], errors


def test_transip_contrastive_training_lowers_the_latent_equivariance_error() -> None:
    net = build("transip")
    batch = potential_test_batch("random")
    before = learned_equivariance_error(net, batch, num_rotations=4)
    assert set(before) == {"energy", "energy_per_atom", "forces", "forces_relative", "latent"}
    assert before["energy"] > 1e-6 and before["forces_relative"] > 1e-4  # not equivariant by construction
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    from pointgeo.geometry import random_rotations

    for _ in range(30):
        loss = contrastive_loss(net, batch, random_rotations(batch.num_graphs, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = learned_equivariance_error(net, batch, num_rotations=4)
    assert after["latent"] < before["latent"], (before, after)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", POTENTIALS)
def test_a_single_atom_beside_a_molecule_gets_zero_force_and_leaves_the_others_finite(name: str,
                                                                                      dtype: torch.dtype) -> None:
    """g2 (and so the xTB sets) holds free atoms: their scatter matrix is zero, where TinvNN's frame gradient
    divided 0 by an underflowed 0 in float32 and the NaN spread through the force loss into the weights."""
    from ase import Atoms

    net = build(name).to(dtype)
    atom = Atoms("O", positions=[[0.3, -0.2, 0.1]])
    water = adversarial_molecule("H2O")
    out = predict_potential(net, molecule_batch([atom, water], [0, 0], [3, 1], dtype), create_graph=True)
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
    assert torch.allclose(out["forces"][0], torch.zeros(3, dtype=dtype), rtol=0, atol=1e-6)
    out["forces"].norm(dim=-1).sum().backward()  # the force loss's gradient reaches every weight, finite
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
