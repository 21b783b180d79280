"""RISurConv (Zhang et al., "RISurConv: Rotation Invariant Surface Attention-Augmented Convolutions for 3D Point
Cloud Classification and Segmentation", ECCV 2024): a PointNet++-style hierarchy whose blocks see only the
rotation-invariant surface properties (RISP, :mod:`pointgeo.geometry.risp`) of angularly ordered neighbourhoods,
with offset attention inside each neighbourhood and across the centres.

Sound by default, faithful on request. Each defect of the released code is an option whose default is the sound
variant; the faithful variants exist to compare numbers and are **not** invariant or not sample-independent:

=========================  ==============================================  ==============================================
option                     sound default                                   faithful (released code)
=========================  ==============================================  ==============================================
``batch_first``            ``True``: the transformer attends within a      ``False``: the (B, 1, 512) input is read as a
                           sample                                          sequence over the *batch*; samples mix
``signed_axes``            ``True``: estimated normals and the global      ``False``: eigenvector signs as the solver
                           axis get rotation-invariant signs               returns them (they flip under rotation)
``centred_global``         ``True``: the global layer describes points     ``False``: absolute coordinates with the
                           relative to their centroid                      centre at the origin (not translation
                                                                           invariant)
``attention_norm``         ``"query"``: neighbourhood attention is         ``"centres"``: normalised over the centre
                           L1-normalised over the query axis (PCT)         axis S
=========================  ==============================================  ==============================================

Every kNN, FPS, frame and normal comes from :mod:`pointgeo.geometry`; FPS starts at the point farthest from the
centroid and decides exact ties invariantly, so the centres are invariant too. The invariance holds on the
harness's adversarial shapes as well (mirror-symmetric, duplicated, planar and collinear clouds: see
:mod:`pointgeo.geometry.normals`, :mod:`pointgeo.geometry.sampling` and :func:`~pointgeo.geometry.risp.angular_order`);
in float32 except on the shapes listed in :data:`FLOAT64_ONLY`.
"""

from __future__ import annotations

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
from pointgeo.geometry.checks import check_points
from pointgeo.geometry.frames import principal_axes, signed_least_axis
from pointgeo.geometry.risp import angular_order, risp_features
from pointgeo.nn.linear_bn import LinearBN, LinearBNChain
from pointgeo.nn.offset_attention import AttentionNorm, OffsetAttention
from pointgeo.registry import register_model

RISP_CHANNELS = 14
AXISYMMETRIC = ("exactly axisymmetric (two equal principal eigenvalues): the global block's least-variance axis is "
                "arbitrary within the repeated eigenspace, and points exchanged by the cloud's rotations tie in every "
                "invariant key, so FPS picks, the k-th neighbour and the RISP reference among them follow the input "
                "order")
THREEFOLD = ("two exactly equal principal eigenvalues (threefold symmetry): points exchanged by its rotations tie in "
             "every invariant key, so FPS picks and neighbour ties among them follow the input order")
NOT_GUARANTEED = {"grid_cylinder": AXISYMMETRIC, "grid_cone": AXISYMMETRIC, "grid_sphere": AXISYMMETRIC,
                  "threefold": THREEFOLD}
"""Shape classes outside RISurConv's (classification and segmentation) guarantee, with the reasons."""
FPS_FLOAT32 = ("FPS in float32 runs Open3D's kernel, whose float32 distances decide the exact ties of mirror images "
               "(only its start point is decided invariantly); float64 FPS weights ties by the invariant rank")
FLOAT64_ONLY = {
    "mirror_symmetric": FPS_FLOAT32,
    "mirror_composite": FPS_FLOAT32,
    "box_1_1001_2": FPS_FLOAT32,
    "offset_1e3": "a float32 cloud 1e3 sizes from the origin holds its shape to ~6e-5 of its size (measured 3.4e-3 "
                  "relative), above the float32 tie tolerance (6.4e-6 of the size)",
}
"""Shape classes on which RISurConv classification's invariance is guaranteed in float64 only, with the reasons."""


def global_axis(offsets: Tensor, signed: bool, rank: Tensor | None = None) -> Tensor:
    """The weighted least-variance axis of ``offsets (B, N, 3)`` from the centroid (RIConv++'s LRA with weights
    ``w_j ∝ max_k d_k - d_j``), ``(B, 3)``; ``signed`` fixes its sign by the weighted third moment, for a flat
    cloud by the handedness of the in-plane axes, for a centrally symmetric one by the point of highest ``rank
    (B, N)`` (:func:`~pointgeo.geometry.frames.signed_least_axis`)."""
    d = offsets.norm(dim=-1)
    w = d.amax(-1, keepdim=True) - d
    w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    if signed:
        return signed_least_axis(offsets, w, rank)
    return principal_axes(offsets, w)[1][..., 2]


