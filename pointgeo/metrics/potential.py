"""Energy and force metrics of interatomic potentials, the way fairchem's OMol25 evaluator defines them.

* :class:`EnergyMAE`: mean over structures of ``|E_pred − E_ref|`` in meV, or of ``|ΔE| / N_atoms`` in meV/atom.
* :class:`ForceMAE`: mean over **all atoms × 3 components** of ``|F_pred − F_ref|`` in meV/Å.
* :class:`ForceCosine`: mean over atoms of ``cos(F_pred, F_ref)``.

Each also reports the same mean restricted to each ``data_id`` (OMol25's subsets) met so far: ``compute()``
returns ``{"": overall, "<data_id>": subset value, ...}``. The subsets are a fixed vocabulary given at construction
(the states are tensors, so they reduce across processes under DDP); ids outside it are counted in the overall
figure only. Inputs are in eV and eV/Å.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

OMOL25_DATA_IDS = ("elytes", "biomolecules", "metal_complexes", "spice", "ani2x", "orbnet_denali", "geom_orca6",
                   "trans1x", "rgd", "reactivity")
"""The ``data_id`` subsets of OMol25 (``atoms.info["data_id"]``)."""


def _group_codes(data_id: Sequence[str] | str | None, num_graphs: int, vocabulary: Sequence[str],
                 device: torch.device) -> Tensor:
    """``(B,)`` index of each structure's ``data_id`` in ``vocabulary`` (``len(vocabulary)`` when unknown/absent)."""
    if data_id is None:
        return torch.full((num_graphs,), len(vocabulary), dtype=torch.long, device=device)
    ids = [data_id] * num_graphs if isinstance(data_id, str) else list(data_id)
    if len(ids) != num_graphs:
        raise ValueError(f"data_id must name one subset per structure ({num_graphs}); got {len(ids)}")
    lookup = {name: k for k, name in enumerate(vocabulary)}
    return torch.tensor([lookup.get(str(x), len(vocabulary)) for x in ids], dtype=torch.long, device=device)


class _GroupedMean(Metric):
    """Sum and count of a per-structure quantity, overall and per ``data_id`` (the last slot: unknown ids)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, data_ids: Sequence[str] = OMOL25_DATA_IDS, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.data_ids = tuple(data_ids)
        g = len(self.data_ids) + 1
        self.add_state("total", default=torch.zeros(g, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(g, dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, values: Tensor, counts: Tensor, data_id: Sequence[str] | str | None) -> None:
        codes = _group_codes(data_id, values.shape[0], self.data_ids, values.device)
        self.total.index_add_(0, codes, values.detach().double())
        self.count.index_add_(0, codes, counts.detach().double())

    def compute(self) -> dict[str, Tensor]:
        out = {"": self.total.sum() / self.count.sum().clamp_min(1)}
        for k, name in enumerate(self.data_ids):
            if self.count[k] > 0:
                out[name] = self.total[k] / self.count[k]
        return out


def _natoms(index: Tensor, num_graphs: int) -> Tensor:
    return torch.bincount(index, minlength=num_graphs)


class EnergyMAE(_GroupedMean):
    """Energy MAE over structures, in meV (``per_atom=False``) or meV/atom (``per_atom=True``).

    ``update(pred (B,), target (B,), natoms (B,), data_id=None)`` in eV.
    """

    def __init__(self, per_atom: bool = False, data_ids: Sequence[str] = OMOL25_DATA_IDS, **kwargs: object) -> None:
        super().__init__(data_ids, **kwargs)
        self.per_atom = per_atom

    def update(self, pred: Tensor, target: Tensor, natoms: Tensor, data_id: Sequence[str] | str | None = None) -> None:
        if pred.shape != target.shape or pred.dim() != 1 or natoms.shape != pred.shape:
            raise ValueError(f"energies must be (B,) with natoms (B,); got {tuple(pred.shape)}, {tuple(target.shape)}, "
                             f"{tuple(natoms.shape)}")
        err = (pred - target).abs() * 1000.0
        if self.per_atom:
            err = err / natoms.to(err.dtype)
        self._accumulate(err, torch.ones_like(err), data_id)


class ForceMAE(_GroupedMean):
    """Force MAE over all atoms and components, in meV/Å.

    ``update(pred (N, 3), target (N, 3), index (N,), num_graphs, data_id=None)`` in eV/Å.
    """

    def update(self, pred: Tensor, target: Tensor, index: Tensor, num_graphs: int,
               data_id: Sequence[str] | str | None = None) -> None:
        if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 3:
            raise ValueError(f"forces must be (N, 3); got {tuple(pred.shape)} and {tuple(target.shape)}")
        err = (pred - target).abs().sum(-1) * 1000.0
        per = err.new_zeros(num_graphs).index_add(0, index, err)
        self._accumulate(per, 3 * _natoms(index, num_graphs), data_id)


class ForceCosine(_GroupedMean):
    """Mean cosine similarity of predicted and reference forces over atoms (atoms with a zero force count 0).

    ``update(pred (N, 3), target (N, 3), index (N,), num_graphs, data_id=None)``.
    """

    higher_is_better = True

    def update(self, pred: Tensor, target: Tensor, index: Tensor, num_graphs: int,
               data_id: Sequence[str] | str | None = None) -> None:
        if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 3:
            raise ValueError(f"forces must be (N, 3); got {tuple(pred.shape)} and {tuple(target.shape)}")
        cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-12)
        per = cos.new_zeros(num_graphs).index_add(0, index, cos)
        self._accumulate(per, _natoms(index, num_graphs), data_id)
