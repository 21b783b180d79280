"""CDVAE's score decoder, made testably equivariant: it takes the **lattice matrix and Cartesian positions**.

Deviation from CDVAE's code: the released decoder is GemNet-T (``pl_modules/decoder.py``, ``gemnet/gemnet.py``)
called on lattice *parameters*, from which it rebuilds a canonical cell, so a rotation of the input is undone before
the network sees it and its equivariance is assumed, not shown. Here the decoder is PaiNN-style message passing
(Schütt et al. 2021; the blocks of :mod:`pointgeo.nn.painn`) on the periodic radius graph of the cell it is given
(every image within the cutoff, :func:`~pointgeo.nn.cdvae.encoder.crystal_graph`). With ``v_ij = x_j − x_i + S L``,
``d_ij = ‖v_ij‖``, ``u_ij = v_ij / d_ij``:

* conditioning (as CDVAE): ``s_i⁰ = W [Emb(Z_i) ‖ z_{b(i)}]``, ``v_i⁰ = 0``;
* ``L`` PaiNN layers (message eq. 7–8, update eq. 9–11) on ``(s, v)``;
* score (GemNet's direct-force form): ``ŝ_i = Σ_j φ(s_i, s_j, d_ij) u_ij + W_v v_i`` with ``φ`` an MLP of the two
  atoms' scalars times a radial filter, faded out by the cosine envelope;
* type logits ``MLP(s_i)`` over the elements ``1..max_z``.

``s`` and ``φ`` depend on distances only and ``v``, ``u`` turn with the cell, so ``ŝ(X Rᵀ, L Rᵀ) = ŝ(X, L) Rᵀ``
(row vectors) and the type logits are invariant; translations, permutations, a change of cell basis and moving one
atom by a lattice vector change nothing (checked by :mod:`pointgeo.testing.crystals`). The score is in units of
``1/σ`` (it approximates ``Δ / σ``, ``Δ`` the minimum-image displacement from the noisy to the clean position).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointgeo.geometry import cart_to_frac
from pointgeo.nn.cdvae.encoder import crystal_graph
from pointgeo.nn.painn import PaiNNMessage, PaiNNUpdate, RadialBasis


class EquivariantScoreDecoder(nn.Module):
    """``(z (B, D), pos (N, 3), atom_types (N,), cell (B, 3, 3), batch (N,)) -> (score (N, 3), logits (N, max_z))``.

    Args:
        latent_dim: ``D``.
        hidden: feature width (CDVAE's GemNet: 128).
        num_layers: message-passing layers (CDVAE's GemNet: 3 interaction blocks).
        num_basis: radial basis functions.
        cutoff: radius graph cutoff, Å (CDVAE: 7).
        max_neighbors: nearest neighbours kept per atom, ties kept (CDVAE: 20; ``None``: all).
        max_z: largest atomic number (the type vocabulary, 100).
    """

    def __init__(self, latent_dim: int = 256, hidden: int = 128, num_layers: int = 3, num_basis: int = 32,
                 cutoff: float = 7.0, max_neighbors: int | None = 20, max_z: int = 100) -> None:
        super().__init__()
        self.cutoff, self.max_neighbors, self.hidden = float(cutoff), max_neighbors, hidden
        self.embedding = nn.Embedding(max_z + 1, hidden)
        self.condition = nn.Linear(hidden + latent_dim, hidden)
        self.rbf = RadialBasis(num_basis, self.cutoff)
        self.messages = nn.ModuleList(PaiNNMessage(hidden, num_basis) for _ in range(num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(hidden) for _ in range(num_layers))
        self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.edge_filter = nn.Linear(num_basis, hidden)
        self.edge_out = nn.Linear(hidden, 1, bias=False)
        self.vector_out = nn.Linear(hidden, 1, bias=False)
        self.type_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, max_z))

    def forward(self, z: Tensor, pos: Tensor, atom_types: Tensor, cell: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        frac = cart_to_frac(pos, cell, batch)
        graph = crystal_graph(frac, cell, batch, self.cutoff, self.max_neighbors)
        i, j = graph.edge_index
        rbf, envelope = self.rbf(graph.distances)
        unit = graph.vectors / graph.distances.unsqueeze(-1)
        s = self.condition(torch.cat([self.embedding(atom_types), z[batch]], dim=-1))
        v = s.new_zeros(s.shape[0], 3, self.hidden)
        edge_index = graph.edge_index.flip(0)  # messages flow from j (source) to i (target)
        for message, update in zip(self.messages, self.updates):
            ds, dv = message(s, v, edge_index, rbf, envelope, unit)
            s, v = s + ds, v + dv
            ds, dv = update(s, v)
            s, v = s + ds, v + dv
        pair = self.edge_mlp(torch.cat([s[i], s[j]], dim=-1))
        weight = self.edge_out(pair * self.edge_filter(rbf) * envelope.unsqueeze(-1))  # (E, 1)
        score = s.new_zeros(s.shape[0], 3).index_add_(0, i, weight * unit) + self.vector_out(v).squeeze(-1)
        return score, self.type_head(s)
