"""CDVAE's noise schedules (``conf/model/vae.yaml``; CDVAE ``pl_modules/model.py``).

* coordinates: ``σ_k = exp(linspace(ln σ_begin, ln σ_end, K))``, descending (CDVAE: 10 Å → 0.01 Å, 50 levels);
* atom types: ``σ^type_k`` the same way (CDVAE: 5 → 0.01, 50 levels).

In training every crystal draws one coordinate level and, independently, one type level, uniformly; its atoms are
then noised with them (:func:`noise_types`, the task's coordinate noise).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def geometric_levels(begin: float, end: float, num: int) -> Tensor:
    """``(num,)`` float64 ``exp(linspace(ln begin, ln end, num))``."""
    if not (begin > 0 and end > 0) or num < 1:
        raise ValueError(f"noise levels need begin, end > 0 and num >= 1; got {begin}, {end}, {num}")
    return torch.exp(torch.linspace(math.log(begin), math.log(end), num, dtype=torch.float64))


class NoiseSchedule(nn.Module):
    """The two schedules as buffers: ``sigmas (K,)`` (Å) and ``type_sigmas (K_t,)``."""

    def __init__(self, sigma_begin: float = 10.0, sigma_end: float = 0.01, type_sigma_begin: float = 5.0,
                 type_sigma_end: float = 0.01, num_levels: int = 50) -> None:
        super().__init__()
        self.register_buffer("sigmas", geometric_levels(sigma_begin, sigma_end, num_levels).float())
        self.register_buffer("type_sigmas", geometric_levels(type_sigma_begin, type_sigma_end, num_levels).float())

    @property
    def num_levels(self) -> int:
        """``K``."""
        return int(self.sigmas.shape[0])

    def draw(self, num: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One coordinate and one type level per crystal, uniformly and independently: ``(σ (B,), σ_type (B,))``."""
        device = self.sigmas.device
        k = torch.randint(self.num_levels, (num,), generator=generator, device=device)
        k_type = torch.randint(self.type_sigmas.shape[0], (num,), generator=generator, device=device)
        return self.sigmas[k], self.type_sigmas[k_type]


def noise_types(true_types: Tensor, composition_probs: Tensor, type_sigma: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
    """CDVAE's type noise: one type per atom drawn from ``p ∝ onehot(Z) + σ_type · p_comp`` (``p_comp`` the
    predicted composition, detached).

    Args:
        true_types: ``(N,)`` atomic numbers ``1..max_z``.
        composition_probs: ``(N, max_z)`` softmax of the composition head of each atom's crystal.
        type_sigma: ``(N,)`` each atom's type level.

    Returns:
        ``(N,)`` noisy atomic numbers.
    """
    probs = nn.functional.one_hot(true_types - 1, composition_probs.shape[-1]).to(composition_probs.dtype)
    probs = probs + type_sigma.to(probs.dtype).unsqueeze(-1) * composition_probs.detach()
    return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1) + 1
