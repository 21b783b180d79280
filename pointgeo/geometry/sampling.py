"""Farthest point sampling (FPS), batched, with a rotation- and permutation-invariant start point."""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.checks import check_points


def farthest_from_centroid(pos: Tensor) -> Tensor:
    """Index of the point farthest from its cloud's centroid: ``(B, N, 3) -> (B,)``.

    This start point is invariant to rotations, translations and permutations of the cloud (up to exact ties),
    unlike PyG's random start or the CUDA kernels' fixed index 0.
    """
    centred = pos - pos.mean(dim=1, keepdim=True)
    return (centred * centred).sum(-1).argmax(dim=1)


@torch.no_grad()
def farthest_point_sampling(pos: Tensor, m: int, *, start: Tensor | int | None = None) -> Tensor:
    """Select ``m`` points of each cloud by farthest point sampling.

    Iteratively picks the point maximising the distance to the already-picked set. The loop runs over the
    ``m`` picks; the batch is processed at once.

    Args:
        pos: ``(B, N, 3)`` positions, ``N >= m``.
        m: number of points to select.
        start: first index per cloud: a ``(B,)`` tensor, an int for all clouds, or ``None`` for
            :func:`farthest_from_centroid` (the invariant default).

    Returns:
        ``(B, m)`` long indices into ``N``, in selection order.
    """
    check_points(pos, "pos", min_points=m)
    if m < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    b, n, _ = pos.shape
    if start is None:
        far = farthest_from_centroid(pos)
    elif isinstance(start, int):
        far = torch.full((b,), start, dtype=torch.long, device=pos.device)
    else:
        far = start.to(device=pos.device, dtype=torch.long)
    idx = torch.empty(b, m, dtype=torch.long, device=pos.device)
    mindist = torch.full((b, n), float("inf"), dtype=pos.dtype, device=pos.device)
    batch = torch.arange(b, device=pos.device)
    for i in range(m):
        idx[:, i] = far
        d = ((pos - pos[batch, far].unsqueeze(1)) ** 2).sum(-1)
        mindist = torch.minimum(mindist, d)
        far = mindist.argmax(dim=1)
    return idx
