"""Datamodules rebuilt from stored settings: a checkpoint's ``datamodule_hyper_parameters`` (what
``save_hyperparameters`` recorded, with LightningCLI's ``_class_path``) or a config's ``data`` section."""

from __future__ import annotations

import importlib
from typing import Any


def public_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without Lightning's bookkeeping entries (keys starting with ``_``, such as ``_class_path``)."""
    return {k: v for k, v in settings.items() if not k.startswith("_")}


def _import_class(class_path: str) -> Any:
    """The object a dotted ``module.Name`` path names; ``ValueError`` when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import {class_path!r}: {exc}") from exc


def build_datamodule(data: dict[str, Any], override: dict[str, Any] | None) -> Any:
    """The datamodule of ``override`` (a config's ``data`` section: ``class_path`` and ``init_args``) or of a
    checkpoint's stored settings ``data`` (``datamodule_hyper_parameters``).

    Raises ``ValueError`` when no class is recorded, it cannot be imported, or the settings do not build it."""
    spec = override if override is not None else {"class_path": data.get("_class_path"),
                                                  "init_args": public_settings(data)}
    if not spec.get("class_path"):
        raise ValueError("the checkpoint records no datamodule; pass a data config with --data")
    cls = _import_class(spec["class_path"])
    try:
        return cls(**(spec.get("init_args") or {}))
    except TypeError as exc:
        raise ValueError(f"the data settings do not build a {cls.__name__}: {exc}") from exc
