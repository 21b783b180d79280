"""Render the viewer's scene to a PNG without a display.

Open3D's offscreen renderer runs in a subprocess (a renderer crash cannot take the caller down) and matplotlib adds
the captions; when Open3D cannot render (no Vulkan driver, no Open3D), matplotlib's 3D scatter (Agg) draws the whole
scene instead. :func:`render_snapshot` returns which renderer was used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from pointgeo.geometry import axis_index
from pointgeo.viz.render_open3d import CELL_COLOUR, MARGIN
from pointgeo.viz.molecules import MoleculeView, crystal_scene, molecule_scene, molecule_title
from pointgeo.viz.scene import ColourMode, View, title, view_colours

Renderer = Literal["auto", "open3d", "matplotlib"]


def _figure(n: int, width: int, height: int):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width / 100, height / 100), dpi=100)


def _open3d(arrays: dict[str, np.ndarray], captions: list[str], red: list[bool], out: Path, width: int,
            height: int, timeout: float) -> bool:
    """Render the scene ``arrays`` (see :mod:`pointgeo.viz.render_open3d`) in a subprocess and caption it."""
    with tempfile.TemporaryDirectory() as tmp:
        scene, raw = Path(tmp) / "scene.npz", Path(tmp) / "raw.png"
        np.savez(scene, **arrays)
        try:
            done = subprocess.run([sys.executable, "-m", "pointgeo.viz.render_open3d", str(scene), str(raw),
                                   str(width), str(max(1, height - 60))], capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if done.returncode != 0 or not raw.is_file():
            return False
        plt, fig = _figure(len(captions), width, height)
        image = plt.imread(raw)
        ax = fig.add_axes((0, 0, 1, (height - 60) / height))
        ax.imshow(image)
        ax.axis("off")
        for i, caption in enumerate(captions):
            fig.text(0.5 + ((i + 0.5) / len(captions) - 0.5) / MARGIN, 1 - 30 / height, caption, ha="center",
                     va="center", fontsize=9, color="red" if red[i] else "black")
        _save(fig, out)
        plt.close(fig)
    return True


def _save(fig, out: Path) -> None:  # noqa: ANN001
    """Write the figure to a temporary name beside ``out`` and move it in place."""
    part = out.with_name(out.name + ".part.png")
    fig.savefig(part, dpi=100)
    os.replace(part, out)


def _matplotlib(views: list[View], colours: list[np.ndarray], captions: list[str], out: Path, width: int,
                height: int) -> None:
    plt, fig = _figure(len(views), width, height)
    for i, (view, colour, caption) in enumerate(zip(views, colours, captions)):
        ax = fig.add_subplot(1, len(views), i + 1, projection="3d")
        ax.scatter(*view.pos.T, c=np.broadcast_to(colour, view.pos.shape), s=3, depthshade=False)
        ax.set_title(caption, fontsize=8, color="red" if view.changed else "black")
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_axis_off()
    _save(fig, out)
    plt.close(fig)


def render_snapshot(
    views: list[View],
    class_names: list[str],
    out: str | Path,
    *,
    label: int | np.ndarray | None = None,
    mode: ColourMode = "prediction",
    size: tuple[int, int] = (1200, 400),
    renderer: Renderer = "auto",
    up_axis: str = "z",
    timeout: float = 120.0,
    num_colours: int | None = None,
) -> str:
    """Write the scene of ``views`` to ``out`` (PNG), the dataset's ``up_axis`` pointing up; returns ``"open3d"``
    or ``"matplotlib"``. ``label``: the true class, or a segmentation's ``(N,)`` true parts; ``num_colours``: the
    palette size (default: the number of classes; a segmentation's number of parts)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    colours = [view_colours(v, label, mode, num_colours or len(class_names)) for v in views]
    captions = [title(v, class_names, i) for i, v in enumerate(views)]
    width, height = size
    up = axis_index(up_axis)
    arrays = {**{f"pos_{i}": v.pos for i, v in enumerate(views)}, **{f"colour_{i}": c for i, c in enumerate(colours)},
              "up": np.asarray(up)}
    if renderer in ("auto", "open3d") and _open3d(arrays, captions, [v.changed for v in views], out, width, height,
                                                  timeout):
        return "open3d"
    if renderer == "open3d":
        raise RuntimeError("Open3D could not render offscreen (no Vulkan driver? see the README's system packages)")
    _matplotlib(views, colours, captions, out, width, height)
    return "matplotlib"


def _matplotlib_molecule(scene: dict[str, np.ndarray], captions: list[str], out: Path, width: int,
                         height: int) -> None:
    plt, fig = _figure(len(captions), width, height)
    cell_points = 0.5 * width / len(captions)  # about the width in points that the 3D axes' [-1, 1] spans
    for i, caption in enumerate(captions):
        ax = fig.add_subplot(1, len(captions), i + 1, projection="3d")
        atoms = scene["sphere_cell"] == i
        arrows = scene["arrow_cell"] == i if "arrow_cell" in scene else np.zeros(0, dtype=bool)
        ax.scatter(*scene["sphere_centre"][atoms].T, c=scene["sphere_colour"][atoms], depthshade=False,
                   s=(scene["sphere_radius"][atoms] * cell_points) ** 2, edgecolors="0.3", linewidths=0.5)
        if arrows.any():
            ax.quiver(*scene["arrow_start"][arrows].T, *scene["arrow_vector"][arrows].T,
                      colors=scene["arrow_colour"][arrows], arrow_length_ratio=0.25, linewidths=1.2)
        if "line_start" in scene:  # a periodic structure's unit cell
            edges = scene["line_cell"] == i
            for start, end in zip(scene["line_start"][edges], scene["line_end"][edges]):
                ax.plot(*np.stack([start, end]).T, color=CELL_COLOUR, linewidth=1.0)
        ax.set_title(caption, fontsize=8)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 40 / height)  # room for two caption lines
    _save(fig, out)
    plt.close(fig)


