"""TransIP-style potential (Elhag et al., arXiv 2510.00027): a plain atom transformer that *learns* equivariance.

What the paper's abstract and the authors' post say: a generic transformer over atoms-as-tokens, no equivariant
layers, pushed towards SO(3) equivariance by a contrastive objective that aligns the latent embeddings of rotated
copies of a molecule through a learned transformation network. Nothing else of the paper (token construction,
which latent, the loss, the transformation network's form, the weights) could be read, so the rest is a
**stand-in design** (marked as such, to be replaced by the paper's choices):

* backbone: :class:`pointgeo.nn.atom_transformer.AtomTransformer` on centred Cartesian coordinates
  ``x̃_i = x_i − x̄`` (exact translation invariance; rotations are *not* handled by construction), the same
  backbone as :mod:`pointgeo.nn.tinvnn_atoms` without the canonical frame;
* latent ``u = g(mean_i h_i)`` (``g`` a two-layer projector); transformation network
  ``T(u, R) = MLP([u ; vec R])``; objective (InfoNCE, temperature ``τ``) over a batch of ``B`` molecules:
  ``L_con = −(1/B) Σ_k log( exp(sim(T(u_k, R_k), v_k)/τ) / Σ_m exp(sim(T(u_k, R_k), v_m)/τ) )``, ``v = u(R x)``,
  ``sim`` the cosine (:func:`contrastive_loss`; trained by :class:`pointgeo.tasks.potential.TransIPPotentialTask`);
* energy ``E = Σ_i MLP(h_i) + e_Z(z_i)``; forces by autograd (conservative) or the direct head (``W h_i``).

Guarantee: ``approximate``. The energy is exactly translation and permutation invariant, and its rotation error is
whatever training leaves: :func:`pointgeo.testing.potentials.learned_equivariance_error` measures it (for the robustness report).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointgeo.geometry import MOLECULE_FIELDS, apply_rigid_motion
from pointgeo.nn.atom_transformer import AtomTransformer, EnergyHead
from pointgeo.nn.tinvnn_atoms import dense_molecules
from pointgeo.registry import register_model


class TransIP(nn.Module):
    """TransIP-style potential ``net(batch) -> energy (B,)`` (``(energy, forces (N, 3))`` with the direct head).

    Args:
        channels, num_layers, heads, num_basis, radius: the transformer's.
        max_z, max_charge, max_spin: embedding ranges.
        latent_dim: width of the contrastive latent ``u``.
        direct_forces: add the direct force head (neither equivariant nor conservative by construction).
    """

    def __init__(self, channels: int = 128, num_layers: int = 4, heads: int = 8, num_basis: int = 32,
                 radius: float = 12.0, max_z: int = 100, max_charge: int = 10, max_spin: int = 11,
                 latent_dim: int = 64, direct_forces: bool = False) -> None:
        super().__init__()
        self.backbone = AtomTransformer(channels, num_layers, heads, num_basis, radius, max_z, max_charge, max_spin)
        self.energy = EnergyHead(channels, max_z)
        self.projector = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, latent_dim))
        self.transformation = nn.Sequential(nn.Linear(latent_dim + 9, 2 * latent_dim), nn.SiLU(),
                                            nn.Linear(2 * latent_dim, latent_dim))
        self.direct_forces = direct_forces
        self.force_head = nn.Linear(channels, 3, bias=False) if direct_forces else None

    def states(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(h (B, N, C), z (B, N), mask (B, N))`` of a batch (centred coordinates)."""
        pos, z, mask, charge, spin, _ = dense_molecules(batch)
        w = mask.to(pos.dtype).unsqueeze(-1)
        centred = (pos - (pos * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)) * w
        return self.backbone(centred, z, charge, spin, mask), z, mask

    def latent(self, batch: Any) -> Tensor:
        """The contrastive latent ``u = g(mean_i h_i)`` ``(B, latent_dim)``."""
        h, _, mask = self.states(batch)
        w = mask.to(h.dtype).unsqueeze(-1)
        return self.projector((h * w).sum(1) / w.sum(1))

    def transform(self, latent: Tensor, rotation: Tensor) -> Tensor:
        """``T(u, R)``: the latent expected of the molecule rotated by ``R (B, 3, 3)``."""
        return self.transformation(torch.cat([latent, rotation.reshape(-1, 9).to(latent.dtype)], -1))

    def forward(self, batch: Any) -> Tensor | tuple[Tensor, Tensor]:
        h, z, mask = self.states(batch)
        energy = self.energy(h, z, mask)
        if self.force_head is None:
            return energy
        return energy, self.force_head(h)[mask]


def contrastive_loss(net: TransIP, batch: Any, rotation: Tensor, temperature: float = 0.1) -> Tensor:
    """InfoNCE between ``T(u(x), R)`` and ``u(R x)`` over the molecules of a batch (positives on the diagonal)."""
    predicted = F.normalize(net.transform(net.latent(batch), rotation), dim=-1)
    target = F.normalize(net.latent(apply_rigid_motion(batch, MOLECULE_FIELDS, rotation)), dim=-1)
    logits = predicted @ target.transpose(0, 1) / temperature
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


_TEST_KWARGS = {"channels": 16, "num_layers": 2, "heads": 2, "num_basis": 8, "radius": 6.0, "latent_dim": 8}


@register_model("transip", task="potential", invariance="approximate", test_kwargs=_TEST_KWARGS)
def transip(channels: int = 128, num_layers: int = 4, heads: int = 8, num_basis: int = 32, radius: float = 12.0,
            max_z: int = 100, max_charge: int = 10, max_spin: int = 11, latent_dim: int = 64,
            direct_forces: bool = False) -> TransIP:
    """TransIP-style atom transformer (stand-in design): equivariance learned by contrastive alignment."""
    return TransIP(channels, num_layers, heads, num_basis, radius, max_z, max_charge, max_spin, latent_dim,
                   direct_forces)
