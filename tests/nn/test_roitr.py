"""RoITr's pieces: PPFs on hand-worked pairs, the Sinkhorn marginals, the mutual top-k, patches, the ground-truth
overlaps, the losses (hand-checked limits), the network's outputs and its bad-input errors; the gated and pre-norm
transformer options (identity at a zero gate, invariance)."""

from __future__ import annotations

import math

import pytest
import torch

from pointgeo.geometry import random_rigid_motions, transform_points
from pointgeo.nn.roitr import RoITr
from pointgeo.nn.roitr.losses import (
    optimal_transport_loss,
    overlap_aware_circle_loss,
    patch_overlaps,
    point_match_labels,
)
from pointgeo.nn.roitr.matching import (
    LearnableLogOptimalTransport,
    build_patches,
    extract_correspondences,
    superpoint_scores,
    top_pairs,
)
from pointgeo.nn.roitr.network import PAIR_OUTPUT_KINDS, SMALL, STANDARDIZE_FLOOR, standardize_over_cloud
from pointgeo.nn.roitr.ppf import point_pair_features
from pointgeo.nn.roitr.transformer import GeometricTransformer
from pointgeo.testing.pairs import measure_pair
from pointgeo.testing.shapes import pair_corner, pair_random

D = torch.float64


def test_ppf_of_a_hand_worked_pair_and_its_invariance() -> None:
    centre, n_i = torch.zeros(1, 1, 3, dtype=D), torch.tensor([[[0.0, 0, 1]]], dtype=D)
    nbr, n_j = torch.tensor([[[[2.0, 0, 0]]]], dtype=D), torch.tensor([[[[1.0, 0, 1]]]], dtype=D) / math.sqrt(2)
    ppf = point_pair_features(centre, n_i, nbr, n_j)[0, 0, 0]
    # |d| = 2; ∠(n_i, d) = 90°; ∠(n_j, d) = 45°; ∠(n_i, n_j) = 45°; angles / π
    assert torch.allclose(ppf, torch.tensor([2.0, 0.5, 0.25, 0.25], dtype=D), rtol=0, atol=1e-15)
    m = random_rigid_motions(1, generator=torch.Generator().manual_seed(0))[0]
    rot = m[:3, :3]
    moved = point_pair_features(transform_points(centre, m), n_i @ rot.T, transform_points(nbr[0], m)[None],
                                n_j @ rot.T)[0, 0, 0]
    assert torch.allclose(moved, ppf, rtol=0, atol=1e-14)


def test_sinkhorn_meets_its_marginals_with_masks() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, 4, generator=g, dtype=D)
    rows = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    cols = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    ot = LearnableLogOptimalTransport(iterations=500).double()
    with torch.no_grad():
        plan = ot(scores, rows, cols).exp()  # entries sum to m + n per pair
    for p in range(3):
        m, n = int(rows[p].sum()), int(cols[p].sum())
        real_rows = plan[p, :-1][rows[p]].sum(-1)
        real_cols = plan[p, :, :-1][:, cols[p]].sum(0)
        assert torch.allclose(real_rows, torch.ones(m, dtype=D), rtol=0, atol=1e-9)
        assert torch.allclose(real_cols, torch.ones(n, dtype=D), rtol=0, atol=1e-9)
        assert torch.allclose(plan[p, -1].sum(), torch.tensor(float(n), dtype=D), rtol=0, atol=1e-9)  # dustbin row
        assert torch.allclose(plan[p, :, -1].sum(), torch.tensor(float(m), dtype=D), rtol=0, atol=1e-9)
        assert float(plan[p, :-1][~rows[p]].sum()) < 1e-30  # masked rows carry nothing


def test_mutual_topk_keeps_ties_and_drops_low_scores() -> None:
    s = torch.tensor([[[0.9, 0.8, 0.0], [0.8, 0.9, 0.01], [0.0, 0.2, 0.7]]], dtype=D)
    log = torch.full((1, 4, 4), -50.0, dtype=D)
    log[:, :3, :3] = s.clamp_min(1e-20).log()
    mask = torch.ones(1, 3, dtype=torch.bool)
    index = torch.tensor([[10, 11, 12]])
    corr, scores, groups = extract_correspondences(log, mask, mask, index, index + 10, topk=1, threshold=0.05)
    assert corr.tolist() == [[10, 20], [11, 21], [12, 22]] and groups.tolist() == [0, 0, 0]
    assert torch.allclose(scores, torch.tensor([0.9, 0.9, 0.7], dtype=D), rtol=0, atol=1e-12)
    s[0, 0, 1] = 0.9  # tie in row 0 and column 1 at the top: both kept where mutual
    log[:, :3, :3] = s.clamp_min(1e-20).log()
    corr, _, _ = extract_correspondences(log, mask, mask, index, index + 10, topk=1, threshold=0.05)
    assert corr.tolist() == [[10, 20], [10, 21], [11, 21], [12, 22]]


