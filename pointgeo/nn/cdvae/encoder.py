"""CDVAE's encoder: DimeNet++ (Gasteiger et al. 2020) on the periodic radius graph of a crystal, read out by the mean
over atoms (CDVAE ``pl_modules/gnn.py``, ``DimeNetPlusPlusWrap``).

Edges ``(i ← j, S)`` are those of :func:`pointgeo.geometry.periodic_radius_graph`: every image within the cutoff
(no fixed 27 images), each with its vector ``v_ji = x_j − x_i + S L`` (``L`` rows = lattice vectors). Triplets
``k → j → i`` pair an edge ``j → i`` with every edge ``k → j`` except its own reverse (``k = i`` and
``S_kj = −S_ji``; the same atom ``i`` in another cell is a genuine neighbour of ``j`` in a periodic crystal and is
kept). The angle of a triplet is that of torch-geometric's DimeNet++, ``atan2(‖v_ji × v_kj‖, v_ji · v_kj)``.

The blocks are torch-geometric's (``BesselBasisLayer``, ``InteractionPPBlock``, ``OutputPPBlock``); the embedding
block is built here because torch-geometric's embeds only ``Z < 95``, and the spherical basis
(:mod:`pointgeo.nn.cdvae.basis`) because torch-geometric's derives its functions with sympy when it is built,
which takes minutes on a loaded CPU (the values are the same). With
``m_ji`` the edge messages (embedding ``σ(W [h_i ‖ h_j ‖ σ(W_rbf e_RBF(d_ji))])``), each interaction block updates
them from the triplets (DimeNet++ eq. of Gasteiger et al. 2020) and each output block adds
``Σ_j W_rbf e_RBF(d_ji) ∘ m_ji`` mapped by an MLP to the atom's output; ``h = mean_i Σ_blocks P_i`` (CDVAE's
``readout: mean``). The output layers start from a random (Glorot-orthogonal) matrix rather than torch-geometric's
default zeros, so an untrained encoder already depends on its input.

Everything depends on distances and angles of the periodic crystal only, so the output is invariant to rotations
of the cell, to translations of all atoms (mod the lattice), to permutations of atoms and to the choice of cell
basis: exactly, up to rounding, checked by :mod:`pointgeo.testing.crystals`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn.models.dimenet import BesselBasisLayer, InteractionPPBlock, OutputPPBlock
from torch_geometric.utils import scatter

from pointgeo.geometry import NeighborList, periodic_radius_graph
from pointgeo.nn.cdvae.basis import SphericalBasis

MIN_EDGE_LENGTH = 1e-3
"""Å: edges shorter than this (atoms on top of each other, e.g. in a noised or generated crystal) are dropped; their
direction is undefined and the radial basis diverges there."""


def crystal_graph(frac: Tensor, cell: Tensor, batch: Tensor, cutoff: float,
                  max_neighbors: int | None) -> NeighborList:
    """The periodic radius graph both CDVAE networks use: every image within ``cutoff``, optionally the nearest
    ``max_neighbors`` of each atom *with ties kept* (the kept set depends on distances only, so symmetry holds where
    many neighbours are equidistant), edges shorter than :data:`MIN_EDGE_LENGTH` dropped."""
    graph = periodic_radius_graph(frac, cell, cutoff, batch, max_neighbors=max_neighbors,
                                  keep_ties=max_neighbors is not None)
    keep = graph.distances.detach() >= MIN_EDGE_LENGTH
    if bool(keep.all()):
        return graph
    return NeighborList(graph.edge_index[:, keep], graph.shifts[keep], graph.vectors[keep], graph.distances[keep])


def periodic_triplets(edge_index: Tensor, shifts: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Triplets ``k → j → i`` of a periodic multigraph, vectorised (no loop over atoms or edges).

    Args:
        edge_index: ``(2, E)`` rows ``(i, j)`` (``i`` the target, ``j`` the source), **sorted by** ``i`` (as
            :func:`~pointgeo.geometry.periodic_radius_graph` returns them).
        shifts: ``(E, 3)`` long cell shifts ``S`` of the edges (``v_ji = x_j − x_i + S L``).
        num_nodes: atoms ``N``.

    Returns:
        ``(idx_kj (T,), idx_ji (T,))``: for every triplet the index of edge ``k → j`` (target ``j``) and of edge
        ``j → i``; the reverse of ``j → i`` (``k = i``, ``S_kj = −S_ji``) is excluded.
    """
    target, source = edge_index
    counts = torch.bincount(target, minlength=num_nodes)
    first = torch.cumsum(counts, 0) - counts  # the first edge of each target (edges sorted by target)
    per_edge = counts[source]  # edges into j, for every edge j -> i
    idx_ji = torch.repeat_interleave(torch.arange(target.shape[0], device=target.device), per_edge)
    start = torch.cumsum(per_edge, 0) - per_edge
    local = torch.arange(idx_ji.shape[0], device=target.device) - start[idx_ji]
    idx_kj = first[source[idx_ji]] + local
    reverse = (source[idx_kj] == target[idx_ji]) & (shifts[idx_kj] == -shifts[idx_ji]).all(-1)
    return idx_kj[~reverse], idx_ji[~reverse]


