"""Reading a user's point or mesh file into a cloud: ``.ply``, ``.pcd``, ``.xyz``, ``.txt``, ``.off``, ``.obj``, ``.stl``.

Point files keep their points (and normals when present); meshes are sampled by area to ``num_points`` points with
face normals. Every failure is one :class:`~pointgeo.datamodules.readers.DatasetFileError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointgeo.datamodules.readers import DatasetFileError, read_off, read_txt_cloud, sample_mesh

POINT_FORMATS = (".ply", ".pcd", ".xyz", ".txt")
MESH_FORMATS = (".off", ".obj", ".stl")


def _mesh_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix.lower() == ".off":
        return read_off(path)
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001  (trimesh raises many kinds of errors for bad files)
        raise DatasetFileError(f"{path} is not a readable mesh: {exc}") from exc
    if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise DatasetFileError(f"{path} has no vertices or no faces")
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def read_points(path: str | Path, num_points: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pos (N, 3), normal (N, 3) | None)`` float32 from a point or mesh file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".xyz"):
        rows = read_txt_cloud(path, columns=(3, 6))
        pos, normal = rows[:, :3], (rows[:, 3:6] if rows.shape[1] == 6 else None)
    elif suffix in (".ply", ".pcd"):
        import open3d as o3d

        cloud = o3d.io.read_point_cloud(str(path))
        if not cloud.has_points():
            if suffix == ".ply":  # maybe a mesh ply
                vertices, faces = _mesh_arrays(path)
                return sample_mesh(vertices, faces, num_points, seed)
            raise DatasetFileError(f"{path} contains no points")
        pos = np.asarray(cloud.points, dtype=np.float32)
        normal = np.asarray(cloud.normals, dtype=np.float32) if cloud.has_normals() else None
    elif suffix in MESH_FORMATS:
        vertices, faces = _mesh_arrays(path)
        return sample_mesh(vertices, faces, num_points, seed)
    else:
        raise DatasetFileError(f"{path}: unsupported file type {suffix!r}; use one of {POINT_FORMATS + MESH_FORMATS}")
    if len(pos) == 0:
        raise DatasetFileError(f"{path} contains no points")
    if not np.isfinite(pos).all() or (normal is not None and not np.isfinite(normal).all()):
        raise DatasetFileError(f"{path} contains NaN or inf values")
    return pos.astype(np.float32), None if normal is None else normal.astype(np.float32)
