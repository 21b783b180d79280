"""Periodic geometry against pymatgen and vesin: lattice parameters ↔ matrix, fractional ↔ Cartesian, minimum images,
and the crystal radius graph on skewed cells with short lattice vectors, where CDVAE's 27 images miss neighbours."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import vesin
from pymatgen.core import Lattice, Structure

from pointgeo.geometry import (
    CRYSTAL_FIELDS,
    apply_rigid_motion,
    cart_to_frac,
    frac_to_cart,
    lattice_matrix_to_params,
    lattice_params_to_matrix,
    lattice_volume,
    minimum_image,
    periodic_radius_graph,
    random_rotations,
)


def random_parameters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths 1–12 Å and angles that some cell has (45°–135°, with α + β + γ < 360° and each < sum of others)."""
    rng = np.random.default_rng(seed)
    lengths, angles = [], []
    while len(lengths) < n:
        ang = rng.uniform(45.0, 135.0, 3)
        if ang.sum() < 355.0 and all(ang[k] < ang.sum() - ang[k] - 5.0 for k in range(3)):
            lengths.append(rng.uniform(1.0, 12.0, 3))
            angles.append(ang)
    return np.array(lengths), np.array(angles)


def test_parameters_to_matrix_equal_pymatgen_batched() -> None:
    lengths, angles = random_parameters(200, 0)
    ours = lattice_params_to_matrix(torch.tensor(lengths), torch.tensor(angles))
    ref = np.stack([Lattice.from_parameters(*l, *a).matrix for l, a in zip(lengths, angles)])
    assert ours.shape == (200, 3, 3)
    assert torch.allclose(ours, torch.tensor(ref), rtol=0, atol=1e-12)
    # float32 gives the same to float32 rounding; gradients flow
    l32 = torch.tensor(lengths, dtype=torch.float32, requires_grad=True)
    lattice_params_to_matrix(l32, torch.tensor(angles, dtype=torch.float32)).sum().backward()
    assert l32.grad is not None and torch.isfinite(l32.grad).all()


def test_matrix_to_parameters_equal_pymatgen_and_are_rotation_invariant() -> None:
    lengths, angles = random_parameters(100, 1)
    cells = lattice_params_to_matrix(torch.tensor(lengths), torch.tensor(angles))
    rotated = cells @ random_rotations(100, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).mT
    got_l, got_a = lattice_matrix_to_params(rotated)
    ref = np.array([Lattice(m).parameters for m in rotated.numpy()])
    assert torch.allclose(got_l, torch.tensor(ref[:, :3]), rtol=0, atol=1e-10)
    assert torch.allclose(got_a, torch.tensor(ref[:, 3:]), rtol=0, atol=1e-8)
    assert torch.allclose(got_l, torch.tensor(lengths), rtol=0, atol=1e-10)
    assert torch.allclose(got_a, torch.tensor(angles), rtol=0, atol=1e-8)
    volume = lattice_volume(rotated)
    ref_volume = torch.tensor([Lattice(m).volume for m in rotated.numpy()], dtype=torch.float64)
    assert torch.allclose(volume, ref_volume, rtol=1e-12, atol=0)
    assert torch.allclose(lattice_volume(rotated[:, [1, 0, 2]]), -volume, rtol=1e-12, atol=0)  # left-handed: < 0


def test_fractional_cartesian_round_trip_equals_pymatgen_with_a_batch_vector() -> None:
    lengths, angles = random_parameters(4, 2)
    cells = lattice_params_to_matrix(torch.tensor(lengths), torch.tensor(angles))
    sizes = [1, 5, 3, 7]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    frac = torch.rand(sum(sizes), 3, dtype=torch.float64) * 3 - 1  # outside [0, 1) too
    cart = frac_to_cart(frac, cells, batch)
    ref = np.concatenate([Lattice(cells[k].numpy()).get_cartesian_coords(frac[batch == k].numpy())
                          for k in range(4)])
    assert torch.allclose(cart, torch.tensor(ref), rtol=0, atol=1e-12)
    assert torch.allclose(cart_to_frac(cart, cells, batch), frac, rtol=0, atol=1e-12)
    # one cell for all rows, and one cell per row, give the same
    assert torch.allclose(frac_to_cart(frac[:1], cells[0]), cart[:1], rtol=0, atol=0)
    assert torch.allclose(frac_to_cart(frac, cells[batch]), cart, rtol=0, atol=0)


