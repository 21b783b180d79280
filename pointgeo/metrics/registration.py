"""Registration metrics of the 3DMatch / 3DLoMatch benchmark (torchmetrics), averaged per scene, then over scenes.

Notation: ``T* = [R*|t*]`` is the ground-truth pose mapping the source fragment into the target's frame,
``T̂ = [R̂|t̂]`` the estimate, ``(p_k, q_k)`` the putative correspondences (source point, target point) of a pair.

* :class:`InlierRatio` (IR): per pair ``(1/K) Σ_k 1[‖T* p_k − q_k‖ < τ₁]``, ``τ₁ = 0.1`` m.
* :class:`FeatureMatchingRecall` (FMR): the fraction of pairs with ``IR > τ₂``, ``τ₂ = 0.05``.
  IR and FMR count **every** pair of the benchmark (consecutive fragments included).
* :class:`RegistrationRecall` (RR), under one of two definitions, named by ``definition``:

  - ``"information"`` — the official test (Choi et al. 2015, Redwood protocol, as in 3DMatch / PREDATOR / RoITr):
    ``ΔT = T*⁻¹ T̂``, ``ξ = (Δt, q_xyz)`` with ``q = (w, x, y, z)`` the unit quaternion of ``ΔR`` (``w ≥ 0``),
    accepted if ``ξᵀ Σ ξ / Σ₀₀ ≤ 0.2²`` with ``Σ`` the pair's 6×6 ``gt.info`` matrix (the approximation of the RMSE
    over the true correspondences). Only **non-consecutive** pairs (``|i − j| > 1``) count; others are ignored.
    A pair whose information matrix is all zero (the official files hold one) is never accepted, as in the
    reference code where the test divides by zero.
  - ``"mean_distance"`` — the rotated benchmark's test (RoITr, GeoTransformer's ``compute_registration_rmse``):
    accepted if ``mean_p ‖T̂ p − T* p‖ < 0.2`` m over all source points ``p``; every pair counts.

* :class:`RelativeRotationError` (RRE, degrees, ``arccos((tr(R̂ᵀ R*) − 1) / 2)``) and
  :class:`RelativeTranslationError` (RTE, metres, ``‖t̂ − t*‖``) over the **accepted** pairs of either definition.

Averaging, as the benchmark does: each pair carries the index of its scene (``scene (B,)``, ``0 ≤ scene <
num_scenes``); a metric is the mean over a scene's pairs, then the unweighted mean over the scenes that have pairs
(for RRE/RTE: that have accepted pairs). The states are per-scene sums and counts, so they reduce under DDP.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from pointgeo.geometry import (
    invert_rigid,
    matrix_to_quaternion,
    rotation_error_degrees,
    transform_points,
    translation_error,
)

RecallDefinition = Literal["information", "mean_distance"]
INLIER_THRESHOLD = 0.1
"""τ₁: a correspondence is an inlier if the ground truth maps its source point within 0.1 m of its target point."""
INLIER_RATIO_THRESHOLD = 0.05
"""τ₂: a pair's features match if more than 5 % of its correspondences are inliers."""
RMSE_THRESHOLD = 0.2
"""A pair is registered if the (approximated) RMSE, or the mean distance, is below 0.2 m."""


