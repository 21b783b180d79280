"""Rotated-test protocols: what happens to trained models when their test data is rotated.

For every test shape, the runner evaluates each model on

* the protocols ``none`` (the unrotated shape), ``z`` (about the dataset's up axis) and ``so3``, the last two over
  ``n_rotations`` rotations per shape, rotation ``r`` of shape ``i`` drawn by
  :func:`pointgeo.geometry.sample_rotations` from a generator seeded by ``(seed, i, protocol, r)``: every model,
  batch size and machine sees the same rotations. With the training rotation stored in each checkpoint this gives
  the familiar ``z/z``, ``z/SO3``, ``SO3/SO3`` table;
* an angle sweep: the score against the rotation angle about each of x, y, z, in bins of ``sweep_step`` degrees;
* the measured invariance of each protocol, defined as in :mod:`pointgeo.testing.invariance`: the maximum and mean
  absolute change of the outputs between each rotated copy and the unrotated shape, the change relative to the
  largest output, and the prediction flip rate; for networks whose invariance is learned through predicted
  orientations (PaRot), also the mean equivariance error of those orientations
  (:func:`pointgeo.testing.invariance.frame_equivariance_error`);
* per-class scores under each protocol;
* on data with a partition (part-segmentation or multi-object batches: ``instance``, else ``seg``,
  :func:`pointgeo.geometry.partition_of`), the ``piecewise`` protocol: ``n_rotations`` times per shape,
  every part moved by its own Haar rotation about its centroid and a translation (standard deviation
  ``piecewise_translation`` RMS radii of the shape), drawn by :func:`pointgeo.geometry.piecewise_motion` from a
  generator seeded by ``(seed, shape index, 3, repetition)``, applied to the fields the datamodule declares moving
  (:func:`pointgeo.geometry.move_parts`); the score and the change of the per-point outputs as for a rotation. For a
  network that predicts a partition itself (one with ``segment``, APEN), the report also holds
  :func:`pointgeo.testing.measure_apen_piecewise` per batch: its measured piecewise error with the predicted
  partition and the partition accuracy.

Rotations are applied here to the unrotated test clouds, never inside a model; which keys move is the datamodule's
declaration (:data:`pointgeo.geometry.POINT_CLOUD_FIELDS`: positions and normals together, ``x @ R^T``), applied by
:func:`pointgeo.geometry.apply_rigid_motion`. Batches are read once and every rotated copy goes to every model, on
one device, so every sample counts exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pointgeo.datamodules.base import sample_seed
from pointgeo.geometry import (
    PARTITION_KEYS,
    POINT_CLOUD_FIELDS,
    FieldSpec,
    angle_sweep,
    apply_rigid_motion,
    move_parts,
    partition_of,
    piecewise_motion,
    rotations_about_axis,
    sample_rotations,
)
from pointgeo.robustness.evaluators import Batch, Evaluator
from pointgeo.testing.invariance import InvarianceReport, frame_equivariance_error

PROTOCOLS = ("none", "z", "so3")
ROTATED = ("z", "so3")
PIECEWISE = "piecewise"
"""The protocol of per-part motions (its seeds use the protocol index 3, after :data:`PROTOCOLS`)."""
AXES = "xyz"


@dataclass(frozen=True)
class ProtocolSettings:
    """How a robustness run samples rotations: ``n_rotations`` per shape and rotated protocol, sweep bins of
    ``sweep_step`` degrees, and the ``seed`` of every rotation."""

    n_rotations: int = 4
    sweep_step: float = 15.0
    seed: int = 0
    piecewise_translation: float = 0.5
    """Standard deviation of each part's translation under the ``piecewise`` protocol, in RMS radii of the shape."""

    def __post_init__(self) -> None:
        if not isinstance(self.n_rotations, int) or self.n_rotations < 1:
            raise ValueError(f"n_rotations must be a positive integer; got {self.n_rotations!r}")
        if not self.piecewise_translation >= 0:
            raise ValueError(f"piecewise_translation must be >= 0 RMS radii; got {self.piecewise_translation}")
        if not 0 < self.sweep_step <= 360:
            raise ValueError(f"sweep_step must be in (0, 360] degrees; got {self.sweep_step}")

    @property
    def sweep_angles(self) -> Tensor:
        """``(A,)`` float64 sweep angles in radians."""
        return angle_sweep(self.sweep_step)


