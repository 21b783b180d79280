"""What the viewer shows: a shape and random SO(3) rotations of it, each with the model's prediction.

Nothing here draws: :func:`build_views` runs the model, :func:`view_colours` turns predictions into colours, and
the snapshot renderers and the interactive app display the result. A classifier colours each copy by its predicted
class; a segmentation model colours every point (``prediction``: its predicted part, ``truth``: its labelled part,
``error``: right or wrong), and a model that predicts its own partition (one with ``segment``, APEN) also by the
predicted partition (``partition``; each copy's pieces take the colour of the unrotated copy's piece most of their
points belong to, so a stable partition keeps its colours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pointgeo.geometry import POINT_CLOUD_FIELDS, apply_rigid_motion, random_rotations

ColourMode = Literal["prediction", "truth", "error", "partition"]
CORRECT, WRONG = (0.15, 0.65, 0.25), (0.85, 0.1, 0.1)


@dataclass
class View:
    """One copy of the shape: rotated points, the rotation, and the model's output for it."""

    pos: np.ndarray  # (N, 3)
    rotation: np.ndarray  # (3, 3)
    pred: int
    prob: float
    changed: bool  # prediction differs from the unrotated shape's
    point_pred: np.ndarray | None = None
    """Segmentation: ``(N,)`` predicted part of every point (``pred``/``prob``: the commonest part, mean
    confidence; ``changed``: some point's part differs from the unrotated copy's)."""
    changed_fraction: float = 0.0
    """Segmentation: the fraction of points whose predicted part differs from the unrotated copy's."""
    partition: np.ndarray | None = None
    """A network with ``segment``: ``(N,)`` predicted piece of every point, ids aligned to the unrotated copy's."""


def rotation_stack(n_rotations: int, seed: int = 0) -> Tensor:
    """``(1 + n_rotations, 3, 3)`` float64: the identity, then ``n_rotations`` Haar-random rotations seeded by
    ``seed`` (the copies every view shows)."""
    return torch.cat([torch.eye(3, dtype=torch.float64)[None],
                      random_rotations(n_rotations, generator=torch.Generator().manual_seed(seed))])


def align_partition(partition: Tensor) -> Tensor:
    """``(V, N)`` piece ids of ``V`` copies of one cloud, renamed so that each piece of copy ``v`` takes the id of
    the piece of copy 0 most of its points belong to (ties: the smaller id)."""
    v, _ = partition.shape
    count = int(partition.max()) + 1
    pairs = torch.zeros(v, count, count, dtype=torch.long)  # [copy, its piece, copy 0's piece]
    pairs.view(v, -1).scatter_add_(1, partition * count + partition[:1], torch.ones_like(partition))
    return torch.gather(pairs.argmax(-1), 1, partition)


def build_views(task: torch.nn.Module, pos: Tensor, normal: Tensor | None, n_rotations: int,
                seed: int = 0, category: int | None = None) -> list[View]:
    """The unrotated shape and ``n_rotations`` Haar-random rotations of it, all predicted in one batch.

    Args:
        task: a classification task, ``task(batch) -> logits (B, C)``, or a segmentation one (given ``category``),
            ``task(batch) -> logits (B, N, P)``; its network's ``segment`` (when it has one) gives the partition.
        pos: ``(N, 3)`` positions; ``normal``: ``(N, 3)`` or ``None``.
        category: the shape's category, for a segmentation task.
    """
    rot = rotation_stack(n_rotations, seed)
    shape = {"pos": pos.double().expand(len(rot), -1, -1)}
    if normal is not None:
        shape["normal"] = normal.double().expand(len(rot), -1, -1)
    batch = {key: value.float() for key, value in apply_rigid_motion(shape, POINT_CLOUD_FIELDS, rot).items()}
    if category is not None:
        batch["category"] = torch.full((len(rot),), int(category), dtype=torch.long)
    with torch.no_grad():
        prob = task(batch).softmax(-1)
    conf, pred = prob.max(-1)
    if pred.dim() == 1:
        return [View(batch["pos"][i].numpy(), rot[i].numpy(), int(pred[i]), float(conf[i]),
                     bool(pred[i] != pred[0])) for i in range(len(rot))]
    partition = _partition(task, batch)
    changed = (pred != pred[:1]).double().mean(1)
    return [View(batch["pos"][i].numpy(), rot[i].numpy(), int(pred[i].mode().values), float(conf[i].mean()),
                 bool(changed[i] > 0), pred[i].numpy(), float(changed[i]),
                 None if partition is None else partition[i].numpy()) for i in range(len(rot))]


def _partition(task: torch.nn.Module, batch: dict[str, Tensor]) -> Tensor | None:
    """The aligned predicted partition ``(V, N)`` of a network with ``segment``, else ``None``."""
    net = getattr(task, "net", None)
    if not hasattr(net, "segment"):
        return None
    normal = batch.get("normal") if getattr(task.hparams, "use_normals", False) else None
    with torch.no_grad():
        out = net.segment(batch["pos"], normal, batch["category"])
    return align_partition(out.partition.long())


def palette(n: int) -> np.ndarray:
    """``(n, 3)`` distinct RGB colours in [0, 1]: tab20's darker shades (tab10), then its lighter ones, then repeats.

    The greys are left out: they are the colour of text and anti-aliased edges.
    """
    from matplotlib import colormaps

    order = [i for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (14, 15)]
    return np.asarray(colormaps["tab20"](np.asarray(order)[np.arange(n) % len(order)]))[:, :3]


def view_colours(view: View, label: int | np.ndarray | None, mode: ColourMode, num_classes: int) -> np.ndarray:
    """The colour of a view: ``(3,)`` for a classifier's copy (its predicted class, the true class ``label``, or
    green/red for right/wrong), ``(N, 3)`` per point for a segmentation (``label``: the ``(N,)`` true parts;
    ``num_classes``: the number of parts), or per predicted piece (``partition``).

    Raises:
        ValueError: a mode the view cannot show (no ground truth, no predicted partition).
    """
    if mode == "partition":
        if view.partition is None:
            raise ValueError("colour mode 'partition' needs a network that predicts its partition (one with segment, "
                             "e.g. apen)")
        return palette(int(view.partition.max()) + 1)[view.partition]
    colours = palette(num_classes)
    pred = view.pred if view.point_pred is None else view.point_pred
    if mode == "prediction":
        return colours[pred]
    if label is None:
        raise ValueError(f"colour mode {mode!r} needs the ground-truth label of the shape")
    if mode == "truth":
        return colours[label]
    right = pred == label
    return np.where(np.asarray(right)[..., None], np.asarray(CORRECT), np.asarray(WRONG)) if view.point_pred is not \
        None else np.asarray(CORRECT if right else WRONG)


def title(view: View, class_names: list[str], index: int) -> str:
    """The caption of a view: which copy, predicted class and probability (for a segmentation: the share of
    points whose part changed, and the number of predicted pieces), and whether it changed."""
    name = "original" if index == 0 else f"rotation {index}"
    flag = ", CHANGED" if view.changed else ""
    if view.point_pred is not None:
        pieces = "" if view.partition is None else f", {len(np.unique(view.partition))} pieces"
        return f"{name}\n{100 * view.changed_fraction:.0f} % of points changed part{pieces}{flag}"
    return f"{name}\n{class_names[view.pred]} ({100 * view.prob:.0f} %){flag}"
