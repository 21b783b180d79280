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
from pointgeo.testing.piecewise import (
    PIECEWISE_SHAPES,
    measure_apen_piecewise,
    measure_given_partition,
    piecewise_part_sets,
)
from pointgeo.testing.shapes import (
    ADVERSARIAL_SHAPES,
    SHAPE_CLASSES,
    adversarial_batch,
    check_declared_shapes,
    guaranteed_shapes,
    modelnet40_symmetric,
)

__all__ = [
    "ADVERSARIAL_SHAPES",
    "PIECEWISE_SHAPES",
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
    "measure_apen_piecewise",
    "measure_given_partition",
    "measure_piecewise",
    "piecewise_part_sets",
]
