"""The ``pointgeo`` command.

``pointgeo train | validate | test | predict`` run through LightningCLI on YAML configs (``train`` is Lightning's
``fit``; with no ``--config`` it uses the shipped default, a small invariant model on the synthetic set, and ends by
testing the best checkpoint unrotated and under SO(3)). ``pointgeo models`` lists the registered networks;
``pointgeo register`` aligns two point clouds with FPFH + RANSAC; ``pointgeo generate`` writes crystals of a
generative checkpoint as CIF files with a metrics report (:mod:`pointgeo.generation`). Heavy
libraries are imported only by the commands that need them, so ``pointgeo --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointgeo import enable_cpu_huge_pages
from pointgeo.configs import shipped_config

LIGHTNING_COMMANDS = {"train": "fit", "fit": "fit", "validate": "validate", "test": "test", "predict": "predict"}
DEFAULT_CONFIG = "synthetic/cls-tinvnn_pointnet-z.yaml"

USAGE = """usage: pointgeo <command> [options]

training and evaluation (LightningCLI; `pointgeo <command> --help` lists every option):
  train       fit a model from a YAML config (default: {default}), then test it unrotated and under SO(3)
  validate    run the validation loop of a config and checkpoint
  test        run the test loop of a config and checkpoint
  predict     run prediction of a config and checkpoint

other commands:
  models      list the registered networks (or, with --pretrained, the published checkpoints)
  robustness  rotated-test report of one or several models (z/z, z/SO3, SO3/SO3, angle sweeps, invariance)
  generate    crystals from a CDVAE checkpoint: CIF files, metrics.json and report.html (batched, resumable)
  view        a model's predictions (or a molecule's forces) on a sample and random SO(3) rotations (--snapshot: PNG);
              view SRC --target TGT: a registration pair before/after alignment with its correspondences
  register    align one point cloud to another (FPFH + RANSAC or --model CKPT): 4x4 transform, correspondences, IR
  download    download pretrained checkpoints by name (or 'all') and verify their sha256
  cache       show, list or clear the checkpoint cache ($POINTGEO_HOME, default ~/.cache/pointgeo)

A --config may be a path or the name of a shipped config, e.g. synthetic/cls-pointnet-z.
""".format(default=DEFAULT_CONFIG)


def _resolve_configs(args: list[str]) -> list[str]:
    """Replace shipped config names given to ``--config`` by their installed paths."""
    out = list(args)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg == "--config" and i + 1 < len(out):
            value, i = out[i + 1], i + 1
        elif arg.startswith("--config="):
            value, prefix = arg.split("=", 1)[1], "--config="
        if value is not None and not Path(value).exists() and (found := shipped_config(value)) is not None:
            out[i] = prefix + str(found)
    return out


def run_lightning(command: str, args: list[str]) -> None:
    """Run a LightningCLI subcommand; ``train`` falls back to the default config and tests afterwards."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from pointgeo.lightning_cli import LastCheckpoint, PointGeoCLI, ResumeMismatchError, test_under_rotations

    subcommand = LIGHTNING_COMMANDS[command]
    args = _resolve_configs(args)
    has_config = any(a == "--config" or a.startswith("--config=") for a in args)
    if subcommand == "fit" and not has_config and not any(a in ("-h", "--help") for a in args):
        args = ["--config", str(shipped_config(DEFAULT_CONFIG)), *args]
    try:
        cli = PointGeoCLI(args=[subcommand, *args])
    except ResumeMismatchError as exc:
        raise SystemExit(f"pointgeo {command}: {exc}") from exc
    except SIGTERMException as exc:  # Lightning's SystemExit would end the process with status 0
        raise SystemExit(f"pointgeo {command}: stopped by SIGTERM") from exc
    if command == "train":
        if cli.trainer.interrupted:
            last = [cb.path(cli.trainer) for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint)]
            raise SystemExit("pointgeo train: interrupted before the end of the run"
                             + (f"; resume with --ckpt_path {last[0]}" if last else ""))
        test_under_rotations(cli, getattr(cli.model, "test_rotations", ("none", "so3")))


