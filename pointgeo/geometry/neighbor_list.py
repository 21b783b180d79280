"""Batched radius graphs (neighbour lists) for molecules and periodic crystals, without an ``N × N`` matrix.

An edge ``(i, j)`` with integer cell shift ``S`` joins atom ``i`` to atom ``j`` (or to its periodic image) when

    ``d_ij = r_j − r_i + S · cell``,   ``‖d_ij‖ < cutoff``,

the convention of ASE's ``neighbor_list("ijSD", ...)`` and of vesin (full list: both ``(i, j)`` and ``(j, i)``).
Atoms of different structures of a batch are never joined. A periodic structure gets as many images of its cell as
the cutoff needs in each periodic direction (``n_k = ⌈cutoff · ‖b_k‖⌉``, ``b_k`` the reciprocal vectors), so a cutoff
longer than the cell is fine, and an atom can neighbour its own images; only images within the cutoff of the cell
are searched.

Two searches give the same edges; neither runs a Python loop over atoms, structures or bins:

* small non-periodic batches (at most :data:`DENSE_MAX_PAIRS` atom pairs, ``B · n_max²`` for ``B`` structures of
  at most ``n_max`` atoms; OMol25's molecules and the batches they are trained in): every pair of atoms of the
  same structure is tested at once, in a handful of tensor operations, already in ``(i, j)`` order;
* everything else: a cell list built by sorting: every candidate atom (or image) goes into a cubic bin of side
  ``cutoff / BIN_DIVISIONS``, bins are keyed by ``(structure, bin coordinates)`` and sorted, and each query atom
  looks up, with ``searchsorted``, only the bins of its neighbourhood that the cutoff sphere reaches (one key range
  per column of bins). Memory and time are linear in atoms plus candidate pairs.

Both compare the same float64 squared distances with ``cutoff²``, so they return identical edges. The indices are
found without gradient; the edge vectors and distances are then computed from ``pos`` and ``cell`` by
differentiable indexing, so forces (``−∂E/∂pos``) and strain derivatives (through ``cell``) flow through them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BIN_DIVISIONS = 2
"""The cell list's bins have side ``cutoff / BIN_DIVISIONS``: finer bins fit the cutoff sphere more tightly (fewer
candidate pairs to test) at the price of more ranges to look up; 2 was fastest from 100 to 10 000 atoms per cell."""

_RANGE_SLACK = 1e-6
"""Bins (in bin widths) by which every looked-up range is widened, far above the rounding of bin coordinates."""


DENSE_MAX_PAIRS = 1 << 20
"""Non-periodic batches whose structures, padded to the largest, hold at most this many atom pairs
(``B · n_max²``: one 1024-atom molecule, or 46 molecules of up to 150 atoms) are searched by testing every pair;
larger ones by the cell list. At the threshold the pair test holds about 17 MB of temporaries and takes about as
long as the cell list (measured on one CPU thread: 1000 atoms, cutoff 5 Å); below it, it is faster."""


@dataclass(frozen=True)
class NeighborList:
    """A radius graph over a batch of structures.

    Attributes:
        edge_index: ``(2, E)`` long, rows ``(i, j)``; edges sorted by ``i``, then ``j``, then shift.
        shifts: ``(E, 3)`` long, integer cell shifts ``S`` (zero for non-periodic structures).
        vectors: ``(E, 3)``, ``r_j − r_i + S · cell`` (differentiable in ``pos`` and ``cell``).
        distances: ``(E,)``, ``‖vectors‖``.
    """

    edge_index: Tensor
    shifts: Tensor
    vectors: Tensor
    distances: Tensor


def _check_inputs(
    pos: Tensor, cutoff: float, batch: Tensor | None, cell: Tensor | None, pbc: Tensor | None
) -> tuple[Tensor, int, Tensor, Tensor]:
    if not isinstance(pos, Tensor) or not pos.is_floating_point() or pos.dim() != 2 or pos.shape[-1] != 3:
        got = f"{tuple(pos.shape)} {pos.dtype}" if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must be a floating-point tensor of shape (N, 3); got {got}")
    if not torch.isfinite(pos).all():
        bad = (~torch.isfinite(pos)).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"pos contains NaN or inf coordinates (atoms {bad[:10]})")
    if not isinstance(cutoff, (int, float)) or not cutoff > 0 or cutoff != cutoff or cutoff == float("inf"):
        raise ValueError(f"cutoff must be a positive finite number (Å); got {cutoff!r}")
    n = pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    elif not isinstance(batch, Tensor) or batch.shape != (n,) or batch.dtype != torch.long:
        got = f"{tuple(batch.shape)} {batch.dtype}" if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"batch must be a long tensor of shape (N,) = ({n},); got {got}")
    elif n and (batch.min() < 0 or (batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must hold non-negative structure indices in non-decreasing order (PyG's layout)")
    num_structures = int(batch.max()) + 1 if n else 0
    if cell is None and pbc is not None and bool(torch.as_tensor(pbc).any()):
        raise ValueError("pbc is periodic in some direction but no cell was given")
    if cell is None:
        cell = torch.zeros(num_structures, 3, 3, dtype=pos.dtype, device=pos.device)
    else:
        if not isinstance(cell, Tensor) or not cell.is_floating_point():
            raise ValueError(f"cell must be a floating-point tensor of shape (B, 3, 3); got {type(cell).__name__}")
        cell = cell.reshape(-1, 3, 3) if cell.numel() == 9 * num_structures else cell
        if cell.shape != (num_structures, 3, 3):
            raise ValueError(f"cell must have shape (B, 3, 3) = ({num_structures}, 3, 3); got {tuple(cell.shape)}")
    if pbc is None:
        pbc = torch.zeros(num_structures, 3, dtype=torch.bool, device=pos.device)
    else:
        pbc = torch.as_tensor(pbc, device=pos.device).to(torch.bool)
        pbc = pbc.expand(num_structures, 3) if pbc.shape == (3,) else pbc.reshape(-1, 3)
        if pbc.shape != (num_structures, 3):
            raise ValueError(f"pbc must have shape (3,) or (B, 3) = ({num_structures}, 3); got {tuple(pbc.shape)}")
    return batch, num_structures, cell, pbc


def _images(
    pos: Tensor, batch: Tensor, cell: Tensor, pbc: Tensor, cutoff: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Wrap periodic structures into their cells and lay out the images the cutoff needs (float64, no gradient).

    Returns ``(query (N, 3), wrap (N, 3), image_pos (M, 3), image_atom (M,), image_shift (M, 3))``: the wrapped
    positions ``query = pos − wrap · cell``, every image's position, the atom it copies and its shift ``S`` relative
    to the *unwrapped* position of that atom, so that ``image_pos[m] − query[i] = pos[atom] − pos[i] +
    (S_m + wrap_i) · cell``.
    """
    periodic = pbc.any(-1)  # (B,)
    if bool(periodic.any()):
        ranks = torch.linalg.matrix_rank(cell[periodic])
        if bool((ranks < 3).any()):
            raise ValueError("cell must have full rank (three independent lattice vectors) for every structure that is "
                             "periodic in some direction; give a vacuum height to the non-periodic directions")
    safe = torch.where(periodic[:, None, None], cell, torch.eye(3, dtype=cell.dtype, device=cell.device))
    inverse = torch.linalg.inv(safe)  # (B, 3, 3): frac = pos @ inverse
    frac = (pos.unsqueeze(1) @ inverse[batch]).squeeze(1)
    wrap = torch.where(pbc[batch], torch.floor(frac), torch.zeros_like(frac)).long()  # (N, 3)
    query = pos - (wrap.to(pos.dtype).unsqueeze(1) @ cell[batch]).squeeze(1)
    # Images along periodic direction k: |S_k| <= ceil(cutoff * |b_k|), b_k the k-th reciprocal vector (column of
    # the inverse): the planes of the lattice along k are 1 / |b_k| apart.
    thickness = cutoff * inverse.norm(dim=-2)  # (B, 3): the cutoff in units of the plane spacing along k
    reach = torch.ceil(thickness).long()
    reach = torch.where(pbc, reach, torch.zeros_like(reach))
    sizes = 2 * reach + 1  # (B, 3)
    per_structure = sizes.prod(-1)  # images of each atom
    counts = per_structure[batch]  # (N,)
    image_atom = torch.repeat_interleave(torch.arange(pos.shape[0], device=pos.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(image_atom.shape[0], device=pos.device) - first[image_atom]  # index among the atom's images
    s = sizes[batch[image_atom]]
    r = reach[batch[image_atom]]
    shift = torch.stack([local // (s[:, 1] * s[:, 2]), (local // s[:, 2]) % s[:, 1], local % s[:, 2]], -1) - r
    # Only images within the cutoff of the cell can neighbour a (wrapped) atom: fractional coordinate g_k of the
    # image within (−thickness_k, 1 + thickness_k) along each periodic direction k (widened against rounding).
    g = (frac - wrap)[image_atom] + shift
    slack = thickness[batch[image_atom]] * (1 + 1e-9) + 1e-9
    near = ((g > -slack) & (g < 1 + slack) | ~pbc[batch[image_atom]]).all(-1)
    image_atom, shift = image_atom[near], shift[near]
    image_pos = query[image_atom] + (shift.to(pos.dtype).unsqueeze(1) @ cell[batch[image_atom]]).squeeze(1)
    return query, wrap, image_pos, image_atom, shift - wrap[image_atom]


def _cell_list_pairs(
    query: Tensor, query_batch: Tensor, cand: Tensor, cand_batch: Tensor, cutoff: float, num_structures: int
) -> tuple[Tensor, Tensor]:
    """Pairs ``(q, c)`` of a query point and a candidate of the same structure closer than ``cutoff`` (cell list).

    Candidates go into cubic bins of side ``cutoff / BIN_DIVISIONS``, keyed by ``(structure, x, y, z)`` bin and
    sorted, so that a column of bins along z is one contiguous run of keys. Each query visits the
    ``(2 · BIN_DIVISIONS + 1)²`` columns around it; a column farther than ``cutoff`` in the xy-plane is skipped, and in
    the others only the z-bins within ``√(cutoff² − d_xy²)`` of the query (``d_xy`` its xy-distance to the column)
    are taken, one ``searchsorted`` range per column. The ranges are widened by ``_RANGE_SLACK`` bins so that rounding
    can only add candidates, never drop one; the exact distance test decides.
    """
    divisions = BIN_DIVISIONS
    width = cutoff / divisions
    big = torch.finfo(cand.dtype).max
    origin = torch.full((num_structures, 3), big, dtype=cand.dtype, device=cand.device)
    origin = origin.scatter_reduce(0, cand_batch[:, None].expand(-1, 3), cand, reduce="amin", include_self=True)
    cand_bin = torch.floor((cand - origin[cand_batch]) / width).long() + divisions  # >= divisions: offsets stay >= 0
    query_rel = (query - origin[query_batch]) / width + divisions  # query positions in bin units
    span = int(torch.cat([cand_bin, query_rel.floor().long()]).max()) + divisions + 2 if cand.shape[0] else 3
    if float(span) ** 3 * max(num_structures, 1) >= 2.0**62:
        raise ValueError(f"a structure spans {span // divisions} cutoffs ({cutoff} Å) in some direction: too far "
                         "apart for the cell list; split the structure or raise the cutoff")

    def key(structure: Tensor, bx: Tensor, by: Tensor, bz: Tensor) -> Tensor:
        return ((structure * span + bx) * span + by) * span + bz

    sorted_keys, order = torch.sort(key(cand_batch, *cand_bin.unbind(-1)))
    cand = cand[order]
    steps = torch.arange(-divisions, divisions + 1, device=query.device)
    own = query_rel.floor().long()
    col_x = own[:, :1] + steps.repeat_interleave(steps.shape[0])  # (Q, C): the columns around each query
    col_y = own[:, 1:2] + steps.repeat(steps.shape[0])
    # xy-gap (bin units) between each query and each column's square, shrunk by the slack.
    gap_x = torch.maximum(col_x - query_rel[:, :1], query_rel[:, :1] - (col_x + 1)).clamp_min(0)
    gap_y = torch.maximum(col_y - query_rel[:, 1:2], query_rel[:, 1:2] - (col_y + 1)).clamp_min(0)
    gap2 = (gap_x - _RANGE_SLACK).clamp_min(0).square() + (gap_y - _RANGE_SLACK).clamp_min(0).square()
    half = (divisions * divisions - gap2).clamp_min(0).sqrt() + _RANGE_SLACK  # (Q, C) z half-extent, bin units
    z_low = torch.floor(query_rel[:, 2:] - half).long().clamp_min(0)
    z_high = torch.floor(query_rel[:, 2:] + half).long().clamp_max(span - 1)
    structure = query_batch.unsqueeze(1)
    start = torch.searchsorted(sorted_keys, key(structure, col_x, col_y, z_low).reshape(-1), side="left")
    stop = torch.searchsorted(sorted_keys, key(structure, col_x, col_y, z_high).reshape(-1), side="right")
    count = torch.where((gap2 < divisions * divisions).reshape(-1), stop - start, 0)
    total = int(count.sum())
    c = torch.arange(total, device=query.device) + torch.repeat_interleave(start - (torch.cumsum(count, 0) - count),
                                                                           count, output_size=total)
    per_query = count.view(query.shape[0], -1).sum(1)
    q = torch.repeat_interleave(torch.arange(query.shape[0], device=query.device), per_query, output_size=total)
    d = cand.index_select(0, c) - torch.repeat_interleave(query, per_query, dim=0, output_size=total)
    close = (_squared_norm(d) < cutoff * cutoff).nonzero()[:, 0]
    return q.index_select(0, close), order.index_select(0, c.index_select(0, close))


def _squared_norm(d: Tensor) -> Tensor:
    """``(..., 3) -> (...)``: ``(d_x² + d_y²) + d_z²``, in this order in both searches, so that they agree exactly."""
    return (d[..., 0].square() + d[..., 1].square()) + d[..., 2].square()


def _dense_pairs(pos: Tensor, batch: Tensor, counts: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
    """Pairs ``(i, j)`` of atoms of the same structure closer than ``cutoff`` (self pairs included), sorted by
    ``(i, j)``: every atom against every atom of its structure at once.

    The structures are laid out as ``(B, n_max, 3)``, padded with NaN (whose distances compare false), and the
    squared distances ``(B, n_max, n_max)`` are summed coordinate by coordinate in place: 17 bytes a pair.

    Shapes: ``pos (N, 3)`` float64, ``batch (N,)``, ``counts (B,)`` atoms per structure → ``i, j (E,)``.
    """
    first = torch.cumsum(counts, 0) - counts  # (B,) index of each structure's first atom
    n_max = int(counts.max())
    padded = pos.new_full((counts.shape[0], n_max, 3), float("nan"))
    padded[batch, torch.arange(pos.shape[0], device=pos.device) - first[batch]] = pos
    coords = padded.unbind(-1)
    d2 = (coords[0].unsqueeze(1) - coords[0].unsqueeze(2)).square_()  # [b, a, c] = (x_c − x_a)²
    part = torch.empty_like(d2)
    for x in coords[1:]:  # y, then z: the order of _squared_norm
        d2.add_(torch.sub(x.unsqueeze(1), x.unsqueeze(2), out=part).square_())
    b, a, c = (d2 < cutoff * cutoff).nonzero(as_tuple=True)  # row-major: sorted by (structure, a, c)
    return first[b] + a, first[b] + c


def neighbor_list(
    pos: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    *,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    self_interaction: bool = False,
) -> NeighborList:
    """The full radius graph of a batch of structures: every ``(i, j, S)`` with ``‖r_j − r_i + S·cell‖ < cutoff``.

    Args:
        pos: ``(N, 3)`` atom positions (Å) of all structures, concatenated (PyG's layout).
        cutoff: the radius (Å), strictly greater than the distances kept.
        batch: ``(N,)`` long structure index of each atom, non-decreasing (``None``: one structure).
        cell: ``(B, 3, 3)`` lattice vectors as rows (ASE's ``atoms.cell``); needed where ``pbc`` is true.
        pbc: ``(B, 3)`` or ``(3,)`` bool, the periodic directions (``None``: none).
        self_interaction: keep the pairs ``(i, i)`` with zero shift (an atom's periodic images are always kept).

    Returns:
        :class:`NeighborList` with edges sorted by ``(i, j, S)``.

    Raises:
        ValueError: malformed ``pos``, ``batch``, ``cell`` or ``pbc``, NaN positions, a non-positive cutoff, or a
            rank-deficient cell of a periodic structure.
    """
    batch, num_structures, cell, pbc = _check_inputs(pos, cutoff, batch, cell, pbc)
    counts = torch.bincount(batch, minlength=num_structures)
    if pos.shape[0] and not bool(pbc.any()) and num_structures * int(counts.max()) ** 2 <= DENSE_MAX_PAIRS:
        with torch.no_grad():
            i, j = _dense_pairs(pos.detach().double(), batch, counts, float(cutoff))
            if not self_interaction:
                i, j = i[i != j], j[i != j]
        vectors = pos[j] - pos[i]
        return NeighborList(torch.stack([i, j]), torch.zeros(i.shape[0], 3, dtype=torch.long, device=pos.device),
                            vectors, vectors.norm(dim=-1))
    with torch.no_grad():
        p64, c64 = pos.detach().double(), cell.detach().double()
        query, wrap, image_pos, image_atom, image_shift = _images(p64, batch, c64, pbc, float(cutoff))
        q, m = _cell_list_pairs(query, batch, image_pos, batch[image_atom], float(cutoff), num_structures)
        i, j, shifts = q, image_atom[m], image_shift[m] + wrap[q]
        # One integer key per edge, (i, j, S) in mixed radix: sorting the keys gives a deterministic order whatever
        # the binning, and the sorted edges are decoded from them (no gathers of the edge arrays).
        reach = int(shifts.abs().max()) + 1 if shifts.numel() else 1
        width = 2 * reach + 1
        n = max(pos.shape[0], 1)
        key = i * n + j
        for k in range(3):
            key = key * width + (shifts[:, k] + reach)
        if not self_interaction:  # drop (i, i, 0)
            key = key[key != i * ((n + 1) * width**3) + (reach * width + reach) * width + reach]
        key = torch.sort(key).values
        digits = []
        for _ in range(3):
            digits.append(key % width - reach)
            key = key // width
        shifts = torch.stack(digits[::-1], -1)
        i, j = key // n, key % n
    vectors = pos[j] - pos[i]
    if shifts.numel() and bool(shifts.ne(0).any()):
        vectors = vectors + (shifts.to(pos.dtype).unsqueeze(1) @ cell[batch[i]]).squeeze(1)
    return NeighborList(torch.stack([i, j]), shifts, vectors, vectors.norm(dim=-1))
