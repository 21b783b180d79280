"""Batched, resumable generation of crystals into a folder.

A generation folder holds

* ``manifest.json``: the settings (number, batch size, seed, checkpoint sha256, noise levels), the checkpoint's
  identity and, per finished batch, one record per crystal: its CIF file (or ``null``), ``constructed``,
  ``struct_valid``, ``comp_valid``, ``valid``, formula and the problems that make it invalid;
* ``cif/<index>.cif``: every crystal pymatgen can build (``CifWriter``, P1), index ``0 … num − 1``;
* ``batches/<k>.json``: the sampler's raw output of batch ``k`` (fractional coordinates, atomic numbers, lattice
  parameters; exact float64, ``NaN`` kept), read back by the report.

Batch ``k`` holds crystals ``k·B … min((k + 1)·B, num) − 1`` and draws every random number from its own generator,
seeded with ``sample_seed(seed, k)``: which batches ran before, and whether the run was interrupted, changes nothing.
A batch's CIFs and raw file are written first, then the manifest names the batch finished (each file atomically:
:mod:`pointgeo.generation.files`), so a run killed at any point resumes with the first unfinished batch and ends
with exactly the files of an uninterrupted run. A crystal pymatgen cannot build (non-finite numbers, a degenerate
lattice, a volume below 0.1 Å³) gets no CIF and is recorded as not constructed; one it builds but whose atoms
overlap gets its CIF and is recorded as structurally invalid (the definitions of :mod:`pointgeo.metrics.crystals`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from pointgeo import __version__
from pointgeo.datamodules.base import sample_seed
from pointgeo.generation.files import remove_partial_files, write_json_atomic, write_text_atomic
from pointgeo.metrics.crystals import MIN_DISTANCE, MIN_VOLUME, Crystal, EvaluatedCrystal, evaluate

MANIFEST = "manifest.json"
CIF_FOLDER = "cif"
BATCH_FOLDER = "batches"
REPORT_FILES = ("metrics.json", "report.html")
MANIFEST_FORMAT = "pointgeo-generation/1"
LOCK = ".pointgeo-generate.lock"
"""Held (``flock``) by the run writing the folder, so that two runs never write one folder at once."""


class CrystalSampler(Protocol):
    """What generation needs of a model (``pointgeo.tasks.crystal_generation.CDVAETask`` is one)."""

    num_noise_levels: int
    """Number of noise levels of the annealed Langevin dynamics."""

    def sample(self, num: int, *, generator: torch.Generator,
               on_level: Callable[[int, int], None] | None = None) -> list[Crystal]:
        """``num`` crystals generated in one batch, deterministic given ``generator``; calls
        ``on_level(level_index, num_levels)`` after each noise level."""
        ...


class GenerationFolderError(ValueError):
    """The output folder cannot take this generation: it holds another generation (other checkpoint or settings)
    or files that are not a generation's, or its manifest cannot be read."""


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides the generated crystals; a folder resumes only a run with equal settings."""

    num: int
    batch_size: int
    seed: int
    checkpoint_sha256: str
    num_noise_levels: int

    def __post_init__(self) -> None:
        for key in ("num", "batch_size", "num_noise_levels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer; got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")

    @property
    def num_batches(self) -> int:
        return -(-self.num // self.batch_size)

    def batch_range(self, k: int) -> range:
        """The crystal indices of batch ``k``."""
        return range(k * self.batch_size, min((k + 1) * self.batch_size, self.num))


def batch_seed(seed: int, k: int) -> int:
    """The seed of batch ``k``'s generator."""
    return sample_seed(seed, k)


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def prepare_folder(out: Path, settings: GenerationSettings, checkpoint: dict[str, Any], *,
                   overwrite: bool = False) -> dict[str, Any]:
    """The manifest to continue in ``out``: the folder's own when its settings equal ``settings`` (a resumed run),
    else a new one (``out`` missing or empty, or a previous generation replaced with ``overwrite``).

    Raises:
        GenerationFolderError: ``out`` is a file; holds a generation with other settings (without ``overwrite``);
            is not empty and holds no manifest; or its manifest is unreadable (without ``overwrite``).
    """
    if out.exists() and not out.is_dir():
        raise GenerationFolderError(f"--out {out} is a file, not a folder")
    path = out / MANIFEST
    wanted = asdict(settings)
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            found = manifest["settings"]
            if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("batches"), dict):
                raise ValueError(f"format {manifest.get('format')!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not overwrite:
                raise GenerationFolderError(f"{path} is not a readable generation manifest ({type(exc).__name__}: "
                                            f"{exc}); pass --overwrite to start the generation again") from exc
            found = None
        if found == wanted:
            return manifest
        if not overwrite:
            changed = {k: v for k, v in found.items() if wanted.get(k) != v}
            asked = {k: wanted.get(k) for k in changed}
            raise GenerationFolderError(
                f"{out} holds a generation with other settings ({_describe(changed)}; this run: {_describe(asked)}); "
                "rerun with the same checkpoint and settings to resume it, choose another --out, or pass --overwrite "
                "to replace it")
        clear_generation(out)
    elif out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        raise GenerationFolderError(f"{out} is not empty and holds no {MANIFEST}; choose an empty or new --out "
                                    "(--overwrite only replaces a previous generation)")
    manifest = {"format": MANIFEST_FORMAT, "pointgeo": __version__, "settings": wanted, "checkpoint": checkpoint,
                "num_batches": settings.num_batches, "batches": {}}
    write_json_atomic(path, manifest)
    return manifest


def clear_generation(out: Path) -> None:
    """Remove a previous generation's files from ``out`` (its manifest, CIFs, raw batches and report; nothing
    else)."""
    for folder in (CIF_FOLDER, BATCH_FOLDER):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in (MANIFEST, *REPORT_FILES):
        (out / name).unlink(missing_ok=True)


def cif_name(index: int) -> str:
    """The CIF file of crystal ``index``, relative to the folder."""
    return f"{CIF_FOLDER}/{index}.cif"


def problems(crystal: Crystal, evaluated: EvaluatedCrystal) -> list[str]:
    """Why a crystal is invalid, in words (empty for a valid one)."""
    found = []
    numbers = np.concatenate([crystal.lengths, crystal.angles, crystal.frac_coords.reshape(-1)])
    if len(crystal.atom_types) == 0:
        found.append("no atoms")
    elif not np.isfinite(numbers).all():
        found.append("non-finite lattice parameters or coordinates")
    elif crystal.lengths.min() <= 0:
        found.append(f"non-positive lattice length {crystal.lengths.tolist()}")
    elif evaluated.structure is None:
        found.append(f"pymatgen cannot build the lattice {crystal.lengths.round(4).tolist()} Å, "
                     f"{crystal.angles.round(3).tolist()}° (degenerate, or volume below {MIN_VOLUME} Å³)")
    elif not evaluated.struct_valid:
        distances = np.asarray(evaluated.structure.distance_matrix, dtype=np.float64)
        np.fill_diagonal(distances, np.inf)
        found.append(f"atoms {float(distances.min(initial=np.inf)):.3f} Å apart (structure validity needs "
                     f"{MIN_DISTANCE} Å)")
    if not evaluated.comp_valid:
        found.append("composition fails the SMACT charge-neutrality / electronegativity screening")
    return found


def _formula(crystal: Crystal) -> str | None:
    from pymatgen.core import Composition, Element  # noqa: PLC0415

    types = crystal.atom_types
    if len(types) == 0 or not ((types >= 1) & (types <= 118)).all():
        return None
    counts: dict[Any, int] = {}
    for z in types.tolist():
        counts[Element.from_Z(int(z))] = counts.get(Element.from_Z(int(z)), 0) + 1
    return Composition(counts).formula


def _cif_text(structure: Any) -> str | None:
    from pymatgen.io.cif import CifWriter  # noqa: PLC0415

    try:
        return str(CifWriter(structure))
    except Exception:  # noqa: BLE001  (a structure CifWriter refuses is recorded, never crashes the run)
        return None


def _checked_output(crystals: Any, num: int, sampler: Any) -> list[Crystal]:
    """The sampler's output as float64/int64 crystals; a wrong type or shape is the sampler's bug: ``TypeError``
    or ``ValueError`` naming it (an invalid *structure* is fine and recorded)."""
    name = type(sampler).__name__
    if not isinstance(crystals, list) or len(crystals) != num:
        raise ValueError(f"{name}.sample({num}) returned {type(crystals).__name__} of length "
                         f"{len(crystals) if hasattr(crystals, '__len__') else '?'}; expected a list of {num} Crystals")
    out = []
    for i, c in enumerate(crystals):
        if not isinstance(c, Crystal):
            raise TypeError(f"{name}.sample returned {type(c).__name__} at position {i}; expected a Crystal")
        frac, types = np.asarray(c.frac_coords, dtype=np.float64), np.asarray(c.atom_types)
        lengths, angles = np.asarray(c.lengths, dtype=np.float64), np.asarray(c.angles, dtype=np.float64)
        if (frac.ndim != 2 or frac.shape[1] != 3 or types.shape != (len(frac),) or lengths.shape != (3,)
                or angles.shape != (3,) or not np.issubdtype(types.dtype, np.integer)):
            raise ValueError(f"{name}.sample returned crystal {i} with frac_coords {frac.shape}, atom_types "
                             f"{types.shape} {types.dtype}, lengths {lengths.shape}, angles {angles.shape}; expected "
                             "(N, 3), (N,) integers, (3,), (3,)")
        out.append(Crystal(frac, types.astype(np.int64), lengths, angles))
    return out


def _raw(crystal: Crystal) -> dict[str, Any]:
    return {"frac_coords": crystal.frac_coords.tolist(), "atom_types": crystal.atom_types.tolist(),
            "lengths": crystal.lengths.tolist(), "angles": crystal.angles.tolist()}


def write_batch(out: Path, k: int, settings: GenerationSettings, crystals: list[Crystal]) -> dict[str, Any]:
    """Write batch ``k``'s CIFs and raw file; returns its manifest record."""
    records = []
    for index, crystal, item in zip(settings.batch_range(k), crystals, evaluate(crystals)):
        text = None if item.structure is None else _cif_text(item.structure)
        found = problems(crystal, item)
        if item.structure is not None and text is None:
            found.insert(0, "pymatgen's CifWriter cannot write the structure")
        if text is not None:
            write_text_atomic(out / cif_name(index), text)
        records.append({"index": index, "cif": None if text is None else cif_name(index),
                        "natoms": len(crystal.atom_types), "formula": _formula(crystal),
                        "constructed": item.structure is not None, "struct_valid": item.struct_valid,
                        "comp_valid": item.comp_valid, "valid": item.comp_valid and item.struct_valid,
                        "problems": found})
    write_json_atomic(out / BATCH_FOLDER / f"{k}.json", {"batch": k, "seed": batch_seed(settings.seed, k),
                                                          "crystals": [_raw(c) for c in crystals]}, allow_nan=True)
    return {"seed": batch_seed(settings.seed, k), "crystals": records}


def _finished(out: Path, manifest: dict[str, Any], k: int) -> bool:
    """Whether batch ``k`` is recorded and all its files are still there."""
    record = manifest["batches"].get(str(k))
    if record is None or not (out / BATCH_FOLDER / f"{k}.json").is_file():
        return False
    return all((out / c["cif"]).is_file() for c in record["crystals"] if c["cif"] is not None)


def generate_crystals(sampler: CrystalSampler, out: str | Path, settings: GenerationSettings,
                      checkpoint: dict[str, Any], *, overwrite: bool = False, device: str | torch.device = "cpu",
                      progress: bool = True) -> dict[str, Any]:
    """Generate ``settings.num`` crystals with ``sampler`` into ``out``, batch by batch, resuming a previous run of
    the same settings (module docstring).

    Args:
        sampler: the model (:class:`CrystalSampler`).
        out: the generation folder.
        settings: what decides the crystals; ``settings.num_noise_levels`` must be the sampler's.
        checkpoint: the checkpoint's identity, stored in the manifest (the first run's is kept when resuming).
        overwrite: replace a generation with other settings in ``out``.
        device: where the batch generators live (the sampler's device).
        progress: show progress bars (batches, and Langevin levels within a batch) on stderr.

    Returns:
        The manifest, every batch finished.
    """
    if settings.num_noise_levels != sampler.num_noise_levels:
        raise ValueError(f"settings.num_noise_levels={settings.num_noise_levels} but the sampler has "
                         f"{sampler.num_noise_levels} noise levels")
    out = Path(out)
    with _folder_lock(out):
        return _generate(sampler, out, settings, checkpoint, overwrite, device, progress)


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold the folder's lock file (``flock``, released when the process ends, however it ends)."""
    if out.exists() and not out.is_dir():
        raise GenerationFolderError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not (out / MANIFEST).exists() and any(p.name != LOCK for p in out.iterdir()):
        raise GenerationFolderError(f"{out} is not empty and holds no {MANIFEST}; choose an empty or new --out "
                                    "(--overwrite only replaces a previous generation)")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as fh:
        try:
            import fcntl  # noqa: PLC0415  (POSIX; elsewhere the folder is not locked)
        except ImportError:
            yield
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise GenerationFolderError(f"another pointgeo generate is writing to {out}; wait for it to end") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _generate(sampler: CrystalSampler, out: Path, settings: GenerationSettings, checkpoint: dict[str, Any],
              overwrite: bool, device: str | torch.device, progress: bool) -> dict[str, Any]:
    manifest = prepare_folder(out, settings, checkpoint, overwrite=overwrite)
    for folder in (out, out / CIF_FOLDER, out / BATCH_FOLDER):
        remove_partial_files(folder)
    todo = [k for k in range(settings.num_batches) if not _finished(out, manifest, k)]
    batches = tqdm(total=settings.num_batches, initial=settings.num_batches - len(todo), desc="generate",
                   unit="batch", disable=not progress)
    levels = tqdm(total=settings.num_noise_levels, desc="Langevin levels", unit="level", leave=False,
                  disable=not progress)

    def on_level(level: int, num_levels: int) -> None:
        levels.total = num_levels
        levels.n = level + 1
        levels.refresh()

    try:
        for k in todo:
            levels.reset(total=settings.num_noise_levels)
            levels.set_postfix_str(f"batch {k + 1}/{settings.num_batches}")
            generator = torch.Generator(device=device).manual_seed(batch_seed(settings.seed, k))
            size = len(settings.batch_range(k))
            with torch.no_grad():
                crystals = _checked_output(sampler.sample(size, generator=generator, on_level=on_level), size,
                                           sampler)
            manifest["batches"][str(k)] = write_batch(out, k, settings, crystals)
            write_json_atomic(out / MANIFEST, manifest)
            batches.update(1)
    finally:
        levels.close()
        batches.close()
    return manifest


def read_generated(out: str | Path, manifest: dict[str, Any]) -> list[Crystal]:
    """The crystals of a finished generation folder, in index order, exactly as the sampler returned them."""
    out = Path(out)
    crystals = []
    for k in range(manifest["num_batches"]):
        path = out / BATCH_FOLDER / f"{k}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))["crystals"]
            crystals.extend(Crystal(np.asarray(c["frac_coords"], dtype=np.float64).reshape(-1, 3),
                                    np.asarray(c["atom_types"], dtype=np.int64),
                                    np.asarray(c["lengths"], dtype=np.float64),
                                    np.asarray(c["angles"], dtype=np.float64)) for c in raw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GenerationFolderError(f"{path} cannot be read ({type(exc).__name__}: {exc}); rerun the "
                                        "generation to write it again") from exc
    if len(crystals) != manifest["settings"]["num"]:
        raise GenerationFolderError(f"{out} holds {len(crystals)} crystals, its manifest {manifest['settings']['num']}")
    return crystals
