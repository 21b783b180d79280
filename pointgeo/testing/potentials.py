"""The harness for interatomic potentials: invariant energies, equivariant and conservative forces.

For a network ``net(batch) -> energy (B,)`` (the registry's ``potential`` kind; forces ``F = −∂E/∂r`` by
:func:`pointgeo.tasks.potential.predict_potential`, or the network's direct head) it measures, on a batch of
molecules with charge and spin:

* **symmetry**: under Haar-random rotations ``R`` (one per molecule), translations and permutations of the atoms
  within each molecule (and all three at once), the energy must not change and the forces must follow:
  ``E(g·x) = E(x)``, ``F(R x + t)_π = (F(x) Rᵀ)_π``. The error is **norm-wise relative**:

      ``err_E = max_b |E_b(g·x) − E_b(x)| / max_b |E_b(x)|``,
      ``err_F = max_{i,k} |F_ik(g·x) − (g·F(x))_ik| / max_{i,k} |F_ik(x)|``,

  bounded by ``1e-8`` in float64 and ``1e-3`` in float32 (:data:`TOLERANCES`).
* **gradient**: central finite differences of ``E`` along random directions ``u`` (all atoms of each molecule at
  once, float64, Richardson-extrapolated from steps ``h = 1e-3`` and ``h/2`` Å, error ``O(h⁴)``) against
  ``−Σ_i F_i · u_i``:
  ``err_FD = max_{b,k} |D_bk^FD − D_bk| / max_{b,k} |D_bk| ≤ 1e-6``.
* **conservation** (zero curl): the force Jacobian ``J = ∂F/∂r`` of a gradient field is symmetric, so the work
  around every small closed loop vanishes; :func:`curl_error` compares ``uᵀ J v`` with ``vᵀ J u`` by central
  differences of the forces (``≤ 1e-6`` relative). Together with the finite-difference check this tells a direct
  force head apart: the harness reports it **not conservative**. (A loop integral by quadrature would do the same
  on smooth potentials but converges only as ``1/n²`` where a pair crosses the cutoff, whose envelope is ``C¹``.)
* **non-triviality**: the forces must not vanish and the energy must change when the geometry does — a constant
  network passes every symmetry test trivially, so it is rejected here.

The adversarial molecules (:data:`ADVERSARIAL_MOLECULES`) are symmetric ones of ASE's ``g2`` collection (linear
CO2, planar benzene, tetrahedral CH4, water, ethylene) and octahedral SF6 (built here; not in ``g2``): equal or zero
principal moments, or vanishing third moments, exactly where canonical frames break. A network lists those outside its guarantee in its registry entry's ``not_guaranteed``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pointgeo.geometry import MOLECULE_FIELDS, apply_rigid_motion, random_rotations

TOLERANCES = {torch.float64: 1e-8, torch.float32: 1e-3}
"""Norm-wise relative bound on the energy-invariance and force-equivariance errors, by dtype."""
FD_TOLERANCE = 1e-6
"""Norm-wise relative bound on the finite-difference mismatch of the forces (float64)."""
CURL_TOLERANCE = 1e-6
"""Relative asymmetry of the force Jacobian (:func:`curl_error`) below which forces count as conservative."""

ADVERSARIAL_MOLECULES = ("CO2", "C6H6", "CH4", "SF6", "H2O", "C2H4")
"""Symmetric molecules: linear CO2 (λ2 = λ3 = 0), planar hexagonal benzene (λ1 = λ2), tetrahedral CH4 and
octahedral SF6 (λ1 = λ2 = λ3) — repeated principal moments; and water (C2v) and ethylene (D2h, centrosymmetric),
whose principal moments are distinct but whose third moments vanish (mirror planes), the case that defeats sign
rules."""

_SF_BOND = 1.561  # Å, S–F bond length of SF6 (octahedral)


def adversarial_molecule(name: str) -> Any:
    """The ``ase.Atoms`` of an adversarial molecule (``ase`` is imported here: the ``molecules`` extra)."""
    import ase
    from ase.build import molecule

    if name == "SF6":
        axes = [[s * (k == a) for k in range(3)] for a in range(3) for s in (1.0, -1.0)]
        return ase.Atoms("SF6", positions=[[0.0, 0.0, 0.0]] + [[_SF_BOND * x for x in ax] for ax in axes])
    if name not in ADVERSARIAL_MOLECULES:
        raise ValueError(f"unknown adversarial molecule {name!r}; expected one of {ADVERSARIAL_MOLECULES}")
    return molecule(name)


def random_molecule(num_atoms: int, generator: torch.Generator, elements: Sequence[int] = (1, 6, 7, 8)) -> Any:
    """A random chain-like molecule (``ase.Atoms``): a walk of 1.0–1.6 Å steps with no two atoms within 0.9 Å."""
    import ase

    pos = torch.zeros(num_atoms, 3, dtype=torch.float64)
    k = 1
    while k < num_atoms:  # test-data generation, not a hot path
        step = torch.nn.functional.normalize(torch.randn(3, generator=generator, dtype=torch.float64), dim=0)
        anchor = pos[int(torch.randint(k, (1,), generator=generator))]
        candidate = anchor + step * (1.0 + 0.6 * torch.rand(1, generator=generator, dtype=torch.float64))
        if (pos[:k] - candidate).norm(dim=-1).min() > 0.9:
            pos[k] = candidate
            k += 1
    z = torch.tensor(elements)[torch.randint(len(elements), (num_atoms,), generator=generator)]
    return ase.Atoms(numbers=z.numpy(), positions=pos.numpy())


def molecule_batch(structures: Sequence[Any], charges: Sequence[int], spins: Sequence[int],
                   dtype: torch.dtype = torch.float64) -> Any:
    """A ``torch_geometric`` ``Batch`` of ``ase.Atoms`` with the data contract's ``pos``, ``z``, ``charge``, ``spin``."""
    from torch_geometric.data import Batch, Data

    data = [Data(pos=torch.tensor(a.positions, dtype=dtype), z=torch.tensor(a.numbers, dtype=torch.long),
                 charge=torch.tensor([q], dtype=torch.long), spin=torch.tensor([s], dtype=torch.long))
            for a, q, s in zip(structures, charges, spins, strict=True)]
    return Batch.from_data_list(data)