def test_patches_partition_the_points_by_nearest_superpoint() -> None:
    g = torch.Generator().manual_seed(0)
    points = torch.rand(200, 3, generator=g, dtype=D)
    sp_idx = torch.arange(0, 200, 20)
    sp = points[sp_idx]
    patches = build_patches(points, sp, torch.arange(200), torch.arange(10), 64)
    nearest = torch.cdist(points, sp).argmin(-1)
    inside = patches.member >= 0
    assert torch.equal(patches.member[inside], nearest[inside])
    counts = torch.bincount(nearest, minlength=10)
    assert torch.equal(patches.mask, nearest[patches.index] == torch.arange(10)[:, None])  # assigned among the 64
    assert (patches.mask.sum(1) <= counts).all() and int(patches.mask.sum()) == int(inside.sum())
    assert torch.equal(patches.index[torch.arange(10), 0], sp_idx)  # each superpoint heads its own patch


def test_overlaps_of_a_cloud_with_itself_and_with_a_far_copy() -> None:
    g = torch.Generator().manual_seed(0)
    points = torch.rand(300, 3, generator=g, dtype=D)
    sp = points[:12]
    rank = torch.arange(300)
    patches = build_patches(points, sp, rank, torch.arange(12), 64)
    m = random_rigid_motions(1, generator=g)[0]
    overlap = patch_overlaps(points, transform_points(points, m), m, patches, patches, 0.01)
    assert torch.allclose(overlap.diagonal(), torch.ones(12, dtype=D), rtol=0, atol=1e-12)
    far = m.clone()
    far[:3, 3] += 100.0
    assert float(patch_overlaps(points, transform_points(points, m), far, patches, patches, 0.01).max()) == 0.0


def test_circle_loss_is_small_for_separated_descriptors_and_large_for_confused_ones() -> None:
    overlap = torch.eye(4, dtype=D) * 0.8
    valid = torch.ones(4, dtype=torch.bool)
    eye = torch.eye(4, dtype=D)
    good = overlap_aware_circle_loss(eye, eye, overlap, valid, valid)
    swapped = overlap_aware_circle_loss(eye, eye[[1, 0, 3, 2]], overlap, valid, valid)
    # separated: every weight is 0 (d = 0 < O_p for positives, d = √2 > O_n for negatives), so each row's two
    # logsumexps over 4 zero terms are log 4: softplus(2 log 4) / 24 = log(17) / 24
    assert abs(float(good) - math.log(17) / 24) < 1e-12
    assert float(swapped) > 10 * float(good)
    assert float(overlap_aware_circle_loss(eye, eye, torch.zeros(4, 4, dtype=D), valid, valid)) == 0.0


def test_ot_loss_labels_and_value() -> None:
    src = torch.tensor([[0.0, 0, 0], [1, 0, 0]], dtype=D)
    tgt = torch.tensor([[0.0, 0, 0.01], [5, 5, 5]], dtype=D)
    labels = point_match_labels(src, tgt, torch.eye(4, dtype=D), torch.tensor([[0, 1]]), torch.tensor([[0, 1]]),
                                torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool), 0.05)
    expected = torch.zeros(1, 3, 3, dtype=torch.bool)
    expected[0, 0, 0] = expected[0, 1, 2] = expected[0, 2, 1] = True  # a match; row 1 and column 1 to the dustbins
    assert torch.equal(labels, expected)
    log = torch.full((1, 3, 3), -2.0, dtype=D)
    assert float(optimal_transport_loss(log, labels)) == 2.0


def test_top_pairs_and_dual_normalisation() -> None:
    f = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=D), dim=1)
    valid = torch.tensor([True, True, True, True, False])
    s = superpoint_scores(f, f, valid, valid)
    assert float(s[4].abs().max()) == 0 and float(s[:, 4].abs().max()) == 0
    pairs, values = top_pairs(s, 100)
    assert len(pairs) == 16 and torch.equal(pairs[:4].sort(0).values[:, 0], torch.arange(4))  # diagonal first
    assert (pairs[:4, 0] == pairs[:4, 1]).all() and (values[:-1] >= values[1:]).all()


