"""Rotated-test robustness reports: protocols (z/z, z/SO3, SO3/SO3), angle sweeps, measured invariance.

``run_robustness(["tinvnn_pointnet.synthetic_z", "pointnet.synthetic_z"], "reports/synthetic")`` evaluates models
side by side and writes ``report.json``, PNG plots and a self-contained ``report.html``; ``pointgeo robustness``
is the same from the command line (:mod:`pointgeo.robustness.command`).
"""

from pointgeo.robustness.evaluators import (
    EVALUATORS,
    ClassificationEvaluator,
    Evaluator,
    PartSegmentationEvaluator,
)
from pointgeo.robustness.output import ReportExistsError
from pointgeo.robustness.protocol import PROTOCOLS, ProtocolSettings, evaluate, rotation_table
from pointgeo.robustness.report import run_robustness

__all__ = ["EVALUATORS", "PROTOCOLS", "ClassificationEvaluator", "Evaluator", "PartSegmentationEvaluator",
           "ProtocolSettings", "ReportExistsError", "evaluate", "rotation_table", "run_robustness"]
