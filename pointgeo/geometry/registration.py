"""Classical registration through Open3D: RANSAC on correspondences and the FPFH + RANSAC baseline.

* :func:`fpfh_features`: Fast Point Feature Histograms (Rusu et al., ICRA 2009; ``(N, 33)``) of a cloud, Open3D's
  normals and features.
* :func:`mutual_matches`: the mutual nearest neighbours of two descriptor sets (kNN from :mod:`pointgeo.geometry`).
* :func:`ransac_on_correspondences`: Open3D's ``registration_ransac_based_on_correspondence`` (point-to-point, no
  scaling, 3-point hypotheses, edge-length and distance checkers), seeded through ``open3d.utility.random.seed``.
* :func:`register_fpfh_ransac`: voxel downsampling, FPFH, mutual matching and RANSAC, the baseline most users run
  first on a CPU.

Every function returns a :class:`RegistrationResult` that says whether registration succeeded: too few
correspondences, or too few RANSAC inliers (``min_inliers``) — e.g. two clouds that do not overlap — give
``success=False`` and a reason, never a silent identity. Open3D is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pointgeo.geometry.checks import check_points
from pointgeo.geometry.neighbors import knn
from pointgeo.geometry.rigid import transform_points, voxel_downsample

MIN_POINTS = 30
"""Fewest points a cloud may have after downsampling for FPFH + RANSAC (normals and histograms need neighbours)."""
MIN_INLIERS = 10
"""Fewer RANSAC inliers than this means no registration was found (3 points always fit a rigid motion)."""


@dataclass
class RegistrationResult:
    """The outcome of a registration: ``transform (4, 4)`` float64 mapping source into target (identity when it
    failed, with ``success=False``), the putative ``correspondences (K, 2)`` (source index, target index) into the
    clouds the estimator saw, how many of them the transform maps within ``distance`` (``inliers``) and their ratio,
    and ``message`` (why it failed, or a summary)."""

    transform: Tensor
    correspondences: Tensor
    inliers: int
    distance: float
    success: bool
    message: str

    @property
    def inlier_ratio(self) -> float:
        """Inliers over putative correspondences (0 when there are none)."""
        return self.inliers / max(len(self.correspondences), 1)


def _open3d():
    import open3d as o3d  # noqa: PLC0415  (heavy; only the registration functions need it)

    return o3d


def _single_cloud(points: Tensor, name: str, min_points: int) -> Tensor:
    if not isinstance(points, Tensor) or points.dim() != 2:
        raise ValueError(f"{name} must be one cloud of shape (N, 3); got {getattr(points, 'shape', type(points))}")
    check_points(points.unsqueeze(0), name, min_points=min_points)
    return points


def _o3d_cloud(points: Tensor, normals: Tensor | None = None):
    o3d = _open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.detach().double().cpu().numpy()))
    if normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(normals.detach().double().cpu().numpy())
    return cloud


def fpfh_features(points: Tensor, radius: float, *, normal_radius: float | None = None,
                  max_nn: int = 100) -> Tensor:
    """FPFH descriptors ``(N, 33)`` float64 of ``points (N, 3)`` over neighbourhoods of ``radius`` (at most
    ``max_nn`` points).

    Normals are Open3D's (PCA over at most 30 neighbours within ``normal_radius``, default ``radius / 2.5``), as in
    the pipeline users run: FPFH compares normals across two fragments, so their signs must agree on shared
    surfaces. pointgeo's invariant sign rule (away from each cloud's own centroid,
    :func:`~pointgeo.geometry.estimate_normals`) does not give that for two partial scans whose centroids differ:
    measured on the 3DMatch demo pair, FPFH on those normals found 3 RANSAC inliers of 3039 matches and failed.
    """
    points = _single_cloud(points, "points", 3)
    o3d = _open3d()
    cloud = _o3d_cloud(points)
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(
        radius=normal_radius if normal_radius is not None else radius / 2.5, max_nn=30))
    feature = o3d.pipelines.registration.compute_fpfh_feature(
        cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
    return torch.from_numpy(np.asarray(feature.data).T.copy())


def mutual_matches(source_features: Tensor, target_features: Tensor) -> Tensor:
    """``(K, 2)`` index pairs ``(i, j)`` whose descriptors are each other's nearest neighbour (L2)."""
    fwd = knn(source_features.unsqueeze(0), target_features.unsqueeze(0), 1)[0][0, :, 0]  # nearest target of each
    back = knn(target_features.unsqueeze(0), source_features.unsqueeze(0), 1)[0][0, :, 0]
    src = torch.arange(len(source_features))
    keep = back[fwd] == src
    return torch.stack([src[keep], fwd[keep]], dim=-1)


