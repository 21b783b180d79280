"""TinvNN: a transformation-invariant, distance-preserving initial representation around any backbone.

The paper's claim: feeding an existing network a representation of the points that is invariant to translation
and rotation (and optionally scale) and preserves their distances makes the whole network invariant, with no
special layers. The representation is a modified classical MDS (``pointgeo.geometry.frames``): double centring,
eigen-decomposition (through the 3×3 problem), eigenvalue ordering, deterministic signs, optional scale
normalisation.

What is guaranteed, and what is not (``frame_averaging=True``, the default):

* Rotations, translations and permutations of the points change nothing, up to float rounding, **when the three
  eigenvalues of the scatter matrix are pairwise distinct** (any shape without rotational symmetry, mirror
  symmetric ones included: frame averaging over the four proper sign flips makes zero third moments harmless).
* Planar clouds (λ3 = 0) are covered: the third axis is the cross product of the first two. Collinear clouds and
  all-equal points are covered too: the undetermined coordinates are zero, and when normals are given their
  scatter (with a tiny weight) fixes the axes that positions leave undetermined.
* Near-equal eigenvalues (bottles, bowls, cones sampled almost symmetrically) make the axes ill-conditioned: the
  output is still a deterministic function of the cloud, but its invariance error grows like (rounding error) /
  (eigenvalue gap). Exactly repeated eigenvalues leave the axes arbitrary: invariance is then not guaranteed.
* With ``frame_averaging=False`` a single frame signed by the third moments is used (4× cheaper); shapes whose
  third moments vanish (mirror symmetric about a principal plane) are then not guaranteed.
* The frame is computed without gradient: gradients flow into the backbone's inputs but not through the axes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pointgeo.geometry import check_points
from pointgeo.geometry.frames import canonical_frame, sign_flips
from pointgeo.registry import create_model, register_model

ScaleMode = Literal["none", "rms", "max"]
REPEATED = ("two exactly equal eigenvalues of the scatter matrix: the principal frame is arbitrary within their "
            "eigenspace (rounding picks it), so the canonical coordinates, and the backbone's output, turn with it")
NOT_GUARANTEED = {"grid_cylinder": REPEATED, "grid_cone": REPEATED, "grid_sphere": REPEATED, "threefold": REPEATED}
"""Shape classes outside TinvNN's guarantee, with the reason."""


