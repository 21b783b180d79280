"""Tools to prove invariance: the harness and adversarial shapes, shipped so users can test their own models."""

from pointgeo.testing.invariance import (
    InvarianceReport,
    assert_equivariant,
    assert_invariant,
    frame_equivariance_error,
    measure,
    measure_frame_equivariance,
    measure_piecewise,
)
from pointgeo.testing.pairs import measure_pair, measure_pair_equivariance
from pointgeo.testing.shapes import (
    ADVERSARIAL_PAIRS,
    ADVERSARIAL_SHAPES,
    PAIR_SHAPE_CLASSES,
    SHAPE_CLASSES,
    adversarial_batch,
    check_declared_shapes,
    guaranteed_shapes,
    modelnet40_symmetric,
)

__all__ = [
    "ADVERSARIAL_PAIRS",
    "ADVERSARIAL_SHAPES",
    "PAIR_SHAPE_CLASSES",
    "measure_pair",
    "measure_pair_equivariance",
    "SHAPE_CLASSES",
    "InvarianceReport",
    "adversarial_batch",
    "check_declared_shapes",
    "guaranteed_shapes",
    "modelnet40_symmetric",
    "assert_equivariant",
    "assert_invariant",
    "frame_equivariance_error",
    "measure",
    "measure_frame_equivariance",
    "measure_piecewise",
]
