"""The hard partition a block acts on: one part per point, from the mixture's log-densities or given.

In training, APEN samples it with the straight-through Gumbel-softmax (``τ = 10``, ``hard=True``): the forward pass
sees a one-hot assignment, the backward pass the gradient of the soft sample. In evaluation pointgeo takes the
noise-free ``argmax`` of the log-densities instead (the released code samples there too), so a trained network is
deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pointgeo.geometry import part_means


@dataclass(frozen=True)
class HardPartition:
    """``index (B, N)`` the part of every point in ``[0, num_parts)``; ``weight (B, N)`` its one-hot entry (1 in
    the forward pass, carrying the straight-through gradient in training); ``soft (B, N, K)`` the responsibilities
    that pool the previous block's features per part (``None``: pool over the hard parts)."""

    index: Tensor
    weight: Tensor
    num_parts: int
    soft: Tensor | None = None

    def pool(self, features: Tensor) -> Tensor:
        """Each point's part mean of per-point ``features (B, N, C)`` → ``(B, N, C)``: weighted by ``soft``
        (``Σ_i γ_ik f_i / (Σ_i γ_ik + 1e-5)``, the released code) or, for a given partition, the plain mean over
        the part's points."""
        if self.soft is None:
            means, _ = part_means(features, self.index, self.num_parts)
        else:
            means = self.soft.transpose(1, 2) @ features / (self.soft.sum(1).unsqueeze(-1) + 1e-5)
        return torch.gather(means, 1, self.index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))


def sample_partition(log_n: Tensor, temperature: float, responsibilities: Tensor, *, training: bool
                     ) -> HardPartition:
    """The hard partition of log-densities ``(B, N, K)``: straight-through Gumbel-softmax at ``temperature`` in
    training, ``argmax`` otherwise."""
    k = log_n.shape[-1]
    if not training:
        index = log_n.argmax(-1)
        return HardPartition(index, torch.ones(index.shape, dtype=log_n.dtype, device=log_n.device), k,
                             responsibilities)
    onehot = F.gumbel_softmax(log_n, tau=temperature, hard=True, dim=-1)
    index = onehot.detach().argmax(-1)
    return HardPartition(index, onehot.gather(-1, index.unsqueeze(-1)).squeeze(-1), k, responsibilities)


def given_partition(parts: Tensor, dtype: torch.dtype) -> HardPartition:
    """A given partition ``(B, N)`` (e.g. the ground truth) as a :class:`HardPartition` pooled over its parts."""
    k = int(parts.max()) + 1
    return HardPartition(parts, torch.ones(parts.shape, dtype=dtype, device=parts.device), k)
