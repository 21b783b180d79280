"""The periodic radius graph (``pointgeo.geometry.periodic_radius_graph``) against vesin and pymatgen.

Workloads: one random triclinic crystal of 10, 100, 1 000 and 10 000 atoms (0.08 atoms/Å³, angles 70°-110°), and
a batch of 256 perov_5-sized cells (5 atoms, ~4 Å, randomly sheared) in one call. Cutoff 7 Å (CDVAE's), every image
the cutoff needs. pointgeo handles the batch in one call; vesin and pymatgen take one call per cell. Prints the
median time of each (``--repeats``), the edge counts (which must agree) and the ratios pointgeo / reference (< 1:
pointgeo faster).

    python benchmarks/bench_periodic_graph.py [--sizes 10 100 1000 10000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import common  # noqa: F401  (first: pointgeo's CPU settings before torch)

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pointgeo.geometry import lattice_params_to_matrix, periodic_radius_graph  # noqa: E402

CUTOFF = 7.0
DENSITY = 0.08


def random_cell(n_atoms: int, rng: np.random.Generator) -> np.ndarray:
    """A triclinic cell of volume ``n_atoms / DENSITY`` with angles in 70°-110°."""
    angles = rng.uniform(70.0, 110.0, 3)
    lengths = rng.uniform(0.8, 1.25, 3)
    unit = lattice_params_to_matrix(torch.tensor(lengths), torch.tensor(angles)).numpy()
    return unit * (n_atoms / DENSITY / abs(np.linalg.det(unit))) ** (1 / 3)


def workloads(sizes: list[int], seed: int = 0) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    out = {f"1 cell x {n} atoms": [(rng.uniform(size=(n, 3)), random_cell(n, rng))] for n in sizes}
    perov = []
    for _ in range(256):
        cell = np.diag(rng.uniform(3.7, 4.3, 3)) + rng.normal(scale=0.3, size=(3, 3))
        perov.append((rng.uniform(size=(5, 3)), cell))
    out["256 cells x 5 atoms (perov_5-sized)"] = perov
    return out


def run_pointgeo(cells: list[tuple[np.ndarray, np.ndarray]]):
    frac = torch.tensor(np.concatenate([f for f, _ in cells]))
    lattice = torch.tensor(np.stack([c for _, c in cells]))
    batch = torch.repeat_interleave(torch.arange(len(cells)), torch.tensor([len(f) for f, _ in cells]))
    return lambda: periodic_radius_graph(frac, lattice, CUTOFF, batch).edge_index.shape[1]


def run_vesin(cells: list[tuple[np.ndarray, np.ndarray]]):
    import vesin

    calc = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    pos = [(f @ c, c) for f, c in cells]
    return lambda: sum(len(calc.compute(p, c, True, "i")[0]) for p, c in pos)


def run_pymatgen(cells: list[tuple[np.ndarray, np.ndarray]]):
    from pymatgen.core import Lattice, Structure

    structures = [Structure(Lattice(c), ["C"] * len(f), f) for f, c in cells]
    return lambda: sum(len(s.get_neighbor_list(CUTOFF)[0]) for s in structures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pymatgen-above", type=int, default=10000,
                        help="skip pymatgen on cells with more atoms than this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"periodic radius graph, cutoff {CUTOFF} Å, {common.device_name('cpu')}, median of {args.repeats}")
    for label, cells in workloads(args.sizes).items():
        runners = {"pointgeo": run_pointgeo(cells), "vesin": run_vesin(cells)}
        if max(len(f) for f, _ in cells) <= args.no_pymatgen_above:
            runners["pymatgen"] = run_pymatgen(cells)
        edges = {name: fn() for name, fn in runners.items()}
        if len(set(edges.values())) != 1:
            raise SystemExit(f"{label}: the edge counts differ: {edges}")
        seconds = {name: common.measure(fn, repeats=args.repeats).seconds for name, fn in runners.items()}
        ratios = ", ".join(f"pointgeo / {name} {seconds['pointgeo'] / s:.2f}"
                           for name, s in seconds.items() if name != "pointgeo")
        times = ", ".join(f"{name} {s * 1e3:.1f} ms" for name, s in seconds.items())
        print(f"{label}: {edges['pointgeo']} edges | {times} | {ratios}", flush=True)


if __name__ == "__main__":
    main()
