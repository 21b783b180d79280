"""Readers of the official point-cloud and mesh file formats, each failing with one clear message.

* ``read_txt_cloud``: ``modelnet40_normal_resampled`` rows ``x,y,z,nx,ny,nz`` (commas or spaces).
* ``read_off``: Object File Format meshes, including the glued header of some ModelNet files (``OFF490 518 0``);
  polygons are fan-triangulated.
* ``sample_mesh``: area-weighted surface points with their face normals (trimesh), seeded.
* ``read_h5_arrays``: the ``data`` / ``label`` / ``normal`` arrays of an HDF5 shard (and per-point extras).
* ``read_split_json``: a ShapeNet part split list (``shape_data/<synset>/<id>`` entries).
* ``read_apen_npz``: APEN's articulated-shape arrays (``arr_0 (S, N, 11)``: xyz, normal, part, vote, class).

Whatever is wrong with a file (empty, truncated, bit-flipped, wrongly typed, not the format at all), the only error
that comes out is :class:`DatasetFileError` naming the file; ``tests/datamodules/test_fuzz_readers.py`` fuzzes every
reader to hold that. Coordinates must be finite and within ``COORDINATE_LIMIT`` in magnitude.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import trimesh


class DatasetFileError(ValueError):
    """A file pointgeo reads (dataset file, processed cache, checkpoint, a user's point file) is empty, truncated,
    corrupt or not in the expected format. The message names the file and what is wrong."""


COORDINATE_LIMIT = 1e18
"""Largest coordinate magnitude a reader accepts: beyond about 1.8e19, squared distances overflow float32."""

H5_EXPANSION_LIMIT = 100
"""An HDF5 dataset may declare at most this many times the file's size (compression): more means corrupt sizes."""


def check_coordinates(values: np.ndarray, path: Path | str, what: str = "coordinates") -> None:
    """Raise :class:`DatasetFileError` unless every value is finite and within ``COORDINATE_LIMIT``."""
    finite = np.isfinite(values)
    if not finite.all():
        raise DatasetFileError(f"{path} contains NaN or inf {what}")
    if values.size and np.abs(values).max() > COORDINATE_LIMIT:
        raise DatasetFileError(f"{path} has {what} of magnitude {np.abs(values).max():.3g}, beyond the limit "
                               f"{COORDINATE_LIMIT:.0e} (squared distances would overflow float32)")


def read_txt_cloud(path: Path, columns: int | tuple[int, ...] = 6) -> np.ndarray:
    """``(N, C)`` float32 rows of a text point file (comma or whitespace separated), ``C`` one of ``columns``."""
    allowed = (columns,) if isinstance(columns, int) else columns
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"cannot read {path}: {exc}") from exc
    if not text.strip():
        raise DatasetFileError(f"{path} is empty; expected rows of {' or '.join(map(str, allowed))} numbers")
    try:
        rows = np.loadtxt(text.replace(",", " ").splitlines(), dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DatasetFileError(
            f"{path} is corrupt or truncated (rows of unequal length or not numbers): {exc}") from exc
    if len(rows) == 0:
        raise DatasetFileError(f"{path} holds no rows (only comments)")
    if rows.shape[1] not in allowed:
        raise DatasetFileError(f"{path} has {rows.shape[1]} columns per row; expected {' or '.join(map(str, allowed))}")
    check_coordinates(rows, path, "values")
    return rows


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` float64 and triangles ``(F, 3)`` int64 of an OFF file (polygons fan-triangulated)."""
    try:
        tokens = path.read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"cannot read {path}: {exc}") from exc
    if not tokens:
        raise DatasetFileError(f"{path} is empty; expected an OFF mesh")
    if not tokens[0].startswith("OFF"):
        raise DatasetFileError(f"{path} is not an OFF file (it must start with 'OFF')")
    head = [tokens[0][3:]] if tokens[0] != "OFF" else []  # 'OFF490' glues the vertex count to the keyword
    tokens = head + tokens[1:]
    try:
        n_vert, n_face = int(tokens[0]), int(tokens[1])
        if n_vert < 0 or n_face < 0:
            raise ValueError(f"negative counts {n_vert} vertices, {n_face} faces")
        if len(tokens) < 3 + 3 * n_vert:
            raise ValueError(f"{n_vert} vertices announced, fewer present")
        if len(tokens) < 3 + 3 * n_vert + 4 * n_face:  # every face is at least "3 i j k"
            raise ValueError(f"{n_face} faces announced, fewer present")
        vertices = np.asarray(tokens[3 : 3 + 3 * n_vert], dtype=np.float64).reshape(n_vert, 3)
        triangles = _triangulate(np.asarray(tokens[3 + 3 * n_vert :], dtype=np.int64), n_face)
    except (ValueError, IndexError, OverflowError) as exc:  # OverflowError: an integer beyond int64
        raise DatasetFileError(f"{path} is corrupt or truncated: {exc}") from exc
    if n_vert == 0 or len(triangles) == 0:
        raise DatasetFileError(f"{path} has no vertices or no faces")
    if triangles.max() >= n_vert or triangles.min() < 0:
        raise DatasetFileError(f"{path} has a face that indexes a missing vertex")
    check_coordinates(vertices, path, "vertices")
    return vertices, triangles


def _triangulate(face_tokens: np.ndarray, n_face: int) -> np.ndarray:
    """Fan triangles ``(F', 3)`` of the OFF face block ``k i0 ... i(k-1)`` repeated ``n_face`` times.

    Meshes whose faces all have the same ``k`` (nearly all of ModelNet) are reshaped at once; mixed polygons walk
    the counts to find where each face starts, then triangulate every polygon size at once.
    """
    if n_face == 0:
        return np.zeros((0, 3), dtype=np.int64)
    k = int(face_tokens[0])
    if k >= 3 and len(face_tokens) >= n_face * (k + 1):
        block = face_tokens[: n_face * (k + 1)].reshape(n_face, k + 1)
        if (block[:, 0] == k).all():
            return _fan(block[:, 1:])
    starts = np.empty(n_face, dtype=np.int64)
    at = 0
    for i in range(n_face):  # each start depends on the previous face's size: inherently sequential
        if at >= len(face_tokens):
            raise ValueError(f"{n_face} faces announced, the face list ends early")
        starts[i] = at
        at += max(int(face_tokens[at]), 0) + 1
    if at > len(face_tokens):
        raise ValueError(f"{n_face} faces announced, the face list ends early")
    sizes = face_tokens[starts]
    if (sizes < 3).any():
        raise ValueError("a face has fewer than 3 vertices")
    return np.concatenate([_fan(face_tokens[starts[sizes == s][:, None] + 1 + np.arange(s)]) for s in np.unique(sizes)])


def _fan(polygons: np.ndarray) -> np.ndarray:
    """Fan triangulation ``(F * (k - 2), 3)`` of polygons ``(F, k)``: ``(p0, p_i, p_{i+1})``."""
    k = polygons.shape[1]
    i = np.arange(1, k - 1)
    tri = np.stack([np.broadcast_to(polygons[:, :1], (len(polygons), k - 2)), polygons[:, i], polygons[:, i + 1]], -1)
    return tri.reshape(-1, 3)


def sample_mesh(
    vertices: np.ndarray, triangles: np.ndarray, n: int, seed: int, source: Path | str = "the mesh"
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted surface points ``(n, 3)`` and their unit face normals ``(n, 3)``, float32.

    Degenerate (zero-area) faces are never drawn, so every normal has unit length. ``source`` names the mesh in
    errors.
    """
    mesh = trimesh.Trimesh(vertices, triangles, process=False)
    if not np.isfinite(mesh.area):
        raise DatasetFileError(f"{source} has a surface area too large for float64 (vertices far too large)")
    if not mesh.area > 0:
        raise DatasetFileError(f"{source} has zero surface area (all faces degenerate)")
    points, face_index = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return points.astype(np.float32), mesh.face_normals[face_index].astype(np.float32)


def read_h5_arrays(path: Path, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The ``data (S, N, 3)`` (as ``pos``), ``label (S,)``, ``normal (S, N, 3)`` when present, and the required
    per-point ``extra`` datasets ``(S, N)`` of integers (ShapeNet part's ``pid``, ScanObjectNN's ``mask``) of an
    HDF5 shard. Labels must be non-negative integers."""
    if not path.is_file():
        raise DatasetFileError(f"missing HDF5 shard {path}")
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in ("data", "label", *extra) if k not in fh]
            if missing:
                raise DatasetFileError(f"{path} has no {' or '.join(missing)} dataset; keys: {sorted(fh.keys())}")
            out = {"pos": _h5_numbers(fh, "data", path, np.float32),
                   "label": _h5_integers(fh, "label", path).reshape(-1)}
            if "normal" in fh:
                out["normal"] = _h5_numbers(fh, "normal", path, np.float32)
            for key in extra:
                out[key] = _h5_integers(fh, key, path)
    except DatasetFileError:
        raise
    except Exception as exc:  # noqa: BLE001  (h5py reports corruption as OSError, KeyError, RuntimeError, ...)
        raise DatasetFileError(f"{path} is not a readable HDF5 file (corrupt or truncated?): "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if out["pos"].ndim != 3 or out["pos"].shape[-1] != 3 or len(out["label"]) != len(out["pos"]):
        raise DatasetFileError(f"{path}: data must be (S, N, 3) with S labels; got {out['pos'].shape}, "
                               f"{out['label'].shape}")
    check_coordinates(out["pos"], path, "coordinates")
    if len(out["label"]) and out["label"].min() < 0:
        raise DatasetFileError(f"{path} has a negative label {int(out['label'].min())}")
    if "normal" in out:
        if out["normal"].shape != out["pos"].shape:
            raise DatasetFileError(f"{path}: normal must have the shape of data {out['pos'].shape}; "
                                   f"got {out['normal'].shape}")
        if not np.isfinite(out["normal"]).all():
            raise DatasetFileError(f"{path} contains NaN or inf normals")
    for key in extra:
        if out[key].shape != out["pos"].shape[:2]:
            raise DatasetFileError(f"{path}: {key} must be per point, {out['pos'].shape[:2]}; got {out[key].shape}")
    return out


def _h5_dataset(fh: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """``fh[key]`` if it is a dataset of plausible size (``H5_EXPANSION_LIMIT``) and real numbers."""
    dset = fh[key]
    if not isinstance(dset, h5py.Dataset):
        raise DatasetFileError(f"{path}: {key} is a {type(dset).__name__}, not a dataset")
    if dset.dtype.kind not in "biuf":
        raise DatasetFileError(f"{path}: {key} has dtype {dset.dtype}; expected numbers")
    declared = dset.size * dset.dtype.itemsize
    if declared > H5_EXPANSION_LIMIT * path.stat().st_size + (1 << 20):
        raise DatasetFileError(f"{path}: {key} declares {declared} bytes in a file of {path.stat().st_size} "
                               f"(corrupt sizes)")
    return dset


def _h5_numbers(fh: h5py.File, key: str, path: Path, dtype: type) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf, rejected afterwards
        return np.asarray(_h5_dataset(fh, key, path)[()]).astype(dtype)


def _h5_integers(fh: h5py.File, key: str, path: Path) -> np.ndarray:
    values = np.asarray(_h5_dataset(fh, key, path)[()])
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or (values != np.round(values)).any() or (np.abs(values) > 2**62).any():
            raise DatasetFileError(f"{path}: {key} must hold integers; it holds other numbers")
    elif values.dtype.kind == "u" and values.size and values.max() > 2**62:
        raise DatasetFileError(f"{path}: {key} holds integers beyond int64")
    return values.astype(np.int64)


def read_split_json(path: Path) -> list[tuple[str, str]]:
    """``(synset, shape id)`` of every ``"shape_data/<synset>/<id>"`` entry of a ShapeNet part split JSON list."""
    if not path.is_file():
        raise DatasetFileError(f"missing split file {path}")
    try:
        entries = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DatasetFileError(f"{path} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise DatasetFileError(f"{path} must hold a JSON list of strings \"shape_data/<synset>/<shape id>\"")
    if not entries:
        raise DatasetFileError(f"{path} lists no shapes (an empty JSON list)")
    pairs = [tuple(e.split("/")[-2:]) for e in entries]
    bad = next((e for e, p in zip(entries, pairs) if len(p) != 2 or not all(p) or "\x00" in e), None)
    if bad is not None:
        raise DatasetFileError(f"{path} has the entry {bad[:100]!r}; expected \"shape_data/<synset>/<shape id>\"")
    return pairs  # type: ignore[return-value]


APEN_COLUMNS = 11
"""Columns of APEN's ``arr_0``: ``x y z``, ``nx ny nz``, part label, vote ``vx vy vz`` (offset to the part centre),
class id."""


def read_apen_npz(path: Path) -> dict[str, np.ndarray]:
    """APEN's npz layout (``train_random_pose.npz``, ``test_class.npz`` ...): one array ``arr_0 (S, N, 11)`` →
    ``pos (S, N, 3)``, ``normal (S, N, 3)``, ``vote (S, N, 3)`` float32, ``part (S, N)`` and ``label (S,)`` int64
    (the class column, one value per shape). Part labels and classes must be non-negative integers."""
    if not path.is_file():
        raise DatasetFileError(f"missing APEN npz file {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "arr_0" not in npz.files:
                raise DatasetFileError(f"{path} has no arr_0 array; arrays: {sorted(npz.files)}")
            arr = npz["arr_0"]
    except DatasetFileError:
        raise
    except Exception as exc:  # noqa: BLE001  (zipfile, numpy format and OS errors of corrupt files)
        raise DatasetFileError(f"{path} is not a readable npz file (corrupt or truncated?): "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if arr.dtype.kind not in "biuf":
        raise DatasetFileError(f"{path}: arr_0 has dtype {arr.dtype}; expected numbers")
    if arr.ndim != 3 or arr.shape[-1] != APEN_COLUMNS or arr.shape[1] == 0:
        raise DatasetFileError(f"{path}: arr_0 must be (shapes, points, {APEN_COLUMNS}) (xyz, normal, part, vote, "
                               f"class); got {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        values = arr.astype(np.float64)
    check_coordinates(values, path, "values")
    labels = values[..., [6, 10]]
    if (labels != np.round(labels)).any() or (labels < 0).any():
        raise DatasetFileError(f"{path}: the part (column 6) and class (column 10) must be non-negative integers")
    if (values[..., 10] != values[:, :1, 10]).any():
        raise DatasetFileError(f"{path}: the class column (10) must hold one value per shape")
    return {"pos": values[..., :3].astype(np.float32), "normal": values[..., 3:6].astype(np.float32),
            "part": values[..., 6].astype(np.int64), "vote": values[..., 7:10].astype(np.float32),
            "label": values[:, 0, 10].astype(np.int64)}
