"""The symmetry harness of crystal networks (registry kind ``crystal_generation``, e.g. ``cdvae``).

A crystal is the same whatever its orientation, its origin, the order of its atoms and the choice of its cell
basis, and a lattice vector added to one atom moves it onto itself. For a network with the call convention of
:mod:`pointgeo.nn.cdvae.network` (``encode``, ``heads``, ``decode``), :func:`measure_crystal_symmetries` applies,
to a batch of crystals, each of

* ``rotation``: a Haar rotation per crystal (the cell turns, :data:`~pointgeo.geometry.CRYSTAL_FIELDS`);
* ``translation``: all atoms of a crystal moved by one random fractional offset, wrapped into ``[0, 1)``;
* ``permutation``: the atoms of each crystal reordered;
* ``basis``: a unimodular integer change of cell basis ``L' = M L``, ``f' = f M⁻¹``
  (:func:`~pointgeo.geometry.change_cell_basis`), with ``det M = 1``;
* ``lattice_shift``: one atom of each crystal moved by an integer lattice vector;

and compares the encoder's ``μ, log σ²``, every head and the decoder's type logits with the untransformed ones
(equal), and the decoder's score with the rotated (``ŝ Rᵀ``) or permuted untransformed score. Errors are
``max |Δ| / max(1, max |reference|)`` per output; the guarantee is ``≤ 1e-8`` in float64.

:func:`crystal_cases` builds the adversarial crystals: ``random`` triclinic crystals, ``cubic`` ones (simple cubic,
CsCl, cubic perovskite, fcc: symmetric enough that any frame would be undetermined and many neighbours are exactly
equidistant), very ``skewed`` cells (a short vector and angles far from 90°, needing several images per direction)
and ``single_atom`` cells; real crystals (e.g. perov_5 rows) are passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from pointgeo.geometry import (
    CRYSTAL_FIELDS,
    FieldSpec,
    apply_rigid_motion,
    change_cell_basis,
    frac_to_cart,
    lattice_params_to_matrix,
    sample_rotations,
)

CRYSTAL_CASES = ("random", "cubic", "skewed", "single_atom")
"""The crystal classes :func:`crystal_cases` builds."""
TRANSFORMS = ("rotation", "translation", "permutation", "basis", "lattice_shift")
"""The symmetries :func:`measure_crystal_symmetries` checks."""
SCORE_FIELDS = FieldSpec(lattice=("cell",), vectors=("score",))
"""How a rotation moves the decoder's output: the score turns like the cell's rows."""
BASES = ((1, 1, 0, 0, 1, 0, 0, 0, 1), (1, 2, 1, 0, 1, -1, 0, 0, 1), (0, 1, 0, 0, 0, 1, 1, 0, 0),
         (2, 1, 0, 1, 1, 0, -1, 2, 1))
"""Unimodular integer matrices (row-major) of determinant +1 used as changes of cell basis."""


def crystal_batch(crystals: Sequence[tuple[Tensor, Tensor, Tensor]], dtype: torch.dtype = torch.float64) -> Batch:
    """A ``torch_geometric`` batch of ``(frac (N, 3), atom_types (N,), cell (3, 3))`` crystals with the fields of
    ``pointgeo.datamodules.crystals`` (``frac_coords``, ``z``, ``cell``, ``natoms``)."""
    data = [Data(frac_coords=f.to(dtype), z=z.long(), cell=c.to(dtype).reshape(1, 3, 3),
                 natoms=torch.tensor([f.shape[0]]), num_nodes=f.shape[0]) for f, z, c in crystals]
    return Batch.from_data_list(data)


def crystal_cases(kind: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> Batch:
    """The crystals of one class of :data:`CRYSTAL_CASES` (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def cell(lengths: Sequence[float], angles: Sequence[float]) -> Tensor:
        return lattice_params_to_matrix(torch.tensor(lengths, dtype=f64), torch.tensor(angles, dtype=f64))

    def types(n: int) -> Tensor:
        return torch.randint(1, 90, (n,), generator=g)

    if kind == "random":
        crystals = []
        for n in (2, 5, 8):
            lengths = (3.0 + 3.0 * torch.rand(3, generator=g, dtype=f64)).tolist()
            angles = (75.0 + 30.0 * torch.rand(3, generator=g, dtype=f64)).tolist()
            crystals.append((torch.rand(n, 3, generator=g, dtype=f64), types(n), cell(lengths, angles)))
    elif kind == "cubic":
        perovskite = torch.tensor([[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]], dtype=f64)
        fcc = torch.tensor([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]], dtype=f64)
        crystals = [(torch.zeros(1, 3, dtype=f64), torch.tensor([84]), cell([3.0] * 3, [90.0] * 3)),
                    (torch.tensor([[0, 0, 0], [.5, .5, .5]], dtype=f64), torch.tensor([55, 17]),
                     cell([3.5] * 3, [90.0] * 3)),
                    (perovskite, torch.tensor([38, 22, 8, 8, 8]), cell([3.9] * 3, [90.0] * 3)),
                    (fcc, torch.tensor([29] * 4), cell([3.6] * 3, [90.0] * 3))]
    elif kind == "skewed":
        crystals = [(torch.rand(3, 3, generator=g, dtype=f64), types(3), cell([1.6, 5.0, 7.0], [40.0, 120.0, 85.0])),
                    (torch.rand(4, 3, generator=g, dtype=f64), types(4), cell([2.0, 2.2, 9.0], [150.0, 30.0, 130.0]))]
    elif kind == "single_atom":
        crystals = [(torch.rand(1, 3, generator=g, dtype=f64), types(1), cell([2.8] * 3, [90.0] * 3)),
                    (torch.rand(1, 3, generator=g, dtype=f64), types(1), cell([3.0, 3.3, 3.7], [60.0, 70.0, 80.0])),
                    (torch.rand(1, 3, generator=g, dtype=f64), types(1), cell([2.5, 2.5, 4.1], [90.0, 90.0, 120.0]))]
    else:
        raise ValueError(f"kind must be one of {CRYSTAL_CASES}; got {kind!r}")
    return crystal_batch(crystals, dtype)


