"""The pair protocol of the harness: registration networks and estimators under an independent rigid motion of each
fragment.

A registration network ``f(src (N, 3), tgt (M, 3)) -> dict`` is **invariant** when its outputs do not change when
the source moves by ``M₁ = [R₁|t₁]`` and the target by ``M₂ = [R₂|t₂]`` (Haar rotations, translations of
``translation_scale`` RMS radii) and the points of each are permuted, each output following its declared kind:

* ``invariant``: equal as they are (superpoint descriptors and scores, correspondence confidences);
* ``src_points`` / ``tgt_points``: per-point rows ``(N, …)`` / ``(M, …)``, compared point by point;
* ``src_indices`` / ``tgt_indices``: indices into the source / target cloud, compared after mapping back through
  the permutation (exactly);
* ``correspondences``: ``(K, 2)`` (source, target) index pairs, mapped back the same way.

An estimator ``T̂(src, tgt) -> (4, 4)`` is **equivariant** when ``T̂(M₁ X, M₂ Y) = M₂ · T̂(X, Y) · M₁⁻¹``
(:func:`measure_pair_equivariance`). Errors are relative to ``max(1, max |output|)`` and bounded like the point
protocol's (:data:`~pointgeo.testing.invariance.TOLERANCE`); an index output that differs anywhere counts as an
error of 1. The report's ``sensitivity`` is the change of the float outputs when the source is stretched (1.3, 1,
0.8 about its centroid), so a network whose outputs ignore the input fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from pointgeo.geometry import invert_rigid, random_rigid_motions, transform_points
from pointgeo.testing.invariance import InvarianceReport

PairNetwork = Callable[[Tensor, Tensor], Mapping[str, Tensor]]
KINDS = ("invariant", "src_points", "tgt_points", "src_indices", "tgt_indices", "correspondences")


def _rms(x: Tensor) -> float:
    return float((x.double() - x.double().mean(0)).pow(2).sum(-1).mean().sqrt())


def pair_motions(src: Tensor, tgt: Tensor, generator: torch.Generator, translation_scale: float
                 ) -> tuple[Tensor, Tensor]:
    """Independent rigid motions ``(4, 4)`` float64 of the source and the target: Haar rotations about the origin,
    Gaussian translations of ``translation_scale`` times each cloud's RMS radius."""
    m1 = random_rigid_motions(1, generator=generator)[0]
    m2 = random_rigid_motions(1, generator=generator)[0]
    m1[:3, 3] *= translation_scale * _rms(src)
    m2[:3, 3] *= translation_scale * _rms(tgt)
    return m1, m2


def _stretch(pos: Tensor) -> Tensor:
    c = pos.mean(0, keepdim=True)
    return (pos - c) * torch.tensor([1.3, 1.0, 0.8], dtype=pos.dtype, device=pos.device) + c


def _check_kinds(kinds: Mapping[str, str], outputs: Mapping[str, Tensor]) -> None:
    bad = {k: v for k, v in kinds.items() if v not in KINDS}
    if bad:
        raise ValueError(f"unknown output kinds {bad}; known: {', '.join(KINDS)}")
    missing = sorted(set(kinds) - set(outputs))
    if missing:
        raise ValueError(f"the network's outputs lack the declared keys {missing}")


def _expected(kind: str, value: Tensor, src_perm: Tensor, tgt_perm: Tensor) -> Tensor:
    """The reference output as the moved, permuted pair should give it."""
    if kind == "src_points":
        return value[src_perm]
    if kind == "tgt_points":
        return value[tgt_perm]
    return value


def _mapped_back(kind: str, value: Tensor, src_perm: Tensor, tgt_perm: Tensor) -> Tensor:
    """Index outputs of the permuted pair mapped back to the original point indices."""
    if kind == "src_indices":
        return src_perm[value]
    if kind == "tgt_indices":
        return tgt_perm[value]
    if kind == "correspondences":
        return torch.stack([src_perm[value[:, 0]], tgt_perm[value[:, 1]]], dim=-1) if len(value) else value
    return value


def _compare(kinds: Mapping[str, str], ref: Mapping[str, Tensor], out: Mapping[str, Tensor], src_perm: Tensor,
             tgt_perm: Tensor, scale: float) -> tuple[float, float, float]:
    """``(max relative error, max absolute float error, index mismatch 0/1)`` of one trial."""
    worst, worst_abs, mismatch = 0.0, 0.0, 0.0
    for key, kind in kinds.items():
        expected = _expected(kind, ref[key], src_perm, tgt_perm)
        got = _mapped_back(kind, out[key], src_perm, tgt_perm)
        if got.shape != expected.shape:
            worst, mismatch = float("inf"), 1.0
            continue
        if kind.endswith("indices") or kind == "correspondences" or not expected.is_floating_point():
            if not torch.equal(got, expected):
                worst, mismatch = max(worst, 1.0), 1.0
            continue
        if expected.numel():
            diff = float((got.double() - expected.double()).abs().max())
            worst, worst_abs = max(worst, diff / scale), max(worst_abs, diff)
    return worst, worst_abs, mismatch


