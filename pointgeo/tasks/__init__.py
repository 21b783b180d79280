"""LightningModules, one per task. A task builds its network by registry name and adds only the training logic."""

from __future__ import annotations

from typing import Any

from pointgeo.tasks.classification import ClassificationTask
from pointgeo.tasks.crystal_generation import CDVAETask
from pointgeo.tasks.parot import PaRotClassificationTask, PaRotSegmentationTask
from pointgeo.tasks.potential import PotentialTask, TransIPPotentialTask
from pointgeo.tasks.segmentation import PartSegmentationTask

__all__ = ["CDVAETask", "ClassificationTask", "PaRotClassificationTask", "PaRotSegmentationTask",
           "PartSegmentationTask", "PotentialTask", "TransIPPotentialTask", "task_class_for"]

TASK_KINDS = {"classification": ClassificationTask, "segmentation": PartSegmentationTask, "potential": PotentialTask,
              "crystal_generation": CDVAETask}
"""The default task class of each checkpoint kind (``checkpoint["pointgeo"]["task"]``)."""


def task_class_for(meta: dict[str, Any], source: str) -> type:
    """The task class that wrote a checkpoint, from its ``pointgeo`` metadata: its kind must be one pointgeo
    rebuilds, and the recorded class (when there is one) a :mod:`pointgeo.tasks` class of that kind; without a
    recorded class, the default of the kind. ``ValueError`` names ``source`` otherwise."""
    kind = meta.get("task", "classification")
    if kind not in TASK_KINDS:
        raise ValueError(f"{source} is a {kind!r} checkpoint; pointgeo rebuilds {', '.join(TASK_KINDS)} checkpoints")
    name = meta.get("task_class")
    if name is None:
        return TASK_KINDS[kind]
    cls = globals().get(name) if name in __all__ else None
    if not isinstance(cls, type) or cls.task_kind != kind:
        raise ValueError(f"{source} was written by task class {name!r}, which this pointgeo does not have for "
                         f"{kind} checkpoints")
    return cls
