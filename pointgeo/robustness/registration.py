"""Robustness reports for registration: RR, IR, RRE and RTE against the rotation angle applied to one cloud.

Registration models are :class:`Registrar`\\ s: objects with ``register_pair(src_pos (N, 3), tgt_pos (M, 3)) ->``
:class:`~pointgeo.geometry.registration.RegistrationResult` whose correspondences index the given clouds. A
checkpoint whose task has ``register_pair`` is one; :class:`FPFHRegistrar` (``fpfh_ransac``) adapts the classical
FPFH + RANSAC baseline (:func:`pointgeo.geometry.registration.register_fpfh_ransac`).

Protocol, for every test pair ``p`` of a registration datamodule (its unrotated test split, ``FragmentPair``
samples), every angle bin ``[θ_b, θ_{b+1})`` of ``angle_bins`` equal bins over 0°–180° and ``r < n_rotations``:

* a rotation about an axis drawn uniformly on the sphere (Haar-distributed axis) by an angle drawn uniformly in the
  bin (stratified: every bin gets the same number of rotations), from a generator seeded by
  ``(seed, p, b, r)``, so every model, machine and run sees the same rotations;
* applied to ``rotated_cloud`` (source or target) about its own origin, the pose updated to match, by
  :func:`pointgeo.geometry.apply_pair_motion` (the datamodules' declaration ``FRAGMENT_PAIR_FIELDS``);
* every registrar registers the moved pair. Per bin: IR (inlier ratio of its correspondences under the truth,
  0.1 m), RR (the rotated benchmark's mean-distance test, ``mean_p ‖T̂p − T*p‖ < 0.2`` m; a failed registration,
  ``success=False``, is never accepted: it enters the metrics as a NaN pose), RRE and RTE over the accepted pairs,
  each averaged per scene and then over scenes (:mod:`pointgeo.metrics.registration`), plus the failures and the
  mean time per registration.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pointgeo import __version__
from pointgeo.datamodules.base import sample_seed
from pointgeo.geometry import FRAGMENT_PAIR_FIELDS, apply_pair_motion, axis_angle_to_matrix, knn
from pointgeo.geometry.registration import RegistrationResult, register_fpfh_ransac
from pointgeo.metrics.registration import InlierRatio, RegistrationRecall, RelativeRotationError, \
    RelativeTranslationError

FPFH_NAME = "fpfh_ransac"
"""The built-in registrar's name on the command line and in reports."""
METRICS = ("registration_recall", "inlier_ratio", "rre_degrees", "rte")


@runtime_checkable
class Registrar(Protocol):
    """A registration model: ``register_pair(src_pos (N, 3), tgt_pos (M, 3))`` returns a
    :class:`~pointgeo.geometry.registration.RegistrationResult` (transform source → target, correspondences
    indexing the given clouds, ``success``)."""

    def register_pair(self, src_pos: Tensor, tgt_pos: Tensor) -> RegistrationResult: ...


@dataclass
class FPFHRegistrar:
    """FPFH + RANSAC (+ ICP) as a :class:`Registrar`: :func:`~pointgeo.geometry.registration.register_fpfh_ransac`
    with these settings; its correspondences (between voxel means) are mapped to the nearest given point of each
    cloud, so they index the clouds passed in like every registrar's."""

    voxel_size: float = 0.025
    seed: int = 0
    max_iterations: int = 50_000
    refine: bool = True

    def register_pair(self, src_pos: Tensor, tgt_pos: Tensor) -> RegistrationResult:
        result, small_src, small_tgt = register_fpfh_ransac(
            src_pos.double(), tgt_pos.double(), voxel_size=self.voxel_size, seed=self.seed,
            max_iterations=self.max_iterations, refine=self.refine)
        if len(result.correspondences):
            nearest = []
            for small, given, column in ((small_src, src_pos, 0), (small_tgt, tgt_pos, 1)):
                picked = small[result.correspondences[:, column]]
                nearest.append(knn(picked.float()[None], given.float()[None], 1)[0][0, :, 0])
            result.correspondences = torch.stack(nearest, -1)
        return result