def render_molecule_snapshot(views: list[MoleculeView], out: str | Path, *, size: tuple[int, int] = (1200, 400),
                             renderer: Renderer = "auto", timeout: float = 120.0) -> str:
    """Write the molecule scene of ``views`` (:func:`pointgeo.viz.molecules.molecule_scene`) to ``out`` (PNG);
    returns ``"open3d"`` or ``"matplotlib"``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scene = molecule_scene(views)
    captions = [molecule_title(v, i) for i, v in enumerate(views)]
    width, height = size
    arrays = {**scene, "up": np.asarray(2)}
    if renderer in ("auto", "open3d") and _open3d(arrays, captions, [False] * len(views), out, width, height,
                                                  timeout):
        return "open3d"
    if renderer == "open3d":
        raise RuntimeError("Open3D could not render offscreen (no Vulkan driver? see the README's system packages)")
    _matplotlib_molecule(scene, captions, out, width, height)
    return "matplotlib"


def _matplotlib_pair(scene: dict[str, np.ndarray], captions: list[str], out: Path, width: int, height: int,
                     up: int) -> None:
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    plt, fig = _figure(len(captions), width, height)
    order = [a for a in range(3) if a != up] + [up]  # matplotlib draws its third axis upwards
    for c, caption in enumerate(captions):
        ax = fig.add_subplot(1, len(captions), c + 1, projection="3d")
        ax.computed_zorder = False  # the correspondence lines stay on top of the points
        points, links = scene["point_cell"] == c, scene["link_cell"] == c
        ax.scatter(*scene["point_pos"][points][:, order].T, c=scene["point_colour"][points], s=2, depthshade=False,
                   zorder=1)
        segments = np.stack([scene["link_start"][links], scene["link_end"][links]], 1)[..., order]
        if len(segments):
            ax.add_collection3d(Line3DCollection(segments, colors=scene["link_colour"][links], linewidths=1.2,
                                                 zorder=2))
        ax.set_title(caption, fontsize=8)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_axis_off()
    _save(fig, out)
    plt.close(fig)


def render_pair_snapshot(scene: dict[str, np.ndarray], captions: list[str], out: str | Path, *,
                         size: tuple[int, int] = (1200, 600), renderer: Renderer = "auto", up_axis: str = "z",
                         timeout: float = 120.0) -> str:
    """Write a registration pair's scene (:func:`pointgeo.viz.pairs.pair_scene`: before and after, with
    correspondence lines) to ``out`` (PNG), ``up_axis`` pointing up; returns ``"open3d"`` or ``"matplotlib"``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    up = axis_index(up_axis)
    if renderer in ("auto", "open3d") and _open3d({**scene, "up": np.asarray(up)}, captions, [False] * len(captions),
                                                  out, width, height, timeout):
        return "open3d"
    if renderer == "open3d":
        raise RuntimeError("Open3D could not render offscreen (no Vulkan driver? see the README's system packages)")
    _matplotlib_pair(scene, captions, out, width, height, up)
    return "matplotlib"


def render_crystal_snapshot(crystals: list[tuple[np.ndarray, np.ndarray, np.ndarray]], captions: list[str],
                            out: str | Path, *, size: tuple[int, int] = (1200, 400)) -> None:
    """Write the atoms and unit cells of ``crystals`` (:func:`pointgeo.viz.molecules.crystal_scene`: per crystal
    ``(frac_coords (N, 3), atomic numbers (N,), lattice (3, 3))``), one per column with its caption, to ``out``
    (PNG, matplotlib: the same drawing on every machine)."""
    if len(captions) != len(crystals) or not crystals:
        raise ValueError(f"give one caption per crystal (at least one crystal); got {len(crystals)} crystals and "
                         f"{len(captions)} captions")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _matplotlib_molecule(crystal_scene(crystals), captions, out, *size)