def _mask_like(points: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    if mask.shape != points.shape[:2]:
        raise ValueError(f"mask must have shape {tuple(points.shape[:2])}; got {tuple(mask.shape)}")
    return mask.bool()


def _check_pose(name: str, value: Tensor, batch: int) -> None:
    if not isinstance(value, Tensor) or value.shape != (batch, 4, 4):
        raise ValueError(f"{name} must have shape ({batch}, 4, 4); got {getattr(value, 'shape', type(value))}")


def inlier_ratio(source: Tensor, target: Tensor, transform: Tensor, mask: Tensor | None = None,
                 threshold: float = INLIER_THRESHOLD) -> Tensor:
    """Per pair, the fraction of correspondences ``(source[b, k], target[b, k])`` that ``transform (B, 4, 4)`` maps
    within ``threshold``: ``(B, K, 3), (B, K, 3) -> (B,)``; ``mask (B, K)`` marks the real ones (a pair without any
    has ratio 0)."""
    if source.dim() != 3 or source.shape != target.shape or source.shape[-1] != 3:
        raise ValueError(f"source and target correspondences must both be (B, K, 3); got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    _check_pose("transform", transform, source.shape[0])
    valid = _mask_like(source, mask)
    dist = (transform_points(source.double(), transform.double()) - target.double()).norm(dim=-1)
    inliers = ((dist < threshold) & valid).sum(-1).double()
    return inliers / valid.sum(-1).clamp_min(1).double()


def information_error(estimate: Tensor, truth: Tensor, information: Tensor) -> Tensor:
    """The official test statistic ``ξᵀ Σ ξ / Σ₀₀`` (m², compared with 0.2²) of ``(B, 4, 4)`` estimates, truths and
    ``information (B, 6, 6)``; ``inf`` where ``Σ₀₀ = 0``."""
    delta = invert_rigid(truth.double()) @ estimate.double()
    q = matrix_to_quaternion(delta[:, :3, :3])
    xi = torch.cat([delta[:, :3, 3], q[:, 1:]], dim=-1)
    info = information.double()
    quad = (xi.unsqueeze(1) @ info @ xi.unsqueeze(-1)).reshape(-1)
    scale = info[:, 0, 0]
    return torch.where(scale > 0, quad / scale.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.full_like(quad, float("inf")))


def mean_distance_error(estimate: Tensor, truth: Tensor, points: Tensor, mask: Tensor | None = None) -> Tensor:
    """``mean_p ‖T̂ p − T* p‖`` over the source points ``points (B, N, 3)`` (``mask (B, N)``): ``(B,)`` metres."""
    valid = _mask_like(points, mask)
    p = points.double()
    dist = (transform_points(p, estimate.double()) - transform_points(p, truth.double())).norm(dim=-1)
    return (dist * valid).sum(-1) / valid.sum(-1).clamp_min(1)


def registration_accepted(estimate: Tensor, truth: Tensor, definition: RecallDefinition, *,
                          information: Tensor | None = None, source_points: Tensor | None = None,
                          source_mask: Tensor | None = None, threshold: float = RMSE_THRESHOLD) -> Tensor:
    """``(B,)`` bool: whether each estimate registers its pair under ``definition`` (see the module docstring)."""
    if not isinstance(estimate, Tensor) or estimate.dim() != 3:
        raise ValueError(f"estimate must have shape (B, 4, 4); got {getattr(estimate, 'shape', type(estimate))}")
    _check_pose("estimate", estimate, estimate.shape[0])
    _check_pose("truth", truth, estimate.shape[0])
    if definition == "information":
        if information is None or information.shape != (estimate.shape[0], 6, 6):
            raise ValueError(f"definition 'information' needs information matrices ({estimate.shape[0]}, 6, 6) "
                             f"(gt.info); got {getattr(information, 'shape', None)}")
        return information_error(estimate, truth, information) <= threshold ** 2
    if definition == "mean_distance":
        if source_points is None or source_points.dim() != 3 or source_points.shape[0] != estimate.shape[0]:
            raise ValueError(f"definition 'mean_distance' needs the source points (B, N, 3) with B = "
                             f"{estimate.shape[0]}; got {getattr(source_points, 'shape', None)}")
        return mean_distance_error(estimate, truth, source_points, source_mask) < threshold
    raise ValueError(f"definition must be 'information' or 'mean_distance'; got {definition!r}")


class _SceneMean(Metric):
    """Per-scene sums and counts of a per-pair quantity; ``compute`` = mean over scenes of the scene means."""

    full_state_update = False

    def __init__(self, num_scenes: int = 8, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_scenes, int) or num_scenes < 1:
            raise ValueError(f"num_scenes must be a positive integer; got {num_scenes!r}")
        self.num_scenes = num_scenes
        self.add_state("total", default=torch.zeros(num_scenes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_scenes, dtype=torch.float64), dist_reduce_fx="sum")

    def _scene(self, scene: Tensor | None, batch: int) -> Tensor:
        if scene is None:
            return torch.zeros(batch, dtype=torch.long, device=self.total.device)
        scene = torch.as_tensor(scene, device=self.total.device).long().reshape(-1)
        if scene.shape != (batch,) or (scene < 0).any() or (scene >= self.num_scenes).any():
            raise ValueError(f"scene must hold one index in [0, {self.num_scenes}) per pair ({batch}); got "
                             f"{scene.tolist()[:10]}")
        return scene

    def _add(self, values: Tensor, scene: Tensor, counted: Tensor | None = None) -> None:
        counted = torch.ones_like(values, dtype=torch.bool) if counted is None else counted
        self.total.index_add_(0, scene[counted], values.detach().double()[counted])
        self.count.index_add_(0, scene[counted], torch.ones_like(values, dtype=torch.float64)[counted])

    def per_scene(self) -> Tensor:
        """``(num_scenes,)`` the scene means (NaN for scenes without pairs)."""
        return torch.where(self.count > 0, self.total / self.count.clamp_min(1),
                           torch.full_like(self.total, float("nan")))

    def compute(self) -> Tensor:
        seen = self.count > 0
        if not seen.any():
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
        return (self.total[seen] / self.count[seen]).mean()


class InlierRatio(_SceneMean):
    """IR: per pair the fraction of correspondences within ``threshold`` under the ground truth (module docstring).

    ``update(source (B, K, 3), target (B, K, 3), transform (B, 4, 4), scene=None, mask=None)``.
    """

    higher_is_better = True

    def __init__(self, num_scenes: int = 8, threshold: float = INLIER_THRESHOLD, **kwargs: object) -> None:
        super().__init__(num_scenes, **kwargs)
        self.threshold = threshold

    def update(self, source: Tensor, target: Tensor, transform: Tensor, scene: Tensor | None = None,
               mask: Tensor | None = None) -> None:
        ratio = inlier_ratio(source, target, transform, mask, self.threshold)
        self._add(ratio, self._scene(scene, len(ratio)))


class FeatureMatchingRecall(InlierRatio):
    """FMR: the fraction of pairs whose inlier ratio exceeds ``ratio_threshold`` (same ``update`` as IR)."""

    def __init__(self, num_scenes: int = 8, threshold: float = INLIER_THRESHOLD,
                 ratio_threshold: float = INLIER_RATIO_THRESHOLD, **kwargs: object) -> None:
        super().__init__(num_scenes, threshold, **kwargs)
        self.ratio_threshold = ratio_threshold

    def update(self, source: Tensor, target: Tensor, transform: Tensor, scene: Tensor | None = None,
               mask: Tensor | None = None) -> None:
        ratio = inlier_ratio(source, target, transform, mask, self.threshold)
        self._add((ratio > self.ratio_threshold).double(), self._scene(scene, len(ratio)))


class _Accepted(_SceneMean):
    """The shared ``update`` of RR, RRE and RTE: which pairs count, and which are accepted."""

    def __init__(self, definition: RecallDefinition = "information", num_scenes: int = 8,
                 threshold: float = RMSE_THRESHOLD, **kwargs: object) -> None:
        if definition not in ("information", "mean_distance"):
            raise ValueError(f"definition must be 'information' or 'mean_distance'; got {definition!r}")
        super().__init__(num_scenes, **kwargs)
        self.definition = definition
        self.threshold = threshold

    def update(self, estimate: Tensor, transform: Tensor, scene: Tensor | None = None, *,
               information: Tensor | None = None, source_id: Tensor | None = None,
               target_id: Tensor | None = None, source_points: Tensor | None = None,
               source_mask: Tensor | None = None) -> None:
        """Args:
            estimate, transform: ``(B, 4, 4)`` estimated and ground-truth poses (source into target).
            scene: ``(B,)`` scene indices.
            information: ``(B, 6, 6)`` ``gt.info`` matrices (``definition="information"``).
            source_id, target_id: ``(B,)`` fragment ids; pairs of consecutive fragments are ignored under
                ``"information"`` (required there).
            source_points, source_mask: ``(B, N, 3)`` source points and their mask (``"mean_distance"``).
        """
        accepted = registration_accepted(estimate, transform, self.definition, information=information,
                                         source_points=source_points, source_mask=source_mask,
                                         threshold=self.threshold)
        counted = torch.ones_like(accepted)
        if self.definition == "information":
            if source_id is None or target_id is None:
                raise ValueError("definition 'information' needs source_id and target_id (consecutive fragments "
                                 "are excluded from the registration recall)")
            gap = (torch.as_tensor(source_id).reshape(-1) - torch.as_tensor(target_id).reshape(-1)).abs()
            counted = gap.to(accepted.device) > 1
        self._record(estimate, transform, accepted, counted, self._scene(scene, len(accepted)))

    @abstractmethod
    def _record(self, estimate: Tensor, transform: Tensor, accepted: Tensor, counted: Tensor, scene: Tensor) -> None:
        """Add this metric's per-pair quantity of the ``counted`` (RR) or accepted (RRE, RTE) pairs."""


class RegistrationRecall(_Accepted):
    """RR under ``definition`` (``"information"``: the official gt.info test on non-consecutive pairs;
    ``"mean_distance"``: the rotated benchmark's test on all pairs); see the module docstring."""

    higher_is_better = True

    def _record(self, estimate: Tensor, transform: Tensor, accepted: Tensor, counted: Tensor, scene: Tensor) -> None:
        self._add(accepted.double(), scene, counted)


class RelativeRotationError(_Accepted):
    """RRE (degrees) over the pairs ``definition`` accepts, per scene then over scenes."""

    higher_is_better = False

    def _record(self, estimate: Tensor, transform: Tensor, accepted: Tensor, counted: Tensor, scene: Tensor) -> None:
        self._add(rotation_error_degrees(estimate.double(), transform.double()), scene, accepted & counted)


class RelativeTranslationError(_Accepted):
    """RTE (metres) over the pairs ``definition`` accepts, per scene then over scenes."""

    higher_is_better = False

    def _record(self, estimate: Tensor, transform: Tensor, accepted: Tensor, counted: Tensor, scene: Tensor) -> None:
        self._add(translation_error(estimate.double(), transform.double()), scene, accepted & counted)
