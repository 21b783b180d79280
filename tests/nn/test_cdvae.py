"""CDVAE's pieces: periodic triplets, tie-keeping neighbour truncation, composition sampling, noise schedules,
lattice sanitising, the losses (teacher forcing, invariance to rotating the batch) and batched Langevin generation."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from pointgeo.geometry import CRYSTAL_FIELDS, apply_rigid_motion, lattice_volume, periodic_radius_graph, \
    sample_rotations, lattice_params_to_matrix
from pointgeo.nn.cdvae.encoder import periodic_triplets
from pointgeo.nn.cdvae.langevin import langevin_generate, sample_composition, sanitize_lattice
from pointgeo.nn.cdvae.losses import DEFAULT_WEIGHTS, LOSS_NAMES, cdvae_losses, weighted_sum
from pointgeo.nn.cdvae.noise import NoiseSchedule, geometric_levels, noise_types
from pointgeo.registry import create_model, get_model_entry
from pointgeo.testing.crystals import crystal_cases


def tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("cdvae", **{**get_model_entry("cdvae").test_kwargs, **kwargs}).double()
    net.set_scalers(torch.tensor([2.3, 2.3, 2.3, 90.0, 90.0, 90.0]), torch.tensor([0.3, 0.3, 0.3, 10.0, 10.0, 10.0]),
                    torch.zeros(1), torch.ones(1))
    return net


def labelled(kind: str):
    batch = crystal_cases(kind)
    from pointgeo.geometry import lattice_matrix_to_params

    batch.lengths, batch.angles = lattice_matrix_to_params(batch.cell)
    batch.y = torch.randn(batch.num_graphs, 1, dtype=torch.float64)
    return batch


def test_periodic_triplets_equal_a_brute_force_enumeration() -> None:
    batch = crystal_cases("skewed")
    graph = periodic_radius_graph(batch.frac_coords, batch.cell, 3.0, batch.batch)
    idx_kj, idx_ji = periodic_triplets(graph.edge_index, graph.shifts, batch.frac_coords.shape[0])
    target, source = graph.edge_index
    expected = set()
    for b in range(target.shape[0]):
        for a in range(target.shape[0]):
            reverse = int(source[a]) == int(target[b]) and bool((graph.shifts[a] == -graph.shifts[b]).all())
            if int(target[a]) == int(source[b]) and not reverse:
                expected.add((a, b))
    assert set(zip(idx_kj.tolist(), idx_ji.tolist())) == expected
    assert len(expected) == idx_kj.shape[0] > 0
    # a one-atom cell: an atom's images neighbour each other, and only the reverse edge is left out
    single = crystal_cases("single_atom")
    graph = periodic_radius_graph(single.frac_coords[:1], single.cell[:1], 3.0)
    idx_kj, idx_ji = periodic_triplets(graph.edge_index, graph.shifts, 1)
    assert graph.edge_index.shape[1] == 6 and idx_kj.shape[0] == 6 * 5


def test_nearest_neighbours_keep_ties_so_symmetric_cells_stay_symmetric() -> None:
    cubic = crystal_cases("cubic")
    plain = periodic_radius_graph(cubic.frac_coords, cubic.cell, 5.0, cubic.batch, max_neighbors=8)
    tied = periodic_radius_graph(cubic.frac_coords, cubic.cell, 5.0, cubic.batch, max_neighbors=8, keep_ties=True)
    counts = torch.bincount(tied.edge_index[0], minlength=cubic.frac_coords.shape[0])
    assert int(torch.bincount(plain.edge_index[0]).max()) == 8
    assert int(counts[0]) == 18  # simple cubic: 6 at a and 12 at a√2 — the 8th neighbour is tied with 10 more
    kth = torch.zeros(len(counts), dtype=torch.float64).scatter_reduce_(0, tied.edge_index[0], tied.distances, "amax",
                                                                    include_self=False)
    full = periodic_radius_graph(cubic.frac_coords, cubic.cell, 5.0, cubic.batch)
    inside = full.distances <= kth[full.edge_index[0]] * (1 + 1e-9)
    assert int(inside.sum()) == tied.edge_index.shape[1]  # exactly every edge as short as the kept ones


def test_composition_sampling_rounds_fills_and_truncates_per_crystal() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.zeros(3, 10, dtype=torch.float64)
    probs[0, [2, 7]] = torch.tensor([0.6, 0.4], dtype=torch.float64)  # N = 5: 3 and 2 exactly
    probs[1, [0, 1, 2]] = 1 / 3  # N = 4: rounds to 1 each, one more from the residual
    probs[2, :] = 0.1  # N = 3: rounds to 0 everywhere, all three drawn
    num = torch.tensor([5, 4, 3])
    types = sample_composition(probs, num, g)
    assert types.shape == (12,)
    assert Counter(types[:5].tolist()) == {3: 3, 8: 2}
    second = Counter(types[5:9].tolist())
    assert set(second) <= {1, 2, 3} and sum(second.values()) == 4 and min(second.get(z, 0) for z in (1, 2, 3)) >= 1
    assert set(types[9:].tolist()) <= set(range(1, 11))
    again = sample_composition(probs, num, torch.Generator().manual_seed(0))
    assert torch.equal(types, again)
    over = torch.zeros(1, 4, dtype=torch.float64)
    over[0] = 0.25  # N = 2: rounds to 1 each (4 atoms); 2 kept at random
    kept = sample_composition(over, torch.tensor([2]), g)
    assert kept.shape == (2,) and len(set(kept.tolist())) == 2


def test_noise_schedules_and_type_noise() -> None:
    levels = geometric_levels(10.0, 0.01, 50)
    assert levels[0] == pytest.approx(10.0) and levels[-1] == pytest.approx(0.01)
    assert torch.allclose(levels[1:] / levels[:-1], torch.full((49,), 1000 ** (-1 / 49), dtype=torch.float64),
                          rtol=1e-12, atol=0)
    schedule = NoiseSchedule()
    sigma, type_sigma = schedule.draw(1000, torch.Generator().manual_seed(0))
    assert set(sigma.tolist()) <= set(schedule.sigmas.tolist()) and len(set(sigma.tolist())) > 40
    assert type_sigma.max() <= 5.0 + 1e-5 and type_sigma.min() >= 0.01 - 1e-7
    true = torch.full((2000,), 6)
    comp = torch.zeros(2000, 100, dtype=torch.float64)
    comp[:, 7] = 1.0  # the composition says oxygen
    low = noise_types(true, comp, torch.full((2000,), 0.01), torch.Generator().manual_seed(0))
    high = noise_types(true, comp, torch.full((2000,), 5.0), torch.Generator().manual_seed(0))
    assert (low == 6).float().mean() > 0.97 and set(high.tolist()) == {6, 8}
    assert abs((high == 8).float().mean() - 5 / 6) < 0.05  # p ∝ onehot + 5 · comp


def test_sanitize_lattice_only_touches_unusable_cells() -> None:
    lengths = torch.tensor([[3.0, 4.0, 5.0], [0.1, -2.0, float("nan")], [3.0, 3.0, 3.0], [0.9, 1.0, 1.0]],
                           dtype=torch.float64)
    angles = torch.tensor([[80.0, 95.0, 100.0], [90.0, 90.0, 90.0], [10.0, 170.0, 150.0], [90.0, 90.0, 90.0]],
                          dtype=torch.float64)
    natoms = torch.tensor([5, 5, 2, 20])
    new_lengths, new_angles = sanitize_lattice(lengths, angles, natoms)
    assert torch.equal(new_lengths[0], lengths[0]) and torch.equal(new_angles[0], angles[0])
    volume = lattice_volume(lattice_params_to_matrix(new_lengths, new_angles))
    assert bool((volume >= 3.0 * natoms.double() * (1 - 1e-12)).all())
    assert bool(((new_angles >= 30) & (new_angles <= 150)).all()) and bool(torch.isfinite(new_lengths).all())


def test_losses_are_finite_weighted_and_the_encoder_terms_invariant_to_rotating_the_batch() -> None:
    net = tiny()
    batch = labelled("random")
    for teacher in (True, False):
        losses = cdvae_losses(net, batch, teacher_forcing=teacher, generator=torch.Generator().manual_seed(1))
        assert set(losses) == set(LOSS_NAMES) and all(bool(torch.isfinite(v)) for v in losses.values())
        rotations = sample_rotations("so3", batch.num_graphs, generator=torch.Generator().manual_seed(2))
        rotated = apply_rigid_motion(batch, CRYSTAL_FIELDS, rotations)
        again = cdvae_losses(net, rotated, teacher_forcing=teacher, generator=torch.Generator().manual_seed(1))
        # the losses of the encoder and heads are the same; the coordinate noise is drawn in the lab frame, so the
        # denoising losses are equal in distribution only
        for name in ("natom", "lattice", "composition", "kl", "property"):
            assert torch.allclose(losses[name], again[name], rtol=1e-9, atol=1e-12), name
    total = weighted_sum(losses, DEFAULT_WEIGHTS)
    expected = sum(DEFAULT_WEIGHTS[k] * v for k, v in losses.items())
    assert torch.allclose(total, expected, rtol=1e-12, atol=0)
    assert DEFAULT_WEIGHTS == {"natom": 1, "lattice": 10, "composition": 1, "coord": 10, "type": 1, "kl": 0.01,
                               "property": 1}


def test_a_few_adam_steps_lower_the_losses_on_a_fixed_batch() -> None:
    net = tiny()
    batch = labelled("random")
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)

    def evaluate() -> dict[str, float]:
        values = cdvae_losses(net, batch, teacher_forcing=True, generator=torch.Generator().manual_seed(0))
        return {k: float(v) for k, v in values.items()}

    start = evaluate()
    for _ in range(30):
        opt.zero_grad()
        losses = cdvae_losses(net, batch, teacher_forcing=True, generator=torch.Generator().manual_seed(0))  # one draw
        weighted_sum(losses, DEFAULT_WEIGHTS).backward()
        opt.step()
    end = evaluate()
    for name in LOSS_NAMES:  # the KL term rises while the latent starts to carry information (weight 0.01)
        if name != "kl":
            assert end[name] < start[name], (name, start[name], end[name])
    assert weighted_sum(end, DEFAULT_WEIGHTS) < weighted_sum(start, DEFAULT_WEIGHTS)


def test_langevin_generation_is_batched_deterministic_and_calls_back_per_level() -> None:
    net = tiny()
    z = torch.randn(6, net.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    levels = []
    out = langevin_generate(net, z, generator=torch.Generator().manual_seed(5), steps_per_level=2,
                            on_level=lambda k, n: levels.append((k, n)))
    same = langevin_generate(net, z, generator=torch.Generator().manual_seed(5), steps_per_level=2)
    assert levels == [(k, 4) for k in range(4)]
    assert all(torch.equal(out[k], same[k]) for k in out)
    n = out["num_atoms"]
    assert out["frac_coords"].shape == (int(n.sum()), 3) and out["atom_types"].shape == (int(n.sum()),)
    assert bool(((out["frac_coords"] >= 0) & (out["frac_coords"] <= 1)).all())
    # crystals are generated independently of their batch-mates' count: the first three alone give the same atoms
    # only if the random stream is the same, so compare the deterministic heads instead
    assert torch.equal(n[:3], langevin_generate(net, z[:3], generator=torch.Generator().manual_seed(5),
                                                steps_per_level=1)["num_atoms"])
    with pytest.raises(ValueError, match="steps_per_level"):
        langevin_generate(net, z, generator=torch.Generator(), steps_per_level=0)
    assert math.isclose(float(net.noise.sigmas[0]), 10.0, rel_tol=1e-6)


def test_composition_validity_of_an_element_without_oxidation_states_is_false_not_a_crash() -> None:
    from pointgeo.metrics.crystals import composition_validity

    assert composition_validity([10, 8, 8]) is False  # neon (no oxidation state in SMACT) with oxygen
    assert composition_validity([11, 17]) is True  # NaCl still passes


def test_the_coordinate_target_points_from_the_noisy_to_the_clean_position(monkeypatch: pytest.MonkeyPatch) -> None:
    """An oracle decoder that returns the minimum-image step back to the clean crystal over σ (what the Langevin
    update ``x + ε ŝ / σ`` follows) has zero coordinate loss; the opposite direction costs ``2 |Δ/σ|²`` per atom.
    Large noise (σ = 3 Å on 2-5 Å cells) makes the minimum image matter; a random guess costs about 1.5."""
    from pointgeo.geometry import frac_to_cart, minimum_image

    batch = labelled("random")
    for sigma in (0.05, 3.0):
        net = tiny(noise={"num_levels": 1, "sigma_begin": sigma, "sigma_end": sigma})
        for sign, check in ((1.0, lambda v: float(v) < 1e-12), (-1.0, lambda v: float(v) > 0.5)):
            def oracle(z, pos, types, cell, index, sign=sign, sigma=sigma):
                delta = minimum_image(frac_to_cart(batch.frac_coords, cell, index) - pos, cell, index)
                return sign * delta / sigma, torch.zeros(pos.shape[0], net.max_z, dtype=pos.dtype)

            monkeypatch.setattr(net, "decode", oracle)
            losses = cdvae_losses(net, batch, teacher_forcing=True, generator=torch.Generator().manual_seed(3))
            assert check(losses["coord"]), (sigma, sign, float(losses["coord"]))


def test_the_kl_term_hand_worked(monkeypatch: pytest.MonkeyPatch) -> None:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over latent dimensions, averaged over crystals: a crystal with μ_0 = 1 and
    σ_1² = 4 costs ½ + ½ (4 − 1 − ln 4); one at the prior costs 0."""
    net = tiny()
    batch = labelled("random")
    b, d = batch.num_graphs, net.latent_dim
    mu, log_var = torch.zeros(b, d, dtype=torch.float64), torch.zeros(b, d, dtype=torch.float64)
    mu[0, 0], log_var[0, 1] = 1.0, math.log(4.0)
    monkeypatch.setattr(net, "encode", lambda *args: (mu, log_var))
    losses = cdvae_losses(net, batch, teacher_forcing=True, generator=torch.Generator().manual_seed(0))
    expected = (0.5 + 0.5 * (4.0 - 1.0 - math.log(4.0))) / b
    assert math.isclose(float(losses["kl"]), expected, rel_tol=1e-12, abs_tol=0)