def _outputs(net: torch.nn.Module, batch: Batch, latent: Tensor) -> dict[str, Tensor]:
    mu, log_var = net.encode(batch.frac_coords, batch.z, batch.cell, batch.batch)
    out = {"mu": mu, "log_var": log_var, **{f"head_{k}": v for k, v in net.heads(mu).items()}}
    pos = frac_to_cart(batch.frac_coords, batch.cell, batch.batch)
    out["score"], out["type_logits"] = net.decode(latent.to(mu), pos, batch.z, batch.cell, batch.batch)
    return out


def _transformed(batch: Batch, transform: str, g: torch.Generator) -> tuple[Batch, Tensor | None, Tensor | None]:
    """``(batch', rotation (B, 3, 3) or None, atom order or None)``: ``out'[i] = out[order[i]]`` per atom."""
    num, n = batch.num_graphs, batch.frac_coords.shape[0]
    dtype = batch.frac_coords.dtype
    new = batch.clone()
    if transform == "rotation":
        rotation = sample_rotations("so3", num, generator=g, dtype=dtype)
        return apply_rigid_motion(batch, CRYSTAL_FIELDS, rotation), rotation, None
    if transform == "translation":
        offset = torch.rand(num, 3, generator=g, dtype=dtype)
        new.frac_coords = torch.remainder(batch.frac_coords + offset[batch.batch], 1.0)
        return new, None, None
    if transform == "permutation":
        key = batch.batch.to(torch.float64) + torch.rand(n, generator=g, dtype=torch.float64)
        order = torch.argsort(key)
        new.frac_coords, new.z = batch.frac_coords[order], batch.z[order]
        return new, None, order
    if transform == "basis":
        choice = torch.randint(len(BASES), (num,), generator=g)
        matrices = torch.tensor(BASES, dtype=torch.float64).reshape(-1, 3, 3)[choice]
        new.frac_coords, new.cell = change_cell_basis(batch.frac_coords, batch.cell, matrices, batch.batch)
        return new, None, None
    if transform == "lattice_shift":
        counts = torch.bincount(batch.batch, minlength=num)
        first = torch.cumsum(counts, 0) - counts
        atom = first + (torch.rand(num, generator=g, dtype=torch.float64) * counts).long()
        shift = torch.randint(-2, 3, (num, 3), generator=g).to(dtype)
        frac = batch.frac_coords.clone()
        frac[atom] = frac[atom] + shift
        new.frac_coords = frac
        return new, None, None
    raise ValueError(f"transform must be one of {TRANSFORMS}; got {transform!r}")


