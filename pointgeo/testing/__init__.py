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
from pointgeo.testing.piecewise import (
    PIECEWISE_SHAPES,
    measure_apen_piecewise,
    measure_given_partition,
    piecewise_part_sets,
)
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
    "InvarianceReport",
    "PAIR_SHAPE_CLASSES",
    "PIECEWISE_SHAPES",
    "SHAPE_CLASSES",
    "adversarial_batch",
    "assert_equivariant",
    "assert_invariant",
    "check_declared_shapes",
    "frame_equivariance_error",
    "guaranteed_shapes",
    "measure",
    "measure_apen_piecewise",
    "measure_frame_equivariance",
    "measure_given_partition",
    "measure_pair",
    "measure_pair_equivariance",
    "measure_piecewise",
    "modelnet40_symmetric",
    "piecewise_part_sets",
]
