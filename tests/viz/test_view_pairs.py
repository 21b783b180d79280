"""`pointgeo view SRC --target TGT`: a registration pair before and after alignment with its correspondences —
the scene (inliers under the truth, panels, normalisation), snapshots with both renderers, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.cli import main
from pointgeo.geometry import rigid_matrix, transform_points
from pointgeo.geometry.registration import RegistrationResult
from pointgeo.viz.pairs import INLIER, OUTLIER, SOURCE, TARGET, build_pair_view, pair_scene, pick_lines


def room(seed: int, n: int = 800) -> np.ndarray:
    """A floor, two walls of different heights and a box off the diagonal (metres, ~1.5 m across; no symmetry a
    rotation could confuse), sampled afresh per seed."""
    rng = np.random.default_rng(seed)
    u, v = rng.random((2, n))
    return np.concatenate([np.stack([1.5 * u, v, 0 * u], 1), np.stack([1.5 * u, 0 * u, v], 1),
                           np.stack([0 * u, u, 0.5 * v], 1),
                           np.stack([0.9 + 0.3 * u, 0.2 + 0.3 * v, 0.4 * rng.random(n)], 1)])


POSE = rigid_matrix(torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64),
                    torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64))


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pair")
    np.save(folder / "src.npy", room(0))
    np.save(folder / "tgt.npy", transform_points(torch.from_numpy(room(1)), POSE).numpy())
    np.save(folder / "gt.npy", POSE.numpy())
    np.savetxt(folder / "gt.txt", POSE.numpy())
    return {"src": folder / "src.npy", "tgt": folder / "tgt.npy", "gt": folder / "gt.npy", "txt": folder / "gt.txt"}


def colour_pixels(png: Path, colour: tuple[float, float, float]) -> int:
    import matplotlib.pyplot as plt

    image = plt.imread(png)[..., :3]
    return int((np.abs(image - np.asarray(colour)).max(-1) < 0.06).sum())


def test_scene_marks_inliers_under_the_truth_and_normalises_each_panel() -> None:
    source = torch.from_numpy(room(0, 50))
    target = transform_points(source, POSE)
    farthest = torch.cdist(source[5:10], source).argmax(1)  # 5 right matches, then 5 to the farthest point
    corr = torch.stack([torch.arange(10), torch.cat([torch.arange(5), farthest])], 1)
    wrong = rigid_matrix(torch.eye(3, dtype=torch.float64), torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64))
    result = RegistrationResult(wrong @ POSE, corr, 5, 0.1, True, "")
    view = build_pair_view(source, target, transform=POSE, result=result)
    assert view.inlier.tolist() == [True] * 5 + [False] * 5
    assert "5 within 0.1 under the truth (IR 0.500)" in view.captions[1] and "RTE 0.050" in view.captions[1]
    assert np.allclose(view.transform, (wrong @ POSE).numpy(), rtol=0, atol=1e-15)
    scene = pair_scene(view, max_lines=4)
    assert scene["point_pos"].shape == (800, 3) and (np.bincount(scene["point_cell"]) == 400).all()
    assert np.linalg.norm(scene["point_pos"], axis=1).max() <= 1 + 1e-12
    assert (scene["link_cell"] == 0).sum() == 4 and (scene["link_cell"] == 1).sum() == 4
    colours = scene["link_colour"][scene["link_cell"] == 1]
    assert (colours == INLIER).all(1).sum() == 2 and (colours == OUTLIER).all(1).sum() == 2
    after = scene["link_cell"] == 1  # inliers nearly meet after alignment (5 cm off, in a ~2.3 m scene)
    length = np.linalg.norm(scene["link_end"][after] - scene["link_start"][after], axis=1)
    assert (length[(colours == INLIER).all(1)] < 0.05).all() and (length[(colours == OUTLIER).all(1)] > 0.05).all()
    assert pick_lines(np.array([True, True, False]), 10).tolist() == [0, 1, 2]
    assert len(pick_lines(np.zeros(30, bool), 10)) == 10
    plain = build_pair_view(source, target, transform=POSE)
    assert plain.correspondences.shape == (0, 2) and plain.captions[1] == "after: the given transform"
    with pytest.raises(ValueError, match="registration failed"):
        build_pair_view(source, target, result=RegistrationResult(torch.eye(4, dtype=torch.float64), corr, 0, 0.1,
                                                                  False, "registration failed: 0 inliers"))


@pytest.mark.parametrize("renderer", ["auto", "matplotlib"])
def test_snapshot_of_fpfh_on_a_pair(renderer: str, pair_files: dict, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    import matplotlib.pyplot as plt

    out = tmp_path / "pair.png"
    main(["view", str(pair_files["src"]), "--target", str(pair_files["tgt"]), "--transform", str(pair_files["gt"]),
          "--model", "fpfh_ransac", "--voxel-size", "0.05", "--snapshot", str(out), "--size", "800x400",
          "--renderer", renderer])
    printed = capsys.readouterr().out
    assert plt.imread(out).shape[:2] == (400, 800)
    rre = float(printed.split("RRE ")[1].split(" deg")[0])
    assert rre < 5.0  # FPFH + RANSAC + ICP registers the room
    for colour, least in ((SOURCE, 30), (TARGET, 30), (OUTLIER, 30), (INLIER, 10)):  # few FPFH matches are inliers
        assert colour_pixels(out, colour) >= least, colour
    if renderer == "auto":
        assert "(renderer: open3d)" in printed


def test_given_transform_without_correspondences(pair_files: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "given.png"
    main(["view", str(pair_files["src"]), "--target", str(pair_files["tgt"]), "--transform", str(pair_files["txt"]),
          "--snapshot", str(out), "--size", "600x300", "--renderer", "matplotlib"])
    printed = capsys.readouterr().out
    assert "after: the given transform" in printed
    assert colour_pixels(out, SOURCE) >= 30 and colour_pixels(out, TARGET) >= 30
    assert colour_pixels(out, INLIER) == 0 and colour_pixels(out, OUTLIER) == 0


def test_bad_input_gets_one_message(pair_files: dict, tmp_path: Path) -> None:
    src, tgt = str(pair_files["src"]), str(pair_files["tgt"])
    with pytest.raises(SystemExit, match="no such file"):
        main(["view", src, "--target", str(tmp_path / "missing.ply"), "--snapshot", str(tmp_path / "x.png")])
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(SystemExit, match="is not a 4x4 transform"):
        main(["view", src, "--target", tgt, "--transform", str(bad), "--snapshot", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="which cannot register pairs"):
        main(["view", src, "--target", tgt, "--model", "pointnet.synthetic_z", "--snapshot", str(tmp_path / "x.png")])
    far = tmp_path / "far.npy"  # clouds that cannot be registered, and no pose to show instead
    np.save(far, np.random.default_rng(0).normal(size=(400, 3)) * 0.4)
    with pytest.raises(SystemExit, match="registration failed"):
        main(["view", src, "--target", str(far), "--voxel-size", "0.05", "--snapshot", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="--voxel-size"):
        main(["view", src, "--target", tgt, "--voxel-size", "0", "--snapshot", str(tmp_path / "x.png")])


def test_a_registration_checkpoint_through_view(pair_files: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """A RoITr checkpoint (tiny, one training step) registers the pair through its task's register_pair; its
    correspondences are drawn and judged against the truth."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader
    from torch_geometric.loader.dataloader import Collater

    from pointgeo.datamodules.threedmatch import FOLLOW_BATCH, FragmentPair
    from pointgeo.nn.roitr.network import SMALL
    from pointgeo.tasks import RegistrationTask

    torch.manual_seed(0)
    src = torch.from_numpy(room(0, 100)).float()
    pair = FragmentPair(src_pos=src, tgt_pos=src.clone(), transform=torch.eye(4, dtype=torch.float64)[None],
                        scene=torch.tensor([0]), index=torch.tensor([0]))
    task = RegistrationTask(network_kwargs=SMALL, positive_radius=0.1, min_inliers=3)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(task, DataLoader([pair], batch_size=1, collate_fn=Collater(None, follow_batch=FOLLOW_BATCH)))
    ckpt = tmp_path / "roitr.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "roitr.png"
    main(["view", str(pair_files["src"]), "--target", str(pair_files["tgt"]), "--transform", str(pair_files["gt"]),
          "--model", str(ckpt), "--voxel-size", "0.1", "--snapshot", str(out), "--size", "600x300",
          "--renderer", "matplotlib"])
    printed = capsys.readouterr().out
    count = int(printed.split("after")[1].split(": ")[1].split(" correspondences")[0])
    assert count > 0 and "under the truth" in printed
    assert colour_pixels(out, SOURCE) >= 30 and colour_pixels(out, TARGET) >= 30
