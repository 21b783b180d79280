"""The drawing of periodic structures without forces (generated crystals): atoms wrapped into their unit cell, the
12 cell edges along the lattice vectors, every crystal scaled into its own column, drawn by matplotlib."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from pointgeo.viz.molecules import crystal_scene
from pointgeo.viz.render_open3d import CELL_COLOUR
from pointgeo.viz.snapshot import render_crystal_snapshot

SKEWED = np.array([[4.0, 0.0, 0.0], [1.5, 3.5, 0.0], [0.7, 0.9, 5.0]])
CUBIC = np.eye(3) * 3.0


def test_atoms_are_wrapped_and_each_cell_has_its_twelve_edges() -> None:
    frac = np.array([[0.1, 0.2, 0.3], [1.25, -0.5, 0.5]])  # the second atom lies outside the cell
    scene = crystal_scene([(frac, np.array([8, 22]), SKEWED), (frac[:1], np.array([26]), CUBIC)])
    assert np.bincount(scene["sphere_cell"]).tolist() == [2, 1]
    assert np.bincount(scene["line_cell"]).tolist() == [12, 12]
    first = scene["line_cell"] == 0
    vectors = scene["line_end"][first] - scene["line_start"][first]
    scale = np.linalg.norm(vectors, axis=1).max() / np.linalg.norm(SKEWED, axis=1).max()
    # every edge is a lattice vector, all scaled alike; each vector appears on four edges
    for vector in SKEWED:
        along = np.abs(np.linalg.norm(vectors - vector * scale, axis=1)) < 1e-12
        assert along.sum() == 4
    wrapped = (np.array([0.25, 0.5, 0.5]) @ SKEWED - 0.5 * SKEWED.sum(0)) * scale
    np.testing.assert_allclose(scene["sphere_centre"][1], wrapped, rtol=0, atol=1e-12)
    assert np.abs(np.concatenate([scene["line_start"], scene["line_end"]])).max() <= 1.0 + 1e-12
    assert "arrow_start" not in scene


def test_the_snapshot_draws_the_cell_edges(tmp_path: Path) -> None:
    crystals = [(np.array([[0.5, 0.5, 0.5]]), np.array([8]), SKEWED)] * 2
    render_crystal_snapshot(crystals, ["a", "b"], tmp_path / "c.png", size=(400, 220))
    image = plt.imread(tmp_path / "c.png")[..., :3]
    assert image.shape[:2] == (220, 400)
    dark = (np.abs(image - np.asarray(CELL_COLOUR)).max(-1) < 0.15).sum()
    assert dark > 200  # the cell edges (the only dark grey in the picture besides the captions)
    with pytest.raises(ValueError, match="one caption per crystal"):
        render_crystal_snapshot(crystals, ["a"], tmp_path / "d.png")
