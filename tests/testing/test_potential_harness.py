"""The potential harness can fail: constant, non-invariant and non-conservative networks are caught by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pointgeo.testing.potentials import (
    assert_conservative,
    assert_potential_symmetric,
    measure_conservation,
    potential_test_batch,
)


class Constant(nn.Module):
    """E = c for every molecule: invariant and 'equivariant' trivially, with zero forces."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, batch) -> torch.Tensor:
        return self.c * torch.ones(batch.num_graphs, dtype=batch.pos.dtype) + 0 * batch.pos.sum()


class Gravity(nn.Module):
    """E = Σ_i z_i · height_i: a gradient field, permutation invariant, not rotation invariant."""

    def forward(self, batch) -> torch.Tensor:
        atomic = batch.z.to(batch.pos.dtype) * batch.pos[:, 2]
        return torch.zeros(batch.num_graphs, dtype=batch.pos.dtype).index_add(0, batch.batch, atomic)


class Swirl(nn.Module):
    """A direct head whose forces circulate about each molecule's centroid: equivariant, not a gradient."""

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        counts = torch.bincount(batch.batch).to(batch.pos.dtype)
        centroid = torch.zeros(batch.num_graphs, 3, dtype=batch.pos.dtype).index_add(0, batch.batch, batch.pos)
        rel = batch.pos - (centroid / counts[:, None])[batch.batch]
        radius2 = torch.zeros(batch.num_graphs, dtype=batch.pos.dtype).index_add(0, batch.batch, rel.pow(2).sum(-1))
        axis = torch.linalg.cross(rel, torch.roll(rel, 1, 0))  # couples neighbours: no potential generates it
        return radius2, torch.linalg.cross(axis, rel) * 0.1


def test_a_constant_network_fails_the_harness() -> None:
    with pytest.raises(AssertionError, match="trivial: max |F| = 0"):
        assert_potential_symmetric(Constant(), potential_test_batch("random"))


def test_a_rotation_dependent_energy_fails_the_harness_by_name() -> None:
    with pytest.raises(AssertionError, match="energy not invariant under rotation") as info:
        assert_potential_symmetric(Gravity(), potential_test_batch("random"))
    assert "forces not equivariant under rotation" in str(info.value)
    assert "trivial" not in str(info.value)


def test_a_non_gradient_force_field_is_reported_not_conservative() -> None:
    batch = potential_test_batch("random")
    report = measure_conservation(Swirl(), batch)
    assert not report.conservative and report.fd_error > 1e-2 and report.curl > 1e-3
    with pytest.raises(AssertionError, match="not conservative"):
        assert_conservative(Swirl(), batch)
    assert assert_conservative(Gravity(), batch).conservative  # a (non-invariant) gradient field is conservative
