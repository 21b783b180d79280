"""Interatomic potentials: energy, conservative forces ``F = −∂E/∂r`` and stress, trained on energies and forces.

The network (registry kind ``potential``) maps a batch of structures to energies ``(B,)``; this task takes the
derivatives by autograd:

* forces ``F_i = −∂E/∂r_i``, with the graph kept (``create_graph``) while training so the force loss trains the
  weights;
* stress ``σ = (1/V) ∂E/∂ε`` for periodic structures, ``ε`` a symmetric strain applied to positions and cell
  (``r → r (I + ε)``, ``cell → cell (I + ε)``) at ``ε = 0``;
* a network built with ``direct_forces=True`` predicts forces itself (not a gradient, so not conservative: kept
  for comparison; :mod:`pointgeo.testing.potentials` shows the difference).

Autograd is on in validation, test and predict as well (``torch.enable_grad()``; Lightning's inference mode cannot
be undone inside a step, so the shipped configs set ``trainer.inference_mode: false``; a batch made under inference
mode is cloned out of it).

Losses (fairchem's OMol25 recipe, both coefficients 10 by default):
``L = λ_E · mean_b |E_b − Ê_b| / N_b + λ_F · mean_i ‖F_i − F̂_i‖₂``. ``force_weight: 0`` trains on energies alone
(batches without ``forces`` are then accepted). Metrics: :mod:`pointgeo.metrics.potential`, logged as
``{stage}/energy_mae`` (meV), ``{stage}/energy_mae_per_atom`` (meV/atom), ``{stage}/force_mae`` (meV/Å),
``{stage}/force_cos``, and each ``…/{data_id}`` for OMol25's subsets.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pointgeo.geometry import MOLECULE_FIELDS, apply_rigid_motion, random_rotations
from pointgeo.metrics.potential import OMOL25_DATA_IDS, EnergyMAE, ForceCosine, ForceMAE
from pointgeo.nn.atoms import graph_index, periodic_inputs
from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks.base import OptimizerName, PointGeoTask, SchedulerName

NUM_ELEMENT_REFERENCES = 119
"""Length of the per-element reference table: one entry per atomic number 0…118 (index = Z)."""


def predict_potential(net: torch.nn.Module, batch: Any, *, create_graph: bool = False, forces: bool = True,
                      stress: bool = False) -> dict[str, Tensor]:
    """Energy ``(B,)``, forces ``(N, 3)`` and (``stress=True``, periodic batches) stress ``(B, 3, 3)`` of ``net``.

    Forces are ``−∂E/∂pos`` unless the network has a direct force head (it returns ``(energy, forces)``). The input
    batch is not modified. ``create_graph`` keeps the graph of the derivatives (training).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("forces need autograd, which inference mode disables: run under "
                           "torch.inference_mode(False) (Lightning: Trainer(inference_mode=False))")
    with torch.enable_grad():
        batch = copy.copy(batch)
        index, num_graphs = graph_index(batch)
        pos = batch.pos.detach().clone().requires_grad_(forces or stress)
        inputs = [pos]
        cell, pbc = periodic_inputs(batch, num_graphs)
        if stress:
            if cell is None:
                raise ValueError("stress needs periodic structures (batch.cell and batch.pbc)")
            strain = torch.zeros(num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(-1, -2))
            batch.cell = cell + cell @ sym
            pos_in = pos + (pos.unsqueeze(1) @ sym[index]).squeeze(1)
            inputs.append(strain)
        else:
            pos_in = pos
        batch.pos = pos_in
        out = net(batch)
        energy, direct = (out, None) if isinstance(out, Tensor) else out
        result = {"energy": energy}
        if direct is not None:
            result["forces"] = direct
        want_forces = forces and direct is None
        if want_forces or stress:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
            if want_forces:
                result["forces"] = -grads[0]
            if stress:
                volume = torch.linalg.det(cell).abs()
                result["stress"] = grads[1] / volume[:, None, None]
        return result


def target_energy(batch: Any) -> Tensor:
    """The energy a network learns, ``(B,)``: ``energy − energy_reference`` (the per-element references fitted by
    the datamodule, :mod:`pointgeo.datamodules.molecules`), or ``energy`` for batches without references.

    Totals of many-atom molecules (−10⁴…−10⁶ eV) are almost all atomic reference energy; the network learns the
    rest (the atomisation-like energy) and adds the references back only where a total is wanted. The difference is
    taken in float64 (and returned in float64; the caller rounds the small residual to its network's dtype): in
    float32, totals of 10⁵ eV are 8 meV apart.
    """
    energy = batch.energy.reshape(-1).double()
    reference = getattr(batch, "energy_reference", None)
    return energy if reference is None else energy - reference.reshape(-1).double()


