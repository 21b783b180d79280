"""The ``pointgeo`` command.

``pointgeo train | validate | test | predict`` run through LightningCLI on YAML configs (``train`` is Lightning's
``fit``; with no ``--config`` it uses the shipped default, a small invariant model on the synthetic set, and ends by
testing the best checkpoint unrotated and under SO(3)). ``pointgeo models`` lists the registered networks. Heavy
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
  view        a model's predictions (or a molecule's forces) on a sample and random SO(3) rotations (--snapshot: PNG)
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
        test_under_rotations(cli, ("none", "so3"))


def list_models_command(args: list[str]) -> None:
    """``pointgeo models [PATTERN] [--pretrained]``: networks with their task and guarantee; for an ``invariant``
    network, per dtype the shape classes of the harness on which it is guaranteed, and the reason for each class
    that is not. Or, with ``--pretrained``, the checkpoints."""
    parser = argparse.ArgumentParser(prog="pointgeo models", description="List the registered networks.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'tinvnn*'")
    parser.add_argument("--pretrained", action="store_true", help="list the published checkpoints instead")
    ns = parser.parse_args(args)
    if ns.pretrained:
        list_checkpoints(ns.pattern)
        return
    import torch

    from pointgeo.registry import get_model_entry, list_models
    from pointgeo.testing.potentials import ADVERSARIAL_MOLECULES
    from pointgeo.testing.shapes import SHAPE_CLASSES

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
        classes = ("random molecules", *ADVERSARIAL_MOLECULES) if e.task == "potential" else SHAPE_CLASSES
        for label, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            excluded = e.excluded_shapes(dtype)
            print(f"{pad}{label} guaranteed on: {', '.join(c for c in classes if c not in excluded)}")
        for shape, reason in e.not_guaranteed.items():
            print(f"{pad}not guaranteed on {shape}: {reason}")
        for shape, reason in e.float64_only.items():
            print(f"{pad}float64 only on {shape}: {reason}")


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
    """A published metric with its unit: accuracies (fractions) in %, the potentials' MAEs in meV, meV/atom, meV/Å."""
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
    elif command == "view":
        from pointgeo.viz.viewer import cli as view_cli

        view_cli(rest)
    elif command == "download":
        download_command(rest)
    elif command == "cache":
        cache_command(rest)
    else:
        print(f"pointgeo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
