"""``pointgeo view SRC --target TGT``: a registration pair before and after alignment, with its correspondences.

The transform shown comes from ``--model`` (``fpfh_ransac``, Open3D's FPFH + RANSAC baseline, or a checkpoint whose
task has ``register_pair``), which also gives the correspondences; or from ``--transform`` alone (a 4×4 file, e.g.
what ``pointgeo register`` printed, or a ground truth), then without correspondences. Given with ``--model``,
``--transform`` is the truth: correspondences are coloured by it and the captions give RRE and RTE.

Two panels, each centred on its own points and scaled into the unit sphere: **before** (the clouds as given) and
**after** (the source moved by the transform). Source points are orange, target points blue; up to ``max_lines``
correspondences (a seeded choice, up to half of them inliers) join a source point to its target point, green when the
reference transform (the truth, else the estimate) maps them within ``inlier_distance`` of each other, red otherwise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pointgeo.geometry import rotation_error_degrees, transform_points, translation_error, voxel_downsample
from pointgeo.geometry.registration import RegistrationResult, register_fpfh_ransac
from pointgeo.metrics.registration import INLIER_THRESHOLD

SOURCE, TARGET = (0.95, 0.5, 0.05), (0.1, 0.4, 0.85)
INLIER, OUTLIER = (0.1, 0.65, 0.2), (0.85, 0.1, 0.1)
BUILT_IN = "fpfh_ransac"
"""The ``--model`` name of the built-in FPFH + RANSAC baseline."""


@dataclass
class PairView:
    """What is shown: the clouds ``source (N, 3)`` and ``target (M, 3)`` as the estimator saw them, the shown
    ``transform (4, 4)``, the ``correspondences (K, 2)`` (source index, target index), which of them are inliers
    ``(K,)``, and the captions of the two panels."""

    source: np.ndarray
    target: np.ndarray
    transform: np.ndarray
    correspondences: np.ndarray
    inlier: np.ndarray
    captions: tuple[str, str]


DEFAULT_VOXEL_SIZE = 0.025
"""Voxel edge (m) before FPFH, and before a checkpoint whose datamodule stored none."""


def checkpoint_cloud_settings(data: dict, voxel_size: float | None, max_points: int | None
                              ) -> tuple[float, int | None]:
    """``(voxel_size, max_points)`` for registering with a checkpoint: the given values where not ``None``
    (``max_points`` 0: no cap), else what its datamodule ``data`` (stored hyper-parameters) prepared its clouds with
    (``voxel_size``; ``num_points`` or ``max_points``)."""
    voxel = voxel_size if voxel_size is not None else (data.get("voxel_size") or DEFAULT_VOXEL_SIZE)
    cap = max_points if max_points is not None else data.get("num_points", data.get("max_points"))
    return float(voxel), (int(cap) if cap else None)


@dataclass
class Estimate:
    """What :func:`estimate` returns: the result, the two clouds its correspondences index (prepared), the voxel
    edge and point cap they were prepared with, and a description of the method."""

    result: RegistrationResult
    source: Tensor
    target: Tensor
    voxel_size: float
    max_points: int | None
    method: str


def estimate(model: str, source: Tensor, target: Tensor, *, voxel_size: float | None = None,
             max_points: int | None = None, seed: int = 0, estimator: str | None = None,
             **fpfh_options: Any) -> Estimate:
    """Register ``source`` onto ``target`` with ``model``: ``fpfh_ransac`` (FPFH + RANSAC + ICP at ``voxel_size``,
    default :data:`DEFAULT_VOXEL_SIZE`, with ``fpfh_options`` passed on to
    :func:`~pointgeo.geometry.registration.register_fpfh_ransac`) or a checkpoint whose task has ``register_pair``,
    on clouds prepared as its training data were (:func:`checkpoint_cloud_settings`: averaged into voxels, then a
    random subset drawn with ``seed`` above the cap), with ``estimator`` (``lgr``, ``ransac``) instead of the
    checkpoint's own if given.

    Raises:
        ValueError: the checkpoint's task cannot register pairs, or ``max_points``/``estimator`` for FPFH.
    """
    if model == BUILT_IN:
        if max_points is not None or estimator is not None:
            raise ValueError(f"--estimator and --max-points apply to a checkpoint given with --model, not to "
                             f"{BUILT_IN}")
        voxel = voxel_size or DEFAULT_VOXEL_SIZE
        result, source, target = register_fpfh_ransac(source, target, voxel_size=voxel, seed=seed, **fpfh_options)
        return Estimate(result, source, target, voxel, None, "mutual FPFH matches")
    from pointgeo.hub import fetch, load_checkpoint, rebuild_task

    ckpt = load_checkpoint(fetch(model, progress=False))
    task = rebuild_task(ckpt, model)
    if not callable(getattr(task, "register_pair", None)):
        raise ValueError(f"{model} is a {type(task).__name__} checkpoint, which cannot register pairs; give a "
                         f"registration checkpoint or --model {BUILT_IN}")
    if estimator is not None:
        task.hparams.estimator = estimator
    voxel, cap = checkpoint_cloud_settings(ckpt.get("datamodule_hyper_parameters", {}), voxel_size, max_points)
    generator = torch.Generator().manual_seed(seed)
    clouds = []
    for cloud in (source, target):
        cloud = voxel_downsample(cloud, voxel)
        if cap is not None and len(cloud) > cap:
            cloud = cloud[torch.randperm(len(cloud), generator=generator)[:cap].sort().values]
        clouds.append(cloud.float())
    result = task.register_pair(*clouds)
    return Estimate(result, *clouds, voxel, cap, f"{task.hparams.network} matches, {task.hparams.estimator} estimate")


def build_pair_view(source: Tensor, target: Tensor, *, transform: Tensor | None = None,
                    result: RegistrationResult | None = None,
                    inlier_distance: float = INLIER_THRESHOLD) -> PairView:
    """The scene of a pair: with ``result``, its transform and correspondences (``transform``, if given, is the
    truth); without, ``transform`` is shown and there are no correspondences.

    Raises:
        ValueError: neither ``transform`` nor ``result``, or a result that failed and no transform to show.
    """
    if result is None and transform is None:
        raise ValueError("build_pair_view needs a transform or a registration result")
    src, tgt = source.double(), target.double()
    if result is not None and not result.success and transform is None:
        raise ValueError(f"registration failed ({result.message}); nothing to align (pass --transform to show a "
                         f"known pose)")
    shown = result.transform if result is not None and result.success else transform
    reference = transform if transform is not None else shown
    corr = result.correspondences.long().reshape(-1, 2) if result is not None else torch.zeros(0, 2, dtype=torch.long)
    gap = (transform_points(src[corr[:, 0]], reference.double()) - tgt[corr[:, 1]]).norm(dim=-1)
    inlier = gap < inlier_distance
    before = f"before: source {len(src)} points (orange), target {len(tgt)} (blue)"
    if result is None:
        after = "after: the given transform"
    else:
        judged = "the truth" if transform is not None else "the estimate"
        state = "" if result.success else " (registration FAILED: truth shown)"
        after = (f"after{state}: {len(corr)} correspondences, {int(inlier.sum())} within {inlier_distance:g} under "
                 f"{judged} (IR {float(inlier.double().mean()) if len(corr) else 0.0:.3f})")
        if transform is not None and result.success:
            after += (f"\nRRE {float(rotation_error_degrees(shown.double(), transform.double())):.2f} deg, "
                      f"RTE {float(translation_error(shown.double(), transform.double())):.3f}")
    return PairView(src.numpy(), tgt.numpy(), shown.double().numpy(), corr.numpy(), inlier.numpy(), (before, after))


def _normalised(parts: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays of one panel centred on all their points and scaled into the unit sphere."""
    points = np.concatenate([p for p in parts if len(p)])
    centre = points.mean(0)
    radius = max(float(np.linalg.norm(points - centre, axis=1).max()), 1e-12)
    return [(p - centre) / radius for p in parts]


