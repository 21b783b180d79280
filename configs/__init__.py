"""The shipped YAML configs, ``<dataset>/<task>-<model>-<train rotation>.yaml``, installed as ``pointgeo.configs``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_config(name: str) -> Path | None:
    """The path of a shipped config by name (``"synthetic/cls-pointnet-z"``, ``.yaml`` optional), if it exists."""
    name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    path = Path(str(resources.files("pointgeo.configs").joinpath(name)))
    return path if path.is_file() else None
