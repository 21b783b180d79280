"""Reading molecules from ASE databases (OMol25's ``.aselmdb`` shards, ASE SQLite ``.db``, ASE JSON ``.json``),
and writing ``.aselmdb`` files the way OMol25's are written (:func:`write_aselmdb`).

Formats (all read through ASE, never by a parser of our own):

* ``.aselmdb``: the ASE-LMDB backend of the ``ase-db-backends`` package (the format of OMol25 and fairchem; plain
  ASE cannot open it). A single-file LMDB environment, opened read-only without a lock file, so shards on
  read-only media are readable. A split is a directory of shards (``train_4M/data0000.aselmdb`` ...), optionally
  with fairchem's ``metadata.npz`` beside them (``natoms`` per row over the shards in sorted order, and optionally
  ``data_ids``), which lets batches be sized without opening a row.
* ``.db`` (SQLite) and ``.json``: ASE's own backends (``ase.db.connect``), e.g. SchNetPack's and SpookyNet's sets.

How a row becomes a molecule is a :class:`RowConvention`. Charge and spin are **never** silently zero: a row without
them is an error naming the row, unless the user sets ``default_charge`` / ``default_spin``. OMol25 stores
``charge`` and ``spin`` (the multiplicity 2S+1) in the row's ``data`` (fairchem copies it into ``atoms.info``);
SpookyNet's sets call them ``total_charge`` and ``spin_multiplicity`` but store the number of unpaired electrons
2S there (``spin_convention="unpaired"`` adds 1).

Every field is looked up by name among the row's key-value pairs, then in its ``data`` (SchNetPack's labels,
OMol25's charge and spin), then among its stored calculator results (OMol25's energy and forces: a single-point
calculator). Rows are checked: elements 1-118, finite
positions, no two atoms closer than ``min_distance`` (0.1 Å), energy present, forces present with shape ``(N, 3)``
unless ``require_forces=False`` (energy-only mode); each failure is one :class:`MoleculeRowError` naming the file
and row id.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pointgeo.datamodules.readers import DatasetFileError

BACKENDS = {".aselmdb": "aselmdb", ".db": "db", ".json": "json"}
"""Database file suffix → ASE backend name."""

MAX_Z = 118
SpinConvention = Literal["multiplicity", "unpaired"]


class MoleculeRowError(DatasetFileError):
    """One row of a molecule database is unusable (missing labels, unknown element, NaN or overlapping atoms)."""


@dataclass(frozen=True)
class RowConvention:
    """How the fields of a database row map onto a molecule.

    Args:
        charge_key: name of the total charge (integer, elementary charges) in the row's key-value pairs or data.
        spin_key: name of the spin in the row's key-value pairs or data.
        spin_convention: ``multiplicity``: the stored value is 2S+1 (OMol25); ``unpaired``: it is 2S, the number
            of unpaired electrons (SpookyNet's ``spin_multiplicity`` field), and 1 is added. pointgeo's ``spin``
            is always the multiplicity 2S+1.
        default_charge: charge of rows without ``charge_key`` (``None``: such a row is an error).
        default_spin: multiplicity 2S+1 of rows without ``spin_key`` (``None``: such a row is an error).
        energy_key: name of the total energy (eV).
        forces_key: name of the forces (eV/Å).
        require_forces: ``False`` is the energy-only mode: rows without forces are accepted (forces absent).
        data_id_key: name of the subset label (OMol25's ``data_id``), optional in a row.
        energy_scale: factor turning the stored energy and forces into eV and eV/Å (e.g. 0.0433641 for kcal/mol).
        min_distance: smallest allowed interatomic distance (Å); closer atoms are an error.
    """

    charge_key: str = "charge"
    spin_key: str = "spin"
    spin_convention: SpinConvention = "multiplicity"
    default_charge: int | None = None
    default_spin: int | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    require_forces: bool = True
    data_id_key: str = "data_id"
    energy_scale: float = 1.0
    min_distance: float = 0.1

    def __post_init__(self) -> None:
        if self.spin_convention not in ("multiplicity", "unpaired"):
            raise ValueError(f"spin_convention must be 'multiplicity' (2S+1) or 'unpaired' (2S); got "
                             f"{self.spin_convention!r}")
        if self.default_spin is not None and int(self.default_spin) < 1:
            raise ValueError(f"default_spin is a multiplicity 2S+1 >= 1; got {self.default_spin}")
        if not self.energy_scale > 0:
            raise ValueError(f"energy_scale must be positive; got {self.energy_scale}")


@dataclass
class MoleculeRecord:
    """One molecule as read from a row (NumPy, float64): ``z (N,)``, ``pos (N, 3)`` Å, total ``energy`` eV,
    ``forces (N, 3)`` eV/Å (``None`` in energy-only mode), integer ``charge``, multiplicity ``spin`` (2S+1),
    ``cell (3, 3)`` and ``pbc (3,)`` (``cell`` is ``None`` unless a direction is periodic), subset ``data_id``."""

    z: np.ndarray
    pos: np.ndarray
    energy: float
    forces: np.ndarray | None
    charge: int
    spin: int
    cell: np.ndarray | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    data_id: str | None = None


def _require_ase() -> None:
    try:
        import ase.db  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ImportError("reading molecule databases needs ASE: pip install 'pointgeo[molecules]'") from exc


def find_shards(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The database files of a split: ``path`` itself if it is a file, else the ``*.aselmdb`` files in the
    directory (or, if there are none, its ``*.db`` / ``*.json`` files), sorted by name; a list of paths gives the
    concatenation of theirs, in order.

    Raises:
        DatasetFileError: the path does not exist, has an unknown suffix, or the directory holds no database.
    """
    if not isinstance(path, (str, os.PathLike)):
        paths = list(path)
        if not paths:
            raise DatasetFileError("no database path given (an empty list)")
        return [shard for p in paths for shard in find_shards(p)]
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix not in BACKENDS:
            raise DatasetFileError(f"{path}: unknown database suffix {path.suffix!r}; expected one of "
                                   f"{sorted(BACKENDS)}")
        return [path]
    if not path.is_dir():
        raise DatasetFileError(f"{path} does not exist (expected an ASE database file or a folder of .aselmdb shards)")
    for suffixes in ((".aselmdb",), (".db", ".json")):
        shards = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in suffixes)
        if shards:
            return shards
    raise DatasetFileError(f"{path} holds no database shards (no *.aselmdb, *.db or *.json files)")


_LMDB_CONNECTIONS: dict[tuple, Any] = {}
"""Open ``.aselmdb`` databases by (process id, resolved path, inode, size, modification time). LMDB allows one
environment per file and process (py-lmdb refuses a second), so every reader of a file in a process shares one
connection."""


def _check_lmdb_size(path: Path) -> None:
    """Refuse a truncated LMDB file before any page is read: reading a memory-mapped page beyond the end of the
    file kills the process (SIGBUS) instead of raising. The header (meta pages) names the last page in use.

    Raises:
        DatasetFileError: the file is shorter than its header says, or has no valid LMDB header.
    """
    import lmdb  # noqa: PLC0415  (installed with ase-db-backends)

    size = path.stat().st_size
    try:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_readers=1)
    except lmdb.Error as exc:
        raise DatasetFileError(f"{path} is not a readable .aselmdb file (truncated or corrupt?): {exc}") from exc
    try:
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()
    if size < needed:
        raise DatasetFileError(f"{path} is not a readable .aselmdb file: truncated ({size} bytes, but its LMDB "
                               f"header counts {needed}); copy or download it again")


