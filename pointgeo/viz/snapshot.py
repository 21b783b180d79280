"""Render the viewer's scene to a PNG without a display.

Open3D's offscreen renderer runs in a subprocess (a renderer crash cannot take the caller down) and matplotlib adds
the captions; when Open3D cannot render (no Vulkan driver, no Open3D), matplotlib's 3D scatter (Agg) draws the whole
scene instead. :func:`render_snapshot` returns which renderer was used.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from pointgeo.geometry import axis_index
from pointgeo.viz.render_open3d import MARGIN
from pointgeo.viz.scene import ColourMode, View, title, view_colours

Renderer = Literal["auto", "open3d", "matplotlib"]


def _figure(n: int, width: int, height: int):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width / 100, height / 100), dpi=100)


def _open3d(views: list[View], colours: list[np.ndarray], captions: list[str], out: Path, width: int,
            height: int, timeout: float, up: int) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        scene, raw = Path(tmp) / "scene.npz", Path(tmp) / "raw.png"
        np.savez(scene, **{f"pos_{i}": v.pos for i, v in enumerate(views)},
                 **{f"colour_{i}": c for i, c in enumerate(colours)}, up=np.asarray(up))
        try:
            done = subprocess.run([sys.executable, "-m", "pointgeo.viz.render_open3d", str(scene), str(raw),
                                   str(width), str(max(1, height - 60))], capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if done.returncode != 0 or not raw.is_file():
            return False
        plt, fig = _figure(len(views), width, height)
        image = plt.imread(raw)
        ax = fig.add_axes((0, 0, 1, (height - 60) / height))
        ax.imshow(image)
        ax.axis("off")
        for i, caption in enumerate(captions):
            fig.text(0.5 + ((i + 0.5) / len(views) - 0.5) / MARGIN, 1 - 30 / height, caption, ha="center", va="center", fontsize=9,
                     color="red" if views[i].changed else "black")
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return True


def _matplotlib(views: list[View], colours: list[np.ndarray], captions: list[str], out: Path, width: int,
                height: int) -> None:
    plt, fig = _figure(len(views), width, height)
    for i, (view, colour, caption) in enumerate(zip(views, colours, captions)):
        ax = fig.add_subplot(1, len(views), i + 1, projection="3d")
        ax.scatter(*view.pos.T, c=[colour], s=3, depthshade=False)
        ax.set_title(caption, fontsize=8, color="red" if view.changed else "black")
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_axis_off()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def render_snapshot(
    views: list[View],
    class_names: list[str],
    out: str | Path,
    *,
    label: int | None = None,
    mode: ColourMode = "prediction",
    size: tuple[int, int] = (1200, 400),
    renderer: Renderer = "auto",
    up_axis: str = "z",
    timeout: float = 120.0,
) -> str:
    """Write the scene of ``views`` to ``out`` (PNG), the dataset's ``up_axis`` pointing up; returns ``"open3d"``
    or ``"matplotlib"``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    colours = [view_colours(v, label, mode, len(class_names)) for v in views]
    captions = [title(v, class_names, i) for i, v in enumerate(views)]
    width, height = size
    up = axis_index(up_axis)
    if renderer in ("auto", "open3d") and _open3d(views, colours, captions, out, width, height, timeout, up):
        return "open3d"
    if renderer == "open3d":
        raise RuntimeError("Open3D could not render offscreen (no Vulkan driver? see the README's system packages)")
    _matplotlib(views, colours, captions, out, width, height)
    return "matplotlib"
