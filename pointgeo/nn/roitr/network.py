"""RoITr, the Rotation-Invariant Transformer for point cloud matching (Yu, Qin, Hou, Saleh, Li, Busam, Ilic,
CVPR 2023), in pure torch: one fragment pair per forward.

``RoITr()(src_pos (N, 3), tgt_pos (M, 3), transform=None) -> RoITrOutput``:

1. each fragment through the PPF encoder–decoder (:class:`~pointgeo.nn.roitr.backbone.PPFBackbone`, shared
   weights): superpoint features (coarsest level) and point features (input resolution);
2. the superpoints of both through the global transformer (:class:`~pointgeo.nn.roitr.transformer.
   GeometricTransformer`); superpoint descriptors ``normalise(W_c ·)``, point descriptors ``W_f ·`` (not normalised);
3. coarse-to-fine matching (:mod:`pointgeo.nn.roitr.matching`): the top superpoint pairs by dual-normalised scores
   (in training, when ``transform`` is given, up to ``num_gt_coarse`` random ground-truth pairs of overlap above
   ``coarse_overlap`` instead), optimal transport inside each patch pair, mutual top-k correspondences.

Everything the network computes from geometry is a function of distances and angles within one fragment (PPFs,
geometric embeddings, kNN, FPS and ranks from :mod:`pointgeo.geometry`), so every output is invariant to an
independent rigid motion of each fragment and equivariant to permutations of its points (indices follow the
points). Normals: :mod:`pointgeo.nn.roitr.backbone` (away from each fragment's centroid).

Differences from the released code: normals oriented away from the centroid (the released code flips them towards
the sensor origin, which breaks translation invariance); FPS starts at pointgeo's invariant start point (not index
0); ties of kNN/FPS are decided by invariant ranks; patches and overlaps from :mod:`pointgeo.geometry` searches.
Three options, off by default (the released architecture), against a collapse of the descriptors when training
from scratch on a CPU budget (``configs/threedmatch/roitr-cpu.yaml`` turns all on): ``layer_scale`` gates the global
transformer's residual branches (:mod:`~pointgeo.nn.roitr.transformer`), ``center_descriptors`` subtracts each
cloud's mean superpoint descriptor before normalising. With the released layers, and with the gates alone, the CPU
config's superpoint descriptors end up nearly one vector per cloud, the two clouds' vectors apart (on the demo
pair after ~2000 steps with gates: spread about the cloud mean 0.05, positive and negative pair distances 0.876 and
0.878, no source superpoint's nearest target a positive; the circle loss sits near 0.83 because equal distances near
its optimum are cheap). Centring makes a shared component impossible: after 430 steps the spread is 1.0, positive
pairs 1.15 apart against 1.39 for negatives. A third option, ``standardize_point_descriptors``
(:func:`standardize_over_cloud`), does the same for the point descriptors that feed optimal transport: without it
they share one large component (norm 6.3, spread over the points 0.018), the patch scores differ by ~0.02, Sinkhorn
stays near uniform and the OT loss does not fall (on one pair over 100 steps, the true matches' negative
log-likelihood 3.08 -> 3.51); standardized, the same run takes it from 4.99 to 2.64 and the inlier ratio from 0.10
to 0.32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointgeo.nn.roitr.backbone import PPFBackbone, minimum_points
from pointgeo.nn.roitr.losses import patch_overlaps
from pointgeo.nn.roitr.matching import (
    LearnableLogOptimalTransport,
    Patches,
    build_patches,
    extract_correspondences,
    superpoint_scores,
    top_pairs,
)
from pointgeo.nn.roitr.transformer import GeometricTransformer
from pointgeo.registry import register_model


@dataclass
class RoITrOutput:
    """What one forward of :class:`RoITr` returns (``S``, ``T`` superpoints, ``P`` patch pairs, ``K``
    correspondences; ``m``, ``n`` patch sizes).

    ``src_superpoints (S,)``, ``tgt_superpoints (T,)``: indices of the superpoints in the input clouds, in FPS
    order; ``src_superpoint_desc (S, C)``, ``tgt_superpoint_desc (T, C)`` unit descriptors; ``src_point_desc
    (N, C)``, ``tgt_point_desc (M, C)``; ``src_normals (N, 3)``, ``tgt_normals (M, 3)``; ``coarse_scores (S, T)``
    the dual-normalised superpoint scores; ``coarse_pairs (P, 2)`` the superpoint pairs matched finely and
    ``coarse_pair_scores (P,)`` their scores; ``src_patches``, ``tgt_patches``; ``log_assignment (P, m+1, n+1)``
    the OT output; ``correspondences (K, 2)`` (source, target point index) with ``scores (K,)`` and ``groups (K,)``
    (their patch pair); ``overlap (S, T)`` the ground-truth patch overlaps (``None`` without a transform)."""

    src_superpoints: Tensor
    tgt_superpoints: Tensor
    src_superpoint_desc: Tensor
    tgt_superpoint_desc: Tensor
    src_point_desc: Tensor
    tgt_point_desc: Tensor
    src_normals: Tensor
    tgt_normals: Tensor
    coarse_scores: Tensor
    coarse_pairs: Tensor
    coarse_pair_scores: Tensor
    src_patches: Patches
    tgt_patches: Patches
    log_assignment: Tensor
    correspondences: Tensor
    scores: Tensor
    groups: Tensor
    overlap: Tensor | None

    def invariant_outputs(self) -> dict[str, Tensor]:
        """The outputs the pair harness compares (:func:`pointgeo.testing.pairs.measure_pair`): per-point
        descriptors (``src_points``/``tgt_points`` kinds), superpoint descriptors and scores (invariant), and the
        index outputs (superpoints, correspondences)."""
        return {"src_point_desc": self.src_point_desc, "tgt_point_desc": self.tgt_point_desc,
                "src_superpoint_desc": self.src_superpoint_desc, "tgt_superpoint_desc": self.tgt_superpoint_desc,
                "coarse_scores": self.coarse_scores, "coarse_pairs": self.coarse_pairs,
                "scores": self.scores, "src_superpoints": self.src_superpoints,
                "tgt_superpoints": self.tgt_superpoints, "correspondences": self.correspondences}


PAIR_OUTPUT_KINDS = {"src_point_desc": "src_points", "tgt_point_desc": "tgt_points",
                     "src_superpoint_desc": "invariant", "tgt_superpoint_desc": "invariant",
                     "coarse_scores": "invariant", "coarse_pairs": "invariant", "scores": "invariant",
                     "src_superpoints": "src_indices", "tgt_superpoints": "tgt_indices",
                     "correspondences": "correspondences"}
"""How each of :meth:`RoITrOutput.invariant_outputs` follows a motion and permutation of the fragments."""


def check_fragment(pos: object, name: str) -> Tensor:
    """``pos`` as one finite, non-empty floating-point cloud ``(N, 3)``; one ``TypeError``/``ValueError`` naming
    ``name`` otherwise."""
    if not isinstance(pos, Tensor) or not pos.is_floating_point():
        what = f"dtype {pos.dtype}" if isinstance(pos, Tensor) else type(pos).__name__
        raise TypeError(f"{name} must be a floating-point tensor of shape (N, 3); got {what}")
    if pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError(f"{name} must be one cloud of shape (N, 3); got {tuple(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 points)")
    if not torch.isfinite(pos).all():
        raise ValueError(f"{name} contains NaN or inf coordinates ({int((~torch.isfinite(pos)).any(-1).sum())} "
                         f"points)")
    return pos


STANDARDIZE_FLOOR = 1e-3
"""Relative floor of :func:`standardize_over_cloud`'s divisor: at most this factor of amplification."""


