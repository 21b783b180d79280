"""Periodic crystals of the CDVAE benchmarks (perov_5, carbon_24, mp_20) as torch-geometric graphs: reading the
official CSVs, CDVAE's preprocessing, the scalers, the datamodule.

The CSVs (Xie et al., ICLR 2022, github.com/txie-93/cdvae, ``data/<name>/{train,val,test}.csv``) hold one crystal a
row: a pymatgen-written P1 CIF string (column ``cif``), an id (``material_id``) and property columns. Each row is
read as CDVAE reads it (``cdvae/common/data_utils.py``, ``build_crystal``): ``Structure.from_str(cif, fmt="cif")``,
the primitive cell if ``primitive``, the Niggli-reduced cell if ``niggli`` (pymatgen's ``get_reduced_structure``),
and the cell rebuilt from its six parameters (:func:`pointgeo.geometry.lattice_params_to_matrix`, pymatgen's
convention), so that every crystal comes in one canonical orientation with its fractional coordinates unchanged.

Data contract. A crystal is a ``torch_geometric.data.Data`` (:class:`CrystalData`) with

| key | shape, dtype | meaning |
|---|---|---|
| ``frac_coords`` | ``(N, 3)`` float | fractional coordinates (as the reduced cell gives them, in ``[0, 1]``) |
| ``z`` | ``(N,)`` long | atomic numbers ``1..max_z`` |
| ``cell`` | ``(1, 3, 3)`` float | lattice vectors as rows, Å (rotated by a rotation; see :data:`CRYSTAL_FIELDS`) |
| ``lengths``, ``angles`` | ``(1, 3)`` float | lattice parameters, Å and degrees (invariant) |
| ``natoms`` | ``(1,)`` long | N |
| ``y`` | ``(1, P)`` float | the property columns ``properties``, as stored (not standardised) |
| ``index`` | ``(1,)`` long | the row's position in its CSV (0-based) |

Cartesian positions are ``frac_coords @ cell`` (``pointgeo.geometry.frac_to_cart``), never stored, so rotating a
crystal turns its cell and leaves its fractional coordinates alone. Batches are ``torch_geometric.data.Batch``.

Scalers (fitted on the **training** split only, stored in the datamodule's ``state_dict``): :attr:`lattice_scaler`
standardises CDVAE's lattice target ``[a, b, c] / N^(1/3) ‖ [α, β, γ]`` (:func:`lattice_features`),
:attr:`property_scaler` the property columns; mean and population standard deviation + 1e-5, as CDVAE's
``StandardScalerTorch``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import multiprocessing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Batch, Data

from pointgeo.datamodules.base import SplitLoaders, sample_seed
from pointgeo.datamodules.batching import EpochOrder
from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.datamodules.release import DatasetNotFoundError, load_processed, processed_path, save_atomic
from pointgeo.download import DownloadError, cache_dir, download
from pointgeo.geometry import (
    CRYSTAL_FIELDS,
    apply_rigid_motion,
    lattice_features,
    lattice_params_to_matrix,
    periodic_radius_graph,
    sample_rotations,
)

CrystalRotation = Literal["none", "so3"]
SPLITS = ("train", "val", "test")
CDVAE_COMMIT = "f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea"
"""The commit of txie-93/cdvae whose ``data/`` folder the URLs point to."""
PROCESSING_VERSION = 1
"""Part of the processed cache's key: bump it when the preprocessing changes."""


@dataclass(frozen=True)
class CrystalBenchmark:
    """One of CDVAE's datasets: its property column, atom limit and the sha256 of its official CSVs."""

    name: str
    prop: str
    max_atoms: int
    sha256: Mapping[str, str]

    def url(self, split: str) -> str:
        """The official file of ``split``."""
        return f"https://raw.githubusercontent.com/txie-93/cdvae/{CDVAE_COMMIT}/data/{self.name}/{split}.csv"