def connect(path: Path) -> Any:
    """Open an ASE database read-only (``.aselmdb`` through ``ase-db-backends``, without a lock file; one shared
    connection per file and process).

    Raises:
        DatasetFileError: the file is truncated, corrupt or not a database of its suffix's kind.
        ImportError: ASE or ``ase-db-backends`` is not installed.
    """
    _require_ase()
    import ase.db  # noqa: PLC0415

    backend = BACKENDS.get(path.suffix)
    if backend is None:
        raise DatasetFileError(f"{path}: unknown database suffix {path.suffix!r}; expected one of {sorted(BACKENDS)}")
    if backend == "aselmdb":
        try:
            from ase_db_backends.aselmdb import LMDBDatabase  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError(f"{path}: .aselmdb files need the ase-db-backends package "
                              f"(pip install 'pointgeo[molecules]'); plain ASE cannot read them") from exc
        st = path.stat()
        key = (os.getpid(), str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)  # a replaced file is new
        if key in _LMDB_CONNECTIONS:
            return _LMDB_CONNECTIONS[key]
        _check_lmdb_size(path)
        try:
            db = _LMDB_CONNECTIONS[key] = LMDBDatabase(path, readonly=True)
            return db
        except Exception as exc:  # lmdb.Error and friends: a truncated or foreign file
            raise DatasetFileError(f"{path} is not a readable .aselmdb file (truncated or corrupt?): "
                                   f"{type(exc).__name__}: {exc}") from exc
    try:
        return ase.db.connect(str(path), type=backend, serial=True) if backend == "json" else \
            ase.db.connect(str(path), type=backend)
    except Exception as exc:
        raise DatasetFileError(f"{path} is not a readable ASE {backend} database: {type(exc).__name__}: {exc}") \
            from exc