def standardize_over_cloud(desc: Tensor) -> Tensor:
    """Point descriptors ``desc (N, C)`` of one cloud minus their mean over the cloud, divided by the root mean
    square of the result (over points and channels) plus ``STANDARDIZE_FLOOR`` times that of ``desc``.

    Means over the cloud's points, so invariant to its motions and permutations (an input whose points all share one
    descriptor maps to 0). One scale per cloud, not per channel, and the floor bounds the amplification, so a channel
    that varies only by rounding stays at rounding.
    """
    centred = desc - desc.mean(0)
    return centred / (centred.pow(2).mean().sqrt() + STANDARDIZE_FLOOR * desc.pow(2).mean().sqrt())


class RoITr(nn.Module):
    """RoITr (module docstring). Defaults: the paper-sized 3DMatch model.

    Args:
        channels, neighbours, strides, blocks, num_heads, max_hidden, normal_k: the backbone
            (:class:`~pointgeo.nn.roitr.backbone.PPFBackbone`).
        transformer_dim, transformer_blocks, sigma_d, sigma_a, angle_k: the global transformer (``sigma_d`` in the
            clouds' unit, metres for 3DMatch).
        descriptor_dim: width of both descriptors.
        patch_size: points per patch (RoITr 64).
        num_coarse: superpoint pairs matched finely at inference (RoITr 256).
        num_gt_coarse: ground-truth superpoint pairs matched finely in training (RoITr 128).
        coarse_overlap: overlap above which a superpoint pair is a training pair and a positive (RoITr 0.1).
        matching_radius: radius of the ground-truth patch overlaps (RoITr 0.05 m).
        sinkhorn_iterations: Sinkhorn rounds (RoITr 100).
        topk: mutual top-k of the correspondence extraction (RoITr 3).
        confidence_threshold: smallest confidence kept (RoITr 0.05).
        layer_scale, pre_norm: not in the released RoITr (default off): gates initialised to ``layer_scale`` on the
            global transformer's residual branches, pre-norm layers; against the collapse of the coarse descriptors
            when training from scratch (:mod:`~pointgeo.nn.roitr.transformer`).
        center_descriptors: not in the released RoITr (default off): subtract each cloud's mean superpoint
            descriptor before normalising (a mean over the cloud's superpoints, so still invariant), so that no
            component shared by all superpoints of a cloud can separate the two clouds wholesale.
        standardize_point_descriptors: not in the released RoITr (default off): point descriptors through
            :func:`standardize_over_cloud`, so that their differences between points, not a component they all
            share, set the scale of the optimal-transport scores.
    """

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 256), neighbours: tuple[int, ...] = (8, 16, 16, 16),
                 strides: tuple[int, ...] = (1, 4, 4, 4), blocks: tuple[int, ...] = (1, 2, 2, 2), num_heads: int = 4,
                 max_hidden: int = 256, normal_k: int = 33, transformer_dim: int = 256,
                 transformer_blocks: tuple[str, ...] = ("self", "cross") * 3, sigma_d: float = 0.2,
                 sigma_a: float = 15.0, angle_k: int = 3, descriptor_dim: int = 256, patch_size: int = 64,
                 num_coarse: int = 256, num_gt_coarse: int = 128, coarse_overlap: float = 0.1,
                 matching_radius: float = 0.05, sinkhorn_iterations: int = 100, topk: int = 3,
                 confidence_threshold: float = 0.05, layer_scale: float | None = None,
                 pre_norm: bool = False, center_descriptors: bool = False,
                 standardize_point_descriptors: bool = False) -> None:
        super().__init__()
        self.backbone = PPFBackbone(channels, neighbours, strides, blocks, num_heads, max_hidden, normal_k)
        self.transformer = GeometricTransformer(channels[-1], transformer_dim, transformer_dim, num_heads,
                                                transformer_blocks, sigma_d, sigma_a, angle_k, layer_scale,
                                                pre_norm)
        self.coarse_head = nn.Linear(transformer_dim, descriptor_dim)
        self.fine_head = nn.Linear(channels[0], descriptor_dim)
        self.optimal_transport = LearnableLogOptimalTransport(sinkhorn_iterations)
        self.angle_k, self.patch_size, self.num_coarse, self.num_gt_coarse = angle_k, patch_size, num_coarse, \
            num_gt_coarse
        self.coarse_overlap, self.matching_radius = coarse_overlap, matching_radius
        self.topk, self.confidence_threshold = topk, confidence_threshold
        self.center_descriptors = center_descriptors
        self.standardize_point_descriptors = standardize_point_descriptors

    @property
    def min_points(self) -> int:
        """Fewest points a fragment needs (the neighbourhoods of every level, the normals, the angle anchors)."""
        bb = self.backbone
        return max(minimum_points(bb.neighbours, bb.strides, self.angle_k), bb.normal_k)

    def _encode(self, pos: Tensor, name: str):
        if pos.shape[0] < self.min_points:
            raise ValueError(f"{name} has {pos.shape[0]} points; this RoITr needs at least {self.min_points} "
                             f"(neighbours {self.backbone.neighbours}, strides {self.backbone.strides}, normal_k "
                             f"{self.backbone.normal_k}, angle_k {self.angle_k})")
        levels, coarse, fine = self.backbone(pos.unsqueeze(0), extra_top=self.angle_k)
        return levels, coarse, fine

    def _training_pairs(self, overlap: Tensor) -> Tensor | None:
        """Up to ``num_gt_coarse`` random superpoint pairs of overlap above ``coarse_overlap`` (``None``: none)."""
        candidates = (overlap > self.coarse_overlap).nonzero()
        if len(candidates) == 0:
            return None
        if len(candidates) > self.num_gt_coarse:
            candidates = candidates[torch.randperm(len(candidates), device=overlap.device)[: self.num_gt_coarse]]
        return candidates

    def forward(self, src_pos: Tensor, tgt_pos: Tensor, transform: Tensor | None = None) -> RoITrOutput:
        """Match ``src_pos (N, 3)`` to ``tgt_pos (M, 3)``; ``transform (4, 4)`` (source into target, optional) adds
        the ground-truth overlaps and, in training mode, picks the patch pairs matched finely.

        Raises:
            TypeError / ValueError: a cloud that is not a float tensor ``(N, 3)``, empty, holds NaN/inf, or has
                fewer points than :attr:`min_points`.
        """
        src_pos, tgt_pos = check_fragment(src_pos, "src_pos"), check_fragment(tgt_pos, "tgt_pos")
        src_levels, src_coarse, src_fine = self._encode(src_pos, "src_pos")
        tgt_levels, tgt_coarse, tgt_fine = self._encode(tgt_pos, "tgt_pos")
        src_top, tgt_top = src_levels[-1], tgt_levels[-1]
        src_sp, tgt_sp = self.transformer(src_top.pos, tgt_top.pos, src_coarse, tgt_coarse, src_top.rank,
                                          tgt_top.rank)
        src_sp_desc, tgt_sp_desc = self.coarse_head(src_sp[0]), self.coarse_head(tgt_sp[0])
        if self.center_descriptors:  # no component shared by every superpoint of a cloud
            src_sp_desc, tgt_sp_desc = src_sp_desc - src_sp_desc.mean(0), tgt_sp_desc - tgt_sp_desc.mean(0)
        src_sp_desc, tgt_sp_desc = F.normalize(src_sp_desc, dim=-1), F.normalize(tgt_sp_desc, dim=-1)
        src_desc, tgt_desc = self.fine_head(src_fine[0]), self.fine_head(tgt_fine[0])
        if self.standardize_point_descriptors:
            src_desc, tgt_desc = standardize_over_cloud(src_desc), standardize_over_cloud(tgt_desc)
        src_patches = build_patches(src_pos, src_top.pos[0], src_levels[0].rank[0], src_top.rank[0], self.patch_size)
        tgt_patches = build_patches(tgt_pos, tgt_top.pos[0], tgt_levels[0].rank[0], tgt_top.rank[0], self.patch_size)
        coarse = superpoint_scores(src_sp_desc, tgt_sp_desc, src_patches.mask.any(1), tgt_patches.mask.any(1))
        overlap = None
        if transform is not None:
            overlap = patch_overlaps(src_pos, tgt_pos, transform, src_patches, tgt_patches, self.matching_radius)
        pairs = self._training_pairs(overlap) if self.training and overlap is not None else None
        if pairs is None:
            pairs, pair_scores = top_pairs(coarse, self.num_coarse)
        else:
            pair_scores = coarse[pairs[:, 0], pairs[:, 1]]
        src_index, row_mask = src_patches.index[pairs[:, 0]], src_patches.mask[pairs[:, 0]]
        tgt_index, col_mask = tgt_patches.index[pairs[:, 1]], tgt_patches.mask[pairs[:, 1]]
        fine = src_desc[src_index] @ tgt_desc[tgt_index].transpose(-1, -2) / src_desc.shape[-1] ** 0.5
        log_assignment = self.optimal_transport(fine, row_mask, col_mask)
        corr, scores, groups = extract_correspondences(log_assignment, row_mask, col_mask, src_index, tgt_index,
                                                       self.topk, self.confidence_threshold)
        return RoITrOutput(src_top.index[0], tgt_top.index[0], src_sp_desc, tgt_sp_desc, src_desc, tgt_desc,
                           src_levels[0].normal[0], tgt_levels[0].normal[0], coarse, pairs, pair_scores,
                           src_patches, tgt_patches, log_assignment, corr, scores, groups, overlap)