def list_models_command(args: list[str]) -> None:
    """``pointgeo models [PATTERN] [--pretrained | --measure]``: networks with their task and guarantee; for an
    ``invariant`` network, per dtype the shape classes of the harness on which it is guaranteed, and the reason for
    each class that is not. Or, with ``--pretrained``, the checkpoints; with ``--measure``, the measured table."""
    parser = argparse.ArgumentParser(prog="pointgeo models", description="List the registered networks.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'tinvnn*'")
    parser.add_argument("--pretrained", action="store_true", help="list the published checkpoints instead")
    parser.add_argument("--measure", action="store_true",
                        help="measure the point-cloud networks on every shape class at their test size (float64 and "
                             "float32) and print the worst invariance error of each next to what is declared")
    parser.add_argument("--data", type=Path, default=None,
                        help="with --measure: a modelnet40_normal_resampled folder, to measure its symmetric classes")
    parser.add_argument("--trials", type=int, default=None,
                        help="with --measure: transforms per sample (default 32 in float64, 8 in float32)")
    ns = parser.parse_args(args)
    if ns.pretrained:
        list_checkpoints(ns.pattern)
        return
    if ns.measure:
        measure_models(ns.pattern, ns.data, ns.trials)
        return
    import torch

    from pointgeo.registry import get_model_entry, list_models
    from pointgeo.testing.potentials import ADVERSARIAL_MOLECULES
    from pointgeo.testing.shapes import PAIR_SHAPE_CLASSES, SHAPE_CLASSES

    names = list_models(ns.pattern)
    if not names:
        print(f"no model matches {ns.pattern!r}")
        return
    width = max(len(n) for n in names)
    pad = " " * (width + 2)
    for name in names:
        e = get_model_entry(name)
        print(f"{name:<{width}}  {e.task:<14}  {e.invariance:<11}  {e.description}")
        if e.invariance != "invariant":
            continue
        classes = {"potential": ("random molecules", *ADVERSARIAL_MOLECULES),
                   "registration": PAIR_SHAPE_CLASSES}.get(e.task, SHAPE_CLASSES)
        for label, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            excluded = e.excluded_shapes(dtype)
            print(f"{pad}{label} guaranteed on: {', '.join(c for c in classes if c not in excluded)}")
        for shape, reason in e.not_guaranteed.items():
            print(f"{pad}not guaranteed on {shape}: {reason}")
        for shape, reason in e.float64_only.items():
            print(f"{pad}float64 only on {shape}: {reason}")


def measure_models(pattern: str, data: Path | None, trials: int | None) -> None:
    """Print :func:`pointgeo.testing.registry_table.format_table` of the point-cloud networks matching ``pattern``
    (progress on stderr); exit with status 1 when a measurement contradicts a declaration."""
    import fnmatch

    from pointgeo.testing.registry_table import format_table, measure_table, point_cloud_networks

    if trials is not None and trials < 1:
        raise SystemExit(f"pointgeo models: --trials must be >= 1; got {trials}")
    if data is not None and not data.is_dir():
        raise SystemExit(f"pointgeo models: --data {data} is not a folder (a modelnet40_normal_resampled folder)")
    names = [n for n in point_cloud_networks() if fnmatch.fnmatch(n, pattern)]
    if not names:
        raise SystemExit(f"pointgeo models: no point-cloud network matches {pattern!r}")
    progress = lambda r: print(f"{r.network} {r.shape} {r.dtype}: {r.worst:.1e}", file=sys.stderr)  # noqa: E731
    rows = measure_table(names, data_root=data, trials=trials, progress=progress)
    print(format_table(rows))
    if not all(r.consistent for r in rows):
        raise SystemExit(1)


def list_checkpoints(pattern: str) -> None:
    """Print the published checkpoints matching ``pattern`` with their data, rotation and test metrics."""
    import fnmatch

    from pointgeo.hub import CHECKPOINTS

    names = [n for n in sorted(CHECKPOINTS) if fnmatch.fnmatch(n, pattern)]
    if not names:
        print(f"no pretrained checkpoint matches {pattern!r}")
    for name in names:
        c = CHECKPOINTS[name]
        metrics = ", ".join(f"{k} {format_metric(k, v)}" for k, v in c.metrics.items())
        print(f"{name:<30} {c.dataset:<10} train rotation {c.train_rotation:<4} {c.size / 1024:7.0f} KiB  {metrics}")


METRIC_UNITS = (("energy_mae_per_atom", "meV/atom"), ("energy_mae", "meV"), ("force_mae", "meV/Å"))
"""Units of the potentials' metrics (``pointgeo.tasks.PotentialTask`` logs them in these units)."""


def format_metric(key: str, value: float) -> str:
    """A published metric with its unit: accuracies and rates (fractions) in %, the potentials' MAEs in meV,
    meV/atom, meV/Å, a crystal model's property MAE in eV and its reconstruction RMSE (unitless)."""
    if "rms_dist" in key:
        return f"{value:.4f}"
    if "property_mae" in key:
        return f"{value:.3f} eV"
    for name, unit in METRIC_UNITS:
        if name in key:
            return f"{value:.1f} {unit}"
    return f"{100 * value:.1f} %"