@dataclass(frozen=True)
class AngleSettings:
    """``angle_bins`` equal bins over 0°–180°, ``n_rotations`` rotations per pair and bin, applied to
    ``rotated_cloud``; ``seed`` of every rotation (and of the built-in registrar's RANSAC), whose voxel size is
    ``fpfh_voxel_size``."""

    angle_bins: int = 6
    n_rotations: int = 1
    rotated_cloud: str = "source"
    seed: int = 0
    fpfh_voxel_size: float = 0.025

    def __post_init__(self) -> None:
        if not isinstance(self.angle_bins, int) or self.angle_bins < 1:
            raise ValueError(f"angle_bins must be a positive integer; got {self.angle_bins!r}")
        if not isinstance(self.n_rotations, int) or self.n_rotations < 1:
            raise ValueError(f"n_rotations must be a positive integer; got {self.n_rotations!r}")
        if self.rotated_cloud not in ("source", "target"):
            raise ValueError(f"rotated_cloud must be 'source' or 'target'; got {self.rotated_cloud!r}")
        if not self.fpfh_voxel_size > 0:
            raise ValueError(f"fpfh_voxel_size must be positive; got {self.fpfh_voxel_size!r}")

    @property
    def edges(self) -> list[float]:
        """The ``angle_bins + 1`` bin edges in degrees."""
        return [180.0 * b / self.angle_bins for b in range(self.angle_bins + 1)]


def bin_rotation(settings: AngleSettings, pair: int, bin_index: int, r: int) -> tuple[Tensor, float]:
    """Rotation ``r`` of bin ``bin_index`` for pair ``pair``: ``(3, 3)`` float64 and its angle in degrees (axis
    uniform on the sphere, angle uniform in the bin, seeded by ``(seed, pair, bin, r)``)."""
    gen = torch.Generator().manual_seed(sample_seed(settings.seed, pair, bin_index, r))
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    lo, hi = settings.edges[bin_index], settings.edges[bin_index + 1]
    degrees = lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))
    return axis_angle_to_matrix(axis, torch.tensor(math.radians(degrees), dtype=torch.float64)), degrees


class _BinTally:
    """The metrics of one registrar in one bin (or over all bins)."""

    def __init__(self, num_scenes: int) -> None:
        self.ir = InlierRatio(num_scenes)
        self.rr = RegistrationRecall("mean_distance", num_scenes)
        self.rre = RelativeRotationError("mean_distance", num_scenes)
        self.rte = RelativeTranslationError("mean_distance", num_scenes)
        self.pairs = self.failures = 0
        self.seconds = 0.0
        self.angles: list[float] = []

    def add(self, result: RegistrationResult, pair: Any, seconds: float, degrees: float | None) -> None:
        truth, scene = pair.transform.double(), pair.scene.reshape(1)
        src, tgt = pair.src_pos.double(), pair.tgt_pos.double()
        corr = result.correspondences.long().reshape(-1, 2)
        self.ir.update(src[corr[:, 0]][None], tgt[corr[:, 1]][None], truth, scene)
        estimate = result.transform.double()[None] if result.success else torch.full((1, 4, 4), float("nan"),
                                                                                      dtype=torch.float64)
        for metric in (self.rr, self.rre, self.rte):
            metric.update(estimate, truth, scene, source_points=src[None])
        self.pairs += 1
        self.failures += int(not result.success)
        self.seconds += seconds
        if degrees is not None:
            self.angles.append(degrees)

    def summary(self) -> dict[str, Any]:
        def value(metric: Any) -> float | None:
            v = float(metric.compute())
            return None if math.isnan(v) else v

        out = {"pairs": self.pairs, "failures": self.failures, "registration_recall": value(self.rr),
               "inlier_ratio": value(self.ir), "rre_degrees": value(self.rre), "rte": value(self.rte),
               "seconds_per_pair": self.seconds / max(self.pairs, 1)}
        if self.angles:
            out["angles_degrees"] = [min(self.angles), max(self.angles)]
        return out


