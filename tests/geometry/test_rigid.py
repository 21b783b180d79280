"""Rigid transforms: the weighted Kabsch estimator (exact recovery, reflections, weights, equivariance in float64),
inverses, quaternions (against hand-worked values), errors, voxel downsampling, and the pair field declaration."""

from __future__ import annotations

import math

import pytest
import torch

from pointgeo.geometry import (
    FRAGMENT_PAIR_FIELDS,
    FieldSpec,
    PairFieldSpec,
    apply_pair_motion,
    estimate_rigid_transform,
    invert_rigid,
    matrix_to_quaternion,
    random_rigid_motions,
    rigid_matrix,
    rotation_error_degrees,
    rotations_about_axis,
    transform_points,
    translation_error,
    voxel_downsample,
)

F64 = torch.float64


def close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return torch.allclose(a, b, rtol=0, atol=atol)


def test_exact_recovery_batched() -> None:
    gen = torch.Generator().manual_seed(1)
    truth = random_rigid_motions(5, scale=3.0, generator=gen)
    src = torch.randn(5, 50, 3, generator=gen, dtype=F64)
    tgt = transform_points(src, truth)
    est = estimate_rigid_transform(src, tgt)
    assert est.shape == (5, 4, 4)
    assert close(est, truth, 1e-12)
    assert close(torch.linalg.det(est[:, :3, :3]), torch.ones(5, dtype=F64), 1e-12)


def test_reflection_is_corrected_to_a_rotation() -> None:
    """A mirrored target: the best orthogonal map is the mirror; the estimate must still be a proper rotation,
    and for a planar cloud mirrored through its own plane it is the identity (which fits exactly)."""
    gen = torch.Generator().manual_seed(2)
    src = torch.randn(1, 40, 3, generator=gen, dtype=F64)
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))
    est = estimate_rigid_transform(src, src @ mirror)
    assert close(torch.linalg.det(est[0, :3, :3]), torch.tensor(1.0, dtype=F64), 1e-12)
    flat = src.clone()
    flat[..., 2] = 0
    est_flat = estimate_rigid_transform(flat, flat @ mirror)
    assert close(est_flat[0], torch.eye(4, dtype=F64), 1e-12)


def test_weights_select_the_consistent_subset() -> None:
    """Outliers with zero weight change nothing; the same outliers with weight 1 do."""
    gen = torch.Generator().manual_seed(3)
    truth = random_rigid_motions(1, generator=gen)
    src = torch.randn(1, 30, 3, generator=gen, dtype=F64)
    tgt = transform_points(src, truth)
    tgt[0, :5] += 10 * torch.randn(5, 3, generator=gen, dtype=F64)
    weights = torch.ones(1, 30, dtype=F64)
    weights[0, :5] = 0
    assert close(estimate_rigid_transform(src, tgt, weights), truth, 1e-12)
    assert not close(estimate_rigid_transform(src, tgt), truth, 1e-3)


def test_equivariance_float64() -> None:
    """T̂(R₁X + t₁, R₂Y + t₂) = [R₂|t₂] · T̂(X, Y) · [R₁|t₁]⁻¹ to 1e-8 (noisy, weighted correspondences)."""
    gen = torch.Generator().manual_seed(4)
    b = 16
    src = torch.randn(b, 200, 3, generator=gen, dtype=F64)
    tgt = transform_points(src, random_rigid_motions(b, generator=gen)) + 0.05 * torch.randn(b, 200, 3,
                                                                                           generator=gen, dtype=F64)
    weights = torch.rand(b, 200, generator=gen, dtype=F64)
    m1, m2 = random_rigid_motions(b, scale=5.0, generator=gen), random_rigid_motions(b, scale=5.0, generator=gen)
    est = estimate_rigid_transform(src, tgt, weights)
    moved = estimate_rigid_transform(transform_points(src, m1), transform_points(tgt, m2), weights)
    assert close(moved, m2 @ est @ invert_rigid(m1), 1e-8)
    perm = torch.randperm(200, generator=gen)
    assert close(estimate_rigid_transform(src[:, perm], tgt[:, perm], weights[:, perm]), est, 1e-10)


