"""Periodic cells: lattice parameters ↔ matrix, fractional ↔ Cartesian, minimum images, the crystal radius graph.

A cell is a ``(3, 3)`` matrix ``L`` whose **rows** are the lattice vectors ``a, b, c`` (ASE's ``atoms.cell``,
pymatgen's ``Lattice.matrix``); a batch of cells is ``(B, 3, 3)``. Positions are row vectors, so fractional
coordinates ``f`` and Cartesian positions ``x`` are related by ``x = f L`` and ``f = x L⁻¹``. A rotation ``R``
moves a crystal by ``L ↦ L Rᵀ`` with ``f`` unchanged (the ``lattice`` field kind of :mod:`pointgeo.geometry.fields`).

Lattice parameters follow pymatgen's ``Lattice.from_parameters`` (``vesta=False``), the convention of CDVAE and of
the pymatgen-written CIFs of its benchmarks. With angles ``α, β, γ`` (degrees) and

    ``cos γ* = (cos α cos β − cos γ) / (sin α sin β)``   (clamped to ``[−1, 1]``),

the rows are ``a = (a sin β, 0, a cos β)``, ``b = (−b sin α cos γ*, b sin α sin γ*, b cos α)``, ``c = (0, 0, c)``.

Everything here is batched torch, differentiable where the docstring says so, and loops over no atom or structure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.neighbor_list import NeighborList, neighbor_list


def _check_cells(cell: Tensor, name: str = "cell") -> Tensor:
    if not isinstance(cell, Tensor) or not cell.is_floating_point() or cell.dim() < 2 or cell.shape[-2:] != (3, 3):
        got = f"{tuple(cell.shape)} {cell.dtype}" if isinstance(cell, Tensor) else type(cell).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., 3, 3) (rows = lattice vectors); "
                         f"got {got}")
    return cell


def _check_triples(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1 or x.shape[-1] != 3:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., 3); got {got}")
    return x


def lattice_params_to_matrix(lengths: Tensor, angles: Tensor) -> Tensor:
    """Cells from lattice parameters, pymatgen's convention (module docstring); differentiable.

    Args:
        lengths: ``(..., 3)`` ``a, b, c`` (Å).
        angles: ``(..., 3)`` ``α, β, γ`` in degrees (``α`` between ``b`` and ``c``, ``β`` between ``a`` and ``c``,
            ``γ`` between ``a`` and ``b``).

    Returns:
        ``(..., 3, 3)`` cells, rows ``a, b, c``. Angles that no cell has (e.g. ``α + β < γ``) are not refused:
        ``cos γ*`` is clamped as pymatgen does, and the cell's volume then tells (see :func:`lattice_volume`).
    """
    lengths, angles = _check_triples(lengths, "lengths"), _check_triples(angles, "angles")
    lengths, angles = torch.broadcast_tensors(lengths, angles.to(lengths.dtype))
    rad = torch.deg2rad(angles)
    cos, sin = torch.cos(rad), torch.sin(rad)
    cos_a, cos_b, cos_g = cos.unbind(-1)
    sin_a, sin_b, _ = sin.unbind(-1)
    cos_gstar = ((cos_a * cos_b - cos_g) / (sin_a * sin_b)).clamp(-1.0, 1.0)
    sin_gstar = torch.sqrt((1.0 - cos_gstar * cos_gstar).clamp_min(0.0))
    zero = torch.zeros_like(cos_a)
    a = torch.stack([sin_b, zero, cos_b], -1) * lengths[..., :1]
    b = torch.stack([-sin_a * cos_gstar, sin_a * sin_gstar, cos_a], -1) * lengths[..., 1:2]
    c = torch.stack([zero, zero, torch.ones_like(cos_a)], -1) * lengths[..., 2:]
    return torch.stack([a, b, c], -2)


def lattice_matrix_to_params(cell: Tensor) -> tuple[Tensor, Tensor]:
    """Lattice parameters of cells (pymatgen's ``Lattice.parameters``); differentiable away from 0° and 180°.

    Args:
        cell: ``(..., 3, 3)``, rows ``a, b, c``.

    Returns:
        ``(lengths (..., 3), angles (..., 3))``: ``‖a‖, ‖b‖, ‖c‖`` (Å) and ``α = ∠(b, c), β = ∠(a, c), γ = ∠(a, b)``
        in degrees. Rotating the cell (``L Rᵀ``) leaves both unchanged.
    """
    cell = _check_cells(cell)
    lengths = cell.norm(dim=-1)
    pairs = ((1, 2), (0, 2), (0, 1))
    cosines = torch.stack([(cell[..., j, :] * cell[..., k, :]).sum(-1) / (lengths[..., j] * lengths[..., k])
                           for j, k in pairs], -1)
    return lengths, torch.rad2deg(torch.arccos(cosines.clamp(-1.0, 1.0)))


def lattice_features(lengths: Tensor, angles: Tensor, natoms: Tensor) -> Tensor:
    """CDVAE's lattice target ``(B, 6)``: ``[a, b, c] / N^(1/3)`` (Å) and ``[α, β, γ]`` (degrees) of crystals of
    ``natoms (B,)`` atoms (invariant under rotations and permutations)."""
    lengths, angles = _check_triples(lengths, "lengths"), _check_triples(angles, "angles")
    return torch.cat([lengths / natoms.to(lengths.dtype).unsqueeze(-1) ** (1.0 / 3.0), angles.to(lengths.dtype)], -1)


def lattice_volume(cell: Tensor) -> Tensor:
    """``(...,)`` signed volumes ``det L`` (Å³): negative for a left-handed cell, 0 for a singular one."""
    return torch.linalg.det(_check_cells(cell))


def _cells_per_row(cell: Tensor, rows: int, batch: Tensor | None, what: str) -> Tensor:
    """One cell per row of a ``(rows, 3)`` tensor: ``cell (3, 3)`` broadcast, ``(rows, 3, 3)`` as is, or
    ``(B, 3, 3)`` indexed by ``batch (rows,)``."""
    cell = _check_cells(cell)
    if cell.dim() == 2:
        return cell.expand(rows, 3, 3)
    if batch is None:
        if cell.shape[0] != rows:
            raise ValueError(f"{what} has {rows} rows but cell has {cell.shape[0]} cells; pass batch (one structure "
                             "index per row) or one cell per row")
        return cell
    if not isinstance(batch, Tensor) or batch.dtype != torch.long or batch.shape != (rows,):
        got = f"{tuple(batch.shape)} {batch.dtype}" if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"batch must be a long tensor of shape ({rows},); got {got}")
    if rows and (int(batch.min()) < 0 or int(batch.max()) >= cell.shape[0]):
        raise ValueError(f"batch indexes structures 0..{cell.shape[0] - 1}; got values {int(batch.min())}.."
                         f"{int(batch.max())}")
    return cell[batch]


def frac_to_cart(frac: Tensor, cell: Tensor, batch: Tensor | None = None) -> Tensor:
    """Cartesian positions ``x = f L`` (Å); differentiable in both.

    Args:
        frac: ``(N, 3)`` fractional coordinates.
        cell: ``(3, 3)``, ``(N, 3, 3)``, or ``(B, 3, 3)`` with ``batch``.
        batch: ``(N,)`` long, the structure of each row (PyG's ``batch.batch``).
    """
    frac = _check_triples(frac, "frac")
    cells = _cells_per_row(cell, frac.shape[0], batch, "frac").to(frac.dtype)
    return (frac.unsqueeze(-2) @ cells).squeeze(-2)


def cart_to_frac(pos: Tensor, cell: Tensor, batch: Tensor | None = None) -> Tensor:
    """Fractional coordinates ``f = x L⁻¹`` (not wrapped into ``[0, 1)``); differentiable in both.

    Args:
        pos: ``(N, 3)`` Cartesian positions (Å).
        cell, batch: as in :func:`frac_to_cart`.
    """
    pos = _check_triples(pos, "pos")
    cell = _check_cells(cell).to(pos.dtype)
    inverse = torch.linalg.inv(cell)  # one inverse per cell, then indexed
    cells = _cells_per_row(inverse, pos.shape[0], batch, "pos")
    return (pos.unsqueeze(-2) @ cells).squeeze(-2)


def change_cell_basis(frac: Tensor, cell: Tensor, transform: Tensor,
                      batch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The same crystal described in another cell basis: ``L' = M L`` and ``f' = f M⁻¹`` (so ``f' L' = f L``).

    Args:
        frac: ``(N, 3)`` fractional coordinates.
        cell: ``(B, 3, 3)`` cells (rows = lattice vectors), or ``(3, 3)``.
        transform: ``(B, 3, 3)`` (or ``(3, 3)``) integer matrices of determinant ±1 (unimodular: the new rows span the
            same lattice); given as any dtype, checked.
        batch: ``(N,)`` crystal of each atom (``None``: one crystal).

    Returns:
        ``(frac' (N, 3), cell' (B, 3, 3))``; ``det L' = det M det L``, so ``det M = −1`` makes the cell left-handed.

    Raises:
        ValueError: ``transform`` is not integer-valued with determinant ±1.
    """
    frac, cell = _check_triples(frac, "frac"), _check_cells(cell)
    m = torch.as_tensor(transform, device=cell.device).to(torch.float64)
    m = m.expand(cell.shape) if m.dim() == 2 else m
    if m.shape != cell.shape or not bool(torch.equal(m, m.round())):
        raise ValueError(f"transform must hold integer (B, 3, 3) matrices; got shape {tuple(m.shape)}")
    det = torch.linalg.det(m)
    if not bool((det.round().abs() == 1).all()):
        raise ValueError(f"transform must be unimodular (determinant ±1); got determinants {det.round().tolist()}")
    new_cell = (m.to(cell.dtype) @ cell)
    inverse = torch.linalg.inv(m).round().to(frac.dtype)
    return (frac.unsqueeze(-2) @ _cells_per_row(inverse, frac.shape[0], batch, "frac")).squeeze(-2), new_cell


_TIE_RTOL = 1e-9
"""Relative distance within which :func:`periodic_radius_graph` (``keep_ties``) counts two edges as tied."""

_IMAGE_BUDGET = 1 << 22
"""Displacement × image candidates evaluated at once by :func:`minimum_image` (bounds its memory)."""


def minimum_image(vectors: Tensor, cell: Tensor, batch: Tensor | None = None) -> Tensor:
    """The shortest periodic image ``d + S L`` (``S`` integer) of each displacement ``d``, exactly, in any cell.

    Rounding the fractional displacement (``f − round(f)``) gives an image ``d₀``, but not always the shortest in
    a skewed cell. The shortest ``v`` has ``‖v‖ ≤ ‖d₀‖``, so its fractional coordinates ``g = v L⁻¹`` obey
    ``|g_k| ≤ ‖d₀‖ ‖b_k‖`` (``b_k`` the ``k``-th column of ``L⁻¹``, the reciprocal vector; the lattice planes along
    ``k`` are ``1/‖b_k‖`` apart), and the search over the shifts ``|S_k| ≤ ⌊½ + ‖d₀‖ ‖b_k‖⌋`` around ``d₀`` is
    complete. Exact ties (a displacement half-way between two images) go to the first shift in lexicographic order.

    Args:
        vectors: ``(E, 3)`` Cartesian displacements (Å), e.g. ``x_j − x_i``.
        cell: ``(3, 3)``, ``(E, 3, 3)``, or ``(B, 3, 3)`` with ``batch``; full rank.
        batch: ``(E,)`` long, the structure of each displacement.

    Returns:
        ``(E, 3)`` shortest images, differentiable in ``vectors`` and ``cell`` (the shift is chosen without
        gradient).
    """
    vectors = _check_triples(vectors, "vectors")
    cells = _cells_per_row(cell, vectors.shape[0], batch, "vectors").to(vectors.dtype)
    if vectors.shape[0] == 0:
        return vectors.clone()
    with torch.no_grad():
        c64, d64 = cells.detach().double(), vectors.detach().double()
        if bool((torch.linalg.matrix_rank(c64) < 3).any()):
            raise ValueError("cell must have full rank (three independent lattice vectors) for minimum images")
        inverse = torch.linalg.inv(c64)
        frac = (d64.unsqueeze(-2) @ inverse).squeeze(-2)
        base = -torch.round(frac)  # d0 = d + base · L
        d0 = d64 + (base.unsqueeze(-2) @ c64).squeeze(-2)
        reach = torch.floor(0.5 + d0.norm(dim=-1, keepdim=True) * inverse.norm(dim=-2)).long()  # (E, 3)
        top = reach.amax(0)
        axes = [torch.arange(-int(n), int(n) + 1, device=vectors.device) for n in top.tolist()]
        offsets = torch.cartesian_prod(*axes).reshape(-1, 3).to(torch.float64)  # (K, 3)
        best = torch.empty_like(base)
        step = max(1, _IMAGE_BUDGET // offsets.shape[0])
        for start in range(0, vectors.shape[0], step):  # chunks bound memory; no loop over single displacements
            sl = slice(start, start + step)
            cand = d0[sl].unsqueeze(1) + offsets @ c64[sl]  # (e, K, 3)
            choice = cand.pow(2).sum(-1).argmin(1)
            best[sl] = base[sl] + offsets[choice]
    return vectors + (best.to(vectors.dtype).unsqueeze(-2) @ cells).squeeze(-2)


def periodic_radius_graph(
    frac: Tensor,
    cell: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    *,
    max_neighbors: int | None = None,
    keep_ties: bool = False,
) -> NeighborList:
    """The radius graph of a batch of crystals given by fractional coordinates, with every image the cutoff needs.

    Every ``(i, j, S)`` with ``‖x_j − x_i + S L‖ < cutoff`` (``x = f L``), atoms' own images included: the images
    come from :func:`pointgeo.geometry.neighbor_list`, which takes ``⌈cutoff ‖b_k‖⌉`` cells along each lattice
    direction, so a short or skewed lattice vector loses no neighbour (CDVAE's fixed 27 images ``S ∈ {−1, 0, 1}³``
    miss those farther than one cell). The shifts ``S`` refer to the coordinates as given (not wrapped).

    Args:
        frac: ``(N, 3)`` fractional coordinates of all crystals, concatenated.
        cell: ``(B, 3, 3)`` cells (rows = lattice vectors), or ``(3, 3)`` for one crystal.
        cutoff: radius (Å).
        batch: ``(N,)`` long crystal index of each atom, non-decreasing (``None``: one crystal).
        max_neighbors: keep only the nearest ``max_neighbors`` edges of each atom ``i`` (ties by ``j``, then ``S``,
            the list's order), as CDVAE's decoder graph does with 20; ``None`` keeps all.
        keep_ties: with ``max_neighbors``, also keep every edge as short as the ``max_neighbors``-th one (within a
            relative ``1e-9``, far above rounding), so the kept set depends on distances only: invariant under
            rotations, permutations and changes of cell basis even where symmetry makes many neighbours equidistant
            (a cubic cell), at the price of sometimes more than ``max_neighbors`` edges.

    Returns:
        :class:`~pointgeo.geometry.neighbor_list.NeighborList` (edges sorted by ``i``, then distance when
        ``max_neighbors`` is set, else by ``j`` and ``S``), vectors differentiable in ``frac`` and ``cell``.
    """
    frac = _check_triples(frac, "frac")
    cell = _check_cells(cell).to(frac.dtype)
    cells = cell.reshape(1, 3, 3) if cell.dim() == 2 else cell
    if batch is None:
        batch = torch.zeros(frac.shape[0], dtype=torch.long, device=frac.device)
    pos = frac_to_cart(frac, cells, batch)
    pbc = torch.ones(cells.shape[0], 3, dtype=torch.bool, device=frac.device)
    nl = neighbor_list(pos, cutoff, batch, cell=cells, pbc=pbc)
    if max_neighbors is None:
        return nl
    if not isinstance(max_neighbors, int) or max_neighbors < 1:
        raise ValueError(f"max_neighbors must be a positive integer or None; got {max_neighbors!r}")
    i = nl.edge_index[0]
    with torch.no_grad():
        order = torch.argsort(nl.distances.detach(), stable=True)
        order = order[torch.argsort(i[order], stable=True)]  # by i, then distance, then the list's (j, S) order
        counts = torch.bincount(i, minlength=pos.shape[0])
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.shape[0], device=frac.device) - first[i[order]]
        keep = order[rank < max_neighbors]
        if keep_ties:
            dist = nl.distances.detach()
            last = torch.full((pos.shape[0],), float("inf"), dtype=dist.dtype, device=frac.device)
            at_k = order[rank == max_neighbors - 1]
            last[i[at_k]] = dist[at_k]
            keep = torch.nonzero(dist <= last[i] * (1.0 + _TIE_RTOL)).flatten()
            keep = keep[torch.argsort(dist[keep], stable=True)]
            keep = keep[torch.argsort(i[keep], stable=True)]
    return NeighborList(nl.edge_index[:, keep], nl.shifts[keep], nl.vectors[keep], nl.distances[keep])

