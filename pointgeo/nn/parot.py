"""PaRot (Zhang et al., "PaRot: Patch-Wise Rotation-Invariant Network via Feature Disentanglement and Pose
Restoration", AAAI 2023): rotation invariance that is *learned*, not built in.

A small PointNet (:class:`Disentangler`) sees each patch's raw coordinates and predicts an invariant feature and two
equivariant unit vectors, trained with two independent random rotations per patch (:meth:`PaRotClassifier.
forward_siamese`, losses in :class:`PaRotLosses`). Pose restoration then feeds the network only *relative* poses
built from those vectors — the rotation between a patch's local and global orientation, between neighbouring
patches, and the centre direction in each orientation — which are exactly invariant whenever the vectors are
exactly equivariant. Because the vectors are only approximately equivariant, so is the invariance: the registry
declares ``approximate`` and the harness measures it.

Patches: ``S`` FPS centres of the centred cloud with their ``k_local`` nearest points (local patches), and the same
``k_global`` FPS points of the whole cloud seen from every centre (global patches). FPS starts at the point
farthest from the centroid, so patches are deterministic and invariant at evaluation (the released code starts at a
random point).

Row-vector convention throughout: a rotation ``R`` maps ``x`` to ``x Rᵀ`` (:func:`pointgeo.geometry.rotate`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointgeo.geometry import (
    check_points,
    farthest_point_sampling,
    frame_from_directions,
    index_points,
    knn,
    random_rotations,
    rotate,
)
from pointgeo.nn.linear_bn import LinearBN, PooledMLP
from pointgeo.registry import register_model

POSE_CHANNELS = 16
LEAKY = 0.2


class Disentangler(nn.Module):
    """PaRot's DisentangleNet: a PointNet on one patch → an invariant feature and two unit direction vectors.

    PointNet ``3 → 64 → 128 → 128`` (shared MLP, max over the patch), an invariant head of ``invariant_layers`` ×
    (Linear 128→128 + BN + ReLU) and two direction heads (128 → 64 → 32 → 3, the last without bias,
    L2-normalised).

    Shapes:
        ``patches (P, K, 3)`` → ``feature (P, C)``, ``directions (P, 2, 3)``.
    """

    def __init__(self, channels: tuple[int, ...] = (64, 128, 128), invariant_layers: int = 2,
                 direction_hidden: tuple[int, ...] = (64, 32)) -> None:
        super().__init__()
        self.pointnet = PooledMLP((3, *channels))
        self.invariant = nn.Sequential(*(LinearBN(channels[-1], channels[-1]) for _ in range(invariant_layers)))
        hidden = [channels[-1], *direction_hidden]
        self.directions = nn.ModuleList(
            nn.Sequential(*(LinearBN(c_in, c_out) for c_in, c_out in zip(hidden, hidden[1:])),
                          nn.Linear(hidden[-1], 3, bias=False))
            for _ in range(2)
        )
        self.out_channels = channels[-1]

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pointnet(patches)
        directions = torch.stack([F.normalize(head(x), dim=-1) for head in self.directions], dim=-2)
        return self.invariant(x), directions


@dataclass
class PatchEncoding:
    """What the two disentanglers give per patch centre (``B`` clouds, ``S`` centres).

    Attributes:
        centres: ``(B, S, 3)`` centre positions relative to the cloud's centroid.
        local_feature, global_feature: ``(B, S, C)`` invariant features of the local and global patches.
        local_directions, global_directions: ``(B, S, 2, 3)`` predicted directions, in the input's frame.
    """

    centres: Tensor
    local_feature: Tensor
    global_feature: Tensor
    local_directions: Tensor
    global_directions: Tensor

    def frames(self) -> tuple[Tensor, Tensor]:
        """Local and global orientation matrices ``(B, S, 3, 3)`` (:func:`frame_from_directions`)."""
        return frame_from_directions(self.local_directions), frame_from_directions(self.global_directions)


@dataclass
class SiameseTerms:
    """The second branch's view of the same patches (each under its own random rotation), for the losses.

    Attributes:
        local_directions, global_directions: ``(B, S, 2, 3)`` branch-2 directions mapped back to the input frame.
        local_feature, global_feature: ``(B, S, C)`` branch-2 invariant features.
    """

    local_directions: Tensor
    global_directions: Tensor
    local_feature: Tensor
    global_feature: Tensor


def relative_pose(frame_a: Tensor, frame_b: Tensor, offset: Tensor) -> Tensor:
    """PaRot's 16 pose channels between two orientations and an offset: ``‖t‖``, ``O_a O_bᵀ`` (9),
    ``O_a t̂`` (3), ``O_b t̂`` (3), with ``t̂ = t / ‖t‖`` (0 for ``t = 0``).

    Each is invariant when ``O_a, O_b`` rotate as ``O Rᵀ`` and ``t`` as ``t Rᵀ`` (row vectors).

    Shapes:
        ``frame_a, frame_b (..., 3, 3)``, ``offset (..., 3)`` → ``(..., 16)``.
    """
    direction = F.normalize(offset, dim=-1).unsqueeze(-1)
    return torch.cat([
        offset.norm(dim=-1, keepdim=True),
        (frame_a @ frame_b.transpose(-1, -2)).flatten(-2),
        (frame_a @ direction).squeeze(-1),
        (frame_b @ direction).squeeze(-1),
    ], dim=-1)


class IntraPatchLayer(nn.Module):
    """PaRot's intra layer: an EdgeConv over the ``k`` nearest patch centres with relative poses.

    Edge ``(i, j)``: the pose between the local orientations ``O_i, O_j`` and the offset ``c_j - c_i``
    (:func:`relative_pose`, embedded 16 → 32), the neighbour's feature ``f_j`` and the centre's ``f_i``, then a
    shared MLP and the max over ``j``. The released code feeds ``[f_j, f_j - f_i]``; ``[f_i, f_j]`` is the same
    linear span, and lets ``f_j`` be transformed before it is gathered (:class:`LinearBN`'s gathered input).

    Shapes:
        ``centres (B, S, 3)``, ``frames (B, S, 3, 3)``, ``features (B, S, C)`` → ``(B, S, C_out)``.
    """

    def __init__(self, channels: int = 128, k: int = 32, widths: tuple[int, ...] = (128, 128, 128),
                 pose_channels: int = 32) -> None:
        super().__init__()
        self.k = k
        self.pose = LinearBN(POSE_CHANNELS, pose_channels)
        self.first = LinearBN(pose_channels + channels, widths[0], gathered_channels=channels)
        self.rest = PooledMLP(widths)

    def forward(self, centres: Tensor, frames: Tensor, features: Tensor) -> Tensor:
        idx, _ = knn(centres, centres, self.k)  # (B, S, k), the centre itself first
        neighbour_frames = index_points(frames.flatten(-2), idx).unflatten(-1, (3, 3))
        own_frames = frames.unsqueeze(2).expand_as(neighbour_frames)
        offsets = index_points(centres, idx) - centres.unsqueeze(2)
        pose = self.pose(relative_pose(neighbour_frames, own_frames, offsets))  # (B, S, k, 32)
        own = features.unsqueeze(2).expand(*idx.shape, features.shape[-1])
        return self.rest(self.first(torch.cat([pose, own], dim=-1), features, idx))


class PaRotEncoder(nn.Module):
    """Patches, the two disentanglers, pose restoration and the intra layer: per-centre invariant features.

    Args:
        centres: ``S``, FPS patch centres.
        k_local: points per local patch.
        k_global: FPS points of the global patch.
        k_layer: neighbouring centres in the intra layer.

    Shapes:
        ``pos (B, N, 3)`` → ``features (B, S, 2C + 32)`` (local-layer feature, global invariant feature and the
        embedded local-to-global pose) and the :class:`PatchEncoding`.
    """

    def __init__(self, centres: int = 256, k_local: int = 64, k_global: int = 32, k_layer: int = 32,
                 pose_channels: int = 32) -> None:
        super().__init__()
        self.centres, self.k_local, self.k_global = centres, k_local, k_global
        self.local = Disentangler()
        self.global_ = Disentangler()
        channels = self.local.out_channels
        self.intra = IntraPatchLayer(channels, k_layer, pose_channels=pose_channels)
        self.pose = LinearBN(POSE_CHANNELS, pose_channels, negative_slope=LEAKY)
        self.out_channels = 2 * channels + pose_channels
        self.min_points = max(centres, k_local, k_global)

    def patches(self, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Centres ``(B, S, 3)`` of the centred cloud, local patches ``(B, S, K_l, 3)`` and global patches
        ``(B, S, K_g, 3)``, both relative to their centre."""
        check_points(pos, "pos")
        if pos.shape[1] < self.min_points:
            raise ValueError(f"PaRot needs at least {self.min_points} points per cloud (centres, k_local, "
                             f"k_global); got {pos.shape[1]}")
        pos = pos - pos.mean(dim=1, keepdim=True)
        centres = index_points(pos, farthest_point_sampling(pos, self.centres))
        idx, _ = knn(centres, pos, self.k_local)
        local = index_points(pos, idx) - centres.unsqueeze(2)
        sparse = index_points(pos, farthest_point_sampling(pos, self.k_global))
        global_ = sparse.unsqueeze(1) - centres.unsqueeze(2)
        return centres, local, global_

    @staticmethod
    def _disentangle(net: Disentangler, patches: Tensor, rotations: Tensor | None) -> tuple[Tensor, Tensor]:
        """Run ``net`` on every patch ``(B, S, K, 3)``, each rotated by its ``rotations (R, B, S, 3, 3)`` (one
        branch per leading entry; the branches run as one batch, so BatchNorm sees both); directions are mapped back
        to the input frame.

        Returns ``features (R, B, S, C)`` and ``directions (R, B, S, 2, 3)`` (``R = 1`` without rotations)."""
        if rotations is None:
            views = patches.unsqueeze(0)
        else:
            views = rotate(patches.unsqueeze(0), rotations)
        feature, directions = net(views.flatten(0, 2))
        lead = views.shape[:3]
        feature, directions = feature.view(*lead, -1), directions.view(*lead, 2, 3)
        if rotations is not None:  # d_rot ≈ d Rᵀ, so d ≈ d_rot R
            directions = directions @ rotations.to(directions.dtype)
        return feature, directions

    def encode(self, pos: Tensor, rotations: tuple[Tensor, Tensor] | None = None
               ) -> tuple[PatchEncoding, SiameseTerms | None]:
        """Disentangle every patch. ``rotations``: per-patch rotations ``(2, B, S, 3, 3)`` for the local and the
        global patches (training); the first branch feeds the network, the second only the losses."""
        centres, local, global_ = self.patches(pos)
        local_rot, global_rot = rotations if rotations is not None else (None, None)
        local_feature, local_dirs = self._disentangle(self.local, local, local_rot)
        global_feature, global_dirs = self._disentangle(self.global_, global_, global_rot)
        encoding = PatchEncoding(centres, local_feature[0], global_feature[0], local_dirs[0], global_dirs[0])
        siamese = None
        if rotations is not None:
            siamese = SiameseTerms(local_dirs[1], global_dirs[1], local_feature[1], global_feature[1])
        return encoding, siamese

    def forward(self, pos: Tensor, rotations: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, PatchEncoding, SiameseTerms | None]:
        encoding, siamese = self.encode(pos, rotations)
        local_frames, global_frames = encoding.frames()
        local = self.intra(encoding.centres, local_frames, encoding.local_feature)
        pose = self.pose(relative_pose(local_frames, global_frames, encoding.centres))
        return torch.cat([local, encoding.global_feature, pose], dim=-1), encoding, siamese

    def patch_rotations(self, batch: int, dtype: torch.dtype, device: torch.device,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two independent Haar rotations per local and per global patch: ``2 × (2, B, S, 3, 3)``."""
        shape = (2, batch, self.centres, 3, 3)
        rotations = random_rotations(4 * batch * self.centres, generator=generator, dtype=dtype, device=device)
        local, global_ = rotations.view(2, *shape)
        return local, global_


class PaRotLosses(nn.Module):
    """PaRot's auxiliary losses from the two siamese branches (spec §2.6), unweighted.

    * ``dir_local``, ``dir_global``: MSE between the two branches' directions, both mapped back to the input frame
      (the released ``MSE(d¹, d² R₂ᵀ R₁)`` in the first branch's frame; rotations preserve it);
    * ``orth_local``, ``orth_global``: MSE of ``d_a · d_b`` to 0 (first branch);
    * ``feat_local``, ``feat_global``: MSE between the two branches' invariant features.
    """

    def forward(self, encoding: PatchEncoding, siamese: SiameseTerms) -> dict[str, Tensor]:
        losses = {}
        for kind in ("local", "global"):
            directions = getattr(encoding, f"{kind}_directions")
            losses[f"dir_{kind}"] = F.mse_loss(directions, getattr(siamese, f"{kind}_directions"))
            losses[f"orth_{kind}"] = (directions[..., 0, :] * directions[..., 1, :]).sum(-1).square().mean()
            losses[f"feat_{kind}"] = F.mse_loss(getattr(encoding, f"{kind}_feature"),
                                                getattr(siamese, f"{kind}_feature"))
        return losses


class PaRotNetwork(nn.Module, ABC):
    """What the PaRot networks share: the :class:`PaRotEncoder` (``self.encoder``), the siamese training path and the
    orientations. A subclass maps the encoder's per-centre features to its output in :meth:`_predict`; ``extra``
    are its further inputs (the category for segmentation)."""

    encoder: PaRotEncoder

    def __init__(self) -> None:
        super().__init__()
        self.losses = PaRotLosses()

    @abstractmethod
    def _predict(self, pos: Tensor, features: Tensor, encoding: PatchEncoding, *extra: Tensor) -> Tensor:
        """The network's output from ``pos (B, N, 3)`` and the encoder's ``features (B, S, C)``."""

    def forward_siamese(self, pos: Tensor, *extra: Tensor, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, dict[str, Tensor]]:
        """Training step input: the output of the first branch and the unweighted auxiliary losses."""
        rotations = self.encoder.patch_rotations(pos.shape[0], pos.dtype, pos.device, generator)
        features, encoding, siamese = self.encoder(pos, rotations)
        return self._predict(pos, features, encoding, *extra), self.losses(encoding, siamese)

    def orientations(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """The predicted local and global orientations ``(B, S, 3, 3)`` (evaluation path), to measure their
        equivariance: ideally ``O(x Rᵀ) = O(x) Rᵀ``."""
        encoding, _ = self.encoder.encode(pos)
        return encoding.frames()

    @contextmanager
    def recording_orientations(self) -> Iterator[list[tuple[Tensor, Tensor]]]:
        """Within the block, every forward pass appends the local and global orientations ``(B, S, 3, 3)`` of the
        encoding it computed to the yielded list: what :meth:`orientations` gives, without a second encoder pass."""
        recorded: list[tuple[Tensor, Tensor]] = []
        handle = self.encoder.register_forward_hook(lambda module, args, output: recorded.append(output[1].frames()))
        try:
            yield recorded
        finally:
            handle.remove()


def global_embedding(in_channels: int, widths: tuple[int, ...], emb_dims: int) -> PooledMLP:
    """PaRot's shape descriptor: shared MLP ``in → widths → emb_dims`` (BN + LeakyReLU 0.2) and the max over the
    centres: ``(B, S, in) → (B, emb_dims)``."""
    return PooledMLP((in_channels, *widths, emb_dims), negative_slope=LEAKY)


class PaRotClassifier(PaRotNetwork):
    """PaRot classification: :class:`PaRotEncoder`, the :func:`global_embedding` ``288 → 256 → 512 → emb_dims``
    and an MLP head (LeakyReLU 0.2 throughout).

    ``forward`` is the evaluation path (no rotation, deterministic patches). :meth:`forward_siamese` is the
    training path: two random rotations per patch, logits from the first branch and the auxiliary losses.

    Shapes:
        ``pos (B, N, 3)`` (``normal`` is ignored: PaRot reads coordinates only) → logits ``(B, num_classes)``;
        ``N >= max(centres, k_local, k_global)``.
    """

    def __init__(self, num_classes: int = 40, centres: int = 256, k_local: int = 64, k_global: int = 32,
                 k_layer: int = 32, widths: tuple[int, ...] = (256, 512), emb_dims: int = 1024,
                 head: tuple[int, ...] = (512, 256), dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = PaRotEncoder(centres, k_local, k_global, k_layer)
        self.embed = global_embedding(self.encoder.out_channels, widths, emb_dims)
        widths_head = [emb_dims, *head]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths_head, widths_head[1:]):
            layers += [LinearBN(c_in, c_out, negative_slope=LEAKY), nn.Dropout(dropout)]
        self.head = nn.Sequential(*layers, nn.Linear(widths_head[-1], num_classes))

    def _predict(self, pos: Tensor, features: Tensor, encoding: PatchEncoding, *extra: Tensor) -> Tensor:
        return self.head(self.embed(features))

    def forward(self, pos: Tensor, normal: Tensor | None = None) -> Tensor:
        features, encoding, _ = self.encoder(pos)
        return self._predict(pos, features, encoding)


@register_model(
    "parot_cls", task="classification", invariance="approximate",
    test_kwargs={"centres": 32, "k_local": 16, "k_global": 16, "k_layer": 8, "widths": (32,), "emb_dims": 64,
                 "head": (32,)},
    test_num_points=128,
)
def parot_cls(num_classes: int = 40, use_normals: bool = False, **kwargs: object) -> PaRotClassifier:
    """PaRot classifier (learned, approximate rotation invariance; coordinates only)."""
    if use_normals:
        raise ValueError("PaRot reads coordinates only: set use_normals to false")
    return PaRotClassifier(num_classes, **kwargs)
