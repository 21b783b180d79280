"""Headless Open3D rendering of a grid of coloured clouds, run as a subprocess by :mod:`pointgeo.viz.snapshot`.

``python -m pointgeo.viz.render_open3d scene.npz out.png WIDTH HEIGHT`` reads ``pos_<i>`` ``(N, 3)`` and
``colour_<i>`` ``(3,)`` arrays and ``up`` (the dataset's up axis index) and renders cell ``i`` of a one-row grid
seen from the side, with the up axis pointing up, with Open3D's ``OffscreenRenderer``
(Filament on Vulkan; lavapipe on a CPU machine). A missing Vulkan driver aborts the interpreter, which is why this
always runs in its own process.
"""

from __future__ import annotations

import sys

import numpy as np

MARGIN = 1.25
"""The view is ``MARGIN`` times wider than the row of cells (perspective makes near points overflow their cell)."""


def render(scene_path: str, out: str, width: int, height: int) -> None:
    import open3d as o3d

    data = np.load(scene_path)
    count = len([k for k in data.files if k.startswith("pos_")])
    renderer = o3d.visualization.rendering.OffscreenRenderer(width, height)
    material = o3d.visualization.rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = 4.0
    for i in range(count):
        pos = data[f"pos_{i}"].astype(np.float64) + np.array([2.4 * i, 0.0, 0.0])
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pos))
        cloud.colors = o3d.utility.Vector3dVector(np.tile(data[f"colour_{i}"], (len(pos), 1)))
        renderer.scene.add_geometry(f"cloud_{i}", cloud, material)
    renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
    renderer.scene.view.set_post_processing(False)
    up = np.eye(3)[int(data["up"])]
    side = np.eye(3)[2] if int(data["up"]) != 2 else -np.eye(3)[1]  # look along z, or along y for z-up data
    centre = np.array([1.2 * (count - 1), 0.0, 0.0])
    # distance at which the view is MARGIN x `count` cells (2.4 wide) across, so captions can line up with clouds
    distance = MARGIN * 1.2 * count / (np.tan(np.radians(15.0)) * width / height)
    renderer.setup_camera(30.0, centre, centre + side * max(distance, 4.0), up)
    o3d.io.write_image(out, renderer.render_to_image())


if __name__ == "__main__":
    render(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