def _float_scale(kinds: Mapping[str, str], ref: Mapping[str, Tensor]) -> float:
    values = [ref[k].detach().abs().max() for k, kind in kinds.items()
              if ref[k].is_floating_point() and ref[k].numel() and not kind.endswith("indices")]
    return max([1.0] + [float(v) for v in values])


def measure_pair(network: PairNetwork, src: Tensor, tgt: Tensor, kinds: Mapping[str, str], *, trials: int = 8,
                 translation_scale: float = 10.0, permutations: bool = True, seed: int = 0) -> InvarianceReport:
    """Measure how far ``network`` is from invariance under independent rigid motions and permutations of the two
    fragments (module docstring); ``kinds`` maps each compared output to its kind. Run it in ``eval()`` mode and in
    the dtype of ``src``; the motions are applied in float64 and rounded once."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref = network(src, tgt)
        _check_kinds(kinds, ref)
        stretched = network(_stretch(src), tgt)
    scale = _float_scale(kinds, ref)
    errors, abs_errors, mismatches = [], [], []
    for _ in range(trials):
        m1, m2 = pair_motions(src, tgt, generator, translation_scale)
        p1 = torch.randperm(len(src), generator=generator) if permutations else torch.arange(len(src))
        p2 = torch.randperm(len(tgt), generator=generator) if permutations else torch.arange(len(tgt))
        moved_src = transform_points(src.double(), m1).to(src.dtype)[p1]
        moved_tgt = transform_points(tgt.double(), m2).to(tgt.dtype)[p2]
        with torch.no_grad():
            out = network(moved_src, moved_tgt)
        rel, absolute, mismatch = _compare(kinds, ref, out, p1, p2, scale)
        errors.append(rel)
        abs_errors.append(absolute)
        mismatches.append(mismatch)
    change = max((float((stretched[k].double() - ref[k].double()).abs().max()) / scale
                  for k, kind in kinds.items() if kind in ("invariant", "src_points", "tgt_points")
                  and ref[k].is_floating_point() and stretched[k].shape == ref[k].shape and ref[k].numel()),
                 default=float("inf"))
    return InvarianceReport(max_abs=max(abs_errors), mean_abs=sum(abs_errors) / trials, max_rel=max(errors),
                            flip_rate=sum(mismatches) / trials, trials=trials, dtype=src.dtype,
                            per_sample=(max(errors),), sensitivity=change)


def measure_pair_equivariance(estimator: Callable[[Tensor, Tensor], Tensor], src: Tensor, tgt: Tensor, *,
                              trials: int = 8, translation_scale: float = 10.0, permutations: bool = True,
                              seed: int = 0) -> InvarianceReport:
    """Measure ``max |T̂(M₁ X, M₂ Y) − M₂ T̂(X, Y) M₁⁻¹| / max(1, max |M₂ T̂ M₁⁻¹|)`` over ``trials`` independent
    motions (and permutations) of the fragments; ``estimator(src, tgt) -> (4, 4)``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref = estimator(src, tgt).double()
        stretched = estimator(_stretch(src), tgt).double()
    errors, abs_errors = [], []
    for _ in range(trials):
        m1, m2 = pair_motions(src, tgt, generator, translation_scale)
        p1 = torch.randperm(len(src), generator=generator) if permutations else torch.arange(len(src))
        p2 = torch.randperm(len(tgt), generator=generator) if permutations else torch.arange(len(tgt))
        with torch.no_grad():
            got = estimator(transform_points(src.double(), m1).to(src.dtype)[p1],
                            transform_points(tgt.double(), m2).to(tgt.dtype)[p2]).double()
        expected = m2 @ ref @ invert_rigid(m1)
        diff = float((got - expected).abs().max())
        errors.append(diff / max(1.0, float(expected.abs().max())))
        abs_errors.append(diff)
    change = float((stretched - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    return InvarianceReport(max_abs=max(abs_errors), mean_abs=sum(abs_errors) / trials, max_rel=max(errors),
                            flip_rate=0.0, trials=trials, dtype=src.dtype, per_sample=(max(errors),),
                            sensitivity=change)