@pytest.mark.parametrize("bad, match", [
    (dict(source=torch.zeros(1, 2, 3, dtype=F64)), "at least 3"),
    (dict(target=torch.full((1, 5, 3), float("nan"), dtype=F64)), "NaN"),
    (dict(weights=torch.zeros(1, 5, dtype=F64)), "positive total weight"),
    (dict(weights=-torch.ones(1, 5, dtype=F64)), "non-negative"),
    (dict(target=torch.zeros(1, 4, 3, dtype=F64)), "shape of source"),
])
def test_estimator_bad_input(bad: dict, match: str) -> None:
    args = {"source": torch.randn(1, 5, 3, dtype=F64), "target": torch.randn(1, 5, 3, dtype=F64), **bad}
    with pytest.raises(ValueError, match=match):
        estimate_rigid_transform(**args)


def test_inverse_errors_and_quaternions_hand_worked() -> None:
    rot = rotations_about_axis(torch.tensor([math.pi / 2], dtype=F64), "z")[0]
    t = rigid_matrix(rot, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    assert close(t @ invert_rigid(t), torch.eye(4, dtype=F64), 1e-15)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    assert close(transform_points(x, t), torch.tensor([[1.0, 3.0, 3.0]], dtype=F64), 1e-15)  # (0,1,0) + t
    q = matrix_to_quaternion(rot)
    half = math.sqrt(0.5)
    assert close(q, torch.tensor([half, 0, 0, half], dtype=F64), 1e-12)  # 90° about z
    flip = rotations_about_axis(torch.tensor([math.pi], dtype=F64), "x")[0]
    assert close(matrix_to_quaternion(flip).abs(), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=F64), 1e-12)
    assert close(rotation_error_degrees(t, torch.eye(4, dtype=F64)), torch.tensor(90.0, dtype=F64), 1e-10)
    assert close(translation_error(t, torch.eye(4, dtype=F64)), torch.tensor(math.sqrt(14), dtype=F64), 1e-12)
    gen = torch.Generator().manual_seed(5)
    many = random_rigid_motions(64, generator=gen)[:, :3, :3]
    q = matrix_to_quaternion(many)
    from pointgeo.geometry import quaternion_to_matrix

    assert close(quaternion_to_matrix(q), many, 1e-12) and (q[:, 0] >= 0).all()
    arccos = torch.rad2deg(torch.arccos(((many.transpose(-1, -2) @ many.flip(0)).diagonal(dim1=-2, dim2=-1).sum(-1)
                                         - 1).clamp(-2, 2) / 2))
    assert close(rotation_error_degrees(many, many.flip(0)), arccos, 1e-6)  # the benchmark's formula


def test_voxel_downsample() -> None:
    pts = torch.tensor([[0.01, 0.01, 0.01], [0.03, 0.01, 0.01], [0.26, 0.0, 0.0], [0.24, 0.0, 0.0]], dtype=F64)
    out = voxel_downsample(pts, 0.25)
    assert close(out, torch.tensor([[0.28 / 3, 0.02 / 3, 0.02 / 3],  # (0.01 + 0.03 + 0.24) / 3, ...
                                    [0.26, 0.0, 0.0]], dtype=F64), 1e-12)
    perm = torch.randperm(4)
    assert close(voxel_downsample(pts[perm], 0.25), out, 1e-15)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="voxel_size"):
            voxel_downsample(pts, bad)
    with pytest.raises(ValueError, match="NaN"):
        voxel_downsample(torch.tensor([[float("nan"), 0.0, 0.0]]), 0.1)
    with pytest.raises(ValueError, match="at least 1"):
        voxel_downsample(torch.zeros(0, 3), 0.1)



