"""CDVAE's training losses (CDVAE ``pl_modules/model.py`` ``forward`` and ``compute_losses``; weights of
``conf/model/vae.yaml``).

For a batch of crystals (``frac_coords``, ``z`` atom types, ``cell``, ``lengths``, ``angles``, ``natoms``, ``y``,
``batch``): encode, ``z = μ + σ ε``, then

    L_natom = CE(num-atoms logits, N)
    L_lattice = MSE(lattice head, standardised [a, b, c] / N^(1/3) ‖ [α, β, γ])
    L_comp = CE(composition logits, Z_i)                    (per atom, averaged per crystal)
    σ, σ_type ~ U(levels) per crystal; types ~ onehot(Z) + σ_type · softmax(composition) (detached)
    x̃ = frac · L_dec + σ ε, wrapped into the cell;  Δ = minimum image of x − x̃ in the ground-truth cell
    L_coord = ½ ‖ŝ(x̃, L_dec) − Δ / σ‖²                     (per atom, averaged per crystal)
    L_type = CE(type logits, Z_i) / σ_type                    (per atom, averaged per crystal)
    L_KL = mean_b −½ Σ_d (1 + log σ² − μ² − σ²)
    L_prop = MSE(property head, standardised y)              (with a property head)

``L_dec`` is the ground-truth cell while teacher forcing (``batch.cell``, in whatever orientation the batch has)
and afterwards the cell of the predicted lattice parameters (pymatgen's orientation); ``Δ`` is then taken in the
ground-truth cell *in the same orientation* (rebuilt from ``lengths``, ``angles``), so the loss is invariant to a
rotation of the batch either way (CDVAE uses the parameters' cell for both, which is the same on unrotated data).
Per-atom terms are averaged per crystal, then over the batch. Every random draw comes from ``generator`` (the
global generator when ``None``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from pointgeo.geometry import cart_to_frac, frac_to_cart, lattice_features, lattice_params_to_matrix, minimum_image
from pointgeo.nn.cdvae.langevin import sanitize_lattice
from pointgeo.nn.cdvae.network import CDVAE
from pointgeo.nn.cdvae.noise import noise_types

LOSS_NAMES = ("natom", "lattice", "composition", "coord", "type", "kl", "property")
DEFAULT_WEIGHTS = {"natom": 1.0, "lattice": 10.0, "composition": 1.0, "coord": 10.0, "type": 1.0, "kl": 0.01,
                   "property": 1.0}
"""CDVAE's ``cost_natom, cost_lattice, cost_composition, cost_coord, cost_type, beta, cost_property``."""
VALIDATION_WEIGHTS = {"coord": 10.0, "type": 1.0}
"""CDVAE's validation loss (checkpointing): ``10 L_coord + L_type``."""


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _per_crystal_mean(values: Tensor, batch: Tensor, num: int) -> Tensor:
    return scatter(values, batch, dim=0, dim_size=num, reduce="mean").mean()


def cdvae_losses(net: CDVAE, batch: Any, *, teacher_forcing: bool,
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The unweighted losses (module docstring): ``{name: scalar}`` for the names of :data:`LOSS_NAMES`
    (``property`` only when the network has a property head and the batch a ``y``)."""
    frac, types, cell, index = batch.frac_coords, batch.z.long(), batch.cell, batch.batch
    natoms = batch.natoms.long()
    num = cell.shape[0]
    mu, log_var = net.encode(frac, types, cell, index)
    z = mu + torch.exp(0.5 * log_var) * _randn(tuple(mu.shape), mu, generator)
    heads = net.heads(z)
    losses = {"natom": nn.functional.cross_entropy(heads["num_atoms"], natoms)}
    target = net.scale_lattice(lattice_features(batch.lengths.to(z.dtype), batch.angles.to(z.dtype), natoms))
    losses["lattice"] = nn.functional.mse_loss(heads["lattice"], target)
    composition = heads["composition"][index]
    losses["composition"] = _per_crystal_mean(nn.functional.cross_entropy(composition, types - 1,
                                                                          reduction="none"), index, num)
    sigma, type_sigma = net.noise.draw(num, generator=generator)
    sigma, type_sigma = sigma.to(z.dtype), type_sigma.to(z.dtype)
    if teacher_forcing:
        decoder_cell = truth_cell = cell
    else:
        lengths, angles = sanitize_lattice(*net.unscale_lattice(heads["lattice"], natoms), natoms)
        decoder_cell = lattice_params_to_matrix(lengths, angles)
        truth_cell = lattice_params_to_matrix(batch.lengths.to(z.dtype), batch.angles.to(z.dtype))
    noisy_types = noise_types(types, torch.softmax(composition, -1), type_sigma[index], generator=generator)
    pos = frac_to_cart(frac, decoder_cell, index) + sigma[index, None] * _randn(tuple(frac.shape), frac, generator)
    noisy_frac = torch.remainder(cart_to_frac(pos, decoder_cell, index), 1.0)
    pos = frac_to_cart(noisy_frac, decoder_cell, index)
    score, type_logits = net.decode(z, pos, noisy_types, decoder_cell, index)
    delta = minimum_image(frac_to_cart(frac - noisy_frac, truth_cell.detach(), index), truth_cell.detach(), index)
    coord = 0.5 * (score - delta / sigma[index, None]).pow(2).sum(-1)
    losses["coord"] = _per_crystal_mean(coord, index, num)
    type_ce = nn.functional.cross_entropy(type_logits, types - 1, reduction="none") / type_sigma[index]
    losses["type"] = _per_crystal_mean(type_ce, index, num)
    losses["kl"] = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)).mean()
    if "property" in heads and getattr(batch, "y", None) is not None:
        y = batch.y.to(z.dtype).reshape(num, -1)[:, :net.num_properties]
        losses["property"] = nn.functional.mse_loss(heads["property"], net.scale_property(y))
    return losses


def weighted_sum(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``Σ_name weights[name] · losses[name]`` over the losses present."""
    return sum(weights.get(name, 0.0) * value for name, value in losses.items())
