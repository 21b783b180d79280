"""Input validation shared by every geometric operation: one clear error naming the input and what was expected."""

from __future__ import annotations

import torch
from torch import Tensor


def check_points(pos: Tensor, name: str = "pos", *, min_points: int = 1, dim: int | None = 3) -> None:
    """Check that ``pos`` is a batch of point clouds ``(B, N, dim)`` of finite floats with ``N >= min_points``.

    ``dim=None`` accepts any number of coordinates (e.g. kNN in a feature space).

    Raises:
        TypeError: ``pos`` is not a floating-point tensor.
        ValueError: wrong shape, NaN/inf coordinates, or fewer than ``min_points`` points.
    """
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, 3); got {type(pos).__name__}")
    if not pos.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64); got dtype {pos.dtype}")
    if pos.dim() != 3 or (dim is not None and pos.shape[-1] != dim):
        raise ValueError(f"{name} must have shape (B, N, {dim if dim is not None else 'D'}); got {tuple(pos.shape)}")
    if pos.shape[1] < min_points:
        raise ValueError(
            f"{name} has {pos.shape[1]} points per cloud but at least {min_points} are needed "
            f"(e.g. for k = {min_points} neighbours)"
        )
    if not torch.isfinite(pos).all():
        bad = (~torch.isfinite(pos)).any(-1).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf coordinates (batch elements {bad[:10]})")


def check_features(x: Tensor, pos: Tensor, name: str) -> None:
    """Check that per-point features ``x (B, N, C)`` match the clouds ``pos (B, N, 3)`` and are finite."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[:2] != pos.shape[:2]:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape (B, N, C) = ({pos.shape[0]}, {pos.shape[1]}, C); got {shape}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
