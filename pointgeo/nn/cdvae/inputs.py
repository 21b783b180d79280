"""Input checks of the CDVAE networks: one clear ``ValueError`` naming what is wrong with a batch of crystals.

A batch of crystals is given as concatenated per-atom tensors and per-crystal cells (the layout of
``pointgeo.datamodules.crystals`` batches): coordinates ``(N, 3)`` (fractional or Cartesian), ``atom_types (N,)``
long atomic numbers, ``cell (B, 3, 3)`` with rows = lattice vectors, ``batch (N,)`` long, non-decreasing.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_RELATIVE_VOLUME = 1e-6
"""A cell whose ``det L`` is at most this times ``‖a‖ ‖b‖ ‖c‖`` is singular (or left-handed) and refused."""


def check_crystals(coords: Tensor, atom_types: Tensor, cell: Tensor, batch: Tensor, *, max_atoms: int,
                   max_z: int, coords_name: str = "frac_coords") -> int:
    """Refuse what no CDVAE network can use; returns the number of crystals ``B``.

    Raises:
        ValueError: wrong shapes or dtypes, non-finite values, an atomic number outside ``1..max_z`` (the type
            vocabulary), a crystal with more than ``max_atoms`` atoms, a crystal without atoms, or a singular or
            negative-volume cell; the message names the input and the crystal.
    """
    if not isinstance(coords, Tensor) or not coords.is_floating_point() or coords.dim() != 2 or coords.shape[1] != 3:
        raise ValueError(f"{coords_name} must be a float tensor of shape (N, 3); got {_shape(coords)}")
    n = coords.shape[0]
    if not isinstance(atom_types, Tensor) or atom_types.is_floating_point() or atom_types.shape != (n,):
        raise ValueError(f"atom_types must be an integer tensor of shape (N,) = ({n},); got {_shape(atom_types)}")
    if not isinstance(cell, Tensor) or not cell.is_floating_point() or cell.dim() != 3 or cell.shape[1:] != (3, 3):
        raise ValueError(f"cell must be a float tensor of shape (B, 3, 3) (rows = lattice vectors); got {_shape(cell)}")
    num = cell.shape[0]
    if not isinstance(batch, Tensor) or batch.dtype != torch.long or batch.shape != (n,):
        raise ValueError(f"batch must be a long tensor of shape (N,) = ({n},); got {_shape(batch)}")
    if n and (int(batch.min()) < 0 or int(batch.max()) >= num or bool((batch[1:] < batch[:-1]).any())):
        raise ValueError(f"batch must hold non-decreasing crystal indices in 0..{num - 1}")
    if not bool(torch.isfinite(coords).all()):
        bad = (~torch.isfinite(coords)).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"{coords_name} contains NaN or inf (atoms {bad[:10]})")
    bad_z = (atom_types < 1) | (atom_types > max_z)
    if bool(bad_z.any()):
        k = int(bad_z.nonzero()[0])
        raise ValueError(f"atom_types: atom {k} of crystal {int(batch[k])} has atomic number {int(atom_types[k])}, "
                         f"outside the model's vocabulary 1..{max_z}")
    counts = torch.bincount(batch, minlength=num)
    if bool((counts > max_atoms).any()) or bool((counts == 0).any()):
        k = int(((counts > max_atoms) | (counts == 0)).nonzero()[0])
        raise ValueError(f"crystal {k} has {int(counts[k])} atoms; the model takes 1..max_atoms={max_atoms}")
    check_cells(cell)
    return num


def check_cells(cell: Tensor, name: str = "cell") -> None:
    """``ValueError`` naming the first crystal whose cell is non-finite, singular or left-handed."""
    c64 = cell.detach().double()
    finite = torch.isfinite(c64).flatten(1).all(-1)
    volume = torch.where(finite, torch.linalg.det(torch.where(finite[:, None, None], c64, torch.eye(3).to(c64))),
                         torch.full_like(c64[:, 0, 0], float("nan")))
    scale = c64.norm(dim=-1).prod(-1)
    bad = ~(volume > MIN_RELATIVE_VOLUME * scale)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(f"{name} of crystal {k} is singular or has a negative volume (det = {float(volume[k]):.4g} "
                         f"Å³, lattice vector lengths {c64[k].norm(dim=-1).tolist()} Å); CDVAE needs a right-handed "
                         "cell of positive volume")


def _shape(x: object) -> str:
    return f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