def test_voxel_downsample_keys_agree_with_unique_rows() -> None:
    """The one-integer cell keys give the voxels, means and lexicographic order of unique cell rows, also with
    negative cells; a grid too large for one int64 key (a far outlier) takes the unique-rows path, same result."""
    gen = torch.Generator().manual_seed(3)
    pts = torch.randn(3000, 3, generator=gen, dtype=F64) * torch.tensor([2.0, 0.5, 1.0], dtype=F64)
    for cloud, size in ((pts, 0.1), (torch.cat([pts, torch.tensor([[1e7, -1e7, 1e7]], dtype=F64)]), 1e-5)):
        cells, inverse, counts = torch.unique(torch.floor(cloud / size).long(), dim=0, return_inverse=True,
                                              return_counts=True)
        expected = torch.zeros(len(cells), 3, dtype=F64).index_add_(0, inverse, cloud) / counts[:, None]
        out = voxel_downsample(cloud, size)
        assert out.shape == expected.shape and close(out, expected, 1e-12)

def test_pair_motion_moves_each_side_and_keeps_the_pose_consistent() -> None:
    """Source and target move independently; the transform follows both so that it still maps source onto target,
    for one pair (dict), a dense batch, and torch-geometric batches grouped with follow_batch."""
    from torch_geometric.data import Batch, Data

    gen = torch.Generator().manual_seed(6)
    truth = random_rigid_motions(2, generator=gen)
    src = [torch.randn(7 + i, 3, generator=gen, dtype=F64) for i in range(2)]
    tgt = [transform_points(s, truth[i]) for i, s in enumerate(src)]
    m1, m2 = random_rigid_motions(2, scale=2.0, generator=gen), random_rigid_motions(2, scale=2.0, generator=gen)
    one = {"src_pos": src[0], "tgt_pos": tgt[0], "transform": truth[0], "overlap": torch.tensor(0.5)}
    moved = apply_pair_motion(one, FRAGMENT_PAIR_FIELDS, source=(m1[0, :3, :3], m1[0, :3, 3]),
                              target=(m2[0, :3, :3], m2[0, :3, 3]))
    assert close(transform_points(moved["src_pos"], moved["transform"]), moved["tgt_pos"], 1e-12)
    assert close(moved["src_pos"], transform_points(src[0], m1[0]), 1e-14)
    assert moved["overlap"] is one["overlap"] and torch.equal(one["transform"], truth[0])  # input left alone
    only_target = apply_pair_motion(one, FRAGMENT_PAIR_FIELDS, target=(m2[0, :3, :3], None))
    assert only_target["src_pos"] is one["src_pos"]
    assert close(transform_points(src[0], only_target["transform"]), only_target["tgt_pos"], 1e-12)
    batch = Batch.from_data_list([Data(src_pos=s, tgt_pos=t, transform=truth[i:i + 1])
                                  for i, (s, t) in enumerate(zip(src, tgt))], follow_batch=["src_pos", "tgt_pos"])
    moved = apply_pair_motion(batch, FRAGMENT_PAIR_FIELDS, source=(m1[:, :3, :3], m1[:, :3, 3]),
                              target=(m2[:, :3, :3], m2[:, :3, 3]))
    for i in range(2):
        s = moved.src_pos[moved.src_pos_batch == i]
        t = moved.tgt_pos[moved.tgt_pos_batch == i]
        assert close(s, transform_points(src[i], m1[i]), 1e-14)
        assert close(transform_points(s, moved.transform[i]), t, 1e-12)


def test_pair_field_spec_rejects_double_declarations() -> None:
    with pytest.raises(ValueError, match="'pos'"):
        PairFieldSpec(source=FieldSpec(points=("pos",)), target=FieldSpec(points=("pos",)))
    with pytest.raises(TypeError, match="FieldSpec"):
        PairFieldSpec(source={"pos": "points"}, target=FieldSpec())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transform"):
        apply_pair_motion({"src_pos": torch.zeros(3, 3), "transform": torch.eye(3)}, FRAGMENT_PAIR_FIELDS,
                          source=(torch.eye(3), None))