BENCHMARKS: dict[str, CrystalBenchmark] = {
    "perov_5": CrystalBenchmark("perov_5", "heat_ref", 20, {
        "train": "99cc012c21f5670a3d70d53781e1c4f20a9748a2f54945012db7bec5b563af4c",
        "val": "326f401219901270374b71e2faff63df3a29a99fd26f469993b9f476b693daf2",
        "test": "a85878c685037f0a578257f6d4fcdde00e968dbab73c5f1e90ecef65218513f6"}),
    "carbon_24": CrystalBenchmark("carbon_24", "energy_per_atom", 24, {
        "train": "de142c40617954a8b56c66a98bffb1a541abba69c79020067083c74dc445fa5f",
        "val": "36c00689cd63073c954a58bc6ed6e2adb7aeed5a630c994970959a1babffd50e",
        "test": "386b17c08816f434818d51e46687bf72ff3f92348f3ba24823e4758f1fe8a969"}),
    # mp_20's hashes are those of the Git-LFS copy of the original split in gabeguo/cdvae_xrd (byte identity with
    # the official blobs could not be checked; a mismatch is reported by pointgeo.download as a ChecksumError).
    "mp_20": CrystalBenchmark("mp_20", "formation_energy_per_atom", 20, {
        "train": "133bab58dba02d316f9f91174839f17802dce648be4e8659d1a42b32b97fa01d",
        "val": "7b5f4085464b3eac9fd2123acee97ec372214004ce7e983b535b33395abc3e29",
        "test": "dd605c7543cf95a13e150aed630d0915e74edc8dea17e85301ee6fbfeb7f500a"}),
}


class CrystalRowError(DatasetFileError):
    """A row of a crystal CSV cannot be used; the message names the file, the row and what is wrong."""


@dataclass(frozen=True)
class Preprocessing:
    """How a CIF string becomes a crystal (the processed cache is keyed by all of it)."""

    niggli: bool = True
    primitive: bool = False
    max_atoms: int = 20
    max_z: int = 100
    min_distance: float = 0.5


def _require_pymatgen() -> None:
    try:
        import pymatgen.core  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ImportError("crystal datasets need pymatgen: pip install 'pointgeo[crystals]'") from exc


