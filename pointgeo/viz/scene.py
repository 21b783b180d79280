"""What the viewer shows: a shape and random SO(3) rotations of it, each with the model's prediction.

Nothing here draws: :func:`build_views` runs the model, :func:`view_colours` turns predictions into colours, and
the snapshot renderers and the interactive app display the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pointgeo.geometry import POINT_CLOUD_FIELDS, apply_rigid_motion, random_rotations

ColourMode = Literal["prediction", "truth", "error"]
CORRECT, WRONG = (0.15, 0.65, 0.25), (0.85, 0.1, 0.1)


@dataclass
class View:
    """One copy of the shape: rotated points, the rotation, and the model's output for it."""

    pos: np.ndarray  # (N, 3)
    rotation: np.ndarray  # (3, 3)
    pred: int
    prob: float
    changed: bool  # prediction differs from the unrotated shape's


def rotation_stack(n_rotations: int, seed: int = 0) -> Tensor:
    """``(1 + n_rotations, 3, 3)`` float64: the identity, then ``n_rotations`` Haar-random rotations seeded by
    ``seed`` (the copies every view shows)."""
    return torch.cat([torch.eye(3, dtype=torch.float64)[None],
                      random_rotations(n_rotations, generator=torch.Generator().manual_seed(seed))])


def build_views(task: torch.nn.Module, pos: Tensor, normal: Tensor | None, n_rotations: int,
                seed: int = 0) -> list[View]:
    """The unrotated shape and ``n_rotations`` Haar-random rotations of it, all predicted in one batch.

    Args:
        task: a classification task, ``task(batch) -> logits (B, C)``.
        pos: ``(N, 3)`` positions; ``normal``: ``(N, 3)`` or ``None``.
    """
    rot = rotation_stack(n_rotations, seed)
    shape = {"pos": pos.double().expand(len(rot), -1, -1)}
    if normal is not None:
        shape["normal"] = normal.double().expand(len(rot), -1, -1)
    batch = {key: value.float() for key, value in apply_rigid_motion(shape, POINT_CLOUD_FIELDS, rot).items()}
    with torch.no_grad():
        prob = task(batch).softmax(-1)
    conf, pred = prob.max(-1)
    return [View(batch["pos"][i].numpy(), rot[i].numpy(), int(pred[i]), float(conf[i]), bool(pred[i] != pred[0]))
            for i in range(len(rot))]


def palette(n: int) -> np.ndarray:
    """``(n, 3)`` distinct RGB colours in [0, 1]: tab20's darker shades (tab10), then its lighter ones, then repeats.

    The greys are left out: they are the colour of text and anti-aliased edges.
    """
    from matplotlib import colormaps

    order = [i for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (14, 15)]
    return np.asarray(colormaps["tab20"](np.asarray(order)[np.arange(n) % len(order)]))[:, :3]


def view_colours(view: View, label: int | None, mode: ColourMode, num_classes: int) -> np.ndarray:
    """``(3,)`` colour of a view: its predicted class, the true class, or green/red for right/wrong."""
    colours = palette(num_classes)
    if mode == "prediction":
        return colours[view.pred]
    if label is None:
        raise ValueError(f"colour mode {mode!r} needs the ground-truth label of the shape")
    if mode == "truth":
        return colours[label]
    return np.asarray(CORRECT if view.pred == label else WRONG)


def title(view: View, class_names: list[str], index: int) -> str:
    """The caption of a view: which copy, predicted class and probability, and whether it changed."""
    name = "original" if index == 0 else f"rotation {index}"
    flag = ", CHANGED" if view.changed else ""
    return f"{name}\n{class_names[view.pred]} ({100 * view.prob:.0f} %){flag}"
