"""Writers of small files in the official dataset formats, for tests (ours and users') without the real data."""

from __future__ import annotations

import csv
import io
import json
import os
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


def write_shapenet_part_txt(folder: Path, splits: dict[str, list[tuple[str, str]]], *, points: int = 64,
                            seed: int = 0) -> Path:
    """A ``shapenetcore_partanno_segmentation_benchmark_v0_normal``-style tree: ``<synset>/<id>.txt`` rows
    ``x y z nx ny nz part`` with parts of the shape's category, the official split JSONs and
    ``synsetoffset2category.txt``. ``splits`` maps a split to ``(synset, shape id)`` pairs; existing shape files
    (e.g. real ones) are kept."""
    from pointgeo.datamodules.shapenet_part import CATEGORIES, CATEGORY_PARTS, SYNSETS

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synsetoffset2category.txt").write_text("\n".join(f"{c}\t{s}" for c, s in zip(CATEGORIES, SYNSETS)))
    (folder / "train_test_split").mkdir(exist_ok=True)
    for split, shapes in splits.items():
        for synset, shape_id in shapes:
            path = folder / synset / f"{shape_id}.txt"
            if path.exists():
                continue
            path.parent.mkdir(exist_ok=True)
            pos = rng.normal(size=(points, 3))
            part = rng.choice(CATEGORY_PARTS[SYNSETS.index(synset)], size=(points, 1))
            rows = np.concatenate([pos, pos / np.linalg.norm(pos, axis=-1, keepdims=True), part], 1)
            np.savetxt(path, rows, fmt="%.6f")
        entries = [f"shape_data/{synset}/{shape_id}" for synset, shape_id in shapes]
        (folder / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    return folder


def write_shapenet_part_h5(folder: Path, shapes_per_split: dict[str, int], *, points: int = 128,
                           categories: int | None = None, seed: int = 0) -> Path:
    """A ``shapenet_part_seg_hdf5_data``-style folder: ``ply_data_<split>0.h5`` with ``data``, ``label`` (category,
    ``(S, 1)``; shape ``i`` of a split is category ``i mod categories``, all 16 by default) and ``pid`` ``(S, N)``,
    and the ``<split>_hdf5_file_list.txt`` lists."""
    from pointgeo.datamodules.shapenet_part import CATEGORY_PARTS

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in shapes_per_split.items():
        category = np.arange(count) % (categories or len(CATEGORY_PARTS))
        pid = np.stack([rng.choice(CATEGORY_PARTS[c], size=points) for c in category])
        path = folder / f"ply_data_{split}0.h5"
        with h5py.File(path, "w") as fh:
            fh["data"] = rng.normal(size=(count, points, 3)).astype(np.float32)
            fh["label"] = category.astype(np.uint8)[:, None]
            fh["pid"] = pid.astype(np.uint8)
        (folder / f"{split}_hdf5_file_list.txt").write_text(f"hdf5_data/{path.name}\n")
    return folder


def write_scanobjectnn_h5(path: Path, count: int, *, points: int = 256, with_mask: bool = True,
                          num_classes: int = 15, seed: int = 0) -> Path:
    """A ScanObjectNN-style h5 file: ``data (S, N, 3)`` float32, ``label (S,)`` and (optionally) ``mask (S, N)``
    with the object points marked by their label and background points by -1, as the release does."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    label = (np.arange(count) % num_classes).astype(np.int64)
    with h5py.File(path, "w") as fh:
        fh["data"] = rng.normal(size=(count, points, 3)).astype(np.float32)
        fh["label"] = label
        if with_mask:
            background = rng.random((count, points)) < 0.3
            fh["mask"] = np.where(background, -1, label[:, None]).astype(np.int64)
    return path


# --- 3DMatch / 3DLoMatch (registration) -------------------------------------------------------------------------
def write_3dmatch_fragment(path: Path, points: np.ndarray) -> Path:
    """A fragment ``cloud_bin_<k>.pth`` as PREDATOR ships them: a legacy (non-zip) ``torch.save`` of a float64
    NumPy array ``(N, 3)``."""
    import torch  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(np.asarray(points, dtype=np.float64), path, _use_new_zipfile_serialization=False)
    return path


def write_predator_metadata(path: Path, source: list[str], target: list[str], transform: np.ndarray,
                            overlap: np.ndarray) -> Path:
    """A PREDATOR pair list (``3DMatch.pkl`` layout): a dict of lists ``src``, ``tgt``, ``rot`` (3×3), ``trans``
    (3×1), ``overlap``; ``transform (P, 4, 4)`` maps src into tgt."""
    import pickle  # noqa: PLC0415

    data = {"src": list(source), "tgt": list(target), "rot": [t[:3, :3] for t in transform],
            "trans": [t[:3, 3:4] for t in transform], "overlap": [float(o) for o in overlap]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return path


def write_geotransformer_metadata(path: Path, source: list[str], target: list[str], transform: np.ndarray,
                                  overlap: np.ndarray) -> Path:
    """A GeoTransformer pair list (``metadata/3DMatch.pkl`` layout): a list of dicts with ``pcd0`` (the target,
    "ref"), ``pcd1`` (the source), ``rotation``, ``translation`` (mapping pcd1 into pcd0), ``overlap``,
    ``scene_name``, ``frag_id0``, ``frag_id1``."""
    import pickle  # noqa: PLC0415

    rows = []
    for src, tgt, t, o in zip(source, target, transform, overlap):
        scene = tgt.split("/")[-2]
        frag = [int(p.rsplit("_", 1)[1].split(".")[0]) for p in (tgt, src)]
        rows.append({"overlap": float(o), "pcd0": tgt, "pcd1": src, "rotation": np.asarray(t[:3, :3]),
                     "translation": np.asarray(t[:3, 3]), "scene_name": scene, "frag_id0": frag[0],
                     "frag_id1": frag[1]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(rows))
    return path


def write_benchmark_scene(folder: Path, pairs: np.ndarray, transform: np.ndarray, information: np.ndarray,
                          num_fragments: int, overlap: dict[tuple[int, int], float]) -> Path:
    """A benchmark scene folder: ``gt.log`` (header ``i\\tj\\tn`` and the 4×4 pose mapping ``j`` into ``i``),
    ``gt.info`` (header and the 6×6 information matrix) and ``gt_overlap.log`` (``i,j,overlap``)."""
    folder.mkdir(parents=True, exist_ok=True)

    def blocks(matrices: np.ndarray) -> str:
        out = []
        for (i, j), m in zip(pairs, matrices):
            out.append(f"{int(i)}\t{int(j)}\t{num_fragments}")
            out.extend("\t".join(f"{v:.12f}" for v in row) for row in m)
        return "\n".join(out) + "\n"

    (folder / "gt.log").write_text(blocks(transform))
    (folder / "gt.info").write_text(blocks(information))
    (folder / "gt_overlap.log").write_text("".join(f"{i},{j},{o}\n" for (i, j), o in overlap.items()))
    return folder


def write_apen_npz(path: Path, shapes: int, *, points: int = 64, parts: int = 3, classes: int = 2,
                   seed: int = 0) -> Path:
    """An npz in APEN's layout: ``arr_0 (shapes, points, 11)`` float32, columns xyz, unit normal, part label, vote
    (offset from the point to its part's centroid) and class id (shape ``s`` has class ``s % classes``); each part a
    blob around its own centre. Written to a temporary name beside ``path`` and moved into place."""
    rng = np.random.default_rng(seed)
    part = np.sort(rng.integers(0, parts, size=(shapes, points)), axis=1)
    part[:, :parts] = np.arange(parts)  # every part holds at least one point
    centres = rng.normal(scale=2.0, size=(shapes, parts, 3))
    pos = np.take_along_axis(centres, part[..., None], 1) + rng.normal(scale=0.3, size=(shapes, points, 3))
    normal = rng.normal(size=(shapes, points, 3))
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    onehot = np.eye(parts)[part]  # (S, N, P)
    mean = np.einsum("snp,snc->spc", onehot, pos) / onehot.sum(1)[..., None]
    vote = np.take_along_axis(mean, part[..., None], 1) - pos
    label = np.broadcast_to((np.arange(shapes) % classes)[:, None, None], (shapes, points, 1))
    arr = np.concatenate([pos, normal, part[..., None], vote, label], -1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, arr)
    os.replace(tmp, path)
    return path


def write_csv_heads(source: Path, folder: Path, rows_per_split: dict[str, int]) -> Path:
    """Copy the first ``rows_per_split[split]`` rows of ``source/<split>.csv`` (a CDVAE CSV, header kept) to
    ``folder/<split>.csv`` for every split given; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in rows_per_split.items():
        with open(source / f"{split}.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            header, rows = list(reader.fieldnames or []), [row for _, row in zip(range(count), reader)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        (folder / f"{split}.csv").write_text(buffer.getvalue())
    return folder
