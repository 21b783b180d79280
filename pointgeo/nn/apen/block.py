"""APEN's blocks: a PointNet per (part, frame) on framed inputs, averaged over the frames (spec §4.2).

Point ``i`` of part ``k`` in frame ``s`` reads ``F^sᵀ(x_j − c_k)`` for its ``k_local`` nearest neighbours ``j``
inside the part (3 k_local values), ``F^sᵀ n_i`` (with normals), the part's mean vector features of the previous
block ``F^sᵀ b̄_k`` (3 b_in) and its mean invariant features ``ā_k`` (a_in). Five ``Linear`` layers (ReLU between,
none after the fifth) of widths ``f(m a, m b) = m a + 3 m b`` for ``m = 2 … 6`` (``a = b = 4`` in the first block,
whose inputs carry no features), the fifth layer's weighted mean over the part in that frame concatenated to the
point's five layer outputs, then ``head`` (ReLU) and a last ``Linear`` to ``a_out + 3 b_out + 3`` channels: the
first ``a_out`` averaged over the frames (invariant features), the rest turned back and averaged (``b_out``
equivariant vectors and, first, the part-centre vote ``Δ_i``). The decoder is the same pattern on the last block's
features (widths ``m · (a_in + 3 b_in)`` for ``m = 3 … 7``) with frame-averaged part logits as output.

No BatchNorm (the released default), so a point's outputs depend on its own part only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pointgeo.geometry import index_points, part_means
from pointgeo.nn.apen.framing import PartFraming
from pointgeo.nn.apen.partition import HardPartition


class FramedPointNet(nn.Module):
    """The per-(part, frame) PointNet: ``(B, N, 4, in_width)`` → ``(B, N, 4, out_width)``.

    Args:
        in_width: input channels per point and frame.
        widths: the five (or any number of) point-wise layers; the last one's part mean is broadcast back.
        head: hidden widths after the concatenation.
        out_width: output channels.
    """

    def __init__(self, in_width: int, widths: tuple[int, ...], head: tuple[int, ...], out_width: int) -> None:
        super().__init__()
        dims = [in_width, *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        dims = [sum(widths) + widths[-1], *head]
        self.head = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.out = nn.Linear(dims[-1], out_width)

    def forward(self, x: Tensor, partition: HardPartition) -> Tensor:
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
            outs.append(x)
        b, n, frames, c = x.shape
        pooled, _ = part_means(x, partition.index, partition.num_parts, partition.weight)  # (B, K, 4, C)
        index = partition.index[:, :, None, None].expand(b, n, frames, c)
        x = torch.cat([*outs, torch.gather(pooled, 1, index)], -1)
        for layer in self.head:
            x = torch.relu(layer(x))
        return self.out(x)


@dataclass(frozen=True)
class BlockOutput:
    """A block's per-point outputs: ``seeds (B, N, 3)`` = ``w_i (x_i + Δ_i)``, ``vote (B, N, 3)`` = ``Δ_i``,
    ``invariant (B, N, a_out)`` and ``vectors (B, N, b_out, 3)``."""

    seeds: Tensor
    vote: Tensor
    invariant: Tensor
    vectors: Tensor


def framed_input(pos: Tensor, normal: Tensor | None, framing: PartFraming, partition: HardPartition,
                 invariant: Tensor | None, vectors: Tensor | None) -> Tensor:
    """The per-(point, frame) inputs ``(B, N, 4, 3 k + 3 [normals] + 3 b_in + a_in)`` of the module docstring;
    ``invariant (B, N, a_in)`` and ``vectors (B, N, b_in, 3)`` are the previous block's per-point features, pooled
    here per part."""
    b, n, _ = pos.shape
    offsets = index_points(pos, framing.neighbours) - framing.centre.unsqueeze(2)  # (B, N, k, 3)
    parts = [offsets]
    if normal is not None:
        parts.append(normal.unsqueeze(2))
    if vectors is not None:
        parts.append(partition.pool(vectors.flatten(2)).reshape(b, n, -1, 3))
    x = framing.into(torch.cat(parts, 2)).flatten(3)  # (B, N, 4, 3 M)
    if invariant is not None:
        x = torch.cat([x, partition.pool(invariant).unsqueeze(2).expand(-1, -1, x.shape[2], -1)], -1)
    return x


def block_widths(a: int, b: int, multipliers: tuple[int, ...]) -> tuple[int, ...]:
    """``f(m a, m b) = m a + 3 m b`` for every ``m``."""
    return tuple(m * a + 3 * m * b for m in multipliers)


class APENBlock(nn.Module):
    """One APEN block ``(a_in, b_in) → (a_out, b_out)`` (module docstring).

    Args:
        a_in, b_in: invariant and vector features of the previous block (0, 0 for the first).
        a_out, b_out: features produced.
        k: neighbours inside the part.
        use_normals: read the point normals.
        base: the ``a = b`` of the first block's widths (released: 4).
        head: hidden widths after the concatenation (released: 256, 256, 128).
    """

    def __init__(self, a_in: int, b_in: int, a_out: int, b_out: int, k: int, use_normals: bool, base: int = 4,
                 head: tuple[int, ...] = (256, 256, 128)) -> None:
        super().__init__()
        self.a_out, self.b_out = a_out, b_out
        in_width = 3 * k + 3 * int(use_normals) + 3 * b_in + a_in
        a, b = (a_in, b_in) if a_in + b_in > 0 else (base, base)
        self.net = FramedPointNet(in_width, block_widths(a, b, (2, 3, 4, 5, 6)), head, a_out + 3 * b_out + 3)

    def forward(self, pos: Tensor, normal: Tensor | None, partition: HardPartition, framing: PartFraming,
                invariant: Tensor | None = None, vectors: Tensor | None = None) -> BlockOutput:
        out = self.net(framed_input(pos, normal, framing, partition, invariant, vectors), partition)
        b, n = pos.shape[:2]
        inv = out[..., : self.a_out].mean(2)
        vec = framing.back(out[..., self.a_out:].reshape(b, n, out.shape[2], self.b_out + 1, 3))
        vote = vec[:, :, 0]
        return BlockOutput(partition.weight.unsqueeze(-1) * (pos + vote), vote, inv, vec[:, :, 1:])


class APENDecoder(nn.Module):
    """The decoder: the block pattern on the last block's ``(a_in, b_in)`` features, widths ``m (a_in + 3 b_in)``
    for ``m`` in ``multipliers`` (released: 3 … 7), frame-averaged logits ``(B, N, num_parts)``."""

    def __init__(self, a_in: int, b_in: int, num_parts: int, k: int, use_normals: bool,
                 multipliers: tuple[int, ...] = (3, 4, 5, 6, 7), head: tuple[int, ...] = (256, 256, 128)) -> None:
        super().__init__()
        in_width = 3 * k + 3 * int(use_normals) + 3 * b_in + a_in
        features = a_in + 3 * b_in
        self.net = FramedPointNet(in_width, tuple(m * features for m in multipliers), head, num_parts)

    def forward(self, pos: Tensor, normal: Tensor | None, partition: HardPartition, framing: PartFraming,
                invariant: Tensor, vectors: Tensor) -> Tensor:
        return self.net(framed_input(pos, normal, framing, partition, invariant, vectors), partition).mean(2)
