"""Robustness reports for interatomic potentials: accuracy and measured symmetry under the seeded SO(3) protocol,
and energy conservation in a short NVE run.

For every test molecule and model (checkpoints of the ``potential`` task):

* protocols ``none`` and ``so3``: energy MAE (meV, and meV/atom), force MAE per component (meV/Å) and force cosine
  (:mod:`pointgeo.metrics.potential`); under ``so3`` each molecule is moved ``n_rotations`` times, rotation ``r`` of
  molecule ``i`` seeded by ``(seed, i, protocol, r)`` exactly as the rotated-test protocol does
  (:func:`pointgeo.robustness.protocol.rotation_table`), and every field moves by the dataset's declaration
  (:func:`pointgeo.geometry.apply_rigid_motion`: positions and reference forces rotate, energies do not);
* measured symmetry, the harness's norm-wise relative errors (:mod:`pointgeo.testing.potentials`):
  energy invariance ``max |E(Rx) − E(x)| / max |E(x)|`` and force equivariance
  ``max |F(Rx) − F(x) Rᵀ| / max |F(x)|`` (components), with the absolute maxima and means, and whether they are
  within the run's dtype tolerance (float64 1e-8, float32 1e-3); networks with a contrastive latent (TransIP-style,
  declared ``approximate``) also get the latent alignment error ``mean 1 − cos(T(u(x), R), u(Rx))``;
* NVE: ``nve.molecules`` test molecules integrated for ``nve.steps`` velocity-Verlet steps of ``nve.dt_fs`` from
  seeded Maxwell–Boltzmann velocities at ``nve.temperature`` (:mod:`pointgeo.testing.md`; the integrator is an
  argument, so a calculator-driven run can replace it): the drift of the total energy in eV/atom/ps.

Energies are compared relative to the datamodule's per-element references (the network's target,
:func:`pointgeo.tasks.potential.target_energy`); the references are the checkpoint's own.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pointgeo import __version__
from pointgeo.datamodules.base import sample_seed
from pointgeo.geometry import apply_rigid_motion
from pointgeo.metrics.potential import EnergyMAE, ForceCosine, ForceMAE
from pointgeo.robustness.loading import LoadedModel
from pointgeo.robustness.protocol import PROTOCOLS, ProtocolSettings, rotation_table
from pointgeo.testing.md import Integrator, energy_drift, maxwell_boltzmann, velocity_verlet
from pointgeo.testing.potentials import TOLERANCES

POTENTIAL_PROTOCOLS = ("none", "so3")


@dataclass(frozen=True)
class NVESettings:
    """The short NVE run: ``molecules`` test molecules, ``steps`` steps of ``dt_fs`` fs from velocities at
    ``temperature`` K (``steps = 0``: no run)."""

    steps: int = 200
    dt_fs: float = 0.5
    temperature: float = 300.0
    molecules: int = 1

    def __post_init__(self) -> None:
        if self.steps < 0 or self.dt_fs <= 0 or self.temperature < 0 or self.molecules < 1:
            raise ValueError(f"NVE settings must have steps >= 0, dt_fs > 0, temperature >= 0 and molecules >= 1; "
                             f"got {self}")


ENERGY_KEYS = ("energy", "energy_reference")
"""Totals (up to ~10⁵ eV for OMol25) stay float64 until the reference is removed (``target_energy``)."""


def _cast(batch: Any, device: str, dtype: torch.dtype) -> Any:
    energies = {key: batch[key] for key in ENERGY_KEYS if key in batch}
    moved = batch.to(device).apply(lambda t: t.to(dtype) if t.is_floating_point() else t)  # in place
    for key, value in energies.items():
        moved[key] = value.to(device)
    return moved


def _test_batches(dm: Any, device: str, dtype: torch.dtype, max_samples: int | None) -> Iterator[Any]:
    """The unrotated test batches (their first ``max_samples`` molecules), floats in ``dtype``."""
    from torch_geometric.data import Batch

    seen = 0
    for batch in dm.test_dataloader():
        if max_samples is not None and seen >= max_samples:
            return
        if max_samples is not None and seen + batch.num_graphs > max_samples:
            batch = Batch.from_data_list(batch.to_data_list()[: max_samples - seen])
        seen += batch.num_graphs
        yield _cast(batch, device, dtype)


class _SymmetryTally:
    """Running maxima and means of the energy and force changes under one protocol."""

    def __init__(self) -> None:
        self.e_max = self.e_sum = self.f_max = self.f_sum = self.e_scale = self.f_scale = 0.0
        self.e_count = self.f_count = 0
        self.latent_sum, self.latent_count = 0.0, 0

    def add(self, d_energy: Tensor, d_forces: Tensor, energy: Tensor, forces: Tensor) -> None:
        self.e_max = max(self.e_max, float(d_energy.abs().max()))
        self.e_sum += float(d_energy.abs().sum())
        self.e_count += d_energy.numel()
        self.f_max = max(self.f_max, float(d_forces.abs().max()))
        self.f_sum += float(d_forces.norm(dim=-1).sum())
        self.f_count += d_forces.shape[0]
        self.e_scale = max(self.e_scale, float(energy.abs().max()))
        self.f_scale = max(self.f_scale, float(forces.abs().max()))

    def summary(self, dtype: torch.dtype) -> dict[str, Any]:
        tiny = torch.finfo(torch.float64).tiny
        e_rel, f_rel = self.e_max / max(self.e_scale, tiny), self.f_max / max(self.f_scale, tiny)
        return {"energy_invariance_error": e_rel, "max_energy_change_ev": self.e_max,
                "mean_energy_change_ev": self.e_sum / max(self.e_count, 1),
                "force_equivariance_error": f_rel, "max_force_change_ev_per_a": self.f_max,
                "mean_force_change_norm_ev_per_a": self.f_sum / max(self.f_count, 1),
                "within_tolerance": bool(e_rel <= TOLERANCES[dtype] and f_rel <= TOLERANCES[dtype]),
                "tolerance": TOLERANCES[dtype],
                "latent_alignment_error": self.latent_sum / self.latent_count if self.latent_count else None}


def _metrics(device: str) -> dict[str, Any]:
    return {"energy_mae": EnergyMAE(data_ids=()).to(device),
            "energy_mae_per_atom": EnergyMAE(per_atom=True, data_ids=()).to(device),
            "force_mae": ForceMAE(data_ids=()).to(device), "force_cos": ForceCosine(data_ids=()).to(device)}


def _update(metrics: dict[str, Any], out: dict[str, Tensor], batch: Any) -> None:
    from pointgeo.tasks.potential import target_energy

    index, b = batch.batch, batch.num_graphs
    natoms = torch.bincount(index, minlength=b)
    metrics["energy_mae"].update(out["energy"], target_energy(batch).to(out["energy"].dtype), natoms)
    metrics["energy_mae_per_atom"].update(out["energy"], target_energy(batch).to(out["energy"].dtype), natoms)
    if getattr(batch, "forces", None) is not None:
        metrics["force_mae"].update(out["forces"], batch.forces.to(out["forces"].dtype), index, b)
        metrics["force_cos"].update(out["forces"], batch.forces.to(out["forces"].dtype), index, b)


def _latent_error(net: Any, batch: Any, moved: Any, rotation: Tensor) -> Tensor | None:
    """``(B,)`` ``1 − cos(T(u(x), R), u(R x))`` for networks with a contrastive latent, else ``None``."""
    if not (hasattr(net, "latent") and hasattr(net, "transform")):
        return None
    with torch.no_grad():
        predicted = net.transform(net.latent(batch), rotation)
        return 1 - torch.nn.functional.cosine_similarity(predicted, net.latent(moved), dim=-1)


def predict(task: Any, batch: Any) -> dict[str, Tensor]:
    """Detached ``{"energy" (B,), "forces" (N, 3)}`` of ``task``'s network on ``batch`` (NaN raises)."""
    from pointgeo.tasks.potential import predict_potential

    out = {k: v.detach() for k, v in predict_potential(task.net, batch).items()}
    if not all(bool(torch.isfinite(v).all()) for v in out.values()):
        raise ValueError(f"the model produced NaN or inf energies or forces on test rows {batch.index.tolist()}")
    return out


