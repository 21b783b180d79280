"""Registry of networks by name (timm's pattern): ``@register_model`` on builder functions, ``create_model(name)``.

Every network in the registry declares the task it solves and what it guarantees under rotation
(``invariant``, ``equivariant``, ``approximate`` or ``none``); :mod:`pointgeo.testing` checks exactly that for
every entry. Networks register themselves when :mod:`pointgeo.nn` is imported.

Network call conventions (dense batches, see :mod:`pointgeo.datamodules`):

* ``classification``: ``net(pos (B, N, 3), normal (B, N, 3) | None) -> logits (B, num_classes)``
* ``segmentation``: ``net(pos, normal, category (B,)) -> logits (B, N, num_parts)``
* ``potential``: ``net(batch) -> energy (B,)`` on a ``torch_geometric`` batch of molecules or crystals (``pos``,
  ``z``, ``charge``, ``spin``, optional ``cell``/``pbc``; see :mod:`pointgeo.nn.atoms`); built with
  ``direct_forces=True``, ``(energy (B,), forces (N, 3))``. Forces are ``-∂E/∂pos``, taken by
  :mod:`pointgeo.tasks.potential`; the invariance checked is the energy's, with the forces' equivariance
  (:mod:`pointgeo.testing.potentials`).
* ``crystal_generation``: ``net.encode(frac_coords, atom_types, cell, batch) -> (μ, log σ²)``, ``net.heads(z)``,
  ``net.decode(z, pos, atom_types, cell, batch) -> (score, type_logits)`` on concatenated crystals
  (:mod:`pointgeo.nn.cdvae.network`); checked by :mod:`pointgeo.testing.crystals`.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Invariance = Literal["invariant", "equivariant", "approximate", "none"]
TaskKind = Literal["classification", "segmentation", "potential", "crystal_generation"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered network: its name, builder, task and rotation guarantee."""

    name: str
    builder: Callable[..., nn.Module]
    task: TaskKind
    invariance: Invariance
    description: str
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    """Small constructor kwargs that build the network quickly for tests (e.g. fewer channels)."""
    test_num_points: int = 64
    """Points per cloud large enough for the network's largest neighbourhood, used by tests."""
    not_guaranteed: dict[str, str] = field(default_factory=dict)
    """Shape classes (plain names; :data:`pointgeo.testing.shapes.SHAPE_CLASSES` lists them and the harness
    checks the names) on which the declared invariance is *not* guaranteed, each with the reason; the harness
    measures them and shows that they really fail."""
    float64_only: dict[str, str] = field(default_factory=dict)
    """Shape classes on which the invariance is guaranteed in float64 but not in float32 (whose rounding reaches
    the tolerances that decide their exact ties), each with the reason; measured in float32."""

    def excluded_shapes(self, dtype: torch.dtype) -> dict[str, str]:
        """The shape classes outside the guarantee in ``dtype``, with the reasons."""
        return {**self.not_guaranteed, **(self.float64_only if dtype != torch.float64 else {})}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    task: TaskKind,
    invariance: Invariance,
    test_kwargs: dict[str, Any] | None = None,
    test_num_points: int = 64,
    not_guaranteed: dict[str, str] | None = None,
    float64_only: dict[str, str] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder ``fn(**kwargs) -> nn.Module`` under ``name``.

    Args:
        name: registry name (snake_case family name, e.g. ``"tinvnn_pointnet"``).
        task: ``"classification"`` or ``"segmentation"`` (see the call conventions above).
        invariance: what the network guarantees under rotation; the shared harness checks exactly that.
        test_kwargs: small constructor kwargs for fast tests.
        test_num_points: points per cloud the tests use for this network.
        not_guaranteed: adversarial shapes outside the guarantee, with the reason (documented, still measured).
        float64_only: adversarial shapes guaranteed in float64 only, with the reason.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name, fn, task, invariance, doc[0] if doc else "", dict(test_kwargs or {}), test_num_points,
            dict(not_guaranteed or {}), dict(float64_only or {}),
        )
        return fn

    return decorate


def _populate() -> None:
    import pointgeo.nn  # noqa: F401  (registers the built-in networks)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises ``KeyError`` listing close matches."""
    _populate()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered network ``name`` with the builder's keyword arguments."""
    return get_model_entry(name).builder(**kwargs)


def list_models(pattern: str = "*", *, task: TaskKind | None = None) -> list[str]:
    """Sorted names matching a shell-style ``pattern``, optionally only those of one ``task``."""
    _populate()
    return sorted(
        n for n, e in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (task is None or e.task == task)
    )
