"""PaRot part segmentation: per-point outputs are exactly invariant given equivariant orientations (float64, 1e-8;
rotations, translations, permutations), with the default and the released interpolation anchors; the point pose is
invariant and worked out by hand; the siamese path restores the poses; size and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pointgeo.geometry import random_rotations
from pointgeo.nn.parot_seg import point_pose
from pointgeo.registry import create_model, get_model_entry
from pointgeo.testing import measure

from test_parot import EquivariantOracle, clouds

SMALL = get_model_entry("parot_seg").test_kwargs


def build(oracle: bool, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("parot_seg", num_parts=6, num_categories=3, **{**SMALL, **kwargs})
    if oracle:
        net.encoder.local, net.encoder.global_ = EquivariantOracle(), EquivariantOracle()
    return net.double()


CATEGORY = torch.tensor([0, 2, 1])


@pytest.mark.parametrize("unit_centres", [False, True], ids=["centres", "released-unit-centres"])
def test_per_point_outputs_are_invariant_given_equivariant_orientations(unit_centres: bool) -> None:
    net = build(oracle=True, unit_centres=unit_centres).eval()
    report = measure(net, clouds(), None, CATEGORY, trials=3)
    assert report.max_abs <= 1e-8, report
    learned = measure(build(oracle=False, unit_centres=unit_centres).eval(), clouds(), None, CATEGORY, trials=2)
    assert learned.max_abs > 1e-4, learned  # untrained orientations: visibly not invariant


def test_point_pose_by_hand_and_under_rotation() -> None:
    frames = torch.stack([torch.eye(3), torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])]).double()
    pose = point_pose(frames, torch.tensor([0.0, 3.0, 4.0], dtype=torch.float64))
    # ‖t‖ = 5, t̂ = (0, 0.6, 0.8); the identity sees t̂, the permutation matrix sees (0.6, 0.8, 0)
    torch.testing.assert_close(pose, torch.tensor([5.0, 0, 0.6, 0.8, 0.6, 0.8, 0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    frames = random_rotations(8, generator=g).view(4, 2, 3, 3)
    offsets = torch.randn(4, 3, generator=g, dtype=torch.float64)
    r = random_rotations(1, generator=g)[0]
    torch.testing.assert_close(point_pose(frames @ r.T, offsets @ r.T), point_pose(frames, offsets),
                               rtol=0, atol=1e-12)


def test_siamese_path_restores_the_poses_and_segments_every_point() -> None:
    net = build(oracle=True).train()
    logits, losses = net.forward_siamese(clouds(), CATEGORY, generator=torch.Generator().manual_seed(1))
    assert logits.shape == (3, 128, 6)
    for key in ("dir_local", "dir_global", "feat_local", "feat_global"):
        assert losses[key] <= 1e-20, (key, losses[key])


def test_full_size_parameter_count_matches_the_spec() -> None:
    """1.53 M counted from the released segmentation code."""
    net = create_model("parot_seg")
    assert abs(sum(p.numel() for p in net.parameters()) - 1.53e6) / 1.53e6 < 0.005


def test_bad_input_is_refused() -> None:
    net = build(oracle=False).eval()
    pos: Tensor = clouds()
    with pytest.raises(ValueError, match="category must be"):
        net(pos, None, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="category must be"):
        net(pos, None, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 32 points"):
        net(clouds(3, 20), None, CATEGORY)
    with pytest.raises(ValueError, match="coordinates only"):
        create_model("parot_seg", use_normals=True)
    with pytest.raises(ValueError, match="interpolate"):
        create_model("parot_seg", centres=8, interpolate=11)
