"""PaRot part segmentation (Zhang et al. 2023, spec §2.7): the PaRot encoder, a per-centre root feature and a
pose-aware propagation of the centre features to every input point.

Per centre, the root feature mixes the shape descriptor, the centre's local and global features and its embedded
local-to-global pose (:class:`PaRotSegmenter`). Each input point then takes its ``k`` nearest centres and, from each,
the centre's root feature, the category one-hot and the point's offset seen in that centre's local and global
orientation (:class:`PosePropagation`), summed over the ``k`` centres. Every quantity is invariant whenever the
orientations are equivariant, so the guarantee is the classifier's: ``approximate``, learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointgeo.geometry import index_points, knn
from pointgeo.nn.linear_bn import LinearBN
from pointgeo.nn.parot import LEAKY, PaRotEncoder, PaRotNetwork, PatchEncoding, global_embedding
from pointgeo.registry import register_model


def point_pose(frames: Tensor, offsets: Tensor) -> Tensor:
    """The 7 pose channels of a point seen from a centre: ``‖t‖``, ``O_l t̂`` (3) and ``O_g t̂`` (3), where ``t`` is
    the point's offset from the centre and ``O_l, O_g`` the centre's local and global orientations.

    Shapes:
        ``frames (..., 2, 3, 3)`` (local, global), ``offsets (..., 3)`` → ``(..., 7)``.
    """
    direction = F.normalize(offsets, dim=-1)
    seen = (frames @ direction.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)  # (..., 2, 3)
    return torch.cat([offsets.norm(dim=-1, keepdim=True), seen.flatten(-2)], dim=-1)


class PosePropagation(nn.Module):
    """PaRot's ``FP_Module_angle_label``: each input point gathers its ``k`` nearest centres.

    Per (point ``x``, centre ``j``): the pose ``point_pose(O_j, x - c_j)`` embedded ``7 → 32`` (BN + LeakyReLU
    0.2), the centre's feature and the category one-hot, then a shared MLP (BN + ReLU) and the **sum** over the ``k``
    centres. The centre feature and the one-hot are transformed once per centre before they are gathered
    (:class:`LinearBN`'s gathered input), never copied ``k`` times per point.

    Args:
        channels: centre feature channels.
        num_categories: length of the category one-hot.
        k: centres per point (the released ``interpolate`` = 11).
        widths: the shared MLP.
        unit_centres: the released code's quirk (faithful on request): the neighbours and offsets use the centres'
            unit directions ``c / ‖c‖`` instead of the centres. Both are invariant; the default uses the centres, so
            a point interpolates from the patches around it.

    Shapes:
        ``pos (B, N, 3)`` (centred), ``centres (B, S, 3)``, ``frames (B, S, 2, 3, 3)``, ``features (B, S, C)``,
        ``onehot (B, num_categories)`` → ``(B, N, widths[-1])``.
    """

    def __init__(self, channels: int = 256, num_categories: int = 16, k: int = 11,
                 widths: tuple[int, ...] = (256, 128, 128), pose_channels: int = 32,
                 unit_centres: bool = False) -> None:
        super().__init__()
        self.k, self.unit_centres = k, unit_centres
        self.pose = LinearBN(7, pose_channels, negative_slope=LEAKY)
        self.first = LinearBN(pose_channels, widths[0], gathered_channels=channels + num_categories)
        self.rest = nn.Sequential(*(LinearBN(c_in, c_out) for c_in, c_out in zip(widths, widths[1:])))
        self.out_channels = widths[-1]

    def forward(self, pos: Tensor, centres: Tensor, frames: Tensor, features: Tensor, onehot: Tensor) -> Tensor:
        anchors = F.normalize(centres, dim=-1) if self.unit_centres else centres
        idx, _ = knn(pos, anchors, self.k)  # (B, N, k)
        offsets = pos.unsqueeze(2) - index_points(anchors, idx)
        pose = self.pose(point_pose(index_points(frames.flatten(-3), idx).unflatten(-1, (2, 3, 3)), offsets))
        centre_inputs = torch.cat([features, onehot.unsqueeze(1).expand(-1, features.shape[1], -1)], dim=-1)
        return self.rest(self.first(pose, centre_inputs, idx)).sum(dim=2)


class PaRotSegmenter(PaRotNetwork):
    """PaRot part segmentation.

    * encoder (:class:`PaRotEncoder`; the released segmentation settings: 256 centres, ``k_local`` 64,
      ``k_global`` 64, ``k_layer`` 16) → per-centre ``[local 128, global 128, pose 32]``;
    * shape descriptor: :func:`global_embedding` ``288 → 256 → 512 → emb_dims``, max over the centres;
    * root (``FP_Module_root``): per centre ``[descriptor, local, global, pose]`` (1312) → 256 → 256 (BN + ReLU);
    * :class:`PosePropagation` to every input point (``k = 11`` centres, summed), with the category one-hot;
    * head 128 → 128 → 128 (BN + ReLU, dropout) → ``num_parts``.

    ``forward`` is the evaluation path; :meth:`forward_siamese` (``pos, category``) the training path.

    Shapes:
        ``pos (B, N, 3)`` (``normal`` is ignored), ``category (B,)`` → logits ``(B, N, num_parts)``;
        ``N >= max(centres, k_local, k_global)``.
    """

    def __init__(self, num_parts: int = 50, num_categories: int = 16, centres: int = 256, k_local: int = 64,
                 k_global: int = 64, k_layer: int = 16, interpolate: int = 11, widths: tuple[int, ...] = (256, 512),
                 emb_dims: int = 1024, root: tuple[int, ...] = (256, 256),
                 propagation: tuple[int, ...] = (256, 128, 128), head: int = 128, dropout: float = 0.5,
                 unit_centres: bool = False) -> None:
        super().__init__()
        if interpolate > centres:
            raise ValueError(f"interpolate ({interpolate}) cannot exceed the number of centres ({centres})")
        self.num_categories = num_categories
        self.encoder = PaRotEncoder(centres, k_local, k_global, k_layer)
        self.embed = global_embedding(self.encoder.out_channels, widths, emb_dims)
        mlp = [emb_dims + self.encoder.out_channels, *root]
        self.root = nn.Sequential(*(LinearBN(c_in, c_out) for c_in, c_out in zip(mlp, mlp[1:])))
        self.propagation = PosePropagation(root[-1], num_categories, interpolate, propagation,
                                           unit_centres=unit_centres)
        width = self.propagation.out_channels
        self.head = nn.Sequential(LinearBN(width, head), LinearBN(head, head), nn.Dropout(dropout),
                                  nn.Linear(head, num_parts))

    def _predict(self, pos: Tensor, features: Tensor, encoding: PatchEncoding, *extra: Tensor) -> Tensor:
        (category,) = extra
        if category.shape != pos.shape[:1] or category.min() < 0 or category.max() >= self.num_categories:
            raise ValueError(f"category must be (B,) = ({pos.shape[0]},) ids in [0, {self.num_categories})")
        descriptor = self.embed(features).unsqueeze(1).expand(-1, features.shape[1], -1)
        root = self.root(torch.cat([descriptor, features], dim=-1))
        frames = torch.stack(encoding.frames(), dim=2)  # (B, S, 2, 3, 3)
        onehot = F.one_hot(category, self.num_categories).to(pos.dtype)
        centred = pos - pos.mean(dim=1, keepdim=True)  # the frame of encoding.centres
        return self.head(self.propagation(centred, encoding.centres, frames, root, onehot))

    def forward(self, pos: Tensor, normal: Tensor | None, category: Tensor) -> Tensor:
        features, encoding, _ = self.encoder(pos)
        return self._predict(pos, features, encoding, category)


@register_model(
    "parot_seg", task="segmentation", invariance="approximate",
    test_kwargs={"centres": 32, "k_local": 16, "k_global": 16, "k_layer": 8, "interpolate": 3, "widths": (32,),
                 "emb_dims": 64, "root": (32,), "propagation": (32, 16), "head": 16},
    test_num_points=128,
)
def parot_seg(num_parts: int = 50, num_categories: int = 16, use_normals: bool = False,
              **kwargs: object) -> PaRotSegmenter:
    """PaRot part segmentation (learned, approximate rotation invariance; coordinates only)."""
    if use_normals:
        raise ValueError("PaRot reads coordinates only: set use_normals to false")
    return PaRotSegmenter(num_parts, num_categories, **kwargs)
