"""The batched radius graph equals ASE's and vesin's neighbour lists (as sets of (i, j, S)), molecules and crystals."""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
import torch

import ase  # the dev extra installs ase and vesin (scripts/setup.sh dev)
import vesin
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from pointgeo.geometry import neighbor_list
from pointgeo.geometry.neighbor_list import DENSE_MAX_PAIRS

NL_MODULE = importlib.import_module("pointgeo.geometry.neighbor_list")  # the package exports the function by this name
from pointgeo.testing.potentials import ADVERSARIAL_MOLECULES, adversarial_molecule


def edge_set(i, j, s) -> set[tuple]:
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(s).tolist())))


def reference(atoms: ase.Atoms, cutoff: float) -> tuple[set, set]:
    i, j, s = ase_neighbor_list("ijS", atoms, cutoff)
    periodic = atoms.pbc.tolist() if atoms.pbc.any() else False
    box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    vi, vj, vs = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(atoms.positions, box, periodic, "ijS")
    return edge_set(i, j, s), edge_set(vi, vj, vs)


def ours_per_structure(structures: list[ase.Atoms], cutoff: float) -> tuple[list[set], object]:
    """Run one batched call over all structures and split the edges back per structure (local indices)."""
    pos = torch.tensor(np.concatenate([a.positions for a in structures]))
    batch = torch.cat([torch.full((len(a),), k) for k, a in enumerate(structures)])
    cell = torch.tensor(np.stack([a.cell.array for a in structures]))
    pbc = torch.tensor(np.stack([a.pbc for a in structures]))
    nl = neighbor_list(pos, cutoff, batch, cell=cell, pbc=pbc)
    start = torch.tensor([0] + np.cumsum([len(a) for a in structures]).tolist())
    sets = []
    for k in range(len(structures)):
        sel = batch[nl.edge_index[0]] == k
        i, j = nl.edge_index[:, sel] - start[k]
        sets.append(edge_set(i, j, nl.shifts[sel]))
    assert (batch[nl.edge_index[0]] == batch[nl.edge_index[1]]).all(), "an edge joins two structures"
    return sets, nl


def random_molecule(n: int, seed: int, spread: float = 3.0) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    return ase.Atoms("C" * n, positions=rng.normal(size=(n, 3)) * spread)


def degenerate_molecules() -> list[ase.Atoms]:
    line = ase.Atoms("C8", positions=[[1.1 * k, 0.0, 0.0] for k in range(8)])
    grid = ase.Atoms("C27", positions=[[1.5 * a, 1.5 * b, 1.5 * c] for a in range(3) for b in range(3) for c in range(3)])
    stacked = ase.Atoms("C3", positions=[[0.5, 0.5, 0.5]] * 3)  # coincident atoms: distance 0 < cutoff
    far = ase.Atoms("C4", positions=[[0, 0, 0], [1.0, 0, 0], [800.0, 0, 0], [800.0, 1.2, 0]])
    single = ase.Atoms("C", positions=[[0.0, 0.0, 0.0]])
    return [line, grid, stacked, far, single, *(adversarial_molecule(name) for name in ADVERSARIAL_MOLECULES)]