def row_ids(db: Any, path: Path) -> np.ndarray:
    """The ids of every row of an open database, ascending ``(R,)`` int64."""
    try:
        if hasattr(db, "ids"):  # the LMDB backend keeps its ids without decoding rows
            ids = list(db.ids)
        elif hasattr(db, "managed_connection"):  # SQLite: the id column, without decoding rows
            with db.managed_connection() as con:
                ids = [r[0] for r in con.execute("SELECT id FROM systems")]
        else:
            ids = [row.id for row in db.select(include_data=False)]
    except Exception as exc:
        raise DatasetFileError(f"cannot list the rows of {path} (truncated or corrupt?): "
                               f"{type(exc).__name__}: {exc}") from exc
    return np.sort(np.asarray(ids, dtype=np.int64))


def _lookup(row: Any, key: str, data: Mapping[str, Any]) -> Any:
    """``key`` among the row's key-value pairs, its ``data`` (decoded once per row by the caller) and its stored
    calculator results, in that order; ``None`` if absent.

    ``row.get`` is not used: ``AtomsRow`` has properties of its own (``charge`` is the sum of the initial atomic
    charges, 0 for OMol25 rows), which would turn a missing total charge into a silent zero, and would hide a
    stored ``charge`` key-value pair behind that property.
    """
    # key-value pairs live in the row's instance dict (``_keys`` names them); ``row.key_value_pairs`` would read
    # them through getattr, where the ``charge`` property shadows a stored ``charge`` pair
    if key in getattr(row, "_keys", ()) and key in row.__dict__:
        return row.__dict__[key]
    if key in data:
        return data[key]
    return row.__dict__.get(key) if key in _calculator_properties() else None


def _calculator_properties() -> frozenset[str]:
    """The calculator properties an ASE row stores as results (``energy``, ``forces``, ``stress`` ...)."""
    from ase.calculators.calculator import all_properties as names  # noqa: PLC0415

    return frozenset(names)


def _integer(value: Any, what: str, where: str) -> int:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 1 or not np.isfinite(arr[0]) or arr[0] != np.round(arr[0]):
        raise MoleculeRowError(f"{where}: {what} must be one integer; got {value!r}")
    return int(np.round(arr[0]))


