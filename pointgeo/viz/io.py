"""Reading a user's point or mesh file into a cloud: ``.ply``, ``.pcd``, ``.xyz``, ``.txt``, ``.off``, ``.obj``,
``.stl``.

Point files keep their points (and normals when present); meshes (and ``.ply`` files with faces) are sampled by area
to ``num_points`` points with face normals. Every failure is one
:class:`~pointgeo.datamodules.readers.DatasetFileError` naming the file. PLY files are parsed by trimesh and PCD
files by :mod:`pointgeo.viz.pcd`: Open3D's readers crash the process on some corrupt files of both formats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointgeo.datamodules.readers import DatasetFileError, check_coordinates, read_off, read_txt_cloud, sample_mesh

POINT_FORMATS = (".ply", ".pcd", ".xyz", ".txt")
MESH_FORMATS = (".off", ".obj", ".stl")


def _mesh_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix.lower() == ".off":
        return read_off(path)
    import trimesh

    try:
        with np.errstate(all="ignore"):  # NaN vertices warn in trimesh's normals; refused by _checked_mesh
            mesh = trimesh.load(path, force="mesh", process=False)
        vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)
    except Exception as exc:  # noqa: BLE001  (trimesh raises many kinds of errors for bad files)
        raise DatasetFileError(f"{path} is not a readable mesh: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return _checked_mesh(path, vertices, faces)


def _checked_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(vertices) == 0 or faces.ndim != 2 or len(faces) == 0 or faces.shape[1] != 3:
        raise DatasetFileError(f"{path} has no vertices or no triangles")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise DatasetFileError(f"{path} has a face that indexes a missing vertex")
    check_coordinates(vertices, path, "vertices")
    return vertices, faces


def _read_ply(path: Path, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    from trimesh.exchange.ply import load_ply

    try:
        with open(path, "rb") as fh:
            data = load_ply(fh)
        vertices = np.asarray(data["vertices"], dtype=np.float64)
        faces = np.asarray(data["faces"], dtype=np.int64) if data.get("faces") is not None else None
        normal = data.get("vertex_normals")
        normal = None if normal is None else np.asarray(normal, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001  (the PLY parser's ValueError, KeyError, IndexError, UnicodeDecodeError)
        raise DatasetFileError(f"{path} is not a readable PLY file: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if faces is not None and len(faces):
        return sample_mesh(*_checked_mesh(path, vertices, faces), num_points, seed, source=path)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or (normal is not None and normal.shape != vertices.shape):
        raise DatasetFileError(f"{path}: its vertices must be (N, 3) (normals too); got {vertices.shape}")
    return vertices, normal


def read_points(path: str | Path, num_points: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pos (N, 3), normal (N, 3) | None)`` float32 from a point or mesh file."""
    from pointgeo.viz.pcd import read_pcd

    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".xyz"):
        rows = read_txt_cloud(path, columns=(3, 6))
        pos, normal = rows[:, :3], (rows[:, 3:6] if rows.shape[1] == 6 else None)
    elif suffix == ".ply":
        pos, normal = _read_ply(path, num_points, seed)
    elif suffix == ".pcd":
        pos, normal = read_pcd(path)
    elif suffix in MESH_FORMATS:
        vertices, faces = _mesh_arrays(path)
        return sample_mesh(vertices, faces, num_points, seed, source=path)
    else:
        raise DatasetFileError(f"{path}: unsupported file type {suffix!r}; use one of {POINT_FORMATS + MESH_FORMATS}")
    if len(pos) == 0:
        raise DatasetFileError(f"{path} contains no points")
    check_coordinates(pos, path, "points")
    with np.errstate(over="ignore", invalid="ignore"):  # normals beyond float32 become inf, refused below
        normal = None if normal is None else normal.astype(np.float32)
    if normal is not None and not np.isfinite(normal).all():
        raise DatasetFileError(f"{path} contains NaN or inf normals")
    return pos.astype(np.float32), normal


REGISTRATION_SUFFIXES = (".npy", ".pth")
"""Formats read for registration (``pointgeo register``, ``pointgeo view SRC --target TGT``) besides
:func:`read_points`' formats: NumPy arrays and 3DMatch fragments (``cloud_bin_*.pth``)."""


def read_cloud(path: str | Path, mesh_points: int = 20_000):  # noqa: ANN201  (a torch Tensor; torch imported inside)
    """``(N, 3)`` float64 points (a tensor) of any file :func:`read_points` reads, a ``.npy`` array or a 3DMatch
    ``.pth`` fragment (meshes sampled to ``mesh_points``)."""
    import torch

    from pointgeo.datamodules.registration_readers import read_fragment

    if Path(path).suffix.lower() in REGISTRATION_SUFFIXES:
        return torch.from_numpy(read_fragment(path))
    return torch.from_numpy(read_points(path, num_points=mesh_points)[0]).double()


def read_transform(path: str | Path):  # noqa: ANN201
    """A ``(4, 4)`` float64 transform (a tensor) from ``.npy`` or a text file of 16 numbers.

    Raises:
        DatasetFileError: unreadable, not 16 numbers, or NaN/inf.
    """
    import torch

    path = str(path)
    try:
        matrix = np.load(path, allow_pickle=False) if path.endswith(".npy") else np.loadtxt(path, ndmin=2)
        matrix = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    except (OSError, ValueError) as exc:
        raise DatasetFileError(f"{path} is not a 4x4 transform (.npy or 16 numbers of text): {exc}") from exc
    if not np.isfinite(matrix).all():
        raise DatasetFileError(f"{path} holds NaN or inf")
    return torch.from_numpy(matrix)