def skewed_cells() -> list[np.ndarray]:
    """Cells with a short lattice vector (1.1–1.6 Å) and strong skew, where 7 Å reaches many cells away."""
    return [
        np.array([[1.2, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 5.0]]),       # one short vector, orthorhombic
        np.array([[1.1, 0.0, 0.0], [1.0, 1.3, 0.0], [0.9, 0.8, 1.4]]),       # short and very skewed
        np.array([[3.0, 0.0, 0.0], [2.9, 0.4, 0.0], [-2.8, 0.3, 2.5]]),      # long vectors, thin cell
        Lattice.from_parameters(1.6, 6.0, 7.3, 100.0, 80.0, 120.0).matrix,
        np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]),       # a plain cube, for contrast
    ]


def brute_force_minimum(d: np.ndarray, cell: np.ndarray, reach: int = 10) -> np.ndarray:
    """Every shift within ``reach`` cells of the rounded fractional displacement."""
    frac = d @ np.linalg.inv(cell)
    shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)), dtype=float)
    cand = (frac - np.round(frac))[:, None, :] @ cell + shifts @ cell
    return cand[np.arange(len(d)), (cand**2).sum(-1).argmin(1)]


def test_minimum_image_is_the_shortest_image_in_skewed_cells() -> None:
    rng = np.random.default_rng(4)
    cells = skewed_cells()
    d = [rng.normal(size=(50, 3)) * 6.0 for _ in cells]
    batch = torch.repeat_interleave(torch.arange(len(cells)), 50)
    ours = minimum_image(torch.tensor(np.concatenate(d)), torch.tensor(np.stack(cells)), batch)
    ref = np.concatenate([brute_force_minimum(dk, ck) for dk, ck in zip(d, cells)])
    assert torch.allclose(ours.norm(dim=-1), torch.tensor(ref).norm(dim=-1), rtol=0, atol=1e-12)
    # the result differs from the input by a lattice vector
    shift = cart_to_frac(ours - torch.tensor(np.concatenate(d)), torch.tensor(np.stack(cells)), batch)
    assert torch.allclose(shift, shift.round(), rtol=0, atol=1e-9)
    # rounding the fractional displacement alone is not enough in these cells (the search is needed)
    cell_t = torch.tensor(np.stack(cells))[batch]
    f = cart_to_frac(torch.tensor(np.concatenate(d)), cell_t)
    rounded = frac_to_cart(f - f.round(), cell_t)
    assert (rounded.norm(dim=-1) > ours.norm(dim=-1) + 1e-6).any()


def test_minimum_image_gradient() -> None:
    cell = torch.tensor(skewed_cells()[1], requires_grad=True)
    d = torch.tensor(np.random.default_rng(5).normal(size=(6, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: minimum_image(x, c).norm(dim=-1), (d, cell), eps=1e-6, atol=1e-7)


def pymatgen_edges(frac: np.ndarray, cell: np.ndarray, cutoff: float) -> set[tuple]:
    s = Structure(Lattice(cell), ["C"] * len(frac), frac, coords_are_cartesian=False)
    i, j, images, _ = s.get_neighbor_list(cutoff, exclude_self=True)
    return set(zip(i.tolist(), j.tolist(), map(tuple, images.astype(int).tolist())))


def vesin_edges(frac: np.ndarray, cell: np.ndarray, cutoff: float) -> set[tuple]:
    i, j, s = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(frac @ cell, cell, True, "ijS")
    return set(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(s).tolist())))


