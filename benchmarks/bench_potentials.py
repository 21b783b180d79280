"""Throughput of pointgeo's potentials against a small MACE, and of its neighbour list against vesin and ASE.

Usage::

    python benchmarks/bench_potentials.py [--sizes 10 100 350] [--repeats 5] [--threads 1] [--no-mace]

For each molecule size (one random molecule of ``N`` atoms, and a batch of 16 OMol25-sized molecules: OMol25 holds
molecules of up to 350 atoms; the batch draws sizes uniformly from 20–150 atoms, about 85 on average) it prints:

* neighbour list (cutoff 5 Å): milliseconds for pointgeo (and which search it took: the pair test of small
  non-periodic batches or the cell list), vesin and ASE, and the ratios pointgeo / reference;
* every potential (small test-size networks of the same width, float32): inference (energy + forces) and a
  training step (energy + force loss, ``create_graph``, backward) in structures/s and atoms/s, with the ratio
  to MACE (``mace-torch``, the ``bench`` extra; 2 interactions, 32x0e+32x1o, built without weights, fed the same
  graph) in the same process.

Ratios > 1 mean pointgeo is slower than the reference. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pointgeo  # noqa: E402,F401  (before torch: THP allocation for CPU runs)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pointgeo.geometry import neighbor_list  # noqa: E402
from pointgeo.geometry.neighbor_list import DENSE_MAX_PAIRS  # noqa: E402
from pointgeo.registry import create_model  # noqa: E402
from pointgeo.tasks.potential import predict_potential  # noqa: E402
from pointgeo.testing.potentials import molecule_batch, random_molecule  # noqa: E402

CUTOFF = 5.0
MODELS = {
    "painn": {"channels": 32, "num_layers": 2, "num_basis": 16, "cutoff": CUTOFF},
    "tinvnn_atoms": {"channels": 32, "num_layers": 2, "heads": 4, "num_basis": 16, "radius": 12.0},
    "transip": {"channels": 32, "num_layers": 2, "heads": 4, "num_basis": 16, "radius": 12.0},
}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def workloads(sizes: list[int]) -> dict[str, list]:
    g = torch.Generator().manual_seed(0)
    out = {f"{n} atoms": [random_molecule(n, g)] for n in sizes}
    omol_sizes = torch.randint(20, 151, (16,), generator=g).tolist()
    out[f"OMol25-like batch (16 molecules, {sum(omol_sizes)} atoms)"] = [random_molecule(n, g) for n in omol_sizes]
    return out


def bench_neighbor_list(structures: list, repeats: int) -> dict[str, float]:
    import vesin
    from ase.neighborlist import neighbor_list as ase_nl

    pos = torch.tensor(np.concatenate([a.positions for a in structures]))
    batch = torch.cat([torch.full((len(a),), k) for k, a in enumerate(structures)])
    calc = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    return {
        "pointgeo": timed(lambda: neighbor_list(pos, CUTOFF, batch), repeats),
        "vesin": timed(lambda: [calc.compute(a.positions, np.zeros((3, 3)), False, "ijS") for a in structures],
                       repeats),
        "ase": timed(lambda: [ase_nl("ijS", a, CUTOFF) for a in structures], repeats),
    }


def mace_runner(structures: list) -> tuple[Callable[[bool], object], int]:
    import torch.nn.functional as F

    torch.serialization.add_safe_globals([slice])  # e3nn loads its packaged Wigner constants, which hold slices
    warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)  # e3nn's scripts
    from e3nn import o3
    from mace import modules

    elements = sorted({int(z) for a in structures for z in a.numbers})
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    torch.manual_seed(0)
    model = modules.MACE(r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
                         interaction_cls_first=block, num_interactions=2, num_elements=len(elements),
                         hidden_irreps=o3.Irreps("32x0e + 32x1o"), MLP_irreps=o3.Irreps("16x0e"), gate=F.silu,
                         atomic_energies=np.zeros(len(elements)), avg_num_neighbors=10.0, atomic_numbers=elements,
                         correlation=3).float()
    pos = torch.tensor(np.concatenate([a.positions for a in structures]), dtype=torch.float32)
    z = torch.tensor(np.concatenate([a.numbers for a in structures]))
    batch = torch.cat([torch.full((len(a),), k) for k, a in enumerate(structures)])
    ptr = torch.tensor([0, *np.cumsum([len(a) for a in structures]).tolist()])
    node_attrs = F.one_hot(torch.searchsorted(torch.tensor(elements), z), len(elements)).float()
    target = torch.zeros_like(pos)

    def run(train: bool) -> object:
        nl = neighbor_list(pos, CUTOFF, batch)  # the same graph construction for every model
        data = {"positions": pos.clone(), "node_attrs": node_attrs, "edge_index": nl.edge_index,
                "shifts": torch.zeros(nl.edge_index.shape[1], 3), "unit_shifts": torch.zeros(nl.edge_index.shape[1], 3),
                "cell": torch.zeros(3 * len(structures), 3), "batch": batch, "ptr": ptr}
        out = model(data, training=train, compute_force=True)
        if train:
            loss = out["energy"].abs().mean() + (out["forces"] - target).norm(dim=-1).mean()
            loss.backward()
        return out

    return run, len(pos)


def pointgeo_runner(name: str, structures: list) -> Callable[[bool], object]:
    torch.manual_seed(0)
    net = create_model(name, **MODELS[name]).float()
    batch = molecule_batch(structures, [0] * len(structures), [1] * len(structures), torch.float32)

    def run(train: bool) -> object:
        out = predict_potential(net, batch, create_graph=train)
        if train:
            loss = out["energy"].abs().mean() + out["forces"].norm(dim=-1).mean()
            loss.backward()
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 350])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-mace", action="store_true", help="skip the mace-torch reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} torch threads, {args.repeats} repeats (median); load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start on {os.cpu_count()} CPUs")
    for label, structures in workloads(args.sizes).items():
        atoms = sum(len(a) for a in structures)
        nl = bench_neighbor_list(structures, args.repeats)
        search = "pair test" if len(structures) * max(map(len, structures)) ** 2 <= DENSE_MAX_PAIRS else "cell list"
        print(f"\n== {label}  (load average {os.getloadavg()[0]:.1f})")
        print(f"neighbour list {CUTOFF} Å ({search}): pointgeo {nl['pointgeo'] * 1e3:.2f} ms, "
              f"vesin {nl['vesin'] * 1e3:.2f} ms "
              f"(ratio {nl['pointgeo'] / nl['vesin']:.1f}), ASE {nl['ase'] * 1e3:.2f} ms "
              f"(ratio {nl['pointgeo'] / nl['ase']:.2f})")
        mace = None
        if not args.no_mace:
            run, _ = mace_runner(structures)
            mace = {mode: timed(lambda m=mode: run(m == "train"), args.repeats) for mode in ("infer", "train")}
            print(f"{'mace (reference)':<16} infer {len(structures) / mace['infer']:9.1f} struct/s "
                  f"{atoms / mace['infer']:10.0f} atoms/s | train {len(structures) / mace['train']:9.1f} struct/s "
                  f"{atoms / mace['train']:10.0f} atoms/s")
        for name in MODELS:
            run = pointgeo_runner(name, structures)
            t = {mode: timed(lambda m=mode: run(m == "train"), args.repeats) for mode in ("infer", "train")}
            ratio = (f" | time / MACE: infer {t['infer'] / mace['infer']:.2f}, train {t['train'] / mace['train']:.2f}"
                     if mace else "")
            print(f"{name:<16} infer {len(structures) / t['infer']:9.1f} struct/s {atoms / t['infer']:10.0f} atoms/s"
                  f" | train {len(structures) / t['train']:9.1f} struct/s {atoms / t['train']:10.0f} atoms/s{ratio}")


if __name__ == "__main__":
    main()
