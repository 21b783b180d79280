"""APEN's partition model: an isotropic Gaussian mixture over the seeds, fitted by EM with merging and pruning.

The seeds ``s_i`` are the points, later the blocks' part-centre votes ``x_i + Δ_i``. Component ``k`` has mean
``μ_k``, weight ``π_k`` and a variance ``σ²`` shared by all components and fixed per stage (spec §4.2):

    log N_ik = −3/2 log 2π − 3/2 log σ² − ‖s_i − μ_k‖² / (2σ²) + log π_k,      γ_ik = softmax_k log N_ik,
    μ_k = Σ_i γ_ik s_i / (Σ_i γ_ik + 1e-5),      π_k = mean_i γ_ik.

Inactive (merged or pruned) components have ``log π = −∞``. All steps are batched over the samples; a sample's
mixture depends on that sample only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pointgeo.geometry import farthest_point_sampling


@dataclass(frozen=True)
class Mixture:
    """Component means ``(B, K, 3)``, weights ``(B, K)``, the shared variance and which components are active
    ``(B, K)`` bool."""

    means: Tensor
    weights: Tensor
    variance: float
    active: Tensor

    def detach(self) -> Mixture:
        return replace(self, means=self.means.detach(), weights=self.weights.detach())


def initial_mixture(seeds: Tensor, components: int, variance: float) -> Mixture:
    """``components`` candidates (at most one per seed) by farthest point sampling over the seeds ``(B, N, 3)``
    (rotation and permutation invariant start, :func:`~pointgeo.geometry.farthest_point_sampling`), uniform
    weights ``1 / K``, all active. The released code takes 10 of its 40 candidates at random; pointgeo takes all
    by FPS so that the network is deterministic."""
    s = seeds.detach()
    k = min(components, s.shape[1])
    idx = farthest_point_sampling(s, k)
    means = torch.gather(s, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    weights = torch.full(idx.shape, 1.0 / k, dtype=s.dtype, device=s.device)
    return Mixture(means, weights, variance, torch.ones_like(idx, dtype=torch.bool))


def log_densities(seeds: Tensor, mixture: Mixture) -> Tensor:
    """``log N_ik`` of the module docstring (``log π_k`` included): seeds ``(B, N, 3)`` → ``(B, N, K)``, ``−∞`` for
    inactive components."""
    var = mixture.variance
    sq = (seeds.unsqueeze(2) - mixture.means.unsqueeze(1)).pow(2).sum(-1)  # (B, N, K)
    log_pi = torch.where(mixture.active, mixture.weights.clamp_min(torch.finfo(seeds.dtype).tiny).log(),
                         torch.full_like(mixture.weights, -torch.inf))
    return -1.5 * math.log(2 * math.pi) - 1.5 * math.log(var) - 0.5 * sq / var + log_pi.unsqueeze(1)


def em_means(seeds: Tensor, gamma: Tensor) -> Tensor:
    """The M-step's means ``Σ_i γ_ik s_i / (Σ_i γ_ik + 1e-5)``: ``(B, N, 3), (B, N, K) → (B, K, 3)``."""
    return gamma.transpose(1, 2) @ seeds / (gamma.sum(1).unsqueeze(-1) + 1e-5)


def merge(mixture: Mixture, threshold: float) -> Mixture:
    """Merge close components, one pair per sample and round, until none is closer than ``threshold``: the pair
    ``a < b`` of active components with the smallest ``Σ_d (μ_ad − μ_bd)⁴ / σ²`` (the released code's distance),
    if below ``threshold²``, becomes ``a`` with weight ``π_a + π_b``; ``b`` is deactivated. At most ``K − 1``
    rounds (each drops a component somewhere), each batched over the samples."""
    means, weights, active = mixture.means, mixture.weights.clone(), mixture.active.clone()
    b, k, _ = means.shape
    upper = torch.ones(k, k, dtype=torch.bool, device=means.device).triu(1)
    d = (means.unsqueeze(2) - means.unsqueeze(1)).pow(2).pow(2).sum(-1) / mixture.variance  # (B, K, K)
    batch = torch.arange(b, device=means.device)
    for _ in range(k - 1):
        pair = upper & active.unsqueeze(2) & active.unsqueeze(1)
        flat = torch.where(pair, d, torch.full_like(d, torch.inf)).flatten(1)
        best, where = flat.min(1)
        close = best < threshold**2
        if not bool(close.any()):
            break
        first, second = where // k, where % k
        rows, a, c = batch[close], first[close], second[close]
        weights[rows, a] = weights[rows, a] + weights[rows, c]
        weights[rows, c] = 0.0
        active[rows, c] = False
    return replace(mixture, weights=weights, active=active)


def prune(mixture: Mixture, threshold: float) -> Mixture:
    """Deactivate the components with ``π_k <= threshold`` (their weight set to 0)."""
    keep = mixture.active & (mixture.weights > threshold)
    return replace(mixture, weights=mixture.weights * keep, active=keep)


def fisher_correction(seeds: Tensor, mixture: Mixture) -> Mixture:
    """The mixture's parameters ``θ = (π, μ)`` made differentiable w.r.t. the seeds ``(B, N, 3)`` at the EM fixed
    point ``θ*`` (implicit differentiation with the Fisher information as the Hessian):

        θ = θ* + I_c(θ*)⁻¹ (ḡ(θ*; s) − sg[ḡ(θ*; s)]),      ḡ = mean_i g_i,

    with the per-seed scores ``g_iπ_k = γ_ik / π_k − 1`` and ``g_iμ_k = γ_ik (s_i − μ_k) / σ²`` (``sg`` stops the
    gradient) and ``I_c`` the model's complete-data Fisher information at ``θ*``, diagonal per component:
    ``N_k / (n σ²)`` for ``μ_k`` and ``N_k / (n π_k²)`` for ``π_k`` (``N_k = Σ_i γ_ik``, detached). The step is then
    the M-step's ``Σ_i γ_ik (s_i − μ_k) / N_k`` and ``mean_i γ_ik − π_k``: the value is exactly ``θ*``, the gradient
    ``∂μ_k/∂s_i = γ_ik / N_k`` (plus the terms of ``∂γ/∂s``), what a mean of its members has.

    The empirical Fisher ``mean_i g_i g_iᵀ`` (pointgeo's first version) is the model's only when the seeds of a
    component scatter by ``σ²`` in every direction: for a component whose seeds are tighter (covariance ``C``, what
    the votes aim at) it multiplies the gradient by ``σ² C⁻¹`` — by 10²–10³ in training, which kept the
    cross-entropy at chance. The released code builds the correction from its own second-derivative estimate.
    Inactive components get no step. Without autograd (evaluation) it returns the detached mixture unchanged."""
    fixed = mixture.detach()
    if not (torch.is_grad_enabled() and seeds.requires_grad):
        return fixed
    gamma = log_densities(seeds, fixed).softmax(-1) * fixed.active.unsqueeze(1).to(seeds.dtype)  # (B, N, K)
    held = gamma.detach()
    mass = held.sum(1)  # N_k (B, K)
    means = gamma.transpose(1, 2) @ seeds - mass.unsqueeze(-1) * fixed.means  # Σ_i γ_ik (s_i − μ_k)  (B, K, 3)
    step_mu = (means - means.detach()) / (mass.unsqueeze(-1) + 1e-5)
    share = gamma.mean(1)
    step_pi = share - share.detach()
    return replace(fixed, weights=fixed.weights + step_pi, means=fixed.means + step_mu)