def ransac_on_correspondences(source: Tensor, target: Tensor, correspondences: Tensor, *, distance: float,
                              seed: int = 0, max_iterations: int = 50_000, confidence: float = 0.999,
                              min_inliers: int = MIN_INLIERS) -> RegistrationResult:
    """RANSAC over putative ``correspondences (K, 2)`` between ``source (N, 3)`` and ``target (M, 3)``.

    Open3D's correspondence RANSAC: 3-point hypotheses, point-to-point estimation without scaling, checkers
    ``EdgeLength(0.9)`` and ``Distance(distance)``, at most ``max_iterations`` hypotheses with early stop at
    ``confidence``; Open3D's random generator is seeded with ``seed`` (same seed, same result on one machine).
    ``success`` is false when fewer than 3 correspondences are given or fewer than ``min_inliers`` are inliers.
    """
    source = _single_cloud(source, "source", 1)
    target = _single_cloud(target, "target", 1)
    corr = torch.as_tensor(correspondences).long().reshape(-1, 2)
    if len(corr) and ((corr[:, 0] >= len(source)).any() or (corr[:, 1] >= len(target)).any() or (corr < 0).any()):
        raise ValueError("correspondences index points outside the source or target cloud")
    eye = torch.eye(4, dtype=torch.float64)
    if len(corr) < 3:
        return RegistrationResult(eye, corr, 0, distance, False,
                                  f"registration failed: {len(corr)} correspondences, at least 3 are needed")
    o3d = _open3d()
    reg = o3d.pipelines.registration
    o3d.utility.random.seed(seed)
    result = reg.registration_ransac_based_on_correspondence(
        _o3d_cloud(source), _o3d_cloud(target), o3d.utility.Vector2iVector(corr.numpy().astype(np.int32)), distance,
        reg.TransformationEstimationPointToPoint(False), 3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(distance)],
        reg.RANSACConvergenceCriteria(max_iterations, confidence))
    transform = torch.from_numpy(np.asarray(result.transformation).copy())
    moved = transform_points(source.double()[corr[:, 0]], transform)
    inliers = int(((moved - target.double()[corr[:, 1]]).norm(dim=-1) < distance).sum())
    if inliers < min_inliers:
        return RegistrationResult(eye, corr, inliers, distance, False,
                                  f"registration failed: {inliers} of {len(corr)} correspondences agree on one "
                                  f"motion (fewer than {min_inliers}); the clouds may not overlap")
    return RegistrationResult(transform, corr, inliers, distance, True,
                              f"{inliers} of {len(corr)} correspondences are inliers within {distance:g}")


def register_fpfh_ransac(source: Tensor, target: Tensor, *, voxel_size: float = 0.025, seed: int = 0,
                         feature_radius: float | None = None, distance: float | None = None,
                         max_iterations: int = 50_000, min_inliers: int = MIN_INLIERS,
                         refine: bool = True) -> tuple[RegistrationResult, Tensor, Tensor]:
    """The FPFH + RANSAC baseline on ``source (N, 3)`` and ``target (M, 3)`` (metres for 3DMatch).

    Both clouds are averaged into voxels of ``voxel_size`` (:func:`~pointgeo.geometry.voxel_downsample`), FPFH
    descriptors are computed over ``feature_radius`` (default ``5 · voxel_size``), mutual nearest descriptors are the
    correspondences, and :func:`ransac_on_correspondences` keeps the motion most of them agree on within
    ``distance`` (default ``1.5 · voxel_size``). With ``refine``, a successful estimate is refined by Open3D's
    point-to-point ICP over pairs within ``distance`` (the usual global-then-local pipeline).

    Returns:
        The result (its correspondences index the downsampled clouds) and the downsampled source and target.

    Raises:
        ValueError: NaN/inf or empty clouds, or a cloud with fewer than ``MIN_POINTS`` voxels (the message names
            the cloud and the voxel size).
    """
    for name, cloud in (("source", source), ("target", target)):
        _single_cloud(cloud, name, 1)
    src = voxel_downsample(source.double(), voxel_size)
    tgt = voxel_downsample(target.double(), voxel_size)
    for name, cloud in (("source", src), ("target", tgt)):
        if len(cloud) < MIN_POINTS:
            raise ValueError(f"{name} has {len(cloud)} points after {voxel_size:g} voxel downsampling; at least "
                             f"{MIN_POINTS} are needed (use a smaller voxel size or a denser cloud)")
    radius = feature_radius if feature_radius is not None else 5 * voxel_size
    distance = distance if distance is not None else 1.5 * voxel_size
    corr = mutual_matches(fpfh_features(src, radius), fpfh_features(tgt, radius))
    result = ransac_on_correspondences(src, tgt, corr, distance=distance, seed=seed, max_iterations=max_iterations,
                                       min_inliers=min_inliers)
    if refine and result.success:
        reg = _open3d().pipelines.registration
        icp = reg.registration_icp(_o3d_cloud(src), _o3d_cloud(tgt), distance, result.transform.numpy(),
                                   reg.TransformationEstimationPointToPoint(False))
        result.transform = torch.from_numpy(np.asarray(icp.transformation).copy())
        moved = transform_points(src[corr[:, 0]], result.transform)
        result.inliers = int(((moved - tgt[corr[:, 1]]).norm(dim=-1) < distance).sum())
        result.message = (f"{result.inliers} of {len(corr)} correspondences are inliers within {distance:g} "
                          f"(RANSAC, then ICP)")
    return result, src, tgt
