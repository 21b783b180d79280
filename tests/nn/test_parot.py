"""PaRot: pose restoration is exactly invariant given equivariant directions (float64, 1e-8), the siamese branches
restore each patch's pose, the learned directions become equivariant with training, and bad input is refused."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from pointgeo.geometry import random_rotations, rotate
from pointgeo.nn.parot import Disentangler, PaRotLosses, PatchEncoding, SiameseTerms, relative_pose
from pointgeo.registry import create_model, get_model_entry
from pointgeo.testing import measure

SMALL = get_model_entry("parot_cls").test_kwargs


class EquivariantOracle(nn.Module):
    """A stand-in disentangler that is exactly invariant / equivariant by construction: features from the patch's
    radial moments, directions ``unit(Σ ‖p‖^a p)`` for two powers ``a``."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.lift = nn.Linear(4, channels)
        self.out_channels = channels

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        r = patches.norm(dim=-1, keepdim=True)  # (P, K, 1)
        moments = torch.cat([r.mean(1), r.amax(1), (r**2).mean(1), (r**3).mean(1)], dim=-1)
        directions = torch.stack([(r * patches).sum(1), (r**3 * patches).sum(1)], dim=1)
        return torch.tanh(self.lift(moments)), directions / directions.norm(dim=-1, keepdim=True)


def build(oracle: bool) -> nn.Module:
    torch.manual_seed(0)
    net = create_model("parot_cls", num_classes=5, **SMALL)
    if oracle:
        net.encoder.local, net.encoder.global_ = EquivariantOracle(), EquivariantOracle()
    return net.double()


def clouds(b: int = 3, n: int = 128) -> Tensor:
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([1.0, 0.7, 0.4], dtype=torch.float64)
    return torch.randn(b, n, 3, generator=g, dtype=torch.float64) * scale


def test_pose_restoration_is_exactly_invariant_given_equivariant_directions() -> None:
    """Relative rotations and centre directions are invariant when the directions are equivariant (the construction):
    with exactly equivariant directions the whole network is invariant to rotations, translations and permutations."""
    report = measure(build(oracle=True).eval(), clouds(), trials=4)
    assert report.max_abs <= 1e-8, report
    learned = measure(build(oracle=False).eval(), clouds(), trials=2)  # untrained directions: visibly not invariant
    assert learned.max_abs > 1e-4, learned


def test_relative_pose_is_invariant() -> None:
    g = torch.Generator().manual_seed(0)
    frames = random_rotations(10, generator=g)
    other = random_rotations(10, generator=g)
    offset = torch.randn(10, 3, generator=g, dtype=torch.float64)
    r = random_rotations(1, generator=g)[0]
    moved = relative_pose(frames @ r.T, other @ r.T, offset @ r.T)
    torch.testing.assert_close(moved, relative_pose(frames, other, offset), rtol=0, atol=1e-12)
    zero = relative_pose(frames, other, torch.zeros(10, 3, dtype=torch.float64))
    assert torch.isfinite(zero).all() and (zero[:, 10:] == 0).all()  # no direction for a zero offset


def test_siamese_branches_restore_each_patch_pose() -> None:
    """Both branches' directions, mapped back to the input frame, coincide for equivariant directions: the direction
    loss is 0 only if the back-rotation uses the right convention (a transposed rotation would not cancel)."""
    net = build(oracle=True).train()
    logits, losses = net.forward_siamese(clouds(2), generator=torch.Generator().manual_seed(1))
    assert logits.shape == (2, 5)
    for key in ("dir_local", "dir_global", "feat_local", "feat_global"):
        assert losses[key] <= 1e-20, (key, losses[key])
    _, learned = build(oracle=False).train().forward_siamese(clouds(2), generator=torch.Generator().manual_seed(1))
    assert learned["dir_local"] > 1e-3 and learned["orth_local"] > 0


def equivariance_error(net: Disentangler, patches: Tensor, rotations: Tensor) -> float:
    """Mean ‖d(P Rᵀ) − d(P) Rᵀ‖ of the predicted directions (evaluation mode)."""
    with torch.no_grad():
        _, d = net(patches)
        _, d_rot = net(rotate(patches, rotations))
    return float((d_rot - rotate(d, rotations)).norm(dim=-1).mean())


def test_training_with_the_direction_loss_makes_the_directions_equivariant() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = Disentangler()
    axes = torch.tensor([1.0, 0.5, 0.2])
    patches = torch.randn(256, 32, 3, generator=g) * axes  # anisotropic patches: orientable
    held_out = torch.randn(64, 32, 3, generator=g) * axes
    test_rotations = random_rotations(64, generator=g, dtype=torch.float32)
    before = equivariance_error(net.eval(), held_out, test_rotations)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = PaRotLosses()
    net.train()
    for _ in range(150):
        r = random_rotations(2 * 256, generator=g, dtype=torch.float32).view(2, 256, 3, 3)
        feature, d = net(rotate(patches.unsqueeze(0), r).flatten(0, 1))
        d = d.view(2, 256, 2, 3) @ r  # back to the patch frame
        feature = feature.view(2, 256, -1)
        encoding = PatchEncoding(patches, feature[0], feature[0], d[0], d[0])
        terms = losses(encoding, SiameseTerms(d[1], d[1], feature[1], feature[1]))
        loss = terms["dir_local"] + 0.2 * terms["orth_local"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = equivariance_error(net.eval(), held_out, test_rotations)
    assert after < 0.5 * before, (before, after)


def test_full_size_parameter_count_matches_the_spec() -> None:
    """1.63 M counted from the released classification code (each disentangler 80 k, intra layer 71 k)."""
    net = create_model("parot_cls", num_classes=40)
    assert abs(sum(p.numel() for p in net.parameters()) - 1.63e6) / 1.63e6 < 0.005
    assert abs(sum(p.numel() for p in net.encoder.local.parameters()) - 80e3) / 80e3 < 0.01
    assert abs(sum(p.numel() for p in net.encoder.intra.parameters()) - 71e3) / 71e3 < 0.01


def test_bad_input_is_refused() -> None:
    net = build(oracle=False).eval()
    with pytest.raises(ValueError, match="at least 32 points"):
        net(clouds(1, 20))
    bad = clouds(1)
    bad[0, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN|finite"):
        net(bad)
    with pytest.raises(ValueError, match="coordinates only"):
        create_model("parot_cls", use_normals=True)


def test_recorded_orientations_are_those_of_the_forward_pass() -> None:
    """The robustness report reads the orientations recorded during the forward pass instead of a second encoder
    pass: they must be exactly what ``orientations`` computes."""
    net = build(oracle=False).eval()
    pos = clouds(2)
    with torch.no_grad(), net.recording_orientations() as recorded:
        net(pos)
    assert len(recorded) == 1
    for got, expected in zip(recorded[0], net.orientations(pos)):
        assert torch.equal(got, expected)
    net(pos)  # the hook is gone after the block
    assert len(recorded) == 1
