"""Piecewise equivariance of partition-aware networks (APEN): adversarial part sets and the two measurements.

A network of the registry kind ``piecewise`` is called ``net(pos, normal, category, parts)``; given the partition,
its per-point outputs must be exactly invariant when every part moves by its own rigid motion
(:func:`~pointgeo.testing.invariance.measure_piecewise`). :data:`PIECEWISE_PART_SETS` are the clouds the registry
tests check that on: each is one adversarial part (a shape of :data:`~pointgeo.testing.shapes.ADVERSARIAL_SHAPES`:
planar, collinear, symmetric, axisymmetric grids, duplicated points, extreme scales) beside an ellipsoid, a cone,
a part of one point and a part of two points, or (``random``) three anisotropic Gaussian parts.

:func:`measure_apen_piecewise` measures a trained or untrained network both ways: given the ground-truth partition
(exact by construction) and on its own predicted partition (approximate; reported with the partition accuracy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pointgeo.geometry import apply_piecewise_motion, piecewise_motion
from pointgeo.metrics.partition import partition_accuracy
from pointgeo.testing.invariance import TOLERANCE, InvarianceReport, measure_piecewise
from pointgeo.testing.shapes import ADVERSARIAL_SHAPES, cone, ellipsoid

PartSet = tuple[Tensor, Tensor, Tensor]
"""``(pos (1, M, 3), normal (1, M, 3), parts (1, M))`` float64, float64, long."""

PIECEWISE_SHAPES = ("box", "ellipsoid", "cylinder", "cone", "mirror_symmetric", "repeated_points", "planar",
                    "collinear", "grid_cylinder", "grid_sphere", "threefold", "mirror_composite", "scale_1e-3",
                    "scale_1e3", "offset_1e3")
"""The adversarial shapes used as one part of a piecewise part set."""


def random_parts(n: int, seed: int = 1) -> PartSet:
    """Three anisotropic Gaussian parts of ``n // 2``, ``n // 4`` and the rest of ``n`` points, 3 apart."""
    g = torch.Generator().manual_seed(seed)
    sizes = [n // 2, n // 4, n - n // 2 - n // 4]
    scale = torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64)
    pos = torch.cat([torch.randn(m, 3, generator=g, dtype=torch.float64) * scale * (1 + 0.3 * p)
                     + torch.tensor([3.0 * p, 0.0, 0.0], dtype=torch.float64) for p, m in enumerate(sizes)])
    normal = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    parts = torch.cat([torch.full((m,), p) for p, m in enumerate(sizes)])
    return pos[None], normal[None], parts[None]


