"""`pointgeo view --snapshot` headless (Open3D in a subprocess, and the matplotlib fallback), user files, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pointgeo.cli import main
from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.testing.fake_data import box_mesh, write_off
from pointgeo.viz.io import read_points
from pointgeo.viz.scene import palette


def class_colours_present(png: Path, num_classes: int = 8) -> set[int]:
    """Classes whose palette colour covers at least 50 pixels of the image."""
    import matplotlib.pyplot as plt

    image = plt.imread(png)[..., :3]
    found = set()
    for c, colour in enumerate(palette(num_classes)):
        if (np.abs(image - colour).max(-1) < 0.03).sum() >= 50:
            found.add(c)
    return found


@pytest.mark.parametrize("renderer", ["auto", "matplotlib"])
def test_snapshot_shows_changed_predictions_in_distinct_colours(renderer: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    import matplotlib.pyplot as plt

    out = tmp_path / "view.png"
    main(["view", "pointnet.synthetic_z", "--index", "3", "--snapshot", str(out), "--size", "900x300",
          "--renderer", renderer])
    printed = capsys.readouterr().out
    assert plt.imread(out).shape[:2] == (300, 900)
    assert len(class_colours_present(out)) >= 2  # the rotated copies are predicted as another class
    assert "CHANGED" in printed
    if renderer == "auto":
        assert "(renderer: open3d)" in printed  # CI has Mesa's Vulkan driver; see scripts/setup.sh


def test_invariant_model_keeps_one_colour_on_a_users_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mesh = write_off(tmp_path / "box.off", *box_mesh((1.0, 0.6, 0.3)))
    out = tmp_path / "box.png"
    main(["view", "tinvnn_pointnet.synthetic_z", "--file", str(mesh), "--snapshot", str(out), "--size", "600x200",
          "--renderer", "matplotlib"])
    printed = capsys.readouterr().out
    assert "CHANGED" not in printed and len(class_colours_present(out)) == 1


def test_point_and_mesh_files_are_read(tmp_path: Path) -> None:
    import open3d as o3d
    import trimesh

    pos = np.random.default_rng(0).normal(size=(50, 3))
    np.savetxt(tmp_path / "a.txt", np.concatenate([pos, pos], 1), delimiter=",")
    np.savetxt(tmp_path / "a.xyz", pos)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pos))
    for ext in ("ply", "pcd"):
        o3d.io.write_point_cloud(str(tmp_path / f"a.{ext}"), cloud)
    vertices, quads = box_mesh()
    tri = trimesh.Trimesh(vertices, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]))
    for ext in ("obj", "stl"):
        tri.export(tmp_path / f"a.{ext}")
    write_off(tmp_path / "a.off", vertices, quads)
    assert read_points(tmp_path / "a.txt")[1] is not None and read_points(tmp_path / "a.xyz")[1] is None
    for ext in ("ply", "pcd"):
        assert np.allclose(read_points(tmp_path / f"a.{ext}")[0], pos, atol=1e-5)
    for ext in ("obj", "stl", "off"):
        p, n = read_points(tmp_path / f"a.{ext}", num_points=100)
        assert p.shape == (100, 3) and n is not None


def test_bad_files_and_arguments_get_one_message(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nan.txt").write_text("1 2 3\n1 nan 3\n")
    (tmp_path / "four.txt").write_text("1 2 3 4\n")
    (tmp_path / "x.las").write_text("?")
    for name, message in (("empty.txt", "is empty"), ("nan.txt", "NaN"), ("four.txt", "4 columns"),
                          ("x.las", "unsupported file type")):
        with pytest.raises(DatasetFileError, match=message):
            read_points(tmp_path / name)
    with pytest.raises(SystemExit, match="is empty"):
        main(["view", "pointnet.synthetic_z", "--file", str(tmp_path / "empty.txt"), "--snapshot",
              str(tmp_path / "o.png")])
    with pytest.raises(SystemExit, match="outside the test split"):
        main(["view", "pointnet.synthetic_z", "--index", "100000", "--snapshot", str(tmp_path / "o.png")])
    with pytest.raises(SystemExit, match="no checkpoint file"):
        main(["view", str(tmp_path / "none.ckpt"), "--snapshot", str(tmp_path / "o.png")])
    assert not (tmp_path / "o.png").exists()
