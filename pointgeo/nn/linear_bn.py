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

:class:`LinearBNChain` runs layers without activation followed by one with it (RISurConv's RISP embedding) as one
affine map of the input in training, so that the intermediate widths are never formed.

:class:`PooledMLP` runs a whole PointNet-style stack ending in such a max as one chunked function in training
(:class:`_PooledMLPFunction`, also the training path of a single pooled layer): nothing of size ``(B, S, K, C)`` is
stored, and each chunk's products and element-wise passes run from cache.

The forward values equal ``relu(batch_norm(cat([a, f[idx]]) @ W.T))`` (max-pooled; or leaky ReLU) exactly;
BatchNorm follows PyTorch's semantics (biased variance to normalise, unbiased variance in the running estimate,
``momentum`` or the cumulative average when it is ``None``, running statistics in eval mode).

The autograd functions keep every tensor for their backward through ``ctx.save_for_backward``, so saved-tensor hooks
and activation checkpointing see them all, and return their batch statistics; the modules update the running
estimates from those, once per training step (not again when ``torch.utils.checkpoint`` recomputes the forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable


def _linear(a: Tensor, w_a: Tensor, f: Tensor | None, w_f: Tensor | None, idx: Tensor | None) -> Tensor:
    """``a @ w_a.T`` plus, when given, ``(f @ w_f.T)[idx]``: ``(M, C_a), (P, C_f), (M,) -> (M, C_out)``."""
    y = a @ w_a.t()
    if f is not None:
        y.add_((f @ w_f.t()).index_select(0, idx))
    return y


def _recomputing() -> bool:
    """Whether this forward runs inside a backward pass, as activation checkpointing recomputes it (PyTorch's own
    ``torch.utils.checkpoint`` tells its recomputations apart the same way)."""
    return torch._C._current_graph_task_id() != -1


def _update_running(bn: nn.BatchNorm1d, stats: Tensor) -> None:
    """BatchNorm's running-estimate update from a batch's ``stats (2, C)``: its mean and unbiased variance, with
    ``momentum`` or the cumulative average when it is ``None``. Once per training step: a recomputation by
    activation checkpointing leaves the estimates alone (a stock BatchNorm would update them twice)."""
    if _recomputing():
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - momentum).add_(stats[0].to(bn.running_mean.dtype), alpha=momentum)
        bn.running_var.mul_(1 - momentum).add_(stats[1].to(bn.running_var.dtype), alpha=momentum)


def _update_stacked(layers: Sequence[LinearBN], stats: Tensor) -> None:
    """:func:`_update_running` for consecutive layers whose statistics are side by side in ``stats (2, ΣC)``."""
    for layer, part in zip(layers, stats.split([layer.weight.shape[0] for layer in layers], dim=1)):
        _update_running(layer.bn, part)


def _check_training_rows(rows: int) -> None:
    """BatchNorm's batch statistics need at least two rows."""
    if rows < 2:
        raise ValueError("BatchNorm in training needs more than one value per channel")


def _stack(kind: str, widths: Sequence[int], last_only: str, negative_slope: float) -> list[LinearBN]:
    """``LinearBN(C_i, C_{i+1})`` for consecutive ``widths``, the boolean option ``last_only`` (``pool`` or
    ``relu``) on for the last layer only."""
    if len(widths) < 2:
        raise ValueError(f"{kind} needs input and output widths; got {list(widths)}")
    last = len(widths) - 2
    return [LinearBN(c_in, c_out, negative_slope=negative_slope, **{last_only: i == last})
            for i, (c_in, c_out) in enumerate(zip(widths, widths[1:]))]


def _activate_(x: Tensor, slope: float | None) -> Tensor:
    """In place: the leaky ReLU of ``slope`` (0: ReLU; ``None``: identity)."""
    if slope == 0:
        torch.relu_(x)  # relu_ (unlike clamp_) keeps only its result for autograd
    elif slope is not None:
        torch.nn.functional.leaky_relu_(x, slope)
    return x


def _activation_grad(grad: Tensor, value: Tensor, slope: float | None, out: Tensor | None = None) -> Tensor:
    """``grad · act'`` for :func:`_activate_`'s ``slope``, where ``value`` has the sign of the pre-activation (the
    pre-activation itself or the activation's output), in one fused pass; written into ``out`` when given."""
    if slope is None:
        return grad if out is None else out.copy_(grad)
    if slope == 0:
        op, args = torch.ops.aten.threshold_backward, (grad, value, 0)
    else:
        op, args = torch.ops.aten.leaky_relu_backward, (grad, value, slope, False)
    return op(*args) if out is None else op.grad_input(*args, grad_input=out)


