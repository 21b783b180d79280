"""RoITr's global transformer on the superpoints of both fragments (GeoTransformer's geometric self-attention,
with RoITr's learned rotation-invariant "position" fed to cross-attention).

Geometric structure embedding (within one cloud, rotation and translation invariant):

    ρ_ij = ‖p_i − p_j‖ / σ_d,     α_ij^x = ∠(x − p_i, p_j − p_i) · 180 / (σ_a π)   for the k nearest x of p_i
    r_ij = W_d SE(ρ_ij) + max_x W_a SE(α_ij^x)           (SE: sinusoidal embedding, base 10000)

Self-attention: ``s_ij = (⟨q_i, k_j⟩ + ⟨q_i, W_p r_ij⟩) / √d_h``, ``h_i = Σ_j softmax_j(s_ij) v_j``; the position
``π_i = Σ_{j≠i} softmax_{j≠i}(s_ij) W_vp r_ij``, then ``π_i ← FFN(LayerNorm(W_π π_i))``. Cross-attention from cloud
X to cloud Y: ``q_i = W_q(x_i + π_i^X)``, ``k_j = W_k(y_j + π_j^Y)``, ``v_j = W_v y_j``. Every ``r_ij`` uses intra-cloud
geometry only, so ``π`` is invariant per cloud and the cross-attention needs no shared frame.

Layers are post-norm as released, ``x ← FFN(LayerNorm(x + Attn(x)))`` with ``FFN(x) = LayerNorm(x + MLP(x))``.
Two options that are not in the released RoITr (both keep every output invariant; they only rescale or normalise
per superpoint): ``layer_scale`` multiplies each attention and MLP residual branch by a learnable per-channel gate
``γ`` initialised to that value (LayerScale, Touvron et al. 2021; ``0`` is ReZero's start), so the transformer
starts near the identity; ``pre_norm`` uses ``x ← x + Attn(LayerNorm(x))``, ``x ← x + MLP(LayerNorm(x))`` and one
final LayerNorm. Why: trained from scratch at small width, the released layers let attention pooling give every
superpoint of a cloud one shared component within the first steps and the coarse descriptors collapse to nearly one
vector per cloud. On a one-pair overfit of the test-size network (circle loss alone, Adam 1e-3, 200 steps) the
released layers sit at circle loss ~0.65-0.74 from step 25 on; with ``layer_scale=1e-2`` the loss falls 2.07 →
0.54 (``0``: → 0.45), as without any transformer (2.09 → 0.55); ``pre_norm`` alone stalls like the released
layers (0.92 → 0.72), ``pre_norm`` with ``layer_scale=1e-2`` reaches 0.42. In the CPU config's training the gates
alone do not prevent the collapse; centring the descriptors does (:mod:`~pointgeo.nn.roitr.network`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pointgeo.geometry import index_points, knn
from pointgeo.nn.roitr.ppf import vector_angle


def sinusoidal_embedding(x: Tensor, dim: int) -> Tensor:
    """``(…) -> (…, dim)``: ``[sin(x ω_0), cos(x ω_0), sin(x ω_1), …]``, ``ω_k = 10000^(−2k/dim)``."""
    omega = torch.exp(torch.arange(0, dim, 2, dtype=x.dtype, device=x.device) * (-math.log(10000.0) / dim))
    angles = x.unsqueeze(-1) * omega
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class GeometricStructureEmbedding(nn.Module):
    """``r (B, S, S, dim)`` of superpoints ``pos (B, S, 3)`` (module docstring); ``rank (B, S)`` decides kNN ties."""

    def __init__(self, dim: int, sigma_d: float = 0.2, sigma_a: float = 15.0, angle_k: int = 3) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"the embedding width must be even; got {dim}")
        self.dim, self.sigma_d, self.sigma_a, self.angle_k = dim, sigma_d, sigma_a, angle_k
        self.proj_d = nn.Linear(dim, dim)
        self.proj_a = nn.Linear(dim, dim)

    def forward(self, pos: Tensor, rank: Tensor) -> Tensor:
        diff = pos.unsqueeze(1) - pos.unsqueeze(2)  # (B, S_i, S_j, 3): p_j − p_i
        rho = diff.norm(dim=-1) / self.sigma_d
        idx = knn(pos, pos, self.angle_k + 1, rank=rank)[0][..., 1:]  # (B, S, k), the point itself dropped
        anchors = index_points(pos, idx) - pos.unsqueeze(2)  # (B, S, k, 3)
        angle = vector_angle(anchors.unsqueeze(2), diff.unsqueeze(3))  # (B, S_i, S_j, k)
        alpha = angle * 180.0 / (self.sigma_a * math.pi)
        return (self.proj_d(sinusoidal_embedding(rho, self.dim))
                + self.proj_a(sinusoidal_embedding(alpha, self.dim)).amax(dim=-2))


class LayerScale(nn.Module):
    """``x ↦ γ ⊙ x`` with a learnable per-channel ``γ (d,)`` initialised to ``init`` (Touvron et al., CaiT);
    ``init=None``: the identity (no parameter)."""

    def __init__(self, dim: int, init: float | None) -> None:
        super().__init__()
        self.gamma = None if init is None else nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x if self.gamma is None else x * self.gamma


class FeedForward(nn.Module):
    """``x ← LayerNorm(x + γ ⊙ W₂ ReLU(W₁ x))``, ``W₁: d → 2d`` (post-norm); ``pre_norm``:
    ``x ← x + γ ⊙ W₂ ReLU(W₁ LayerNorm(x))``. ``γ``: :class:`LayerScale` (``layer_scale=None``: 1)."""

    def __init__(self, dim: int, layer_scale: float | None = None, pre_norm: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.scale = LayerScale(dim, layer_scale)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_norm:
            return x + self.scale(self.net(self.norm(x)))
        return self.norm(x + self.scale(self.net(x)))


def _heads(x: Tensor, heads: int) -> Tensor:
    """``(B, S, d) -> (B, H, S, d / H)``."""
    b, s, d = x.shape
    return x.reshape(b, s, heads, d // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """``(B, H, S, d_h) -> (B, S, H d_h)``."""
    b, h, s, dh = x.shape
    return x.transpose(1, 2).reshape(b, s, h * dh)


class GeometricSelfAttention(nn.Module):
    """Self-attention with the geometric embedding as relative position; returns the features and ``π``
    (``x (B, S, d)``, ``r (B, S, S, d)`` → ``(B, S, d)``, ``(B, S, d)``)."""

    def __init__(self, dim: int, heads: int, layer_scale: float | None = None, pre_norm: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.pre_norm = heads, pre_norm
        self.w_q, self.w_k, self.w_v = (nn.Linear(dim, dim) for _ in range(3))
        self.w_p, self.w_vp = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.scale = LayerScale(dim, layer_scale)
        self.ffn = FeedForward(dim, layer_scale, pre_norm)
        self.pos_proj = nn.Linear(dim, dim)
        self.pos_norm = nn.LayerNorm(dim)
        self.pos_ffn = FeedForward(dim)

    def forward(self, x: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        h = self.heads
        z = self.norm(x) if self.pre_norm else x
        q, k, v = _heads(self.w_q(z), h), _heads(self.w_k(z), h), _heads(self.w_v(z), h)
        b, s, _, d = r.shape
        p = self.w_p(r).reshape(b, s, s, h, d // h).permute(0, 3, 1, 2, 4)  # (B, H, S, S, d_h)
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bhid,bhijd->bhij", q, p)) / math.sqrt(d // h)
        out = x + self.scale(self.w_o(_merge(scores.softmax(-1) @ v)))
        out = self.ffn(out if self.pre_norm else self.norm(out))
        eye = torch.eye(s, dtype=torch.bool, device=x.device)
        off = scores.masked_fill(eye, float("-inf")).softmax(-1)  # j ≠ i
        vp = self.w_vp(r).reshape(b, s, s, h, d // h).permute(0, 3, 1, 2, 4)
        pi = _merge(torch.einsum("bhij,bhijd->bhid", off, vp))
        return out, self.pos_ffn(self.pos_norm(self.pos_proj(pi)))


class PositionedCrossAttention(nn.Module):
    """Cross-attention of ``x (B, S, d)`` over ``y (B, T, d)`` with the clouds' learned positions
    ``π_x (B, S, d)``, ``π_y (B, T, d)`` added to queries and keys; ``(B, S, d)``."""

    def __init__(self, dim: int, heads: int, layer_scale: float | None = None, pre_norm: bool = False) -> None:
        super().__init__()
        self.heads, self.pre_norm = heads, pre_norm
        self.w_q, self.w_k, self.w_v = (nn.Linear(dim, dim) for _ in range(3))
        self.w_o = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.scale = LayerScale(dim, layer_scale)
        self.ffn = FeedForward(dim, layer_scale, pre_norm)

    def forward(self, x: Tensor, y: Tensor, pi_x: Tensor, pi_y: Tensor) -> Tensor:
        h = self.heads
        zx, zy = (self.norm(x), self.norm(y)) if self.pre_norm else (x, y)
        q, k, v = _heads(self.w_q(zx + pi_x), h), _heads(self.w_k(zy + pi_y), h), _heads(self.w_v(zy), h)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
        out = x + self.scale(self.w_o(_merge(attn @ v)))
        return self.ffn(out if self.pre_norm else self.norm(out))


class GeometricTransformer(nn.Module):
    """``in_proj``, alternating self/cross layers (``blocks``, RoITr ``("self", "cross") × 3``), ``out_proj``.

    Args:
        in_dim, dim, out_dim: widths of the backbone's superpoint features, of the attention, of the output.
        heads: attention heads.
        blocks: layer kinds in order; cross layers update the source first, then the target from the new source.
        sigma_d, sigma_a, angle_k: the geometric embedding's distance scale (cloud units), angle scale (degrees)
            and number of angle anchors.
        layer_scale: initial value of the per-channel gates on every residual branch (``None``: no gates, as
            released; module docstring).
        pre_norm: pre-norm layers with a final LayerNorm instead of the released post-norm ones.
    """

    def __init__(self, in_dim: int, dim: int, out_dim: int, heads: int = 4,
                 blocks: tuple[str, ...] = ("self", "cross") * 3, sigma_d: float = 0.2, sigma_a: float = 15.0,
                 angle_k: int = 3, layer_scale: float | None = None, pre_norm: bool = False) -> None:
        super().__init__()
        blocks = tuple(blocks)
        if not blocks or set(blocks) - {"self", "cross"}:
            raise ValueError(f"blocks must be a non-empty sequence of 'self' and 'cross'; got {blocks}")
        self.blocks, self.angle_k = blocks, angle_k
        self.in_proj, self.out_proj = nn.Linear(in_dim, dim), nn.Linear(dim, out_dim)
        self.embedding = GeometricStructureEmbedding(dim, sigma_d, sigma_a, angle_k)
        self.layers = nn.ModuleList(GeometricSelfAttention(dim, heads, layer_scale, pre_norm) if kind == "self"
                                    else PositionedCrossAttention(dim, heads, layer_scale, pre_norm)
                                    for kind in blocks)
        self.final_norm = nn.LayerNorm(dim) if pre_norm else None

    def forward(self, src_pos: Tensor, tgt_pos: Tensor, src_feats: Tensor, tgt_feats: Tensor, src_rank: Tensor,
                tgt_rank: Tensor) -> tuple[Tensor, Tensor]:
        """Superpoints ``(B, S, 3)``, ``(B, T, 3)``, their features and ranks → ``(B, S, out)``, ``(B, T, out)``."""
        r_src, r_tgt = self.embedding(src_pos, src_rank), self.embedding(tgt_pos, tgt_rank)
        x, y = self.in_proj(src_feats), self.in_proj(tgt_feats)
        pi_x, pi_y = torch.zeros_like(x), torch.zeros_like(y)
        for kind, layer in zip(self.blocks, self.layers):
            if kind == "self":
                (x, pi_x), (y, pi_y) = layer(x, r_src), layer(y, r_tgt)
            else:
                x = layer(x, y, pi_x, pi_y)
                y = layer(y, x, pi_y, pi_x)
        if self.final_norm is not None:
            x, y = self.final_norm(x), self.final_norm(y)
        return self.out_proj(x), self.out_proj(y)
