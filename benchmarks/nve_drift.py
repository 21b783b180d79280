"""Energy drift of short NVE runs driven by ASE through :class:`pointgeo.calculators.PointGeoCalculator`.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/nve_drift.py CKPT_OR_NAME [...] [--data DIR] [--molecules 3] [--steps 400]
        [--dt 0.25] [--temperature 300]

Each model (a pretrained name or checkpoint path) becomes an ASE calculator (float64); ``--molecules`` validation
molecules of its own datamodule (rebuilt from the checkpoint's stored settings; ``--data`` replaces the path, e.g.
for a generated xTB set made elsewhere) get seeded Maxwell–Boltzmann velocities at ``--temperature`` K (zero total
momentum) and are integrated with ASE's ``VelocityVerlet`` for ``--steps`` steps of ``--dt`` fs. The drift is the
least-squares slope of the total energy in eV/atom/ps (:func:`pointgeo.calculators.energy_drift`), and the largest
deviation of the total energy from its start. Conservative models (forces ``−∂E/∂x``) should show a drift near the
integrator's own; a direct force head is not the gradient of an energy and drifts. Not a test: one seeded run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402,F401  (first: pointgeo's CPU memory settings before torch starts)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pointgeo.calculators import PointGeoCalculator, energy_drift  # noqa: E402
from pointgeo.datamodules.settings import build_datamodule, public_settings  # noqa: E402
from pointgeo.hub import fetch  # noqa: E402


def validation_atoms(model: str, data: str | None, count: int) -> list:
    """The first ``count`` validation molecules of the model's datamodule, as ``ase.Atoms`` with charge and spin."""
    from ase import Atoms

    settings = torch.load(fetch(model), weights_only=True)["datamodule_hyper_parameters"]
    init = public_settings(settings)
    if data is not None:
        init["path"] = data
    dm = build_datamodule({}, {"class_path": settings["_class_path"], "init_args": init})
    dm.setup("fit")
    dataset = dm.dataset("val")
    out = []
    for i in range(min(count, len(dataset))):
        d = dataset[i]
        atoms = Atoms(numbers=d.z.numpy(), positions=d.pos.double().numpy())
        atoms.info.update(charge=int(d.charge), spin=int(d.spin))
        out.append(atoms)
    return out


def nve(model: str, atoms, steps: int, dt_fs: float, temperature: float, seed: int) -> dict[str, float]:
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = PointGeoCalculator(model, dtype=torch.float64)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    energies, times = [], []
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)

    def record() -> None:
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        times.append(len(times) * dt_fs)

    dyn.attach(record, interval=1)
    record()
    dyn.run(steps)
    e = np.asarray(energies)
    return {"atoms": len(atoms), "drift": energy_drift(e, np.asarray(times), len(atoms)),
            "max_dev": float(np.abs(e - e[0]).max()) / len(atoms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="pretrained names or potential checkpoint paths")
    parser.add_argument("--data", help="replace the datamodule's path (where the validation molecules are read)")
    parser.add_argument("--molecules", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--dt", type=float, default=0.25, help="time step in fs")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"NVE through ASE's VelocityVerlet: {args.steps} steps of {args.dt} fs ({args.steps * args.dt:.0f} fs) "
          f"from {args.temperature:.0f} K, float64; per molecule: atoms, drift (eV/atom/ps), max |E_tot - E_tot(0)| "
          f"(eV/atom)")
    for model in args.models:
        molecules = validation_atoms(model, args.data, args.molecules)
        results = [nve(model, a, args.steps, args.dt, args.temperature, args.seed + k) for k, a in enumerate(molecules)]
        cells = "  ".join(f"{r['atoms']:2d} at. {r['drift']:+.2e} {r['max_dev']:.1e}" for r in results)
        worst = max((r["drift"] for r in results), key=abs)
        print(f"{model}\n    {cells}\n    largest |drift| {abs(worst):.2e} eV/atom/ps")


if __name__ == "__main__":
    main()
