"""CDVAE's generation: annealed Langevin dynamics (CDVAE ``pl_modules/model.py`` ``langevin_dynamics``,
``sample_composition``; ``scripts/evaluate.py``), batched over crystals.

From latents ``z (B, D)``:

1. ``N = argmax`` of the number-of-atoms head (at least 1), the lattice from the lattice head, the composition
   ``p = softmax(composition head)``: ``round(p N)`` atoms of each element, the remaining atoms drawn from the
   residual probabilities (with replacement), shuffled, the first ``N`` kept (:func:`sample_composition`);
2. fractional coordinates ``~ U[0, 1)³``;
3. for each level ``σ_k`` (10 Å → 0.01 Å), step ``ε = step_lr (σ_k / σ_K)²``, ``steps_per_level`` times:
   ``x ← x + ε ŝ / σ_k + √(2ε) ξ`` (``ξ ~ N(0, I)``), wrapped into the cell; types ``← argmax`` of the type logits.

Every random draw comes from the given ``torch.Generator`` (so a generator seeded alike gives the same crystals);
no Python loop runs over atoms or crystals. A lattice the head predicts that no decoder can work in (non-finite,
lengths below 1 Å, angles outside 30°…150°, a nearly flat cell, less than 3 Å³ per atom) is first clamped into
that range
(:func:`sanitize_lattice`); the crystal is reported with the cell it was generated in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pointgeo.geometry import cart_to_frac, frac_to_cart, lattice_params_to_matrix

if TYPE_CHECKING:
    from pointgeo.nn.cdvae.network import CDVAE

MIN_LENGTH, MAX_LENGTH = 1.0, 100.0
"""Å: the lattice lengths generation works with."""
MIN_ANGLE, MAX_ANGLE = 30.0, 150.0
"""Degrees: the lattice angles generation works with."""
MIN_FLATNESS = 0.1
"""Cells with ``det L < MIN_FLATNESS · abc`` get right angles instead (they are too flat to place atoms in)."""
MIN_VOLUME_PER_ATOM = 3.0
"""Å³: cells smaller than this per atom are scaled up to it (the densest elemental solids have about 5 Å³ per atom;
a cell far denser than any crystal would only make the radius graphs huge)."""


def _generated(shape: tuple[int, ...], like: Tensor, generator: torch.Generator, kind: str = "randn") -> Tensor:
    draw = torch.randn if kind == "randn" else torch.rand
    return draw(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def sanitize_lattice(lengths: Tensor, angles: Tensor, num_atoms: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted lattice parameters ``(B, 3)`` of crystals of ``num_atoms (B,)`` atoms, clamped into the range
    generation works with (module docstring; :data:`MIN_VOLUME_PER_ATOM`)."""
    lengths = torch.nan_to_num(lengths, nan=MIN_LENGTH, posinf=MAX_LENGTH, neginf=MIN_LENGTH)
    angles = torch.nan_to_num(angles, nan=90.0, posinf=MAX_ANGLE, neginf=MIN_ANGLE)
    lengths, angles = lengths.clamp(MIN_LENGTH, MAX_LENGTH), angles.clamp(MIN_ANGLE, MAX_ANGLE)
    volume = torch.linalg.det(lattice_params_to_matrix(lengths, angles))
    flat = ~(volume >= MIN_FLATNESS * lengths.prod(-1))
    angles = torch.where(flat.unsqueeze(-1), torch.full_like(angles, 90.0), angles)
    volume = torch.linalg.det(lattice_params_to_matrix(lengths, angles))
    floor = MIN_VOLUME_PER_ATOM * num_atoms.to(volume.dtype)
    return lengths * (floor / volume).clamp_min(1.0).pow(1.0 / 3.0).unsqueeze(-1), angles