def evaluate_potentials(tasks: list[Any], batches: Iterator[Any], fields: Any, settings: ProtocolSettings,
                        dtype: torch.dtype, device: str) -> list[dict[str, Any]]:
    """The protocol figures and measured symmetry of each task over the unrotated test ``batches``."""
    metrics = [{mode: _metrics(device) for mode in POTENTIAL_PROTOCOLS} for _ in tasks]
    tallies = [_SymmetryTally() for _ in tasks]
    molecules = 0
    for batch in tqdm(batches, desc="robustness", unit="batch", leave=False):
        molecules += batch.num_graphs
        table = rotation_table(batch.index.cpu(), "so3", settings, up_axis="z").to(device=device, dtype=dtype)
        refs = []
        for task, m in zip(tasks, metrics):
            refs.append(predict(task, batch))
            _update(m["none"], refs[-1], batch)
        for r in range(settings.n_rotations):
            rotation = table[:, r]
            moved = apply_rigid_motion(batch, fields, rotation)
            for task, m, tally, ref in zip(tasks, metrics, tallies, refs):
                out = predict(task, moved)
                _update(m["so3"], out, moved)
                probe = copy.copy(batch)
                probe.forces = ref["forces"]
                expected = apply_rigid_motion(probe, fields, rotation).forces  # F(x) Rᵀ, by the declaration
                tally.add(out["energy"] - ref["energy"], out["forces"] - expected, ref["energy"], ref["forces"])
                latent = _latent_error(task.net, batch, moved, rotation)
                if latent is not None:
                    tally.latent_sum += float(latent.sum())
                    tally.latent_count += latent.numel()
    if molecules == 0:
        raise ValueError("the test split is empty: there is nothing to evaluate")
    results = []
    for m, tally in zip(metrics, tallies):
        protocols = {mode: {name: (float(metric.compute()[""]) if metric.update_called else None)
                            for name, metric in m[mode].items()} for mode in POTENTIAL_PROTOCOLS}
        protocols["so3"].update(tally.summary(dtype))
        results.append({"protocols": protocols, "num_molecules": molecules})
    return results