def check_geometry(z: np.ndarray, pos: np.ndarray, where: str, min_distance: float = 0.1) -> None:
    """Elements in 1..118, finite ``pos (N, 3)`` and no pair of atoms closer than ``min_distance`` Å.

    Raises:
        MoleculeRowError: naming ``where`` and the offending atoms.
    """
    if z.ndim != 1 or z.size == 0 or pos.shape != (z.size, 3):
        raise MoleculeRowError(f"{where}: expected numbers (N,) and positions (N, 3) with N >= 1; got "
                               f"{z.shape} and {pos.shape}")
    bad = np.flatnonzero((z < 1) | (z > MAX_Z))
    if bad.size:
        raise MoleculeRowError(f"{where}: unknown element (atomic number {int(z[bad[0]])} at atom {int(bad[0])}); "
                               f"expected 1..{MAX_Z}")
    if not np.isfinite(pos).all():
        atom = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        raise MoleculeRowError(f"{where}: atom {atom} has NaN or inf coordinates")
    if z.size > 1 and min_distance > 0:
        from scipy.spatial import cKDTree  # noqa: PLC0415

        pairs = cKDTree(pos).query_pairs(min_distance, output_type="ndarray")
        if len(pairs):
            i, j = (int(v) for v in pairs[0])
            distance = float(np.linalg.norm(pos[i] - pos[j]))
            raise MoleculeRowError(f"{where}: atoms {i} and {j} are {distance:.4f} Å apart, closer than "
                                   f"{min_distance} Å (duplicated atoms or wrong units?)")


_MISSING = {"charge": ("total charge", ""), "spin": ("spin", " (a multiplicity 2S+1)")}
"""How an error names a missing charge or spin, and what its default means."""


def _row_integer(row: Any, data: dict, name: str, key: str, default: int | None, where: str) -> tuple[int, bool]:
    """The integer ``name`` (``charge`` or ``spin``) of a row, stored under ``key`` among its key-value pairs or data,
    else ``default``; and whether it was stored. Never silently zero: no value and no default is an error."""
    value = _lookup(row, key, data)
    if value is None:
        if default is None:
            what, meaning = _MISSING[name]
            raise MoleculeRowError(f"{where}: no {what} ({key!r} missing from the row's key-value pairs and data); set "
                                   f"{name}_key to the row's name for it, or default_{name}{meaning} to use one value "
                                   f"for every such row")
        return int(default), False
    return _integer(value, f"{name} {key!r}", where), True


def row_to_record(row: Any, convention: RowConvention, where: str) -> MoleculeRecord:
    """Turn an ASE ``AtomsRow`` into a checked :class:`MoleculeRecord` (``where`` names the row in errors)."""
    z = np.asarray(row.numbers, dtype=np.int64)
    pos = np.asarray(row.positions, dtype=np.float64)
    check_geometry(z, pos, where, convention.min_distance)
    data = row.get("data") or {}  # ASE decodes the data blob at every access

    energy = _lookup(row, convention.energy_key, data)
    if energy is None:
        raise MoleculeRowError(f"{where}: no energy ({convention.energy_key!r} is neither a key-value pair, in "
                               f"the row's data nor a calculator result)")
    energy_arr = np.asarray(energy, dtype=np.float64).reshape(-1)
    if energy_arr.size != 1 or not np.isfinite(energy_arr[0]):
        raise MoleculeRowError(f"{where}: energy must be one finite number; got {energy!r}")
    forces = _lookup(row, convention.forces_key, data)
    if forces is None:
        if convention.require_forces:
            raise MoleculeRowError(f"{where}: no forces ({convention.forces_key!r} is neither a calculator result "
                                   f"nor in the row's data); set require_forces=False for energy-only training")
    else:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != pos.shape:
            raise MoleculeRowError(f"{where}: forces have shape {forces.shape}; expected {pos.shape}")
        if not np.isfinite(forces).all():
            raise MoleculeRowError(f"{where}: forces contain NaN or inf")
        forces = forces * convention.energy_scale

    charge, _ = _row_integer(row, data, "charge", convention.charge_key, convention.default_charge, where)
    spin, stored = _row_integer(row, data, "spin", convention.spin_key, convention.default_spin, where)
    if stored and convention.spin_convention == "unpaired":
        spin += 1
    if spin < 1:
        raise MoleculeRowError(f"{where}: spin multiplicity 2S+1 must be >= 1; got {spin} (is the stored value 2S? "
                               f"then set spin_convention='unpaired')")

    pbc = np.asarray(row.get("pbc", np.zeros(3, dtype=bool)), dtype=bool).reshape(3)
    cell = np.asarray(row.get("cell"), dtype=np.float64).reshape(3, 3) if pbc.any() else None
    data_id = _lookup(row, convention.data_id_key, data)
    return MoleculeRecord(z=z, pos=pos, energy=float(energy_arr[0]) * convention.energy_scale, forces=forces,
                          charge=charge, spin=spin, cell=cell, pbc=pbc,
                          data_id=None if data_id is None else str(data_id))


