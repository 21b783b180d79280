"""Every registered point-cloud network measured on every shape class, per dtype, at its test size.

The registry declares, per network and dtype, the shape classes of :data:`~pointgeo.testing.shapes.SHAPE_CLASSES`
on which its invariance is guaranteed; here the harness (:func:`~pointgeo.testing.invariance.measure`: its own
Haar rotations, translations of 10 RMS radii, permutations, the bound ``max |Δ| / max(1, max |f(x)|)``) measures
the worst error on each, with and without the given normals, next to what is declared. The registry's tests check
the same networks the same way (``tests/test_registry_invariance.py``); ``pointgeo models --measure`` prints the
table (:func:`format_table`) for users.

Networks are built with their entry's ``test_kwargs`` and seed 0, segmentation networks with 6 parts and 2
categories, classifiers with 5 classes, in ``eval()`` mode and the measured dtype.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pointgeo.registry import create_model, get_model_entry, list_models
from pointgeo.testing.invariance import TOLERANCE, InvarianceReport, measure
from pointgeo.testing.shapes import ADVERSARIAL_SHAPES, SHAPE_CLASSES, modelnet40_symmetric

REAL = "modelnet40_symmetric"
"""The shape class of the real samples (read from a ModelNet40 folder, not generated)."""
TRIALS = {torch.float64: 32, torch.float32: 8}
"""Transforms per sample with the network's default input; the other input (with or without normals) gets 4."""
REAL_TRIALS = {torch.float64: 8, torch.float32: 4}
"""Transforms per real sample with the default input (there are several samples)."""
REAL_POINTS = 64
"""Fewest points of each real sample a network sees (more where its test size is larger)."""


def point_cloud_networks() -> list[str]:
    """Names of the registered classification and segmentation networks (potentials have their own harness)."""
    return list_models(task="classification") + list_models(task="segmentation")


def build_test_network(name: str, dtype: torch.dtype, use_normals: bool) -> tuple[nn.Module, int]:
    """``(network, test_num_points)``: ``name`` at its test size, seed 0, ``eval()``, in ``dtype``."""
    entry = get_model_entry(name)
    kwargs = dict(entry.test_kwargs)
    if entry.task == "segmentation":
        kwargs.setdefault("num_parts", 6)
        kwargs.setdefault("num_categories", 2)
    else:
        kwargs.setdefault("num_classes", 5)
    torch.manual_seed(0)
    net = create_model(name, use_normals=use_normals, **kwargs).to(dtype).eval()
    return net, entry.test_num_points


def extra_inputs(name: str, batch: int) -> tuple[Tensor, ...]:
    """The inputs after ``(pos, normal)``: a segmentation network's categories ``(B,)``, alternating 0 and 1."""
    return (torch.arange(batch) % 2,) if get_model_entry(name).task == "segmentation" else ()


def random_clouds(n: int) -> tuple[Tensor, Tensor]:
    """Three anisotropic Gaussian clouds with random unit normals: ``pos, normal (3, n, 3)`` float64, seed 1."""
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(3, n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.7, 0.4], dtype=torch.float64)
    return pos, torch.nn.functional.normalize(torch.randn(3, n, 3, generator=g, dtype=torch.float64), dim=-1)


def shape_cloud(shape: str, n: int) -> tuple[Tensor, Tensor]:
    """One adversarial shape with all its points (exact structures may hold more than ``n``): ``(1, N, 3)`` each."""
    pos, normal = ADVERSARIAL_SHAPES[shape](n, 0)
    return pos[None], normal[None]


def measure_network(name: str, dtype: torch.dtype, pos: Tensor, normal: Tensor,
                    trials: int | None = None) -> list[InvarianceReport]:
    """Reports with and without the normals (networks that read none estimate or ignore them): ``trials``
    (default :data:`TRIALS`) transforms with the network's default input, 4 with the other. Networks that promise
    no exact invariance (``approximate``, ``none``; PaRot refuses normals) run with their default input only."""
    entry = get_model_entry(name)
    default = inspect.signature(entry.builder).parameters["use_normals"].default
    reports = []
    for use_normals in (True, False) if entry.invariance == "invariant" else (default,):
        net, _ = build_test_network(name, dtype, use_normals)
        count = (trials or TRIALS[dtype]) if use_normals == default else 4
        reports.append(measure(net, pos.to(dtype), normal.to(dtype) if use_normals else None,
                               *extra_inputs(name, pos.shape[0]), trials=count))
    return reports


