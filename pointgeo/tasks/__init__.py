"""LightningModules, one per task. A task builds its network by registry name and adds only the training logic."""

from pointgeo.tasks.classification import ClassificationTask
from pointgeo.tasks.segmentation import PartSegmentationTask

__all__ = ["ClassificationTask", "PartSegmentationTask"]
