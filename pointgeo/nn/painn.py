"""PaiNN: polarizable atom interaction neural network (Schütt, Unke, Gastegger, ICML 2021), an exactly
equivariant message-passing potential on torch-geometric's ``MessagePassing``.

Every atom carries scalars ``s_i ∈ R^F`` and vectors ``v_i ∈ R^{3×F}``; ``v^0 = 0`` and ``s^0`` is the atom's
embedding with the molecule's charge and spin (:class:`pointgeo.nn.atoms.AtomEmbedding`). Each of ``L`` layers
applies, with ``r_ij = r_j − r_i`` over the radius graph (:func:`pointgeo.geometry.neighbor_list`):

* message (eq. 7–8): ``(a, b, c)_ij = φ(s_j) ∘ W(‖r_ij‖)``, ``φ`` an MLP ``F → 3F`` and ``W`` a linear map of
  ``sin(nπ r / r_c) / r`` (n = 1..K), times the cosine cutoff ``½(cos(π r / r_c) + 1)`` (the energy and forces are
  continuous as atoms cross the cutoff);
  ``Δs_i = Σ_j a_ij``, ``Δv_i = Σ_j b_ij v_j + c_ij r_ij / ‖r_ij‖``.
* update (eq. 9–11): ``U v, V v`` (linear over channels), ``(a_vv, a_sv, a_ss) = MLP([s, ‖V v‖])``,
  ``Δv = a_vv ∘ U v``, ``Δs = a_ss + a_sv ∘ ⟨U v, V v⟩``.

Energy: ``E = Σ_i MLP(s_i^L) + e_Z(z_i)`` (a learned per-element offset). Rotations act on ``v`` only and every
operation above commutes with them, so ``E`` is invariant and ``−∂E/∂r`` equivariant exactly (up to rounding); the
optional direct force head ``F_i = v_i^L w`` is equivariant too but not a gradient (not conservative).
The paper's ``‖V v‖`` is not differentiable at ``V v = 0``, which symmetric molecules reach exactly (the central
atom of CH4 or SF6 has ``v = 0`` by symmetry); the common ``sqrt(Σ (Vv)² + ε)`` with a tiny ``ε`` is smooth but
curves on the scale ``√ε`` there, so forces vary wildly within 1e-4 Å. This module uses the smooth
``sqrt(Σ (Vv)² + 1) − 1`` instead (``≈ ½‖Vv‖²`` near 0, ``≈ ‖Vv‖ − 1`` beyond 1): still an invariant of ``v``,
so the equivariance is untouched.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from pointgeo.geometry import neighbor_list
from pointgeo.nn.atoms import AtomEmbedding, check_min_distance, embed_batch, periodic_inputs, sum_per_structure
from pointgeo.registry import register_model



class RadialBasis(nn.Module):
    """``sin(n π r / r_c) / r`` for ``n = 1..K`` and the cosine cutoff: ``(E,) -> ((E, K), (E,))`` (PaiNN eq. 7)."""

    def __init__(self, num_basis: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("freq", torch.arange(1, num_basis + 1, dtype=torch.float32) * math.pi / cutoff)

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor]:
        envelope = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0) * (r < self.cutoff)
        return torch.sin(r[:, None] * self.freq.to(r.dtype)) / r[:, None], envelope


class PaiNNMessage(MessagePassing):
    """The message block (eq. 7–8): ``(s (N, F), v (N, 3, F)) -> (Δs (N, F), Δv (N, 3, F))``."""

    def __init__(self, channels: int, num_basis: int) -> None:
        super().__init__(aggr="add", node_dim=0)
        self.channels = channels
        self.phi = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, 3 * channels))
        self.filter = nn.Linear(num_basis, 3 * channels)

    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, rbf: Tensor, envelope: Tensor,
                unit: Tensor) -> tuple[Tensor, Tensor]:
        out = self.propagate(edge_index, phi=self.phi(s), v=v, rbf=rbf, envelope=envelope, unit=unit)  # (N, 4, F)
        return out[:, 0], out[:, 1:]

    def message(self, phi_j: Tensor, v_j: Tensor, rbf: Tensor, envelope: Tensor, unit: Tensor) -> Tensor:
        # The envelope multiplies the whole filter (bias included), so an edge fades out smoothly at the cutoff.
        w = self.filter(rbf) * envelope.unsqueeze(-1)
        a, b, c = (phi_j * w).split(self.channels, dim=-1)  # (E, F) each
        dv = b.unsqueeze(1) * v_j + c.unsqueeze(1) * unit.unsqueeze(-1)  # (E, 3, F)
        return torch.cat([a.unsqueeze(1), dv], dim=1)


class PaiNNUpdate(nn.Module):
    """The update block (eq. 9–11): ``(s, v) -> (Δs, Δv)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.uv = nn.Linear(channels, 2 * channels, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * channels, channels), nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        u, w = self.uv(v).split(self.channels, dim=-1)  # (N, 3, F) each
        norm = torch.sqrt(w.pow(2).sum(1) + 1.0) - 1.0  # a smooth invariant of v (see the module docstring)
        a_vv, a_sv, a_ss = self.mlp(torch.cat([s, norm], dim=-1)).split(self.channels, dim=-1)
        return a_ss + a_sv * (u * w).sum(1), a_vv.unsqueeze(1) * u