def download_command(args: list[str]) -> None:
    """``pointgeo download NAME [NAME ...] | all``: fetch and verify checkpoints into the cache."""
    parser = argparse.ArgumentParser(prog="pointgeo download", description="Download pretrained checkpoints.")
    parser.add_argument("names", nargs="+", help="checkpoint names (see `pointgeo models --pretrained`) or 'all'")
    ns = parser.parse_args(args)
    from pointgeo.download import ChecksumError, DownloadError
    from pointgeo.hub import CHECKPOINTS, fetch

    names = sorted(CHECKPOINTS) if ns.names == ["all"] else ns.names
    for name in names:
        try:
            print(f"{name}: {fetch(name)}")
        except (KeyError, DownloadError, ChecksumError, FileNotFoundError) as exc:
            raise SystemExit(f"pointgeo download: {exc.args[0] if exc.args else exc}") from exc


def cache_command(args: list[str]) -> None:
    """``pointgeo cache path|list|clear``."""
    parser = argparse.ArgumentParser(prog="pointgeo cache", description="Inspect or clear the checkpoint cache.")
    parser.add_argument("action", choices=["path", "list", "clear"])
    ns = parser.parse_args(args)
    from pointgeo.hub import cache_entries, checkpoint_dir, clear_cache

    if ns.action == "path":
        print(checkpoint_dir())
    elif ns.action == "list":
        for path in cache_entries():
            print(f"{path.stat().st_size / 1024:9.0f} KiB  {path}")
    else:
        print(f"removed {clear_cache()} checkpoint(s) from {checkpoint_dir()}")


ALIGNED_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".npy")