def nve_run(task: Any, molecule: Any, nve: NVESettings, seed: int, integrator: Integrator) -> dict[str, Any]:
    """Integrate one molecule (a ``Data`` of the data contract) with ``task``'s forces; the drift figures and the
    total energy along the run."""
    from ase.data import atomic_masses

    masses = torch.as_tensor(atomic_masses, dtype=molecule.pos.dtype)[molecule.z.cpu()].to(molecule.pos.device)
    row = int(molecule.index.reshape(-1)[0])
    g = torch.Generator().manual_seed(sample_seed(seed, row, len(PROTOCOLS)))
    velocities = maxwell_boltzmann(masses.cpu(), nve.temperature, g).to(molecule.pos)

    def force_fn(pos: Tensor) -> tuple[Tensor, Tensor]:
        moved = copy.copy(molecule)
        moved.pos = pos
        out = predict(task, moved)
        return out["energy"].reshape(()), out["forces"]

    trajectory = integrator(force_fn, molecule.pos, masses, velocities, dt_fs=nve.dt_fs, steps=nve.steps)
    return {"row": row, "num_atoms": int(molecule.pos.shape[0]), **energy_drift(trajectory, molecule.pos.shape[0]),
            "time_fs": trajectory.time_fs.tolist(), "total_energy_ev": trajectory.total.double().cpu().tolist()}


