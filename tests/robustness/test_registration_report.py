"""Registration robustness: the angle bins and their seeded rotations, the per-bin aggregation (per scene, then over
scenes) on a test double whose results are known by hand, FPFH + RANSAC as a registrar, and the report folder
written by ``pointgeo robustness fpfh_ransac --data ...``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.cli import main
from pointgeo.datamodules.threedmatch import FragmentPair
from pointgeo.geometry import estimate_rigid_transform, rigid_matrix, rotation_error_degrees, transform_points
from pointgeo.geometry.registration import RegistrationResult
from pointgeo.robustness.registration import AngleSettings, FPFHRegistrar, Registrar, bin_rotation, \
    evaluate_registrars
from pointgeo.testing.fake_data import write_3dmatch_fragment


class AngleLimitedRegistrar:
    """A test double that reads the pose off index-aligned clouds (exact Kabsch) and then behaves by cloud size:
    40 points — always succeeds; 48 — succeeds below 90°; 60 — always fails. Succeeding, 3/4 of its correspondences
    are right (i ↔ i) and 1/4 wrong (i ↔ the farthest point); failing, half are right."""

    def register_pair(self, src_pos: torch.Tensor, tgt_pos: torch.Tensor) -> RegistrationResult:
        n = len(src_pos)
        estimate = estimate_rigid_transform(src_pos.double()[None], tgt_pos.double()[None])[0]
        angle = float(rotation_error_degrees(estimate, torch.eye(4, dtype=torch.float64)))
        success = n == 40 or (n == 48 and angle < 90)
        right = 3 * n // 4 if success else n // 2
        farthest = torch.cdist(tgt_pos.double(), tgt_pos.double()).argmax(1)
        target = torch.cat([torch.arange(right), farthest[right:]])
        corr = torch.stack([torch.arange(n), target], 1)
        transform = estimate if success else torch.eye(4, dtype=torch.float64)
        return RegistrationResult(transform, corr, right, 0.1, success, "")


def pairs() -> list[FragmentPair]:
    """Three index-aligned pairs (target = source shifted), scenes 0, 1, 1, of 40, 48 and 60 points."""
    out = []
    for k, (n, scene) in enumerate(((40, 0), (48, 1), (60, 1))):
        gen = torch.Generator().manual_seed(k)
        src = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        pose = rigid_matrix(torch.eye(3, dtype=torch.float64), torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64))
        out.append(FragmentPair(src_pos=src.float(), tgt_pos=transform_points(src, pose).float(),
                                transform=pose[None], scene=torch.tensor([scene]), index=torch.tensor([k])))
    return out


def test_bins_are_seeded_and_stratified() -> None:
    settings = AngleSettings(angle_bins=6, seed=3)
    assert settings.edges == [0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0]
    for b in range(6):
        rot, degrees = bin_rotation(settings, 7, b, 0)
        assert 30 * b <= degrees < 30 * (b + 1)
        measured = float(rotation_error_degrees(rot, torch.eye(3, dtype=torch.float64)))
        assert abs(measured - degrees) < 1e-9
        assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    same, again = bin_rotation(settings, 7, 2, 0)[0], bin_rotation(AngleSettings(seed=3), 7, 2, 0)[0]
    assert torch.equal(same, again)
    assert not torch.equal(same, bin_rotation(settings, 8, 2, 0)[0])  # seeded per pair
    assert not torch.equal(same, bin_rotation(AngleSettings(seed=4), 7, 2, 0)[0])
    with pytest.raises(ValueError, match="rotated_cloud"):
        AngleSettings(rotated_cloud="both")


@pytest.mark.parametrize("rotated_cloud", ["source", "target"])
def test_aggregation_per_bin_on_hand_computed_results(rotated_cloud: str) -> None:
    double = AngleLimitedRegistrar()
    assert isinstance(double, Registrar)
    result = evaluate_registrars([double], pairs(), 2, AngleSettings(angle_bins=6, rotated_cloud=rotated_cloud))[0]
    bins = result["bins"]
    # below 90°: scene 0 RR 1, scene 1 RR (1 + 0) / 2; IR scene 0 0.75, scene 1 (0.75 + 0.5) / 2; means over scenes
    for b in range(3):
        assert bins[b]["pairs"] == 3 and bins[b]["failures"] == 1
        assert bins[b]["registration_recall"] == pytest.approx(0.75, abs=1e-12)
        assert bins[b]["inlier_ratio"] == pytest.approx(0.6875, abs=1e-12)
    for b in range(3, 6):  # from 90°: only the 40-point pair registers
        assert bins[b]["failures"] == 2
        assert bins[b]["registration_recall"] == pytest.approx(0.5, abs=1e-12)
        assert bins[b]["inlier_ratio"] == pytest.approx(0.625, abs=1e-12)
    for b, figures in enumerate(bins):  # accepted estimates are exact; the angles lie in their bins
        assert figures["rre_degrees"] < 1e-3 and figures["rte"] < 1e-5
        assert 30 * b <= figures["angles_degrees"][0] <= figures["angles_degrees"][1] < 30 * (b + 1)
    overall = result["overall"]  # scene 1: 3 of 12 registrations accepted; IR (2.25 + 1.5 + 3) / 12
    assert overall["pairs"] == 18 and overall["failures"] == 9
    assert overall["registration_recall"] == pytest.approx((1 + 0.25) / 2, abs=1e-12)
    assert overall["inlier_ratio"] == pytest.approx((0.75 + 6.75 / 12) / 2, abs=1e-12)
    assert result["num_pairs"] == 3


def room(seed: int, n: int = 1500) -> np.ndarray:
    """A floor, two walls of different heights and a box off the diagonal (metres)."""
    rng = np.random.default_rng(seed)
    u, v = rng.random((2, n))
    return np.concatenate([np.stack([1.5 * u, v, 0 * u], 1), np.stack([1.5 * u, 0 * u, v], 1),
                           np.stack([0 * u, u, 0.5 * v], 1),
                           np.stack([0.9 + 0.3 * u, 0.2 + 0.3 * v, 0.4 * rng.random(n)], 1)])


def test_fpfh_registrar_indexes_the_given_clouds() -> None:
    src = torch.from_numpy(room(0))
    pose = rigid_matrix(torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64),
                        torch.tensor([0.4, 0.1, -0.2], dtype=torch.float64))
    tgt = transform_points(torch.from_numpy(room(1)), pose)
    result = FPFHRegistrar(voxel_size=0.05).register_pair(src.float(), tgt.float())
    assert result.success and float(rotation_error_degrees(result.transform, pose)) < 5
    corr = result.correspondences
    assert len(corr) > 20 and int(corr[:, 0].max()) < len(src) and int(corr[:, 1].max()) < len(tgt)
    moved = transform_points(src[corr[:, 0]], pose)  # matched points (nearest given points to voxel means)
    assert ((moved - tgt[corr[:, 1]]).norm(dim=-1) < 0.1).double().mean() > 0.05


def test_report_of_fpfh_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"  # training: crops of a fragment; test: a demo pair (two samplings of one room)
    write_3dmatch_fragment(root / "frag.pth", room(2))
    demo = root / "demo"
    demo.mkdir()
    np.save(demo / "src.npy", room(3))
    np.save(demo / "ref.npy", room(4))
    np.save(demo / "gt.npy", np.eye(4))
    config = tmp_path / "pairs.yaml"
    config.write_text(f"""data:
  class_path: pointgeo.datamodules.RegistrationPairsDataModule
  init_args:
    threedmatch_root: {root}
    fragments: [frag.pth]
    demo_pair: demo
    test_pairs_per_item: 2
    voxel_size: 0.05
    num_points: 3000
    overlap_range: [0.6, 0.8]
