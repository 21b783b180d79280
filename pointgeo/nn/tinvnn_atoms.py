"""TinvNN for molecules: a canonical (PCA / classical-MDS) initial representation around an atom-token transformer.

Each molecule's centred positions ``X_c`` are expressed in their principal-axis frame ``V``
(:func:`pointgeo.geometry.frames.canonical_frame`, a proper rotation), ``Y = X_c V``, and the transformer
(:class:`pointgeo.nn.atom_transformer.AtomTransformer`) predicts per-atom energies from ``Y`` with the atomic
numbers, charge and spin. The energy is averaged over the 4 proper sign flips ``S`` of the axes (frame averaging,
Puny et al. 2022): ``E = ¼ Σ_S E_net(X_c V S)``.

Forces ``−∂E/∂r`` must be the gradient of that energy, so the frame carries gradient: the centroid and the scatter
``S = X_cᵀ X_c`` are differentiable, and the eigenvectors' dependence on ``S`` is attached by
:func:`pointgeo.geometry.attach_frame_gradient` (the first-order perturbation of the eigenvectors, broadened at
near-equal eigenvalues).

What is guaranteed (float64 ≤ 1e-8 relative for ``E`` and ``F`` in the harness):

* **Pairwise distinct eigenvalues** (any molecule without an axis of 3-fold or higher symmetry, e.g. water,
  ethanol, random conformers): ``E`` exactly invariant to rotations, translations and permutations of atoms,
  forces exactly equivariant and equal to the true gradient (the frame averaging removes the sign ambiguity; the
  third-moment signs never matter).
* **Mirror-symmetric** molecules (water, ethylene: distinct eigenvalues, vanishing third moments) are covered: the
  frame averaging makes the third-moment signs irrelevant.
* **Linear** molecules (CO2: λ2 = λ3 = 0) are covered too: their perpendicular coordinates are zero whatever the
  two arbitrary axes, so ``E`` is invariant; the sign flips make the averaged energy even in each perpendicular
  coordinate, so the perpendicular forces vanish, as the molecule's symmetry demands, and the forces are
  equivariant (measured: float64 ~1e-15, finite differences ~1e-11).
* **Repeated non-zero eigenvalues** are where the frame breaks: planar benzene (λ1 = λ2 in plane), tetrahedral
  CH4 and octahedral SF6 (λ1 = λ2 = λ3: the frame is an arbitrary rotation). There neither ``E`` nor ``F`` is
  guaranteed; they are deterministic and finite (the broadened gradient), but not invariant (measured: relative
  energy errors ~1e-4, force errors of order 1 in float64).
* **Near-degenerate** molecules (a symmetric molecule slightly distorted, relative gap ``g = (λ_i − λ_j) / λ_1``):
  invariance holds up to the float rounding amplified by ``1/g``, and the frame's gradient has condition
  ``~1/g``: forces change as fast as ``1/g`` with the geometry, so a molecule vibrating around a symmetric
  equilibrium (CH4 at rest) meets a stiff, rapidly turning frame. The tests measure both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from pointgeo.geometry import attach_frame_gradient, canonical_frame, sign_flips
from pointgeo.nn.atom_transformer import AtomTransformer, EnergyHead
from pointgeo.nn.atoms import check_molecules, graph_index, per_structure
from pointgeo.registry import register_model

DEGENERATE = {
    "C6H6": "planar hexagon: the two in-plane axes are arbitrary (λ1 = λ2)",
    "CH4": "tetrahedral: all three eigenvalues are equal, the frame is an arbitrary rotation",
    "SF6": "octahedral: all three eigenvalues are equal, the frame is an arbitrary rotation",
}
"""The adversarial molecules outside TinvNN's guarantee, with the reason (see the module docstring)."""