def write_cloud_atomic(path: Path, points) -> None:
    """Write ``points (N, 3)`` to ``path`` (``.ply``/``.pcd`` through Open3D, ``.xyz``/``.txt`` as text, ``.npy``)
    through a temporary file in the same folder, moved into place with ``os.replace``."""
    import os
    import tempfile

    import numpy as np

    suffix = path.suffix.lower()
    if suffix not in ALIGNED_SUFFIXES:
        raise ValueError(f"--out must end in one of {', '.join(ALIGNED_SUFFIXES)}; got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # a normal file's permissions, not mkstemp's private 0600
    array = np.ascontiguousarray(points.detach().cpu().numpy(), dtype=np.float64)
    try:
        if suffix == ".npy":
            np.save(tmp, array)
        elif suffix in (".xyz", ".txt"):
            np.savetxt(tmp, array, fmt="%.6f")
        else:
            import open3d as o3d

            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(array))
            if not o3d.io.write_point_cloud(tmp, cloud):
                raise OSError(f"Open3D could not write {path}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def register_command(args: list[str]) -> None:
    """``pointgeo register SRC TGT [--model NAME_OR_CKPT] [--estimator lgr|ransac] [--out ALIGNED] ...``: registration
    of the source onto the target, by default FPFH + RANSAC (+ ICP), or a registration checkpoint (a RoITr
    ``RegistrationTask``: a hub name, a file or a URL) through its ``register_pair``. Prints the 4×4 transform (source
    into target), the number of correspondences and the inlier ratio; writes the aligned source when it succeeds;
    exits with status 1 and says so when it fails."""
    parser = argparse.ArgumentParser(prog="pointgeo register", description=(
        "Register SRC onto TGT with FPFH features and RANSAC (Open3D), then ICP, or with a registration checkpoint "
        "(--model). Reads .ply .pcd .xyz .txt .off .obj .stl (meshes are sampled), .npy arrays and 3DMatch .pth "
        "fragments. Coordinates in metres for the defaults."))
    parser.add_argument("--model", default="fpfh_ransac",
                        help="fpfh_ransac (default) or a registration checkpoint: pretrained name, file or URL")
    parser.add_argument("--estimator", choices=("lgr", "ransac"),
                        help="with a checkpoint: its pose estimator (default: the checkpoint's own)")
    parser.add_argument("source", help="the cloud to move")
    parser.add_argument("target", help="the cloud to align it to")
    parser.add_argument("--out", type=Path, help=f"write the aligned source here ({' '.join(ALIGNED_SUFFIXES)})")
    parser.add_argument("--voxel-size", type=float, help="voxel edge for downsampling (default 0.025; with a "
                        "checkpoint, the voxel size of its training data)")
    parser.add_argument("--max-points", type=int, help="with a checkpoint: most points per cloud after the voxels, "
                        "a random subset drawn with --seed (default: its training data's cap; 0: no cap)")
    parser.add_argument("--feature-radius", type=float, help="FPFH radius (default 5 x voxel size)")
    parser.add_argument("--distance", type=float, help="inlier distance of RANSAC and ICP (default 1.5 x voxel size)")
    parser.add_argument("--seed", type=int, default=0, help="RANSAC seed (default 0)")
    parser.add_argument("--max-iterations", type=int, default=50_000, help="RANSAC hypotheses (default 50000)")
    parser.add_argument("--no-refine", action="store_true", help="skip the ICP refinement")
    parser.add_argument("--mesh-points", type=int, default=20_000, help="points sampled from meshes (default 20000)")
    parser.add_argument("--truth", help="a 4x4 ground-truth transform (.npy or text): print RRE, RTE, mean distance")
    ns = parser.parse_args(args)
    import time

    import torch

    from pointgeo.datamodules import DatasetFileError
    from pointgeo.geometry import rotation_error_degrees, transform_points, translation_error
    from pointgeo.metrics.registration import RMSE_THRESHOLD, mean_distance_error
    from pointgeo.viz.io import read_cloud, read_transform
    from pointgeo.viz.pairs import estimate

    if ns.voxel_size is not None and not ns.voxel_size > 0:
        raise SystemExit(f"pointgeo register: --voxel-size must be positive; got {ns.voxel_size}")
    if ns.max_points is not None and ns.max_points < 0:
        raise SystemExit(f"pointgeo register: --max-points must be 0 (no cap) or positive; got {ns.max_points}")
    try:
        source, target = read_cloud(ns.source, ns.mesh_points), read_cloud(ns.target, ns.mesh_points)
        truth = read_transform(ns.truth) if ns.truth else None
        start = time.perf_counter()
        found = estimate(ns.model, source, target, voxel_size=ns.voxel_size, max_points=ns.max_points,
                         seed=ns.seed, estimator=ns.estimator, feature_radius=ns.feature_radius,
                         distance=ns.distance, max_iterations=ns.max_iterations, refine=not ns.no_refine)
        seconds = time.perf_counter() - start
    except (DatasetFileError, ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"pointgeo register: {exc}") from exc
    except KeyError as exc:  # an unknown pretrained name
        raise SystemExit(f"pointgeo register: --model {ns.model}: {exc.args[0]}") from exc
    result = found.result
    capped = f", at most {found.max_points}" if found.max_points else ""
    print(f"source {ns.source}: {len(source)} points ({len(found.source)} after {found.voxel_size:g} voxels"
          f"{capped}); target {ns.target}: {len(target)} points ({len(found.target)})")
    print(f"correspondences: {len(result.correspondences)} ({found.method})")
    print(f"inliers: {result.inliers} (inlier ratio {result.inlier_ratio:.4f}, within {result.distance:g})")
    print(f"time: {seconds:.2f} s")
    if not result.success:
        raise SystemExit(f"pointgeo register: {result.message}; no transform is reported")
    torch.set_printoptions(precision=6, sci_mode=False)
    print("transform (source -> target):")
    for row in result.transform.tolist():
        print("  " + "  ".join(f"{v: .6f}" for v in row))
    if truth is not None:
        distance = float(mean_distance_error(result.transform[None], truth[None], source[None])[0])
        verdict = "accepted" if distance < RMSE_THRESHOLD else "not accepted"
        print(f"against the truth: RRE {float(rotation_error_degrees(result.transform, truth)):.3f} deg, "
              f"RTE {float(translation_error(result.transform, truth)):.4f}, mean distance {distance:.4f} "
              f"({verdict} at {RMSE_THRESHOLD:g})")
    if ns.out is not None:
        try:
            write_cloud_atomic(ns.out, transform_points(source, result.transform))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"pointgeo register: cannot write {ns.out}: {exc}") from exc
        print(f"aligned source written to {ns.out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pointgeo`` console script; opts in to pointgeo's CPU memory settings before any command
    imports torch (:func:`pointgeo.enable_cpu_huge_pages`)."""
    enable_cpu_huge_pages()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        run_lightning(command, rest)
    elif command == "models":
        list_models_command(rest)
    elif command == "robustness":
        from pointgeo.robustness.command import main as robustness_main

        robustness_main(rest)
    elif command == "generate":
        from pointgeo.generation.command import main as generate_main

        generate_main(rest)
    elif command == "view":
        from pointgeo.viz.viewer import cli as view_cli

        view_cli(rest)
    elif command == "register":
        register_command(rest)
    elif command == "download":
        download_command(rest)
    elif command == "cache":
        cache_command(rest)
    else:
        print(f"pointgeo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