@pytest.fixture(scope="module")
def small() -> RoITr:
    torch.manual_seed(0)
    return RoITr(**SMALL).double().eval()


def test_network_outputs_and_training_pairs(small: RoITr) -> None:
    src, tgt = pair_random(256, 0)
    with torch.no_grad():
        out = small(src, tgt)
    s, t = len(out.src_superpoints), len(out.tgt_superpoints)
    assert (s, t) == (16, 16) and out.coarse_scores.shape == (s, t)
    assert out.src_point_desc.shape == (256, 16) and out.tgt_point_desc.shape == (256, 16)
    assert torch.allclose(out.src_superpoint_desc.norm(dim=-1), torch.ones(s, dtype=D), rtol=0, atol=1e-12)
    assert out.correspondences.shape[1] == 2 and len(out.correspondences) == len(out.scores) > 0
    assert (out.scores > 0.05).all() and out.overlap is None
    assert torch.allclose(out.src_normals.norm(dim=-1), torch.ones(256, dtype=D), rtol=0, atol=1e-12)
    small.train()
    try:
        out = small(src, tgt, torch.eye(4, dtype=D))
    finally:
        small.eval()
    chosen = out.overlap[out.coarse_pairs[:, 0], out.coarse_pairs[:, 1]]
    assert (chosen > small.coarse_overlap).all()  # training pairs are ground-truth pairs