class AseDbReader:
    """Random access to the rows of one or more ASE databases, as one sequence of molecules.

    Connections are opened lazily, per process, and are not pickled. LMDB environments must not cross a fork,
    and py-lmdb refuses to open a file in a forked child whose parent holds it open, so ``DataLoader`` workers
    reading ``.aselmdb`` shards are started with the ``spawn`` method (:attr:`needs_spawn`).

    Args:
        path: a database file, a directory of ``.aselmdb`` shards (or of ``.db``/``.json`` files), or a list of
            these (read one after the other).
        convention: how rows map onto molecules.
    """

    def __init__(self, path: str | os.PathLike | Sequence[str | os.PathLike],
                 convention: RowConvention | None = None) -> None:
        self.shards = find_shards(path)
        single = isinstance(path, (str, os.PathLike))
        self.path = Path(path).expanduser() if single else self.shards[0].parent
        self._folder = self.path if single and self.path.is_dir() else None  # where a metadata.npz may lie
        self.convention = convention or RowConvention()
        self._pid: int | None = None
        self._dbs: dict[int, Any] = {}
        ids = [row_ids(self._db(k), shard) for k, shard in enumerate(self.shards)]
        self._ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        self._shard = np.repeat(np.arange(len(ids)), [len(i) for i in ids])
        if len(self._ids) == 0:
            raise DatasetFileError(f"{self.path} holds no rows")

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def needs_spawn(self) -> bool:
        """Whether worker processes must be spawned rather than forked (any shard is LMDB)."""
        return any(shard.suffix == ".aselmdb" for shard in self.shards)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_dbs"], state["_pid"] = {}, None  # connections are per process
        return state

    def _db(self, shard: int) -> Any:
        if self._pid != os.getpid():
            self._dbs, self._pid = {}, os.getpid()
        if shard not in self._dbs:
            self._dbs[shard] = connect(self.shards[shard])
        return self._dbs[shard]

    def where(self, index: int) -> str:
        """``"<file> row <id>"``: how errors name row ``index``."""
        return f"{self.shards[self._shard[index]]} row {int(self._ids[index])}"

    def row(self, index: int) -> Any:
        """The ASE ``AtomsRow`` of molecule ``index`` (0-based over all shards)."""
        if not 0 <= index < len(self):
            raise IndexError(f"molecule index {index} out of range for {len(self)} rows in {self.path}")
        try:
            return self._db(int(self._shard[index])).get(id=int(self._ids[index]))
        except DatasetFileError:
            raise
        except Exception as exc:
            raise DatasetFileError(f"cannot read {self.where(index)} (truncated or corrupt?): "
                                   f"{type(exc).__name__}: {exc}") from exc

    def record(self, index: int) -> MoleculeRecord:
        """Molecule ``index`` as a checked :class:`MoleculeRecord`."""
        return row_to_record(self.row(index), self.convention, self.where(index))

    def records(self) -> Iterator[MoleculeRecord]:
        """Every molecule in index order, read sequentially (one query per SQLite/JSON file: much faster than
        :meth:`record` row by row)."""
        for k, shard in enumerate(self.shards):
            db = self._db(k)
            ids = self._ids[self._shard == k]
            try:
                rows = (db.get(id=int(i)) for i in ids) if shard.suffix == ".aselmdb" else db.select(sort="id")
                for expected, row in zip(ids, rows, strict=True):
                    if row.id != expected:
                        raise DatasetFileError(f"{shard} changed while it was read (row {row.id}, expected "
                                               f"{int(expected)})")
                    yield row_to_record(row, self.convention, f"{shard} row {row.id}")
            except (DatasetFileError, ValueError):
                raise
            except Exception as exc:
                raise DatasetFileError(f"cannot read {shard} (truncated or corrupt?): {type(exc).__name__}: "
                                       f"{exc}") from exc

    def metadata(self) -> dict[str, np.ndarray] | None:
        """fairchem's ``metadata.npz`` beside the shards (``natoms`` per row, optional ``data_ids``), checked
        against the rows; ``None`` when there is none."""
        if self._folder is None or not (self._folder / "metadata.npz").is_file():
            return None
        file = self._folder / "metadata.npz"
        try:
            with np.load(file, allow_pickle=False) as npz:
                meta = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as exc:
            raise DatasetFileError(f"{file} is not a readable .npz file: {exc}") from exc
        if "natoms" not in meta:
            raise DatasetFileError(f"{file} has no 'natoms' array (keys: {sorted(meta)})")
        for key in ("natoms", "data_ids"):
            if key in meta and len(meta[key]) != len(self):
                raise DatasetFileError(f"{file}: {key!r} has {len(meta[key])} entries but the shards hold "
                                       f"{len(self)} rows")
        return meta