class PotentialTask(PointGeoTask):
    """Train and evaluate a registered ``potential`` network on energies and forces.

    Args:
        network: registry name (``pointgeo models --task potential``... e.g. ``painn``, ``tinvnn_atoms``).
        network_kwargs: extra constructor arguments of the network (e.g. ``direct_forces: true``).
        energy_weight: ``λ_E`` of the per-atom energy MAE (fairchem OMol: 10).
        force_weight: ``λ_F`` of the per-atom force L2 norm (fairchem OMol: 10); 0 trains on energies only.
        metric_subsets: the ``data_id`` subsets the metrics also report separately (default: OMol25's). Not
            called ``data_ids``: that is the datamodule's row filter, and Lightning merges both into one table.
        optimizer, lr, weight_decay, momentum, scheduler, min_lr, step_size, gamma: as
            :class:`~pointgeo.tasks.base.PointGeoTask`.
    """

    task_kind = "potential"
    test_metric = "test/force_mae"
    test_columns = (("test/energy_mae", "energy MAE", 1.0, "meV"), ("test/force_mae", "force MAE", 1.0, "meV/Å"))
    """What ``pointgeo train`` prints for each test rotation: ``(metric, label, scale, unit)``."""

    def __init__(
        self,
        network: str = "painn",
        network_kwargs: dict[str, Any] | None = None,
        energy_weight: float = 10.0,
        force_weight: float = 10.0,
        metric_subsets: Sequence[str] = OMOL25_DATA_IDS,
        optimizer: OptimizerName = "adamw",
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        min_lr: float = 1e-6,
        step_size: int = 20,
        gamma: float = 0.7,
    ) -> None:
        super().__init__()
        entry = get_model_entry(network)
        if entry.task != "potential":
            raise ValueError(f"network {network!r} is a {entry.task} network, not a potential one")
        if energy_weight < 0 or force_weight < 0 or energy_weight + force_weight == 0:
            raise ValueError(f"energy_weight and force_weight must be >= 0, not both 0; got {energy_weight}, "
                             f"{force_weight}")
        self.save_hyperparameters()
        self.net = create_model(network, **(network_kwargs or {}))
        self.register_buffer("element_energies", torch.zeros(NUM_ELEMENT_REFERENCES, dtype=torch.float64))
        """``(119,)`` float64 per-element reference energies ``E0[Z]`` (eV) the training targets had subtracted,
        copied from the datamodule when training starts and saved with the weights, so a checkpoint alone (the
        hub's slim copies too) turns the learned energy back into a total: :meth:`total_energy`."""
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_metrics": torch.nn.ModuleDict({
                "energy_mae": EnergyMAE(data_ids=metric_subsets),
                "energy_mae_per_atom": EnergyMAE(per_atom=True, data_ids=metric_subsets),
                "force_mae": ForceMAE(data_ids=metric_subsets),
                "force_cos": ForceCosine(data_ids=metric_subsets),
            })
            for stage in ("train", "val", "test")
        })

    def setup(self, stage: str) -> None:
        """Take the datamodule's fitted per-element references (a datamodule without them leaves zeros)."""
        data = getattr(self.trainer, "datamodule", None)
        references = getattr(data, "element_energies", None)
        if references is not None:
            if references.shape != self.element_energies.shape:
                raise ValueError(f"the datamodule's element_energies must have shape "
                                 f"{tuple(self.element_energies.shape)}; got {tuple(references.shape)}")
            self.element_energies.copy_(references.to(self.element_energies))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the references were part of the task's state load with zero references (and
        a warning: their energies stay relative to the per-element references)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        if "element_energies" not in state:
            warnings.warn("this potential checkpoint holds no per-element reference energies: total_energy() gives "
                          "the energy it learned (relative to its training references)", stacklevel=2)
            state["element_energies"] = torch.zeros(NUM_ELEMENT_REFERENCES, dtype=torch.float64)

    def total_energy(self, energy: Tensor, z: Tensor, batch_index: Tensor | None = None) -> Tensor:
        """The total energy ``(B,)`` float64: the network's ``energy (B,)`` plus ``Σ_i E0[z_i]`` of each structure's
        atoms (``z (N,)``, ``batch_index (N,)``; one structure when ``None``)."""
        index = torch.zeros_like(z) if batch_index is None else batch_index
        per_atom = self.element_energies[z.to(self.element_energies.device)].to(energy.device)
        references = torch.zeros(energy.shape[0], dtype=torch.float64, device=energy.device)
        references.index_add_(0, index.to(energy.device), per_atom)
        return energy.double() + references

    def forward(self, batch: Any, *, stress: bool = False) -> dict[str, Tensor]:
        """``{"energy" (B,), "forces" (N, 3)[, "stress" (B, 3, 3)]}`` of a batch (no graph of the derivatives)."""
        return predict_potential(self.net, self._out_of_inference_mode(batch), stress=stress)

    @staticmethod
    def _out_of_inference_mode(batch: Any) -> Any:
        if not torch.is_inference_mode_enabled():
            return batch
        with torch.inference_mode(False):
            return batch.clone()

    def _step(self, batch: Any, stage: str) -> Tensor:
        hp = self.hparams
        want_forces = hp.force_weight > 0 or stage != "train"
        if hp.force_weight > 0 and getattr(batch, "forces", None) is None:
            raise ValueError("the batch has no 'forces'; set force_weight: 0 for an energy-only potential")
        if getattr(batch, "energy", None) is None:
            raise ValueError("the batch has no 'energy': a potential needs reference energies")
        has_forces = getattr(batch, "forces", None) is not None
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return self._step(batch.clone(), stage)
        out = predict_potential(self.net, batch, create_graph=stage == "train" and hp.force_weight > 0,
                                forces=want_forces and has_forces)
        index, num_graphs = graph_index(batch)
        natoms = torch.bincount(index, minlength=num_graphs)
        energy = target_energy(batch).to(out["energy"].dtype)
        loss_e = ((out["energy"] - energy).abs() / natoms).mean()
        loss = hp.energy_weight * loss_e
        self.log(f"{stage}/loss_energy", loss_e, batch_size=num_graphs)
        if "forces" in out and has_forces:
            loss_f = (out["forces"] - batch.forces.to(out["forces"].dtype)).norm(dim=-1).mean()
            if hp.force_weight > 0:
                loss = loss + hp.force_weight * loss_f
            self.log(f"{stage}/loss_forces", loss_f, batch_size=num_graphs)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=num_graphs)
        metrics = self.metrics[f"{stage}_metrics"]
        data_id = getattr(batch, "data_id", None)
        metrics["energy_mae"].update(out["energy"].detach(), energy, natoms, data_id)
        metrics["energy_mae_per_atom"].update(out["energy"].detach(), energy, natoms, data_id)
        if "forces" in out and has_forces:
            f_ref = batch.forces.to(out["forces"].dtype)
            metrics["force_mae"].update(out["forces"].detach(), f_ref, index, num_graphs, data_id)
            metrics["force_cos"].update(out["forces"].detach(), f_ref, index, num_graphs, data_id)
        return loss

    def _log_epoch(self, stage: str) -> None:
        for name, metric in self.metrics[f"{stage}_metrics"].items():
            if not metric.update_called:
                continue
            for group, value in metric.compute().items():
                key = f"{stage}/{name}" + (f"/{group}" if group else "")
                self.log(key, value.float(), prog_bar=stage == "val" and not group and name in ("energy_mae",
                                                                                                "force_mae"))
            metric.reset()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        out = self(batch, stress=periodic_inputs(batch, graph_index(batch)[1])[0] is not None)
        return {k: v.detach() for k, v in out.items()}


