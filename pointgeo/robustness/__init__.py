"""Rotated-test robustness reports: protocols (z/z, z/SO3, SO3/SO3), angle sweeps, measured invariance."""

from pointgeo.robustness.protocol import PROTOCOLS, ClassificationEvaluator, ProtocolSettings, evaluate
from pointgeo.robustness.report import ReportExistsError, run_robustness

__all__ = ["PROTOCOLS", "ClassificationEvaluator", "ProtocolSettings", "ReportExistsError", "evaluate",
           "run_robustness"]