class PaiNN(nn.Module):
    """PaiNN energy model ``net(batch) -> energy (B,)`` (or ``(energy, forces (N, 3))`` with the direct head).

    Args:
        channels: feature width ``F`` (paper: 128).
        num_layers: interaction layers ``L`` (paper: 3).
        num_basis: radial basis functions ``K`` (paper: 20).
        cutoff: radius graph cutoff ``r_c`` in Å (paper: 5).
        max_z, max_charge, max_spin: embedding ranges (see :class:`~pointgeo.nn.atoms.AtomEmbedding`).
        direct_forces: add the non-conservative force head ``F_i = v_i^L w``.
    """

    def __init__(self, channels: int = 128, num_layers: int = 3, num_basis: int = 20, cutoff: float = 5.0,
                 max_z: int = 100, max_charge: int = 10, max_spin: int = 11, direct_forces: bool = False) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.direct_forces = direct_forces
        self.embedding = AtomEmbedding(channels, max_z, max_charge, max_spin)
        self.rbf = RadialBasis(num_basis, self.cutoff)
        self.messages = nn.ModuleList(PaiNNMessage(channels, num_basis) for _ in range(num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(channels) for _ in range(num_layers))
        self.head = nn.Sequential(nn.Linear(channels, channels // 2), nn.SiLU(), nn.Linear(channels // 2, 1))
        self.element_energy = nn.Embedding(max_z + 1, 1)
        nn.init.zeros_(self.element_energy.weight)
        self.force_head = nn.Linear(channels, 1, bias=False) if direct_forces else None

    def forward(self, batch: Any) -> Tensor | tuple[Tensor, Tensor]:
        s, index, num_graphs = embed_batch(self.embedding, batch)
        s = s.to(batch.pos.dtype)
        cell, pbc = periodic_inputs(batch, num_graphs)
        graph = neighbor_list(batch.pos, self.cutoff, index, cell=cell, pbc=pbc)
        check_min_distance(graph.distances, graph.edge_index)
        edge_index = graph.edge_index.flip(0)  # messages flow from j (source) to i (target)
        rbf, envelope = self.rbf(graph.distances)
        unit = graph.vectors / graph.distances.unsqueeze(-1)
        v = s.new_zeros(s.shape[0], 3, s.shape[1])
        for message, update in zip(self.messages, self.updates):
            ds, dv = message(s, v, edge_index, rbf, envelope, unit)
            s, v = s + ds, v + dv
            ds, dv = update(s, v)
            s, v = s + ds, v + dv
        atomic = self.head(s).squeeze(-1) + self.element_energy(batch.z.long()).squeeze(-1)
        energy = sum_per_structure(atomic, index, num_graphs)
        if self.force_head is None:
            return energy
        return energy, self.force_head(v).squeeze(-1)


_TEST_KWARGS = {"channels": 16, "num_layers": 2, "num_basis": 8, "cutoff": 4.0}


@register_model("painn", task="potential", invariance="equivariant", test_kwargs=_TEST_KWARGS)
def painn(channels: int = 128, num_layers: int = 3, num_basis: int = 20, cutoff: float = 5.0, max_z: int = 100,
          max_charge: int = 10, max_spin: int = 11, direct_forces: bool = False) -> PaiNN:
    """PaiNN (Schütt et al. 2021): E invariant, forces equivariant exactly; charge and spin embedded."""
    return PaiNN(channels, num_layers, num_basis, cutoff, max_z, max_charge, max_spin, direct_forces)
