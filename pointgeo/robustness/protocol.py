"""Rotated-test protocols: what happens to a trained model when its test data is rotated.

For every model and every test shape the runner evaluates:

* the protocols ``none``, ``z`` (about the dataset's up axis) and ``so3``, each over ``n_rotations`` rotations per
  shape drawn from a generator seeded by ``(seed, shape index, protocol, rotation index)``, so every model and
  machine sees the same rotations; with the training rotation stored in the checkpoint this gives the familiar
  ``z/z``, ``z/SO3``, ``SO3/SO3`` table;
* an angle sweep: accuracy against the rotation angle about each of x, y, z, in bins of ``sweep_step`` degrees;
* the measured invariance: maximum and mean change of the logits between each rotated copy and the unrotated shape,
  and the prediction flip rate;
* per-class accuracy under each protocol.

Rotations are applied here to the unrotated test clouds (positions and normals together), never inside a model.
Evaluation runs on one device, so every sample counts exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pointgeo.datamodules.base import sample_seed
from pointgeo.geometry import angle_sweep, rotate, rotations_about_axis, sample_rotations

PROTOCOLS = ("none", "z", "so3")
Batch = dict[str, Tensor]


@dataclass
class ProtocolSettings:
    """How a robustness run samples rotations."""

    n_rotations: int = 4
    sweep_step: float = 15.0
    seed: int = 0


def rotation_table(indices: Tensor, mode: str, settings: ProtocolSettings, up_axis: str) -> Tensor:
    """``(S, n_rotations, 3, 3)`` float64 rotations of the shapes ``indices`` under protocol ``mode``, each drawn from
    its own generator seeded by ``(seed, shape index, protocol, rotation index)``."""
    code = PROTOCOLS.index(mode)
    return torch.stack([
        torch.cat([
            sample_rotations(mode, 1, up_axis=up_axis,
                             generator=torch.Generator().manual_seed(sample_seed(settings.seed, int(i), code, r)))
            for r in range(settings.n_rotations)
        ])
        for i in indices
    ])


def _rotate_batch(batch: Batch, rotation: Tensor) -> Batch:
    out = dict(batch)
    for key in ("pos", "normal"):
        if key in batch:
            out[key] = rotate(batch[key].double(), rotation).to(batch[key].dtype)
    return out


class ClassificationEvaluator:
    """Scores a classification model: ``logits (B, C)``, a shape is correct when ``argmax == label``.

    Other task kinds (part segmentation, registration, energies) plug in with the same three methods.
    """

    kind = "classification"

    def __init__(self, model: Callable[[Batch], Tensor]) -> None:
        self.model = model

    def logits(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self.model(batch)

    def correct(self, logits: Tensor, batch: Batch) -> Tensor:
        """``(B,)`` float, 1 where the prediction is right."""
        return (logits.argmax(-1) == batch["label"]).double()


def evaluate(
    evaluator: ClassificationEvaluator,
    batches: Callable[[], Iterator[Batch]],
    num_classes: int,
    up_axis: str,
    settings: ProtocolSettings,
    *,
    description: str = "",
) -> dict:
    """Run every protocol and the sweep over the unrotated test ``batches``; returns plain Python numbers."""
    sums = {m: {"correct": 0.0, "count": 0, "max_abs": 0.0, "sum_abs": 0.0, "n_abs": 0, "flips": 0.0,
                "class_correct": torch.zeros(num_classes, dtype=torch.float64),
                "class_count": torch.zeros(num_classes, dtype=torch.float64)} for m in PROTOCOLS}
    angles = angle_sweep(settings.sweep_step)
    sweep = {axis: torch.zeros(len(angles), dtype=torch.float64) for axis in "xyz"}
    sweep_rot = {axis: rotations_about_axis(angles, axis) for axis in "xyz"}
    total = 0
    for batch in tqdm(list(batches()), desc=description or "robustness", leave=False):
        b = batch["label"].shape[0]
        total += b
        reference = evaluator.logits(batch)
        ref_pred = reference.argmax(-1)
        for mode in PROTOCOLS:
            table = rotation_table(batch["index"], mode, settings, up_axis)
            acc = sums[mode]
            for r in range(settings.n_rotations):
                rotated = _rotate_batch(batch, table[:, r])
                logits = evaluator.logits(rotated)
                hit = evaluator.correct(logits, batch)
                diff = (logits.double() - reference.double()).abs()
                acc["correct"] += float(hit.sum())
                acc["count"] += b
                acc["max_abs"] = max(acc["max_abs"], float(diff.max()))
                acc["sum_abs"] += float(diff.sum())
                acc["n_abs"] += diff.numel()
                acc["flips"] += float((logits.argmax(-1) != ref_pred).sum())
                acc["class_correct"].index_add_(0, batch["label"], hit)
                acc["class_count"].index_add_(0, batch["label"], torch.ones_like(hit))
        for axis in "xyz":
            for a, rot in enumerate(sweep_rot[axis]):
                rotated = _rotate_batch(batch, rot.expand(b, 3, 3))
                sweep[axis][a] += float(evaluator.correct(evaluator.logits(rotated), batch).sum())
    protocols = {}
    for mode, acc in sums.items():
        per_class = acc["class_correct"] / acc["class_count"].clamp_min(1)
        protocols[mode] = {
            "accuracy": acc["correct"] / max(acc["count"], 1),
            "mean_class_accuracy": float(per_class[acc["class_count"] > 0].mean()) if acc["count"] else 0.0,
            "per_class_accuracy": per_class.tolist(),
            "max_logit_change": acc["max_abs"],
            "mean_logit_change": acc["sum_abs"] / max(acc["n_abs"], 1),
            "flip_rate": acc["flips"] / max(acc["count"], 1),
            "evaluations": acc["count"],
        }
    return {
        "protocols": protocols,
        "sweep": {"angles_degrees": torch.rad2deg(angles).tolist(),
                  **{axis: (sweep[axis] / max(total, 1)).tolist() for axis in "xyz"}},
        "num_shapes": total,
    }
