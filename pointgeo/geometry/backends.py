"""Optional fast kernels for neighbour search and FPS, imported lazily and defensively.

Open3D's ``open3d.ml.torch`` ops (batched CPU kNN and farthest point sampling) are only loadable with the exact
torch build they were compiled for (``open3d-cpu`` 0.20 ↔ torch 2.13 CPU); anything else, or a missing package,
silently selects pointgeo's pure-torch implementations. Backends are used only for float32 CPU tensors; results are
tested equal to the reference implementations.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Literal

from torch import Tensor

Backend = Literal["auto", "torch", "open3d"]


@functools.cache
def open3d_ops() -> ModuleType | None:
    """``open3d.ml.torch.ops`` if it loads with this torch, else ``None``."""
    try:
        import open3d.ml.torch as ml3d

        return ml3d.ops
    except Exception:  # noqa: BLE001  (ImportError, OSError from a mismatched binary, ...)
        return None


def choose(backend: Backend, *tensors: Tensor) -> Literal["torch", "open3d"]:
    """The backend to run: ``open3d`` when asked or when ``auto`` and the inputs suit it, else ``torch``."""
    if backend not in ("auto", "torch", "open3d"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'open3d'; got {backend!r}")
    suitable = all(t.device.type == "cpu" and t.dtype.is_floating_point and t.dtype.itemsize == 4 for t in tensors)
    if backend == "open3d":
        if open3d_ops() is None or not suitable:
            raise ValueError("the open3d backend needs open3d.ml.torch (open3d-cpu matching torch) and float32 CPU input")
        return "open3d"
    return "open3d" if backend == "auto" and suitable and open3d_ops() is not None else "torch"