class TinvNN(nn.Module):
    """Canonicalise each cloud by modified MDS, then run ``backbone`` on it.

    Args:
        backbone: any classification network ``backbone(pos, normal) -> logits``.
        frame_averaging: average the backbone's logits over the four proper sign-flipped frames (exact sign
            invariance) instead of using the single third-moment frame.
        scale: ``"none"`` keeps distances (the default); ``"rms"`` or ``"max"`` divides by the RMS or maximum
            radius, adding scale invariance at the price of exact distance preservation.

    Shapes:
        ``pos (B, N, 3)``, ``normal (B, N, 3) | None`` [, extra per-shape inputs such as ``category (B,)``] →
        logits ``(B, C)``, or per-point logits ``(B, N, C)`` for a segmentation backbone (averaged over frames
        point by point, so they stay matched to the input points).
    """

    def __init__(self, backbone: nn.Module, frame_averaging: bool = True, scale: ScaleMode = "none") -> None:
        super().__init__()
        if scale not in ("none", "rms", "max"):
            raise ValueError(f"scale must be 'none', 'rms' or 'max'; got {scale!r}")
        self.backbone = backbone
        self.frame_averaging = frame_averaging
        self.scale = scale

    def canonicalize(self, pos: Tensor, normal: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Canonical coordinates ``(B, F, N, 3)`` (``F = 4`` frames with averaging, else 1) and normals alike."""
        check_points(pos, "pos")
        # The 3x3 problem is solved in float64 whatever the input dtype: float32 eigenvectors would add their own
        # rounding error (~1e-7 / eigenvalue gap) to the canonical coordinates.
        with torch.no_grad():
            frame, centroid = canonical_frame(pos.double(), directions=None if normal is None else normal.double())
            frames = (sign_flips(frame) if self.frame_averaging else frame.unsqueeze(1)).to(pos.dtype)  # (B, F, 3, 3)
        coords = ((pos.double() - centroid).unsqueeze(1) @ frames.double()).to(pos.dtype)
        if self.scale != "none":
            radius = coords[:, :1].norm(dim=-1)
            r = radius.pow(2).mean(-1).sqrt() if self.scale == "rms" else radius.amax(-1)
            coords = coords / r.clamp_min(torch.finfo(pos.dtype).tiny)[..., None, None]
        normals = None if normal is None else normal.unsqueeze(1) @ frames
        return coords, normals

    def forward(self, pos: Tensor, normal: Tensor | None = None, *extra: Tensor) -> Tensor:
        coords, normals = self.canonicalize(pos, normal)
        b, f, n, _ = coords.shape
        flat_normals = None if normals is None else normals.reshape(b * f, n, 3)
        repeated = [e.repeat_interleave(f, dim=0) for e in extra]  # per-shape inputs follow their frames
        logits = self.backbone(coords.reshape(b * f, n, 3), flat_normals, *repeated)
        return logits.reshape(b, f, *logits.shape[1:]).mean(dim=1)


def _tinvnn(backbone: str, frame_averaging: bool, scale: ScaleMode, **backbone_kwargs: object) -> TinvNN:
    return TinvNN(create_model(backbone, **backbone_kwargs), frame_averaging=frame_averaging, scale=scale)


@register_model(
    "tinvnn_pointnet", task="classification", invariance="invariant",
    test_kwargs={"channels": (16, 32), "head": (16,)}, test_num_points=32, not_guaranteed=NOT_GUARANTEED,
)
def tinvnn_pointnet(num_classes: int = 40, use_normals: bool = False, frame_averaging: bool = True,
                    scale: ScaleMode = "none", **kwargs: object) -> TinvNN:
    """TinvNN around PointNet (rotation, translation and permutation invariant)."""
    return _tinvnn("pointnet", frame_averaging, scale, num_classes=num_classes, use_normals=use_normals, **kwargs)


@register_model(
    "tinvnn_dgcnn", task="classification", invariance="invariant",
    test_kwargs={"k": 8, "channels": (16, 16), "embedding": 32, "head": (16,)}, test_num_points=32,
    not_guaranteed=NOT_GUARANTEED,
    float64_only={"box_1_1001_2": "its 0.2 % eigenvalue gap turns float32's rounding of the input (6e-8) into "
                                  "~3e-5 of the size in the canonical coordinates, above the tolerance that decides "
                                  "the equidistant neighbours of its face grid in DGCNN's kNN"},
)
def tinvnn_dgcnn(num_classes: int = 40, use_normals: bool = False, frame_averaging: bool = True,
                 scale: ScaleMode = "none", **kwargs: object) -> TinvNN:
    """TinvNN around DGCNN (rotation, translation and permutation invariant)."""
    return _tinvnn("dgcnn", frame_averaging, scale, num_classes=num_classes, use_normals=use_normals, **kwargs)


@register_model(
    "tinvnn_pointnet_seg", task="segmentation", invariance="invariant",
    test_kwargs={"channels": (16, 32), "head": (16,)}, test_num_points=32, not_guaranteed=NOT_GUARANTEED,
)
def tinvnn_pointnet_seg(num_parts: int = 50, num_categories: int = 16, use_normals: bool = False,
                        frame_averaging: bool = True, scale: ScaleMode = "none", **kwargs: object) -> TinvNN:
    """TinvNN around PointNet part segmentation (per-point logits invariant to rotations and translations)."""
    return _tinvnn("pointnet_seg", frame_averaging, scale, num_parts=num_parts, num_categories=num_categories,
                   use_normals=use_normals, **kwargs)
