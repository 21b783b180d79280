"""The invariance / equivariance harness: measure, and assert, what a network guarantees under E(3).

A network ``f(pos, normal, *extra)`` is **invariant** when ``f(x R^T + t, n R^T) = f(x, n)`` for rotations ``R``
and translations ``t``, and, for per-point outputs, **permutation equivariant** (``f(x[p]) = f(x)[p]``; for
per-shape outputs, invariant). It is **equivariant** (vector outputs ``(..., 3)``) when
``f(x R^T + t) = f(x) R^T``. The harness draws Haar-random rotations (float64, seeded), translations of scale
``translation_scale`` times each cloud's RMS radius and random permutations (32 transforms per sample by default,
batched), runs the network on the transformed clouds, and reports per sample the maximum error divided by the output
scale ``max(1, max |f(x)|)`` (:func:`output_scale`), the prediction flip rate, and the **sensitivity**: how much the
outputs change when the cloud is stretched (by 1.3 and 0.8 along two axes), so that a network whose output does not depend on its input
fails.

Put the network in ``eval()`` mode and in the dtype of the inputs first; tolerances by dtype follow e3nn and
nequip: max |Δ| ≤ ``1e-8`` (float64) and ``1e-3`` (float32) times ``max(1, max |f(x)|)``.

Networks whose invariance is learned through predicted orientations (PaRot: ``orientations(pos)``) are exactly
invariant only as far as those orientations are equivariant; :func:`measure_frame_equivariance` measures that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pointgeo.geometry import (
    POINT_CLOUD_FIELDS,
    FieldSpec,
    apply_piecewise_motion,
    apply_rigid_motion,
    piecewise_motion,
    random_rotations,
)

Network = Callable[..., Tensor]

TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3}
"""The bound on the error relative to the output scale by dtype (e3nn / nequip practice); other dtypes: 1e-3."""

OUTPUT_FIELDS = FieldSpec(vectors=("output",), lattice=("orientations",))
"""How the outputs the harness compares move: an equivariant network's vector output ``(B, M, 3)`` rotates, predicted
orientations ``(B, 3, 3)`` (rows = axes) rotate their rows like a lattice."""


def output_scale(reference: Tensor) -> Tensor:
    """``(B,)`` the scale errors are measured against: ``max(1, max |f(x)|)`` of each sample's outputs, so the
    bound is absolute for outputs below 1 and relative to the largest output above."""
    return reference.detach().abs().flatten(1).amax(1).double().clamp_min(1.0)


@dataclass(frozen=True)
class InvarianceReport:
    """Errors measured over all trials: per sample, ``max |f(T x) - f(x)|`` over its ``trials`` transforms
    divided by :func:`output_scale`; and how much the outputs react to a non-rigid change of the input."""

    max_abs: float
    mean_abs: float
    max_rel: float
    flip_rate: float
    trials: int
    dtype: torch.dtype
    per_sample: tuple[float, ...] = ()
    """Worst relative error of each sample of the batch."""
    sensitivity: float | None = None
    """Smallest relative change of a sample's outputs when the sample is stretched (``x`` by 1.3, ``z`` by 0.8)
    (``None``: not measured, e.g. by the robustness runner, which compares rotated test sets only)."""

    def within(self, tolerance: float | None = None) -> bool:
        """Whether ``max_rel <= tolerance`` (default :data:`TOLERANCE` of the dtype) and the outputs depend on the
        input: ``sensitivity`` above zero and above 10 times the error (a constant network fails)."""
        tol = TOLERANCE.get(self.dtype, 1e-3) if tolerance is None else tolerance
        sensitive = self.sensitivity is None or self.sensitivity > max(0.0, 10 * self.max_rel)
        return self.max_rel <= tol and sensitive

    def __str__(self) -> str:
        sensitivity = "" if self.sensitivity is None else f", sensitivity {self.sensitivity:.3e}"
        return (f"max |Δ| / max(1, max |f|) = {self.max_rel:.3e} (max |Δ| = {self.max_abs:.3e}, mean "
                f"{self.mean_abs:.3e}), prediction flip rate {100 * self.flip_rate:.2f} %{sensitivity}, over "
                f"{self.trials} transforms per sample ({self.dtype})")


def random_transform(
    pos: Tensor, generator: torch.Generator, *, rotations: bool, translation_scale: float, permutations: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """A random rotation ``(B, 3, 3)``, translation ``(B, 1, 3)`` (standard deviation ``translation_scale`` times
    each cloud's RMS radius) and permutation ``(B, N)`` for a batch."""
    b, n, _ = pos.shape
    rot = random_rotations(b, generator=generator) if rotations else torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    x = pos.double()
    size = (x - x.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()[:, None, None]
    shift = translation_scale * size * torch.randn(b, 1, 3, generator=generator, dtype=torch.float64)
    perm = (torch.stack([torch.randperm(n, generator=generator) for _ in range(b)]) if permutations
            else torch.arange(n).repeat(b, 1))
    return rot, shift, perm


def _permute(x: Tensor, perm: Tensor) -> Tensor:
    return torch.gather(x, 1, perm.to(x.device)[..., None].expand(-1, -1, x.shape[-1]))


def _apply(network: Network, pos: Tensor, normal: Tensor | None, extra: tuple, chunk: int) -> Tensor:
    with torch.no_grad():
        outs = [network(pos[i : i + chunk], None if normal is None else normal[i : i + chunk],
                        *(e[i : i + chunk] for e in extra)) for i in range(0, pos.shape[0], chunk)]
    return torch.cat(outs)


def _stretch(pos: Tensor) -> Tensor:
    """Each cloud stretched about its centroid, ``x`` by 1.3 and ``z`` by 0.8 (not a rigid motion)."""
    c = pos.mean(1, keepdim=True)
    return (pos - c) * torch.tensor([1.3, 1.0, 0.8], dtype=pos.dtype, device=pos.device) + c


def measure(
    network: Network,
    pos: Tensor,
    normal: Tensor | None = None,
    *extra: Tensor,
    equivariant: bool = False,
    trials: int = 32,
    rotations: bool = True,
    translation_scale: float = 10.0,
    permutations: bool = True,
    seed: int = 0,
    chunk: int = 64,
) -> InvarianceReport:
    """Measure how far ``network`` is from invariance (or equivariance) on a batch.

    Every sample is run under ``trials`` random transforms at once (batches of ``chunk`` clouds), in the dtype of
    ``pos``; the transforms are built in float64 and the moved clouds rounded to that dtype.

    Args:
        network: ``network(pos (B, N, 3), normal (B, N, 3) | None, *extra) -> out``, with ``out`` either per
            shape ``(B, ...)`` or per point ``(B, N, ...)`` (recognised by its second dimension being ``N``).
        pos, normal: the batch.
        extra: further per-sample inputs (e.g. a segmentation network's ``category (B,)``), repeated with
            their sample.
        equivariant: check ``f(T x) = R f(x)`` for outputs whose last dimension is 3, instead of invariance.
        trials: random transforms per sample.
        rotations: include Haar-random rotations.
        translation_scale: standard deviation of the random translations in units of each cloud's RMS radius.
        permutations: include random permutations of the points.
        seed: seed of the transforms.
        chunk: clouds per network call.
    """
    generator = torch.Generator().manual_seed(seed)
    b, n, _ = pos.shape
    reference = _apply(network, pos, normal, extra, chunk)
    stretched = _apply(network, _stretch(pos), normal, extra, chunk)
    per_point = reference.dim() >= 2 and reference.shape[1] == n
    rep = pos.repeat_interleave(trials, 0)  # (B T, N, 3), sample-major
    rot, shift, perm = random_transform(
        rep, generator, rotations=rotations, translation_scale=translation_scale, permutations=permutations
    )
    clouds = {"pos": rep} if normal is None else {"pos": rep, "normal": normal.repeat_interleave(trials, 0)}
    moved = apply_rigid_motion(clouds, POINT_CLOUD_FIELDS, rot, shift[:, 0])  # in float64, rounded once
    t_pos = _permute(moved["pos"], perm)
    t_normal = None if normal is None else _permute(moved["normal"], perm)
    out = _apply(network, t_pos, t_normal, tuple(e.repeat_interleave(trials, 0) for e in extra), chunk)
    expected = reference.repeat_interleave(trials, 0)
    if per_point:
        flat = expected.reshape(expected.shape[0], n, -1)
        expected = _permute(flat, perm).reshape(out.shape)
    if equivariant:
        if expected.shape[-1] != 3:
            raise ValueError(f"equivariant outputs must end in 3 coordinates; got {tuple(expected.shape)}")
        vectors = {"output": expected.reshape(expected.shape[0], -1, 3)}
        expected = apply_rigid_motion(vectors, OUTPUT_FIELDS, rot.to(expected.dtype))["output"].reshape(expected.shape)
    scale = output_scale(reference)  # (B,)
    diff = (out - expected).abs().double().reshape(b, trials, -1)
    per_sample = diff.flatten(1).amax(1) / scale
    change = (stretched - reference).abs().double().flatten(1).amax(1) / scale
    flips = ((out.argmax(-1) != expected.argmax(-1)).double().mean().item()
             if not equivariant and out.dim() >= 2 else 0.0)
    return InvarianceReport(
        per_sample=tuple(per_sample.tolist()),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        max_rel=float(per_sample.max()),
        flip_rate=flips,
        trials=trials,
        dtype=pos.dtype,
        sensitivity=float(change.min()),
    )


def measure_piecewise(
    network: Network,
    pos: Tensor,
    normal: Tensor | None,
    parts: Tensor,
    *extra: Tensor,
    pass_parts: bool = False,
    trials: int = 32,
    translation_scale: float = 10.0,
    permutations: bool = True,
    seed: int = 0,
    chunk: int = 64,
) -> InvarianceReport:
    """Measure how far ``network``'s outputs are from invariance under **piecewise** rigid motions: every part of
    every sample moved by its own seeded Haar rotation (about the part's centroid) and translation
    (:func:`piecewise_motion`), the points then permuted; per-point outputs ``(B, N, ...)`` are compared point by
    point, per-shape outputs directly, with the bound and sensitivity of :func:`measure`.

    Args:
        parts: ``(B, N)`` integer part labels (``0 … P-1``), the partition the motions follow.
        pass_parts: call ``network(pos, normal, *extra, parts)`` with the (permuted) labels, for networks given the
            ground-truth partition; otherwise ``network(pos, normal, *extra)``.
        Others as in :func:`measure`.
    """
    if parts.shape != pos.shape[:2] or parts.is_floating_point() or int(parts.min()) < 0:
        raise ValueError(f"parts must be non-negative integer labels (B, N) = {tuple(pos.shape[:2])}")
    generator = torch.Generator().manual_seed(seed)
    b, n, _ = pos.shape
    extras = (*extra, parts) if pass_parts else extra
    reference = _apply(network, pos, normal, extras, chunk)
    stretched = _apply(network, _stretch(pos), normal, extras, chunk)
    per_point = reference.dim() >= 2 and reference.shape[1] == n
    rep = lambda t: t.repeat_interleave(trials, 0)  # noqa: E731  (sample-major)
    rot, shift, centre = piecewise_motion(rep(pos), rep(parts), generator, translation_scale=translation_scale)
    moved, turned = apply_piecewise_motion(rep(pos), None if normal is None else rep(normal), rep(parts), rot, shift,
                                           centre)
    perm = (torch.stack([torch.randperm(n, generator=generator) for _ in range(b * trials)]) if permutations
            else torch.arange(n).repeat(b * trials, 1))
    t_pos = _permute(moved.to(pos.dtype), perm)
    t_normal = None if turned is None else _permute(turned.to(normal.dtype), perm)
    t_extra = tuple(rep(e) for e in extra) + ((_permute(rep(parts)[..., None], perm)[..., 0],) if pass_parts else ())
    out = _apply(network, t_pos, t_normal, t_extra, chunk)
    expected = rep(reference)
    if per_point:
        expected = _permute(expected.reshape(expected.shape[0], n, -1), perm).reshape(out.shape)
    scale = output_scale(reference)
    diff = (out - expected).abs().double().reshape(b, trials, -1)
    per_sample = diff.flatten(1).amax(1) / scale
    change = (stretched - reference).abs().double().flatten(1).amax(1) / scale
    flips = float((out.argmax(-1) != expected.argmax(-1)).double().mean()) if out.dim() >= 2 else 0.0
    return InvarianceReport(max_abs=float(diff.max()), mean_abs=float(diff.mean()), max_rel=float(per_sample.max()),
                            flip_rate=flips, trials=trials, dtype=pos.dtype, per_sample=tuple(per_sample.tolist()),
                            sensitivity=float(change.min()))


def assert_invariant(
    network: Network,
    pos: Tensor,
    normal: Tensor | None = None,
    *extra: Tensor,
    tolerance: float | None = None,
    **kwargs: object,
) -> InvarianceReport:
    """Raise ``AssertionError`` with the measured errors unless ``network`` is invariant within ``tolerance``
    relative to :func:`output_scale` (default by dtype: float64 ``1e-8``, float32 ``1e-3``) and its outputs depend
    on the input (see :meth:`InvarianceReport.within`). Keyword arguments go to :func:`measure`."""
    report = measure(network, pos, normal, *extra, **kwargs)
    if not report.within(tolerance):
        raise AssertionError(f"not invariant: {report} (tolerance {tolerance or TOLERANCE.get(pos.dtype, 1e-3)})")
    return report


def assert_equivariant(
    network: Network,
    pos: Tensor,
    normal: Tensor | None = None,
    *extra: Tensor,
    tolerance: float | None = None,
    **kwargs: object,
) -> InvarianceReport:
    """Raise ``AssertionError`` unless ``network``'s vector outputs rotate with the input (``f(T x) = R f(x)``)."""
    report = measure(network, pos, normal, *extra, equivariant=True, **kwargs)
    if not report.within(tolerance):
        raise AssertionError(f"not equivariant: {report} (tolerance {tolerance or TOLERANCE.get(pos.dtype, 1e-3)})")
    return report


def frame_equivariance_error(moved: Tensor, reference: Tensor, rotation: Tensor) -> Tensor:
    """Per-shape mean ``‖O(x Rᵀ) − O(x) Rᵀ‖_F`` of predicted orientations: 0 for exactly equivariant frames, up to
    ``2√3`` for unrelated ones.

    Shapes:
        ``moved, reference (B, ..., 3, 3)`` (orientations of the rotated and of the unrotated shapes, rows = axes),
        ``rotation (B, 3, 3)`` → ``(B,)`` float64.
    """
    per_shape = reference[0].numel() // 9
    frames = {"orientations": reference.reshape(-1, 3, 3)}
    r = rotation.to(reference.dtype).repeat_interleave(per_shape, 0)
    expected = apply_rigid_motion(frames, OUTPUT_FIELDS, r)["orientations"].reshape(reference.shape)
    error = (moved.double() - expected.double()).norm(dim=(-2, -1))
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
            moved = orientations(apply_rigid_motion({"pos": pos}, POINT_CLOUD_FIELDS, rotation)["pos"])
            errors += [frame_equivariance_error(m, o, rotation) for m, o in zip(moved, reference)]
    return float(torch.stack(errors).mean())
