"""`pointgeo view` of part-segmentation checkpoints: every point coloured by its predicted or labelled part, or by
right/wrong, and by the predicted partition for a network with ``segment``; snapshots by Open3D and matplotlib."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pointgeo.cli import main
from pointgeo.datamodules.articulated import CATEGORY_PARTS
from pointgeo.viz.scene import CORRECT, WRONG, align_partition, build_views, palette, view_colours


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PointNet segmenter, one epoch of the shipped articulated config (16 shapes of 64 points)."""
    root = tmp_path_factory.mktemp("seg")
    main(["train", "--config", "articulated/partseg-pointnet_seg", "--trainer.max_epochs", "1",
          "--data.init_args.num_train", "16", "--data.init_args.num_test", "6", "--data.init_args.num_points", "64",
          "--data.init_args.batch_size", "4", "--model.init_args.network_kwargs", '{"channels": [8, 16], "head": [8]}',
          "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
          "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"])
    return root / "checkpoints" / "last.ckpt"


def colours_present(png: Path, colours: np.ndarray, pixels: int = 20) -> set[int]:
    """Indices of ``colours`` that cover at least ``pixels`` pixels of the image."""
    import matplotlib.pyplot as plt

    image = plt.imread(png)[..., :3]
    return {c for c, colour in enumerate(colours) if (np.abs(image - colour).max(-1) < 0.03).sum() >= pixels}


@pytest.mark.parametrize("renderer", ["auto", "matplotlib"])
def test_snapshot_colours_every_point_by_its_labelled_part(checkpoint: Path, renderer: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "truth.png"
    main(["view", str(checkpoint), "--index", "1", "--color", "truth", "--snapshot", str(out), "--size", "800x300",
          "--renderer", renderer, "--n-rotations", "2"])
    printed = capsys.readouterr().out
    assert "% of points changed part" in printed
    from pointgeo.viz.viewer import load_test_split

    _, samples = load_test_split(torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"], 1)
    parts = CATEGORY_PARTS[int(samples[1]["category"])]
    found = colours_present(out, palette(10))
    assert found == set(parts)  # every part of the shape's category, in its own colour, and no other
    if renderer == "auto":
        assert "(renderer: open3d)" in printed


def test_error_colours_match_the_predicted_parts(checkpoint: Path, tmp_path: Path) -> None:
    from pointgeo.hub import from_pretrained
    from pointgeo.viz.viewer import load_test_split

    task = from_pretrained(str(checkpoint)).eval()
    _, samples = load_test_split(torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"], 0)
    sample = samples[0]
    views = build_views(task, sample["pos"], None, 3, seed=1, category=int(sample["category"]))
    truth = sample["seg"].numpy()
    assert views[0].point_pred.shape == (64,) and views[0].changed_fraction == 0.0
    assert set(np.unique(views[1].point_pred)) <= set(CATEGORY_PARTS[int(sample["category"])])
    for view in views[1:]:
        assert view.changed_fraction == np.mean(view.point_pred != views[0].point_pred)
        assert view.changed == (view.changed_fraction > 0) and view.prob != views[0].prob  # PointNet: not invariant
    error = view_colours(views[2], truth, "error", 10)
    right = views[2].point_pred == truth
    assert np.array_equal(error[right], np.tile(CORRECT, (right.sum(), 1)))
    assert np.array_equal(error[~right], np.tile(WRONG, ((~right).sum(), 1)))
    assert np.array_equal(view_colours(views[2], truth, "prediction", 10), palette(10)[views[2].point_pred])
    with pytest.raises(SystemExit, match="--colour partition is not available .* choose from prediction, truth, "
                                         "error"):
        main(["view", str(checkpoint), "--colour", "partition", "--snapshot", str(tmp_path / "p.png")])
    assert not (tmp_path / "p.png").exists()


def test_predicted_partition_is_coloured_with_the_unrotated_copys_piece_ids() -> None:
    reference = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    swapped = torch.tensor([2, 2, 0, 0, 1, 1, 0])  # copy 1 names the pieces otherwise, one point moved
    aligned = align_partition(torch.stack([reference, swapped]))
    assert aligned[0].tolist() == reference.tolist() and aligned[1].tolist() == [0, 0, 1, 1, 2, 2, 1]

    @dataclass
    class Output:
        partition: torch.Tensor

    class Pieces(torch.nn.Module):
        """Two pieces split by the sign of x: a stand-in for a network with ``segment``."""

        def segment(self, pos: torch.Tensor, normal: object, category: torch.Tensor) -> Output:
            return Output(1 - (pos[..., 0] > 0).long())

    class Task(torch.nn.Module):
        hparams = type("H", (), {"use_normals": False})()

        def __init__(self) -> None:
            super().__init__()
            self.net = Pieces()

        def forward(self, batch: dict) -> torch.Tensor:
            return torch.stack([batch["pos"][..., 0], -batch["pos"][..., 0]], -1)

    pos = torch.tensor([[1.0, 0, 0], [0.8, 0.1, 0], [-1.0, 0, 0], [-0.7, 0.2, 0.1]])
    views = build_views(Task(), pos, None, 4, seed=2, category=0)
    assert views[0].partition.tolist() == [0, 0, 1, 1]
    for view in views:
        colours = view_colours(view, None, "partition", 2)
        assert colours.shape == (4, 3) and np.array_equal(colours, palette(2)[view.partition])
        assert view.partition.max() <= 1
