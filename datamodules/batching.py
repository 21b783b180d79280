"""Batches bounded by the total number of atoms (not by structure count), deterministic and balanced under DDP.

A batch of molecules costs memory in proportion to its atoms (and edges), so a fixed number of structures per batch
either wastes a GPU on small molecules or runs out of memory on a 350-atom one. :class:`AtomBudgetBatchSampler`
packs molecules, in a seeded order, into batches whose atom totals never exceed ``max_atoms``.

Under DDP every rank builds the same global list of batches (same seed and epoch), pads it by repeating its first
batches to a multiple of the number of ranks (or drops the remainder with ``drop_last``), sorts the batches by atom
total and deals consecutive ones to the ranks, so at every step the ranks hold batches of similar size (they wait
for the slowest at each all-reduce) and every rank gets the same number of batches. Lightning's own distributed
sampler must be off (``trainer.use_distributed_sampler: false``): this sampler does the sharding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class EpochOrder(Sampler[int]):
    """The order in which an epoch visits ``n`` items: a permutation seeded by ``(seed, epoch)`` or ``0..n-1``.

    Lightning calls :meth:`set_epoch` on a batch sampler's ``sampler`` at the start of every epoch.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0) -> None:
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """``(n,)`` int64: the visiting order of the current epoch."""
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n).astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n


def pack_by_budget(natoms: np.ndarray, max_atoms: int) -> list[np.ndarray]:
    """Cut a sequence of molecule sizes ``natoms (S,)`` into consecutive runs whose sums are ``<= max_atoms``
    (greedy: each run is as long as the budget allows); returns the position ranges as arrays.

    The loop runs over batches, not molecules: each cut is one ``searchsorted`` on the cumulative sizes.
    """
    cum = np.concatenate([[0], np.cumsum(natoms, dtype=np.int64)])
    cuts = [0]
    while cuts[-1] < len(natoms):
        start = cuts[-1]
        end = int(np.searchsorted(cum, cum[start] + max_atoms, side="right")) - 1
        cuts.append(max(end, start + 1))
    return [np.arange(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


class AtomBudgetBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices with at most ``max_atoms`` atoms each, sharded across ``num_replicas`` ranks.

    Args:
        natoms: atoms of each item of the dataset ``(S,)``.
        max_atoms: atom budget of a batch; every molecule must fit in it on its own.
        shuffle: a fresh seeded order every epoch (training); else the dataset order.
        seed: seed of the order (with the epoch: ``numpy.random.default_rng([seed, epoch])``).
        num_replicas: number of DDP ranks.
        rank: this process's rank.
        drop_last: drop the batches that do not fill the last round of ranks, instead of repeating the first ones.

    Raises:
        ValueError: a molecule has more atoms than ``max_atoms`` (named by index), or bad arguments.
    """

    def __init__(self, natoms: Sequence[int] | np.ndarray, max_atoms: int, *, shuffle: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False) -> None:
        natoms = np.asarray(natoms, dtype=np.int64)
        if natoms.ndim != 1 or len(natoms) == 0 or (natoms < 1).any():
            raise ValueError(f"natoms must be a non-empty 1-d array of positive atom counts; got shape {natoms.shape}")
        if max_atoms < 1:
            raise ValueError(f"max_atoms must be >= 1; got {max_atoms}")
        too_big = np.flatnonzero(natoms > max_atoms)
        if too_big.size:
            i = int(too_big[0])
            raise ValueError(f"molecule {i} has {int(natoms[i])} atoms, more than the batch budget max_atoms="
                             f"{max_atoms} ({too_big.size} such molecules); raise max_atoms to at least "
                             f"{int(natoms.max())}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas); got rank={rank}, num_replicas={num_replicas}")
        self.natoms = natoms
        self.max_atoms = int(max_atoms)
        self.sampler = EpochOrder(len(natoms), shuffle=shuffle, seed=seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (Lightning calls it on :attr:`sampler`; this is the same)."""
        self.sampler.set_epoch(epoch)

    def _rank_batches(self) -> list[np.ndarray]:
        epoch = self.sampler.epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        order = self.sampler.order()
        batches = [order[run] for run in pack_by_budget(self.natoms[order], self.max_atoms)]
        r = self.num_replicas
        if r > 1:
            if self.drop_last and len(batches) >= r:
                batches = batches[: len(batches) - len(batches) % r]
            else:
                batches = batches + [batches[i % len(batches)] for i in range((-len(batches)) % r)]
            totals = np.array([self.natoms[b].sum() for b in batches])
            ranked = np.argsort(-totals, kind="stable").reshape(-1, r)  # rounds of r batches of similar size
            if self.sampler.shuffle:
                ranked = ranked[np.random.default_rng([self.sampler.seed, epoch, 1]).permutation(len(ranked))]
            batches = [batches[i] for i in ranked[:, self.rank]]
        self._cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._rank_batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self._rank_batches())