""")
    out = tmp_path / "report"
    main(["robustness", "fpfh_ransac", "--data", str(config), "--out", str(out), "--angle-bins", "3",
          "--fpfh-voxel-size", "0.05"])
    printed = capsys.readouterr().out
    assert "RR (%) per rotation angle bin" in printed and "RR 0-60" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "registration" and report["data"]["evaluated_pairs"] == 2
    assert report["settings"]["bin_edges_degrees"] == [0.0, 60.0, 120.0, 180.0]
    fpfh = report["models"][0]
    assert fpfh["model"]["spec"] == "fpfh_ransac" and len(fpfh["bins"]) == 3
    assert all(b["pairs"] == 2 for b in fpfh["bins"])
    assert fpfh["overall"]["registration_recall"] >= 0.5  # FPFH's features do not depend on the rotation
    assert (out / "registration_vs_angle.png").is_file()
    page = (out / "report.html").read_text()
    assert "Registration robustness" in page and "data:image/png;base64," in page
    with pytest.raises(SystemExit, match="has no data of its own"):
        main(["robustness", "fpfh_ransac", "--out", str(tmp_path / "r2")])
    with pytest.raises(SystemExit, match="cannot register pairs"):
        main(["robustness", "fpfh_ransac", "pointnet.synthetic_z", "--data", str(config), "--out",
              str(tmp_path / "r3")])
    with pytest.raises(SystemExit, match="is not a registration datamodule"):
        main(["robustness", "fpfh_ransac", "--data", "synthetic/cls-pointnet-z", "--out", str(tmp_path / "r4")])


def test_an_invariant_registrar_keeps_its_inlier_ratio_in_every_bin() -> None:
    """RoITr (tiny, untrained, float64) through its task's register_pair: its correspondences do not depend on the
    rotation applied to one cloud, so its inlier ratio is the same in every angle bin."""
    from pointgeo.nn.roitr.network import SMALL
    from pointgeo.tasks import RegistrationTask
    from pointgeo.testing import ADVERSARIAL_PAIRS

    torch.manual_seed(0)
    task = RegistrationTask(network_kwargs=SMALL, min_inliers=3).double()
    assert isinstance(task, Registrar)
    src, tgt = ADVERSARIAL_PAIRS["random"](256, 0)
    pair = FragmentPair(src_pos=0.25 * src, tgt_pos=0.25 * tgt, transform=torch.eye(4, dtype=torch.float64)[None],
                        scene=torch.tensor([0]), index=torch.tensor([0]))
    result = evaluate_registrars([task], [pair], 1, AngleSettings(angle_bins=3))[0]
    ratios = [b["inlier_ratio"] for b in result["bins"]]
    assert ratios[0] > 0 and max(ratios) - min(ratios) < 1e-12, ratios
