"""Short NVE molecular dynamics in torch, to measure how well a potential conserves energy.

:func:`velocity_verlet` integrates Newton's equations with the velocity Verlet scheme (Swope et al. 1982):

    ``v(t + ½Δt) = v(t) + ½Δt F(t) / m``,
    ``x(t + Δt) = x(t) + Δt v(t + ½Δt)``,
    ``v(t + Δt) = v(t + ½Δt) + ½Δt F(t + Δt) / m``,

which is symplectic and time-reversible: with conservative forces ``F = −∂E/∂x`` the total energy
``E_pot + ½ Σ m v²`` fluctuates by ``O(Δt²)`` around a constant and does not drift; forces that are not the gradient
of the energy (a direct force head) make it drift. :func:`energy_drift` summarises a trajectory.

Units are ASE's: positions Å, energies eV, masses amu, so time is in ``Å √(amu / eV)`` (≈ 10.18 fs); the
functions take femtoseconds and convert. Initial velocities come from :func:`maxwell_boltzmann` (seeded, zero total
momentum). ``force_fn(pos (N, 3)) -> (energy (), forces (N, 3))`` is any potential; a calculator-driven run (ASE's
``VelocityVerlet``) can stand in for :func:`velocity_verlet` wherever an ``Integrator`` is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

KB_EV = 8.617333262e-5
"""Boltzmann constant, eV/K."""
FS = 1e-15 / math.sqrt(1.66053906660e-27 * 1e-20 / 1.602176634e-19)
"""One femtosecond in the unit of time of (Å, eV, amu): ``1e-15 s / √(amu Å² / eV)`` (ASE's ``units.fs``)."""

ForceFn = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class Trajectory:
    """Energies along an NVE run: ``time_fs (T+1,)``, ``potential``, ``kinetic``, ``total (T+1,)`` in eV, and the
    final positions ``(N, 3)``."""

    time_fs: Tensor
    potential: Tensor
    kinetic: Tensor
    total: Tensor
    positions: Tensor


Integrator = Callable[..., Trajectory]
"""``integrator(force_fn, pos, masses, velocities, dt_fs=, steps=) -> Trajectory``."""


def maxwell_boltzmann(masses: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Velocities ``(N, 3)`` (Å per ASE time unit) drawn at ``temperature`` K for atoms of ``masses (N,)`` amu,
    with the centre-of-mass velocity removed."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 K; got {temperature}")
    sigma = torch.sqrt(KB_EV * temperature / masses)[:, None]
    v = torch.randn(masses.shape[0], 3, generator=generator, dtype=masses.dtype) * sigma
    return v - (masses[:, None] * v).sum(0) / masses.sum()


def kinetic_energy(masses: Tensor, velocities: Tensor) -> Tensor:
    """``½ Σ_i m_i ‖v_i‖²`` in eV."""
    return 0.5 * (masses[:, None] * velocities.pow(2)).sum()


def velocity_verlet(force_fn: ForceFn, pos: Tensor, masses: Tensor, velocities: Tensor, *, dt_fs: float = 0.5,
                    steps: int = 200) -> Trajectory:
    """Integrate ``steps`` velocity-Verlet steps of ``dt_fs`` femtoseconds from ``pos (N, 3)`` and
    ``velocities (N, 3)`` (masses ``(N,)`` amu); one force evaluation per step.

    Raises:
        ValueError: non-positive ``dt_fs``/``steps``, mismatched shapes, or a non-finite energy during the run
            (the step is named).
    """
    if dt_fs <= 0 or steps < 1:
        raise ValueError(f"dt_fs and steps must be positive; got {dt_fs}, {steps}")
    if pos.shape != velocities.shape or pos.dim() != 2 or pos.shape[-1] != 3 or masses.shape != pos.shape[:1]:
        raise ValueError(f"pos and velocities must be (N, 3) and masses (N,); got {tuple(pos.shape)}, "
                         f"{tuple(velocities.shape)}, {tuple(masses.shape)}")
    dt = dt_fs * FS
    inv_m = (1.0 / masses)[:, None]
    x, v = pos.detach().clone(), velocities.detach().clone()
    energy, forces = force_fn(x)
    potential, kinetic = [energy.detach()], [kinetic_energy(masses, v)]
    for step in range(steps):
        v = v + 0.5 * dt * forces * inv_m
        x = x + dt * v
        energy, forces = force_fn(x)
        v = v + 0.5 * dt * forces * inv_m
        if not bool(torch.isfinite(energy)):
            raise ValueError(f"the NVE run left finite energies at step {step + 1} (dt = {dt_fs} fs)")
        potential.append(energy.detach())
        kinetic.append(kinetic_energy(masses, v))
    pot, kin = torch.stack(potential), torch.stack(kinetic)
    time = torch.arange(steps + 1, dtype=torch.float64) * dt_fs
    return Trajectory(time, pot, kin, pot + kin, x)


def energy_drift(trajectory: Trajectory, num_atoms: int) -> dict[str, float]:
    """Drift and fluctuation of the total energy of a run:

    * ``drift_ev_per_atom_per_ps``: the least-squares slope of ``E_tot(t)`` divided by the number of atoms;
    * ``max_deviation_ev_per_atom``: ``max_t |E_tot(t) − E_tot(0)| / N``;
    * ``duration_fs`` and the potential energy's range (``potential_range_ev``, how far the molecule moved).
    """
    t = trajectory.time_fs.double() / 1000.0  # ps
    e = trajectory.total.double().cpu()
    tc = t - t.mean()
    slope = float((tc * (e - e.mean())).sum() / tc.pow(2).sum())
    return {"drift_ev_per_atom_per_ps": slope / num_atoms,
            "max_deviation_ev_per_atom": float((e - e[0]).abs().max()) / num_atoms,
            "duration_fs": float(trajectory.time_fs[-1]),
            "potential_range_ev": float(trajectory.potential.max() - trajectory.potential.min())}
