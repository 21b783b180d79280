"""The robustness report's piecewise protocol: every part of a shape moved by its own seeded rigid motion, beside the
global SO(3) protocol, for segmentation checkpoints trained by ``pointgeo train`` on the articulated set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.cli import main as pointgeo
from pointgeo.datamodules import ArticulatedPartsDataModule
from pointgeo.robustness import ProtocolSettings, run_robustness
from pointgeo.robustness.command import main as robustness_command
from pointgeo.robustness.protocol import move_batch_parts, piecewise_table

NETWORKS = ("tinvnn_pointnet_seg", "pointnet_seg", "apen")
APEN_KWARGS = {"candidates": 8, "em_period": 4, "blocks": [[0, 0, 2, 2], [2, 2, 2, 2]], "base": 1, "head": [16, 8],
               "decoder_multipliers": [1, 2], "k": 4, "variances": [0.2, 0.003]}
SETTINGS = ProtocolSettings(n_rotations=2, sweep_step=180, seed=5)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny checkpoint per network, one epoch of the shipped articulated configs on 12 shapes of 32 points (APEN
    through the PointNet config with its network swapped)."""
    root = tmp_path_factory.mktemp("articulated")
    found = {}
    for net in NETWORKS:
        config = "pointnet_seg" if net == "apen" else net
        kwargs = APEN_KWARGS if net == "apen" else {"channels": [8, 16], "head": [8]}
        pointgeo(["train", "--config", f"articulated/partseg-{config}", "--trainer.max_epochs", "1",
                  "--model.init_args.network", net, "--data.init_args.num_train", "12", "--data.init_args.num_test",
                  "6", "--data.init_args.num_points", "32", "--data.init_args.batch_size", "4",
                  "--model.init_args.network_kwargs", json.dumps(kwargs),
                  "--trainer.default_root_dir", str(root / net), "--trainer.logger", "false",
                  "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"])
        found[net] = root / net / "checkpoints" / "last.ckpt"
    return found