def pick_lines(inlier: np.ndarray, max_lines: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_lines`` correspondences to draw, a seeded choice that shows both kinds:
    up to half inliers, the rest outliers (more of either kind when the other runs short)."""
    rng = np.random.default_rng(seed)
    good, bad = (rng.permutation(np.flatnonzero(mask)) for mask in (inlier, ~inlier))
    take_good = min(len(good), max(max_lines - len(bad), max_lines // 2))
    return np.sort(np.concatenate([good[:take_good], bad[: max_lines - take_good]])).astype(np.int64)


def pair_scene(view: PairView, *, max_lines: int = 150, seed: int = 0) -> dict[str, np.ndarray]:
    """What is drawn, panel ``c`` in cell ``c`` (0 before, 1 after), normalised per panel:

    ``point_pos (P, 3)``, ``point_colour (P, 3)``, ``point_cell (P,)`` (source then target points of each panel),
    ``link_start (L, 3)``, ``link_end (L, 3)``, ``link_colour (L, 3)``, ``link_cell (L,)``: the same correspondences
    (:func:`pick_lines`) in both panels.
    """
    moved = transform_points(torch.from_numpy(view.source), torch.from_numpy(view.transform)).numpy()
    corr = view.correspondences
    pick = pick_lines(view.inlier, max_lines, seed)
    pos, colour, cell, start, end, link_colour, link_cell = [], [], [], [], [], [], []
    for c, src in enumerate((view.source, moved)):
        s, t, a, b = _normalised([src, view.target, src[corr[pick, 0]], view.target[corr[pick, 1]]])
        pos += [s, t]
        colour += [np.tile(SOURCE, (len(s), 1)), np.tile(TARGET, (len(t), 1))]
        cell.append(np.full(len(s) + len(t), c))
        start.append(a)
        end.append(b)
        link_colour.append(np.where(view.inlier[pick, None], INLIER, OUTLIER).reshape(-1, 3))
        link_cell.append(np.full(len(a), c))
    return {"point_pos": np.concatenate(pos), "point_colour": np.concatenate(colour),
            "point_cell": np.concatenate(cell), "link_start": np.concatenate(start), "link_end": np.concatenate(end),
            "link_colour": np.concatenate(link_colour), "link_cell": np.concatenate(link_cell)}


def add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pointgeo view SRC --target TGT``."""
    parser.add_argument("source", help="the source cloud (.ply .pcd .xyz .txt .off .obj .stl .npy, 3DMatch .pth)")
    parser.add_argument("--target", required=True, help="the target cloud (same formats)")
    parser.add_argument("--transform", help="a 4x4 transform source -> target (.npy or 16 numbers); with --model, "
                        "the truth the estimate is compared with")
    parser.add_argument("--model", help=f"{BUILT_IN} (FPFH + RANSAC) or a registration checkpoint (default: "
                        f"{BUILT_IN} when no --transform is given)")
    parser.add_argument("--voxel-size", type=float, help="voxel edge of the downsampling before registration "
                        f"(metres; default {DEFAULT_VOXEL_SIZE}, with a checkpoint that of its training data)")
    parser.add_argument("--inlier-distance", type=float, default=INLIER_THRESHOLD,
                        help=f"correspondences closer than this are inliers (default {INLIER_THRESHOLD})")
    parser.add_argument("--max-lines", type=int, default=150, help="correspondences drawn (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mesh-points", type=int, default=20_000, help="points sampled from meshes")
    parser.add_argument("--snapshot", help="render to this PNG without a display and exit")
    parser.add_argument("--size", default="1200x600", help="snapshot size WIDTHxHEIGHT")
    parser.add_argument("--up", choices=["x", "y", "z"], default="z", help="the axis drawn upwards (default z)")
    parser.add_argument("--renderer", choices=["auto", "open3d", "matplotlib"], default="auto")


def load_pair_view(ns: argparse.Namespace) -> PairView:
    """Read the clouds (and transform), register them if asked, and build the scene the options name."""
    from pointgeo.viz.io import read_cloud, read_transform

    if not ns.max_lines >= 0 or not (ns.voxel_size is None or ns.voxel_size > 0) or not ns.inlier_distance > 0:
        raise ValueError(f"--max-lines must be >= 0 and --voxel-size, --inlier-distance positive; got "
                         f"{ns.max_lines}, {ns.voxel_size}, {ns.inlier_distance}")
    source, target = read_cloud(ns.source, ns.mesh_points), read_cloud(ns.target, ns.mesh_points)
    transform = read_transform(ns.transform) if ns.transform else None
    model = ns.model if ns.model is not None else (None if transform is not None else BUILT_IN)
    if model is None:
        return build_pair_view(source, target, transform=transform, inlier_distance=ns.inlier_distance)
    found = estimate(model, source, target, voxel_size=ns.voxel_size, seed=ns.seed)
    return build_pair_view(found.source, found.target, transform=transform, result=found.result,
                           inlier_distance=ns.inlier_distance)


def pair_main(ns: argparse.Namespace) -> None:
    """Run ``pointgeo view SRC --target TGT`` with parsed options: a snapshot, or the interactive window."""
    view = load_pair_view(ns)
    scene = pair_scene(view, max_lines=ns.max_lines, seed=ns.seed)
    for caption in view.captions:
        print(caption.replace("\n", "; "))
    if ns.snapshot:
        from pointgeo.viz.snapshot import render_pair_snapshot

        width, height = (int(v) for v in ns.size.lower().split("x"))
        used = render_pair_snapshot(scene, list(view.captions), ns.snapshot, size=(width, height),
                                    renderer=ns.renderer, up_axis=ns.up)
        print(f"snapshot: {ns.snapshot} (renderer: {used})")
        return
    run_pair_window(scene, ns.up)


def run_pair_window(scene: dict[str, np.ndarray], up: str) -> None:
    """The interactive Open3D window (needs a display): both panels, rotate and zoom with the mouse."""
    import open3d as o3d

    from pointgeo.geometry import axis_index
    from pointgeo.viz.render_open3d import pair_geometries

    o3d.visualization.draw_geometries(pair_geometries(scene), window_name="pointgeo view: before | after",
                                      up=np.eye(3)[axis_index(up)].tolist(), front=[0.0, -1.0, 0.0]
                                      if up == "z" else [0.0, 0.0, 1.0], lookat=[1.2, 0.0, 0.0], zoom=0.7)


def is_pair_command(args: list[str]) -> bool:
    """Whether ``pointgeo view`` arguments ask for a pair (``--target`` given)."""
    return any(a == "--target" or a.startswith("--target=") for a in args)
