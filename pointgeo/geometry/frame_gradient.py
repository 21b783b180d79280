"""The gradient of a principal-axis frame with respect to its scatter matrix, broadened at degenerate eigenvalues.

A frame ``V`` of eigenvectors of a symmetric ``S = V Λ Vᵀ`` (any column signs, e.g. from
:func:`pointgeo.geometry.frames.canonical_frame`) moves with ``S`` as ``dV = V (F ∘ (Vᵀ dS V))``,
``F_ij = 1 / (λ_j − λ_i)`` (``i ≠ j``, ``F_ii = 0``), whose adjoint is ``S̄ = V (F ∘ (Vᵀ V̄)) Vᵀ`` (symmetrised).
It diverges where two eigenvalues meet: the axes inside a repeated eigenspace are not a function of ``S`` there.
:func:`attach_frame_gradient` uses the Lorentzian-broadened ``F_ij = Δ_ij / (Δ_ij² + η²)``, ``Δ_ij = λ_j − λ_i``,
``η = broadening · max|λ|``: the true gradient up to a relative ``(η / Δ)²`` wherever the gap ``Δ ≫ η``, a finite
one (the degenerate pair's rotation ignored) where it is not. A zero scatter (a single atom) gets a zero gradient.

The backward pass is itself differentiable in ``V̄`` (so a force loss trains the weights through it), but treats
``V`` and ``Λ`` as constants: second derivatives in the positions through the frame are not formed.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _FrameGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scatter: Tensor, frame: Tensor, broadening: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(scatter.detach(), frame.detach())
        ctx.broadening = broadening
        return frame.detach().clone()

    @staticmethod
    def backward(ctx, grad_frame: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        scatter, frame = ctx.saved_tensors
        evals = (frame.transpose(-1, -2) @ scatter @ frame).diagonal(dim1=-2, dim2=-1)  # (..., 3)
        eta = ctx.broadening * evals.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(evals.dtype).tiny)
        gap = evals.unsqueeze(-2) - evals.unsqueeze(-1)  # Δ_ij = λ_j − λ_i
        # a zero scatter (one atom, or all atoms at one point) has η² = 0 in float32: 0 / tiny = 0 there, not NaN
        f = gap / (gap.pow(2) + eta.unsqueeze(-1).pow(2)).clamp_min(torch.finfo(evals.dtype).tiny)
        f = f * (1 - torch.eye(3, dtype=f.dtype, device=f.device))
        inner = frame.transpose(-1, -2) @ grad_frame
        grad = frame @ (f * inner) @ frame.transpose(-1, -2)
        return 0.5 * (grad + grad.transpose(-1, -2)), None, None


def attach_frame_gradient(scatter: Tensor, frame: Tensor, broadening: float = 1e-6) -> Tensor:
    """``frame (..., 3, 3)`` (eigenvectors of ``scatter (..., 3, 3)`` as columns), carrying the gradient of the
    eigenvectors with respect to ``scatter`` (broadened by ``broadening`` · max|λ| at near-equal eigenvalues)."""
    if scatter.shape[-2:] != (3, 3) or frame.shape != scatter.shape:
        raise ValueError(f"scatter and frame must both be (..., 3, 3); got {tuple(scatter.shape)}, {tuple(frame.shape)}")
    return _FrameGradient.apply(scatter, frame, broadening)
