"""CDVAE's crystal metrics on an official test file compared with itself (a "perfect" model), with the time of each.

The predictions are the test crystals as ``pointgeo.datamodules.crystals`` delivers them (CIF parsed, Niggli-reduced,
cell rebuilt from its parameters); the references are the CIFs parsed by pymatgen. Prints validity, match rate and
RMSE (the benchmark's definition, and with invalid predictions matched too), COV on the first ``--cov-rows`` rows
(the CrystalNN fingerprints take ~0.1-0.3 s per crystal), and the property-statistics EMD (1 000 samples).

    python benchmarks/bench_crystal_metrics.py [--root ../shared/data/cdvae/perov_5] [--dataset perov_5] \
        [--cov-rows 500]
"""

from __future__ import annotations

import common  # noqa: F401  (first: pointgeo's CPU settings before torch)

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from pointgeo.datamodules.crystals import CrystalDataModule  # noqa: E402
from pointgeo.metrics.crystals import (  # noqa: E402
    COV_CUTOFFS,
    coverage,
    crystals_from_batch,
    evaluate,
    property_statistics,
    reconstruction,
    validity,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdvae" / "perov_5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with test.csv")
    parser.add_argument("--dataset", default="perov_5", choices=sorted(COV_CUTOFFS))
    parser.add_argument("--cov-rows", type=int, default=500)
    args = parser.parse_args()
    times: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - start
        print(f"  {name}: {times[name]:.1f} s", flush=True)
        return out

    with tempfile.TemporaryDirectory() as cache:
        dm = CrystalDataModule(dataset=args.dataset, root=str(args.root), download=False, cache=cache,
                               dtype="float64", eval_batch_size=10**6)
        batch = timed("read + Niggli-reduce the CSV (datamodule)", lambda: next(iter(dm.test_dataloader())))
    predictions = crystals_from_batch(batch.frac_coords, batch.z, batch.lengths, batch.angles, batch.natoms)
    with open(args.root / "test.csv", newline="") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pymatgen.core import Structure

        truth = [Structure.from_str(row["cif"], fmt="cif") for row in csv.DictReader(fh)]
    preds = timed("evaluate predictions (construction, validity)", lambda: evaluate(predictions))
    refs = timed("evaluate references", lambda: evaluate(truth))
    results = {"rows": len(preds), "validity_pred": validity(preds), "validity_ref": validity(refs)}
    results["reconstruction"] = timed("reconstruction (StructureMatcher)", lambda: reconstruction(preds, refs))
    results["reconstruction_all"] = timed("reconstruction, invalid ones matched too",
                                          lambda: reconstruction(preds, refs, require_valid=False))
    n = min(args.cov_rows, len(preds))
    results["coverage_rows"] = n
    results["coverage"] = timed(f"coverage on {n} rows (fingerprints)",
                                lambda: coverage(preds[:n], refs[:n], *COV_CUTOFFS[args.dataset]))
    results["property_statistics"] = timed("property statistics", lambda: property_statistics(preds, refs))
    results["seconds"] = times
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
