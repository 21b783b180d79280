"""Frame averaging per part (Puny et al., ICLR 2022, applied part by part as in APEN).

Every point ``i`` of part ``k`` sees its part's four proper principal frames ``F_k^s = V_k diag(σ_s)``
(:func:`pointgeo.geometry.part_frames`, :func:`pointgeo.geometry.sign_flips`; detached, as in the released code).
A vector ``v`` enters the network as ``F^sᵀ v`` (per frame ``s``); invariant outputs are averaged over the four
frames, vector outputs ``u^s`` are turned back, ``(1/4) Σ_s F^s u^s``. When part ``k`` moves by ``x ↦ R x + t``
its frames become ``R F_k^{π(s)}`` for a permutation ``π`` of the flips, so the averages are exactly invariant
(equivariant) to each part's own motion.

**Deterministic fallback** (the released code draws a random frame for a part of ≤ 1 point): a part whose axes are
undetermined (fewer than 3 points, collinear, or two principal variances within ``√ε`` of each other, see
:class:`pointgeo.geometry.PartFrames`) uses no frame at all: each of its vectors enters as ``(‖v‖, 0, 0)`` in all
four frames (invariant) and its vector outputs are zero (equivariant), so its votes point nowhere (``Δ = 0``) and
its logits come from lengths and invariant features only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry import gather_parts, knn_in_parts, part_frames, part_rank, sign_flips
from pointgeo.nn.apen.partition import HardPartition


class PartFraming:
    """The frames, centroid and in-part neighbours of every point for one partition of ``pos (B, N, 3)``.

    Attributes:
        centre: ``(B, N, 3)`` the centroid of each point's part (detached).
        frames: ``(B, N, 4, 3, 3)`` the part's four proper frames (columns = axes).
        determined: ``(B, N)`` whether the part has a frame (else the fallback of the module docstring).
        neighbours: ``(B, N, k)`` the ``k`` nearest points inside the part (:func:`pointgeo.geometry.knn_in_parts`,
            ties by :func:`pointgeo.geometry.part_rank`), padded with the point itself.
    """

    def __init__(self, pos: Tensor, partition: HardPartition, k: int) -> None:
        index, parts = partition.index, partition.num_parts
        frames = part_frames(pos.detach(), index, parts, weights=partition.weight.detach())
        self.centre = gather_parts(frames.centre, index)
        self.frames = sign_flips(gather_parts(frames.axes, index))
        self.determined = gather_parts(frames.determined, index)
        self.neighbours = knn_in_parts(pos, index, k, num_parts=parts, rank=part_rank(pos, index, frames))

    def into(self, vectors: Tensor) -> Tensor:
        """``F^sᵀ v`` of vectors ``(B, N, M, 3)`` → ``(B, N, 4, M, 3)``; ``(‖v‖, 0, 0)`` in undetermined parts."""
        framed = torch.einsum("bnmi,bnsij->bnsmj", vectors, self.frames)
        length = (vectors * vectors).sum(-1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny).sqrt()
        fallback = torch.cat([length, torch.zeros_like(vectors[..., :2])], -1).unsqueeze(2).expand_as(framed)
        return torch.where(self.determined[:, :, None, None, None], framed, fallback)

    def back(self, vectors: Tensor) -> Tensor:
        """The frame average ``(1/4) Σ_s F^s u^s`` of framed vectors ``(B, N, 4, M, 3)`` → ``(B, N, M, 3)``; zero in
        undetermined parts."""
        world = torch.einsum("bnsij,bnsmj->bnmi", self.frames, vectors) / self.frames.shape[2]
        return world * self.determined[:, :, None, None]