def potential_test_batch(kind: str, dtype: torch.dtype = torch.float64, seed: int = 0,
               exclude: Sequence[str] = ()) -> Any:
    """``kind="random"``: 4 random molecules of 5–23 atoms; ``"adversarial"``: the adversarial molecules not in
    ``exclude``. Each gets a random charge in −2..2 and a multiplicity of matching parity (1–4)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        structures = [random_molecule(n, g) for n in (5, 9, 14, 23)]
    elif kind == "adversarial":
        structures = [adversarial_molecule(n) for n in ADVERSARIAL_MOLECULES if n not in exclude]
    else:
        raise ValueError(f"kind must be 'random' or 'adversarial'; got {kind!r}")
    charges, spins = [], []
    for atoms in structures:
        q = int(torch.randint(-2, 3, (1,), generator=g))
        electrons = int(atoms.numbers.sum()) - q
        spins.append(1 + (electrons % 2) + 2 * int(torch.randint(0, 2, (1,), generator=g)))
        charges.append(q)
    return molecule_batch(structures, charges, spins, dtype)


def _with_pos(batch: Any, pos: Tensor) -> Any:
    out = batch.clone()
    out.pos = pos
    return out


def _with_forces(batch: Any, forces: Tensor) -> Any:
    out = copy.copy(batch)
    out.forces = forces
    return out


def permutation_within_molecules(batch: Any, generator: torch.Generator) -> Tensor:
    """``(N,)`` a random permutation of the atoms that keeps each molecule's atoms in its own slots."""
    key = batch.batch.double() + torch.rand(batch.num_nodes, generator=generator, dtype=torch.float64) * 0.5
    return torch.argsort(key)