def measure_crystal_symmetries(net: torch.nn.Module, batch: Batch, *, trials: int = 2,
                               transforms: Sequence[str] = TRANSFORMS, seed: int = 0) -> dict[str, dict[str, float]]:
    """The largest error of every output under every symmetry (module docstring) over ``trials`` random draws:
    ``{transform: {output: max |Δ| / max(1, max |reference|)}}``. The network is put in eval mode."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch.num_graphs, net.latent_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        reference = _outputs(net, batch, latent)
        errors: dict[str, dict[str, float]] = {}
        for transform in transforms:
            worst: dict[str, float] = {}
            for _ in range(trials):
                moved, rotation, order = _transformed(batch, transform, g)
                out = _outputs(net, moved, latent)
                expected = dict(reference)
                if rotation is not None:
                    turned = apply_rigid_motion(Batch(score=reference["score"], batch=batch.batch,
                                                      cell=batch.cell), SCORE_FIELDS, rotation.to(batch.cell))
                    expected["score"] = turned.score
                if order is not None:
                    expected["score"], expected["type_logits"] = reference["score"][order], \
                        reference["type_logits"][order]
                for key, value in out.items():
                    ref = expected[key]
                    err = float((value - ref).abs().max() / max(1.0, float(ref.abs().max())))
                    worst[key] = max(worst.get(key, 0.0), err)
            errors[transform] = worst
    return errors


def measure_sensitivity(net: torch.nn.Module, batch: Batch, seed: int = 0) -> dict[str, float]:
    """How much each output changes when one atom of every crystal moves by 0.3 Å in a random direction (not a
    symmetry): ``{output: max |Δ| / max(1, max |reference|)}``; a network that ignores its input scores 0."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch.num_graphs, net.latent_dim, generator=g, dtype=torch.float64)
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs)
    first = torch.cumsum(counts, 0) - counts
    moved = batch.clone()
    step = torch.randn(batch.num_graphs, 3, generator=g, dtype=torch.float64)
    step = 0.3 * step / step.norm(dim=-1, keepdim=True)
    frac = batch.frac_coords.clone()
    frac[first] = frac[first] + (step.unsqueeze(1) @ torch.linalg.inv(batch.cell.double())).squeeze(1).to(frac)
    moved.frac_coords = frac
    with torch.no_grad():
        ref, out = _outputs(net, batch, latent), _outputs(net, moved, latent)
    return {k: float((out[k] - ref[k]).abs().max() / max(1.0, float(ref[k].abs().max()))) for k in ref}


def assert_crystal_symmetric(net: torch.nn.Module, batch: Batch, *, tol: float = 1e-8, trials: int = 2,
                             transforms: Sequence[str] = TRANSFORMS, seed: int = 0) -> dict[str, dict[str, float]]:
    """``AssertionError`` listing every output and symmetry whose error exceeds ``tol``; returns the errors."""
    errors = measure_crystal_symmetries(net, batch, trials=trials, transforms=transforms, seed=seed)
    bad = {t: {k: v for k, v in e.items() if v > tol} for t, e in errors.items()}
    bad = {t: e for t, e in bad.items() if e}
    if bad:
        raise AssertionError(f"symmetry broken beyond {tol:g}: {bad}")
    return errors


__all__ = ["BASES", "CRYSTAL_CASES", "SCORE_FIELDS", "TRANSFORMS", "assert_crystal_symmetric", "crystal_batch",
           "crystal_cases", "measure_crystal_symmetries", "measure_sensitivity"]