def rotation_table(indices: Tensor, mode: str, settings: ProtocolSettings, up_axis: str) -> Tensor:
    """``(S, n_rotations, 3, 3)`` float64 rotations of the shapes ``indices (S,)`` under protocol ``mode``, each from
    its own generator seeded by ``(seed, shape index, protocol, rotation index)``."""
    code = PROTOCOLS.index(mode)
    seeds = [sample_seed(settings.seed, int(i), code, r) for i in indices.tolist() for r in range(settings.n_rotations)]
    rotations = [sample_rotations(mode, 1, up_axis=up_axis, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.cat(rotations).reshape(len(indices), settings.n_rotations, 3, 3)


def rotate_batch(batch: Batch, rotation: Tensor, fields: FieldSpec = POINT_CLOUD_FIELDS) -> Batch:
    """A copy of ``batch`` rotated by ``rotation (B, 3, 3)`` or ``(3, 3)`` (the same for every shape): the keys
    ``fields`` declares moving, by :func:`pointgeo.geometry.apply_rigid_motion` (computed in float64, returned in
    their dtype): ``pos`` and ``normal``, and the recorded ``rotation`` becomes ``R @ previous``; other keys are
    shared."""
    rotation = rotation.to(device=batch["pos"].device, dtype=torch.float64)
    if rotation.dim() == 2:
        rotation = rotation.expand(batch["pos"].shape[0], 3, 3)
    return apply_rigid_motion(batch, fields, rotation)


def piecewise_table(batch: Batch, repetition: int, settings: ProtocolSettings) -> tuple[Tensor, Tensor, Tensor]:
    """The ``repetition``-th piecewise motion of every shape of ``batch`` (float64, on the batch's device):
    ``rotation (B, P, 3, 3)``, ``translation (B, P, 1, 3)``, ``centre (B, P, 1, 3)`` for its partition's ``P`` part
    ids, shape ``i``'s drawn from its own generator seeded by ``(seed, index_i, 3, repetition)`` (parts it lacks stay
    at the identity), so every model, batch size and machine sees the same motions."""
    parts, pos = partition_of(batch).cpu(), batch["pos"].detach().cpu()
    b, count = parts.shape[0], int(parts.max()) + 1
    rotation = torch.eye(3, dtype=torch.float64).repeat(b, count, 1, 1)
    translation = torch.zeros(b, count, 1, 3, dtype=torch.float64)
    centre = torch.zeros(b, count, 1, 3, dtype=torch.float64)
    code = len(PROTOCOLS)
    for i, index in enumerate(batch["index"].tolist()):  # one generator per shape: draws, not per-point work
        generator = torch.Generator().manual_seed(sample_seed(settings.seed, index, code, repetition))
        r, t, c = piecewise_motion(pos[i: i + 1], parts[i: i + 1], generator,
                                   translation_scale=settings.piecewise_translation)
        rotation[i, : r.shape[1]], translation[i, : r.shape[1]], centre[i, : r.shape[1]] = r[0], t[0], c[0]
    device = batch["pos"].device
    return rotation.to(device), translation.to(device), centre.to(device)


def move_batch_parts(batch: Batch, repetition: int, settings: ProtocolSettings,
                     fields: FieldSpec = POINT_CLOUD_FIELDS) -> Batch:
    """A copy of ``batch`` with every part moved by its :func:`piecewise_table` motion (the keys ``fields``
    declares moving; labels and the partition shared)."""
    return move_parts(batch, fields, partition_of(batch), *piecewise_table(batch, repetition, settings))


class MeasuredTally:
    """Per-batch figures of :func:`pointgeo.testing.measure_apen_piecewise`: mean over batches (weighted by their
    shapes) of every number, and the maximum of those named ``max_*``."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.maxima: dict[str, float] = {}
        self.count = 0

    SETTINGS = frozenset({"seed", "trials", "samples"})
    """Keys of the figures that are settings of the measurement, not figures."""

    def add(self, figures: dict, shapes: int) -> None:
        for key, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in self.SETTINGS:
                self.sums[key] = self.sums.get(key, 0.0) + float(value) * shapes
                if "max" in key.split("_")[:2]:  # max_relative_error, given_max_relative_error
                    self.maxima[key] = max(self.maxima.get(key, float("-inf")), float(value))
        self.count += shapes

    def summary(self) -> dict | None:
        if not self.count:
            return None
        return {"mean_over_batches": {k: v / self.count for k, v in self.sums.items()}, "max_over_batches":
                dict(self.maxima), "shapes": self.count}


class Tally:
    """Running sums of one model under one protocol: scores overall and per group, and output changes."""

    def __init__(self, num_groups: int) -> None:
        self.score_sum = 0.0
        self.count = 0
        self.group_sum = torch.zeros(num_groups, dtype=torch.float64)
        self.group_count = torch.zeros(num_groups, dtype=torch.float64)
        self.max_abs = 0.0
        self.abs_sum = 0.0
        self.abs_count = 0
        self.scale = 0.0
        self.flip_sum = 0.0
        self.flip_count = 0
        self.frame_error_sum = 0.0
        self.frame_error_count = 0
        self.extra_sums: dict[str, float] = {}

    def add_scores(self, scores: Tensor, groups: Tensor, extra: dict[str, Tensor] | None = None) -> None:
        """Add ``scores (B,)`` of shapes in ``groups (B,)`` (and ``extra``: the same shapes' scores under other
        conventions, by name)."""
        for key, values in (extra or {}).items():
            self.extra_sums[key] = self.extra_sums.get(key, 0.0) + float(values.double().sum())
        scores, groups = scores.double().cpu(), groups.cpu()
        self.score_sum += float(scores.sum())
        self.count += scores.numel()
        self.group_sum.index_add_(0, groups, scores)
        self.group_count.index_add_(0, groups, torch.ones_like(scores))

    def add_change(self, outputs: Tensor, reference: Tensor, predictions: Tensor, ref_predictions: Tensor) -> None:
        """Add the change of ``outputs`` from the unrotated ``reference`` (entries that are ``-inf`` in both, the
        masked parts of a segmentation, do not count) and the prediction flips."""
        masked = torch.isneginf(outputs) & torch.isneginf(reference)
        diff = torch.where(masked, 0.0, outputs.double() - reference.double()).abs()
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.abs_sum += float(diff.sum())
        self.abs_count += int((~masked).sum())
        self.scale = max(self.scale, float(torch.where(masked, 0.0, reference.double()).abs().max()))
        self.flip_sum += float((predictions != ref_predictions).sum())
        self.flip_count += predictions.numel()

    def add_frame_errors(self, errors: Tensor) -> None:
        """Add the per-shape orientation equivariance errors ``(B,)``."""
        self.frame_error_sum += float(errors.sum())
        self.frame_error_count += errors.numel()

    def summary(self, evaluator: Evaluator, class_names: Sequence[str], dtype: torch.dtype, rotated: bool) -> dict:
        """Plain-number figures; the invariance figures of a rotated protocol follow the harness's report."""
        per_class = self.group_sum / self.group_count.clamp_min(1)
        seen = self.group_count > 0
        out = {
            evaluator.score_key: self.score_sum / max(self.count, 1),
            evaluator.class_score_key: float(per_class[seen].mean()) if bool(seen.any()) else None,
            evaluator.per_class_key: {name: (float(v) if s else None)
                                      for name, v, s in zip(class_names, per_class, seen.tolist())},
            "evaluations": self.count,
            **{key: value / max(self.count, 1) for key, value in self.extra_sums.items()},
        }
        if rotated:
            report = InvarianceReport(
                max_abs=self.max_abs, mean_abs=self.abs_sum / max(self.abs_count, 1),
                max_rel=self.max_abs / max(self.scale, torch.finfo(dtype).tiny),
                flip_rate=self.flip_sum / max(self.flip_count, 1), trials=self.count, dtype=dtype,
            )
            out.update(max_logit_change=report.max_abs, mean_logit_change=report.mean_abs,
                       max_relative_logit_change=report.max_rel, flip_rate=report.flip_rate,
                       invariant_within_tolerance=report.within(),
                       mean_orientation_error=(self.frame_error_sum / self.frame_error_count
                                               if self.frame_error_count else None))
        return out


def evaluate(
    evaluators: Sequence[Evaluator],
    batches: Iterable[Batch],
    class_names: Sequence[str],
    up_axis: str,
    settings: ProtocolSettings,
    dtype: torch.dtype,
    *,
    total: int | None = None,
    fields: FieldSpec = POINT_CLOUD_FIELDS,
) -> list[dict]:
    """Run every protocol and the sweep for each of ``evaluators`` over the unrotated test ``batches`` (``total``
    of them, for the progress bar); returns one dict of plain Python numbers per evaluator. ``fields`` is the
    datamodule's declaration of which batch keys move under a rotation."""
    tallies = [{mode: Tally(len(class_names)) for mode in (*PROTOCOLS, PIECEWISE)} for _ in evaluators]
    measured = [MeasuredTally() for _ in evaluators]
    angles = settings.sweep_angles
    sweep_rotations = {axis: rotations_about_axis(angles, axis) for axis in AXES}
    sweep_sums = [{axis: torch.zeros(len(angles), dtype=torch.float64) for axis in AXES} for _ in evaluators]
    shapes = 0
    for batch in tqdm(batches, total=total, desc="robustness", unit="batch", leave=False):
        shapes += batch["pos"].shape[0]
        references, ref_scores, ref_frames = [], [], []
        for ev, tally in zip(evaluators, tallies):
            ref, frames = ev.outputs_and_orientations(batch)
            references.append((ref, ev.predictions(ref)))
            ref_frames.append(frames)
            ref_scores.append(ev.scores(ref, batch))
            tally["none"].add_scores(ref_scores[-1], ev.groups(batch), ev.extra_scores(ref, batch))
        for mode in ROTATED:
            table = rotation_table(batch["index"].cpu(), mode, settings, up_axis)
            for r in range(settings.n_rotations):
                rotated = rotate_batch(batch, table[:, r], fields)
                for ev, tally, (ref, ref_pred), frames in zip(evaluators, tallies, references, ref_frames):
                    out, moved = ev.outputs_and_orientations(rotated)
                    tally[mode].add_scores(ev.scores(out, batch), ev.groups(batch), ev.extra_scores(out, batch))
                    tally[mode].add_change(out, ref, ev.predictions(out), ref_pred)
                    if frames is not None:
                        tally[mode].add_frame_errors(torch.stack([
                            frame_equivariance_error(m, o, table[:, r].to(o.device)) for m, o in zip(moved, frames)
                        ]).mean(0))
        if any(key in batch for key in PARTITION_KEYS):
            for r in range(settings.n_rotations):
                moved = move_batch_parts(batch, r, settings, fields)
                for ev, tally, (ref, ref_pred) in zip(evaluators, tallies, references):
                    out = ev.outputs(moved)
                    tally[PIECEWISE].add_scores(ev.scores(out, batch), ev.groups(batch), ev.extra_scores(out, batch))
                    tally[PIECEWISE].add_change(out, ref, ev.predictions(out), ref_pred)
            for ev, tally in zip(evaluators, measured):
                figures = ev.measured_piecewise(batch, sample_seed(settings.seed, int(batch["index"][0]), 3),
                                                trials=settings.n_rotations,
                                                translation_scale=settings.piecewise_translation)
                if figures is not None:
                    tally.add(figures, batch["pos"].shape[0])
        for axis in AXES:
            for a, rotation in enumerate(sweep_rotations[axis]):
                rotated = rotate_batch(batch, rotation, fields) if angles[a] != 0 else None  # 0°: the unrotated shape
                for ev, sums, ref in zip(evaluators, sweep_sums, ref_scores):
                    scores = ref if rotated is None else ev.scores(ev.outputs(rotated), batch)
                    sums[axis][a] += float(scores.sum())
    if shapes == 0:
        raise ValueError("the test split is empty: there is nothing to evaluate")
    modes = (*PROTOCOLS, PIECEWISE) if tallies[0][PIECEWISE].count else PROTOCOLS
    return [
        {
            "metric": ev.score_key,
            "class_metric": ev.class_score_key,
            "per_class_metric": ev.per_class_key,
            "protocols": {mode: tally[mode].summary(ev, class_names, dtype, mode != "none") for mode in modes},
            "sweep": {"angles_degrees": torch.rad2deg(angles).tolist(),
                      **{axis: (sums[axis] / shapes).tolist() for axis in AXES}},
            "num_shapes": shapes,
            **({"measured_piecewise": m.summary()} if m.count else {}),
        }
        for ev, tally, sums, m in zip(evaluators, tallies, sweep_sums, measured)
    ]
