"""PointNet (Qi et al., CVPR 2017): a shared per-point MLP, a symmetric max pool, an MLP head. Not invariant.

The input and feature T-Nets of the paper are left out: they learn an *approximate* alignment and are exactly what
the rotation-invariant models replace. This is the plain baseline the invariant models are compared with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointgeo.geometry import check_points
from pointgeo.registry import register_model


def point_mlp(channels: list[int]) -> nn.Sequential:
    """Shared per-point MLP on ``(B, C, N)``: 1×1 convolutions with BatchNorm and ReLU."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def classifier_head(in_features: int, hidden: list[int], num_classes: int, dropout: float) -> nn.Sequential:
    """MLP head ``(B, in_features) -> (B, num_classes)`` with BatchNorm, ReLU and dropout."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip([in_features, *hidden[:-1]], hidden):
        layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden[-1] if hidden else in_features, num_classes))
    return nn.Sequential(*layers)


def point_features(pos: Tensor, normal: Tensor | None, use_normals: bool) -> Tensor:
    """The per-point input ``(B, N, 3 or 6)`` of a coordinate-based network, validating its parts."""
    check_points(pos, "pos")
    if not use_normals:
        return pos
    if normal is None:
        raise ValueError("this network was built with use_normals=True but no normals were given")
    check_points(normal, "normal")
    if normal.shape != pos.shape:
        raise ValueError(f"normal must have the shape of pos {tuple(pos.shape)}; got {tuple(normal.shape)}")
    return torch.cat([pos, normal], dim=-1)


class PointNet(nn.Module):
    """PointNet classifier.

    Args:
        num_classes: number of classes.
        use_normals: input channels 6 (xyz + normal) instead of 3.
        channels: widths of the shared MLP; the last is the global feature size.
        head: hidden widths of the classifier head.
        dropout: dropout of the head.

    Shapes:
        ``pos (B, N, 3)``, ``normal (B, N, 3) | None`` → logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int,
        use_normals: bool = False,
        channels: tuple[int, ...] = (64, 64, 64, 128, 1024),
        head: tuple[int, ...] = (512, 256),
        dropout: float = 0.4,
    ) -> None:
        super().__init__()
        self.use_normals = use_normals
        self.encoder = point_mlp([6 if use_normals else 3, *channels])
        self.head = classifier_head(channels[-1], list(head), num_classes, dropout)

    def forward(self, pos: Tensor, normal: Tensor | None = None) -> Tensor:
        x = point_features(pos, normal, self.use_normals)
        feat = self.encoder(x.transpose(1, 2)).amax(dim=-1)
        return self.head(feat)


@register_model(
    "pointnet", task="classification", invariance="none",
    test_kwargs={"channels": (16, 32), "head": (16,)}, test_num_points=32,
)
def pointnet(num_classes: int = 40, use_normals: bool = False, **kwargs: object) -> PointNet:
    """PointNet baseline (not rotation invariant)."""
    return PointNet(num_classes, use_normals, **kwargs)


class PointNetSegmenter(nn.Module):
    """PointNet part segmentation: per-point features, concatenated with the global max-pooled feature and the
    category one-hot, mapped to part logits by a shared MLP (Qi et al. 2017, Fig. 2, segmentation network).

    Shapes:
        ``pos (B, N, 3)``, ``normal (B, N, 3) | None``, ``category (B,)`` → logits ``(B, N, num_parts)``.
    """

    def __init__(
        self,
        num_parts: int = 50,
        num_categories: int = 16,
        use_normals: bool = False,
        channels: tuple[int, ...] = (64, 128, 128, 512, 2048),
        head: tuple[int, ...] = (256, 256, 128),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.use_normals = use_normals
        self.num_categories = num_categories
        self.layers = nn.ModuleList(point_mlp([a, b]) for a, b in zip([6 if use_normals else 3, *channels], channels))
        width = sum(channels) + channels[-1] + num_categories
        mlp = point_mlp([width, *head])
        self.head = nn.Sequential(*mlp, nn.Dropout(dropout), nn.Conv1d(head[-1], num_parts, 1))

    def forward(self, pos: Tensor, normal: Tensor | None, category: Tensor) -> Tensor:
        x = point_features(pos, normal, self.use_normals).transpose(1, 2)  # (B, C, N)
        if category.shape != pos.shape[:1] or category.min() < 0 or category.max() >= self.num_categories:
            raise ValueError(f"category must be (B,) = ({pos.shape[0]},) ids in [0, {self.num_categories})")
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        n = pos.shape[1]
        onehot = torch.nn.functional.one_hot(category, self.num_categories).to(x.dtype)
        glob = torch.cat([x.amax(-1), onehot], -1).unsqueeze(-1).expand(-1, -1, n)
        return self.head(torch.cat([*features, glob], 1)).transpose(1, 2)


@register_model(
    "pointnet_seg", task="segmentation", invariance="none",
    test_kwargs={"channels": (16, 32), "head": (16,)}, test_num_points=32,
)
def pointnet_seg(num_parts: int = 50, num_categories: int = 16, use_normals: bool = False,
                 **kwargs: object) -> PointNetSegmenter:
    """PointNet part-segmentation baseline (not rotation invariant)."""
    return PointNetSegmenter(num_parts, num_categories, use_normals, **kwargs)