@pytest.mark.parametrize("cutoff", [3.1, 7.0])  # no lattice vector exactly at the cutoff
def test_radius_graph_equals_pymatgen_and_vesin_where_27_images_are_not_enough(cutoff: float) -> None:
    rng = np.random.default_rng(6)
    cells = skewed_cells()
    sizes = [3, 2, 4, 5, 6]
    fracs = [rng.uniform(-0.3, 1.3, size=(n, 3)) for n in sizes]
    batch = torch.repeat_interleave(torch.arange(len(cells)), torch.tensor(sizes))
    nl = periodic_radius_graph(torch.tensor(np.concatenate(fracs)), torch.tensor(np.stack(cells)), cutoff, batch)
    start = np.concatenate([[0], np.cumsum(sizes)])
    beyond_27 = 0
    for k, (frac, cell) in enumerate(zip(fracs, cells)):
        sel = batch[nl.edge_index[0]] == k
        i, j = (nl.edge_index[:, sel] - int(start[k])).tolist()
        ours = set(zip(i, j, map(tuple, nl.shifts[sel].tolist())))
        assert ours == pymatgen_edges(frac, cell, cutoff), f"cell {k}: differs from pymatgen"
        assert ours == vesin_edges(frac, cell, cutoff), f"cell {k}: differs from vesin"
        beyond_27 += sum(max(abs(s) for s in shift) > 1 for *_, shift in ours)
    assert (nl.distances < cutoff).all()
    # CDVAE's fixed 27 images (|S_k| <= 1) would have missed these edges (with coordinates in the cell, as there)
    wrapped = torch.tensor(np.concatenate(fracs)) % 1.0
    nl_wrapped = periodic_radius_graph(wrapped, torch.tensor(np.stack(cells)), cutoff, batch)
    missed = int((nl_wrapped.shifts.abs().amax(-1) > 1).sum())
    assert missed > 0 and beyond_27 > 0
    if cutoff == 7.0:
        assert missed > 0.5 * nl_wrapped.shifts.shape[0], "with a 1.1 Å vector most 7 Å neighbours are far images"


def test_max_neighbors_keeps_the_nearest_per_atom() -> None:
    cell = torch.tensor(skewed_cells()[3])
    frac = torch.tensor(np.random.default_rng(7).uniform(size=(5, 3)))
    full = periodic_radius_graph(frac, cell, 7.0)
    top = periodic_radius_graph(frac, cell, 7.0, max_neighbors=20)
    for atom in range(5):
        d_full = full.distances[full.edge_index[0] == atom].sort().values
        d_top = top.distances[top.edge_index[0] == atom]
        assert len(d_top) == 20 and torch.equal(d_top, d_full[:20])  # sorted by distance within each atom
    with pytest.raises(ValueError, match="max_neighbors"):
        periodic_radius_graph(frac, cell, 7.0, max_neighbors=0)


def test_rotating_the_cell_keeps_fractional_coordinates_and_the_graph() -> None:
    from torch_geometric.data import Batch, Data

    cell = torch.tensor(skewed_cells()[1]).unsqueeze(0)
    frac = torch.tensor(np.random.default_rng(8).uniform(size=(3, 3)))
    data = Batch.from_data_list([Data(frac_coords=frac, cell=cell, z=torch.tensor([6, 6, 8]))])
    rot = random_rotations(1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    moved = apply_rigid_motion(data, CRYSTAL_FIELDS, rot)
    assert moved.frac_coords is data.frac_coords
    assert torch.allclose(moved.cell, cell @ rot.mT, rtol=0, atol=1e-14)
    before = periodic_radius_graph(data.frac_coords, data.cell, 5.0)
    after = periodic_radius_graph(moved.frac_coords, moved.cell, 5.0)
    assert torch.equal(before.edge_index, after.edge_index) and torch.equal(before.shifts, after.shifts)
    assert torch.allclose(after.vectors, before.vectors @ rot[0].T, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: lattice_params_to_matrix(torch.ones(2, 2), torch.ones(2, 3)), r"lengths must .* \(\.\.\., 3\)"),
    (lambda: lattice_matrix_to_params(torch.ones(3, 2)), r"cell must .* \(\.\.\., 3, 3\)"),
    (lambda: frac_to_cart(torch.ones(4, 3), torch.eye(3).expand(2, 3, 3)), "pass batch"),
    (lambda: frac_to_cart(torch.ones(2, 3), torch.eye(3).expand(2, 3, 3), torch.tensor([0, 2])), "batch indexes"),
    (lambda: minimum_image(torch.ones(2, 3), torch.zeros(3, 3)), "full rank"),
])
def test_bad_input_raises_one_clear_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