@pytest.fixture(scope="module")
def report(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("reports") / "piecewise"
    run_robustness([str(checkpoints[n]) for n in NETWORKS], out, double=True, batch_size=4, settings=SETTINGS)
    return json.loads((out / "report.json").read_text()), out


def test_globally_invariant_segmenter_is_exact_under_so3_and_breaks_under_piecewise_motion(report: tuple) -> None:
    figures, _ = report
    invariant, plain, _ = figures["models"]
    assert list(invariant["protocols"]) == ["none", "z", "so3", "piecewise"]
    so3, piecewise = invariant["protocols"]["so3"], invariant["protocols"]["piecewise"]
    assert so3["max_logit_change"] <= 1e-8 and so3["invariant_within_tolerance"] is True
    assert piecewise["max_relative_logit_change"] > 1e-3 and piecewise["invariant_within_tolerance"] is False
    assert piecewise["evaluations"] == 2 * 6 and plain["protocols"]["piecewise"]["evaluations"] == 12
    assert 0 <= piecewise["miou_instance"] <= 1
    assert plain["protocols"]["piecewise"]["max_relative_logit_change"] > 1e-3
    row = figures["table"][0]
    assert row["SO3/piecewise"] == piecewise["miou_instance"] and row["SO3/SO3"] == so3["miou_instance"]
    assert row["max_logit_change_piecewise"] == piecewise["max_logit_change"]
    assert "measured_piecewise" not in invariant and "measured_piecewise" not in plain  # no partition of their own
    assert figures["settings"]["piecewise_translation_rms_radii"] == 0.5
    for model in figures["models"]:
        for mode, scores in model["protocols"].items():  # an absent part counts 0 (APEN) instead of 1 (ShapeNet)
            assert 0 <= scores["miou_instance_apen"] <= scores["miou_instance"], mode


def test_apen_reports_its_measured_piecewise_error_and_partition_accuracy(report: tuple) -> None:
    figures, out = report
    apen = figures["models"][2]
    assert apen["model"]["network"] == "apen" and set(apen["protocols"]) == {"none", "z", "so3", "piecewise"}
    measured = apen["measured_piecewise"]
    assert measured["shapes"] == 6 and measured["max_over_batches"]["given_max_relative_error"] <= 1e-8
    mean = measured["mean_over_batches"]
    assert 0 < mean["partition_accuracy"] <= 1 and 0 < mean["moved_partition_accuracy"] <= 1
    assert mean["predicted_parts"] >= 1 and measured["max_over_batches"]["max_relative_error"] >= 0
    row = figures["table"][2]
    assert row["measured_given_max_relative_error"] == measured["max_over_batches"]["given_max_relative_error"]
    assert row["measured_partition_accuracy"] == mean["partition_accuracy"]
    assert "measured_partition_accuracy" not in figures["table"][0]
    page = (out / "report.html").read_text()
    assert "own predicted partition" in page and "partition_accuracy" in page


def test_report_files_show_the_piecewise_protocol(report: tuple, checkpoints: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    _, out = report
    page = (out / "report.html").read_text()
    assert "<h2>Piecewise motion</h2>" in page and "SO3/piecewise" in page and "tinvnn_pointnet_seg" in page
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.html", "protocols.png", "angle_sweep.png"}
    again = robustness_command([str(checkpoints["pointnet_seg"]), "--out", str(tmp_path / "cli"), "--n-rotations", "1",
                                "--sweep-step", "180", "--piecewise-translation", "0", "--max-samples", "4"])
    assert again["settings"]["piecewise_translation_rms_radii"] == 0.0
    assert "SO3/piecewise" in capsys.readouterr().out
    with pytest.raises(ValueError, match="piecewise_translation must be >= 0"):
        ProtocolSettings(piecewise_translation=-1.0)


def test_part_motions_are_rigid_per_part_independent_and_seeded_per_shape() -> None:
    dm = ArticulatedPartsDataModule(num_train=3, num_test=6, num_points=40, batch_size=6, use_normals=True)
    dm.setup("test")
    batch = {k: v.double() if v.is_floating_point() else v for k, v in next(iter(dm.test_dataloader())).items()}
    moved = move_batch_parts(batch, 1, SETTINGS)
    assert torch.equal(moved["seg"], batch["seg"]) and not torch.allclose(moved["pos"], batch["pos"])
    for b in range(6):
        parts = batch["seg"][b].unique()
        for p in parts:
            inside = batch["seg"][b] == p
            before, after = batch["pos"][b, inside], moved["pos"][b, inside]
            assert torch.allclose(torch.cdist(after, after), torch.cdist(before, before), rtol=0, atol=1e-12)
            rotation = torch.linalg.lstsq(batch["normal"][b, inside], moved["normal"][b, inside]).solution.T
            assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-9)
        first, second = (batch["seg"][b] == parts[0]), (batch["seg"][b] == parts[1])
        gap = torch.cdist(batch["pos"][b, first], batch["pos"][b, second])
        assert not torch.allclose(torch.cdist(moved["pos"][b, first], moved["pos"][b, second]), gap, atol=1e-3)
    alone = {k: v[4:] for k, v in batch.items()}
    for full, part in zip(piecewise_table(batch, 1, SETTINGS), piecewise_table(alone, 1, SETTINGS)):
        assert torch.equal(full[4:, : part.shape[1]], part)  # shape 4's motion does not depend on its batch
    other = piecewise_table(batch, 0, SETTINGS)[0]
    assert not torch.allclose(other, piecewise_table(batch, 1, SETTINGS)[0])
    with pytest.raises(ValueError, match="the batch has no partition"):
        move_batch_parts({"pos": batch["pos"], "index": batch["index"]}, 0, SETTINGS)


def test_multi_object_scenes_move_object_by_object_not_class_by_class() -> None:
    from pointgeo.datamodules.base import CloudArrays
    from pointgeo.datamodules.multi_object import compose_scenes

    rng = np.random.default_rng(0)
    source = CloudArrays(rng.normal(size=(4, 30, 3)), np.zeros(4, dtype=np.int64))  # every object of class 0
    a = compose_scenes(source, 2, 60, 3, seed=0).arrays
    batch = {"pos": torch.from_numpy(a.pos).double(), "seg": torch.from_numpy(a.seg),
             "instance": torch.from_numpy(a.instance), "index": torch.arange(2)}
    moved = move_batch_parts(batch, 0, SETTINGS)
    for b in range(2):
        for j in range(3):
            inside = batch["instance"][b] == j
            before, after = batch["pos"][b, inside], moved["pos"][b, inside]
            assert torch.allclose(torch.cdist(after, after), torch.cdist(before, before), rtol=0, atol=1e-12)
        one, two = batch["instance"][b] == 0, batch["instance"][b] == 1  # the same class, moved apart
        assert not torch.allclose(torch.cdist(moved["pos"][b, one], moved["pos"][b, two]),
                                  torch.cdist(batch["pos"][b, one], batch["pos"][b, two]), atol=1e-3)