class SurfaceConv(nn.Module):
    """The neighbourhood part of a RISurConv block: RISP of angularly ordered neighbourhoods, embedding
    (14 → 32 → 64, one ReLU), offset attention inside each neighbourhood, a shared MLP on ``[embedding ; gathered
    point features]``, max over the neighbours and offset attention across the centres.

    Shapes:
        ``centre (B, S, 3)``, ``centre_normal (B, S, 3)``, ``pos (B, N, 3)``, ``normal (B, N, 3)``,
        ``features (B, N, C_in) | None``, ``idx (B, S, K)`` (neighbours of each centre in ``pos``, any order),
        ``origin (B, S, 3)`` (where the descriptor is taken from; the centre) → ``(B, S, C_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, attention_norm: AttentionNorm = "query") -> None:
        super().__init__()
        self.embed = LinearBNChain((RISP_CHANNELS, 32, 64))
        self.local_attention = OffsetAttention(64, norm=attention_norm)
        self.conv = LinearBN(64, out_channels, gathered_channels=in_channels, pool=True)
        self.centre_attention = OffsetAttention(out_channels)

    def forward(self, centre: Tensor, centre_normal: Tensor, pos: Tensor, normal: Tensor, features: Tensor | None,
                idx: Tensor, origin: Tensor) -> Tensor:
        order = angular_order(centre, centre_normal, index_points(pos, idx))
        idx = torch.gather(idx, -1, order)
        step = 2 if centre.shape[1] >= 1024 else 1
        risp = risp_features(origin, centre_normal, index_points(pos, idx), index_points(normal, idx), step)
        x = self.local_attention(self.embed(risp))  # (B, S, K, 64)
        x = self.conv(x, features, idx)  # (B, S, C_out); without input features idx only ordered the RISP
        return self.centre_attention(x)


class RISurConvBlock(nn.Module):
    """One RISurConv set abstraction: FPS centres (or the centroid), their kNN neighbourhoods, :class:`SurfaceConv`.

    Args:
        centres: number of FPS centres, or ``None`` for the global layer (one centre: the centroid).
        k: neighbours per centre (ignored by the global layer, which takes every point).
        in_channels: features of the input points (0 for the first block).
        out_channels: features of the centres.

    Shapes:
        ``pos (B, N, 3)``, ``normal (B, N, 3)``, ``features (B, N, C_in) | None``, ``rank (B, N)`` (the points'
        invariant rank deciding exact ties: :func:`~pointgeo.geometry.ties.invariant_rank` of the input cloud,
        :func:`~pointgeo.geometry.ties.selection_rank` of FPS centres) →
        ``(pos (B, S, 3), normal (B, S, 3), features (B, S, C_out))``, the centres in their selection order.
    """

    def __init__(self, centres: int | None, k: int, in_channels: int, out_channels: int, *,
                 attention_norm: AttentionNorm = "query", signed_axes: bool = True,
                 centred_global: bool = True) -> None:
        super().__init__()
        self.centres, self.k = centres, k
        self.signed_axes, self.centred_global = signed_axes, centred_global
        self.surface = SurfaceConv(in_channels, out_channels, attention_norm)

    def forward(self, pos: Tensor, normal: Tensor, features: Tensor | None,
                rank: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = pos.shape
        if self.centres is None:
            centre = pos.mean(dim=1, keepdim=True)
            centre_normal = global_axis(pos - centre, self.signed_axes, rank).unsqueeze(1)
            idx = torch.arange(n, device=pos.device).expand(b, 1, n)
        else:
            chosen = farthest_point_sampling(pos, self.centres, rank=rank)
            centre, centre_normal = index_points(pos, chosen), index_points(normal, chosen)
            idx, _ = knn(centre, pos, self.k, rank=rank)
        origin = centre if self.centres is not None or self.centred_global else torch.zeros_like(centre)
        return centre, centre_normal, self.surface(centre, centre_normal, pos, normal, features, idx, origin)


def input_normals(pos: Tensor, normal: Tensor | None, use_normals: bool, k: int, signed: bool,
                  rank: Tensor | None = None) -> Tensor:
    """The given unit normals, or normals estimated from ``k`` neighbours (with the invariant sign rule unless
    ``signed`` is off, which reproduces the released code's unsigned LRA); ``rank (B, N)`` the points' invariant
    rank (see :func:`~pointgeo.geometry.knn`)."""
    check_points(pos, "pos")
    if use_normals:
        if normal is None or normal.shape != pos.shape:
            raise ValueError("this network was built with use_normals=True: pass normal with the shape of pos")
        check_points(normal, "normal")
        return normal
    if signed:
        return estimate_normals(pos, k, rank)
    idx, _ = knn(pos, pos, k, rank=rank)
    local = index_points(pos, idx) - pos.unsqueeze(2)
    return principal_axes(local)[1][..., 2]


class RISurConvClassifier(nn.Module):
    """RISurConv classification: 4 RISurConv blocks, a global block, a transformer encoder and an MLP head.

    Args:
        num_classes: number of classes.
        use_normals: use the dataset's normals; otherwise normals are estimated (``normal_k`` neighbours).
        scale: ``n`` of the paper's tables: centres ``512n, 256n, 128n, 64n`` (2 for 1024-point ModelNet40, 1 for
            ScanObjectNN; fractions such as 0.25 for small clouds).
        channels: output widths of the four blocks and of the global block.
        neighbours: ``K`` of the four blocks.
        transformer_layers, transformer_heads: encoder size (d_model = the global width). The paper's 13.96 M
            parameters include the released code's unused template encoder layer (3.15 M); this network has the
            10.81 M that the released forward pass uses.
        batch_first, signed_axes, centred_global, attention_norm: sound defaults, see the module docstring.

    Shapes:
        ``pos (B, N, 3)``, ``normal (B, N, 3) | None`` → logits ``(B, num_classes)``; ``N >= 512 n``.
    """

    def __init__(
        self,
        num_classes: int = 40,
        use_normals: bool = True,
        scale: float = 2,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        neighbours: tuple[int, ...] = (8, 16, 32, 64),
        transformer_layers: int = 3,
        transformer_heads: int = 8,
        dropout: float = 0.4,
        normal_k: int = 32,
        batch_first: bool = True,
        signed_axes: bool = True,
        centred_global: bool = True,
        attention_norm: AttentionNorm = "query",
    ) -> None:
        super().__init__()
        self.use_normals, self.normal_k, self.signed_axes = use_normals, normal_k, signed_axes
        opts = {"attention_norm": attention_norm, "signed_axes": signed_axes, "centred_global": centred_global}
        centres = [int(512 * scale) // 2**i for i in range(4)]
        widths = [0, *channels]
        self.blocks = nn.ModuleList(
            [RISurConvBlock(s, k, widths[i], widths[i + 1], **opts) for i, (s, k) in enumerate(zip(centres, neighbours))]
            + [RISurConvBlock(None, 0, channels[3], channels[4], **opts)]
        )
        self.min_points = centres[0]
        layer = nn.TransformerEncoderLayer(channels[4], transformer_heads, dropout=0.05, batch_first=batch_first)
        self.transformer = nn.TransformerEncoder(layer, transformer_layers, enable_nested_tensor=False)
        self.batch_first = batch_first
        self.head = nn.Sequential(
            nn.Linear(channels[4], 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, pos: Tensor, normal: Tensor | None = None) -> Tensor:
        if pos.dim() == 3 and pos.shape[1] < self.min_points:
            raise ValueError(f"RISurConv at this scale needs at least {self.min_points} points; got {pos.shape[1]}")
        check_points(pos, "pos")
        rank = invariant_rank(pos)  # once for the input cloud: every tie decision on it follows the same choices
        normal = input_normals(pos, normal, self.use_normals, self.normal_k, self.signed_axes, rank)
        features = None
        for block in self.blocks:
            pos, normal, features = block(pos, normal, features, rank)
            rank = selection_rank(pos)  # the centres come in their (invariant) selection order
        # (B, 1, C): with batch_first a sequence of one token per sample; without it (the released code) the
        # batch is read as the sequence and self-attention mixes the samples.
        return self.head(self.transformer(features)[:, 0])


@register_model(
    "risurconv_cls", task="classification", invariance="invariant",
    test_kwargs={"scale": 0.125, "channels": (8, 8, 16, 16, 32), "neighbours": (4, 4, 8, 8),
                 "transformer_layers": 1, "transformer_heads": 2, "normal_k": 8},
    test_num_points=96,
    not_guaranteed=NOT_GUARANTEED,
    float64_only=FLOAT64_ONLY,
)
def risurconv_cls(num_classes: int = 40, use_normals: bool = True, **kwargs: object) -> RISurConvClassifier:
    """RISurConv classifier (rotation, translation and permutation invariant; sound variant)."""
    return RISurConvClassifier(num_classes, use_normals, **kwargs)