def _nve_molecules(dm: Any, count: int, device: str, dtype: torch.dtype) -> list[Any]:
    data = dm.dataset("test")
    return [_cast(data[i], device, dtype) for i in range(min(count, len(data)))]


def _guarantee(network: str | None) -> str | None:
    from pointgeo.registry import get_model_entry

    try:
        return get_model_entry(network).invariance if network else None
    except KeyError:
        return None


def potential_table_row(result: dict[str, Any]) -> dict[str, Any]:
    """One line of the comparison table: MAEs under none/so3, measured symmetry under SO(3), NVE drift."""
    p, model = result["protocols"], result["model"]
    row = {"model": model["spec"], "network": model["network"], "guarantee": result["guarantee"]}
    for mode in POTENTIAL_PROTOCOLS:
        row[f"energy_mae_{mode}_mev"] = p[mode]["energy_mae"]
        row[f"force_mae_{mode}_mev_per_a"] = p[mode]["force_mae"]
    row["energy_invariance_error_so3"] = p["so3"]["energy_invariance_error"]
    row["force_equivariance_error_so3"] = p["so3"]["force_equivariance_error"]
    if p["so3"]["latent_alignment_error"] is not None:
        row["latent_alignment_error_so3"] = p["so3"]["latent_alignment_error"]
    if result["nve"]:
        row["nve_drift_ev_per_atom_per_ps"] = max((r["drift_ev_per_atom_per_ps"] for r in result["nve"]), key=abs)
    return row


def run_potential_robustness(loaded: list[LoadedModel], dm: Any, out: Path, *, data_config: str | None,
                             settings: ProtocolSettings, dtype: torch.dtype, device: str, overwrite: bool,
                             max_samples: int | None, nve: NVESettings | None = None,
                             integrator: Integrator = velocity_verlet) -> dict[str, Any]:
    """The report of potential checkpoints ``loaded`` on the test split of ``dm`` (see the module docstring),
    written to ``out`` (``report.json`` first, then the plots and ``report.html``)."""
    from pointgeo.robustness.output import write_report
    from pointgeo.robustness.potential_output import potential_html, potential_plots

    nve = nve or NVESettings()
    if not hasattr(dm, "fields"):
        raise ValueError(f"{type(dm).__name__} declares no fields; potentials are tested on molecule datamodules")
    state = loaded[0].data_state
    if state and hasattr(dm, "load_state_dict"):
        dm.load_state_dict(state)  # the checkpoint's element references, not a refit
    dm.set_test_rotation("none")
    dm.setup("test")
    tasks = [m.task for m in loaded]
    figures = evaluate_potentials(tasks, _test_batches(dm, device, dtype, max_samples), dm.fields, settings, dtype,
                                  device)
    molecules = _nve_molecules(dm, nve.molecules, device, dtype) if nve.steps else []
    results = []
    for m, f in zip(loaded, figures):
        runs = [nve_run(m.task, mol, nve, settings.seed, integrator) for mol in molecules]
        results.append({"model": m.identity, "guarantee": _guarantee(m.identity["network"]), **f, "nve": runs})
    report = {
        "versions": {"pointgeo": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "platform": platform.platform()},
        "settings": {"n_rotations": settings.n_rotations, "seed": settings.seed,
                     "rotation_seeds": "sample_seed(seed, row index, protocol index, rotation index), protocol so3",
                     "dtype": str(dtype), "device": device, "max_samples": max_samples, "nve": asdict(nve),
                     "integrator": getattr(integrator, "__qualname__", repr(integrator))},
        "data": {"class_path": f"{type(dm).__module__}.{type(dm).__name__}", "config": data_config,
                 "test_molecules": len(dm.dataset("test")), "evaluated_molecules": figures[0]["num_molecules"]},
        "task": "potential",
        "metric": "force_mae",
        "table": [potential_table_row(r) for r in results],
        "models": results,
    }
    write_report(report, out, overwrite=overwrite, plots=potential_plots, render=potential_html)
    return report
