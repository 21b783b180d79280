"""Molecules with energies and forces as torch-geometric graphs: datasets, element references, the datamodules.

Data contract (every molecule datamodule, task, model and calculator of pointgeo keeps to it). A molecule is a
``torch_geometric.data.Data`` with

| key | shape, dtype | meaning |
|---|---|---|
| ``pos`` | ``(N, 3)`` float (``dtype``, default float32) | positions, Å |
| ``z`` | ``(N,)`` long | atomic numbers 1..118 |
| ``charge`` | ``(1,)`` long | total charge, elementary charges |
| ``spin`` | ``(1,)`` long | spin multiplicity 2S+1 (OMol25's convention; 1 = singlet) |
| ``energy`` | ``(1,)`` float64 | total energy, eV (as stored, **not** referenced) |
| ``energy_reference`` | ``(1,)`` float64 | Σ_i E0[z_i], the fitted per-element references of its atoms, eV |
| ``forces`` | ``(N, 3)`` float | forces, eV/Å (absent in the energy-only mode) |
| ``cell``, ``pbc`` | ``(1, 3, 3)`` float, ``(1, 3)`` bool | lattice rows and periodic directions (periodic rows only) |
| ``natoms`` | ``(1,)`` long | N |
| ``data_id`` | str | OMol25 subset (``""`` when unknown) |
| ``index`` | ``(1,)`` long | the row's index in its database (0-based over all shards) |

Batches are ``torch_geometric.data.Batch`` (``batch.batch (N_total,)``, ``batch.ptr``, per-graph fields ``(B,)``,
``cell (B, 3, 3)``). Which fields move under a rigid motion is :data:`MOLECULE_FIELDS`
(``pointgeo.geometry.apply_rigid_motion``).

Energy references: the training target of a potential is ``energy - energy_reference``, where the per-element
energies ``E0 (119,)`` (index = atomic number; :attr:`MoleculeDataModule.element_energies`) are the least-squares
fit ``min_E0 Σ_m (E_m - Σ_i E0[z_i])²`` over the **training** split only (NumPy ``lstsq``: the minimum-norm solution
when compositions are collinear, e.g. a set of one stoichiometry; elements absent from training get 0). They are
stored in the datamodule's ``state_dict`` (so in every checkpoint) and applied to every split.

Energies and references stay float64 whatever ``dtype`` the positions and forces take: OMol25's totals reach ~10⁵ eV,
where float32's spacing is 8 meV, more than the per-atom residual a potential learns. The residual is formed in
float64 (:func:`pointgeo.tasks.potential.target_energy`) and only then rounded to the network's dtype.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from pointgeo.datamodules.ase_readers import MAX_Z, AseDbReader, MoleculeRecord, RowConvention, SpinConvention
from pointgeo.datamodules.base import SplitLoaders, sample_seed
from pointgeo.datamodules.batching import AtomBudgetBatchSampler
from pointgeo.datamodules.release import DatasetNotFoundError, save_atomic
from pointgeo.download import cache_dir
from pointgeo.geometry import MOLECULE_FIELDS, apply_rigid_motion, sample_rotations

MoleculeRotation = Literal["none", "so3"]


class MoleculeData(Data):
    """A molecule of the data contract. Batching keeps ``index`` as the row index: torch-geometric would
    otherwise shift every key containing "index" by the atoms of the preceding molecules, as for ``edge_index``."""

    def __inc__(self, key: str, value, *args, **kwargs):
        return 0 if key == "index" else super().__inc__(key, value, *args, **kwargs)


def record_to_data(record: MoleculeRecord, index: int, *, dtype: torch.dtype = torch.float32,
                   element_energies: torch.Tensor | None = None) -> MoleculeData:
    """A :class:`MoleculeRecord` as a torch-geometric ``Data`` of the module's data contract."""
    z = torch.tensor(record.z, dtype=torch.long)
    data = MoleculeData(pos=torch.tensor(record.pos, dtype=dtype), z=z,
                charge=torch.tensor([record.charge], dtype=torch.long),
                spin=torch.tensor([record.spin], dtype=torch.long),
                energy=torch.tensor([record.energy], dtype=torch.float64),  # never rounded before the reference
                natoms=torch.tensor([len(z)], dtype=torch.long),
                index=torch.tensor([index], dtype=torch.long),
                data_id=record.data_id or "")
    reference = 0.0 if element_energies is None else float(element_energies.double()[z].sum())
    data.energy_reference = torch.tensor([reference], dtype=torch.float64)
    if record.forces is not None:
        data.forces = torch.tensor(record.forces, dtype=dtype)
    if record.cell is not None:
        data.cell = torch.tensor(record.cell, dtype=dtype).unsqueeze(0)
        data.pbc = torch.tensor(record.pbc, dtype=torch.bool).unsqueeze(0)
    return data


