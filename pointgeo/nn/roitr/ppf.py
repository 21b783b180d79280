"""Point pair features and RoITr's local PPF attention (Yu et al., CVPR 2023, Sec. 3.1).

For a reference point ``p_i`` with normal ``n_i`` and a neighbour ``p_j`` with normal ``n_j``, ``d = p_j − p_i``:

    PPF(i, j) = ( ‖d‖,  ∠(n_i, d) / π,  ∠(n_j, d) / π,  ∠(n_i, n_j) / π ),     ∠(a, b) = atan2(‖a × b‖, a · b)

Distances, angles between normals and between normals and offsets do not change when the cloud moves rigidly and its
normals turn with it, so every feature built from PPFs alone is rotation and translation invariant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def vector_angle(a: Tensor, b: Tensor) -> Tensor:
    """``∠(a, b) = atan2(‖a × b‖, a · b) ∈ [0, π]`` over the last dimension: ``(…, 3), (…, 3) -> (…)`` (accurate
    near 0 and π; 0 when either vector is zero)."""
    return torch.atan2(torch.linalg.cross(a, b, dim=-1).norm(dim=-1), (a * b).sum(-1))


def point_pair_features(centre: Tensor, centre_normal: Tensor, neighbours: Tensor, neighbour_normals: Tensor
                        ) -> Tensor:
    """The 4-d PPF of every (centre, neighbour) pair.

    Shapes: ``centre, centre_normal (B, S, 3)``, ``neighbours, neighbour_normals (B, S, K, 3)`` → ``(B, S, K, 4)``
    (distance in the clouds' unit, the three angles divided by π).
    """
    d = neighbours - centre.unsqueeze(2)
    n_i = centre_normal.unsqueeze(2).expand_as(d)
    return torch.stack([d.norm(dim=-1), vector_angle(n_i, d) / math.pi, vector_angle(neighbour_normals, d) / math.pi,
                        vector_angle(n_i, neighbour_normals) / math.pi], dim=-1)


class LocalPPFAttention(nn.Module):
    """RoITr's ``LocalPPFTransformer``: multi-head attention of each centre over its ``K`` neighbours, with the
    neighbours' PPFs as relative positions.

        x = W_in f,   e_ij = W_e PPF(i, j)
        q_i = W_q x_i,  k_j = W_k x_j,  v_j = W_v x_j,  p_ij = W_p e_ij,  u_ij = W_u e_ij
        a_ij = softmax_j(⟨q_i, k_j + p_ij⟩ / √d_head)          (per head, over the K neighbours)
        y_i = LayerNorm(W_o Σ_j a_ij (v_j + u_ij) + x_i),      out_i = W_out y_i

    Args:
        in_dim, out_dim: feature widths of the input and the output.
        hidden_dim: width of the attention (divisible by ``num_heads``).
        num_heads: attention heads.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, num_heads: int = 4) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.w_in = nn.Linear(in_dim, hidden_dim)
        self.w_e = nn.Linear(4, hidden_dim)
        self.w_q, self.w_k, self.w_v = (nn.Linear(hidden_dim, hidden_dim) for _ in range(3))
        self.w_p, self.w_u = nn.Linear(hidden_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim)
        self.w_o = nn.Linear(hidden_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.w_out = nn.Linear(hidden_dim, out_dim)

    def forward(self, feats: Tensor, centres: Tensor | None, neighbours: Tensor, ppf: Tensor) -> Tensor:
        """Args:
            feats: ``(B, N, C_in)`` features of the points neighbours are drawn from.
            centres: ``(B, S)`` indices of the centres among those points (``None``: every point, ``S = N``).
            neighbours: ``(B, S, K)`` indices of each centre's neighbours among the ``N`` points.
            ppf: ``(B, S, K, 4)`` their point pair features.

        Returns:
            ``(B, S, out_dim)``.
        """
        x = self.w_in(feats)
        b, s, k = neighbours.shape
        x_c = x if centres is None else torch.gather(x, 1, centres.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x_n = torch.gather(x, 1, neighbours.reshape(b, -1, 1).expand(-1, -1, x.shape[-1])).reshape(b, s, k, -1)
        e = self.w_e(ppf.to(x.dtype))
        h, dh = self.num_heads, x.shape[-1] // self.num_heads
        q = self.w_q(x_c).reshape(b, s, 1, h, dh)
        key = (self.w_k(x_n) + self.w_p(e)).reshape(b, s, k, h, dh)
        value = (self.w_v(x_n) + self.w_u(e)).reshape(b, s, k, h, dh)
        attn = ((q * key).sum(-1) / math.sqrt(dh)).softmax(dim=2)  # (B, S, K, H)
        out = (attn.unsqueeze(-1) * value).sum(2).reshape(b, s, -1)
        return self.w_out(self.norm(self.w_o(out) + x_c))


class PPFBlock(nn.Module):
    """RoITr's residual block on one level: ``f ← ReLU(LayerNorm(LocalPPFAttention(f)) + f)``, shapes ``(B, N, C)``."""

    def __init__(self, dim: int, hidden_dim: int, num_heads: int = 4) -> None:
        super().__init__()
        self.attention = LocalPPFAttention(dim, dim, hidden_dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: Tensor, neighbours: Tensor, ppf: Tensor) -> Tensor:
        return torch.relu(self.norm(self.attention(feats, None, neighbours, ppf)) + feats)
