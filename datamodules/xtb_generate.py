"""An OMol25-like set on a CPU: ASE's ``g2`` molecules, perturbed, short-MD and dimer conformers, charge and spin
variants, labelled by GFN2-xTB (``tblite``) and written as ``.aselmdb`` shards in OMol25's conventions.

Each structure is drawn (seeded by ``seed``) as

* a g2 molecule (162 molecules, 1-14 atoms, H..Cl) with every atom displaced by ``N(0, displacement²)`` Å
  (``data_id = "g2_perturbed"``);
* with probability ``md_fraction``, the last frame of a short Langevin run (``md_steps`` steps of 0.5 fs at
  ``temperature`` K, forces from the same GFN2-xTB calculator) from such a start (``data_id = "g2_md"``);
* with probability ``dimer_fraction``, two perturbed g2 molecules, randomly rotated, 2.5-4 Å apart between their
  closest atoms (``data_id = "g2_dimer"``),

with a total charge from ``charges`` (seeded) and the lowest spin multiplicity of its electron count, raised to the
next one (triplet, quartet) with probability ``high_spin_fraction``. Structures whose atoms come closer than 0.6 Å
are redrawn; structures where the xTB self-consistent field does not converge are skipped and counted.

Rows are written as OMol25's are: a single-point calculator holding the total ``energy`` (eV) and ``forces``
(eV/Å), ``pbc`` false, and ``data = {"charge", "spin" (2S+1), "data_id", "source", "method"}``. Shards
(``data0000.aselmdb`` ...) and a ``metadata.npz`` (``natoms``, ``data_ids``) are written into a staging folder
beside ``out`` and moved into place with ``os.replace``, so ``out`` is either absent or complete.

Command line: ``python -m pointgeo.datamodules.xtb_generate --out DIR --num N [--seed S]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pointgeo.datamodules.ase_readers import write_aselmdb
from pointgeo.datamodules.readers import DatasetFileError

MIN_GENERATED_DISTANCE = 0.6
"""Å; closer atoms in a drawn geometry are redrawn (no physical molecule has them)."""


@dataclass
class GenerationReport:
    """What :func:`generate_xtb_set` wrote: ``written`` structures in ``shards`` under ``out``, ``skipped`` ones
    whose SCF did not converge, ``redrawn`` geometries with overlapping atoms, counts per ``data_id``."""

    out: Path
    written: int = 0
    skipped: int = 0
    redrawn: int = 0
    shards: list[str] = field(default_factory=list)
    per_data_id: dict[str, int] = field(default_factory=dict)


def _multiplicity(numbers: np.ndarray, charge: int, rng: np.random.Generator, high_spin_fraction: float) -> int:
    electrons = int(numbers.sum()) - charge
    low = 1 if electrons % 2 == 0 else 2
    return low + 2 if electrons >= 2 and rng.random() < high_spin_fraction else low


def _too_close(positions: np.ndarray) -> bool:
    from scipy.spatial import cKDTree  # noqa: PLC0415

    return len(positions) > 1 and len(cKDTree(positions).query_pairs(MIN_GENERATED_DISTANCE)) > 0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _draw(names: Sequence[str], rng: np.random.Generator, displacement: float, dimer_fraction: float):
    """One perturbed g2 molecule or dimer (``ase.Atoms``), its data_id and its source name."""
    from ase.collections import g2  # noqa: PLC0415

    def perturbed(name: str):
        atoms = g2[name].copy()
        atoms.positions = atoms.positions + rng.normal(0.0, displacement, atoms.positions.shape)
        return atoms

    first = str(names[rng.integers(len(names))])
    atoms = perturbed(first)
    if rng.random() >= dimer_fraction:
        return atoms, "g2_perturbed", first
    second_name = str(names[rng.integers(len(names))])
    second = perturbed(second_name)
    second.positions = (second.positions - second.positions.mean(0)) @ _random_rotation(rng).T
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    # slide the second molecule along `direction` until its closest atom is `gap` Å from the first molecule
    gap = rng.uniform(2.5, 4.0)
    start = atoms.positions.mean(0)
    shift = 0.0
    for _ in range(200):
        moved = second.positions + start + shift * direction
        closest = np.min(np.linalg.norm(moved[:, None, :] - atoms.positions[None, :, :], axis=-1))
        if closest >= gap:
            break
        shift += 0.25
    second.positions = second.positions + start + shift * direction
    return atoms + second, "g2_dimer", f"{first}+{second_name}"


def _md_frame(atoms, steps: int, temperature: float, rng: np.random.Generator) -> None:
    from ase import units  # noqa: PLC0415
    from ase.md import velocitydistribution  # noqa: PLC0415
    from ase.md.langevin import Langevin  # noqa: PLC0415

    # thermalize_momenta is the name since ASE 3.29, MaxwellBoltzmannDistribution before
    thermalize = getattr(velocitydistribution, "thermalize_momenta", velocitydistribution.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=temperature, rng=rng)
    Langevin(atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng).run(steps)


def generate_xtb_set(
    out: str | os.PathLike,
    num: int,
    *,
    seed: int = 0,
    molecules: Sequence[str] | None = None,
    charges: Sequence[int] = (0, 0, 0, 1, -1),
    high_spin_fraction: float = 0.15,
    displacement: float = 0.05,
    md_fraction: float = 0.2,
    md_steps: int = 10,
    temperature: float = 500.0,
    dimer_fraction: float = 0.2,
    shard_size: int = 1000,
    max_iterations: int = 250,
    threads: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> GenerationReport:
    """Generate ``num`` labelled structures into the folder ``out`` (see the module docstring).

    Args:
        out: the split folder to create (must not exist unless ``overwrite``).
        num: structures to write (skipped ones are replaced by new draws; at most ``3 num`` draws are made).
        seed: seed of every random choice: the same seed gives the same molecules, displacements, charges and
            spins; labels (and MD frames, which follow the forces) agree to tblite's SCF tolerance (~1e-6 eV/Å).
        molecules: g2 names to draw from (default: all 162).
        charges: total charges drawn uniformly (repeat a value to weight it).
        high_spin_fraction: probability of the next-higher multiplicity.
        displacement: standard deviation of the atomic displacements (Å).
        md_fraction: probability that a monomer is the last frame of a short Langevin run.
        md_steps, temperature: length (0.5 fs steps) and temperature (K) of those runs.
        dimer_fraction: probability of a dimer of two g2 molecules.
        shard_size: rows per ``.aselmdb`` shard.
        max_iterations: SCF iteration limit of tblite; structures that do not converge are skipped.
        threads: OpenMP threads while labelling. tblite shares torch's OpenMP runtime; with torch's default pool
            a 6-atom molecule took 0.3-0.9 s instead of 0.02 s (measured on 2 busy cores), so the pool is set to
            ``threads`` for the run and restored afterwards. For many small molecules run several processes
            with different seeds rather than more threads.
        overwrite: replace an existing ``out``.
        progress: show a progress bar.

    Raises:
        ValueError: bad arguments, or ``out`` exists (without ``overwrite``).
        RuntimeError: fewer than ``num`` structures converged within ``3 num`` draws.
    """
    from ase.collections import g2  # noqa: PLC0415

    out = Path(out).expanduser()
    names = list(molecules) if molecules is not None else list(g2.names)
    unknown = sorted(set(names) - set(g2.names))
    if unknown:
        raise ValueError(f"molecules {unknown} are not in ase.collections.g2")
    if num < 1 or shard_size < 1:
        raise ValueError(f"num and shard_size must be >= 1; got {num}, {shard_size}")
    for key, value in (("high_spin_fraction", high_spin_fraction), ("md_fraction", md_fraction),
                       ("dimer_fraction", dimer_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{key} must be in [0, 1]; got {value}")
    if not charges:
        raise ValueError("charges must name at least one total charge")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise DatasetFileError(f"cannot write into {out.parent} (read-only)")

    import torch  # noqa: PLC0415  (only to size the OpenMP pool tblite shares with it)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows, report = _label(names, num, out, seed=seed, charges=charges, high_spin_fraction=high_spin_fraction,
                              displacement=displacement, md_fraction=md_fraction, md_steps=md_steps,
                              temperature=temperature, dimer_fraction=dimer_fraction,
                              max_iterations=max_iterations, progress=progress)
    finally:
        torch.set_num_threads(previous_threads)
    _write_split(out, rows, shard_size, report)
    return report


def _label(names: list[str], num: int, out: Path, *, seed: int, charges: Sequence[int], high_spin_fraction: float,
           displacement: float, md_fraction: float, md_steps: int, temperature: float, dimer_fraction: float,
           max_iterations: int, progress: bool) -> tuple[list[tuple], GenerationReport]:
    """Draw and label structures until ``num`` converged: ``(atoms, energy, forces, data)`` rows."""
    from ase.calculators.calculator import CalculationFailed  # noqa: PLC0415
    from tblite.ase import TBLite  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    report = GenerationReport(out=out)
    rows: list[tuple] = []
    draws = 0
    bar = tqdm(total=num, desc=f"GFN2-xTB labels -> {out.name}", disable=not progress)
    while len(rows) < num:
        if draws >= 3 * num:
            bar.close()
            raise RuntimeError(f"only {len(rows)} of {num} structures converged in {draws} draws "
                               f"({report.skipped} SCF failures); try a smaller displacement or temperature")
        draws += 1
        atoms, data_id, source = _draw(names, rng, displacement, dimer_fraction)
        if _too_close(atoms.positions):
            report.redrawn += 1
            continue
        charge = int(charges[rng.integers(len(charges))])
        spin = _multiplicity(atoms.numbers, charge, rng, high_spin_fraction)
        atoms.calc = TBLite(method="GFN2-xTB", charge=charge, multiplicity=spin, verbosity=0,
                            max_iterations=max_iterations)
        try:
            if data_id == "g2_perturbed" and rng.random() < md_fraction:
                data_id = "g2_md"
                _md_frame(atoms, md_steps, temperature, rng)
                if _too_close(atoms.positions):
                    report.redrawn += 1
                    continue
            energy = float(atoms.get_potential_energy())
            forces = np.asarray(atoms.get_forces(), dtype=np.float64)
        except CalculationFailed:  # tblite's report of an SCF that did not converge
            report.skipped += 1
            continue
        atoms.calc = None
        rows.append((atoms, energy, forces, {"charge": charge, "spin": spin, "data_id": data_id,
                                             "source": f"g2:{source}:{len(rows)}", "method": "GFN2-xTB"}))
        report.per_data_id[data_id] = report.per_data_id.get(data_id, 0) + 1
        bar.update(1)
    bar.close()
    return rows, report


def _write_split(out: Path, rows: list[tuple], shard_size: int, report: GenerationReport) -> None:
    """Write the shards and ``metadata.npz`` into a staging folder beside ``out`` and move it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for k in range(0, len(rows), shard_size):
            name = f"data{k // shard_size:04d}.aselmdb"
            write_aselmdb(staging / name, ({"numbers": atoms.numbers, "positions": atoms.positions, "energy": energy,
                                            "forces": forces, "data": data}
                                           for atoms, energy, forces, data in rows[k:k + shard_size]))
            report.shards.append(name)
        np.savez(staging / "metadata.npz", natoms=np.array([len(r[0]) for r in rows], dtype=np.int64),
                 data_ids=np.array([r[3]["data_id"] for r in rows], dtype=str))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the set is not
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.written = len(rows)


def main(argv: Sequence[str] | None = None) -> GenerationReport:
    """Command line entry point: parse the options, generate, print a summary."""
    parser = argparse.ArgumentParser(prog="python -m pointgeo.datamodules.xtb_generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="split folder to create (e.g. .../xtb_g2/train)")
    parser.add_argument("--num", type=int, required=True, help="structures to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--md-fraction", type=float, default=0.2)
    parser.add_argument("--dimer-fraction", type=float, default=0.2)
    parser.add_argument("--displacement", type=float, default=0.05)
    parser.add_argument("--molecules", nargs="*", default=None, help="g2 names (default: all)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    report = generate_xtb_set(args.out, args.num, seed=args.seed, shard_size=args.shard_size,
                              md_fraction=args.md_fraction, dimer_fraction=args.dimer_fraction,
                              displacement=args.displacement, molecules=args.molecules, overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(f"wrote {report.written} structures in {len(report.shards)} shard(s) to {report.out} "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(report.per_data_id.items()))}); skipped {report.skipped} "
          f"(SCF not converged), redrew {report.redrawn} overlapping geometries")
    return report


if __name__ == "__main__":
    main()
