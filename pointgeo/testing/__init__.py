"""Tools to prove invariance: the harness and adversarial shapes, shipped so users can test their own models."""

from pointgeo.testing.invariance import (
    InvarianceReport,
    assert_equivariant,
    assert_invariant,
    frame_equivariance_error,
    measure,
    measure_frame_equivariance,
)
from pointgeo.testing.shapes import ADVERSARIAL_SHAPES, adversarial_batch

__all__ = [
    "ADVERSARIAL_SHAPES",
    "InvarianceReport",
    "adversarial_batch",
    "assert_equivariant",
    "assert_invariant",
    "frame_equivariance_error",
    "measure",
    "measure_frame_equivariance",
]
