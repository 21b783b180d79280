"""Every registered crystal network is checked by :mod:`pointgeo.testing.crystals` for its symmetries.

In float64, on random triclinic crystals, cubic ones (simple cubic, CsCl, cubic perovskite, fcc), very skewed cells,
single-atom cells and real perov_5 rows: the encoder's latent and every head are invariant, and the decoder's score
equivariant and its type logits invariant, under rotations of the lattice, translations (mod the lattice),
permutations of atoms, unimodular changes of cell basis and a lattice vector added to one atom (≤ 1e-8 of the
outputs' scale). The outputs react to moving one atom (not a symmetry), the harness catches networks that break a
symmetry, and bad input (elements outside the vocabulary, too many atoms, singular or left-handed cells) raises one
ValueError naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from datamodules.crystals import Preprocessing, parse_cif
from pointgeo.geometry import lattice_params_to_matrix
from pointgeo.registry import create_model, get_model_entry, list_models
from pointgeo.testing.crystals import (
    CRYSTAL_CASES,
    TRANSFORMS,
    assert_crystal_symmetric,
    crystal_batch,
    crystal_cases,
    measure_crystal_symmetries,
    measure_sensitivity,
)

NETWORKS = list_models(task="crystal_generation")
TOL = 1e-8


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model(name, **get_model_entry(name).test_kwargs).double()
    net.set_scalers(torch.tensor([2.3, 2.3, 2.3, 90.0, 90.0, 90.0]), torch.tensor([0.3, 0.3, 0.3, 10.0, 10.0, 10.0]),
                    torch.zeros(net.num_properties), torch.ones(net.num_properties))
    return net


@pytest.fixture(scope="module")
def perov_rows(shared_data: Path):
    """The first 4 rows of the perov_5 subset's test split, preprocessed as the datamodule does."""
    with open(shared_data / "cdvae" / "perov_5_dev" / "test.csv", newline="") as fh:
        rows = [row for _, row in zip(range(4), csv.DictReader(fh))]
    crystals = []
    for r, row in enumerate(rows):
        z, frac, lengths, angles = parse_cif(row["cif"], Preprocessing(), f"row {r}")
        cell = lattice_params_to_matrix(torch.tensor(lengths), torch.tensor(angles))
        crystals.append((torch.tensor(frac), torch.tensor(z), cell))
    return crystal_batch(crystals)


def test_the_registry_has_a_crystal_network() -> None:
    assert "cdvae" in NETWORKS
    assert get_model_entry("cdvae").invariance == "equivariant"


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("kind", CRYSTAL_CASES)
def test_symmetries_on_adversarial_crystals(name: str, kind: str) -> None:
    errors = assert_crystal_symmetric(build(name), crystal_cases(kind), tol=TOL, trials=1)
    assert set(errors) == set(TRANSFORMS)
    assert {"mu", "log_var", "score", "type_logits", "head_lattice", "head_num_atoms"} <= set(errors["rotation"])


@pytest.mark.parametrize("name", NETWORKS)
def test_symmetries_on_real_perov_5_rows(name: str, perov_rows) -> None:
    assert_crystal_symmetric(build(name), perov_rows, tol=TOL, trials=1)


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("kind", ["random", "cubic", "skewed"])  # a single atom's only motion is a translation
def test_outputs_react_to_moving_an_atom(name: str, kind: str) -> None:
    sensitivity = measure_sensitivity(build(name), crystal_cases(kind))
    assert min(sensitivity.values()) > 1e-4, sensitivity


class _Broken(torch.nn.Module):
    """A CDVAE whose decoder breaks one symmetry on purpose."""

    def __init__(self, net: torch.nn.Module, how: str) -> None:
        super().__init__()
        self.net, self.how, self.latent_dim = net, how, net.latent_dim

    def encode(self, *args):
        return self.net.encode(*args)

    def heads(self, z):
        return self.net.heads(z)

    def decode(self, z, pos, types, cell, batch):
        score, logits = self.net.decode(z, pos, types, cell, batch)
        if self.how == "fixed_direction":  # a constant vector added: not rotation-equivariant
            return score + torch.tensor([0.1, 0.0, 0.0], dtype=score.dtype), logits
        if self.how == "absolute_position":  # depends on where the atoms are: not translation invariant
            return score, logits + 0.1 * pos.sum(-1, keepdim=True)
        return score, logits + 0.1 * torch.arange(pos.shape[0], dtype=logits.dtype).unsqueeze(-1)  # order-dependent


@pytest.mark.parametrize(("how", "broken"), [("fixed_direction", "rotation"), ("absolute_position", "translation"),
                                             ("atom_order", "permutation")])
def test_the_harness_catches_a_broken_symmetry(how: str, broken: str) -> None:
    net, batch = _Broken(build("cdvae"), how), crystal_cases("random")
    errors = measure_crystal_symmetries(net, batch, trials=1, transforms=[broken])
    assert max(errors[broken].values()) > 1e-3
    with pytest.raises(AssertionError, match=broken):
        assert_crystal_symmetric(net, batch, trials=1, transforms=[broken])


def test_bad_input_raises_one_clear_error() -> None:
    net = build("cdvae")
    batch = crystal_cases("random")
    args = (batch.frac_coords, batch.z, batch.cell, batch.batch)
    with pytest.raises(ValueError, match="atomic number 101, outside the model's vocabulary 1..100"):
        net.encode(args[0], torch.where(torch.arange(len(batch.z)) == 3, 101, batch.z), *args[2:])
    with pytest.raises(ValueError, match="atomic number 0"):
        net.encode(args[0], torch.zeros_like(batch.z), *args[2:])
    many = net.max_atoms + 1
    with pytest.raises(ValueError, match=f"crystal 0 has {many} atoms; the model takes 1..max_atoms={many - 1}"):
        net.encode(torch.rand(many, 3, dtype=torch.float64), torch.ones(many, dtype=torch.long), batch.cell[:1],
                   torch.zeros(many, dtype=torch.long))
    singular = batch.cell.clone()
    singular[1, 2] = singular[1, 0] + singular[1, 1]
    with pytest.raises(ValueError, match="cell of crystal 1 is singular or has a negative volume"):
        net.encode(args[0], args[1], singular, args[3])
    left = batch.cell.clone()
    left[2] = -left[2]
    with pytest.raises(ValueError, match="cell of crystal 2 is singular or has a negative volume"):
        net.decode(torch.zeros(3, net.latent_dim, dtype=torch.float64), args[0], args[1], left, args[3])
    with pytest.raises(ValueError, match="frac_coords contains NaN"):
        net.encode(torch.full_like(args[0], float("nan")), *args[1:])