def real_samples(root: Path, n: int) -> tuple[Tensor, Tensor]:
    """The symmetric-class ModelNet40 samples under ``root`` (a ``modelnet40_normal_resampled`` folder), the first
    ``n`` points of each: ``pos, normal (B, n, 3)`` float64."""
    samples = modelnet40_symmetric(root, n)
    return torch.stack([s[1] for s in samples]), torch.stack([s[2] for s in samples])


@dataclass(frozen=True)
class Measurement:
    """The worst error of one network on one shape class in one dtype, and what its registry entry declares."""

    network: str
    shape: str
    dtype: torch.dtype
    worst: float
    """Largest ``max |Δ| / max(1, max |f(x)|)`` over the samples, transforms and both inputs (with/without normals)."""
    passes: bool
    """Within the dtype's bound and sensitive to a non-rigid change (:meth:`InvarianceReport.within`)."""
    declared: str
    """``guaranteed``, ``not guaranteed`` or ``float64 only`` (entries that promise invariance), else the entry's
    invariance (``approximate``, ``none``)."""

    @property
    def consistent(self) -> bool:
        """Whether the measurement agrees with the declaration (guaranteed ⇔ passes); true for non-invariant
        networks, which promise nothing exact."""
        if self.declared == "guaranteed":
            return self.passes
        return self.declared not in ("not guaranteed", "float64 only") or not self.passes


def declared(name: str, shape: str, dtype: torch.dtype) -> str:
    """What the registry entry of ``name`` declares for ``shape`` in ``dtype`` (see :class:`Measurement`)."""
    entry = get_model_entry(name)
    if entry.invariance != "invariant":
        return entry.invariance
    if shape in entry.not_guaranteed:
        return "not guaranteed"
    if dtype != torch.float64 and shape in entry.float64_only:
        return "float64 only"
    return "guaranteed"


def measure_table(names: Iterable[str] | None = None, *, data_root: Path | None = None,
                  dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32), trials: int | None = None,
                  progress: Callable[[Measurement], None] | None = None) -> list[Measurement]:
    """Measure ``names`` (default: every point-cloud network) on ``random`` clouds and on every class of
    :data:`SHAPE_CLASSES`; :data:`REAL` only with ``data_root`` (a ``modelnet40_normal_resampled`` folder).
    ``trials`` overrides :data:`TRIALS` and :data:`REAL_TRIALS`; ``progress`` is called with every measurement."""
    rows = []
    for name in point_cloud_networks() if names is None else names:
        n = get_model_entry(name).test_num_points
        for dtype in dtypes:
            clouds = [("random", *random_clouds(n)), *((s, *shape_cloud(s, n)) for s in ADVERSARIAL_SHAPES)]
            if data_root is not None:
                clouds.append((REAL, *real_samples(data_root, max(n, REAL_POINTS))))
            for shape, pos, normal in clouds:
                count = trials or (REAL_TRIALS[dtype] if shape == REAL else None)
                reports = measure_network(name, dtype, pos, normal, trials=count)
                row = Measurement(name, shape, dtype, max(r.max_rel for r in reports), all(r.within() for r in reports),
                                  declared(name, shape, dtype))
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def _cell(row: Measurement | None) -> str:
    if row is None:
        return "not measured"
    mark = {"guaranteed": "", "not guaranteed": " (not guaranteed)", "float64 only": " (float64 only)"}
    flag = "" if row.consistent else " **MISMATCH**"
    return f"{row.worst:.1e}{mark.get(row.declared, '')}{flag}"


def format_table(rows: list[Measurement]) -> str:
    """Markdown: one table per network, a row per shape class, the worst float64 and float32 error in columns
    (with the declaration where a class is excluded, and ``MISMATCH`` where a guaranteed class fails or an excluded
    one passes)."""
    shapes = ["random", *SHAPE_CLASSES]
    bounds = ", ".join(f"{str(d).removeprefix('torch.')} {b:g}" for d, b in TOLERANCE.items())
    out = [f"Worst max |Δ| / max(1, max |f(x)|) over the harness's transforms (bound: {bounds}).", ""]
    for name in dict.fromkeys(r.network for r in rows):
        mine = {(r.shape, r.dtype): r for r in rows if r.network == name}
        entry = get_model_entry(name)
        out += [f"### {name} ({entry.task}, {entry.invariance}, {entry.test_num_points} points)", "",
                "| shape class | float64 | float32 |", "|---|---|---|"]
        for shape in shapes:
            cells = [mine.get((shape, d)) for d in (torch.float64, torch.float32)]
            if any(c is not None for c in cells):
                out.append(f"| {shape} | {_cell(cells[0])} | {_cell(cells[1])} |")
        out.append("")
    return "\n".join(out)