SMALL = {"channels": (8, 16, 16), "neighbours": (4, 8, 8), "strides": (1, 4, 4), "blocks": (1, 1, 1),
         "num_heads": 2, "normal_k": 8, "transformer_dim": 16, "transformer_blocks": ("self", "cross"),
         "descriptor_dim": 16, "patch_size": 16, "num_coarse": 16, "num_gt_coarse": 16, "sinkhorn_iterations": 20,
         "sigma_d": 0.5, "matching_radius": 0.1}
"""A tiny RoITr for tests (256 points → 64 → 16 superpoints)."""
NOT_GUARANTEED = {"symmetric_room": (
    "an exactly mirror-symmetric gridded room: its mirror images tie in every invariant key, so FPS must pick one "
    "of two mirror-image superpoints, a choice only the pose can make; the outputs then agree with the reference "
    "only up to that symmetry (superpoints, patches and matched pairs exchanged), not entry by entry")}
"""Shape classes outside RoITr's guarantee (see the pair harness's tests)."""


FLOAT64_ONLY = {
    "wall": ("a planar wall: every PPF angle is exactly π/2 or 0, so descriptors of different points nearly tie and "
             "float32 rounding changes which entries pass the mutual top-k (the number of correspondences changes)"),
    "threedmatch_fragment": ("voxelised scans hold exact distance ties; float32 FPS runs Open3D's kernel, which "
                             "decides ties by rounding except at the start point, so superpoints and patches follow "
                             "the pose"),
}
"""Pair classes guaranteed in float64 only, with the reasons (measured to fail in float32)."""


@register_model("roitr", task="registration", invariance="invariant", test_kwargs=SMALL, test_num_points=256,
                not_guaranteed=NOT_GUARANTEED, float64_only=FLOAT64_ONLY)
def roitr(**kwargs: object) -> RoITr:
    """RoITr registration network (rotation-invariant PPF transformer, coarse-to-fine OT matching)."""
    return RoITr(**kwargs)
