"""RegistrationTask with RoITr: training through Lightning logs both losses and the registration metrics, a
checkpoint rebuilds the task, ``register_pair`` returns poses whose correspondences index the given clouds, the
deterministic estimator is equivariant (float64, ≤ 1e-8) on adversarial and real fragments, registration that finds
no motion says so, and a batch of two pairs is refused with one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from pointgeo.datamodules.registration_readers import read_fragment
from pointgeo.datamodules.threedmatch import FOLLOW_BATCH, FragmentPair
from pointgeo.geometry import random_rigid_motions, transform_points
from pointgeo.hub import load_checkpoint, rebuild_task
from pointgeo.nn.roitr.network import SMALL
from pointgeo.tasks import RegistrationTask
from pointgeo.testing import ADVERSARIAL_PAIRS, measure_pair_equivariance
from pointgeo.testing.shapes import overlapping_crops
from torch_geometric.loader.dataloader import Collater

D = torch.float64


def make_pair(src: torch.Tensor, tgt: torch.Tensor, seed: int, index: int = 0) -> FragmentPair:
    """A FragmentPair of ``src`` and ``tgt`` (already in one frame), the target moved by a seeded motion."""
    m = random_rigid_motions(1, generator=torch.Generator().manual_seed(seed))[0]
    return FragmentPair(src_pos=src.float(), tgt_pos=transform_points(tgt, m).float(), transform=m[None],
                        src_motion=torch.eye(4, dtype=D)[None], tgt_motion=m[None],
                        overlap=torch.ones(1, dtype=D), scene=torch.tensor([0]), src_id=torch.tensor([0]),
                        tgt_id=torch.tensor([index + 2]), index=torch.tensor([index]))


def loader(pairs: list[FragmentPair], batch_size: int = 1) -> DataLoader:
    return DataLoader(pairs, batch_size=batch_size, collate_fn=Collater(None, follow_batch=FOLLOW_BATCH))


def small_task(**kwargs) -> RegistrationTask:
    torch.manual_seed(0)
    return RegistrationTask(network_kwargs=SMALL, positive_radius=0.1, **{"min_inliers": 3, **kwargs})


def test_training_logs_both_losses_and_the_metrics_and_the_checkpoint_rebuilds(tmp_path: Path) -> None:
    pairs = [make_pair(*ADVERSARIAL_PAIRS["random"](256, k), seed=k, index=k) for k in range(2)]
    task = small_task(lr=1e-3)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(task, loader(pairs), loader(pairs[:1]))
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/circle_loss", "train/ot_loss", "val/loss", "val/circle_loss", "val/ot_loss",
                "val/ir", "val/fmr", "val/rr"):
        assert key in logged and torch.isfinite(logged[key]), key
    assert 0 <= float(logged["val/ir"]) <= 1
    path = tmp_path / "roitr.ckpt"
    trainer.save_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert ckpt["pointgeo"]["task"] == "registration"
    rebuilt = rebuild_task(ckpt, str(path))
    assert isinstance(rebuilt, RegistrationTask) and rebuilt.hparams.estimator == "lgr"
    src, tgt = pairs[0].src_pos, pairs[0].tgt_pos
    task.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(src, tgt).scores, task(src, tgt).scores)


def test_a_batch_of_two_pairs_is_refused() -> None:
    pairs = [make_pair(*ADVERSARIAL_PAIRS["random"](256, k), seed=k, index=k) for k in range(2)]
    batch = next(iter(loader(pairs, batch_size=2)))
    with pytest.raises(ValueError, match="one fragment pair per step.*got a batch of 2 pairs"):
        small_task().training_step(batch, 0)


@pytest.fixture(scope="module")
def task64() -> RegistrationTask:
    """The untrained tiny model, float64, accepting any estimate with one inlier: its estimates are arbitrary but
    deterministic, which is what equivariance is about (recovery is tested on a trained model and in
    tests/geometry/test_lgr.py)."""
    torch.manual_seed(0)
    return RegistrationTask(network_kwargs=SMALL, min_inliers=1).double().eval()


@pytest.fixture(scope="module")
def fragment(shared_sample) -> torch.Tensor:
    points = torch.from_numpy(read_fragment(shared_sample("3dmatch", "assets", "cloud_bin_21.pth")))
    near = (points - points[100]).norm(dim=-1).argsort()[:768]
    return overlapping_crops(points[near], 256, torch.Generator().manual_seed(1))[0]


def same_surface(name: str, fragment: torch.Tensor) -> torch.Tensor:
    return fragment if name == "threedmatch_fragment" else ADVERSARIAL_PAIRS[name](256, 0)[0]


@pytest.mark.parametrize("name", ["random", "wall", "corner", "threedmatch_fragment"])
def test_the_deterministic_estimator_is_equivariant(name: str, task64: RegistrationTask, fragment) -> None:
    """T̂(M₁X, M₂Y) = M₂ T̂(X, Y) M₁⁻¹ to 1e-8 (float64), X a fragment and Y an overlapping part of the same
    surface under a motion, each fragment moved and permuted independently."""
    src = same_surface(name, fragment)
    truth = random_rigid_motions(1, generator=torch.Generator().manual_seed(5))[0]
    tgt = transform_points(src, truth)[torch.randperm(len(src), generator=torch.Generator().manual_seed(6))]

    def estimate(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        result = task64.register_pair(s, t)
        assert result.success, result.message
        return result.transform

    report = measure_pair_equivariance(estimate, src, tgt[:200], trials=2)
    assert report.within(), str(report)


def test_register_pair_semantics(task64: RegistrationTask) -> None:
    src = ADVERSARIAL_PAIRS["random"](256, 0)[0]
    truth = random_rigid_motions(1, generator=torch.Generator().manual_seed(2))[0]
    tgt = transform_points(src, truth)[:200]
    task64.train()
    result = task64.register_pair(src.float(), tgt.float())  # float32 input, float64 network
    assert task64.training  # the mode is restored
    task64.eval()
    assert result.success and result.transform.dtype == D and result.transform.shape == (4, 4)
    corr = result.correspondences
    assert corr.shape[1] == 2 and int(corr[:, 0].max()) < 256 and int(corr[:, 1].max()) < 200
    moved = transform_points(src[corr[:, 0]], result.transform)
    inliers = int(((moved - tgt[corr[:, 1]]).norm(dim=-1) < task64.hparams.estimator_distance).sum())
    assert inliers == result.inliers and result.inlier_ratio == inliers / len(corr)


def test_no_consistent_motion_is_a_failure_not_an_identity(task64: RegistrationTask) -> None:
    strict = small_task(min_inliers=10_000).double().eval()
    src, tgt = ADVERSARIAL_PAIRS["random"](256, 0)
    result = strict.register_pair(src, tgt)
    assert not result.success and "registration failed" in result.message
    ransac = small_task(estimator="ransac", estimator_distance=0.05, ransac_iterations=2000,
                        min_inliers=10_000).double().eval()
    result = ransac.register_pair(src, tgt)
    assert not result.success and "registration failed" in result.message
    assert len(result.correspondences) and int(result.correspondences[:, 1].max()) < len(tgt)


def test_ransac_estimator_samples_by_confidence_and_is_seeded(task64: RegistrationTask) -> None:
    src = ADVERSARIAL_PAIRS["corner"](256, 0)[0]
    truth = random_rigid_motions(1, generator=torch.Generator().manual_seed(3))[0]
    task = small_task(estimator="ransac", estimator_distance=0.05, ransac_iterations=2000, min_inliers=1,
                      ransac_correspondences=20).double().eval()
    first, again = (task.register_pair(src, transform_points(src, truth)) for _ in range(2))
    assert len(first.correspondences) == 20 and torch.equal(first.correspondences, again.correspondences)
    assert torch.equal(first.transform, again.transform)


def test_register_pair_bad_input(task64: RegistrationTask) -> None:
    good = ADVERSARIAL_PAIRS["random"](256, 0)[0]
    with pytest.raises(ValueError, match="tgt_pos is empty"):
        task64.register_pair(good, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="src_pos contains NaN"):
        task64.register_pair(torch.full((256, 3), float("nan")), good)
    with pytest.raises(ValueError, match="needs at least 144"):
        task64.register_pair(good[:100], good)
    with pytest.raises(TypeError, match="src_pos must be a floating-point tensor"):
        task64.register_pair(good.long(), good)


def test_each_metric_keeps_its_own_state_when_the_first_pair_has_no_inlier() -> None:
    """IR and FMR (RRE and RTE) share a base class and state names; torchmetrics' compute groups merged them when
    their states happened to agree after the first update (a first pair without inliers, or a rejected one: all 0),
    and IR then reported FMR's value (RTE RRE's). Two pairs: IR 0 then 3/10 (mean 0.15), FMR 0 then 1 (0.5)."""
    task = small_task()
    eye = torch.eye(4, dtype=D)[None]
    src = torch.rand(1, 10, 3, generator=torch.Generator().manual_seed(0), dtype=D)
    far = src + 10.0
    near = torch.cat([src[:, :3], far[:, 3:]], 1)
    metrics = task.metrics["test_metrics"]
    metrics.update(src, far, eye)
    metrics.update(src, near, eye)
    values = metrics.compute()
    assert abs(float(values["test/ir"]) - 0.15) < 1e-12 and abs(float(values["test/fmr"]) - 0.5) < 1e-12
    pose = task.pose_metrics["test_metrics"]
    wrong = eye.clone()
    wrong[0, :3, 3] = 1.0
    rotated = eye.clone()
    rotated[0, :3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=D)
    near = eye.clone()
    near[0, 0, 3] = 0.05
    pose.update(wrong, eye, source_points=src)  # a rejected pair: RRE's and RTE's states both 0 after it
    pose.update(near, eye, source_points=src)  # accepted: RRE 0, RTE 0.05
    pose.update(rotated, eye, source_points=src)  # rejected (RRE and RTE average the accepted pairs only)
    values = pose.compute()
    assert abs(float(values["test/rr"]) - 1 / 3) < 1e-12
    assert abs(float(values["test/rre"])) < 1e-9 and abs(float(values["test/rte"]) - 0.05) < 1e-12