# --- the index of a database: sizes, energies, compositions, subsets (one scan, cached) ---------------------------
def _index_key(reader: AseDbReader, arrays: bool) -> str:
    files = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in reader.shards]
    settings = json.dumps([files, repr(reader.convention), arrays, 1], sort_keys=True)
    return hashlib.sha1(settings.encode()).hexdigest()[:16]


def build_index(reader: AseDbReader, cache: Path | None = None, *, arrays: bool = False,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Read every row once (checking it) and return ``natoms (R,)``, ``energy (R,)`` eV, ``charge (R,)``,
    ``spin (R,)``, ``z (ΣN,)`` (all rows' atomic numbers, concatenated) and ``data_id (R,)`` (str); with
    ``arrays`` also ``pos (ΣN, 3)``, ``forces (ΣN, 3)`` (NaN for rows without), ``has_forces (R,)``,
    ``cell (R, 3, 3)`` and ``pbc (R, 3)``, so that :class:`ArrayStore` serves the molecules from memory.

    With ``cache`` (a folder) the result is stored as ``<cache>/index_<key>.npz``, keyed by the shards' paths, sizes
    and modification times, the row convention and ``arrays``, written atomically; a later call reads it back.

    Raises:
        MoleculeRowError: the first bad row, named by file and row id (nothing is cached then).
    """
    path = None if cache is None else Path(cache) / f"index_{_index_key(reader, arrays)}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    columns: dict[str, list] = {k: [] for k in ("natoms", "energy", "charge", "spin", "z", "data_id", "pos",
                                                 "forces", "has_forces", "cell", "pbc")}
    bar = tqdm(reader.records(), total=len(reader), desc=f"indexing {reader.path.name}", disable=not progress,
               leave=False)
    for rec in bar:
        for key, value in (("natoms", len(rec.z)), ("energy", rec.energy), ("charge", rec.charge),
                           ("spin", rec.spin), ("z", rec.z.astype(np.uint8)), ("data_id", rec.data_id or "")):
            columns[key].append(value)
        if arrays:
            columns["pos"].append(rec.pos)
            columns["has_forces"].append(rec.forces is not None)
            columns["forces"].append(rec.forces if rec.forces is not None else np.full_like(rec.pos, np.nan))
            columns["cell"].append(rec.cell if rec.cell is not None else np.zeros((3, 3)))
            columns["pbc"].append(rec.pbc)
    index = {"natoms": np.asarray(columns["natoms"], dtype=np.int64),
             "energy": np.asarray(columns["energy"], dtype=np.float64),
             "charge": np.asarray(columns["charge"], dtype=np.int64),
             "spin": np.asarray(columns["spin"], dtype=np.int64),
             "z": np.concatenate(columns["z"]), "data_id": np.asarray(columns["data_id"], dtype=str)}
    if arrays:
        index.update(pos=np.concatenate(columns["pos"]), forces=np.concatenate(columns["forces"]),
                     has_forces=np.asarray(columns["has_forces"], dtype=bool), cell=np.stack(columns["cell"]),
                     pbc=np.stack(columns["pbc"]).astype(bool))
    if path is not None:
        save_atomic(path, index)
    return index


class ArrayStore:
    """The molecules of a database served from the arrays of :func:`build_index` (``arrays=True``)."""

    def __init__(self, index: dict[str, np.ndarray]) -> None:
        self.index = index
        self.offsets = np.concatenate([[0], np.cumsum(index["natoms"])])

    def __len__(self) -> int:
        return len(self.index["natoms"])

    def record(self, row: int) -> MoleculeRecord:
        """Molecule ``row`` as a :class:`MoleculeRecord`."""
        a, b = self.offsets[row], self.offsets[row + 1]
        idx = self.index
        pbc = idx["pbc"][row]
        return MoleculeRecord(z=idx["z"][a:b].astype(np.int64), pos=idx["pos"][a:b],
                              energy=float(idx["energy"][row]),
                              forces=idx["forces"][a:b] if idx["has_forces"][row] else None,
                              charge=int(idx["charge"][row]), spin=int(idx["spin"][row]),
                              cell=idx["cell"][row] if pbc.any() else None, pbc=pbc,
                              data_id=str(idx["data_id"][row]) or None)


def composition_counts(natoms: np.ndarray, z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), MAX_Z + 1)`` counts of each element in the selected molecules (``z`` concatenated by
    ``natoms``)."""
    offsets = np.concatenate([[0], np.cumsum(natoms)])
    sizes = natoms[rows]
    atom = np.repeat(offsets[rows], sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    molecule = np.repeat(np.arange(len(rows)), sizes)
    counts = np.zeros((len(rows), MAX_Z + 1), dtype=np.float64)
    np.add.at(counts, (molecule, z[atom].astype(np.int64)), 1.0)
    return counts


def fit_element_energies(counts: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Per-element reference energies ``E0 (MAX_Z + 1,)``: least squares ``counts @ E0 ≈ energy`` (minimum norm;
    elements that never occur get 0)."""
    present = counts.any(axis=0)
    e0 = np.zeros(counts.shape[1], dtype=np.float64)
    if present.any():
        e0[present] = np.linalg.lstsq(counts[:, present], energy, rcond=None)[0]
    return e0


class MoleculeDataset(Dataset):
    """Molecules ``rows`` of a database as ``Data`` (the module's contract).

    Args:
        store: the database, read row by row (workers re-open its files), or its rows held in memory.
        rows: row indices of this split.
        natoms: their atom counts (for the batch sampler).
        dtype: floating dtype of positions, forces and cells (energies and references are always float64).
        element_energies: ``(MAX_Z + 1,)`` references giving ``energy_reference``.
        rotation: ``none`` or ``so3``; with ``fixed_seed`` the rotation of row ``i`` is fixed from ``(seed, i)``,
            without it it is fresh at every access (training augmentation).
    """

    fields = MOLECULE_FIELDS

    def __init__(self, store: AseDbReader | ArrayStore, rows: np.ndarray, natoms: np.ndarray, *, dtype: torch.dtype,
                 element_energies: torch.Tensor | None, rotation: MoleculeRotation = "none",
                 fixed_seed: int | None = None) -> None:
        if rotation not in ("none", "so3"):
            raise ValueError(f"rotation must be 'none' or 'so3'; got {rotation!r}")
        self.store, self.rows, self.natoms = store, np.asarray(rows, dtype=np.int64), np.asarray(natoms)
        self.dtype, self.element_energies = dtype, element_energies
        self.rotation, self.fixed_seed = rotation, fixed_seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        data = record_to_data(self.store.record(row), row, dtype=self.dtype, element_energies=self.element_energies)
        if self.rotation == "none":
            return data
        seed = sample_seed(self.fixed_seed, row) if self.fixed_seed is not None else int(torch.randint(2**62, ()))
        rot = sample_rotations("so3", 1, generator=torch.Generator().manual_seed(seed))
        return apply_rigid_motion(data, self.fields, rot)


def _collate(items: list[MoleculeData]) -> Batch:
    return Batch.from_data_list(items)


class MoleculeDataModule(SplitLoaders, pl.LightningDataModule):
    """Molecules with energies and forces from ASE databases, in batches bounded by total atoms.

    Args:
        path: the training database: a ``.aselmdb``/``.db``/``.json`` file, a directory of ``.aselmdb`` shards, or a
            list of these (read as one set).
        val_path: the official validation split (``None``: ``val_fraction`` of ``path`` is held out, seeded).
        test_path: the test split (``None``: ``test_fraction`` of ``path`` is held out, seeded).
        val_fraction, test_fraction: fractions of ``path`` carved out when ``val_path`` / ``test_path`` are not given.
        data_ids: keep only rows of these subsets (OMol25's ``data_id``; from ``metadata.npz`` or the rows).
        max_rows: use at most this many rows of ``path`` (a seeded subset, for quick runs).
        max_atoms: atom budget of a batch (no batch holds more atoms).
        charge_key, spin_key, spin_convention, default_charge, default_spin, energy_key, forces_key, require_forces,
            data_id_key, energy_scale, min_distance: the :class:`RowConvention` (how rows map onto molecules).
        energy_references: ``fit`` (least squares on the training split) or ``none`` (E0 = 0).
        dtype: ``float32`` or ``float64`` positions, forces and cells (energies are always float64).
        train_rotation: ``none`` or ``so3`` (a fresh Haar rotation per molecule and access, as augmentation).
        test_rotation: ``none`` or ``so3`` (fixed per row from the seed).
        in_memory: hold every molecule in memory after one cached scan (``None``: SQLite/JSON files, and
            ``.aselmdb`` splits whose ``metadata.npz`` counts at most :attr:`IN_MEMORY_ATOMS` atoms).
        num_workers: loader worker processes.
        seed: seed of the splits, the batch order and the fixed rotations.
        cache: folder of the row index (default ``$POINTGEO_HOME/processed/molecules``).

    Under DDP set ``trainer.use_distributed_sampler: false``: the batch sampler shards across ranks itself
    (:mod:`pointgeo.datamodules.batching`). Autograd forces need ``trainer.inference_mode: false``.
    """

    name = "molecules"
    fields = MOLECULE_FIELDS
    IN_MEMORY_ATOMS = 2_000_000
    """``in_memory=None`` keeps an ``.aselmdb`` split in memory when ``metadata.npz`` counts at most this many atoms."""

    def __init__(
        self,
        path: str | list[str],
        val_path: str | None = None,
        test_path: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        data_ids: list[str] | None = None,
        max_rows: int | None = None,
        max_atoms: int = 2000,
        charge_key: str = "charge",
        spin_key: str = "spin",
        spin_convention: SpinConvention = "multiplicity",
        default_charge: int | None = None,
        default_spin: int | None = None,
        energy_key: str = "energy",
        forces_key: str = "forces",
        require_forces: bool = True,
        data_id_key: str = "data_id",
        energy_scale: float = 1.0,
        min_distance: float = 0.1,
        energy_references: Literal["fit", "none"] = "fit",
        dtype: Literal["float32", "float64"] = "float32",
        train_rotation: MoleculeRotation = "none",
        test_rotation: MoleculeRotation = "none",
        in_memory: bool | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ValueError(f"{key} must be in [0, 1); got {value}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1; got {val_fraction} + {test_fraction}")
        if energy_references not in ("fit", "none"):
            raise ValueError(f"energy_references must be 'fit' or 'none'; got {energy_references!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
        for key, mode in (("train_rotation", train_rotation), ("test_rotation", test_rotation)):
            if mode not in ("none", "so3"):
                raise ValueError(f"{key} must be 'none' or 'so3'; got {mode!r}")
        if max_atoms < 1:
            raise ValueError(f"max_atoms must be >= 1; got {max_atoms}")
        self.path, self.val_path, self.test_path = path, val_path, test_path
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.data_ids = list(data_ids) if data_ids is not None else None
        self.max_rows, self.max_atoms = max_rows, max_atoms
        self.convention = RowConvention(charge_key=charge_key, spin_key=spin_key, spin_convention=spin_convention,
                                        default_charge=default_charge, default_spin=default_spin,
                                        energy_key=energy_key, forces_key=forces_key, require_forces=require_forces,
                                        data_id_key=data_id_key, energy_scale=energy_scale,
                                        min_distance=min_distance)
        self.energy_references = energy_references
        self.dtype = getattr(torch, dtype)
        self.train_rotation, self.test_rotation = train_rotation, test_rotation
        self.in_memory, self.num_workers, self.seed = in_memory, num_workers, seed
        self.cache = Path(cache).expanduser() if cache else cache_dir() / "processed" / "molecules"
        self.element_energies: torch.Tensor | None = None
        """``(MAX_Z + 1,)`` float64 per-element reference energies (eV), fitted on the training split."""
        self._splits: dict[str, tuple[AseDbReader | ArrayStore, np.ndarray, np.ndarray]] = {}

    def __str__(self) -> str:
        """A short description; Lightning's default builds every dataloader, which would index the databases."""
        return f"{type(self).__name__}(path={self.path!r})"

    # --- reading -----------------------------------------------------------------------------------------------
    def _open(self, path: str | list[str], *, energies: bool) -> tuple[AseDbReader | ArrayStore, dict[str, np.ndarray]]:
        """The molecules of ``path`` and their index.

        In memory (``in_memory``, by default for SQLite/JSON files and for databases of at most
        :attr:`IN_MEMORY_ATOMS` atoms in ``metadata.npz``): one cached scan of every row, served from arrays.
        Otherwise rows are read from the files as they are needed, and the index comes from ``metadata.npz`` alone
        when it has what is needed (sizes, and subsets when filtering by ``data_ids``; rows are then checked as they
        are read), else from one cached scan (``energies``: the training split, for the element references).
        """
        reader = AseDbReader(self._resolve(path), self.convention)
        meta = reader.metadata()
        in_memory = self.in_memory
        if in_memory is None:
            lmdb = any(shard.suffix == ".aselmdb" for shard in reader.shards)
            in_memory = not lmdb or (meta is not None and int(meta["natoms"].sum()) <= self.IN_MEMORY_ATOMS)
        if in_memory:
            index = build_index(reader, self.cache, arrays=True)
            return ArrayStore(index), index
        if meta is not None and not energies and (self.data_ids is None or "data_ids" in meta):
            data_id = meta["data_ids"].astype(str) if "data_ids" in meta else np.full(len(reader), "")
            return reader, {"natoms": meta["natoms"].astype(np.int64), "data_id": data_id}
        return reader, build_index(reader, self.cache)

    def _resolve(self, path: str | list[str]) -> Path | list[Path]:
        """The on-disk location of ``path`` (subclasses map split names to folders and explain missing data)."""
        return Path(path).expanduser() if isinstance(path, str) else [Path(p).expanduser() for p in path]

    def _rows(self, index: dict[str, np.ndarray], what: str) -> np.ndarray:
        rows = np.arange(len(index["natoms"]))
        if self.data_ids is not None:
            rows = rows[np.isin(index["data_id"], self.data_ids)]
            if len(rows) == 0:
                found = sorted(set(index["data_id"].tolist()))
                raise ValueError(f"{what}: no row has a data_id in {self.data_ids}; the data_ids present are {found}")
        return rows

    def setup(self, stage: str | None = None) -> None:
        """Index the databases (once; cached), carve the splits and fit the element references on training."""
        if self._splits:
            return
        reader, index = self._open(self.path, energies=self.energy_references == "fit")
        rows = self._rows(index, self.path)
        rng = np.random.default_rng(self.seed)
        if self.max_rows is not None and self.max_rows < len(rows):
            rows = np.sort(rng.choice(rows, self.max_rows, replace=False))
        perm = rng.permutation(rows)
        n_test = 0 if self.test_path else int(round(len(rows) * self.test_fraction))
        n_val = 0 if self.val_path else int(round(len(rows) * self.val_fraction))
        if len(rows) - n_test - n_val < 1:
            raise ValueError(f"{self.path}: {len(rows)} rows leave none for training after the validation and "
                             f"test fractions")
        carved = {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
                  "train": np.sort(perm[n_test + n_val:])}
        for split in ("train", "val", "test"):
            other = {"val": self.val_path, "test": self.test_path}.get(split)
            if other:
                r, idx = self._open(other, energies=False)
                self._splits[split] = (r, self._rows(idx, other), idx["natoms"])
            else:
                self._splits[split] = (reader, carved[split], index["natoms"])
        train_rows = carved["train"]
        if self.element_energies is None:
            if self.energy_references == "fit":
                counts = composition_counts(index["natoms"], index["z"], train_rows)
                e0 = fit_element_energies(counts, index["energy"][train_rows])
            else:
                e0 = np.zeros(MAX_Z + 1)
            self.element_energies = torch.from_numpy(e0)

    def state_dict(self) -> dict:
        """The fitted element references (saved in every checkpoint)."""
        return {} if self.element_energies is None else {"element_energies": self.element_energies.tolist()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the element references of a checkpoint (they are not refitted)."""
        if "element_energies" in state_dict:
            self.element_energies = torch.tensor(state_dict["element_energies"], dtype=torch.float64)

    def split_sizes(self) -> dict[str, int]:
        """Molecules per split (after :meth:`setup`)."""
        return {split: len(rows) for split, (_, rows, _) in self._splits.items()}

    def dataset(self, split: str) -> MoleculeDataset:
        """The molecules of ``train``, ``val`` or ``test``."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
        self.setup()
        reader, rows, natoms = self._splits[split]
        if len(rows) == 0:
            raise ValueError(f"the {split} split of {self.path} is empty (set {split}_fraction > 0 or "
                             f"{split}_path)")
        rotation = self.train_rotation if split != "test" else self.test_rotation
        fixed = None if split == "train" else sample_seed(self.seed, {"val": 1, "test": 2}[split])
        return MoleculeDataset(reader, rows, natoms[rows], dtype=self.dtype, element_energies=self.element_energies,
                               rotation=rotation, fixed_seed=fixed)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        replicas, rank = self._world()
        sampler = AtomBudgetBatchSampler(dataset.natoms, self.max_atoms, shuffle=split == "train", seed=self.seed,
                                         num_replicas=replicas, rank=rank)
        spawn = self.num_workers > 0 and getattr(dataset.store, "needs_spawn", False)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, multiprocessing_context="spawn" if spawn else None)

    def set_test_rotation(self, mode: MoleculeRotation) -> None:
        """Switch the test split's rotation (``none`` or ``so3``)."""
        if mode not in ("none", "so3"):
            raise ValueError(f"test_rotation must be 'none' or 'so3'; got {mode!r}")
        self.test_rotation = mode


OMOL25_URL = "https://huggingface.co/facebook/OMol25"


class OMol25DataModule(MoleculeDataModule):
    """OMol25 (Levine et al., arXiv:2505.08762; CC BY 4.0) from its ``.aselmdb`` split folders.

    The data are gated: log in to Hugging Face, accept the terms at https://huggingface.co/facebook/OMol25,
    download a split archive (e.g. ``train_4M.tar.gz``, ``val.tar.gz``) and extract it so that
    ``$POINTGEO_HOME/datasets/omol25/<split>/`` holds the shards (``*.aselmdb``, optionally ``metadata.npz``).
    pointgeo never downloads them.

    Args:
        split: the training split folder name (``train_4M``, ``train_neutral``, ``train_all`` ...) or a path.
        val_split: the validation split folder (``val``) or a path; ``None`` carves ``val_fraction`` from training.
        test_split: the split tested by ``pointgeo test`` (e.g. ``val``: OMol25's test labels are hidden);
            ``None`` carves ``test_fraction`` from training.
        root: the folder holding the split folders (default ``$POINTGEO_HOME/datasets/omol25``).
        **kwargs: the :class:`MoleculeDataModule` options (``max_atoms``, ``data_ids``, ...). OMol25 rows carry
            ``charge`` and ``spin`` (2S+1) in their data, total energies (eV) and forces (eV/Å).
    """

    name = "omol25"

    def __init__(self, split: str = "train_4M", val_split: str | None = "val", test_split: str | None = None,
                 root: str | None = None, test_fraction: float = 0.0, max_atoms: int = 2000, **kwargs) -> None:
        self.root = Path(root).expanduser() if root else cache_dir() / "datasets" / "omol25"
        super().__init__(path=split, val_path=val_split, test_path=test_split, test_fraction=test_fraction,
                         max_atoms=max_atoms, **kwargs)

    def _resolve(self, path: str | list[str]) -> Path | list[Path]:
        if not isinstance(path, str):
            return [self._resolve(p) for p in path]  # type: ignore[misc]
        candidate = Path(path).expanduser()
        folder = candidate if candidate.is_absolute() or candidate.exists() else self.root / path
        if not folder.exists():
            raise DatasetNotFoundError(
                f"OMol25 split {path!r} is not in {folder}. OMol25 is gated: log in to Hugging Face, accept the "
                f"terms at {OMOL25_URL}, download {Path(path).name}.tar.gz and extract it so that {folder}/ holds "
                f"its *.aselmdb shards (pass root=... to use another folder).")
        return folder


def element_energies_table(e0: torch.Tensor) -> dict[str, float]:
    """The non-zero references as ``{symbol: eV}`` (for logs and reports)."""
    from ase.data import chemical_symbols  # noqa: PLC0415

    return {chemical_symbols[z]: float(e0[z]) for z in range(1, len(e0)) if e0[z] != 0}


__all__ = ["MOLECULE_FIELDS", "ArrayStore", "MoleculeData", "MoleculeDataModule", "MoleculeDataset",
           "OMol25DataModule", "build_index", "composition_counts", "element_energies_table", "fit_element_energies",
           "record_to_data"]

