"""Registration metrics: hand-worked values (per-scene averaging, both recall definitions, RRE/RTE on accepted
pairs only) and the official ground truth of all 8 scenes of 3DMatch and 3DLoMatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointgeo.geometry import rigid_matrix, rotations_about_axis
from pointgeo.metrics.registration import (
    FeatureMatchingRecall,
    InlierRatio,
    RegistrationRecall,
    RelativeRotationError,
    RelativeTranslationError,
    information_error,
    mean_distance_error,
)

F64 = torch.float64
EYE = torch.eye(4, dtype=F64)


def shifted(x: float, y: float = 0.0, z: float = 0.0) -> torch.Tensor:
    return rigid_matrix(torch.eye(3, dtype=F64), torch.tensor([x, y, z], dtype=F64))


def test_inlier_ratio_and_fmr_averaged_per_scene() -> None:
    """Scene 0: pairs with IR 3/4 and 1/4 -> 0.5; scene 1: one pair with IR 1 -> overall (0.5 + 1) / 2 = 0.75
    (the mean over pairs would be 2/3). FMR: IR > 0.05 for all three pairs -> 1; a pair with IR 0 lowers it."""
    src = torch.zeros(3, 4, 3, dtype=F64)
    src[:, :, 0] = torch.arange(4, dtype=F64)
    tgt = src.clone()
    tgt[0, 3, 1] = 0.5             # pair 0: one of four off by 0.5 m
    tgt[1, 1:, 1] = 0.11           # pair 1: three of four off by 0.11 m (> 0.1)
    tgt[2, :, 1] = 0.09            # pair 2: all within 0.1 m
    transform = EYE.expand(3, 4, 4)
    scene = torch.tensor([0, 0, 1])
    ir = InlierRatio(num_scenes=2)
    ir.update(src, tgt, transform, scene)
    assert torch.allclose(ir.per_scene(), torch.tensor([0.5, 1.0], dtype=F64), rtol=0, atol=1e-15)
    assert torch.allclose(ir.compute(), torch.tensor(0.75, dtype=F64), rtol=0, atol=1e-15)
    fmr = FeatureMatchingRecall(num_scenes=2)
    fmr.update(src, tgt, transform, scene)
    far = src.clone()
    far[..., 2] += 1.0
    fmr.update(src[:1], far[:1], transform[:1], torch.tensor([1]))
    assert torch.allclose(fmr.compute(), torch.tensor((1.0 + 0.5) / 2, dtype=F64), rtol=0, atol=1e-15)
    mask = torch.tensor([[True, True, True, False]])
    masked = InlierRatio(num_scenes=1)
    masked.update(src[:1], tgt[:1], transform[:1], mask=mask)  # the off point masked out -> 1
    assert masked.compute().item() == 1.0


def test_information_test_hand_worked() -> None:
    """Translation only: E = dᵀ Σ_tt d / Σ₀₀ = |d|² for Σ = diag(n, n, n, ...); 90° about z: ξ = (0, 0, 0, 0, 0,
    √½), E = Σ₅₅ / 2 / Σ₀₀; a cross term Σ₀₅ adds 2 Σ₀₅ d_x √½ / Σ₀₀."""
    info = torch.diag(torch.tensor([5000.0, 5000, 5000, 800, 800, 800], dtype=F64)).unsqueeze(0)
    assert torch.allclose(information_error(shifted(0.19)[None], EYE[None], info), torch.tensor([0.0361], dtype=F64),
                          rtol=0, atol=1e-12)
    quarter = rigid_matrix(rotations_about_axis(torch.tensor([math.pi / 2], dtype=F64), "z"))
    assert torch.allclose(information_error(quarter, EYE[None], info), torch.tensor([800 / 2 / 5000], dtype=F64),
                          rtol=0, atol=1e-12)
    both = quarter.clone()
    both[0, 0, 3] = 0.1
    cross = info.clone()
    cross[0, 0, 5] = cross[0, 5, 0] = 100.0
    expected = (5000 * 0.01 + 800 * 0.5 + 2 * 100 * 0.1 * math.sqrt(0.5)) / 5000
    assert torch.allclose(information_error(both, EYE[None], cross), torch.tensor([expected], dtype=F64),
                          rtol=0, atol=1e-12)
    rr = RegistrationRecall("information", num_scenes=1)
    estimates = torch.stack([shifted(0.19), shifted(0.21), shifted(0.0), shifted(0.5)])
    rr.update(estimates, EYE.expand(4, 4, 4), information=info.expand(4, 6, 6),
              source_id=torch.tensor([5, 5, 5, 4]), target_id=torch.tensor([0, 0, 4, 3]))
    assert rr.compute().item() == 0.5  # pairs 3 and 4 are consecutive: ignored; 0.19 accepted, 0.21 not
    zero = RegistrationRecall("information", num_scenes=1)
    zero.update(EYE[None], EYE[None], information=torch.zeros(1, 6, 6, dtype=F64), source_id=torch.tensor([2]),
                target_id=torch.tensor([0]))
    assert zero.compute().item() == 0.0  # an all-zero information matrix never accepts


def test_mean_distance_recall_and_errors_on_accepted_pairs() -> None:
    points = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]], dtype=F64).expand(3, 2, 3)
    quarter = rigid_matrix(rotations_about_axis(torch.tensor([math.pi / 2], dtype=F64), "z"))[0]
    estimates = torch.stack([shifted(0.1), quarter, shifted(0.0, 0.15)])
    assert torch.allclose(mean_distance_error(estimates, EYE.expand(3, 4, 4), points),
                          torch.tensor([0.1, math.sqrt(2) / 2, 0.15], dtype=F64), rtol=0, atol=1e-12)
    scene = torch.tensor([0, 0, 1])
    kwargs = dict(source_points=points)
    rr, rre, rte = (cls("mean_distance", num_scenes=2) for cls in (RegistrationRecall, RelativeRotationError,
                                                                   RelativeTranslationError))
    for metric in (rr, rre, rte):
        metric.update(estimates, EYE.expand(3, 4, 4), scene, **kwargs)
    assert rr.compute().item() == pytest.approx((0.5 + 1.0) / 2, abs=1e-15)
    assert rre.compute().item() == 0.0  # the rotated (rejected) pair is not averaged in
    assert torch.allclose(rte.per_scene(), torch.tensor([0.1, 0.15], dtype=F64), rtol=0, atol=1e-15)
    assert rte.compute().item() == pytest.approx(0.125, abs=1e-15)
    empty = RelativeRotationError("mean_distance", num_scenes=1)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(empty.compute().item())


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="definition"):
        RegistrationRecall("rmse")
    with pytest.raises(ValueError, match="gt.info"):
        RegistrationRecall("information").update(EYE[None], EYE[None], source_id=torch.tensor([3]),
                                                 target_id=torch.tensor([0]))
    with pytest.raises(ValueError, match="source_id"):
        RegistrationRecall("information").update(EYE[None], EYE[None], information=torch.eye(6)[None].double())
    with pytest.raises(ValueError, match="scene"):
        InlierRatio(num_scenes=2).update(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3), EYE[None], torch.tensor([2]))
    with pytest.raises(ValueError, match=r"\(B, K, 3\)"):
        InlierRatio().update(torch.zeros(1, 3, 3), torch.zeros(1, 4, 3), EYE[None])


@pytest.mark.parametrize("benchmark", ["3DMatch", "3DLoMatch"])
def test_official_ground_truth_all_scenes(shared_sample, benchmark: str) -> None:
    """On the real gt.log / gt.info of all 8 scenes: the ground truth registers every pair it can (3DLoMatch's one
    pair with an all-zero information matrix cannot be accepted: 221/222 in sun3d-home_md); PREDATOR's pair
    metadata poses register every pair too; shifting every estimate by 0.19 m keeps RR (E = 0.0361 < 0.04: the
    translation block of every real information matrix is Σ₀₀ I), 0.21 m makes it 0; RRE/RTE of the truth are 0."""
    from pointgeo.datamodules.registration_readers import read_benchmark, read_pair_metadata

    scenes = read_benchmark(shared_sample("3dmatch", "configs", "benchmarks", benchmark))
    names = sorted(scenes)
    pairs = np.concatenate([scenes[n].pairs for n in names])
    truth = torch.from_numpy(np.concatenate([scenes[n].transform for n in names]))
    info = torch.from_numpy(np.concatenate([scenes[n].information for n in names]))
    scene = torch.from_numpy(np.concatenate([np.full(len(scenes[n].pairs), k) for k, n in enumerate(names)]))
    ids = dict(source_id=torch.from_numpy(pairs[:, 1]), target_id=torch.from_numpy(pairs[:, 0]))

    def recall(estimate: torch.Tensor) -> RegistrationRecall:
        metric = RegistrationRecall("information", num_scenes=8)
        metric.update(estimate, truth, scene, information=info, **ids)
        return metric

    exact = recall(truth)
    expected = 1.0 if benchmark == "3DMatch" else (7 + 221 / 222) / 8
    assert exact.compute().item() == pytest.approx(expected, abs=1e-12)
    table = read_pair_metadata(shared_sample("3dmatch", "configs", "indoor", f"{benchmark}.pkl"))
    lookup = {(s, int(t), int(j)): k for k, (s, t, j) in enumerate(zip(table.scene, table.target_id,
                                                                        table.source_id))}
    order = [lookup[(n, int(i), int(j))] for n in names for i, j in scenes[n].pairs]
    assert recall(torch.from_numpy(table.transform[order])).compute().item() == pytest.approx(expected, abs=1e-12)
    near = truth @ shifted(0.19)
    assert recall(near).compute().item() == pytest.approx(expected, abs=1e-12)
    assert recall(truth @ shifted(0.0, 0.0, 0.21)).compute().item() == 0.0
    rre, rte = RelativeRotationError(num_scenes=8), RelativeTranslationError(num_scenes=8)
    for metric in (rre, rte):
        metric.update(truth, truth, scene, information=info, **ids)
    assert rre.compute().item() < 1e-5 and rte.compute().item() < 1e-12
