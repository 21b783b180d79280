"""DGCNN (Wang et al., "Dynamic Graph CNN", TOG 2019): EdgeConv on a kNN graph recomputed in feature space. Not
invariant.

EdgeConv (Eq. 7 of the paper, the asymmetric edge function):
``x'_i = max_{j in kNN(i)} h([x_i, x_j - x_i])`` with ``h`` a shared MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointgeo.geometry import index_points, knn
from pointgeo.nn.pointnet import classifier_head, point_features
from pointgeo.registry import register_model


class EdgeConv(nn.Module):
    """One EdgeConv layer on a dynamic kNN graph.

    Shapes:
        ``x (B, N, C_in)`` → ``(B, N, C_out)``; the graph is the ``k`` nearest neighbours of each point in the
        space of ``x`` itself (each point is its own first neighbour).
    """

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        idx, _ = knn(x, x, self.k)  # (B, N, k)
        neighbours = index_points(x, idx)  # (B, N, k, C)
        centre = x.unsqueeze(2).expand_as(neighbours)
        edge = torch.cat([centre, neighbours - centre], dim=-1)  # (B, N, k, 2C)
        return self.mlp(edge.permute(0, 3, 1, 2)).amax(dim=-1).transpose(1, 2)


class DGCNN(nn.Module):
    """DGCNN classifier.

    Args:
        num_classes: number of classes.
        use_normals: input channels 6 instead of 3.
        k: neighbours of every EdgeConv graph.
        channels: output widths of the EdgeConv layers.
        embedding: width of the global embedding (max and mean pooled, then concatenated).
        head: hidden widths of the classifier head.
        dropout: dropout of the head.

    Shapes:
        ``pos (B, N, 3)``, ``normal (B, N, 3) | None`` → logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int,
        use_normals: bool = False,
        k: int = 20,
        channels: tuple[int, ...] = (64, 64, 128, 256),
        embedding: int = 1024,
        head: tuple[int, ...] = (512, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.use_normals = use_normals
        widths = [6 if use_normals else 3, *channels]
        self.convs = nn.ModuleList(EdgeConv(a, b, k) for a, b in zip(widths[:-1], widths[1:]))
        self.embed = nn.Sequential(
            nn.Conv1d(sum(channels), embedding, 1, bias=False), nn.BatchNorm1d(embedding), nn.LeakyReLU(0.2, True)
        )
        self.head = classifier_head(2 * embedding, list(head), num_classes, dropout)

    def forward(self, pos: Tensor, normal: Tensor | None = None) -> Tensor:
        x = point_features(pos, normal, self.use_normals)
        features = []
        for conv in self.convs:
            x = conv(x)
            features.append(x)
        emb = self.embed(torch.cat(features, dim=-1).transpose(1, 2))  # (B, E, N)
        return self.head(torch.cat([emb.amax(-1), emb.mean(-1)], dim=-1))


@register_model(
    "dgcnn", task="classification", invariance="none",
    test_kwargs={"k": 8, "channels": (16, 16), "embedding": 32, "head": (16,)}, test_num_points=32,
)
def dgcnn(num_classes: int = 40, use_normals: bool = False, **kwargs: object) -> DGCNN:
    """DGCNN baseline (not rotation invariant)."""
    return DGCNN(num_classes, use_normals, **kwargs)
