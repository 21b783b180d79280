"""Readers of the 3DMatch / 3DLoMatch registration files, each failing with one :class:`DatasetFileError`.

* :func:`read_fragment`: a fragment ``cloud_bin_<k>.pth`` (PREDATOR's preprocessed release: a legacy, non-zip
  ``torch.save`` stream of a NumPy ``(N, 3)`` float64 array), also a zip-format ``torch.save`` of a tensor or array,
  or an ``.npy`` file.
* :func:`read_pair_metadata`: the pair lists of PREDATOR / RoITr (``3DMatch.pkl``, ``3DLoMatch.pkl``,
  ``val_info.pkl``, ``train_info.pkl``: a dict of parallel sequences ``src``, ``tgt``, ``rot``, ``trans``,
  ``overlap``) and of GeoTransformer (``metadata/{train,val,3DMatch,3DLoMatch}.pkl``: a list of dicts ``pcd0``,
  ``pcd1``, ``rotation``, ``translation``, ``overlap``, ``scene_name``, ``frag_id0``, ``frag_id1``), both as one
  :class:`PairTable` whose pose maps the **source** fragment into the **target** fragment's frame (PREDATOR
  ``src → tgt``; GeoTransformer ``pcd1 → pcd0``).
* :func:`read_gt_log`, :func:`read_gt_info`, :func:`read_gt_overlap`: the benchmark's per-scene ``gt.log`` (blocks
  of a header ``i j n`` and the 4×4 pose mapping fragment ``j`` into fragment ``i``'s frame), ``gt.info`` (a header and
  the 6×6 information matrix) and ``gt_overlap.log`` (``i,j,overlap``); :func:`read_benchmark` reads the 8 scenes.

The fragment and metadata files are pickles, and unpickling runs whatever code a file names. They are read with
:class:`RestrictedUnpickler`, which builds NumPy arrays, NumPy scalars and plain containers (dict, list, tuple, str,
bytes, numbers, ``None``) and refuses every other global, so a crafted file cannot execute anything: it raises
:class:`DatasetFileError` before any of its objects is built. Object arrays and tensor storages are refused too.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointgeo.datamodules.readers import DatasetFileError, check_coordinates
from pointgeo.datamodules.release import read_text_lines
from pointgeo.geometry import rotation_defect

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first record of a legacy (non-zip) ``torch.save`` stream."""
POSE_TOLERANCE = 1e-2
"""How far a stored rotation may be from orthonormal (max |R Rᵀ − I|, |det R − 1|): the official 3DMatch poses
are orthonormal only to 2e-3 (measured on ``3DMatch.pkl``); a bound of 1e-2 still refuses anything else."""
MAX_PICKLE_BYTES = 1 << 30
"""Largest pickle read (1 GiB; the largest 3DMatch fragment is a few MB)."""


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (``encode(str, 'latin1')``), nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only as encode(str, 'latin1'); got {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    from numpy.lib import format as _  # noqa: F401, PLC0415  (makes sure numpy's pickle helpers are loaded)

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / numpy 1
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = core._reconstruct
        allowed[(module, "scalar")] = core.scalar
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType", "StrDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only NumPy arrays, NumPy scalars and plain containers (see the module docstring).

    ``find_class`` returns the few NumPy constructors of arrays, dtypes and scalars and raises for anything else
    (``os.system``, ``builtins.eval``, any class), and ``persistent_load`` refuses tensor storages, so nothing a file
    names is ever called. Object-dtype arrays are rejected after loading by :func:`check_plain`.
    """

    def __init__(self, file: io.BufferedIOBase, source: Path | str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        found = self.allowed.get((module, name))
        if found is None:
            raise DatasetFileError(f"{self.source} is a pickle naming {module}.{name}, which pointgeo refuses to load "
                                   f"(only NumPy arrays and plain containers are admitted; nothing was executed)")
        return found

    def persistent_load(self, pid: object) -> object:
        raise DatasetFileError(f"{self.source} holds torch tensor storages; pointgeo reads fragments and metadata "
                               f"stored as NumPy arrays (save them with numpy, or as a zip-format torch.save)")


def check_plain(value: object, source: Path | str, depth: int = 0) -> None:
    """Raise :class:`DatasetFileError` unless ``value`` is made of numeric/string NumPy arrays and scalars, dicts,
    lists, tuples, strings, bytes, numbers and ``None``."""
    if depth > 50:
        raise DatasetFileError(f"{source} nests containers more than 50 deep")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufU":
            raise DatasetFileError(f"{source} holds an array of dtype {value.dtype}; expected numbers or strings")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, source, depth + 1)
            check_plain(item, source, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_plain(item, source, depth + 1)
    elif not isinstance(value, (str, bytes, int, float, bool, type(None), np.generic)):
        raise DatasetFileError(f"{source} holds a {type(value).__name__}; expected arrays and plain containers")


def _unpickle_records(path: Path, data: bytes, count: int) -> list[object]:
    """The first ``count`` pickle records of ``data``, each through :class:`RestrictedUnpickler`."""
    stream = io.BytesIO(data)
    records = []
    try:
        for _ in range(count):
            records.append(RestrictedUnpickler(stream, path).load())
    except DatasetFileError:
        raise
    except MemoryError as exc:
        raise DatasetFileError(f"{path} declares an array too large to build (corrupt?)") from exc
    except Exception as exc:  # noqa: BLE001  (pickle raises UnpicklingError, EOFError, ValueError, TypeError, ...)
        raise DatasetFileError(f"{path} is not a readable pickle (corrupt or truncated?): {type(exc).__name__}: "
                               f"{str(exc)[:200]}") from exc
    for record in records:
        check_plain(record, path)
    return records


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DatasetFileError(f"missing file {path}")
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise DatasetFileError(f"{path} is larger than {MAX_PICKLE_BYTES} bytes; not a fragment or metadata file")
    data = path.read_bytes()
    if not data:
        raise DatasetFileError(f"{path} is empty")
    return data


def read_pickle(path: Path | str) -> object:
    """The object of a plain pickle file (``.pkl``), read with :class:`RestrictedUnpickler`."""
    path = Path(path)
    return _unpickle_records(path, _read_bytes(path), 1)[0]


def read_torch_legacy(path: Path, data: bytes) -> object:
    """The object of a legacy ``torch.save`` stream: magic number, protocol version, system info, the object (and the
    storage keys, which must be empty), each record a pickle read with :class:`RestrictedUnpickler`."""
    magic, protocol, _info, obj = _unpickle_records(path, data, 4)
    if magic != TORCH_LEGACY_MAGIC or protocol != 1001:
        raise DatasetFileError(f"{path} is not a torch.save file (magic {magic!r}, protocol {protocol!r})")
    return obj


def read_fragment(path: Path | str) -> np.ndarray:
    """The points ``(N, 3)`` float64 of a fragment file (``.pth`` legacy or zip ``torch.save``, ``.npy``).

    Raises:
        DatasetFileError: missing, empty, corrupt, not ``(N, 3)`` numbers, NaN/inf, or a pickle naming anything but
            NumPy arrays.
    """
    path = Path(path)
    data = _read_bytes(path)
    if path.suffix.lower() == ".npy":
        try:
            points = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetFileError(f"{path} is not a readable .npy file: {exc}") from exc
    elif zipfile.is_zipfile(io.BytesIO(data)):
        points = _read_torch_zip(path)
    else:
        points = read_torch_legacy(path, data)
    if hasattr(points, "numpy") and not isinstance(points, np.ndarray):
        points = points.detach().cpu().numpy()
    if isinstance(points, dict):
        points = points.get("points", points.get("coords", points.get("pos")))
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] != 3 or points.dtype.kind not in "iuf":
        shape = getattr(points, "shape", type(points).__name__)
        raise DatasetFileError(f"{path} must hold an (N, 3) array of coordinates; got {shape}")
    if len(points) == 0:
        raise DatasetFileError(f"{path} holds no points")
    points = points.astype(np.float64)
    check_coordinates(points, path, "coordinates")
    return points


def _read_torch_zip(path: Path) -> object:
    import torch  # noqa: PLC0415

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (UnpicklingError, RuntimeError, zip errors)
        raise DatasetFileError(f"{path} is not a readable torch.save file of a tensor (weights_only): "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from exc


@dataclass
class PairTable:
    """Fragment pairs: ``source[k]`` and ``target[k]`` (paths relative to the data root, e.g.
    ``test/7-scenes-redkitchen/cloud_bin_1.pth``), the pose ``transform (P, 4, 4)`` float64 mapping source into
    target, ``overlap (P,)``, the ``scene`` names and the fragment ids ``source_id``/``target_id (P,)``."""

    source: list[str]
    target: list[str]
    transform: np.ndarray
    overlap: np.ndarray
    scene: list[str]
    source_id: np.ndarray
    target_id: np.ndarray

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, index: Iterable[int]) -> PairTable:
        """The pairs ``index`` (in that order)."""
        index = np.asarray(list(index), dtype=np.int64)
        return PairTable([self.source[i] for i in index], [self.target[i] for i in index], self.transform[index],
                         self.overlap[index], [self.scene[i] for i in index], self.source_id[index],
                         self.target_id[index])


def _fragment_parts(rel: str, path: Path) -> tuple[str, int]:
    """``(scene, fragment id)`` of ``<split>/<scene>/cloud_bin_<k>.pth``."""
    parts = rel.replace("\\", "/").split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    if len(parts) < 2 or not stem.startswith("cloud_bin_") or not stem[len("cloud_bin_"):].isdigit():
        raise DatasetFileError(f"{path} names the fragment {rel[:120]!r}; expected <split>/<scene>/cloud_bin_<k>.pth")
    return parts[-2], int(stem[len("cloud_bin_"):])


def _poses(rotation: object, translation: object, count: int, path: Path) -> np.ndarray:
    try:
        rot = np.asarray(rotation, dtype=np.float64).reshape(count, 3, 3)
        trans = np.asarray(translation, dtype=np.float64).reshape(count, 3)
    except (ValueError, TypeError) as exc:
        raise DatasetFileError(f"{path}: rotations must be {count} 3×3 and translations {count} 3-vectors: "
                               f"{exc}") from exc
    if not (np.isfinite(rot).all() and np.isfinite(trans).all()):
        raise DatasetFileError(f"{path} has NaN or inf poses")
    if (np.abs(rot) > 1 + POSE_TOLERANCE).any():
        raise DatasetFileError(f"{path}: pair {int(np.argmax((np.abs(rot) > 1 + POSE_TOLERANCE).any(axis=(1, 2))))} "
                               f"has a rotation that is not a rotation matrix (an entry beyond ±1)")
    bad = np.flatnonzero(rotation_defect(torch.from_numpy(rot)).numpy() > POSE_TOLERANCE)
    if len(bad):
        raise DatasetFileError(f"{path}: pair {int(bad[0])} has a rotation that is not a rotation matrix")
    out = np.tile(np.eye(4), (count, 1, 1))
    out[:, :3, :3], out[:, :3, 3] = rot, trans
    return out


def read_pair_metadata(path: Path | str) -> PairTable:
    """The pairs of a PREDATOR (dict of sequences) or GeoTransformer (list of dicts) metadata pickle; the layout is
    recognised from the structure. See the module docstring for the conventions."""
    path = Path(path)
    obj = read_pickle(path)
    try:
        if isinstance(obj, dict):
            missing = [k for k in ("src", "tgt", "rot", "trans", "overlap") if k not in obj]
            if missing:
                raise DatasetFileError(f"{path} is a dict without {', '.join(missing)}; expected PREDATOR's keys "
                                       f"src, tgt, rot, trans, overlap")
            source, target = [str(s) for s in obj["src"]], [str(s) for s in obj["tgt"]]
            count = len(source)
            if any(len(obj[k]) != count for k in ("tgt", "rot", "trans", "overlap")):
                raise DatasetFileError(f"{path}: src, tgt, rot, trans and overlap have different lengths")
            rotation, translation, overlap = obj["rot"], obj["trans"], obj["overlap"]
        elif isinstance(obj, list):
            keys = ("pcd0", "pcd1", "rotation", "translation", "overlap")
            for k, row in enumerate(obj):
                if not isinstance(row, dict) or any(key not in row for key in keys):
                    raise DatasetFileError(f"{path}: entry {k} is not a dict with GeoTransformer's keys {keys}")
            source, target = [str(r["pcd1"]) for r in obj], [str(r["pcd0"]) for r in obj]
            count = len(obj)
            rotation, translation = [r["rotation"] for r in obj], [r["translation"] for r in obj]
            overlap = [r["overlap"] for r in obj]
        else:
            raise DatasetFileError(f"{path} holds a {type(obj).__name__}; expected PREDATOR's dict or "
                                   f"GeoTransformer's list of pairs")
        overlap = np.asarray(overlap, dtype=np.float64).reshape(count)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DatasetFileError):
            raise
        raise DatasetFileError(f"{path} has malformed pair entries: {exc}") from exc
    if count == 0:
        raise DatasetFileError(f"{path} lists no pairs")
    transform = _poses(rotation, translation, count, path)
    src_parts = [_fragment_parts(s, path) for s in source]
    tgt_parts = [_fragment_parts(t, path) for t in target]
    mixed = next((k for k, (a, b) in enumerate(zip(src_parts, tgt_parts)) if a[0] != b[0]), None)
    if mixed is not None:
        raise DatasetFileError(f"{path}: pair {mixed} joins fragments of two scenes ({source[mixed]}, {target[mixed]})")
    return PairTable(source, target, transform, overlap, [s for s, _ in src_parts],
                     np.asarray([i for _, i in src_parts], dtype=np.int64),
                     np.asarray([i for _, i in tgt_parts], dtype=np.int64))


def _blocks(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Headers ``(P, 2)`` (``i, j``), matrices ``(P, size, size)`` and the scene's fragment count of a file made of
    blocks of a header ``i j n`` and ``size`` rows of ``size`` numbers."""
    lines = read_text_lines(path, "benchmark")
    block = size + 1
    if len(lines) % block:
        raise DatasetFileError(f"{path} has {len(lines)} lines, not a whole number of {block}-line blocks "
                               f"(a header 'i j n' and {size} rows of {size} numbers each)")
    headers, matrices = [], []
    for b in range(len(lines) // block):
        at = b * block
        head = lines[at].split()
        if len(head) != 3 or not all(h.lstrip("-").isdigit() for h in head):
            raise DatasetFileError(f"{path}, line {at + 1}: block header {lines[at][:80]!r} is not 'i j n' "
                                   f"(three integers)")
        widths = [len(line.split()) for line in lines[at + 1: at + block]]
        if widths != [size] * size:
            raise DatasetFileError(f"{path}, block at line {at + 1}: expected a {size}×{size} matrix; the rows "
                                   f"have {widths} numbers")
        try:
            rows = np.asarray([[float(v) for v in line.split()] for line in lines[at + 1: at + block]])
        except ValueError as exc:
            raise DatasetFileError(f"{path}, block at line {at + 1}: a matrix row holds something else than "
                                   f"numbers ({exc})") from exc
        headers.append([int(h) for h in head])
        matrices.append(rows)
    heads = np.asarray(headers, dtype=np.int64)
    mats = np.asarray(matrices, dtype=np.float64)
    if not np.isfinite(mats).all():
        raise DatasetFileError(f"{path} holds NaN or inf values")
    n_frames = int(heads[0, 2])
    if (heads[:, 2] != n_frames).any() or (heads[:, :2] < 0).any() or (heads[:, :2] >= n_frames).any():
        raise DatasetFileError(f"{path}: every header must name fragments 0 <= i, j < n with the same n")
    return heads[:, :2], mats, n_frames


@dataclass
class BenchmarkScene:
    """One scene of the benchmark: ``pairs (P, 2)`` fragment ids ``(i, j)`` with ``transform (P, 4, 4)`` mapping
    fragment ``j`` (source) into fragment ``i`` (target), ``information (P, 6, 6)`` (``gt.info``), the number of
    fragments, and the ``overlap`` of every fragment pair of the scene ``{(i, j): ratio}`` (``gt_overlap.log``)."""

    name: str
    pairs: np.ndarray
    transform: np.ndarray
    information: np.ndarray
    num_fragments: int
    overlap: dict[tuple[int, int], float]


def read_gt_log(path: Path | str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(pairs (P, 2), poses (P, 4, 4), n_fragments)`` of a ``gt.log`` (poses map fragment ``j`` into ``i``)."""
    path = Path(path)
    pairs, poses, n = _blocks(path, 4)
    bottom = np.abs(poses[:, 3] - np.array([0, 0, 0, 1.0])).max(axis=1)
    if (bottom > 1e-6).any():
        raise DatasetFileError(f"{path}: block {int(np.argmax(bottom > 1e-6)) + 1} is not a rigid 4×4 pose "
                               f"(last row must be 0 0 0 1)")
    return pairs, poses, n


def read_gt_info(path: Path | str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(pairs (P, 2), information (P, 6, 6), n_fragments)`` of a ``gt.info``.

    An all-zero matrix is kept: the official files hold one (3DLoMatch, ``sun3d-home_md``, pair 23-25), for which the
    benchmark's test divides by zero and so never accepts the pair."""
    path = Path(path)
    pairs, info, n = _blocks(path, 6)
    if (np.abs(info - info.transpose(0, 2, 1)) > 1e-6 * np.abs(info).max()).any() or (info[:, 0, 0] < 0).any():
        raise DatasetFileError(f"{path}: information matrices must be symmetric with a non-negative first entry")
    return pairs, info, n


def read_gt_overlap(path: Path | str) -> dict[tuple[int, int], float]:
    """``{(i, j): overlap}`` of a ``gt_overlap.log`` (lines ``i,j,overlap``)."""
    path = Path(path)
    out = {}
    for number, line in enumerate(read_text_lines(path, "benchmark"), 1):
        fields = line.replace(",", " ").split()
        try:
            i, j, value = int(fields[0]), int(fields[1]), float(fields[2])
            if len(fields) != 3 or not 0 <= value <= 1:
                raise ValueError("expected three fields and an overlap in [0, 1]")
        except (ValueError, IndexError) as exc:
            raise DatasetFileError(f"{path}, line {number}: {line[:80]!r} is not 'i,j,overlap' ({exc})") from exc
        out[(i, j)] = value
    return out


def read_benchmark_scene(folder: Path | str) -> BenchmarkScene:
    """The ``gt.log``, ``gt.info`` and ``gt_overlap.log`` of one scene folder, checked to list the same pairs."""
    folder = Path(folder)
    pairs, poses, n = read_gt_log(folder / "gt.log")
    info_pairs, info, n_info = read_gt_info(folder / "gt.info")
    if n_info != n or not np.array_equal(info_pairs, pairs):
        raise DatasetFileError(f"{folder}: gt.info does not list the pairs of gt.log in the same order")
    return BenchmarkScene(folder.name, pairs, poses, info, n, read_gt_overlap(folder / "gt_overlap.log"))


def read_benchmark(folder: Path | str) -> dict[str, BenchmarkScene]:
    """Every scene (sub-folder with a ``gt.log``) of a benchmark folder, e.g. ``configs/benchmarks/3DMatch``."""
    folder = Path(folder)
    scenes = sorted(p for p in folder.iterdir() if (p / "gt.log").is_file()) if folder.is_dir() else []
    if not scenes:
        raise DatasetFileError(f"{folder} holds no scene folders with a gt.log")
    return {p.name: read_benchmark_scene(p) for p in scenes}
