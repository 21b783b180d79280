"""Writers of small files in the official dataset formats, for tests (ours and users') without the real data."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_modelnet_h5(folder: Path, class_names: list[str], shapes_per_split: dict[str, int], *, points: int = 2048,
                      normals: bool = True, shard_size: int = 8, seed: int = 0) -> Path:
    """A ``modelnet40_ply_hdf5_2048``-style folder: ``ply_data_<split><i>.h5`` shards with ``data``, ``label``
    (``(S, 1)`` uint8) and optionally ``normal``, plus ``{train,test}_files.txt`` and ``shape_names.txt``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shape_names.txt").write_text("\n".join(class_names) + "\n")
    for split, count in shapes_per_split.items():
        names = []
        for shard, start in enumerate(range(0, count, shard_size)):
            n = min(shard_size, count - start)
            pos = rng.normal(size=(n, points, 3)).astype(np.float32)
            path = folder / f"ply_data_{split}{shard}.h5"
            with h5py.File(path, "w") as fh:
                fh["data"] = pos
                fh["label"] = (np.arange(start, start + n) % len(class_names)).astype(np.uint8)[:, None]
                if normals:
                    fh["normal"] = (pos / np.linalg.norm(pos, axis=-1, keepdims=True)).astype(np.float32)
            names.append(f"data/{folder.name}/{path.name}")
        (folder / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    return folder


def write_off(path: Path, vertices: np.ndarray, faces: np.ndarray, *, glued_header: bool = False) -> Path:
    """An OFF mesh; ``glued_header`` writes the ``OFF<V> <F> 0`` first line found in some ModelNet files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = f"{len(vertices)} {len(faces)} 0"
    lines = [f"OFF{counts}"] if glued_header else ["OFF", counts]
    lines += [" ".join(f"{x:.6f}" for x in v) for v in vertices]
    lines += [" ".join(str(i) for i in [len(f), *f]) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def box_mesh(extents: tuple[float, float, float] = (1.0, 0.5, 0.25)) -> tuple[np.ndarray, np.ndarray]:
    """A box as 8 vertices and 6 quadrilateral faces (OFF polygons, triangulated by the reader)."""
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64) * extents
    quads = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
    return v, quads


def write_modelnet_txt(folder: Path, class_names: list[str], shapes_per_split: dict[str, int], *,
                       points: int = 64, variant: int = 40, seed: int = 0) -> Path:
    """A ``modelnet40_normal_resampled``-style tree: ``<class>/<class>_<NNNN>.txt`` rows ``x,y,z,nx,ny,nz``, the
    shape-name list and the split lists of ``variant``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"modelnet{variant}_shape_names.txt").write_text("\n".join(class_names) + "\n")
    number = 0
    for split, count in shapes_per_split.items():
        ids = []
        for i in range(count):
            number += 1
            cls = class_names[i % len(class_names)]
            shape_id = f"{cls}_{number:04d}"
            pos = rng.normal(size=(points, 3))
            rows = np.concatenate([pos, pos / np.linalg.norm(pos, axis=-1, keepdims=True)], 1)
            (folder / cls).mkdir(exist_ok=True)
            np.savetxt(folder / cls / f"{shape_id}.txt", rows, delimiter=",", fmt="%.6f")
            ids.append(shape_id)
        (folder / f"modelnet{variant}_{split}.txt").write_text("\n".join(ids) + "\n")
    return folder
