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
    except OSError as exc:
        raise DatasetFileError(f"cannot read {path}: {exc}") from exc
    if not text.strip():
        raise DatasetFileError(f"{path} is empty; expected rows of {' or '.join(map(str, allowed))} numbers")
    try:
        rows = np.loadtxt(text.replace(",", " ").splitlines(), dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DatasetFileError(f"{path} is corrupt or truncated (rows of unequal length or not numbers): {exc}") from exc
    if rows.shape[1] not in allowed:
        raise DatasetFileError(f"{path} has {rows.shape[1]} columns per row; expected {' or '.join(map(str, allowed))}")
    if not np.isfinite(rows).all():
        raise DatasetFileError(f"{path} contains NaN or inf values")
    return rows


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` float64 and triangles ``(F, 3)`` int64 of an OFF file."""
    try:
        tokens = path.read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"cannot read {path}: {exc}") from exc
    if not tokens or not tokens[0].startswith("OFF"):
        raise DatasetFileError(f"{path} is not an OFF file (it must start with 'OFF')")
    head = [tokens[0][3:]] if tokens[0] != "OFF" else []  # 'OFF490' glues the vertex count to the keyword
    tokens = head + tokens[1:]
    try:
        n_vert, n_face = int(tokens[0]), int(tokens[1])
        vertices = np.asarray(tokens[3 : 3 + 3 * n_vert], dtype=np.float64).reshape(n_vert, 3)
        faces, pos = [], 3 + 3 * n_vert
        for _ in range(n_face):
            k = int(tokens[pos])
            poly = [int(t) for t in tokens[pos + 1 : pos + 1 + k]]
            if len(poly) != k:
                raise ValueError("truncated face list")
            faces += [[poly[0], poly[i], poly[i + 1]] for i in range(1, k - 1)]
            pos += 1 + k
    except (ValueError, IndexError) as exc:
        raise DatasetFileError(f"{path} is corrupt or truncated: {exc}") from exc
    triangles = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if n_vert == 0 or len(triangles) == 0:
        raise DatasetFileError(f"{path} has no vertices or no faces")
    if triangles.max() >= n_vert or triangles.min() < 0:
        raise DatasetFileError(f"{path} has a face that indexes a missing vertex")
    if not np.isfinite(vertices).all():
        raise DatasetFileError(f"{path} contains NaN or inf vertices")
    return vertices, triangles


def sample_mesh(vertices: np.ndarray, triangles: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted surface points ``(n, 3)`` and their unit face normals ``(n, 3)``, float32."""
    mesh = trimesh.Trimesh(vertices, triangles, process=False)
    if mesh.area <= 0:
        raise DatasetFileError("the mesh has zero surface area (all faces degenerate)")
    points, face_index = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return points.astype(np.float32), mesh.face_normals[face_index].astype(np.float32)


def read_h5_arrays(path: Path, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The ``data (S, N, 3)`` (as ``pos``), ``label (S,)``, ``normal (S, N, 3)`` when present, and the required
    ``extra`` datasets (e.g. ShapeNet part's per-point ``pid``) of an HDF5 shard."""
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
    return out
