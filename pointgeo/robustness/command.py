"""``pointgeo robustness MODEL [MODEL ...] --out DIR``: the command-line face of :func:`run_robustness`.

:func:`add_arguments` fills an ``argparse`` parser and :func:`main` runs the command; bad input ends with one line
``pointgeo robustness: <what is wrong>`` (``SystemExit``), never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pointgeo.download import ChecksumError, DownloadError

EXPECTED_ERRORS = (KeyError, ValueError, FileNotFoundError, FileExistsError, DownloadError, ChecksumError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pointgeo robustness``."""
    parser.add_argument("models", nargs="+", help="pretrained names, checkpoint paths or file:// URLs; for "
                                                  "registration also fpfh_ransac (FPFH + RANSAC, built in)")
    parser.add_argument("--out", required=True, help="report folder (must not exist or be empty)")
    parser.add_argument("--data", help="config (path or shipped name) whose data section to test on; default: the "
                                       "first checkpoint's own data settings")
    parser.add_argument("--n-rotations", type=int, help="seeded rotations per shape and protocol (default 4); for "
                                                       "registration, per pair and angle bin (default 1)")
    parser.add_argument("--angle-bins", type=int, default=6, help="registration: equal angle bins over 0-180 degrees")
    parser.add_argument("--rotated-cloud", choices=["source", "target"], default="source",
                        help="registration: the cloud the rotations move")
    parser.add_argument("--fpfh-voxel-size", type=float, default=0.025,
                        help="registration: voxel edge of the built-in fpfh_ransac (default 0.025, metres)")
    parser.add_argument("--sweep-step", type=float, default=15.0, help="angle sweep bin in degrees")
    parser.add_argument("--seed", type=int, default=0, help="seed of every test rotation and part motion")
    parser.add_argument("--piecewise-translation", type=float, default=0.5,
                        help="piecewise protocol (data with parts): standard deviation of each part's translation, "
                             "in RMS radii of the shape")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0, help="test loader worker processes")
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N test shapes")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--double", action="store_true", help="evaluate in float64 (default float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous report in --out")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison table as aligned text (scores and flip rates in %)."""
    columns = list(dict.fromkeys(c for row in rows for c in row if c != "network"))

    def text(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and ("/" in key or key.startswith(("flip", "RR ", "IR"))):
            return f"{100 * value:.1f}"
        return f"{value:.1e}" if isinstance(value, float) else str(value)

    cells = [columns] + [[text(c, r[c]) if c in r else "-" for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(" | ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def main(args: list[str]) -> dict[str, Any]:
    """Run ``pointgeo robustness`` with command-line ``args``; prints the table and returns the report."""
    parser = argparse.ArgumentParser(
        prog="pointgeo robustness",
        description="Evaluate models side by side under test rotations none / z / SO(3), per-part motions "
                    "(piecewise, on data with parts), angle sweeps and measured invariance; writes report.json, PNG "
                    "plots and a self-contained report.html.",
    )
    add_arguments(parser)
    ns = parser.parse_args(args)
    from pointgeo.robustness.protocol import ProtocolSettings
    from pointgeo.robustness.registration import AngleSettings
    from pointgeo.robustness.report import run_robustness

    try:
        registration = AngleSettings(angle_bins=ns.angle_bins, n_rotations=1 if ns.n_rotations is None else
                                     ns.n_rotations, rotated_cloud=ns.rotated_cloud, seed=ns.seed,
                                     fpfh_voxel_size=ns.fpfh_voxel_size)
        report = run_robustness(
            ns.models, ns.out, data_config=ns.data, batch_size=ns.batch_size, num_workers=ns.num_workers,
            device=ns.device, double=ns.double, overwrite=ns.overwrite, max_samples=ns.max_samples,
            settings=ProtocolSettings(n_rotations=4 if ns.n_rotations is None else ns.n_rotations,
                                      sweep_step=ns.sweep_step, seed=ns.seed,
                                      piecewise_translation=ns.piecewise_translation),
            registration=registration,
        )
    except EXPECTED_ERRORS as exc:
        raise SystemExit(f"pointgeo robustness: {exc.args[0] if exc.args else exc}") from exc
    if report["task"] == "registration":
        print("RR (%) per rotation angle bin (degrees), IR (%), RRE (deg) and RTE (m) on accepted pairs:")
    elif report["task"] == "potential":
        print("energy / force MAE (meV, meV/Å), measured symmetry under SO(3) and NVE drift (eV/atom/ps):")
    else:
        print(f"{report['metric']} (%) under each train/test rotation:")
    print(format_table(report["table"]))
    print(f"report: {Path(ns.out) / 'report.html'}")
    return report
