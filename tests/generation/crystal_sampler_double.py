"""A test double of a crystal generation model, for testing the generation pipeline without a trained network.

``ToySampler`` has exactly the interface ``pointgeo.generation.CrystalSampler`` asks of a generative task (and that
``CDVAETask`` provides): ``num_noise_levels`` and ``sample(num, *, generator, on_level)``, deterministic given the
generator, one batch per call, ``on_level(level, num_levels)`` after each noise level. Its "Langevin dynamics" is a
cheap random walk of fractional coordinates whose step shrinks with the level; the crystals look like small
oxides (2-6 atoms, 3.5-5.5 Å cells). With ``invalid_every=m`` every ``m``-th crystal of a batch is broken in turn in
one of the ways a real model's output can be: a NaN lattice, two overlapping atoms, a degenerate (flat) lattice.
``delay`` seconds of sleep per level make it slow enough to be killed mid-run. ``calls`` records the batch sizes
asked for, so tests see which batches ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from pointgeo.metrics.crystals import Crystal, crystals_from_batch

ELEMENTS = torch.tensor([8, 12, 20, 22, 26, 38, 56])
"""O, Mg, Ca, Ti, Fe, Sr, Ba: the atomic numbers the double draws from."""
BROKEN = ("nan_lattice", "overlapping_atoms", "degenerate_lattice")


class ToySampler:
    """A deterministic stand-in for a generative crystal model (module docstring)."""

    def __init__(self, num_noise_levels: int = 4, *, invalid_every: int = 0, delay: float = 0.0) -> None:
        self.num_noise_levels = num_noise_levels
        self.invalid_every = invalid_every
        self.delay = delay
        self.calls: list[int] = []

    def sample(self, num: int, *, generator: torch.Generator,
               on_level: Callable[[int, int], None] | None = None) -> list[Crystal]:
        self.calls.append(num)
        natoms = torch.randint(2, 7, (num,), generator=generator)
        total = int(natoms.sum())
        lengths = 3.5 + 2.0 * torch.rand(num, 3, generator=generator, dtype=torch.float64)
        angles = 80.0 + 20.0 * torch.rand(num, 3, generator=generator, dtype=torch.float64)
        types = ELEMENTS[torch.randint(len(ELEMENTS), (total,), generator=generator)]
        frac = torch.rand(total, 3, generator=generator, dtype=torch.float64)
        for level in range(self.num_noise_levels):
            sigma = 0.1 * 0.5 ** level
            frac = torch.remainder(frac + sigma * torch.randn(total, 3, generator=generator, dtype=torch.float64), 1)
            if self.delay:
                time.sleep(self.delay)
            if on_level is not None:
                on_level(level, self.num_noise_levels)
        crystals = crystals_from_batch(frac, types, lengths, angles, natoms)
        return [self._broken(c, i) for i, c in enumerate(crystals)]

    def broken_kind(self, position: int) -> str | None:
        """Which way the crystal at ``position`` of a batch is broken (``None``: not)."""
        if not self.invalid_every or position % self.invalid_every != self.invalid_every - 1:
            return None
        return BROKEN[(position // self.invalid_every) % len(BROKEN)]

    def _broken(self, crystal: Crystal, position: int) -> Crystal:
        kind = self.broken_kind(position)
        if kind == "nan_lattice":
            return Crystal(crystal.frac_coords, crystal.atom_types, np.array([np.nan, 4.0, 4.0]), crystal.angles)
        if kind == "overlapping_atoms":
            frac = crystal.frac_coords.copy()
            frac[1] = frac[0] + 1e-3
            return Crystal(frac, crystal.atom_types, crystal.lengths, crystal.angles)
        if kind == "degenerate_lattice":
            return Crystal(crystal.frac_coords, crystal.atom_types, crystal.lengths, np.array([120.0, 120.0, 120.0]))
        return crystal


class ReplaySampler:
    """A "perfect" model: it returns given crystals in order (``num`` at a time), ignoring the generator."""

    def __init__(self, crystals: list[Crystal], num_noise_levels: int = 2) -> None:
        self.crystals, self.num_noise_levels, self.next = crystals, num_noise_levels, 0

    def sample(self, num: int, *, generator: torch.Generator,
               on_level: Callable[[int, int], None] | None = None) -> list[Crystal]:
        out = self.crystals[self.next:self.next + num]
        self.next += num
        for level in range(self.num_noise_levels):
            if on_level is not None:
                on_level(level, self.num_noise_levels)
        return out