@pytest.fixture(params=["pair test", "cell list"])
def search(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each search: the pair test of small non-periodic batches, or the cell list for all."""
    if request.param == "cell list":
        monkeypatch.setattr(NL_MODULE, "DENSE_MAX_PAIRS", -1)
    else:
        monkeypatch.setattr(NL_MODULE, "_cell_list_pairs", _no_cell_list)
    return request.param


def _no_cell_list(*args: object) -> None:
    raise AssertionError("a small non-periodic batch reached the cell list")


@pytest.mark.parametrize("cutoff", [1.3, 2.55, 4.1])
def test_random_and_degenerate_molecules_match_ase_and_vesin(cutoff: float, search: str) -> None:
    structures = [random_molecule(n, seed) for seed, n in enumerate((2, 10, 35, 100))] + degenerate_molecules()
    ours, nl = ours_per_structure(structures, cutoff)
    for atoms, got in zip(structures, ours):
        from_ase, from_vesin = reference(atoms, cutoff)
        assert got == from_ase, f"{atoms.get_chemical_formula()}: differs from ASE"
        assert got == from_vesin, f"{atoms.get_chemical_formula()}: differs from vesin"
    assert (nl.distances < cutoff).all() and nl.shifts.eq(0).all()


def test_vectors_and_distances_equal_ase_and_are_sorted(search: str) -> None:
    atoms = random_molecule(60, 7)
    nl = neighbor_list(torch.tensor(atoms.positions), 3.0)
    i, j, d_vec, d = ase_neighbor_list("ijDd", atoms, 3.0)
    order = np.lexsort((j, i))
    assert torch.equal(nl.edge_index, torch.tensor(np.stack([i[order], j[order]])))
    assert torch.allclose(nl.vectors, torch.tensor(d_vec[order]), rtol=0, atol=1e-12)
    assert torch.allclose(nl.distances, torch.tensor(d[order]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sizes", [(1,), (10,), (2, 10, 35, 100, 1, 3), (350,), tuple(range(20, 151, 13))])
def test_the_pair_test_and_the_cell_list_return_identical_graphs(sizes: tuple[int, ...],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    structures = [random_molecule(n, seed, spread=0.8 * n ** (1 / 3)) for seed, n in enumerate(sizes)]
    structures += degenerate_molecules() if max(sizes) <= 150 else []
    pos = torch.tensor(np.concatenate([a.positions for a in structures]), requires_grad=True)
    batch = torch.cat([torch.full((len(a),), k) for k, a in enumerate(structures)])
    assert len(structures) * max(map(len, structures)) ** 2 <= DENSE_MAX_PAIRS  # the pair test's size
    dense = neighbor_list(pos, 4.0, batch)
    monkeypatch.setattr(NL_MODULE, "DENSE_MAX_PAIRS", -1)
    cells = neighbor_list(pos, 4.0, batch)
    for name in ("edge_index", "shifts", "vectors", "distances"):
        assert torch.equal(getattr(dense, name), getattr(cells, name)), name
    assert dense.edge_index.shape[1] > len(pos)  # not an empty graph
    grad, = torch.autograd.grad(dense.distances.sum(), pos)
    assert torch.equal(grad, torch.autograd.grad(cells.distances.sum(), pos)[0])  # forces flow the same way


def test_large_or_periodic_batches_use_the_cell_list(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = NL_MODULE._cell_list_pairs
    monkeypatch.setattr(NL_MODULE, "_cell_list_pairs", lambda *a: calls.append(len(a[0])) or original(*a))
    neighbor_list(torch.tensor(random_molecule(30, 0).positions), 3.0)
    assert calls == []
    big = int(DENSE_MAX_PAIRS**0.5) + 1
    neighbor_list(torch.rand(big, 3, dtype=torch.float64) * 30, 2.0)
    assert calls == [big]
    neighbor_list(torch.zeros(1, 3), 2.0, cell=torch.eye(3)[None] * 3, pbc=torch.ones(3, dtype=torch.bool))
    assert len(calls) == 2


def periodic_structures() -> list[ase.Atoms]:
    cu = bulk("Cu", "fcc", a=3.6) * (1, 1, 2)  # primitive triclinic cell, cutoff > cell
    si = bulk("Si", "diamond", a=5.43)
    al = bulk("Al", "fcc", a=4.05, orthorhombic=True)
    slab = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 1, 1)
    slab.center(vacuum=6.0, axis=2)
    slab.pbc = (True, True, False)
    skew = ase.Atoms("C2", positions=[[0.1, 0.2, 0.3], [1.4, 0.9, 0.7]],
                     cell=[[2.5, 0.0, 0.0], [1.9, 1.8, 0.0], [0.7, 0.4, 2.1]], pbc=True)
    structures = [cu, si, al, slab, skew]
    for k, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=k)
        atoms.positions += 4.7 * (k - 2)  # outside the cell: wrapping must keep the shifts right
    return structures


@pytest.mark.parametrize("cutoff", [3.0, 6.2])
def test_periodic_cells_match_ase_and_vesin_mixed_with_molecules(cutoff: float) -> None:
    structures = [*periodic_structures(), random_molecule(12, 3)]
    ours, nl = ours_per_structure(structures, cutoff)
    for atoms, got in zip(structures, ours):
        from_ase, from_vesin = reference(atoms, cutoff)
        assert got == from_ase, f"{atoms.get_chemical_formula()} pbc={atoms.pbc}: differs from ASE"
        assert got == from_vesin, f"{atoms.get_chemical_formula()} pbc={atoms.pbc}: differs from vesin"
    assert any((i == j for i, j, _ in got) for got in ours[:2]), "an atom should neighbour its own images"


@pytest.mark.parametrize("cutoff", [2.0, 2.0 * (1 + 1e-12), 3.0 ** 0.5])
def test_atoms_on_bin_edges_and_at_the_cutoff_match_ase_and_vesin(cutoff: float,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A unit grid: with cutoff 2 the cell list's bins are 1 wide, so every atom sits exactly on bin edges, and many
    # pairs lie at exactly the cutoff (2, excluded), just under it (2 + 1e-12), or at √3 (the corner of a bin).
    monkeypatch.setattr(NL_MODULE, "DENSE_MAX_PAIRS", -1)
    points = [[a, b, c] for a in range(5) for b in range(5) for c in range(5)]
    grid = ase.Atoms("C125", positions=points)
    crystal = ase.Atoms("C125", positions=points, cell=5.0 * np.eye(3), pbc=True)
    ours, _ = ours_per_structure([grid, crystal], cutoff)
    for atoms, got in zip([grid, crystal], ours):
        from_ase, from_vesin = reference(atoms, cutoff)
        assert got == from_ase and got == from_vesin, f"pbc={atoms.pbc.any()}"
        assert len(got) > 0


def test_vectors_carry_the_gradient_of_positions_and_cell() -> None:
    atoms = periodic_structures()[4]
    pos = torch.tensor(atoms.positions, requires_grad=True)
    cell = torch.tensor(atoms.cell.array, requires_grad=True)

    def energy(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        nl = neighbor_list(p, 3.2, cell=c.unsqueeze(0), pbc=torch.ones(3, dtype=torch.bool))
        return (nl.distances - 1.0).pow(2).sum()

    assert torch.autograd.gradcheck(energy, (pos, cell), eps=1e-6, atol=1e-7)


def test_self_interaction_adds_each_atom_once(search: str) -> None:
    pos = torch.tensor(random_molecule(9, 2).positions)
    plain = neighbor_list(pos, 2.5)
    selfish = neighbor_list(pos, 2.5, self_interaction=True)
    assert selfish.edge_index.shape[1] == plain.edge_index.shape[1] + 9
    loops = selfish.edge_index[0] == selfish.edge_index[1]
    assert loops.sum() == 9 and selfish.distances[loops].eq(0).all()


def test_large_systems_need_no_n_by_n_matrix() -> None:
    # 60 000 atoms: an N x N float64 distance matrix would take 29 GB; the cell list takes well under a second.
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(60_000, 3, generator=g, dtype=torch.float64) * 80.0  # ~0.12 atoms / Å^3
    batch = torch.arange(60_000) // 20_000
    t0 = time.perf_counter()
    nl = neighbor_list(pos, 1.5, batch)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20.0, f"took {elapsed:.1f} s"
    d = (pos[nl.edge_index[1]] - pos[nl.edge_index[0]]).norm(dim=-1)
    assert (d < 1.5).all() and (batch[nl.edge_index[0]] == batch[nl.edge_index[1]]).all()
    # the count is within 5 % of the expected number of pairs (density x sphere volume, minus surface losses)
    expected = 60_000 * (20_000 / 80.0**3) * 4 / 3 * np.pi * 1.5**3
    assert 0.85 * expected < nl.edge_index.shape[1] < 1.0 * expected


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"pos": torch.tensor([[0.0, float("nan"), 0.0]])}, "NaN"),
    ({"pos": torch.zeros(4, 2)}, r"shape \(N, 3\)"),
    ({"pos": torch.zeros(4, 3), "cutoff": 0.0}, "cutoff must be a positive"),
    ({"pos": torch.zeros(4, 3), "batch": torch.tensor([1, 0, 0, 0])}, "non-decreasing"),
    ({"pos": torch.zeros(4, 3), "pbc": torch.ones(3, dtype=torch.bool)}, "no cell"),
    ({"pos": torch.zeros(4, 3), "cell": torch.zeros(1, 3, 3), "pbc": torch.ones(3, dtype=torch.bool)}, "full rank"),
    ({"pos": torch.zeros(4, 3), "cell": torch.zeros(2, 3, 3)}, r"cell must have shape"),
])
def test_bad_input_raises_one_clear_error(kwargs: dict, match: str) -> None:
    args = {"cutoff": 2.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        neighbor_list(args.pop("pos"), args.pop("cutoff"), args.pop("batch", None), **args)