def parse_cif(cif: str, settings: Preprocessing, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One CIF string as CDVAE preprocesses it: ``(z (N,), frac (N, 3), lengths (3,), angles (3,))``.

    Raises:
        CrystalRowError: pymatgen cannot parse it, it holds no atoms, partial occupancies or an element outside
            ``1..max_z``, more than ``max_atoms`` atoms, or a singular lattice (``where`` names the row).
    """
    from pymatgen.core import Element, Lattice, Structure  # noqa: PLC0415

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(cif, fmt="cif")
    except Exception as exc:  # noqa: BLE001  (pymatgen raises many types for a bad CIF)
        parameters = _cif_parameters(cif)  # pymatgen refuses a singular cell with a generic message: say so
        if parameters is not None:
            _check_lattice(Lattice.from_parameters(*parameters).matrix, where)
        raise CrystalRowError(f"{where}: pymatgen cannot parse the CIF ({type(exc).__name__}: {exc})") from exc
    if len(structure) == 0:
        raise CrystalRowError(f"{where}: the CIF holds no atoms")
    if not structure.is_ordered:
        raise CrystalRowError(f"{where}: the CIF has partially occupied sites ({structure.composition}); "
                              "only ordered crystals are supported")
    zs = []
    for site in structure:
        specie = site.specie
        element = getattr(specie, "element", specie)
        if not isinstance(element, Element) or not 1 <= element.Z <= settings.max_z:
            raise CrystalRowError(f"{where}: element {specie} is outside the vocabulary Z = 1..{settings.max_z}")
        zs.append(element.Z)
    _check_lattice(structure.lattice.matrix, where)
    try:
        if settings.primitive:
            structure = structure.get_primitive_structure()
        if settings.niggli:
            structure = structure.get_reduced_structure()
        lengths, angles = np.array(structure.lattice.abc), np.array(structure.lattice.angles)
        canonical = Structure(Lattice.from_parameters(*lengths, *angles), structure.species, structure.frac_coords,
                              coords_are_cartesian=False)
    except Exception as exc:  # noqa: BLE001
        raise CrystalRowError(f"{where}: the cell cannot be reduced ({type(exc).__name__}: {exc})") from exc
    if len(canonical) > settings.max_atoms:
        raise CrystalRowError(f"{where}: {len(canonical)} atoms, more than max_atoms={settings.max_atoms}")
    z = np.array([site.specie.Z for site in canonical], dtype=np.int64)
    return z, np.asarray(canonical.frac_coords, dtype=np.float64), lengths, angles


def _check_lattice(matrix: np.ndarray, where: str) -> None:
    """Refuse a cell whose volume is not positive (relative to ``abc``: ``det L > 10⁻⁶ abc``)."""
    volume = float(np.linalg.det(matrix)) if np.isfinite(matrix).all() else float("nan")
    scale = float(np.prod(np.linalg.norm(matrix, axis=1)))
    if not volume > 1e-6 * scale:
        lengths = np.linalg.norm(matrix, axis=1).round(4).tolist()
        raise CrystalRowError(f"{where}: the lattice is singular or has a negative volume (det = {volume:.3g} Å³, "
                              f"lattice vector lengths {lengths} Å)")


def _cif_parameters(cif: str) -> list[float] | None:
    """The six ``_cell_*`` values of a CIF's first block, or ``None`` where they cannot be read."""
    from pymatgen.io.cif import CifFile, str2float  # noqa: PLC0415

    keys = [f"_cell_length_{x}" for x in "abc"] + [f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")]
    try:
        block = next(iter(CifFile.from_str(cif).data.values())).data
        return [str2float(block[key]) for key in keys]
    except Exception:  # noqa: BLE001  (then the parse error is the one to report)
        return None


def _parse_row(args: tuple[str, Preprocessing, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return parse_cif(*args)


def read_crystal_csv(path: Path, properties: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """The CIF strings, material ids and ``(R, P)`` float64 property values of a CDVAE CSV.

    Raises:
        DatasetFileError: the file is not a CSV with a ``cif`` column, or is empty.
        CrystalRowError: a property column is missing (the message lists the columns there are) or a value is not
            a number.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"{path}: not a readable UTF-8 CSV ({type(exc).__name__}: {exc})") from exc
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as exc:
        raise DatasetFileError(f"{path}: not a CSV ({exc})") from exc
    if "cif" not in header:
        raise DatasetFileError(f"{path}: no 'cif' column (columns: {header}); not a CDVAE crystal CSV")
    missing = [p for p in properties if p not in header]
    if missing:
        usable = [c for c in header if c not in ("", "cif", "material_id")]
        raise CrystalRowError(f"{path}: unknown property column(s) {missing}; the file has {usable}")
    if not rows:
        raise DatasetFileError(f"{path}: no rows")
    values = np.empty((len(rows), len(properties)), dtype=np.float64)
    for r, row in enumerate(rows):
        for p, name in enumerate(properties):
            try:
                values[r, p] = float(row[name])
            except (TypeError, ValueError):
                raise CrystalRowError(f"{path}, row {r} (material_id {row.get('material_id')!r}): property {name!r} "
                                      f"is {row[name]!r}, not a number") from None
            if not math.isfinite(values[r, p]):
                raise CrystalRowError(f"{path}, row {r} (material_id {row.get('material_id')!r}): property {name!r} "
                                      f"is {row[name]!r}")
    return [row["cif"] or "" for row in rows], [row.get("material_id") or str(r) for r, row in enumerate(rows)], values


def process_csv(path: Path, properties: Sequence[str], settings: Preprocessing,
                workers: int = 1) -> dict[str, np.ndarray]:
    """Every row of a CDVAE CSV, preprocessed and checked: the arrays of the processed cache.

    Returns ``natoms (R,)``, ``z (ΣN,)``, ``frac (ΣN, 3)``, ``lengths (R, 3)``, ``angles (R, 3)`` (float64),
    ``y (R, P)``, ``material_id (R,)`` (str).

    Raises:
        CrystalRowError: the first bad row (see :func:`parse_cif`), or two atoms (or an atom and its own image)
            closer than ``min_distance`` — checked for all rows at once with one periodic radius graph.
    """
    _require_pymatgen()
    cifs, ids, y = read_crystal_csv(path, properties)
    jobs = [(cif, settings, f"{path}, row {r} (material_id {ids[r]!r})") for r, cif in enumerate(cifs)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parsed = pool.map(_parse_row, jobs, chunksize=64)
    else:
        parsed = [_parse_row(job) for job in jobs]
    z = [p[0] for p in parsed]
    arrays = {"natoms": np.array([len(a) for a in z], dtype=np.int64), "z": np.concatenate(z),
              "frac": np.concatenate([p[1] for p in parsed]), "lengths": np.stack([p[2] for p in parsed]),
              "angles": np.stack([p[3] for p in parsed]), "y": y, "material_id": np.array(ids, dtype=str)}
    _check_overlaps(arrays, settings.min_distance, lambda r: jobs[r][2])
    return arrays


def _check_overlaps(arrays: Mapping[str, np.ndarray], min_distance: float, where) -> None:
    if min_distance <= 0:
        return
    natoms = torch.from_numpy(arrays["natoms"])
    batch = torch.repeat_interleave(torch.arange(len(natoms)), natoms)
    cell = lattice_params_to_matrix(torch.from_numpy(arrays["lengths"]), torch.from_numpy(arrays["angles"]))
    nl = periodic_radius_graph(torch.from_numpy(arrays["frac"]), cell, min_distance, batch)
    if nl.distances.numel():
        i, j = nl.edge_index[:, 0].tolist()
        row = int(batch[i])
        first = int(torch.cumsum(natoms, 0)[row] - natoms[row])
        what = "its own periodic image" if i == j else f"atom {j - first}"
        raise CrystalRowError(f"{where(row)}: atom {i - first} is {float(nl.distances[0]):.3f} Å from {what} "
                              f"(overlapping atoms: closer than min_distance={min_distance} Å)")


def _checked(arrays: Mapping[str, np.ndarray], num_properties: int) -> dict[str, np.ndarray]:
    """The cache's arrays, refused with ``ValueError`` when they do not fit together (then rebuilt)."""
    natoms = arrays["natoms"]
    total, rows = int(natoms.sum()), len(natoms)
    shapes = {"z": (total,), "frac": (total, 3), "lengths": (rows, 3), "angles": (rows, 3),
              "y": (rows, num_properties), "material_id": (rows,)}
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape}")
    return dict(arrays)


@dataclass
class StandardScaler:
    """``(x − mean) / std`` per column; ``std`` is the population standard deviation + 1e-5 (CDVAE's)."""

    mean: Tensor
    std: Tensor

    EPSILON = 1e-5

    @classmethod
    def fit(cls, x: Tensor) -> StandardScaler:
        """Fit on ``x (R, C)``."""
        x = x.double()
        return cls(x.mean(0), x.std(0, correction=0) + cls.EPSILON)

    def transform(self, x: Tensor) -> Tensor:
        """``(… , C)`` standardised."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse_transform(self, x: Tensor) -> Tensor:
        """``(… , C)`` back in the original units."""
        return x * self.std.to(x) + self.mean.to(x)

    def state(self) -> dict[str, list[float]]:
        """A plain-list form (for checkpoints)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Sequence[float]]) -> StandardScaler:
        """The scaler of :meth:`state`."""
        return cls(torch.tensor(state["mean"], dtype=torch.float64), torch.tensor(state["std"], dtype=torch.float64))


class CrystalData(Data):
    """A crystal of the data contract; batching keeps ``index`` as the row index (not shifted like an edge index)."""

    def __inc__(self, key: str, value, *args, **kwargs):
        return 0 if key == "index" else super().__inc__(key, value, *args, **kwargs)


class CrystalDataset(Dataset):
    """The crystals of one split as :class:`CrystalData`.

    Args:
        arrays: the split's processed arrays (:func:`process_csv`).
        dtype: floating dtype of coordinates, cells and properties.
        rotation: ``none`` or ``so3``; with ``fixed_seed`` the rotation of row ``i`` is fixed from ``(seed, i)``,
            without it it is fresh at every access (augmentation). Only the cell turns (:data:`CRYSTAL_FIELDS`).
    """

    fields = CRYSTAL_FIELDS

    def __init__(self, arrays: Mapping[str, np.ndarray], *, dtype: torch.dtype = torch.float32,
                 rotation: CrystalRotation = "none", fixed_seed: int | None = None) -> None:
        if rotation not in ("none", "so3"):
            raise ValueError(f"rotation must be 'none' or 'so3'; got {rotation!r}")
        self.arrays, self.dtype, self.rotation, self.fixed_seed = arrays, dtype, rotation, fixed_seed
        self.natoms = arrays["natoms"]
        self.offsets = np.concatenate([[0], np.cumsum(self.natoms)])
        self.cells = lattice_params_to_matrix(torch.from_numpy(arrays["lengths"]), torch.from_numpy(arrays["angles"]))

    def __len__(self) -> int:
        return len(self.natoms)

    def __getitem__(self, i: int) -> CrystalData:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        arr, dt = self.arrays, self.dtype
        data = CrystalData(frac_coords=torch.tensor(arr["frac"][a:b], dtype=dt),
                           z=torch.tensor(arr["z"][a:b], dtype=torch.long),
                           cell=self.cells[i].to(dt).unsqueeze(0),
                           lengths=torch.tensor(arr["lengths"][i:i + 1], dtype=dt),
                           angles=torch.tensor(arr["angles"][i:i + 1], dtype=dt),
                           natoms=torch.tensor([b - a], dtype=torch.long),
                           y=torch.tensor(arr["y"][i:i + 1], dtype=dt),
                           index=torch.tensor([i], dtype=torch.long), num_nodes=b - a)
        if self.rotation == "none":
            return data
        seed = sample_seed(self.fixed_seed, i) if self.fixed_seed is not None else int(torch.randint(2**62, ()))
        rot = sample_rotations("so3", 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return apply_rigid_motion(data, self.fields, rot)


def _collate(items: list[CrystalData]) -> Batch:
    return Batch.from_data_list(items)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CrystalDataModule(SplitLoaders, pl.LightningDataModule):
    """CDVAE's crystal benchmarks (perov_5, carbon_24, mp_20) from their official CSVs.

    Args:
        dataset: ``perov_5``, ``carbon_24`` or ``mp_20`` (sets the default property, ``max_atoms`` and the
            official URLs and sha256 of the files).
        root: the folder holding ``train.csv``, ``val.csv``, ``test.csv`` (default
            ``$POINTGEO_HOME/datasets/cdvae/<dataset>``). Missing files are downloaded there (verified against the
            official sha256) unless ``download`` is false or ``POINTGEO_OFFLINE`` is set; files already there are
            used as they are (e.g. a subset of the official rows).
        properties: property columns carried as ``y`` (default: the benchmark's, e.g. ``heat_ref``).
        max_atoms: most atoms a crystal may have (default: the benchmark's, 20 or 24); a larger one is an error.
        niggli, primitive: CDVAE's preprocessing (defaults ``true``, ``false`` as in its data configs).
        max_z: atomic numbers allowed (CDVAE's type vocabulary is 1..100).
        min_distance: atoms closer than this (Å), to another atom or to their own image, are an error.
        batch_size, eval_batch_size: crystals per training / validation and test batch (CDVAE: 512 or 256, 256).
        train_rotation: ``none`` or ``so3`` (a fresh rotation of the cell per crystal and access).
        test_rotation: ``none`` or ``so3`` (fixed per row from the seed), also for validation.
        dtype: ``float32`` or ``float64``.
        download: fetch missing official files.
        preprocess_workers: processes that parse the CIFs on the first use (then cached).
        num_workers: loader worker processes.
        seed: seed of the training order and of the fixed rotations.
        cache: the processed arrays go to ``<cache>/processed/<dataset>_<split>_<key>.npz`` (default
            ``$POINTGEO_HOME/datasets/cdvae``), the key a hash of the CSV's sha256, the properties and the
            preprocessing settings.
    """

    fields = CRYSTAL_FIELDS

    def __init__(
        self,
        dataset: str = "perov_5",
        root: str | None = None,
        properties: list[str] | None = None,
        max_atoms: int | None = None,
        niggli: bool = True,
        primitive: bool = False,
        max_z: int = 100,
        min_distance: float = 0.5,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        train_rotation: CrystalRotation = "none",
        test_rotation: CrystalRotation = "none",
        dtype: Literal["float32", "float64"] = "float32",
        download: bool = True,
        preprocess_workers: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        cache: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dataset not in BENCHMARKS:
            raise ValueError(f"dataset must be one of {sorted(BENCHMARKS)}; got {dataset!r}")
        for key, mode in (("train_rotation", train_rotation), ("test_rotation", test_rotation)):
            if mode not in ("none", "so3"):
                raise ValueError(f"{key} must be 'none' or 'so3'; got {mode!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
        self.benchmark = BENCHMARKS[dataset]
        max_atoms = self.benchmark.max_atoms if max_atoms is None else max_atoms
        for key, value in (("max_atoms", max_atoms), ("max_z", max_z), ("batch_size", batch_size),
                           ("eval_batch_size", eval_batch_size), ("preprocess_workers", preprocess_workers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer; got {value!r}")
        self.root = Path(root).expanduser() if root else cache_dir() / "datasets" / "cdvae" / dataset
        self.properties = list(properties) if properties is not None else [self.benchmark.prop]
        self.settings = Preprocessing(niggli=niggli, primitive=primitive, max_atoms=max_atoms, max_z=max_z,
                                      min_distance=float(min_distance))
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.train_rotation, self.test_rotation = train_rotation, test_rotation
        self.dtype = getattr(torch, dtype)
        self.download, self.preprocess_workers, self.num_workers, self.seed = (
            download, preprocess_workers, num_workers, seed)
        self.cache = Path(cache).expanduser() if cache else cache_dir() / "datasets" / "cdvae"
        self.lattice_scaler: StandardScaler | None = None
        """Standardiser of :func:`lattice_features`, fitted on the training split."""
        self.property_scaler: StandardScaler | None = None
        """Standardiser of ``y``, fitted on the training split."""
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    def __str__(self) -> str:
        return f"{type(self).__name__}(dataset={self.benchmark.name!r}, root={str(self.root)!r})"

    # --- files ----------------------------------------------------------------------------------------------
    def csv_path(self, split: str) -> Path:
        """``root/<split>.csv``, downloaded (verified) when missing and allowed.

        Raises:
            DatasetNotFoundError: the file is missing and cannot be downloaded; the message gives the URL and the
                path to place it at.
        """
        path = self.root / f"{split}.csv"
        if path.is_file():
            return path
        url = self.benchmark.url(split)
        hint = (f"{self.benchmark.name} {split}.csv is not in {self.root}: download {url} (sha256 "
                f"{self.benchmark.sha256[split]}) and place it at {path}")
        if not self.download:
            raise DatasetNotFoundError(hint + ", or pass download=True.")
        try:
            return download(url, path, sha256=self.benchmark.sha256[split])
        except DownloadError as exc:
            raise DatasetNotFoundError(f"{hint}. ({exc})") from exc

    def split_arrays(self, split: str) -> dict[str, np.ndarray]:
        """The processed arrays of ``split`` (built on first use; cached, keyed by the file and the settings)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        if split not in self._arrays:
            path = self.csv_path(split)
            key = [self.benchmark.name, _sha256(path), list(self.properties), repr(self.settings), PROCESSING_VERSION]
            cached = processed_path(self.cache, self.benchmark.name, split, key)

            def build() -> None:
                save_atomic(cached, process_csv(path, self.properties, self.settings, self.preprocess_workers))

            self._arrays[split] = load_processed(cached, build, lambda a: _checked(a, len(self.properties)))
        return self._arrays[split]

    # --- Lightning ---------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """For training (``fit``, or ``None``): process the training split (once; cached) and fit the scalers on it,
        unless a checkpoint restored them. Other stages read only their own split (when its loader is built), so
        testing needs no ``train.csv``; the scalers then come from the checkpoint (:meth:`load_state_dict`)."""
        if stage in (None, "fit") and (self.lattice_scaler is None or self.property_scaler is None):
            train = self.split_arrays("train")
            feats = lattice_features(torch.from_numpy(train["lengths"]), torch.from_numpy(train["angles"]),
                                     torch.from_numpy(train["natoms"]))
            self.lattice_scaler = StandardScaler.fit(feats)
            self.property_scaler = StandardScaler.fit(torch.from_numpy(train["y"]))

    def state_dict(self) -> dict:
        """The fitted scalers (saved in every checkpoint)."""
        if self.lattice_scaler is None or self.property_scaler is None:
            return {}
        return {"lattice_scaler": self.lattice_scaler.state(), "property_scaler": self.property_scaler.state()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the scalers of a checkpoint (they are not refitted)."""
        if "lattice_scaler" in state_dict:
            self.lattice_scaler = StandardScaler.from_state(state_dict["lattice_scaler"])
            self.property_scaler = StandardScaler.from_state(state_dict["property_scaler"])

    def dataset(self, split: str) -> CrystalDataset:
        """The crystals of ``train``, ``val`` or ``test``."""
        arrays = self.split_arrays(split)
        rotation = self.train_rotation if split == "train" else self.test_rotation
        fixed = None if split == "train" else sample_seed(self.seed, SPLITS.index(split))
        return CrystalDataset(arrays, dtype=self.dtype, rotation=rotation, fixed_seed=fixed)

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        train = split == "train"
        return DataLoader(dataset, batch_size=self.batch_size if train else self.eval_batch_size,
                          sampler=EpochOrder(len(dataset), shuffle=train, seed=self.seed), collate_fn=_collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def set_test_rotation(self, mode: CrystalRotation) -> None:
        """Switch the validation and test rotation (``none`` or ``so3``)."""
        if mode not in ("none", "so3"):
            raise ValueError(f"test_rotation must be 'none' or 'so3'; got {mode!r}")
        self.test_rotation = mode


__all__ = ["BENCHMARKS", "CRYSTAL_FIELDS", "CrystalBenchmark", "CrystalData", "CrystalDataModule", "CrystalDataset",
           "CrystalRowError", "Preprocessing", "StandardScaler", "lattice_features", "parse_cif", "process_csv",
           "read_crystal_csv"]

