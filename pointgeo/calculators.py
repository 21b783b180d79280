"""An ASE calculator for pointgeo potentials: ``atoms.calc = PointGeoCalculator("painn-xtb")``.

Relaxations (``ase.optimize``) and molecular dynamics (``ase.md``) then run as with MACE's or fairchem's
calculators. Energies are in eV, forces in eV/Å, stress (periodic structures) in eV/Å³ in ASE's Voigt order
``(xx, yy, zz, yz, xz, xy)``. Forces are ``−∂E/∂r`` (or the network's direct head if it has one — not conservative,
so MD with it does not conserve energy). The total charge and spin multiplicity ``2S + 1`` are read from
``atoms.info["charge"]`` and ``atoms.info["spin"]`` (OMol25's keys), falling back to the calculator's ``charge``
and ``spin`` arguments. The energy is a total: the network learns it relative to per-element reference energies
fitted on its training data, and the calculator adds back the references a potential task's checkpoint carries
(:meth:`~pointgeo.tasks.potential.PotentialTask.total_energy`). A bare network has no references: its energy is the
one it learned (forces and dynamics are the same either way).

Importing this module imports ASE (the ``molecules`` extra); ``import pointgeo`` does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from pointgeo.tasks.potential import predict_potential


def atoms_to_batch(atoms: Any, charge: int, spin: int, dtype: torch.dtype, device: torch.device | str) -> Any:
    """One ``ase.Atoms`` as a ``torch_geometric`` batch of the molecule data contract."""
    from torch_geometric.data import Batch, Data

    fields = {
        "pos": torch.tensor(atoms.positions, dtype=dtype, device=device),
        "z": torch.tensor(atoms.numbers, dtype=torch.long, device=device),
        "charge": torch.tensor([int(atoms.info.get("charge", charge))], dtype=torch.long, device=device),
        "spin": torch.tensor([int(atoms.info.get("spin", spin))], dtype=torch.long, device=device),
    }
    if atoms.pbc.any():
        fields["cell"] = torch.tensor(atoms.cell.array, dtype=dtype, device=device).unsqueeze(0)
        fields["pbc"] = torch.tensor(atoms.pbc, device=device).unsqueeze(0)
    return Batch.from_data_list([Data(**fields)])


class PointGeoCalculator(Calculator):
    """ASE calculator around a pointgeo potential.

    Args:
        model: a pretrained name or checkpoint path (loaded by :func:`pointgeo.hub.from_pretrained`), a
            :class:`~pointgeo.tasks.potential.PotentialTask` or a ``potential`` network.
        device: where the network runs.
        dtype: the network's precision (default: that of its parameters; float64 makes MD energies tighter).
        charge, spin: used when ``atoms.info`` has no ``"charge"`` / ``"spin"``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: str | Path | torch.nn.Module, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, charge: int = 0, spin: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, Path)):
            from pointgeo.hub import from_pretrained

            model = from_pretrained(str(model), progress=False)
        net = getattr(model, "net", model)
        self.task = model if hasattr(model, "total_energy") else None
        """The potential task whose per-element references turn the network's energy into a total (``None``)."""
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"model must be a pretrained name, a checkpoint path or a potential network; got "
                            f"{type(model).__name__}")
        self.net = net.to(device).eval()
        if dtype is not None:
            self.net = self.net.to(dtype)
        self.dtype = dtype or next(self.net.parameters()).dtype
        self.device = torch.device(device)
        self.default_charge, self.default_spin = charge, spin

    def check_state(self, atoms: Any, tol: float = 1e-15) -> list[str]:
        """ASE's changes, plus ``"info"`` when ``atoms.info``'s charge or spin changed (they change the energy)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and any(self.atoms.info.get(k) != atoms.info.get(k) for k in ("charge", "spin")):
            changes.append("info")
        return changes

    def calculate(self, atoms: Any = None, properties: Any = ("energy",), system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        batch = atoms_to_batch(self.atoms, self.default_charge, self.default_spin, self.dtype, self.device)
        periodic = bool(self.atoms.pbc.any())
        out = predict_potential(self.net, batch, stress=periodic and "stress" in properties)
        energy = out["energy"].detach()
        if self.task is not None:
            energy = self.task.total_energy(energy, batch.z)
        energy = float(energy[0])
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].detach().cpu().double().numpy()
        if "stress" in out:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].detach().cpu().double().numpy())
        elif "stress" in properties:
            raise ValueError("stress needs a periodic structure (atoms.pbc true in some direction, with a cell)")


def energy_drift(energies: np.ndarray, times_fs: np.ndarray, num_atoms: int) -> float:
    """The slope of a least-squares line through total energies ``(T,)`` (eV) against time (fs), in
    eV / atom / ps: the energy drift of an NVE run."""
    slope = np.polyfit(np.asarray(times_fs) / 1000.0, np.asarray(energies), 1)[0]
    return float(slope / num_atoms)
