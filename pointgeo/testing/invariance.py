"""The invariance / equivariance harness: measure, and assert, what a network guarantees under E(3).

A network ``f(pos, normal, *extra)`` is **invariant** when ``f(x R^T + t, n R^T) = f(x, n)`` for rotations ``R``
and translations ``t``, and, for per-point outputs, **permutation equivariant** (``f(x[p]) = f(x)[p]``; for
per-shape outputs, invariant). It is **equivariant** (vector outputs ``(..., 3)``) when
``f(x R^T + t) = f(x) R^T``. The harness draws Haar-random rotations (float64, seeded), translations of scale
``translation_scale`` and random permutations, runs the network on the transformed batch, and reports the maximum
and mean absolute error, the error relative to the output scale and the prediction flip rate.

Put the network in ``eval()`` mode and in the dtype of the inputs first; tolerances by dtype follow e3nn and
nequip: float64 ``1e-8`` absolute on logits, float32 ``1e-3`` relative to the largest logit.

Networks whose invariance is learned through predicted orientations (PaRot: ``orientations(pos)``) are exactly
invariant only as far as those orientations are equivariant; :func:`measure_frame_equivariance` measures that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pointgeo.geometry import random_rotations, rotate

Network = Callable[..., Tensor]

DEFAULT_TOLERANCE = {torch.float64: ("abs", 1e-8), torch.float32: ("rel", 1e-3)}
"""Default tolerance by dtype: (kind, value); ``rel`` is relative to the largest absolute output."""


@dataclass(frozen=True)
class InvarianceReport:
    """Errors measured over all trials (outputs of the transformed inputs against the expected ones)."""

    max_abs: float
    mean_abs: float
    max_rel: float
    flip_rate: float
    trials: int
    dtype: torch.dtype

    def within(self, atol: float | None = None, rtol: float | None = None) -> bool:
        """Whether the errors are within ``atol`` (absolute) or ``rtol`` (relative), defaulting by dtype."""
        if atol is None and rtol is None:
            kind, value = DEFAULT_TOLERANCE.get(self.dtype, ("rel", 1e-3))
            atol, rtol = (value, None) if kind == "abs" else (None, value)
        ok_abs = atol is None or self.max_abs <= atol
        ok_rel = rtol is None or self.max_rel <= rtol
        return ok_abs and ok_rel

    def __str__(self) -> str:
        return (f"max |Δ| = {self.max_abs:.3e}, mean |Δ| = {self.mean_abs:.3e}, relative = {self.max_rel:.3e}, "
                f"prediction flip rate = {100 * self.flip_rate:.2f} % over {self.trials} trials ({self.dtype})")


def random_transform(
    pos: Tensor, generator: torch.Generator, *, rotations: bool, translation_scale: float, permutations: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """A random rotation ``(B, 3, 3)``, translation ``(B, 1, 3)`` and permutation ``(B, N)`` for a batch."""
    b, n, _ = pos.shape
    rot = random_rotations(b, generator=generator) if rotations else torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    shift = translation_scale * torch.randn(b, 1, 3, generator=generator, dtype=torch.float64)
    perm = (torch.stack([torch.randperm(n, generator=generator) for _ in range(b)]) if permutations
            else torch.arange(n).repeat(b, 1))
    return rot.to(pos.dtype), shift.to(pos.dtype), perm


def _permute(x: Tensor, perm: Tensor) -> Tensor:
    return torch.gather(x, 1, perm.to(x.device)[..., None].expand(-1, -1, x.shape[-1]))


def _apply(network: Network, pos: Tensor, normal: Tensor | None, extra: tuple) -> Tensor:
    with torch.no_grad():
        return network(pos, normal, *extra)


def measure(
    network: Network,
    pos: Tensor,
    normal: Tensor | None = None,
    *extra: Tensor,
    equivariant: bool = False,
    trials: int = 3,
    rotations: bool = True,
    translation_scale: float = 10.0,
    permutations: bool = True,
    seed: int = 0,
) -> InvarianceReport:
    """Measure how far ``network`` is from invariance (or equivariance) on a batch.

    Args:
        network: ``network(pos (B, N, 3), normal (B, N, 3) | None, *extra) -> out``, with ``out`` either per
            shape ``(B, ...)`` or per point ``(B, N, ...)`` (recognised by its second dimension being ``N``).
        pos, normal: the batch.
        extra: further inputs passed unchanged (e.g. a segmentation network's ``category (B,)``).
        equivariant: check ``f(T x) = R f(x)`` for outputs whose last dimension is 3, instead of invariance.
        trials: number of random transforms.
        rotations: include random rotations.
        translation_scale: standard deviation of the random translations (0 to disable).
        permutations: include random permutations of the points.
        seed: seed of the transforms.
    """
    generator = torch.Generator().manual_seed(seed)
    reference = _apply(network, pos, normal, extra)
    per_point = reference.dim() >= 2 and reference.shape[1] == pos.shape[1]
    errors, flips, scales = [], [], []
    for _ in range(trials):
        rot, shift, perm = random_transform(
            pos, generator, rotations=rotations, translation_scale=translation_scale, permutations=permutations
        )
        t_pos = _permute(rotate(pos, rot) + shift, perm)
        t_normal = None if normal is None else _permute(rotate(normal, rot), perm)
        out = _apply(network, t_pos, t_normal, extra)
        expected = reference
        if per_point:
            flat = expected.reshape(expected.shape[0], expected.shape[1], -1)
            expected = _permute(flat, perm).reshape(out.shape)
        if equivariant:
            if expected.shape[-1] != 3:
                raise ValueError(f"equivariant outputs must end in 3 coordinates; got {tuple(expected.shape)}")
            r = rot.reshape(rot.shape[0], *([1] * (expected.dim() - 2)), 3, 3)
            expected = (expected.unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2)
        diff = (out - expected).abs()
        errors.append(diff.flatten())
        scales.append(expected.abs().max())
        if not equivariant and out.dim() >= 2:
            flips.append((out.argmax(-1) != expected.argmax(-1)).double().flatten())
    err = torch.cat(errors).double()
    scale = torch.stack(scales).max().double().clamp_min(torch.finfo(pos.dtype).tiny)
    return InvarianceReport(
        max_abs=float(err.max()),
        mean_abs=float(err.mean()),
        max_rel=float(err.max() / scale),
        flip_rate=float(torch.cat(flips).mean()) if flips else 0.0,
        trials=trials,
        dtype=pos.dtype,
    )


def assert_invariant(
    network: Network,
    pos: Tensor,
    normal: Tensor | None = None,
    *extra: Tensor,
    atol: float | None = None,
    rtol: float | None = None,
    **kwargs: object,
) -> InvarianceReport:
    """Raise ``AssertionError`` with the measured errors unless ``network`` is invariant within tolerance.

    Tolerances default by dtype (float64: ``atol = 1e-8``; float32: ``rtol = 1e-3``). Keyword arguments go to
    :func:`measure`. Returns the report.
    """
    report = measure(network, pos, normal, *extra, **kwargs)
    if not report.within(atol, rtol):
        raise AssertionError(f"not invariant: {report} (atol={atol}, rtol={rtol})")
    return report


def assert_equivariant(
    network: Network,
    pos: Tensor,
    normal: Tensor | None = None,
    *extra: Tensor,
    atol: float | None = None,
    rtol: float | None = None,
    **kwargs: object,
) -> InvarianceReport:
    """Raise ``AssertionError`` unless ``network``'s vector outputs rotate with the input (``f(T x) = R f(x)``)."""
    report = measure(network, pos, normal, *extra, equivariant=True, **kwargs)
    if not report.within(atol, rtol):
        raise AssertionError(f"not equivariant: {report} (atol={atol}, rtol={rtol})")
    return report


def frame_equivariance_error(moved: Tensor, reference: Tensor, rotation: Tensor) -> Tensor:
    """Per-shape mean ``‖O(x Rᵀ) − O(x) Rᵀ‖_F`` of predicted orientations: 0 for exactly equivariant frames, up to
    ``2√3`` for unrelated ones.

    Shapes:
        ``moved, reference (B, ..., 3, 3)`` (orientations of the rotated and of the unrotated shapes, rows = axes),
        ``rotation (B, 3, 3)`` → ``(B,)`` float64.
    """
    r = rotation.to(reference.dtype).reshape(rotation.shape[0], *([1] * (reference.dim() - 3)), 3, 3)
    error = (moved.double() - (reference @ r.transpose(-1, -2)).double()).norm(dim=(-2, -1))
    return error.flatten(1).mean(dim=1)


def measure_frame_equivariance(orientations: Callable[[Tensor], tuple[Tensor, ...]], pos: Tensor, *,
                               trials: int = 1, seed: int = 0) -> float:
    """Mean :func:`frame_equivariance_error` of ``orientations(pos) -> (B, S, 3, 3), ...`` (e.g. PaRot's local and
    global frames, averaged) over ``trials`` random rotations per shape. Run it in ``eval()`` mode."""
    generator = torch.Generator().manual_seed(seed)
    errors = []
    with torch.no_grad():
        reference = orientations(pos)
        for _ in range(trials):
            rotation = random_rotations(pos.shape[0], generator=generator).to(pos.dtype)
            moved = orientations(rotate(pos, rotation))
            errors += [frame_equivariance_error(m, o, rotation) for m, o in zip(moved, reference)]
    return float(torch.stack(errors).mean())