def _permuted(batch: Any, perm: Tensor) -> Any:
    out = batch.clone()
    for key in ("pos", "z", "forces"):
        if getattr(batch, key, None) is not None:
            setattr(out, key, getattr(batch, key)[perm])
    return out


def _rel(diff: Tensor, ref: Tensor) -> float:
    scale, worst = ref.abs().max(), diff.abs().max()
    if scale > 0:
        return float(worst / scale)
    return 0.0 if worst == 0 else math.inf


@dataclass
class PotentialReport:
    """Measured errors of a potential on one batch (see the module docstring for the definitions)."""

    dtype: torch.dtype
    energy: dict[str, float] = field(default_factory=dict)
    """Energy-invariance error per transformation (``rotation``, ``translation``, ``permutation``, ``all``)."""
    forces: dict[str, float] = field(default_factory=dict)
    """Force-equivariance error per transformation."""
    force_scale: float = 0.0
    """``max |F|`` of the unmoved batch (eV/Å); zero forces are a failure (a constant network)."""
    energy_sensitivity: float = 0.0
    """``max_b |E_b(x + δ) − E_b(x)|`` for a 0.05 Å random distortion ``δ``: zero for a constant network."""

    @property
    def tolerance(self) -> float:
        return TOLERANCES.get(self.dtype, 1e-3)

    def failures(self) -> list[str]:
        """Human-readable reasons the report is outside the bounds (empty when within)."""
        out = []
        if self.force_scale == 0.0 or self.energy_sensitivity == 0.0:
            out.append(f"trivial: max |F| = {self.force_scale:.3g}, energy change under a distortion = "
                       f"{self.energy_sensitivity:.3g} (a constant network passes every symmetry test trivially)")
        out += [f"energy not invariant under {k}: relative error {v:.3g} > {self.tolerance:g}"
                for k, v in self.energy.items() if not v <= self.tolerance]
        out += [f"forces not equivariant under {k}: relative error {v:.3g} > {self.tolerance:g}"
                for k, v in self.forces.items() if not v <= self.tolerance]
        return out

    def within(self) -> bool:
        return not self.failures()

    def __str__(self) -> str:
        parts = [f"{k}: E {self.energy[k]:.2e} F {self.forces[k]:.2e}" for k in self.energy]
        return f"{str(self.dtype)[6:]} (tol {self.tolerance:g}) " + ", ".join(parts)


Predictor = Callable[[Any], tuple[Tensor, Tensor]]


def _predictor(net: torch.nn.Module) -> Predictor:

    def run(batch: Any) -> tuple[Tensor, Tensor]:
        from pointgeo.tasks.potential import predict_potential  # Lightning: imported only when measured

        out = predict_potential(net, batch)
        return out["energy"].detach(), out["forces"].detach()

    return run


def measure_potential(net: torch.nn.Module, batch: Any, seed: int = 0) -> PotentialReport:
    """Energy-invariance and force-equivariance errors of ``net`` (in ``batch.pos``'s dtype) on ``batch``."""
    run = _predictor(net)
    g = torch.Generator().manual_seed(seed)
    dtype = batch.pos.dtype
    e0, f0 = run(batch)
    rot = random_rotations(batch.num_graphs, generator=g, dtype=torch.float64).to(dtype)  # Haar, one per molecule
    shift = (torch.randn(batch.num_graphs, 3, generator=g, dtype=torch.float64) * 5.0).to(dtype)
    perm = permutation_within_molecules(batch, g)
    identity = torch.eye(3, dtype=dtype).expand(batch.num_graphs, 3, 3)
    report = PotentialReport(dtype, force_scale=float(f0.abs().max()))
    probe = _with_forces(batch, f0)
    rotated_forces = apply_rigid_motion(probe, MOLECULE_FIELDS, rot).forces  # F(x) Rᵀ, by the declaration
    cases = {
        "rotation": (apply_rigid_motion(probe, MOLECULE_FIELDS, rot), rotated_forces),
        "translation": (apply_rigid_motion(probe, MOLECULE_FIELDS, identity, shift), f0),
        "permutation": (_permuted(batch, perm), f0[perm]),
        "all": (_permuted(apply_rigid_motion(probe, MOLECULE_FIELDS, rot, shift), perm), rotated_forces[perm]),
    }
    for name, (moved, expected) in cases.items():
        e, f = run(moved)
        report.energy[name] = _rel(e - e0, e0)
        report.forces[name] = _rel(f - expected, f0)
    delta = (torch.randn(batch.pos.shape, generator=g, dtype=torch.float64) * 0.05).to(dtype)
    e_moved, _ = run(_with_pos(batch, batch.pos + delta))
    report.energy_sensitivity = float((e_moved - e0).abs().max())
    return report


