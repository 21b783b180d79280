"""PCT offset attention (Guo et al., "PCT: Point Cloud Transformer", 2021), channels last, as RISurConv uses it
inside each neighbourhood and across the centres.

The attention core ``r = x - Aᵀ v`` runs as one chunked autograd function over groups of ``L`` tokens
(:class:`_AttentionCoreFunction`): only ``x`` is stored for the backward pass, and the queries, keys, values and
the ``L × L`` attention matrices are recomputed a chunk at a time. On RISurConv's ``(B, S, K, 64)`` neighbourhoods
and its ``(B, 1024, C)`` centre attention the stock composition keeps five tensors of those sizes alive.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from pointgeo.nn.linear_bn import LinearBN

AttentionNorm = Literal["query", "centres"]

EPS = 1e-9
CHUNK_ROWS = 8192
"""Tokens per chunk of :class:`_AttentionCoreFunction` (fewer when one group's ``L × L`` attention is large)."""
CHUNK_ATTENTION = 1 << 20
"""Attention entries per chunk (4 MB in float32)."""


def _attention(x: Tensor, w_qk: Tensor, w_v: Tensor, b_v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """For ``x (..., L, C)``: queries and keys ``(..., L, C_qk)``, values ``(..., L, C)``, the softmax
    ``P = softmax(q kᵀ)`` over the keys ``(..., L, L)`` and its sum over the queries plus ε, ``(..., 1, L)``."""
    q, k = (x @ w_qk.t()).chunk(2, dim=-1)
    v = torch.addmm(b_v, x.reshape(-1, x.shape[-1]), w_v.t()).view_as(x)
    p = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (..., L query, L key)
    return q, k, v, p, p.sum(dim=-2, keepdim=True).add_(EPS)


class _AttentionCoreFunction(torch.autograd.Function):
    """``r = x - Aᵀ v`` for ``x (G, L, C)``: ``[q k] = x W_qkᵀ``, ``v = x W_vᵀ + b_v``, ``A = P / (ε + Σ_query P)``
    with ``P = softmax(q kᵀ)`` over the keys (PCT's offset attention before its output layer).

    Backward, per chunk of groups, with ``G = ∂r`` (``L × C``): ``∂v = -A G``, ``∂A = -v Gᵀ``, through the
    normalisation ``∂P = (∂A - Σ_query(∂A ⊙ A)) / (ε + Σ_query P)``, through the softmax
    ``∂(q kᵀ) = P ⊙ (∂P - Σ_key(∂P ⊙ P))``, then ``∂q = ∂(q kᵀ) k``, ``∂k = ∂(q kᵀ)ᵀ q`` and the linear maps."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, w_qk: Tensor, w_v: Tensor, b_v: Tensor) -> Tensor:
        length = x.shape[1]
        step = max(1, min(CHUNK_ROWS // length, CHUNK_ATTENTION // length**2))
        out = torch.empty_like(x)
        for s in range(0, x.shape[0], step):
            _, _, v, p, total = _attention(x[s:s + step], w_qk, w_v, b_v)
            torch.sub(x[s:s + step], p.div_(total).transpose(-1, -2) @ v, out=out[s:s + step])
        ctx.save_for_backward(x, w_qk, w_v, b_v)
        ctx.step = step
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, w_qk, w_v, b_v = ctx.saved_tensors
        step, c = ctx.step, x.shape[-1]
        grad_x = torch.empty_like(x)
        grad_w_qk, grad_w_v, grad_b_v = torch.zeros_like(w_qk), torch.zeros_like(w_v), torch.zeros_like(b_v)
        for s in range(0, x.shape[0], step):
            xs, gs = x[s:s + step], grad[s:s + step]
            q, k, v, p, total = _attention(xs, w_qk, w_v, b_v)
            a = p / total
            grad_v = torch.bmm(a, gs).neg_()  # (g, L, C)
            grad_a = torch.bmm(v, gs.transpose(-1, -2)).neg_()  # (g, L query, L key)
            grad_p = grad_a.sub_((grad_a * a).sum(dim=-2, keepdim=True)).div_(total)
            grad_logits = grad_p.sub_((grad_p * p).sum(dim=-1, keepdim=True)).mul_(p)
            grad_qk = torch.cat([grad_logits @ k, grad_logits.transpose(-1, -2) @ q], dim=-1).view(-1, w_qk.shape[0])
            grad_v = grad_v.view(-1, c)
            rows = xs.reshape(-1, c)
            dx = torch.addmm(gs.reshape(-1, c), grad_qk, w_qk).addmm_(grad_v, w_v)
            grad_x[s:s + step] = dx.view_as(xs)
            grad_w_qk.addmm_(grad_qk.t(), rows)
            grad_w_v.addmm_(grad_v.t(), rows)
            grad_b_v.add_(grad_v.sum(0))
        return grad_x, grad_w_qk, grad_w_v, grad_b_v


class OffsetAttention(nn.Module):
    """PCT offset attention, channels last: ``x + ReLU(BN(W(x - Aᵀ v)))`` with ``A = norm(softmax(q kᵀ))`` over the
    second-last axis of ``x``.

    On ``(B, L, C)`` it attends over the ``L`` centres; on ``(B, S, K, C)`` inside each neighbourhood of ``K``
    points. ``norm="query"`` L1-normalises the attention over the query axis as PCT does (each group on its own:
    the chunked :class:`_AttentionCoreFunction`); ``norm="centres"`` (only for neighbourhoods) over the centre
    axis ``S`` as the released RISurConv code does, which couples the neighbourhoods of a sample.
    """

    def __init__(self, channels: int, norm: AttentionNorm = "query") -> None:
        super().__init__()
        self.qk = nn.Linear(channels, 2 * (channels // 4), bias=False)
        self.v = nn.Linear(channels, channels)
        self.out = LinearBN(channels, channels)
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        if self.norm == "centres" and x.dim() == 4:
            _, _, v, p, _ = _attention(x, self.qk.weight, self.v.weight, self.v.bias)  # p: (B, S, K query, K key)
            core = x - (p / (EPS + p.sum(dim=1, keepdim=True))).transpose(-1, -2) @ v
        else:
            groups = x.reshape(-1, *x.shape[-2:])
            core = _AttentionCoreFunction.apply(groups, self.qk.weight, self.v.weight, self.v.bias).view_as(x)
        return x + self.out(core)
