"""APEN: exact per-part invariance given the partition, the predicted partition measured, votes, fallback, errors."""

from __future__ import annotations

import pytest
import torch

from pointgeo.geometry import apply_piecewise_motion, piecewise_motion
from pointgeo.nn.apen import APEN, APENOutput, TEST_KWARGS
from pointgeo.nn.apen.mixture import Mixture, fisher_correction, log_densities, merge, prune
from pointgeo.testing import measure, measure_apen_piecewise, piecewise_part_sets
from pointgeo.testing.registry_table import build_test_network, random_clouds


def small(dtype: torch.dtype = torch.float64, use_normals: bool = True) -> APEN:
    net, _ = build_test_network("apen", dtype, use_normals)
    return net


def articulated_batch(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Two samples of three well separated anisotropic parts (48 points): pos, normal, seg, category."""
    pos, normal, parts = piecewise_part_sets(48)["random"]
    second = pos.clone()
    second[..., 1] += 0.5 * parts[..., None].to(pos.dtype).squeeze(-1)
    return {"pos": torch.cat([pos, second]).to(dtype), "normal": torch.cat([normal, normal]).to(dtype),
            "seg": torch.cat([parts, parts]), "category": torch.zeros(2, dtype=torch.long)}


def test_segment_returns_the_documented_output_and_forward_its_logits() -> None:
    net = small()
    batch = articulated_batch()
    out = net.segment(batch["pos"], batch["normal"])
    assert isinstance(out, APENOutput)
    b, n = batch["seg"].shape
    assert out.logits.shape == (b, n, 6) and out.votes.shape == (b, n, 3) and out.partition.shape == (b, n)
    assert out.partition.dtype == torch.long and len(out.seeds) == len(TEST_KWARGS["blocks"])
    assert (out.num_parts >= 1).all() and (out.num_parts <= TEST_KWARGS["candidates"]).all()
    assert torch.equal(net(batch["pos"], batch["normal"], batch["category"]), out.logits)
    given = net.segment(batch["pos"], batch["normal"], partition=batch["seg"])
    assert torch.equal(given.partition, batch["seg"]) and given.num_parts.tolist() == [3, 3]
    assert not torch.allclose(given.logits, out.logits)  # the partition matters


def test_given_partition_votes_and_logits_follow_each_part_exactly() -> None:
    net = small()
    batch = articulated_batch()
    pos, normal, seg = batch["pos"], batch["normal"], batch["seg"]
    rot, shift, centre = piecewise_motion(pos, seg, torch.Generator().manual_seed(3), translation_scale=10.0)
    moved, turned = apply_piecewise_motion(pos, normal, seg, rot, shift, centre)
    with torch.no_grad():
        ref = net.segment(pos, normal, partition=seg)
        out = net.segment(moved, turned, partition=seg)
    scale = ref.logits.abs().max().clamp_min(1)
    assert torch.allclose(out.logits, ref.logits, rtol=0, atol=1e-8 * float(scale))
    r = torch.gather(rot, 1, seg[..., None, None].expand(*seg.shape, 3, 3))  # each point's part rotation
    expected = (ref.votes.unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2)
    assert torch.allclose(out.votes, expected, rtol=0, atol=1e-8 * float(ref.votes.abs().max().clamp_min(1)))
    assert ref.votes.abs().max() > 1e-3  # votes are not trivially zero


def test_parts_of_one_or_two_points_use_the_deterministic_fallback() -> None:
    net = small()
    pos, normal, parts = piecewise_part_sets(48)["collinear"]  # parts 3 and 4: one and two points
    first = net.segment(pos, normal, partition=parts)
    second = net.segment(pos, normal, partition=parts)
    assert torch.equal(first.logits, second.logits) and torch.equal(first.votes, second.votes)
    tiny = parts[0] >= 3
    assert torch.equal(first.votes[0, tiny], torch.zeros_like(first.votes[0, tiny]))  # no frame: no direction
    assert torch.isfinite(first.logits).all() and first.votes[0, ~tiny].abs().max() > 0


def test_the_predicted_partition_is_measured_with_its_accuracy() -> None:
    net = small()
    report = measure_apen_piecewise(net, articulated_batch(), seed=0, trials=4)
    assert set(report) >= {"max_relative_error", "given_max_relative_error", "partition_accuracy",
                           "moved_partition_accuracy", "predicted_parts", "flip_rate", "tolerance"}
    assert report["given_max_relative_error"] <= 1e-8 == report["tolerance"]
    assert 0 < report["partition_accuracy"] <= 1 and 0 < report["moved_partition_accuracy"] <= 1
    assert report["max_relative_error"] >= 0 and report["predicted_parts"] >= 1
    assert net.training is False  # the mode is restored (it was eval)


def test_with_its_own_partition_apen_is_invariant_to_one_global_motion() -> None:
    # a global rotation moves every predicted part with the rest: the EM loop turns with the cloud
    net = small()
    pos, normal = random_clouds(64)
    report = measure(net, pos, normal, torch.zeros(3, dtype=torch.long), trials=4)
    assert report.within(), str(report)


def test_training_mode_samples_gumbel_partitions_and_gradients_reach_every_weight() -> None:
    net = small(torch.float32).train()
    batch = articulated_batch(torch.float32)
    torch.manual_seed(0)
    out = net.segment(batch["pos"], batch["normal"])
    centre = sum(out.seeds).sum()  # the vote path and the logits both reach the loss
    loss = out.logits.logsumexp(-1).mean() + 1e-3 * centre
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_merge_prune_and_the_fisher_correction_by_hand() -> None:
    means = torch.tensor([[[0.0, 0, 0], [0.001, 0, 0], [1.0, 0, 0], [1.0005, 0, 0]]])
    mix = Mixture(means, torch.full((1, 4), 0.25), 0.2, torch.ones(1, 4, dtype=torch.bool))
    merged = merge(mix, 1e-3)
    assert merged.active.tolist() == [[True, False, True, False]]
    assert torch.allclose(merged.weights, torch.tensor([[0.5, 0.0, 0.5, 0.0]]), rtol=0, atol=1e-7)
    pruned = prune(Mixture(means, torch.tensor([[0.5, 1e-5, 0.4999, 1e-5]]), 0.2, mix.active), 1e-4)
    assert pruned.active.tolist() == [[True, False, True, False]]
    seeds = torch.randn(1, 20, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    fixed = Mixture(means[:, ::2].clone(), torch.full((1, 2), 0.5), 0.2, torch.ones(1, 2, dtype=torch.bool))
    corrected = fisher_correction(seeds, fixed)
    assert torch.equal(corrected.means.detach(), fixed.means) and torch.equal(corrected.weights.detach(), fixed.weights)
    corrected.means.sum().backward()
    assert seeds.grad is not None and seeds.grad.abs().sum() > 0  # differentiable w.r.t. the seeds
    with torch.no_grad():
        assert fisher_correction(seeds, fixed).means.grad_fn is None
    log_n = log_densities(seeds.detach(), merged)
    assert torch.isinf(log_n[..., 1]).all() and torch.isfinite(log_n[..., 0]).all()


def test_the_fisher_correction_gives_a_component_mean_the_gradient_of_a_mean() -> None:
    """Two tight clusters of seeds (spread 1e-3, σ² = 0.01: what trained votes give): the corrected mean of a
    component moves as the mean of its members, ``∂μ_k/∂s_i = 1/N_k`` for members and 0 for the others; the
    empirical Fisher of the first version multiplied it by ``σ² C⁻¹`` (~10⁴ here)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    members = torch.tensor([0] * 12 + [1] * 8)
    seeds = (centres[members] + 1e-3 * torch.randn(20, 3, generator=g, dtype=torch.float64))[None].requires_grad_()
    means = torch.stack([seeds.detach()[0, members == c].mean(0) for c in (0, 1)])[None]
    fixed = Mixture(means, torch.tensor([[0.6, 0.4]], dtype=torch.float64), 0.01, torch.ones(1, 2, dtype=torch.bool))
    corrected = fisher_correction(seeds, fixed)
    assert torch.equal(corrected.means.detach(), fixed.means)
    corrected.means[0, 0, 0].backward()
    expected = torch.zeros(20, 3, dtype=torch.float64)
    expected[members == 0, 0] = 1 / 12
    torch.testing.assert_close(seeds.grad[0], expected, rtol=0, atol=1e-6)


def test_bad_input_gets_one_clear_error_each() -> None:
    net = small()
    pos, normal = random_clouds(64)
    with pytest.raises(ValueError, match=r"at least k = 4 points per cloud"):
        net(pos[:, :3], normal[:, :3])
    bad = pos.clone()
    bad[1, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="pos contains NaN"):
        net(bad, normal)
    with pytest.raises(ValueError, match=r"pos must have shape \(B, N, 3\)"):
        net(pos[..., :2], normal)
    with pytest.raises(ValueError, match="normal must have the shape of pos"):
        net(pos, normal[:, :10])
    with pytest.raises(ValueError, match="reads normals"):
        net(pos, None)
    with pytest.raises(ValueError, match="normal contains NaN"):
        net(pos, normal * float("nan"))
    with pytest.raises(ValueError, match=r"category must be \(B,\)"):
        net(pos, normal, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"partition must be integer part labels \(B, N\)"):
        net(pos, normal, None, torch.zeros(3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="partition labels must be in"):
        net(pos, normal, None, torch.full((3, 64), -1))
    with pytest.raises(ValueError, match="partition must be integer"):
        net(pos, normal, None, torch.zeros(3, 64))
    with pytest.raises(ValueError, match="variances needs one value per block"):
        APEN(variances=(0.2,))
    with pytest.raises(ValueError, match="next one's"):
        APEN(blocks=((0, 0, 8, 8), (4, 4, 8, 8)), variances=(0.2, 0.1))


def test_the_released_defaults_build_and_run() -> None:
    torch.manual_seed(0)
    net = APEN(num_parts=24).eval()
    assert len(net.blocks) == 4 and net.em_period == 16 and net.candidates == 40 and net.k == 10
    first = net.blocks[0].net.layers
    assert [layer.out_features for layer in first] == [32, 48, 64, 80, 96]  # f(m·4, m·4), m = 2 … 6
    assert first[0].in_features == 33  # 10 neighbours + the normal
    decoder = net.decoder.net.layers
    assert [layer.out_features for layer in decoder] == [384, 512, 640, 768, 896]
    pos, normal = random_clouds(48)
    out = net.segment(pos[:1].float(), normal[:1].float())
    assert out.logits.shape == (1, 48, 24) and torch.isfinite(out.logits).all()
