"""Robustness reports of part-segmentation checkpoints trained by ``pointgeo train`` on ShapeNet-part fixtures:
mIoU per protocol as :mod:`pointgeo.metrics` computes it, exact invariance of TinvNN in float64, and clear errors
for checkpoints of another task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pointgeo.cli import main as pointgeo
from pointgeo.datamodules.settings import build_datamodule
from pointgeo.datamodules.shapenet_part import CATEGORIES, SYNSETS
from pointgeo.metrics.part_iou import PartSegmentationIoU
from pointgeo.robustness import ProtocolSettings, run_robustness
from pointgeo.robustness.loading import load_model
from pointgeo.testing.fake_data import write_shapenet_part_txt

FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
NETWORKS = ("tinvnn_pointnet_seg", "pointnet_seg")
SETTINGS = ProtocolSettings(n_rotations=2, sweep_step=90, seed=3)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint per network, trained for an epoch with the shipped configs on 12 test shapes of 4 categories."""
    root = tmp_path_factory.mktemp("shapenet")
    shapes = {split: [(s, f"{split}{i}") for i, s in enumerate(SYNSETS[:4] * count)]
              for split, count in (("train", 1), ("val", 1), ("test", 3))}
    write_shapenet_part_txt(root / FOLDER, shapes, points=48)
    found = {}
    for net in NETWORKS:
        runs = root / "runs" / net
        pointgeo(["train", "--config", f"shapenet_part/partseg-{net}-z", "--trainer.max_epochs", "1",
                  "--data.init_args.root", str(root), "--data.init_args.download", "false",
                  "--data.init_args.num_points", "32", "--data.init_args.num_workers", "0",
                  "--data.init_args.batch_size", "4", "--model.init_args.network_kwargs",
                  '{"channels": [8, 16], "head": [8]}', "--trainer.default_root_dir", str(runs),
                  "--trainer.logger", "false", "--trainer.enable_model_summary", "false",
                  "--trainer.enable_progress_bar", "false"])
        found[net] = runs / "checkpoints" / "last.ckpt"
    return found


@pytest.fixture(scope="module")
def report(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("reports") / "seg"
    run_robustness([str(checkpoints[n]) for n in NETWORKS], out, double=True, batch_size=5, settings=SETTINGS)
    return json.loads((out / "report.json").read_text())


def test_invariant_segmenter_keeps_every_point_label_and_the_baseline_does_not(report: dict) -> None:
    assert report["task"] == "segmentation" and report["metric"] == "miou_instance"
    invariant, plain = report["models"]
    assert invariant["model"]["network"] == "tinvnn_pointnet_seg" and invariant["model"]["train_rotation"] == "z"
    for mode in ("z", "so3"):
        figures = invariant["protocols"][mode]
        assert figures["max_logit_change"] <= 1e-8 and figures["flip_rate"] == 0.0
        assert figures["invariant_within_tolerance"] is True
        assert figures["miou_instance"] == invariant["protocols"]["none"]["miou_instance"]
    assert set(invariant["sweep"]["x"] + invariant["sweep"]["y"]) == {invariant["protocols"]["none"]["miou_instance"]}
    so3 = plain["protocols"]["so3"]
    assert so3["max_logit_change"] > 1e-3 and 0 < so3["flip_rate"] < 1 and so3["invariant_within_tolerance"] is False
    assert so3["evaluations"] == 2 * 12 and report["data"]["up_axis"] == "y"


def test_miou_matches_the_metric_on_the_unrotated_test_split(report: dict, checkpoints: dict[str, Path]) -> None:
    model = load_model(str(checkpoints["pointnet_seg"]), torch.float64, "cpu")
    dm = build_datamodule(model.data, None)
    dm.set_test_rotation("none")
    dm.setup("test")
    metric = PartSegmentationIoU(dm.category_parts, dm.num_parts)
    with torch.no_grad():
        for batch in dm.test_dataloader():
            batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
            metric.update(model.task(batch), batch["seg"], batch["category"])
    expected = metric.compute()
    none = report["models"][1]["protocols"]["none"]
    assert none["miou_instance"] == pytest.approx(float(expected["miou_instance"]), abs=1e-6)
    assert none["miou_class"] == pytest.approx(float(expected["miou_class"]), abs=1e-6)
    assert list(none["per_class_miou"]) == CATEGORIES
    assert [c for c, v in none["per_class_miou"].items() if v is not None] == CATEGORIES[:4]


def test_table_and_html_speak_of_miou(report: dict, tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    row = report["table"][1]
    assert row["z/SO3"] == report["models"][1]["protocols"]["so3"]["miou_instance"]
    out = tmp_path / "one"
    run_robustness([str(checkpoints["pointnet_seg"])], out, max_samples=4, settings=ProtocolSettings(1, 180))
    page = (out / "report.html").read_text()
    assert "Rotation robustness (miou instance)" in page and "Airplane" in page


def test_checkpoints_of_another_task_are_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    seg = str(checkpoints["tinvnn_pointnet_seg"])
    with pytest.raises(ValueError, match="is a part-segmentation checkpoint but SyntheticShapesDataModule has no "
                                         "part labels"):
        run_robustness([seg], tmp_path / "a", data_config="synthetic/cls-pointnet-z")
    with pytest.raises(ValueError, match="trained on pointgeo.datamodules.SyntheticShapesDataModule .*pass --data"):
        run_robustness([seg, "pointnet.synthetic_z"], tmp_path / "b")
    with pytest.raises(ValueError, match=r"one report compares models of one task; got .*\(segmentation\), "
                                         r"pointnet.synthetic_z \(classification\)"):
        run_robustness([seg, "pointnet.synthetic_z"], tmp_path / "c",
                       data_config="shapenet_part/partseg-pointnet_seg-z")
    other = torch.load(seg, weights_only=True)
    other["pointgeo"]["task"] = "protein_folding"
    torch.save(other, tmp_path / "protein_folding.ckpt")
    with pytest.raises(ValueError, match="is a 'protein_folding' checkpoint; pointgeo rebuilds classification, "
                                         "segmentation"):
        run_robustness([str(tmp_path / "protein_folding.ckpt")], tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protein_folding.ckpt"]
