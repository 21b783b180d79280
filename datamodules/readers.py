"""Readers of the official point-cloud and mesh file formats, each failing with one clear message.

* ``read_txt_cloud``: ``modelnet40_normal_resampled`` rows ``x,y,z,nx,ny,nz`` (commas or spaces).
* ``read_off``: Object File Format meshes, including the glued header of some ModelNet files (``OFF490 518 0``);
  polygons are fan-triangulated.
* ``sample_mesh``: area-weighted surface points with their face normals (trimesh), seeded.
* ``read_h5_arrays``: the ``data`` / ``label`` / ``normal`` arrays of an HDF5 shard.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import trimesh


class DatasetFileError(ValueError):
    """A dataset file is empty, truncated, corrupt or not in the expected format."""


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
    if rows.shape[1] not in allowed:
        raise DatasetFileError(f"{path} has {rows.shape[1]} columns per row; expected {' or '.join(map(str, allowed))}")
    if not np.isfinite(rows).all():
        raise DatasetFileError(f"{path} contains NaN or inf values")
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
        if len(tokens) < 3 + 3 * n_vert:
            raise ValueError(f"{n_vert} vertices announced, fewer present")
        vertices = np.asarray(tokens[3 : 3 + 3 * n_vert], dtype=np.float64).reshape(n_vert, 3)
        triangles = _triangulate(np.asarray(tokens[3 + 3 * n_vert :], dtype=np.int64), n_face)
    except (ValueError, IndexError) as exc:
        raise DatasetFileError(f"{path} is corrupt or truncated: {exc}") from exc
    if n_vert == 0 or len(triangles) == 0:
        raise DatasetFileError(f"{path} has no vertices or no faces")
    if triangles.max() >= n_vert or triangles.min() < 0:
        raise DatasetFileError(f"{path} has a face that indexes a missing vertex")
    if not np.isfinite(vertices).all():
        raise DatasetFileError(f"{path} contains NaN or inf vertices")
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
        starts[i] = at
        at += int(face_tokens[at]) + 1
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
    if not mesh.area > 0:
        raise DatasetFileError(f"{source} has zero surface area (all faces degenerate)")
    points, face_index = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return points.astype(np.float32), mesh.face_normals[face_index].astype(np.float32)


def read_h5_arrays(path: Path, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The ``data (S, N, 3)`` (as ``pos``), ``label (S,)``, ``normal (S, N, 3)`` when present, and the required
    ``extra`` datasets (e.g. ShapeNet part's per-point ``pid``) of an HDF5 shard."""
    if not path.is_file():
        raise DatasetFileError(f"missing HDF5 shard {path}")
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in ("data", "label", *extra) if k not in fh]
            if missing:
                raise DatasetFileError(f"{path} has no {' or '.join(missing)} dataset; keys: {sorted(fh.keys())}")
            out = {"pos": fh["data"][...].astype(np.float32), "label": fh["label"][...].reshape(-1).astype(np.int64)}
            if "normal" in fh:
                out["normal"] = fh["normal"][...].astype(np.float32)
            for key in extra:
                out[key] = fh[key][...]
    except OSError as exc:
        raise DatasetFileError(f"{path} is not a readable HDF5 file (corrupt or truncated?): {exc}") from exc
    if out["pos"].ndim != 3 or out["pos"].shape[-1] != 3 or len(out["label"]) != len(out["pos"]):
        raise DatasetFileError(f"{path}: data must be (S, N, 3) with S labels; got {out['pos'].shape}, "
                               f"{out['label'].shape}")
    if not np.isfinite(out["pos"]).all():
        raise DatasetFileError(f"{path} contains NaN or inf coordinates")
    if "normal" in out:
        if out["normal"].shape != out["pos"].shape:
            raise DatasetFileError(f"{path}: normal must have the shape of data {out['pos'].shape}; "
                                   f"got {out['normal'].shape}")
        if not np.isfinite(out["normal"]).all():
            raise DatasetFileError(f"{path} contains NaN or inf normals")
    return out