def test_bad_input_gives_one_clear_error_each(small: RoITr) -> None:
    good = pair_random(256, 0)[0]
    nan = good.clone()
    nan[3, 1] = float("nan")
    cases = [
        ((torch.zeros(0, 3, dtype=D), good), ValueError, "src_pos is empty"),
        ((good, nan), ValueError, "tgt_pos contains NaN"),
        ((good[:40], good), ValueError, "src_pos has 40 points; this RoITr needs at least 144"),
        ((good[None], good), ValueError, r"src_pos must be one cloud of shape \(N, 3\)"),
        ((good, good.long()), TypeError, "tgt_pos must be a floating-point tensor"),
        (([[0.0, 0, 0]], good), TypeError, "src_pos must be a floating-point tensor"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            small(*args)
    assert small.min_points == 144  # 9 superpoints (k = 8, itself) × 4 × 4
    small(good[:144], good[:144])  # the smallest accepted fragments run


def test_gated_transformer_starts_at_the_identity_of_its_residual_branches() -> None:
    """``layer_scale=0``: every layer reduces to its LayerNorms, so the transformer maps features through
    ``out_proj ∘ LayerNorm ∘ … ∘ in_proj`` whatever the attention weights; the released layers do not."""
    torch.manual_seed(0)
    gated = GeometricTransformer(16, 16, 8, heads=2, blocks=("self", "cross", "self"), layer_scale=0.0).double()
    released = GeometricTransformer(16, 16, 8, heads=2, blocks=("self", "cross", "self")).double()
    released.load_state_dict({k: v for k, v in gated.state_dict().items() if "scale.gamma" not in k})
    assert sum("scale.gamma" in k for k in gated.state_dict()) == 6  # attention + MLP branch of three layers
    pos = [torch.randn(1, n, 3, dtype=D) for n in (12, 10)]
    feats = [torch.randn(1, n, 16, dtype=D) for n in (12, 10)]
    ranks = [torch.arange(n).unsqueeze(0) for n in (12, 10)]
    with torch.no_grad():
        x, y = gated(pos[0], pos[1], feats[0], feats[1], ranks[0], ranks[1])
        rx, _ = released(pos[0], pos[1], feats[0], feats[1], ranks[0], ranks[1])
        expected = []
        for f in feats:
            h = gated.in_proj(f)
            for layer in gated.layers:
                h = layer.ffn.norm(layer.norm(h))
            expected.append(gated.out_proj(h))
    assert torch.allclose(x, expected[0], rtol=0, atol=1e-12) and torch.allclose(y, expected[1], rtol=0, atol=1e-12)
    assert (rx - expected[0]).abs().max() > 1e-2


@pytest.mark.parametrize("options", [{"layer_scale": 0.5}, {"pre_norm": True},
                                     {"standardize_point_descriptors": True},
                                     {"pre_norm": True, "layer_scale": 0.5, "center_descriptors": True,
                                      "standardize_point_descriptors": True}],
                         ids=["layer_scale", "pre_norm", "standardize", "all"])
def test_options_against_the_collapse_stay_invariant(options: dict) -> None:
    """The variants against the descriptor collapse (gates at 0.5, so attention contributes; centred superpoint
    descriptors; standardised point descriptors) pass the pair protocol: float64, 1e-8 relative, each fragment under
    its own rigid motion and permutation."""
    torch.manual_seed(0)
    net = RoITr(**SMALL, **options).double().eval()
    assert (net.transformer.final_norm is not None) == bool(options.get("pre_norm"))
    for make in (pair_random, pair_corner):
        src, tgt = make(256, 0)
        report = measure_pair(lambda s, t: net(s, t).invariant_outputs(), src, tgt, PAIR_OUTPUT_KINDS, trials=2)
        assert report.within(), f"{make.__name__}: {report}"


def outputs_before_and_after_a_bias_shift(head: str, **options: bool) -> tuple:
    """Outputs of the seeded float64 ``SMALL`` RoITr (with ``options``) on a random pair, before and after adding a
    random vector (norm ~3 per entry) to the bias of its ``head``: a component shared by every feature of a cloud."""
    src, tgt = pair_random(256, 0)
    torch.manual_seed(0)
    net = RoITr(**SMALL, **options).double().eval()
    with torch.no_grad():
        before = net(src, tgt)
        bias = getattr(net, head).bias
        bias += 3.0 * torch.randn(bias.shape, dtype=D)
        return before, net(src, tgt)


def test_centred_descriptors_drop_any_component_shared_by_a_cloud() -> None:
    """With ``center_descriptors`` a vector added to every superpoint feature of a cloud (here the coarse head's
    bias) leaves the superpoint descriptors unchanged; without it, it moves them."""
    for center in (True, False):
        before, after = outputs_before_and_after_a_bias_shift("coarse_head", center_descriptors=center)
        change = max(float((after.src_superpoint_desc - before.src_superpoint_desc).abs().max()),
                     float((after.tgt_superpoint_desc - before.tgt_superpoint_desc).abs().max()))
        assert (change < 1e-12) if center else (change > 1e-2), (center, change)


def test_standardized_point_descriptors_keep_only_what_differs_between_points() -> None:
    """``standardize_over_cloud``: mean 0 over the cloud, root mean square ``1 / (1 + floor · rms(desc) /
    rms(centred))``; a common scale leaves it unchanged and a component shared by every point changes only that one
    scale (through the floor); a cloud whose points share one descriptor maps to 0 (up to rounding); rounding-level
    differences stay rounding-level."""
    torch.manual_seed(0)
    desc = torch.randn(50, 8, dtype=D) * 0.02 + 5.0
    out = standardize_over_cloud(desc)
    centred = desc - desc.mean(0)
    expected_rms = 1 / (1 + STANDARDIZE_FLOOR * float(desc.pow(2).mean().sqrt() / centred.pow(2).mean().sqrt()))
    assert float(out.mean(0).abs().max()) < 1e-12
    assert abs(float(out.pow(2).mean().sqrt()) - expected_rms) < 1e-12
    assert 0.75 < expected_rms < 1  # at a 250:1 ratio of shared to varying parts the floor takes a fifth
    assert torch.allclose(standardize_over_cloud(7.0 * desc), out, rtol=0, atol=1e-12)
    shifted = standardize_over_cloud(desc + 3 * torch.randn(8, dtype=D))
    ratio = shifted / out
    assert float(ratio.min()) > 0 and float(ratio.max() - ratio.min()) < 1e-9  # one positive factor
    shared = torch.randn(8, dtype=D) * 3
    assert float(standardize_over_cloud(shared.expand(20, 8)).abs().max()) < 1e-11  # the mean's rounding, ×1000
    noisy = shared + 1e-15 * torch.randn(20, 8, dtype=D)
    assert float(standardize_over_cloud(noisy).abs().max()) < 1e-10


def test_standardized_point_descriptors_drop_the_fine_heads_bias() -> None:
    """With ``standardize_point_descriptors`` a vector added to every point of a cloud (the fine head's bias) only
    rescales the point descriptors (the optimal-transport inputs), which keep mean 0 per cloud; without it the
    vector moves them."""
    for standardize in (True, False):
        before, after = outputs_before_and_after_a_bias_shift("fine_head", standardize_point_descriptors=standardize)
        for a, b in ((after.src_point_desc, before.src_point_desc), (after.tgt_point_desc, before.tgt_point_desc)):
            factor = float((a * b).sum() / (b * b).sum())
            residual = float((a - factor * b).abs().max() / b.abs().max())
            if standardize:
                assert factor > 0 and residual < 1e-9 and float(a.mean(0).abs().max()) < 1e-12, (factor, residual)
            else:
                assert residual > 1e-2, residual
