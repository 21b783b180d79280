"""Shared point-wise MLP layer: Linear (no bias) + BatchNorm (+ ReLU) (+ max over neighbours), channels last,
with a backward pass that recomputes instead of storing.

A 1×1 convolution + BatchNorm + ReLU on a neighbourhood tensor ``(B, S, K, C)`` keeps three tensors of that size
alive until the backward pass (convolution output, normalised output, activation), and those dominate the memory
of PointNet++-style networks such as RISurConv. :class:`LinearBN` keeps only its input and per-channel statistics
and recomputes the rest in the backward pass (one extra matrix product). Two further fusions remove the largest
tensors altogether:

* ``gathered`` features: ``W [a_i ; f_idx(i)] = W_a a_i + (W_f f)_idx(i)`` — the linear map is applied to the
  ``(B, N, C_f)`` point features before the gather, so the gathered ``(B, S, K, C_f)`` copy and the concatenation
  are never formed;
* ``pool=True``: the max over the neighbour axis is taken inside, so only ``(B, S, C)`` and its arg-max leave.

The forward values equal ``relu(batch_norm(cat([a, f[idx]]) @ W.T))`` (max-pooled; or leaky ReLU) exactly;
BatchNorm follows PyTorch's semantics (biased variance to normalise, unbiased variance in the running estimate,
``momentum`` or the cumulative average when it is ``None``, running statistics in eval mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable


def _linear(a: Tensor, w_a: Tensor, f: Tensor | None, w_f: Tensor | None, idx: Tensor | None) -> Tensor:
    """``a @ w_a.T`` plus, when given, ``(f @ w_f.T)[idx]``: ``(M, C_a), (P, C_f), (M,) -> (M, C_out)``."""
    y = a @ w_a.t()
    if f is not None:
        y.add_((f @ w_f.t()).index_select(0, idx))
    return y


def _momentum(bn: nn.BatchNorm1d) -> float:
    """BatchNorm's averaging factor for this step (cumulative average when ``momentum`` is ``None``)."""
    bn.num_batches_tracked.add_(1)
    return bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)


def _activate_(x: Tensor, slope: float | None) -> Tensor:
    """In place: the leaky ReLU of ``slope`` (0: ReLU; ``None``: identity)."""
    if slope == 0:
        x.clamp_(min=0)
    elif slope is not None:
        torch.nn.functional.leaky_relu_(x, slope)
    return x


def _activation_grad(grad: Tensor, positive: Tensor, slope: float | None) -> Tensor:
    """``grad · act'`` given where the pre-activation was ``positive`` (bool), for :func:`_activate_`'s ``slope``."""
    if slope is None:
        return grad
    return grad * positive if slope == 0 else torch.where(positive, grad, grad * slope)


