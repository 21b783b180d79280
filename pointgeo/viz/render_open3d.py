"""Headless Open3D rendering of a grid of coloured clouds, run as a subprocess by :mod:`pointgeo.viz.snapshot`.

``python -m pointgeo.viz.render_open3d scene.npz out.png WIDTH HEIGHT`` reads ``pos_<i>`` ``(N, 3)`` and
``colour_<i>`` ``(3,)`` or per point ``(N, 3)`` arrays and ``up`` (the dataset's up axis index) and renders cell
``i`` of a one-row grid seen from the side, with the up axis pointing up (or, for a molecule, the spheres and arrows of
:func:`pointgeo.viz.molecules.molecule_scene`; for a registration pair, the points and correspondence lines of
:func:`pointgeo.viz.pairs.pair_scene`), with Open3D's ``OffscreenRenderer``
(Filament on Vulkan; lavapipe on a CPU machine). A missing Vulkan driver aborts the interpreter, which is why this
always runs in its own process.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

CELL_COLOUR = (0.2, 0.2, 0.2)
"""The colour of a unit cell's edges (dark grey)."""
MARGIN = 1.25
"""The view is ``MARGIN`` times wider than the row of cells (perspective makes near points overflow their cell)."""


def _align_z(vector: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation taking the z axis to the unit vector ``vector`` (Rodrigues' formula)."""
    z = np.array([0.0, 0.0, 1.0])
    axis, cos = np.cross(z, vector), float(z @ vector)
    if np.linalg.norm(axis) < 1e-12:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k / (1 + cos)


def molecule_material(name: str) -> object:
    """The Open3D material of a part of :func:`molecule_meshes`: lit atoms, force arrows in their exact colour,
    thin unit-cell lines."""
    import open3d as o3d

    material = o3d.visualization.rendering.MaterialRecord()
    material.shader = {"atoms": "defaultLit", "forces": "defaultUnlit", "cell": "unlitLine"}[name]
    material.line_width = 2.0
    return material


def molecule_meshes(scene: dict[str, np.ndarray]) -> list[tuple[str, object]]:
    """Open3D geometry of a molecule scene: one merged mesh of the atom spheres, one of the force arrows (copy
    ``i`` shifted by ``2.4 i`` along x; arrows shorter than 1e-6 are left out) and, for a periodic structure, a
    line set of its unit cells' edges."""
    import open3d as o3d

    spheres, arrows = o3d.geometry.TriangleMesh(), o3d.geometry.TriangleMesh()
    for centre, radius, colour, cell in zip(scene["sphere_centre"], scene["sphere_radius"], scene["sphere_colour"],
                                            scene["sphere_cell"]):  # a few dozen atoms x copies: meshes one by one
        ball = o3d.geometry.TriangleMesh.create_sphere(radius=float(radius), resolution=12)
        ball.translate(centre + np.array([2.4 * cell, 0.0, 0.0]))
        ball.paint_uniform_color(colour)
        spheres += ball
    for start, vector, colour, cell in zip(scene["arrow_start"], scene["arrow_vector"], scene["arrow_colour"],
                                           scene["arrow_cell"]):
        length = float(np.linalg.norm(vector))
        if length < 1e-6:
            continue
        arrow = o3d.geometry.TriangleMesh.create_arrow(cylinder_radius=0.02, cone_radius=0.05,
                                                       cylinder_height=0.8 * length, cone_height=0.2 * length)
        arrow.rotate(_align_z(vector / length), center=np.zeros(3))
        arrow.translate(start + np.array([2.4 * cell, 0.0, 0.0]))
        arrow.paint_uniform_color(colour)
        arrows += arrow
    spheres.compute_vertex_normals()
    arrows.compute_vertex_normals()
    parts = [("atoms", spheres), ("forces", arrows)]
    if "line_start" in scene:
        shift = np.stack([2.4 * scene["line_cell"], 0 * scene["line_cell"], 0 * scene["line_cell"]], -1)
        ends = np.concatenate([scene["line_start"] + shift, scene["line_end"] + shift])  # (2 L, 3)
        count = len(scene["line_cell"])
        lines = o3d.geometry.LineSet(o3d.utility.Vector3dVector(ends.astype(np.float64)),
                                     o3d.utility.Vector2iVector(np.stack([np.arange(count), count + np.arange(count)],
                                                                         -1).astype(np.int32)))
        lines.paint_uniform_color(CELL_COLOUR)
        parts.append(("cell", lines))
    return parts


def pair_geometries(scene: dict[str, np.ndarray]) -> list[Any]:
    """Open3D geometry of a pair scene: one point cloud and one line set, panel ``c`` shifted by ``2.4 c`` along x."""
    import open3d as o3d

    shift = np.stack([2.4 * scene["point_cell"], 0 * scene["point_cell"], 0 * scene["point_cell"]], -1)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector((scene["point_pos"] + shift).astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(scene["point_colour"].astype(np.float64))
    link = scene["link_cell"]
    offset = np.stack([2.4 * link, 0 * link, 0 * link], -1)
    ends = np.concatenate([scene["link_start"] + offset, scene["link_end"] + offset]).astype(np.float64)
    count = len(link)
    lines = o3d.geometry.LineSet(o3d.utility.Vector3dVector(ends.reshape(-1, 3)), o3d.utility.Vector2iVector(
        np.stack([np.arange(count), count + np.arange(count)], -1).astype(np.int32)))
    lines.colors = o3d.utility.Vector3dVector(scene["link_colour"].astype(np.float64))
    return [cloud, lines]


def render(scene_path: str, out: str, width: int, height: int) -> None:
    import open3d as o3d

    data = np.load(scene_path)
    renderer = o3d.visualization.rendering.OffscreenRenderer(width, height)
    material = o3d.visualization.rendering.MaterialRecord()
    if "point_cell" in data.files:  # a registration pair (pointgeo.viz.pairs.pair_scene)
        count = int(data["point_cell"].max()) + 1
        material.shader = "defaultUnlit"
        material.point_size = 3.0
        lines = o3d.visualization.rendering.MaterialRecord()
        lines.shader, lines.line_width = "unlitLine", 1.5
        cloud, links = pair_geometries({k: data[k] for k in data.files})
        renderer.scene.add_geometry("pair", cloud, material)
        if len(data["link_cell"]):
            renderer.scene.add_geometry("links", links, lines)
    elif "sphere_centre" in data.files:
        count = int(data["sphere_cell"].max()) + 1
        for name, mesh in molecule_meshes({k: data[k] for k in data.files}):
            renderer.scene.add_geometry(name, mesh, molecule_material(name))
        profile = o3d.visualization.rendering.Open3DScene.LightingProfile.NO_SHADOWS
        renderer.scene.set_lighting(profile, np.array([0.3, -0.5, -0.8]))
    else:
        count = len([k for k in data.files if k.startswith("pos_")])
        material.shader = "defaultUnlit"
        material.point_size = 4.0
        for i in range(count):
            pos = data[f"pos_{i}"].astype(np.float64) + np.array([2.4 * i, 0.0, 0.0])
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pos))
            colour = np.broadcast_to(data[f"colour_{i}"], pos.shape)  # one colour, or one per point
            cloud.colors = o3d.utility.Vector3dVector(np.array(colour, dtype=np.float64))
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