class TransIPPotentialTask(PotentialTask):
    """:class:`PotentialTask` plus TransIP's contrastive alignment of rotated copies (the network must be
    ``transip``): ``L + λ_eq · L_con`` with ``L_con`` from :func:`pointgeo.nn.transip.contrastive_loss` on one Haar
    rotation per molecule and step. ``augment: true`` also trains the supervised losses on the rotated copy (inputs
    and force labels rotated), which with ``contrastive_weight: 0`` is the data-augmentation baseline.

    Args:
        contrastive_weight: ``λ_eq``.
        temperature: ``τ`` of the InfoNCE loss.
        augment: rotate the supervised batch too.
        **kwargs: :class:`PotentialTask`'s.
    """

    def __init__(self, network: str = "transip", contrastive_weight: float = 1.0, temperature: float = 0.1,
                 augment: bool = False, **kwargs: Any) -> None:
        if network != "transip":
            raise ValueError(f"TransIPPotentialTask trains the 'transip' network; got {network!r}")
        if contrastive_weight < 0 or temperature <= 0:
            raise ValueError(f"contrastive_weight must be >= 0 and temperature > 0; got {contrastive_weight}, "
                             f"{temperature}")
        super().__init__(network=network, **kwargs)
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        from pointgeo.nn.transip import contrastive_loss

        rotation = random_rotations(batch.num_graphs, dtype=batch.pos.dtype, device=batch.pos.device)
        supervised = self._step(apply_rigid_motion(batch, MOLECULE_FIELDS, rotation) if self.hparams.augment else batch, "train")
        if self.hparams.contrastive_weight == 0 or batch.num_graphs < 2:
            return supervised
        con = contrastive_loss(self.net, batch, rotation, self.hparams.temperature)
        self.log("train/loss_contrastive", con, batch_size=batch.num_graphs)
        return supervised + self.hparams.contrastive_weight * con