class _LinearBNFunction(torch.autograd.Function):
    """``act(γ (y - μ) / σ + β)`` with ``y = [a ; f[idx]] Wᵀ``, optionally max-pooled over ``pool``-row groups;
    ``act`` is the identity when ``slope`` is ``None``, else the leaky ReLU of that negative slope (0: ReLU).

    ``training``: ``μ, σ`` are the batch statistics of ``y`` (the gradient flows through them; ``bn``'s running
    estimates are updated), otherwise ``bn``'s running estimates. The normalisation and its gradient are PyTorch's
    own BatchNorm kernels."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, w_a: Tensor, f: Tensor | None, w_f: Tensor | None, idx: Tensor | None,
                gamma: Tensor, beta: Tensor, bn: nn.BatchNorm1d, training: bool, slope: float | None,
                pool: int) -> Tensor:
        y = _linear(a, w_a, f, w_f, idx)
        momentum = _momentum(bn) if training else 0.0
        out, mean, invstd = torch.native_batch_norm(y, gamma, beta, bn.running_mean, bn.running_var, training,
                                                    momentum, bn.eps)
        del y
        _activate_(out, slope)
        arg = None
        if pool:
            out, arg = out.view(-1, pool, out.shape[1]).max(dim=1)
        # Eval mode normalises with (copies of) the running estimates, which later training steps overwrite.
        running = (None, None) if training else (bn.running_mean.clone(), bn.running_var.clone())
        ctx.save_for_backward(a, w_a, f, w_f, idx, gamma, beta, mean, invstd, *running, arg)
        ctx.slope, ctx.pool, ctx.training, ctx.eps = slope, pool, training, bn.eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, w_a, f, w_f, idx, gamma, beta, mean, invstd, running_mean, running_var, arg = ctx.saved_tensors
        y = _linear(a, w_a, f, w_f, idx)  # recomputed pre-normalisation values
        m, c = y.shape
        if ctx.pool:
            g = grad.new_zeros(m // ctx.pool, ctx.pool, c).scatter_(1, arg.unsqueeze(1), grad.unsqueeze(1))
            g = g.view(m, c)
        else:
            g = grad.reshape(m, c)
        if ctx.slope is not None:
            centre = mean if ctx.training else running_mean
            scale = gamma * (invstd if ctx.training else torch.rsqrt(running_var + ctx.eps))
            g = _activation_grad(g, torch.addcmul(beta - centre * scale, y, scale) > 0, ctx.slope)
        dy, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            g, y, gamma, running_mean, running_var, mean, invstd, ctx.training, ctx.eps, [True, True, True])
        del y, g
        grad_a = dy @ w_a if ctx.needs_input_grad[0] else None
        grad_w_a = dy.t() @ a if ctx.needs_input_grad[1] else None
        grad_f = grad_w_f = None
        if f is not None:
            dy_f = dy.new_zeros(f.shape[0], c).index_add_(0, idx, dy)
            grad_f = dy_f @ w_f if ctx.needs_input_grad[2] else None
            grad_w_f = dy_f.t() @ f if ctx.needs_input_grad[3] else None
        return grad_a, grad_w_a, grad_f, grad_w_f, None, grad_gamma, grad_beta, None, None, None, None


class _PooledLinearBNFunction(torch.autograd.Function):
    """Training-mode ``max_K act(γ (y - μ) / σ + β)``, ``y = a Wᵀ``, without ever normalising the dense ``y``.

    The activation and the normalisation are monotone per channel, so the max over ``K`` commutes with them once
    the channels with ``γ < 0`` are flipped: with ``s = sign γ`` and ``y' = a (sW)ᵀ``, ``γ x̂ = |γ| x̂'`` and the
    pooled output is ``act(|γ| (max_K y' - μ') / σ + β)``. Forward: one matrix product, one pass for the batch
    statistics, one for the max.

    Backward: the gradient reaches only the arg-max rows (``g``, sparse), and BatchNorm's backward,
    ``dy' = |γ|/σ (g - mean g - x̂' mean(g x̂'))``, is never formed densely: with ``D = |γ|/σ``, ``m₁ = mean g``,
    ``c₂ = mean(g x̂')``,

    * ``dW' = D [gᵀa - m₁ (Σa)ᵀ - c₂ (x̂'ᵀa)]``, ``x̂'ᵀa = (W' aᵀa - μ' (Σa)ᵀ) / σ``;
    * ``da = g (D W') - a W'ᵀ diag(D c₂ / σ) W' + (D (c₂ μ' / σ - m₁)) W'``;

    ``g`` is non-zero only at the ``P·C`` arg-max rows; ``aᵀa`` and the ``C_in × C_in`` correction replace the
    recomputation of ``y`` and the dense BatchNorm backward, and no second dense ``(M, C)`` tensor is formed."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, w: Tensor, gamma: Tensor, beta: Tensor, bn: nn.BatchNorm1d,
                slope: float | None, pool: int) -> Tensor:
        sign = torch.where(gamma < 0, -1.0, 1.0).to(w.dtype)
        w_s = w * sign[:, None]
        y = a @ w_s.t()
        m, c = y.shape
        top, arg = y.view(-1, pool, c).max(dim=1)
        mean_s = y.sum(0) / m  # two-pass statistics, in place: column reductions other than sum are slow on CPU
        var = y.sub_(mean_s).square_().sum(0) / m
        del y
        momentum = _momentum(bn)
        bn.running_mean.mul_(1 - momentum).add_(mean_s * sign, alpha=momentum)
        bn.running_var.mul_(1 - momentum).add_(var * (m / (m - 1)), alpha=momentum)
        invstd = torch.rsqrt(var + bn.eps)
        xhat = (top - mean_s) * invstd  # (P, C): x̂' at the arg-max rows
        out = _activate_(torch.addcmul(beta, gamma.abs(), xhat), slope)  # > 0 exactly where its input was
        ctx.save_for_backward(a, w_s, sign, gamma, mean_s, invstd, arg, xhat, out)
        ctx.slope, ctx.pool = slope, pool
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, w_s, sign, gamma, mean_s, invstd, arg, xhat, out = ctx.saved_tensors
        k = ctx.pool
        m, c_in = a.shape
        g = _activation_grad(grad, out > 0, ctx.slope)  # (P, C) at the arg-max rows
        d = gamma.abs() * invstd
        grad_beta = g.sum(0)
        grad_gamma_abs = (g * xhat).sum(0)
        m1, c2 = grad_beta / m, grad_gamma_abs / m
        c = g.shape[1]
        g_rows = g.new_zeros(m // k, k, c).scatter_(1, arg.unsqueeze(1), g.unsqueeze(1)).view(m, c)
        grad_w = grad_a = None
        if ctx.needs_input_grad[1]:
            sum_a = a.sum(0)
            xta = invstd[:, None] * (w_s @ (a.t() @ a) - mean_s[:, None] * sum_a)
            grad_w = d[:, None] * (g_rows.t() @ a - m1[:, None] * sum_a - c2[:, None] * xta) * sign[:, None]
        if ctx.needs_input_grad[0]:
            correction = w_s.t() @ ((d * c2 * invstd)[:, None] * w_s)
            constant = (d * (c2 * mean_s * invstd - m1)) @ w_s
            grad_a = torch.addmm(constant, a, correction, alpha=-1).addmm_(g_rows, d[:, None] * w_s)
        return grad_a, grad_w, grad_gamma_abs * sign, grad_beta, None, None, None


class LinearBN(nn.Module):
    """Point-wise Linear (no bias) + BatchNorm (+ ReLU) on channels-last tensors, storing only its input.

    Args:
        in_channels: ``C_a``, channels of the main input.
        out_channels: ``C_out``.
        gathered_channels: ``C_f`` of point features gathered per neighbour and concatenated after the main
            input (0: none).
        relu: apply ReLU after the normalisation (leaky with ``negative_slope`` > 0).
        negative_slope: slope of the activation below zero (0: ReLU).
        pool: take the max over the neighbour axis (the second-last axis of the main input).

    Shapes:
        ``a (..., C_a)`` → ``(..., C_out)``; with ``pool``: ``a (B, S, K, C_a)`` → ``(B, S, C_out)``. With gathered
        features, ``features (B, N, C_f)`` and ``idx (B, S, K)`` (indices into ``N``) are concatenated to ``a
        (B, S, K, C_a)``.
    """

    def __init__(self, in_channels: int, out_channels: int, gathered_channels: int = 0, relu: bool = True,
                 negative_slope: float = 0.0, pool: bool = False, momentum: float | None = 0.1,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.gathered_weight = nn.Parameter(torch.empty(out_channels, gathered_channels)) if gathered_channels else None
        self.bn = nn.BatchNorm1d(out_channels, eps=eps, momentum=momentum)
        self.relu, self.negative_slope, self.pool = relu, negative_slope, pool
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform over the full fan-in (main + gathered channels), as ``nn.Linear`` would on the concat."""
        fan_in = self.weight.shape[1] + (0 if self.gathered_weight is None else self.gathered_weight.shape[1])
        bound = 1.0 / fan_in**0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.gathered_weight is not None:
            nn.init.uniform_(self.gathered_weight, -bound, bound)

    def forward(self, a: Tensor, features: Tensor | None = None, idx: Tensor | None = None) -> Tensor:
        if (features is None) != (self.gathered_weight is None):
            raise ValueError("pass features and idx exactly when the layer was built with gathered_channels")
        lead = a.shape[:-2] if self.pool else a.shape[:-1]
        a2 = a.reshape(-1, a.shape[-1])
        f2 = flat_idx = None
        if features is not None:
            n = features.shape[-2]
            offsets = torch.arange(idx.shape[0], device=idx.device).view(-1, *([1] * (idx.dim() - 1))) * n
            flat_idx = (idx + offsets).reshape(-1)
            f2 = features.reshape(-1, features.shape[-1])
        if self.training and a2.shape[0] < 2:
            raise ValueError("BatchNorm in training needs more than one value per channel")
        pool = a.shape[-2] if self.pool else 0
        if pool and self.training and features is None:
            out = _PooledLinearBNFunction.apply(a2, self.weight, self.bn.weight, self.bn.bias, self.bn,
                                                self.negative_slope if self.relu else None, pool)
            return out.view(*lead, -1)
        out = _LinearBNFunction.apply(a2, self.weight, f2, self.gathered_weight, flat_idx, self.bn.weight,
                                      self.bn.bias, self.bn, self.training,
                                      self.negative_slope if self.relu else None, pool)
        return out.view(*lead, -1)
