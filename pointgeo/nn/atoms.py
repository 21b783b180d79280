"""What every interatomic-potential network shares: input checks and the atom, charge and spin embeddings.

A batch of molecules is a ``torch_geometric.data.Batch`` with ``pos (N, 3)`` (Å), ``z (N,)`` long atomic numbers,
``charge (B,)`` long total charge, ``spin (B,)`` long multiplicity ``2S + 1``, ``batch (N,)`` and ``num_graphs``;
periodic structures add ``cell (B, 3, 3)`` and ``pbc (B, 3)``. Networks of the registry's ``potential`` kind are
called ``net(batch) -> energy (B,)``; built with ``direct_forces=True`` they return ``(energy (B,), forces (N, 3))``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

MIN_DISTANCE = 0.1
"""Atoms closer than this (Å) are rejected: no physical structure has them, and a network's radial functions and
unit vectors are meaningless there."""


def graph_index(batch: Any) -> tuple[Tensor, int]:
    """``(batch (N,), B)`` of a PyG batch (one structure when the batch vector is absent)."""
    index = getattr(batch, "batch", None)
    if index is None:
        return torch.zeros(batch.pos.shape[0], dtype=torch.long, device=batch.pos.device), 1
    return index, int(batch.num_graphs)


def per_structure(batch: Any, key: str, num_graphs: int, default: int | None) -> Tensor:
    """A per-structure long field (``charge``, ``spin``) as ``(B,)``; ``ValueError`` when absent without default."""
    value = getattr(batch, key, None)
    if value is None:
        if default is None:
            raise ValueError(f"the batch has no {key!r}: molecules need their total charge and spin multiplicity")
        return torch.full((num_graphs,), default, dtype=torch.long, device=batch.pos.device)
    value = torch.as_tensor(value, device=batch.pos.device).reshape(-1)
    if value.shape[0] != num_graphs:
        raise ValueError(f"batch.{key} must hold one value per structure ({num_graphs}); got {tuple(value.shape)}")
    if value.is_floating_point() and not torch.equal(value, value.round()):
        raise ValueError(f"batch.{key} must be integers; got {value.tolist()[:10]}")
    return value.long()


def check_molecules(batch: Any) -> None:
    """Reject what no network can use: missing or non-float ``pos``, NaN positions, atoms closer than 0.1 Å."""
    pos = getattr(batch, "pos", None)
    if not isinstance(pos, Tensor) or not pos.is_floating_point() or pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError(f"batch.pos must be a float tensor of shape (N, 3); got {getattr(pos, 'shape', pos)}")
    if not torch.isfinite(pos).all():
        bad = (~torch.isfinite(pos)).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"batch.pos contains NaN or inf coordinates (atoms {bad[:10]})")
    z = getattr(batch, "z", None)
    if not isinstance(z, Tensor) or z.shape != pos.shape[:1] or z.is_floating_point():
        raise ValueError(f"batch.z must be an integer tensor of shape (N,) = ({pos.shape[0]},)")


def check_min_distance(distances: Tensor, edge_index: Tensor) -> None:
    """``ValueError`` naming the first pair of atoms closer than :data:`MIN_DISTANCE`."""
    close = distances.detach() < MIN_DISTANCE
    if bool(close.any()):
        k = int(close.nonzero()[0])
        i, j = edge_index[:, k].tolist()
        raise ValueError(f"atoms {i} and {j} are {float(distances[k].detach()):.4f} Å apart; atoms closer than "
                         f"{MIN_DISTANCE} Å are not a physical structure")


class AtomEmbedding(nn.Module):
    """Initial per-atom features: ``Emb_Z(z_i) + Emb_q(q) + Emb_s(s)`` with ``q, s`` the molecule's charge and spin.

    Args:
        channels: feature width ``F``.
        max_z: largest atomic number embedded (default 100).
        max_charge: charges ``-max_charge … +max_charge`` are embedded (OMol25: -10 … +10).
        max_spin: multiplicities ``1 … max_spin`` are embedded (OMol25: 1 … 11).

    Shapes: ``z (N,)``, ``charge (B,)``, ``spin (B,)``, ``batch (N,)`` → ``(N, F)``.
    """

    def __init__(self, channels: int, max_z: int = 100, max_charge: int = 10, max_spin: int = 11) -> None:
        super().__init__()
        self.max_z, self.max_charge, self.max_spin = max_z, max_charge, max_spin
        self.element = nn.Embedding(max_z + 1, channels)
        self.charge = nn.Embedding(2 * max_charge + 1, channels)
        self.spin = nn.Embedding(max_spin, channels)
        for emb in (self.charge, self.spin):  # start neutral: the element embedding alone
            nn.init.normal_(emb.weight, std=0.1)

    def check(self, z: Tensor, charge: Tensor, spin: Tensor) -> None:
        """``ValueError`` naming an atomic number, charge or spin outside the embedding range."""
        if z.numel() and (z.min() < 1 or z.max() > self.max_z):
            bad = z[(z < 1) | (z > self.max_z)].unique().tolist()
            raise ValueError(f"atomic numbers {bad} are outside the embedded range 1..{self.max_z}")
        if charge.numel() and charge.abs().max() > self.max_charge:
            raise ValueError(f"total charge {charge[charge.abs() > self.max_charge].unique().tolist()} is outside the "
                             f"embedded range -{self.max_charge}..{self.max_charge}")
        if spin.numel() and (spin.min() < 1 or spin.max() > self.max_spin):
            bad = spin[(spin < 1) | (spin > self.max_spin)].unique().tolist()
            raise ValueError(f"spin multiplicity {bad} is outside the embedded range 1..{self.max_spin} (2S+1, so a "
                             "singlet is 1; a value of 0 usually means 2S was stored instead of 2S+1)")

    def forward(self, z: Tensor, charge: Tensor, spin: Tensor, batch: Tensor) -> Tensor:
        self.check(z, charge, spin)
        mol = self.charge(charge + self.max_charge) + self.spin(spin - 1)  # (B, F)
        return self.element(z) + mol[batch]

    def molecule(self, charge: Tensor, spin: Tensor) -> Tensor:
        """The per-molecule part ``Emb_q(q) + Emb_s(s)`` ``(B, F)`` alone (checked by :meth:`forward`)."""
        return self.charge(charge + self.max_charge) + self.spin(spin - 1)


def embed_batch(embedding: AtomEmbedding, batch: Any) -> tuple[Tensor, Tensor, int]:
    """Check a molecule batch and embed it: ``(features (N, F), batch index (N,), B)``."""
    check_molecules(batch)
    index, num_graphs = graph_index(batch)
    charge = per_structure(batch, "charge", num_graphs, default=None)
    spin = per_structure(batch, "spin", num_graphs, default=None)
    return embedding(batch.z.long(), charge, spin, index), index, num_graphs


def sum_per_structure(values: Tensor, index: Tensor, num_graphs: int) -> Tensor:
    """``Σ_{i ∈ b} values_i``: ``(N, ...) -> (B, ...)``."""
    out = values.new_zeros((num_graphs, *values.shape[1:]))
    return out.index_add(0, index, values)


def periodic_inputs(batch: Any, num_graphs: int) -> tuple[Tensor | None, Tensor | None]:
    """``(cell (B, 3, 3), pbc (B, 3))`` of a batch, or ``(None, None)`` when no structure is periodic."""
    pbc = getattr(batch, "pbc", None)
    cell = getattr(batch, "cell", None)
    if pbc is None or cell is None or not bool(torch.as_tensor(pbc).any()):
        return None, None
    return cell.reshape(num_graphs, 3, 3), torch.as_tensor(pbc).reshape(num_graphs, 3)