def assert_potential_symmetric(net: torch.nn.Module, batch: Any, seed: int = 0) -> PotentialReport:
    """``AssertionError`` listing what failed unless ``net`` is within :data:`TOLERANCES` on ``batch``."""
    report = measure_potential(net, batch, seed)
    if not report.within():
        raise AssertionError(f"{type(net).__name__}: " + "; ".join(report.failures()) + f" [{report}]")
    return report


def _central_difference(fn: Callable[[float], Tensor], step: float) -> Tensor:
    """``d fn / dh`` at 0 by central differences Richardson-extrapolated from ``step`` and ``step / 2``
    (``(4 D(h/2) − D(h)) / 3``, truncation error ``O(h⁴)``)."""
    coarse = (fn(step) - fn(-step)) / (2 * step)
    fine = (fn(step / 2) - fn(-step / 2)) / step
    return (4 * fine - coarse) / 3


def finite_difference_error(net: torch.nn.Module, batch: Any, num_directions: int = 2, step: float = 1e-3,
                            seed: int = 0) -> float:
    """``err_FD``: finite differences of ``E`` along random unit directions against ``−Σ F·u`` (float64)."""
    if batch.pos.dtype != torch.float64:
        raise ValueError("the finite-difference check needs a float64 batch (float32 differences are rounding noise)")
    run = _predictor(net)
    g = torch.Generator().manual_seed(seed)
    _, f0 = run(batch)
    fd, analytic = [], []
    for _ in range(num_directions):  # a few directions; each perturbs every molecule at once
        u = torch.randn(batch.pos.shape, generator=g, dtype=torch.float64)
        norms = torch.zeros(batch.num_graphs, dtype=torch.float64).index_add(0, batch.batch, u.pow(2).sum(-1)).sqrt()
        u = u / norms[batch.batch, None]
        fd.append(_central_difference(lambda h: run(_with_pos(batch, batch.pos + h * u))[0], step))
        analytic.append(-torch.zeros(batch.num_graphs, dtype=torch.float64).index_add(0, batch.batch,
                                                                                      (f0 * u).sum(-1)))
    fd_t, an_t = torch.stack(fd), torch.stack(analytic)
    return _rel(fd_t - an_t, an_t)


def curl_error(net: torch.nn.Module, batch: Any, step: float = 1e-3, seed: int = 0) -> float:
    """The asymmetry of the force Jacobian ``J = ∂F/∂r`` along two random directions ``u, v`` (float64):

    ``max_b |uᵀ J v − vᵀ J u| / max_b (|uᵀ J v| + |vᵀ J u|)``, each product by Richardson-extrapolated central
    differences of the forces.
    A gradient field has ``J = −∇²E`` symmetric (zero curl: no work around any small closed loop), so the value is
    finite-difference noise (``~1e-9``); a direct force head has no reason to be symmetric.
    """
    if batch.pos.dtype != torch.float64:
        raise ValueError("the curl check needs a float64 batch (float32 differences are rounding noise)")
    run = _predictor(net)
    g = torch.Generator().manual_seed(seed)
    u, v = (torch.randn(batch.pos.shape, generator=g, dtype=torch.float64) for _ in range(2))

    def directional(w: Tensor) -> Tensor:  # (N, 3): J w
        return _central_difference(lambda h: run(_with_pos(batch, batch.pos + h * w))[1], step)

    def dot(a: Tensor, b: Tensor) -> Tensor:  # (B,) per-molecule inner products
        return torch.zeros(batch.num_graphs, dtype=torch.float64).index_add(0, batch.batch, (a * b).sum(-1))

    ujv, vju = dot(u, directional(v)), dot(v, directional(u))
    return _rel(ujv - vju, ujv.abs() + vju.abs())  # a zero Jacobian (a linear potential) is symmetric: 0


