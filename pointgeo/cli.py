"""The ``pointgeo`` command.

``pointgeo train | validate | test | predict`` run through LightningCLI on YAML configs (``train`` is Lightning's
``fit``; with no ``--config`` it uses the shipped default, a small invariant model on the synthetic set, and ends by
testing the best checkpoint unrotated and under SO(3)). ``pointgeo models`` lists the registered networks. Heavy
libraries are imported only by the commands that need them, so ``pointgeo --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

LIGHTNING_COMMANDS = {"train": "fit", "fit": "fit", "validate": "validate", "test": "test", "predict": "predict"}
DEFAULT_CONFIG = "synthetic/cls-tinvnn_pointnet-z.yaml"

USAGE = """usage: pointgeo <command> [options]

training and evaluation (LightningCLI; `pointgeo <command> --help` lists every option):
  train       fit a model from a YAML config (default: {default}), then test it unrotated and under SO(3)
  validate    run the validation loop of a config and checkpoint
  test        run the test loop of a config and checkpoint
  predict     run prediction of a config and checkpoint

other commands:
  models      list the registered networks and what they guarantee under rotation

A --config may be a path or the name of a shipped config, e.g. synthetic/cls-pointnet-z.
""".format(default=DEFAULT_CONFIG)


def shipped_config(name: str) -> Path | None:
    """The path of a config shipped in ``pointgeo.configs`` (``"synthetic/cls-pointnet-z"``), if it exists."""
    name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    path = Path(str(resources.files("pointgeo.configs").joinpath(name)))
    return path if path.is_file() else None


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
    from pointgeo.lightning_cli import PointGeoCLI, test_under_rotations

    subcommand = LIGHTNING_COMMANDS[command]
    args = _resolve_configs(args)
    has_config = any(a == "--config" or a.startswith("--config=") for a in args)
    if subcommand == "fit" and not has_config and not any(a in ("-h", "--help") for a in args):
        args = ["--config", str(shipped_config(DEFAULT_CONFIG)), *args]
    cli = PointGeoCLI(args=[subcommand, *args])
    if command == "train":
        test_under_rotations(cli, ("none", "so3"))


def list_models_command(args: list[str]) -> None:
    """``pointgeo models [PATTERN]``: the registered networks with their task and rotation guarantee."""
    parser = argparse.ArgumentParser(prog="pointgeo models", description="List the registered networks.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'tinvnn*'")
    ns = parser.parse_args(args)
    from pointgeo.registry import get_model_entry, list_models

    names = list_models(ns.pattern)
    if not names:
        print(f"no model matches {ns.pattern!r}")
        return
    width = max(len(n) for n in names)
    for name in names:
        e = get_model_entry(name)
        print(f"{name:<{width}}  {e.task:<14}  {e.invariance:<11}  {e.description}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pointgeo`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        run_lightning(command, rest)
    elif command == "models":
        list_models_command(rest)
    else:
        print(f"pointgeo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
