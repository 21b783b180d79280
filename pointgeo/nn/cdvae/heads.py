"""CDVAE's heads on the encoder output and on the latent (CDVAE ``pl_modules/model.py``; ``conf/model/vae.yaml``).

* :class:`LatentHead`: ``μ = W_μ h``, ``log σ² = W_σ h`` (``h`` the encoder output) and the reparameterised
  ``z = μ + exp(½ log σ²) ε``.
* :class:`LatentHeads`: MLPs ``Linear(D, H), ReLU, (Linear(H, H), ReLU)×(layers−1), Linear(H, out)`` on ``z``
  (CDVAE's ``build_mlp`` with ``fc_num_layers``):

  - ``num_atoms``: logits over ``0..max_atoms`` atoms;
  - ``lattice``: the 6 standardised lattice numbers (``[a, b, c] / N^(1/3)`` and ``[α, β, γ]``, standardised by
    the training set's scaler; :func:`pointgeo.datamodules.crystals.lattice_features`);
  - ``composition``: logits over the elements ``1..max_z`` (CDVAE repeats ``z`` for every atom, so the per-atom
    logits of a crystal are one composition distribution; computed once per crystal here);
  - ``property``: the standardised property (``predict_property``).

All heads read ``z`` only, so they inherit the encoder's invariances.
"""

from __future__ import annotations

from torch import Tensor, nn


def mlp(in_dim: int, hidden: int, out_dim: int, num_layers: int) -> nn.Sequential:
    """CDVAE's ``build_mlp``: ``num_layers`` hidden ``Linear + ReLU`` layers, then ``Linear(hidden, out_dim)``."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


class LatentHead(nn.Module):
    """``h (B, C) -> (μ (B, D), log σ² (B, D))``."""

    def __init__(self, in_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.log_var = nn.Linear(in_dim, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu(h), self.log_var(h)


class LatentHeads(nn.Module):
    """The invariant predictions from ``z (B, D)``: ``{"num_atoms" (B, max_atoms + 1), "lattice" (B, 6),
    "composition" (B, max_z), "property" (B, P)}`` (``property`` only with ``num_properties > 0``)."""

    def __init__(self, latent_dim: int, hidden: int, num_layers: int, max_atoms: int, max_z: int,
                 num_properties: int) -> None:
        super().__init__()
        self.num_atoms = mlp(latent_dim, hidden, max_atoms + 1, num_layers)
        self.lattice = mlp(latent_dim, hidden, 6, num_layers)
        self.composition = mlp(latent_dim, hidden, max_z, num_layers)
        self.property = mlp(latent_dim, hidden, num_properties, num_layers) if num_properties > 0 else None

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        out = {"num_atoms": self.num_atoms(z), "lattice": self.lattice(z), "composition": self.composition(z)}
        if self.property is not None:
            out["property"] = self.property(z)
        return out