@dataclass
class ConservationReport:
    """Whether the forces are the gradient of the energy: finite differences and the curl of the forces."""

    fd_error: float
    curl: float

    @property
    def conservative(self) -> bool:
        return self.fd_error <= FD_TOLERANCE and self.curl <= CURL_TOLERANCE

    def __str__(self) -> str:
        verdict = "conservative" if self.conservative else "NOT conservative"
        return f"{verdict}: finite-difference error {self.fd_error:.2e}, curl {self.curl:.2e}"


def measure_conservation(net: torch.nn.Module, batch: Any, seed: int = 0) -> ConservationReport:
    """Finite-difference error and curl of ``net``'s forces on a float64 ``batch``."""
    return ConservationReport(finite_difference_error(net, batch, seed=seed), curl_error(net, batch, seed=seed))


def assert_conservative(net: torch.nn.Module, batch: Any, seed: int = 0) -> ConservationReport:
    """``AssertionError`` saying "not conservative" unless the forces are the energy's gradient."""
    report = measure_conservation(net, batch, seed)
    if not report.conservative:
        raise AssertionError(f"{type(net).__name__} forces are not conservative: {report}")
    return report


def learned_equivariance_error(net: torch.nn.Module, batch: Any, num_rotations: int = 8, seed: int = 0) -> dict[str, float]:
    """How far a network with a contrastive latent (``transip``: ``latent``, ``transform``) is from equivariance,
    under ``K`` seeded Haar rotations, each molecule rotated by its own ``R_k`` (float64 advised):

    * ``energy`` ``ε_E = mean_k mean_b |E_b(R_k x) − E_b(x)|`` (eV), and ``energy_per_atom`` (eV/atom);
    * ``forces`` ``ε_F = mean_k mean_i ‖F_i(R_k x) − R_k F_i(x)‖`` (eV/Å), and ``forces_relative`` (÷ mean ‖F‖);
    * ``latent`` ``ε_h = mean_k mean_b [1 − cos(T(u, R_k), u(R_k x))]``.
    """
    from pointgeo.tasks.potential import predict_potential

    g = torch.Generator().manual_seed(seed)
    natoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(batch.pos.dtype)
    ref = predict_potential(net, batch)
    e0, f0 = ref["energy"].detach(), ref["forces"].detach()
    with torch.no_grad():
        u0 = net.latent(batch)
    sums = dict.fromkeys(("energy", "energy_per_atom", "forces", "latent"), 0.0)
    for _ in range(num_rotations):
        rot = random_rotations(batch.num_graphs, generator=g, dtype=torch.float64).to(batch.pos.dtype)
        moved = apply_rigid_motion(batch, MOLECULE_FIELDS, rot)
        out = predict_potential(net, moved)
        de = (out["energy"].detach() - e0).abs()
        expected = apply_rigid_motion(_with_forces(batch, f0), MOLECULE_FIELDS, rot).forces  # F(x) Rᵀ
        sums["energy"] += float(de.mean())
        sums["energy_per_atom"] += float((de / natoms).mean())
        sums["forces"] += float((out["forces"].detach() - expected).norm(dim=-1).mean())
        with torch.no_grad():
            sim = torch.nn.functional.cosine_similarity(net.transform(u0, rot), net.latent(moved), dim=-1)
        sums["latent"] += float((1 - sim).mean())
    out = {k: v / num_rotations for k, v in sums.items()}
    out["forces_relative"] = out["forces"] / max(float(f0.norm(dim=-1).mean()), torch.finfo(torch.float64).tiny)
    return out