def _max_rows(y: Tensor, pool: int) -> tuple[Tensor, Tensor]:
    """The max over consecutive groups of ``pool`` rows of ``y (M, C)`` and the row of ``y`` it came from, both
    ``(M / pool, C)``. Channels-last max pooling: about 5× faster on CPU than ``Tensor.max`` over the group axis."""
    top, rows = F.max_pool2d(y.view(1, y.shape[0], 1, -1).permute(0, 3, 1, 2), (pool, 1), (pool, 1),
                             return_indices=True)
    return top[0, :, :, 0].t(), rows[0, :, :, 0].t()


class _LinearBNFunction(torch.autograd.Function):
    """``act(γ (y - μ) / σ + β)`` with ``y = [a ; f[idx]] Wᵀ``, optionally max-pooled over ``pool``-row groups;
    ``act`` is the identity when ``slope`` is ``None``, else the leaky ReLU of that negative slope (0: ReLU).

    ``training``: ``μ, σ`` are the batch statistics of ``y`` (the gradient flows through them), otherwise the running
    estimates passed in. Returns the output and ``stats (2, C)``: the batch mean and unbiased variance of ``y`` in
    training (the caller updates its running estimates from them), the running estimates used otherwise. Every
    tensor the backward needs is saved through ``save_for_backward``. The normalisation and its gradient are
    PyTorch's own BatchNorm kernels."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, w_a: Tensor, f: Tensor | None, w_f: Tensor | None, idx: Tensor | None,
                gamma: Tensor, beta: Tensor, running_mean: Tensor, running_var: Tensor, training: bool,
                slope: float | None, pool: int, eps: float) -> tuple[Tensor, Tensor]:
        y = _linear(a, w_a, f, w_f, idx)
        if training:
            # momentum 1 into fresh buffers: the batch mean and unbiased variance as BatchNorm's kernel forms them
            stats = y.new_zeros(2, y.shape[1])
            out, mean, invstd = torch.native_batch_norm(y, gamma, beta, stats[0], stats[1], True, 1.0, eps)
            running = (None, None)
        else:
            # copies of the running estimates: later training steps overwrite the buffers in place
            stats = torch.stack([running_mean, running_var])
            out, mean, invstd = torch.native_batch_norm(y, gamma, beta, running_mean, running_var, False, 0.0, eps)
            running = (stats[0], stats[1])
        del y
        _activate_(out, slope)
        arg = None
        if pool:
            out, arg = _max_rows(out, pool)
        ctx.save_for_backward(a, w_a, f, w_f, idx, gamma, beta, mean, invstd, *running, arg)
        ctx.slope, ctx.pool, ctx.training, ctx.eps = slope, pool, training, eps
        ctx.mark_non_differentiable(stats)
        return out, stats

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _grad_stats: Tensor) -> tuple[Tensor | None, ...]:
        a, w_a, f, w_f, idx, gamma, beta, mean, invstd, running_mean, running_var, arg = ctx.saved_tensors
        y = _linear(a, w_a, f, w_f, idx)  # recomputed pre-normalisation values
        m, c = y.shape
        if ctx.pool:
            g = grad.new_zeros(m, c).scatter_(0, arg, grad)
        else:
            g = grad.reshape(m, c)
        if ctx.slope is not None:
            centre = mean if ctx.training else running_mean
            scale = gamma * (invstd if ctx.training else torch.rsqrt(running_var + ctx.eps))
            g = _activation_grad(g, torch.addcmul(beta - centre * scale, y, scale), ctx.slope)
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
        return grad_a, grad_w_a, grad_f, grad_w_f, None, grad_gamma, grad_beta, *([None] * 6)


CHUNK_ROWS = 8192
"""Rows per chunk of :class:`_PooledMLPFunction`: a few MB per ``(rows, C)`` block, so that the block's products and
element-wise passes run from cache (8192 × 128 float32 products run ~1.5× faster than one product over 10⁶ rows)."""


class _Moments:
    """Count, mean and centred second moments (the full ``C × C`` matrix, or per channel) of rows that arrive in
    chunks, combined exactly in float64 (Chan, Golub & LeVeque's pairwise update), each chunk centred on its own
    mean first so that no ``E[x²] - E[x]²`` cancellation occurs."""

    def __init__(self, channels: int, device: torch.device, matrix: bool) -> None:
        self.count, self.matrix = 0, matrix
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        shape = (channels, channels) if matrix else (channels,)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=device)

    def add(self, x: Tensor, scratch: Tensor) -> None:
        """Add the rows of ``x (n, C)`` (``scratch``: a buffer of its shape)."""
        n = x.shape[0]
        mean = x.sum(0) / n
        centred = torch.sub(x, mean, out=scratch)
        m2 = centred.t() @ centred if self.matrix else centred.square_().sum(0)
        total = self.count + n
        delta = mean.double() - self.mean
        spread = torch.outer(delta, delta) if self.matrix else delta.square()
        self.m2 += m2.double() + spread * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total


@dataclass
class _HiddenLayer:
    """A hidden layer of :class:`_PooledMLPFunction` in one training step: its parameters, the batch mean ``μ`` and
    ``1/σ`` of its pre-normalisation values ``y = h Wᵀ`` (``h`` its input as the function feeds it), and the sum
    ``Σh`` and centred Gram matrix ``C`` of that input over the ``M`` rows."""

    weight: Tensor
    gamma: Tensor
    beta: Tensor
    slope: float | None
    mean: Tensor
    invstd: Tensor
    input_sum: Tensor
    input_gram: Tensor

    def __post_init__(self) -> None:
        scale = self.gamma * self.invstd
        self.folded_weight_t = (scale[:, None] * self.weight).t()
        self.folded_shift = self.beta - self.mean * scale

    def __call__(self, h: Tensor, out: Tensor) -> Tensor:
        """``act(γ (h Wᵀ - μ) / σ + β)`` of ``h (n, C_in)`` into ``out``: BatchNorm folded into one product."""
        return _activate_(torch.addmm(self.folded_shift, h, self.folded_weight_t, out=out), self.slope)

    def gradients(self, grad_sum: Tensor, grad_input: Tensor, m: int) -> tuple[Tensor, ...]:
        """``dW, dγ, dβ`` and BatchNorm-backward's ``m₁ = mean g, c₂ = mean(g x̂)`` from ``Σg`` and ``gᵀh`` over
        the ``M`` rows (``g``: the gradient at the normalised output). ``Σ g x̂ = (Σ g y - μ Σg) / σ`` with
        ``Σ g y = rowsum(gᵀh ⊙ W)``, and ``dW = D [gᵀh - m₁ (Σh)ᵀ - c₂ x̂ᵀh]`` with ``x̂ᵀh = W C / σ``."""
        grad_gamma = self.invstd * ((grad_input * self.weight).sum(1) - self.mean * grad_sum)
        m1, c2 = grad_sum / m, grad_gamma / m
        grad_w = (self.gamma * self.invstd)[:, None] * (
            grad_input - torch.outer(m1, self.input_sum)
            - (c2 * self.invstd)[:, None] * (self.weight @ self.input_gram))
        return grad_w, grad_gamma, grad_sum, m1, c2


class _Workspace:
    """Chunk buffers reused across the chunks of a sweep: products written into them (``out=``) touch no fresh
    memory pages, which on CPU otherwise cost about half as much as a cache-sized product itself."""

    def __init__(self, rows: int, like: Tensor) -> None:
        self.rows, self.like = rows, like
        self.buffers: dict[tuple[str, int], Tensor] = {}

    def __call__(self, name: str, n: int, channels: int) -> Tensor:
        """The first ``n`` rows of the ``(rows, channels)`` buffer called ``name``."""
        key = (name, channels)
        if key not in self.buffers:
            self.buffers[key] = self.like.new_empty(self.rows, channels)
        return self.buffers[key][:n]


def _hidden_outputs(x: Tensor, layers: list[_HiddenLayer], work: _Workspace) -> list[Tensor]:
    """``[x, h_1, …, h_n]``: a chunk of rows through the hidden layers (in ``work``'s buffers)."""
    hs = [x]
    for i, layer in enumerate(layers):
        hs.append(layer(hs[-1], work(f"h{i}", x.shape[0], layer.weight.shape[0])))
    return hs


def _accumulate(sums: tuple[Tensor, Tensor], g: Tensor, h: Tensor) -> None:
    """Add a chunk's ``Σ g`` and ``gᵀh`` (gradient ``g (n, C_out)`` at a layer's output, its input ``h``)."""
    sums[0].add_(g.sum(0))
    sums[1].addmm_(g.t(), h)


def _zero_sums(layer: _HiddenLayer) -> tuple[Tensor, Tensor]:
    """Empty :func:`_accumulate` sums for ``layer``."""
    return torch.zeros_like(layer.gamma), torch.zeros_like(layer.weight)


class _PooledMLPFunction(torch.autograd.Function):
    """Training-mode stack of Linear (no bias) + BatchNorm + activation layers whose last layer is max-pooled over
    groups of ``pool`` rows, run in chunks of :data:`CHUNK_ROWS` rows so that no ``(M, C)`` activation is stored:
    ``(M, C_0) → (M / pool, C_L)``.

    Forward. BatchNorm needs each layer's batch statistics before its output exists, so sweep ``j`` recomputes the
    chunks up to ``h_j`` and accumulates the mean and centred Gram matrix ``C_j`` of ``h_j``; layer ``j+1``'s
    statistics follow exactly, ``μ = W m_j`` and ``σ² = diag(W C_j Wᵀ) / M``, and its BatchNorm folds into its
    product. The last sweep takes the max of the top layer's ``y = h Wᵀ`` (it commutes with the normalisation once
    the channels with ``γ < 0`` are flipped: ``s = sign γ``, ``y' = h (sW)ᵀ``, ``γ x̂ = |γ| x̂'``) and its
    per-channel moments. A stack of several layers is fed the centred input (BatchNorm ignores a constant shift),
    so that offset coordinates cost no precision.

    Backward, one sweep per layer from the top. With ``D = γ/σ``, ``m₁ = mean g``, ``c₂ = mean(g x̂)`` over the
    ``M`` rows, BatchNorm's backward is ``dy = D (g - m₁ - x̂ c₂)``. The top layer's ``g`` is the upstream gradient
    at the arg-max rows, so its ``m₁, c₂`` are known at once and ``dy = h Bᵀ + b + D g`` is one product plus a
    sparse scatter; its sweep accumulates ``dW`` and passes ``dy W``, masked by the activation, to the layer below.
    That layer's ``m₁, c₂`` are only known after the sweep, so its gradients come from the sums ``Σg, gᵀh``
    (:meth:`_HiddenLayer.gradients`) and its input gradient in the next sweep as ``dy W = g (DW) + h A + b``,
    ``A = -Wᵀ diag(D c₂ / σ) W``, ``b = D (c₂ μ / σ - m₁) W``. Between sweeps one ``(M, C)`` gradient is kept.

    A single pooled layer may also take :class:`LinearBN`'s gathered features ``f (P_f, C_f)`` at rows ``idx (M,)``:
    ``y = a Wᵀ + (f W_fᵀ)[idx]``, the per-point product formed once and gathered a chunk at a time (its gradient
    index-added back per chunk).

    Returns the output and ``stats (2, ΣC)``: each layer's batch mean and unbiased variance of ``y`` side by side
    (float64), from which the caller updates the running estimates. Every tensor the backward needs is saved through
    ``save_for_backward`` (visible to saved-tensor hooks; activation checkpointing may drop and recompute them).
    Values and gradients equal those of ``nn.Linear`` + ``nn.BatchNorm1d`` + activation modules and a max (tested in
    float64 to 1e-10)."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, f: Tensor | None, w_f: Tensor | None, idx: Tensor | None, pool: int,
                slopes: tuple[float | None, ...], eps: tuple[float, ...], *params: Tensor) -> tuple[Tensor, Tensor]:
        ws, gammas, betas = params[0::3], params[1::3], params[2::3]
        if f is not None and len(ws) > 1:
            raise ValueError("gathered features enter a single pooled layer only")
        m = a.shape[0]
        rows = max(1, CHUNK_ROWS // pool) * pool
        spans = [(s, min(s + rows, m)) for s in range(0, m, rows)]
        # float64 over per-chunk sums: a float64 reduction of the whole tensor converts it element by element (~20×)
        offset = torch.stack([a[s:e].sum(0) for s, e in spans]).double().sum(0) / m if len(ws) > 1 else None
        x = a if offset is None else a - offset.to(a.dtype)
        work = _Workspace(rows, a)
        hidden: list[_HiddenLayer] = []
        stats = []  # per layer: batch mean and unbiased variance of y, in float64
        for i in range(len(ws) - 1):
            moments = _Moments(ws[i].shape[1], a.device, matrix=True)
            for s, e in spans:
                moments.add(_hidden_outputs(x[s:e], hidden, work)[-1], work("centred", e - s, ws[i].shape[1]))
            w64 = ws[i].double()
            mean, var = w64 @ moments.mean, ((w64 @ moments.m2) * w64).sum(1) / m
            stats.append(torch.stack([mean + w64 @ offset if i == 0 else mean, var * (m / (m - 1))]))
            hidden.append(_HiddenLayer(ws[i], gammas[i], betas[i], slopes[i], mean.to(a.dtype),
                                       torch.rsqrt(var + eps[i]).to(a.dtype),
                                       (moments.mean * m).to(a.dtype), moments.m2.to(a.dtype)))
        sign = torch.where(gammas[-1] < 0, -1.0, 1.0).to(a.dtype)
        w_top = ws[-1] * sign[:, None]
        gathered = None if f is None else f @ (w_f * sign[:, None]).t()  # (P_f, C): the gathered part of y'
        moments = _Moments(w_top.shape[0], a.device, matrix=False)
        tops, rows_max = [], []  # (P, C_L) max and its row in the chunk
        for s, e in spans:
            y = torch.mm(_hidden_outputs(x[s:e], hidden, work)[-1], w_top.t(), out=work("y", e - s, w_top.shape[0]))
            if gathered is not None:
                y.add_(torch.index_select(gathered, 0, idx[s:e], out=work("gathered", e - s, y.shape[1])))
            top, row = _max_rows(y, pool)
            tops.append(top), rows_max.append(row)
            moments.add(y, y)
        var = moments.m2 / m
        stats.append(torch.stack([moments.mean * sign, var * (m / (m - 1))]))
        mean_s, invstd = moments.mean.to(a.dtype), torch.rsqrt(var + eps[-1]).to(a.dtype)
        xhat = (torch.cat(tops) - mean_s) * invstd  # (P, C_L): x̂' at the arg-max rows
        out = _activate_(torch.addcmul(betas[-1], gammas[-1].abs(), xhat), slopes[-1])  # > 0 where its input was
        # x: the input as fed (centred or not); each hidden layer's statistics; the top layer's max and its rows
        layer_stats = [t for layer in hidden for t in (layer.mean, layer.invstd, layer.input_sum, layer.input_gram)]
        ctx.save_for_backward(x, f, w_f, idx, *params, *layer_stats, sign, mean_s, invstd, torch.cat(rows_max), xhat,
                              out, gathered)
        ctx.slopes, ctx.spans, ctx.pool, ctx.rows = slopes, spans, pool, rows
        stats = torch.cat(stats, dim=1)
        ctx.mark_non_differentiable(stats)
        return out, stats

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _grad_stats: Tensor) -> tuple[Tensor | None, ...]:
        x, f, w_f, idx, *saved = ctx.saved_tensors
        layers = len(ctx.slopes)
        params, saved = saved[:3 * layers], saved[3 * layers:]
        hidden = [_HiddenLayer(*params[3 * i:3 * i + 3], ctx.slopes[i], *saved[4 * i:4 * i + 4])
                  for i in range(layers - 1)]
        sign, mean_s, invstd, rows_max, xhat, out, gathered = saved[4 * (layers - 1):]
        w_top = params[-3] * sign[:, None]
        spans, k = ctx.spans, ctx.pool
        m = x.shape[0]
        need_input = ctx.needs_input_grad[0]
        grad_a = x.new_empty(x.shape) if need_input else None
        work = _Workspace(ctx.rows, x)
        grads: list[Tensor] = []

        g_top = _activation_grad(grad, out, ctx.slopes[-1])  # (P, C_L), at the arg-max rows
        grad_beta, grad_gamma_abs = g_top.sum(0), (g_top * xhat).sum(0)
        m1, c2 = grad_beta / m, grad_gamma_abs / m
        d = params[-2].abs() * invstd
        dense_scale = -d * c2 * invstd
        dense_w_t = (dense_scale[:, None] * w_top).t()
        dense_gathered = None if f is None else gathered * dense_scale
        grad_gathered = None if f is None else torch.zeros_like(gathered)
        dense_b = d * (c2 * invstd * mean_s - m1)
        g_top = g_top * d
        grad_w_top = torch.zeros_like(w_top)
        below = hidden[-1] if hidden else None
        sums = _zero_sums(below) if below is not None else None
        stored = x.new_empty(m, w_top.shape[1]) if below is not None and (len(hidden) > 1 or need_input) else None
        for s, e in spans:
            hs = _hidden_outputs(x[s:e], hidden, work)
            dy = torch.addmm(dense_b, hs[-1], dense_w_t, out=work("dy", e - s, w_top.shape[0]))  # h Bᵀ + b, …
            if dense_gathered is not None:
                dy.add_(torch.index_select(dense_gathered, 0, idx[s:e], out=work("gathered", e - s, dy.shape[1])))
            dy.scatter_add_(0, rows_max[s // k:e // k], g_top[s // k:e // k])  # … + D g at the arg-max rows
            grad_w_top.addmm_(dy.t(), hs[-1])
            if grad_gathered is not None:
                grad_gathered.index_add_(0, idx[s:e], dy)
            if below is not None:
                grad_h = torch.mm(dy, w_top, out=work("grad_h", e - s, w_top.shape[1]))
                g = _activation_grad(grad_h, hs[-1], below.slope, grad_h if stored is None else stored[s:e])
                _accumulate(sums, g, hs[-2])
            elif need_input:
                torch.mm(dy, w_top, out=grad_a[s:e])
        grads[:0] = [grad_w_top * sign[:, None], grad_gamma_abs * sign, grad_beta]
        for i in range(len(hidden) - 1, -1, -1):
            layer = hidden[i]
            *layer_grads, m1, c2 = layer.gradients(*sums, m)
            grads[:0] = layer_grads
            if i == 0 and not need_input:
                break
            d = layer.gamma * layer.invstd
            propagate_g = d[:, None] * layer.weight  # (C_out, C_in)
            propagate_h = -(layer.weight.t() * (d * c2 * layer.invstd)) @ layer.weight  # (C_in, C_in)
            constant = (d * (c2 * layer.mean * layer.invstd - m1)) @ layer.weight
            g_rows, below = stored, hidden[i - 1] if i > 0 else None
            if below is not None:
                sums = _zero_sums(below)
                stored = x.new_empty(m, layer.weight.shape[1]) if (i > 1 or need_input) else None
            for s, e in spans:
                hs = _hidden_outputs(x[s:e], hidden[:i], work)
                grad_h = torch.addmm(constant, hs[-1], propagate_h,
                                     out=grad_a[s:e] if below is None else work("grad_h", e - s, hs[-1].shape[1]))
                grad_h.addmm_(g_rows[s:e], propagate_g)
                if below is not None:
                    g = _activation_grad(grad_h, hs[-1], below.slope, grad_h if stored is None else stored[s:e])
                    _accumulate(sums, g, hs[-2])
        grad_f = grad_w_f = None
        if f is not None:
            grad_f = grad_gathered @ (w_f * sign[:, None]) if ctx.needs_input_grad[1] else None
            grad_w_f = (grad_gathered.t() @ f) * sign[:, None] if ctx.needs_input_grad[2] else None
        return (grad_a, grad_f, grad_w_f, None, None, None, None, *grads)


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
        if self.training:
            _check_training_rows(a2.shape[0])
        pool = a.shape[-2] if self.pool else 0
        slope = self.negative_slope if self.relu else None
        if pool and self.training:
            out, stats = _PooledMLPFunction.apply(a2, f2, self.gathered_weight, flat_idx, pool, (slope,),
                                                  (self.bn.eps,), self.weight, self.bn.weight, self.bn.bias)
        else:
            out, stats = _LinearBNFunction.apply(a2, self.weight, f2, self.gathered_weight, flat_idx, self.bn.weight,
                                                 self.bn.bias, self.bn.running_mean, self.bn.running_var,
                                                 self.training, slope, pool, self.bn.eps)
        if self.training:
            _update_running(self.bn, stats)
        return out.view(*lead, -1)


class PooledMLP(nn.Sequential):
    """A shared MLP of :class:`LinearBN` layers whose last layer takes the max over the neighbour axis, as in
    PointNet: ``(..., K, C_0) → (..., C_L)``.

    In training the whole stack runs as one chunked function (:class:`_PooledMLPFunction`) that stores no
    ``(..., K, C)`` activation between forward and backward and keeps each chunk's work in cache; in evaluation it
    runs its layers in turn. Parameters and state-dict keys are those of the ``nn.Sequential`` of its layers.

    Args:
        widths: ``C_0, C_1, ..., C_L``.
        negative_slope: of every layer's activation (0: ReLU).
    """

    def __init__(self, widths: Sequence[int], negative_slope: float = 0.0) -> None:
        super().__init__(*_stack("PooledMLP", widths, "pool", negative_slope))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        a = x.reshape(-1, x.shape[-1])
        _check_training_rows(a.shape[0])
        params = [t for layer in self for t in (layer.weight, layer.bn.weight, layer.bn.bias)]
        slopes = tuple(layer.negative_slope if layer.relu else None for layer in self)
        out, stats = _PooledMLPFunction.apply(a, None, None, None, x.shape[-2], slopes,
                                              tuple(layer.bn.eps for layer in self), *params)
        _update_stacked(list(self), stats)
        return out.view(*x.shape[:-2], -1)


class LinearBNChain(nn.Sequential):
    """:class:`LinearBN` layers of which only the last has an activation, e.g. ``14 → 32 → 64`` with one ReLU.

    Without activations in between, the chain is one affine map of its input ``x``: each BatchNorm is affine given
    its batch statistics, and those follow exactly from the mean ``m`` and covariance ``C`` of ``x``. Layer ``k``'s
    output is ``h_k = A_k x + t_k`` with ``A_k = D_k W_k A_{k-1}``, ``t_k = D_k (W_k t_{k-1} - μ_k) + β_k``
    (``A_0 = I, t_0 = 0``), ``D_k = γ_k / √(σ_k² + ε)``, from its batch mean ``μ_k = W_k (A_{k-1} m + t_{k-1})`` and
    variance ``σ_k² = diag(W_k A_{k-1} C A_{k-1}ᵀ W_kᵀ)``. In training the chain computes
    ``act((x - m) A_Lᵀ + A_L m + t_L)``: one product from the input's width to the output's, with the small matrices
    built (in float64) by autograd-tracked operations, so every gradient (parameters, and through ``m, C`` the
    input) is exact; the inner shifts ``β_k`` cancel in the next normalisation and get exact zeros. It is meant
    for narrow inputs (the centred input is kept for the covariance's gradient when the input requires one). In
    evaluation it runs its layers in turn. Parameters and state-dict keys are those of the ``nn.Sequential`` of its layers.

    Args:
        widths: ``C_0, C_1, ..., C_L``.
        negative_slope: of the last layer's activation (0: ReLU).

    Shapes:
        ``(..., C_0) → (..., C_L)``.
    """

    def __init__(self, widths: Sequence[int], negative_slope: float = 0.0) -> None:
        super().__init__(*_stack("LinearBNChain", widths, "relu", negative_slope))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        a = x.reshape(-1, x.shape[-1])
        m = a.shape[0]
        _check_training_rows(m)
        mean = a.mean(0)
        centred = a - mean
        cov = (centred.t() @ centred).double() / m  # (C_0, C_0)
        mean64 = mean.double()
        linear = torch.eye(a.shape[1], dtype=torch.float64, device=a.device)  # A_0
        shift = torch.zeros_like(mean64)  # t_0
        for layer in self:
            weight = layer.weight.double()
            w = weight @ linear  # (C_k, C_0): W_k A_{k-1}
            mu = weight @ (linear @ mean64 + shift)
            var = ((w @ cov) * w).sum(1)
            _update_running(layer.bn, torch.stack([mu, var * (m / (m - 1))]).detach())
            scale = layer.bn.weight.double() * torch.rsqrt(var + layer.bn.eps)
            linear, shift = scale[:, None] * w, scale * (weight @ shift - mu) + layer.bn.bias.double()
        out = torch.addmm((linear @ mean64 + shift).to(a.dtype), centred, linear.to(a.dtype).t())
        last = self[-1]
        return _activate_(out, last.negative_slope if last.relu else None).view(*x.shape[:-1], -1)