def dense_molecules(batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Pad a PyG batch: ``(pos (B, N, 3), z (B, N), mask (B, N), charge (B,), spin (B,), index (N_total,))``."""
    check_molecules(batch)
    index, num_graphs = graph_index(batch)
    pos, mask = to_dense_batch(batch.pos, index, batch_size=num_graphs)
    z, _ = to_dense_batch(batch.z.long(), index, batch_size=num_graphs)
    charge = per_structure(batch, "charge", num_graphs, default=None)
    spin = per_structure(batch, "spin", num_graphs, default=None)
    return pos, z, mask, charge, spin, index


class TinvNNAtoms(nn.Module):
    """TinvNN potential ``net(batch) -> energy (B,)`` (or ``(energy, forces (N, 3))`` with the direct head).

    Args:
        channels, num_layers, heads, num_basis, radius: the transformer's (see
            :class:`~pointgeo.nn.atom_transformer.AtomTransformer`).
        max_z, max_charge, max_spin: embedding ranges.
        frame_gradient: let the frame carry gradient (needed for true forces; ``False`` only to show the error of
            forces that ignore the frame's motion).
        direct_forces: add a direct force head (per-atom vectors predicted in the canonical frame and turned back,
            averaged over the sign flips: equivariant, not conservative).
    """

    def __init__(self, channels: int = 128, num_layers: int = 4, heads: int = 8, num_basis: int = 32,
                 radius: float = 12.0, max_z: int = 100, max_charge: int = 10, max_spin: int = 11,
                 frame_gradient: bool = True, direct_forces: bool = False) -> None:
        super().__init__()
        self.backbone = AtomTransformer(channels, num_layers, heads, num_basis, radius, max_z, max_charge, max_spin)
        self.energy = EnergyHead(channels, max_z)
        self.frame_gradient = frame_gradient
        self.direct_forces = direct_forces
        self.force_head = nn.Linear(channels, 3, bias=False) if direct_forces else None

    def canonicalize(self, pos: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Canonical coordinates ``(B, 4, N, 3)`` of padded molecules and their frames ``(B, 4, 3, 3)``."""
        w = mask.to(pos.dtype)
        centroid = (pos * w.unsqueeze(-1)).sum(1, keepdim=True) / w.sum(1)[:, None, None]
        centred = (pos - centroid) * w.unsqueeze(-1)
        with torch.no_grad():
            # The eigen-problem in float64 whatever the dtype (float32 eigenvectors add ~1e-7 / gap of their own).
            frame, _ = canonical_frame(pos.detach().double(), weights=w.double())
        frame = frame.to(pos.dtype)
        if self.frame_gradient:
            frame = attach_frame_gradient(centred.transpose(-1, -2) @ centred, frame)
        frames = sign_flips(frame)  # (B, 4, 3, 3)
        return centred.unsqueeze(1) @ frames, frames

    def forward(self, batch: Any) -> Tensor | tuple[Tensor, Tensor]:
        pos, z, mask, charge, spin, index = dense_molecules(batch)
        coords, frames = self.canonicalize(pos, mask)
        b, f, n, _ = coords.shape
        rep = lambda t: t.repeat_interleave(f, dim=0)  # noqa: E731  (per-molecule inputs follow their frames)
        h = self.backbone(coords.reshape(b * f, n, 3), rep(z), rep(charge), rep(spin), rep(mask))
        energy = self.energy(h, rep(z), rep(mask)).reshape(b, f).mean(1)
        if self.force_head is None:
            return energy
        local = self.force_head(h).reshape(b, f, n, 3)
        forces = (local @ frames.transpose(-1, -2)).mean(1)  # back to the input frame: F = F_c Vᵀ
        return energy, forces[mask]


_TEST_KWARGS = {"channels": 16, "num_layers": 2, "heads": 2, "num_basis": 8, "radius": 6.0}


@register_model("tinvnn_atoms", task="potential", invariance="invariant", test_kwargs=_TEST_KWARGS,
                not_guaranteed=DEGENERATE)
def tinvnn_atoms(channels: int = 128, num_layers: int = 4, heads: int = 8, num_basis: int = 32, radius: float = 12.0,
                 max_z: int = 100, max_charge: int = 10, max_spin: int = 11, frame_gradient: bool = True,
                 direct_forces: bool = False) -> TinvNNAtoms:
    """TinvNN around an atom transformer: E exactly invariant (distinct principal moments), forces its gradient."""
    return TinvNNAtoms(channels, num_layers, heads, num_basis, radius, max_z, max_charge, max_spin, frame_gradient,
                       direct_forces)
