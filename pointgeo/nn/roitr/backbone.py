"""RoITr's encoder–decoder on one cloud (``RIPointTransformer``): PPF attention on an FPS hierarchy.

Every neighbourhood, sample and normal comes from :mod:`pointgeo.geometry`, with the tie-breaking ranks of
ARCHITECTURE.md: :func:`~pointgeo.geometry.invariant_rank` of the input cloud (computed once) for the operations on
it, :func:`~pointgeo.geometry.selection_rank` for those on FPS centres.

**Normals** are :func:`pointgeo.geometry.estimate_normals` (PCA over ``normal_k`` neighbours) oriented **away from
the fragment's own centroid** (with that function's invariant fall-backs for points on a plane through the
centroid), a rule invariant to rotation *and* translation of the fragment — unlike the released code's flip
towards the sensor origin, which changes when a fragment is translated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pointgeo.geometry import (
    estimate_normals,
    farthest_point_sampling,
    index_points,
    invariant_rank,
    knn,
    selection_rank,
)
from pointgeo.nn.roitr.ppf import LocalPPFAttention, PPFBlock, point_pair_features


@dataclass
class Level:
    """One level of the hierarchy of a cloud (``B`` clouds of equal size; RoITr runs one at a time).

    ``pos, normal (B, N_l, 3)``; ``rank (B, N_l)`` the tie-breaking rank of its points; ``index (B, N_l)`` their
    indices in the input cloud; ``neighbours (B, N_l, k_l)`` the ``k_l`` nearest other points of the level and
    ``ppf (B, N_l, k_l, 4)`` their PPFs; for ``l ≥ 1``, ``down (B, N_l, k_l)`` the nearest points of level
    ``l − 1`` (the centre itself excluded) and ``down_ppf`` their PPFs, and ``centres (B, N_l)`` the FPS picks
    among level ``l − 1``.
    """

    pos: Tensor
    normal: Tensor
    rank: Tensor
    index: Tensor
    neighbours: Tensor
    ppf: Tensor
    centres: Tensor | None = None
    down: Tensor | None = None
    down_ppf: Tensor | None = None


def _others(query: Tensor, points: Tensor, k: int, rank: Tensor) -> Tensor:
    """The ``k`` nearest ``points`` of each query that is itself one of them, itself excluded: kNN with
    ``k + 1``, first hit dropped (``queryandgroup``): ``(B, S, k)``."""
    return knn(query, points, k + 1, rank=rank)[0][..., 1:]


def _ppf(pos: Tensor, normal: Tensor, centre_pos: Tensor, centre_normal: Tensor, idx: Tensor) -> Tensor:
    return point_pair_features(centre_pos, centre_normal, index_points(pos, idx), index_points(normal, idx))


def minimum_points(neighbours: tuple[int, ...], strides: tuple[int, ...], extra_top: int = 0) -> int:
    """Fewest input points the hierarchy needs: level ``l`` has ``⌊N_{l−1} / s_l⌋`` points and needs
    ``k_l + 1`` of them (and ``k_{l+1} + 1`` for the next level's neighbours, ``extra_top + 1`` at the top)."""
    need = max(neighbours[-1], extra_top) + 1
    for level in range(len(neighbours) - 1, 0, -1):
        need = max(strides[level] * need, neighbours[level - 1] + 1, neighbours[level] + 1)
    return max(need, neighbours[0] + 1)


def build_levels(pos: Tensor, neighbours: tuple[int, ...], strides: tuple[int, ...], normal_k: int) -> list[Level]:
    """The FPS hierarchy of clouds ``pos (B, N, 3)``: level 0 is the input, level ``l`` the
    ``⌊N_{l−1} / s_l⌋`` FPS picks of level ``l − 1`` (``strides[0]`` is ignored: the first stage keeps every point).
    """
    rank = invariant_rank(pos)
    normal = estimate_normals(pos, k=normal_k, rank=rank)
    b, n = pos.shape[:2]
    index = torch.arange(n, device=pos.device).expand(b, n)
    nbr = _others(pos, pos, neighbours[0], rank)
    levels = [Level(pos, normal, rank, index, nbr, _ppf(pos, normal, pos, normal, nbr))]
    for k, stride in zip(neighbours[1:], strides[1:]):
        prev = levels[-1]
        centres = farthest_point_sampling(prev.pos, prev.pos.shape[1] // stride, rank=prev.rank)
        p, nrm = index_points(prev.pos, centres), index_points(prev.normal, centres)
        own = selection_rank(p)
        down = _others(p, prev.pos, k, prev.rank)
        nbr = _others(p, p, k, own)
        levels.append(Level(p, nrm, own, torch.gather(prev.index, 1, centres), nbr, _ppf(p, nrm, p, nrm, nbr),
                            centres, down, _ppf(prev.pos, prev.normal, p, nrm, down)))
    return levels


class _LinearNormReLU(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU())


class TransitionUp(nn.Module):
    """``x_fine ← L₁(x_skip) + interp₃(L₂(x_coarse))`` (``L`` = Linear + LayerNorm + ReLU; ``interp₃`` inverse
    distance weights ``1 / (d + 1e-8)`` over the 3 nearest coarse points)."""

    def __init__(self, coarse_dim: int, fine_dim: int) -> None:
        super().__init__()
        self.skip = _LinearNormReLU(fine_dim, fine_dim)
        self.up = _LinearNormReLU(coarse_dim, fine_dim)

    def forward(self, coarse: Tensor, skip: Tensor, coarse_level: Level, fine_level: Level) -> Tensor:
        idx, sqdist = knn(fine_level.pos, coarse_level.pos, min(3, coarse_level.pos.shape[1]), rank=coarse_level.rank)
        weight = 1.0 / (sqdist.clamp_min(0).sqrt() + 1e-8)
        weight = weight / weight.sum(-1, keepdim=True)
        up = (index_points(self.up(coarse), idx) * weight.unsqueeze(-1)).sum(2)
        return self.skip(skip) + up


class TransitionUpHead(nn.Module):
    """The coarsest decoder stage: ``x ← L₁(concat(x, L₂(mean_i x_i)))`` (``L₁`` = Linear + LayerNorm + ReLU,
    ``L₂`` = Linear + ReLU; the mean over the cloud's points)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fuse = _LinearNormReLU(2 * dim, dim)
        self.glob = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([x, self.glob(x.mean(1, keepdim=True)).expand_as(x)], dim=-1))


class PPFBackbone(nn.Module):
    """RoITr's encoder–decoder (spec table of §1.4; paper-sized defaults).

    Encoder stage ``l``: a transition down (``LocalPPFAttention`` of each FPS centre over its ``k_l`` nearest points
    of the previous level, then LayerNorm + ReLU; stage 0 attends over the input points' own neighbourhoods)
    followed by ``blocks[l]`` residual PPF blocks on the level. Decoder: the head transition up on the coarsest
    level, then transition ups to each finer level, each followed by one PPF block. The input feature of every
    point is the constant 1: geometry enters through PPFs only.

    Args:
        channels: widths per stage, the encoder's and the decoder's on the same level (RoITr:
            ``(64, 128, 256, 256)``).
        neighbours: ``k`` per stage (RoITr: ``(8, 16, 16, 16)``).
        strides: FPS strides per stage (``strides[0]`` must be 1; RoITr: ``(1, 4, 4, 4)``).
        blocks: residual blocks after each transition down (RoITr: ``(1, 2, 2, 2)``).
        num_heads: attention heads.
        max_hidden: cap of the attention width (``hidden = min(out, max_hidden)``, RoITr 256).
        normal_k: neighbours of the normal estimate (RoITr: 33 with Open3D).
    """

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 256), neighbours: tuple[int, ...] = (8, 16, 16, 16),
                 strides: tuple[int, ...] = (1, 4, 4, 4), blocks: tuple[int, ...] = (1, 2, 2, 2), num_heads: int = 4,
                 max_hidden: int = 256, normal_k: int = 33) -> None:
        super().__init__()
        channels, neighbours, strides, blocks = map(tuple, (channels, neighbours, strides, blocks))
        if not len(channels) == len(neighbours) == len(strides) == len(blocks) >= 2:
            raise ValueError(f"channels, neighbours, strides and blocks must have one entry per stage (≥ 2); got "
                             f"{channels}, {neighbours}, {strides}, {blocks}")
        if strides[0] != 1 or min(strides[1:]) < 2:
            raise ValueError(f"strides must be (1, s_1, …) with every s_l ≥ 2; got {strides}")
        self.channels, self.neighbours, self.strides, self.normal_k = channels, neighbours, strides, normal_k
        hidden = [min(c, max_hidden) for c in channels]
        self.down = nn.ModuleList(
            LocalPPFAttention(1 if l == 0 else channels[l - 1], channels[l], hidden[l], num_heads)
            for l in range(len(channels)))
        self.down_norm = nn.ModuleList(nn.LayerNorm(c) for c in channels)
        self.encoder = nn.ModuleList(
            nn.ModuleList(PPFBlock(channels[l], hidden[l], num_heads) for _ in range(blocks[l]))
            for l in range(len(channels)))
        top = len(channels) - 1
        self.head = TransitionUpHead(channels[top])
        self.up = nn.ModuleList(TransitionUp(channels[l + 1], channels[l]) for l in range(top))  # level l+1 -> l
        self.decoder = nn.ModuleList(PPFBlock(channels[l], hidden[l], num_heads) for l in range(top + 1))

    def forward(self, pos: Tensor, extra_top: int = 0) -> tuple[list[Level], Tensor, Tensor]:
        """Args:
            pos: ``(B, N, 3)`` clouds.
            extra_top: neighbours the caller needs among the coarsest points (checked with the rest).

        Returns:
            ``(levels, coarse, fine)``: the hierarchy, the coarsest encoder features ``(B, N_L, channels[-1])``
            (the superpoints' input to the global transformer) and the finest decoder features
            ``(B, N, channels[0])``.

        Raises:
            ValueError: fewer points than the neighbourhoods need (:func:`minimum_points`).
        """
        need = minimum_points(self.neighbours, self.strides, extra_top)
        need = max(need, self.normal_k)
        if pos.shape[1] < need:
            raise ValueError(f"the cloud has {pos.shape[1]} points; this RoITr needs at least {need} (neighbours "
                             f"{self.neighbours}, strides {self.strides}, normal_k {self.normal_k})")
        levels = build_levels(pos, self.neighbours, self.strides, self.normal_k)
        x = torch.ones(pos.shape[0], pos.shape[1], 1, dtype=pos.dtype, device=pos.device)
        skips = []
        for l, level in enumerate(levels):
            if l == 0:
                x = self.down[0](x, None, level.neighbours, level.ppf)
            else:
                x = self.down[l](x, level.centres, level.down, level.down_ppf)
            x = torch.relu(self.down_norm[l](x))
            for block in self.encoder[l]:
                x = block(x, level.neighbours, level.ppf)
            skips.append(x)
        coarse = x
        top = len(levels) - 1
        y = self.decoder[top](self.head(coarse), levels[top].neighbours, levels[top].ppf)
        for l in range(top - 1, -1, -1):
            y = self.up[l](y, skips[l], levels[l + 1], levels[l])
            y = self.decoder[l](y, levels[l].neighbours, levels[l].ppf)
        return levels, coarse, y