def sample_composition(probs: Tensor, num_atoms: Tensor, generator: torch.Generator) -> Tensor:
    """CDVAE's ``sample_composition``, vectorised: ``(ΣN,)`` atomic numbers, crystal by crystal.

    Args:
        probs: ``(B, Z)`` composition probabilities over the elements ``1..Z``.
        num_atoms: ``(B,)`` atoms of each crystal (≥ 1).
    """
    num, elements = probs.shape
    device = probs.device
    n = num_atoms.to(probs.dtype).unsqueeze(-1)
    counts = torch.round(probs * n).long()  # (B, Z)
    short = (num_atoms - counts.sum(-1)).clamp_min(0)  # atoms the rounding left out
    residual = (probs - counts.to(probs.dtype) / n).clamp_min(0.0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, probs)
    width = max(int(short.max()) if num else 0, 1)
    extra = torch.multinomial(residual.to(generator.device, torch.float64), width, replacement=True,
                              generator=generator).to(device)  # (B, width) element indices
    crystal_of_element = torch.arange(num, device=device).repeat_interleave(elements)
    element = torch.arange(elements, device=device).repeat(num)
    keep_extra = torch.arange(width, device=device).unsqueeze(0) < short.unsqueeze(-1)
    cand_type = torch.cat([element.repeat_interleave(counts.flatten()), extra[keep_extra]]) + 1
    cand_crystal = torch.cat([crystal_of_element.repeat_interleave(counts.flatten()),
                              torch.arange(num, device=device).unsqueeze(-1).expand(num, width)[keep_extra]])
    key = torch.rand(cand_type.shape[0], generator=generator, dtype=torch.float64, device=generator.device)
    order = torch.argsort(key.to(device))
    order = order[torch.argsort(cand_crystal[order], stable=True)]  # by crystal, shuffled within
    per_crystal = torch.bincount(cand_crystal, minlength=num)
    first = torch.cumsum(per_crystal, 0) - per_crystal
    crystal = cand_crystal[order]
    rank = torch.arange(order.shape[0], device=device) - first[crystal]
    return cand_type[order][rank < num_atoms[crystal]]


@torch.no_grad()
def langevin_generate(net: CDVAE, z: Tensor, *, generator: torch.Generator, steps_per_level: int = 100,
                      step_lr: float = 1e-4, min_sigma: float = 0.0,
                      on_level: Callable[[int, int], None] | None = None) -> dict[str, Tensor]:
    """Crystals decoded from ``z (B, D)`` by annealed Langevin dynamics (module docstring): ``{"frac_coords"
    (ΣN, 3) in [0, 1], "atom_types" (ΣN,), "lengths" (B, 3), "angles" (B, 3), "num_atoms" (B,)}``.

    Args:
        net: the CDVAE networks (with their training scalers).
        z: latents.
        generator: the source of every random draw.
        steps_per_level: Langevin steps per noise level (CDVAE's ``n_step_each``: 100).
        step_lr: CDVAE's ``step_lr`` (1e-4).
        min_sigma: stop before the first level below it (CDVAE's ``min_sigma``, default 0: all levels).
        on_level: called as ``on_level(k, K)`` after each level ``k`` of the ``K`` run.
    """
    if steps_per_level < 1 or not step_lr > 0:
        raise ValueError(f"steps_per_level must be >= 1 and step_lr > 0; got {steps_per_level}, {step_lr}")
    heads = net.heads(z)
    num_atoms = heads["num_atoms"].argmax(-1).clamp(1, net.max_atoms)
    lengths, angles = sanitize_lattice(*net.unscale_lattice(heads["lattice"], num_atoms), num_atoms)
    cell = lattice_params_to_matrix(lengths, angles)
    index = torch.repeat_interleave(torch.arange(z.shape[0], device=z.device), num_atoms)
    types = sample_composition(torch.softmax(heads["composition"].double(), -1), num_atoms, generator)
    frac = _generated((index.shape[0], 3), z, generator, "rand")
    pos = frac_to_cart(frac, cell, index)
    sigmas = net.noise.sigmas.tolist()
    levels = [s for s in sigmas if s >= min_sigma]
    for k, sigma in enumerate(levels):
        step = step_lr * (sigma / sigmas[-1]) ** 2
        for _ in range(steps_per_level):
            noise = _generated(tuple(pos.shape), pos, generator) * math.sqrt(2.0 * step)
            score, logits = net.decode(z, pos, types, cell, index)
            frac = torch.remainder(cart_to_frac(pos + step * score / sigma + noise, cell, index), 1.0)
            pos = frac_to_cart(frac, cell, index)
            types = logits.argmax(-1) + 1
        if on_level is not None:
            on_level(k, len(levels))
    return {"frac_coords": frac, "atom_types": types, "lengths": lengths, "angles": angles, "num_atoms": num_atoms}