def evaluate_registrars(registrars: list[Registrar], pairs: Iterable[Any], num_scenes: int, settings: AngleSettings,
                        *, total: int | None = None) -> list[dict[str, Any]]:
    """Per registrar, the figures of every angle bin and over all bins (see the module docstring), on unrotated
    ``pairs`` (``FragmentPair`` samples with ``src_pos``, ``tgt_pos``, ``transform (1, 4, 4)``, ``scene``,
    ``index``) from ``num_scenes`` scenes."""
    tallies = [[_BinTally(num_scenes) for _ in range(settings.angle_bins)] for _ in registrars]
    overall = [_BinTally(num_scenes) for _ in registrars]
    count = 0
    steps = None if total is None else total * settings.angle_bins * settings.n_rotations
    progress = tqdm(total=steps, desc="registration robustness", unit="pair", leave=False)
    for pair in pairs:
        count += 1
        index = int(pair.index.reshape(-1)[0])
        for b in range(settings.angle_bins):
            for r in range(settings.n_rotations):
                turn, degrees = bin_rotation(settings, index, b, r)
                moved = apply_pair_motion(pair, FRAGMENT_PAIR_FIELDS, **{settings.rotated_cloud: (turn, None)})
                for registrar, bins, everything in zip(registrars, tallies, overall):
                    start = time.perf_counter()
                    with torch.no_grad():
                        result = registrar.register_pair(moved.src_pos, moved.tgt_pos)
                    seconds = time.perf_counter() - start
                    bins[b].add(result, moved, seconds, degrees)
                    everything.add(result, moved, seconds, None)
                progress.update(1)
    progress.close()
    if count == 0:
        raise ValueError("the test split is empty: there are no pairs to register")
    return [{"bins": [t.summary() for t in bins], "overall": everything.summary(), "num_pairs": count}
            for bins, everything in zip(tallies, overall)]


def registration_table_row(result: dict[str, Any], edges: list[float]) -> dict[str, Any]:
    """One line of the comparison table: RR per bin, and IR, RRE, RTE over all bins."""
    row: dict[str, Any] = {"model": result["model"]["spec"]}
    for b, figures in enumerate(result["bins"]):
        row[f"RR {edges[b]:g}-{edges[b + 1]:g}"] = figures["registration_recall"]
    row["IR"] = result["overall"]["inlier_ratio"]
    row["RRE (deg)"] = result["overall"]["rre_degrees"]
    row["RTE"] = result["overall"]["rte"]
    row["failures"] = result["overall"]["failures"]
    return row


def run_registration_robustness(registrars: list[tuple[str, Registrar, dict[str, Any]]], dm: Any, out: Path, *,
                                data_config: str | None, settings: AngleSettings, overwrite: bool,
                                max_samples: int | None = None) -> dict[str, Any]:
    """The report of ``registrars`` (``(spec, registrar, identity)``) on the unrotated test split of the
    registration datamodule ``dm``, written to ``out`` (``report.json``, ``registration_vs_angle.png``,
    ``report.html``)."""
    from pointgeo.robustness.output import write_report
    from pointgeo.robustness.registration_output import registration_html, registration_plots

    if getattr(dm, "fields", None) is not FRAGMENT_PAIR_FIELDS:
        raise ValueError(f"{type(dm).__name__} is not a registration datamodule (its samples must be FragmentPairs, "
                         f"fields FRAGMENT_PAIR_FIELDS); use ThreeDMatchDataModule or RegistrationPairsDataModule")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be positive; got {max_samples}")
    if hasattr(dm, "set_test_rotation"):
        dm.set_test_rotation("none")
    dm.prepare_data()
    dm.setup("test")
    data = dm.dataset("test")
    size = len(data) if max_samples is None else min(max_samples, len(data))
    scenes = list(getattr(dm, "scenes", {}).get("test", [])) or ["all"]
    figures = evaluate_registrars([r for _, r, _ in registrars], (data[i] for i in range(size)), len(scenes),
                                  settings, total=size)
    results = [{"model": identity, **f} for (_, _, identity), f in zip(registrars, figures)]
    report = {
        "versions": {"pointgeo": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "platform": platform.platform()},
        "settings": {"angle_bins": settings.angle_bins, "bin_edges_degrees": settings.edges,
                     "n_rotations": settings.n_rotations, "rotated_cloud": settings.rotated_cloud,
                     "seed": settings.seed, "rotation_seeds": "sample_seed(seed, pair index, bin, rotation index)",
                     "axis": "uniform on the sphere (Haar)", "angle": "uniform within the bin",
                     "about": "the rotated cloud's origin", "registration_recall": "mean_p |T p - T* p| < 0.2 m",
                     "inlier_threshold": 0.1, "max_samples": max_samples},
        "data": {"class_path": f"{type(dm).__module__}.{type(dm).__name__}", "config": data_config,
                 "test_pairs": len(data), "evaluated_pairs": size, "scenes": scenes},
        "task": "registration",
        "metric": "registration_recall",
        "table": [registration_table_row(r, settings.edges) for r in results],
        "models": results,
    }
    write_report(report, out, overwrite=overwrite, plots=registration_plots, render=registration_html)
    return report
