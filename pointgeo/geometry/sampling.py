"""Farthest point sampling (FPS), batched, with a rotation- and permutation-invariant start point."""

from __future__ import annotations

import torch
from torch import Tensor

from pointgeo.geometry.backends import Backend, choose, open3d_ops
from pointgeo.geometry.checks import check_points


def farthest_from_centroid(pos: Tensor) -> Tensor:
    """Index of the point farthest from its cloud's centroid: ``(B, N, 3) -> (B,)``.

    This start point is invariant to rotations, translations and permutations of the cloud (up to exact ties),
    unlike PyG's random start or the CUDA kernels' fixed index 0.
    """
    centred = pos - pos.mean(dim=1, keepdim=True)
    return (centred * centred).sum(-1).argmax(dim=1)


def _fps_torch(pos: Tensor, m: int, far: Tensor) -> Tensor:
    b, n, _ = pos.shape
    idx = torch.empty(b, m, dtype=torch.long, device=pos.device)
    mindist = torch.full((b, n), float("inf"), dtype=pos.dtype, device=pos.device)
    batch = torch.arange(b, device=pos.device)
    for i in range(m):
        idx[:, i] = far
        d = ((pos - pos[batch, far].unsqueeze(1)) ** 2).sum(-1)
        mindist = torch.minimum(mindist, d)
        far = mindist.argmax(dim=1)
    return idx


def _fps_open3d(pos: Tensor, m: int, start: Tensor) -> Tensor:
    """Open3D's kernel starts at index 0: swap each cloud's start point to the front, then map indices back."""
    b, n, _ = pos.shape
    perm = torch.arange(n).repeat(b, 1)
    batch = torch.arange(b)
    perm[batch, start] = 0
    perm[batch, 0] = start
    swapped = torch.gather(pos, 1, perm.unsqueeze(-1).expand(-1, -1, 3)).contiguous()
    idx = open3d_ops().furthest_point_sampling(swapped, m).long()
    return torch.gather(perm, 1, idx)


@torch.no_grad()
def farthest_point_sampling(
    pos: Tensor, m: int, *, start: Tensor | int | None = None, backend: Backend = "auto"
) -> Tensor:
    """Select ``m`` points of each cloud by farthest point sampling.

    Iteratively picks the point maximising the distance to the already-picked set. The loop runs over the
    ``m`` picks; the batch is processed at once.

    Args:
        pos: ``(B, N, 3)`` positions, ``N >= m``.
        m: number of points to select.
        start: first index per cloud: a ``(B,)`` tensor, an int for all clouds, or ``None`` for
            :func:`farthest_from_centroid` (the invariant default).
        backend: ``auto`` uses Open3D's batched kernel for float32 CPU clouds when it loads, else pure torch.

    Returns:
        ``(B, m)`` long indices into ``N``, in selection order.
    """
    check_points(pos, "pos", min_points=m)
    if m < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    b = pos.shape[0]
    if start is None:
        far = farthest_from_centroid(pos)
    elif isinstance(start, int):
        far = torch.full((b,), start, dtype=torch.long, device=pos.device)
    else:
        far = start.to(device=pos.device, dtype=torch.long)
    if choose(backend, pos) == "open3d":
        return _fps_open3d(pos, m, far)
    return _fps_torch(pos, m, far)