class EdgeEmbedding(nn.Module):
    """DimeNet's embedding block with a ``1..max_z`` vocabulary: ``(z (N,), rbf (E, R), i, j) -> m (E, H)``."""

    def __init__(self, num_radial: int, hidden: int, max_z: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(max_z + 1, hidden)
        nn.init.uniform_(self.emb.weight, -math.sqrt(3), math.sqrt(3))
        self.lin_rbf = nn.Linear(num_radial, hidden)
        self.lin = nn.Linear(3 * hidden, hidden)

    def forward(self, z: Tensor, rbf: Tensor, i: Tensor, j: Tensor) -> Tensor:
        h = self.emb(z)
        rbf = nn.functional.silu(self.lin_rbf(rbf))
        return nn.functional.silu(self.lin(torch.cat([h[i], h[j], rbf], dim=-1)))


class PeriodicDimeNetPP(nn.Module):
    """The invariant crystal encoder: ``(frac (N, 3), atom_types (N,), cell (B, 3, 3), batch (N,)) -> (B, out)``.

    Args:
        out_channels: output width (CDVAE: the latent size, 256).
        hidden, int_emb, basis_emb, out_emb: DimeNet++ widths (CDVAE: 128, 64, 8, 256).
        num_blocks: interaction blocks (4).
        num_spherical, num_radial: basis sizes (7, 6).
        cutoff: radius graph cutoff, Å (7).
        max_neighbors: nearest neighbours kept per atom, ties kept (CDVAE's on-the-fly graphs: 20; ``None``: all).
        envelope_exponent, num_before_skip, num_after_skip, num_output_layers: (5, 1, 2, 3).
        max_z: largest atomic number embedded (100).
    """

    def __init__(self, out_channels: int = 256, hidden: int = 128, num_blocks: int = 4, int_emb: int = 64,
                 basis_emb: int = 8, out_emb: int = 256, num_spherical: int = 7, num_radial: int = 6,
                 cutoff: float = 7.0, max_neighbors: int | None = 20, envelope_exponent: int = 5,
                 num_before_skip: int = 1, num_after_skip: int = 2, num_output_layers: int = 3,
                 max_z: int = 100) -> None:
        super().__init__()
        self.cutoff, self.max_neighbors = float(cutoff), max_neighbors
        act = nn.functional.silu
        self.rbf = BesselBasisLayer(num_radial, self.cutoff, envelope_exponent)
        self.sbf = SphericalBasis(num_spherical, num_radial, self.cutoff, envelope_exponent)
        self.emb = EdgeEmbedding(num_radial, hidden, max_z)
        self.output_blocks = nn.ModuleList(
            OutputPPBlock(num_radial, hidden, out_emb, out_channels, num_output_layers, act,
                          output_initializer="glorot_orthogonal")
            for _ in range(num_blocks + 1))
        self.interaction_blocks = nn.ModuleList(
            InteractionPPBlock(hidden, int_emb, basis_emb, num_spherical, num_radial, num_before_skip,
                               num_after_skip, act)
            for _ in range(num_blocks))

    def forward(self, frac: Tensor, atom_types: Tensor, cell: Tensor, batch: Tensor) -> Tensor:
        num_nodes, num_crystals = frac.shape[0], cell.shape[0]
        graph = crystal_graph(frac, cell, batch, self.cutoff, self.max_neighbors)
        i, j = graph.edge_index
        idx_kj, idx_ji = periodic_triplets(graph.edge_index, graph.shifts, num_nodes)
        v = graph.vectors
        dot = (v[idx_ji] * v[idx_kj]).sum(-1)
        cross = torch.linalg.cross(v[idx_ji], v[idx_kj], dim=-1).norm(dim=-1)
        angle = torch.atan2(cross, dot)
        rbf = self.rbf(graph.distances)
        sbf = self.sbf(graph.distances, angle, idx_kj)
        m = self.emb(atom_types, rbf, i, j)
        out = self.output_blocks[0](m, rbf, i, num_nodes=num_nodes)
        for interaction, output in zip(self.interaction_blocks, self.output_blocks[1:]):
            m = interaction(m, rbf, sbf, idx_kj, idx_ji)
            out = out + output(m, rbf, i, num_nodes=num_nodes)
        return scatter(out, batch, dim=0, dim_size=num_crystals, reduce="mean")