def adversarial_parts(shape: str, n: int) -> PartSet:
    """``shape`` (at least ``n // 2`` points) as part 0, an ellipsoid and a cone of ``n // 4`` points, one point and
    two points as parts 1 … 4, each 3 apart (their rest poses do not matter: every part moves on its own)."""
    pieces = [ADVERSARIAL_SHAPES[shape](n // 2, 0), ellipsoid(n // 4, 1, (0.8, 0.5, 0.2)), cone(n // 4, 2)]
    g = torch.Generator().manual_seed(3)
    pieces += [(torch.randn(m, 3, generator=g, dtype=torch.float64),
                torch.nn.functional.normalize(torch.randn(m, 3, generator=g, dtype=torch.float64), dim=-1))
               for m in (1, 2)]
    pos = torch.cat([p + torch.tensor([3.0 * i, 0.0, 0.0], dtype=torch.float64) for i, (p, _) in enumerate(pieces)])
    normal = torch.cat([nrm for _, nrm in pieces])
    parts = torch.cat([torch.full((p.shape[0],), i) for i, (p, _) in enumerate(pieces)])
    return pos[None], normal[None], parts[None]


def piecewise_part_sets(n: int) -> dict[str, PartSet]:
    """``random`` and every :data:`PIECEWISE_SHAPES` entry as a part set of about ``n`` points (module docstring)."""
    return {"random": random_parts(n), **{s: adversarial_parts(s, n) for s in PIECEWISE_SHAPES}}


def measure_given_partition(network: nn.Module, part_set: PartSet, dtype: torch.dtype, *, use_normals: bool,
                            trials: int = 8, seed: int = 0) -> InvarianceReport:
    """:func:`measure_piecewise` of ``network(pos, normal, category, parts)`` on one part set in ``dtype`` (category
    0), the network given the (moved, permuted) partition."""
    pos, normal, parts = part_set
    category = torch.zeros(pos.shape[0], dtype=torch.long)
    return measure_piecewise(lambda p, n, c, q: network(p, n, c, q), pos.to(dtype),
                             normal.to(dtype) if use_normals else None, parts, category, pass_parts=True,
                             trials=trials, seed=seed)


def measure_apen_piecewise(net: nn.Module, batch: dict[str, Tensor], *, seed: int = 0, trials: int = 8,
                           translation_scale: float = 10.0) -> dict[str, Any]:
    """Measure a partition-predicting network (``net.segment(pos, normal, category, partition=None)`` returning
    ``logits``, ``partition``, ``num_parts``: :class:`pointgeo.nn.apen.APEN`) under piecewise motions of the
    batch's true parts ``batch["seg"]``, every part moved by its own seeded Haar rotation and translation
    (``translation_scale`` RMS radii), the points permuted. Runs in ``eval()`` mode and the dtype of
    ``batch["pos"]`` (``normal`` is used when the batch has it and the network reads normals); restores the mode.

    Returns a dict:
        ``max_relative_error``: the harness's ``max |Δ logits| / max(1, max |logits|)`` with the **predicted**
        partition (approximate: measured, not bounded); ``mean_abs_error``, ``flip_rate`` (fraction of points whose
        predicted label changes) with it;
        ``given_max_relative_error``: the same with the ground-truth partition given (exact: ≤ ``tolerance``);
        ``tolerance``: the harness's bound for the dtype;
        ``partition_accuracy``: mean :func:`pointgeo.metrics.partition.partition_accuracy` of the predicted
        partition on the batch as given; ``moved_partition_accuracy``: the same on ``trials`` moved copies of
        every sample; ``predicted_parts``: the mean number of predicted parts (moved copies);
        ``trials``, ``seed``, ``dtype`` (a string), ``samples``.
    """
    pos, seg = batch["pos"], batch["seg"]
    normal = batch.get("normal") if getattr(net, "use_normals", True) else None
    category = batch.get("category", torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            predicted = measure_piecewise(lambda p, n, c: net.segment(p, n, c).logits, pos, normal, seg, category,
                                          trials=trials, seed=seed, translation_scale=translation_scale)
            given = measure_piecewise(lambda p, n, c, q: net.segment(p, n, c, partition=q).logits, pos, normal,
                                      seg, category, pass_parts=True, trials=trials, seed=seed,
                                      translation_scale=translation_scale)
            plain = net.segment(pos, normal, category)
            moved = _moved_partitions(net.segment, pos, normal, seg, category, trials, seed, translation_scale)
    finally:
        net.train(was_training)
    accuracy, parts = moved
    return {"max_relative_error": predicted.max_rel, "mean_abs_error": predicted.mean_abs,
            "flip_rate": predicted.flip_rate, "given_max_relative_error": given.max_rel,
            "tolerance": TOLERANCE.get(pos.dtype, 1e-3),
            "partition_accuracy": float(partition_accuracy(plain.partition, seg).mean()),
            "moved_partition_accuracy": accuracy, "predicted_parts": parts, "trials": trials, "seed": seed,
            "dtype": str(pos.dtype).removeprefix("torch."), "samples": int(pos.shape[0])}


def _moved_partitions(segment: Callable[..., Any], pos: Tensor, normal: Tensor | None, seg: Tensor, category: Tensor,
                      trials: int, seed: int, translation_scale: float) -> tuple[float, float]:
    """Mean partition accuracy and number of predicted parts on ``trials`` piecewise-moved copies of every sample
    (motions from ``seed + 1``)."""
    generator = torch.Generator().manual_seed(seed + 1)
    rep = lambda t: t.repeat_interleave(trials, 0)  # noqa: E731
    rot, shift, centre = piecewise_motion(rep(pos), rep(seg), generator, translation_scale=translation_scale)
    moved, turned = apply_piecewise_motion(rep(pos), None if normal is None else rep(normal), rep(seg), rot, shift,
                                           centre)
    out = segment(moved.to(pos.dtype), None if turned is None else turned.to(pos.dtype), rep(category))
    return float(partition_accuracy(out.partition, rep(seg)).mean()), float(out.num_parts.double().mean())