def natoms_of(reader: AseDbReader, indices: Sequence[int] | None = None) -> np.ndarray:
    """Atoms per molecule ``(R,)``, from ``metadata.npz`` when present, else by reading the rows."""
    meta = reader.metadata()
    if meta is not None:
        natoms = meta["natoms"].astype(np.int64)
        return natoms if indices is None else natoms[np.asarray(indices)]
    rows = range(len(reader)) if indices is None else indices
    return np.array([reader.row(int(i)).natoms for i in rows], dtype=np.int64)


def write_aselmdb(path: str | os.PathLike, molecules: Iterable[Mapping[str, Any]]) -> Path:
    """Write molecules as an OMol25-style ``.aselmdb`` file with the reference writer (``ase-db-backends``):
    the energy and forces as single-point calculator results, everything in ``data`` (``charge``, ``spin``,
    ``data_id``, ...) as the row's data. Written to a temporary name beside ``path`` and moved into place, so
    ``path`` is never a partial file; LMDB's ``-lock`` file is removed.

    Args:
        path: the ``.aselmdb`` file to create (replaced if it exists).
        molecules: dicts with ``numbers (N,)``, ``positions (N, 3)`` and optionally ``energy``, ``forces (N, 3)``,
            ``data`` (dict), ``key_value_pairs`` (dict), ``cell (3, 3)``, ``pbc``.

    Returns:
        ``path``.
    """
    _require_ase()
    from ase import Atoms  # noqa: PLC0415
    from ase.calculators.singlepoint import SinglePointCalculator  # noqa: PLC0415
    from ase_db_backends.aselmdb import LMDBDatabase  # noqa: PLC0415

    path = Path(path).expanduser()
    if path.suffix != ".aselmdb":
        raise ValueError(f"{path}: an ASE-LMDB file must end in .aselmdb")
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".aselmdb", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # LMDB creates the file itself
    try:
        db = LMDBDatabase(tmp, readonly=False)
        with db:
            for mol in molecules:
                atoms = Atoms(numbers=mol["numbers"], positions=mol["positions"], cell=mol.get("cell"),
                              pbc=mol.get("pbc", False))
                results = {k: mol[k] for k in ("energy", "forces") if mol.get(k) is not None}
                if results:
                    atoms.calc = SinglePointCalculator(atoms, **results)
                db.write(atoms, data=dict(mol.get("data", {})), **dict(mol.get("key_value_pairs", {})))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}-lock").unlink(missing_ok=True)
    return path
