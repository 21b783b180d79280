"""Every reader fuzzed with hypothesis: truncated, bit-flipped, spliced, wrongly typed and random files in each
format (valid seeds from :mod:`pointgeo.testing.fake_data` and the formats' own writers).

Whatever the file, a reader returns a well-formed result or raises :class:`DatasetFileError` naming the file: no
other exception comes out (hypothesis reports it with its traceback), no example runs past ``DEADLINE``, and a read
that fails leaves nothing in the processed cache (or the checkpoint cache). Generation is derandomized, so CI runs the
same examples every time. ``EXAMPLES`` (200 per dataset reader and per 3DMatch file kind, 100 per file kind
`pointgeo view` reads;
``POINTGEO_FUZZ_EXAMPLES`` overrides it) keeps the whole file at about 40 s of CPU time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pointgeo import hub
from pointgeo.datamodules import (
    DatasetFileError,
    ModelNet40DataModule,
    ScanObjectNNDataModule,
    ShapeNetPartDataModule,
)
from pointgeo.datamodules.modelnet import MODELNET40_CLASSES
from pointgeo.datamodules.readers import read_off, read_txt_cloud, sample_mesh
from pointgeo.robustness.loading import load_model
from pointgeo.testing.fake_data import (
    box_mesh,
    write_modelnet_h5,
    write_modelnet_txt,
    write_off,
    write_scanobjectnn_h5,
    write_shapenet_part_txt,
)
from pointgeo.viz.io import read_points

EXAMPLES = int(os.environ.get("POINTGEO_FUZZ_EXAMPLES", 200))
DEADLINE = timedelta(seconds=5)
FUZZ = settings(max_examples=EXAMPLES, deadline=DEADLINE, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")  # one progress bar per example would drown the report

WEIRD_TOKENS = ["nan", "inf", "-inf", "1e400", "1e30", "-1", "3.5", "abc", "", "0x1F", "99999999999999999999999",
                "\x00", "\u00e9", ",", "#", "\n", "OFF", "1e-400", "+", "--1"]


# --- corruption strategies -------------------------------------------------------------------------------------
def corrupted(seed: bytes, others: tuple[bytes, ...] = ()) -> st.SearchStrategy[bytes]:
    """Truncations, 1-6 bit flips, spliced junk, random bytes and (``others``) files of other formats."""
    n = len(seed)

    def flip(bits: list[int]) -> bytes:
        out = bytearray(seed)
        for bit in bits:
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)

    def splice(args: tuple[int, bytes]) -> bytes:
        at, junk = args
        return seed[:at] + junk + seed[at + len(junk):]

    choices = [
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.lists(st.integers(0, 8 * n - 1), min_size=1, max_size=6).map(flip),
        st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=32)).map(splice),
        st.binary(max_size=1024),
    ]
    if others:
        choices.append(st.sampled_from(others))
    return st.one_of(*choices)


def corrupted_text(seed: bytes, others: tuple[bytes, ...] = ()) -> st.SearchStrategy[bytes]:
    """``corrupted`` plus text whose tokens are replaced by odd ones (NaN, inf, huge, words, separators)."""
    parts = re.split(rb"(\s+|,)", seed)
    tokens = [i for i, p in enumerate(parts) if p.strip(b" \t\n,")]

    def replace(edits: list[tuple[int, str]]) -> bytes:
        out = list(parts)
        for index, token in edits:
            out[tokens[index % len(tokens)]] = token.encode()
        return b"".join(out)

    edits = st.lists(st.tuples(st.integers(0, len(tokens) - 1), st.sampled_from(WEIRD_TOKENS)), min_size=1,
                     max_size=4)
    return st.one_of(corrupted(seed, others), edits.map(replace))


def json_values() -> st.SearchStrategy[object]:
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


H5_VARIANTS = ["good", "absent", "float64", "int", "bool", "strings", "complex", "group", "scalar", "flat", "nan",
               "huge", "negative", "fractional", "extra_axis"]


def write_h5_variant(path: Path, good: dict[str, np.ndarray], variants: dict[str, str]) -> None:
    """An HDF5 file whose datasets are ``good``'s, each replaced as ``variants`` says (wrongly typed files)."""
    with h5py.File(path, "w") as fh:
        for key, value in good.items():
            kind = variants.get(key, "good")
            if kind == "absent":
                continue
            if kind == "group":
                fh.create_group(key)
                continue
            replaced = {
                "good": value, "float64": value.astype(np.float64), "int": value.astype(np.int32),
                "bool": value.astype(bool), "strings": value.astype("S8"), "complex": value.astype(np.complex64),
                "scalar": np.float32(1.5), "flat": value.reshape(-1), "nan": np.full(value.shape, np.nan),
                "huge": np.full(value.shape, 3e38, np.float32), "negative": -np.abs(value.astype(np.int64)) - 1,
                "fractional": value.astype(np.float64) + 0.25, "extra_axis": value[..., None],
            }[kind]
            fh[key] = replaced


def h5_cases(seed: bytes, good: dict[str, np.ndarray], others: tuple[bytes, ...]) -> st.SearchStrategy[object]:
    """Corrupted bytes of ``seed`` or a dict of per-dataset variants (see :func:`write_h5_variant`)."""
    variants = st.fixed_dictionaries({key: st.sampled_from(H5_VARIANTS) for key in good})
    return st.one_of(corrupted(seed, others), variants)


def put(path: Path, case: object, good: dict[str, np.ndarray] | None = None) -> None:
    if isinstance(case, bytes):
        path.write_bytes(case)
    else:
        write_h5_variant(path, good or {}, case)  # type: ignore[arg-type]


def fuzz(strategy: st.SearchStrategy[object], body: Callable[[object], None], examples: int = EXAMPLES) -> int:
    """Run ``body`` on ``examples`` cases drawn from ``strategy`` (settings ``FUZZ``); returns how many ran."""
    ran = 0

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def run(case: object) -> None:
        nonlocal ran
        ran += 1
        body(case)

    run()
    return ran


def read_or_clear_error(read: Callable[[], object], path: Path) -> object | None:
    """``read()``'s result, or ``None`` when it raised DatasetFileError naming ``path``; anything else propagates."""
    try:
        return read()
    except DatasetFileError as exc:
        assert path.name in str(exc) or path.parent.name in str(exc), exc
        return None


def assert_cloud(pos: np.ndarray, normal: np.ndarray | None = None) -> None:
    assert pos.dtype == np.float32 and pos.ndim == 2 and pos.shape[1] == 3 and len(pos) > 0
    assert np.isfinite(pos).all()
    if normal is not None:
        assert normal.shape == pos.shape and np.isfinite(normal).all()


def assert_cache_clean(root: Path, split: str, failed: bool) -> None:
    """No temporary file in ``processed/``, and no cache file of ``split`` after a failed read."""
    processed = root / "processed"
    files = list(processed.iterdir()) if processed.is_dir() else []
    assert not [f for f in files if f.name.startswith(".")], files
    if failed:
        assert not [f for f in files if f"_{split}_" in f.name], files


def assert_split(arrays: object, num_points: int) -> None:
    pos = arrays.pos  # type: ignore[attr-defined]
    assert pos.ndim == 3 and pos.shape[1:] == (num_points, 3) and np.isfinite(pos).all()
    assert arrays.label.shape == (len(pos),) and (arrays.label >= 0).all()  # type: ignore[attr-defined]


# --- seeds --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Valid files of every format, as bytes."""
    import trimesh

    folder = tmp_path_factory.mktemp("seeds")
    mn = write_modelnet_txt(folder / "txt", MODELNET40_CLASSES, {"train": 1}, points=24)
    h5 = write_modelnet_h5(folder / "h5", ["a", "b"], {"train": 3}, points=24)
    vertices, quads = box_mesh()
    out = {
        "txt": next(mn.rglob("airplane_*.txt")).read_bytes(),
        "h5": (h5 / "ply_data_train0.h5").read_bytes(),
        "off": write_off(folder / "box.off", vertices, quads).read_bytes(),
        "off_glued": write_off(folder / "glued.off", vertices, quads, glued_header=True).read_bytes(),
        "scan": write_scanobjectnn_h5(folder / "scan.h5", 3, points=24).read_bytes(),
        "ckpt": Path(hub.fetch("tinvnn_pointnet.synthetic_z")).read_bytes(),
    }
    tri = trimesh.Trimesh(vertices, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]), process=False)
    out["obj"] = tri.export(file_type="obj").encode()
    out["stl"] = tri.export(file_type="stl")
    out["stl_ascii"] = tri.export(file_type="stl_ascii").encode()
    import open3d as o3d

    pos = np.random.default_rng(0).normal(size=(24, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pos))
    cloud.normals = o3d.utility.Vector3dVector(pos / np.linalg.norm(pos, axis=1, keepdims=True))
    for name, ext, kwargs in (("ply", "ply", {}), ("ply_ascii", "ply", {"write_ascii": True}),
                              ("pcd", "pcd", {}), ("pcd_ascii", "pcd", {"write_ascii": True}),
                              ("pcd_compressed", "pcd", {"compressed": True})):
        o3d.io.write_point_cloud(str(folder / f"{name}.{ext}"), cloud, **kwargs)
        out[name] = (folder / f"{name}.{ext}").read_bytes()
    np.savetxt(folder / "c.xyz", pos, fmt="%.5f")
    out["xyz"] = (folder / "c.xyz").read_bytes()
    return out


def _others(seeds: dict[str, bytes], *skip: str) -> tuple[bytes, ...]:
    return tuple(v for k, v in seeds.items() if k not in skip and k != "ckpt")


# --- the dataset readers ------------------------------------------------------------------------------------
def test_modelnet_txt(seeds: dict[str, bytes], tmp_path: Path) -> None:
    write_modelnet_txt(tmp_path / "modelnet40_normal_resampled", MODELNET40_CLASSES, {"train": 2, "test": 1},
                       points=24)
    target = next((tmp_path / "modelnet40_normal_resampled" / "airplane").glob("*.txt"))
    seed = target.read_bytes()

    def run(case: bytes) -> None:
        target.write_bytes(case)
        rows = read_or_clear_error(lambda: read_txt_cloud(target), target)
        if rows is not None:
            assert rows.dtype == np.float32 and rows.shape[1] == 6 and np.isfinite(rows).all()
        shutil.rmtree(tmp_path / "processed", ignore_errors=True)
        dm = ModelNet40DataModule(root=str(tmp_path), download=False, sampling="first", num_points=16)
        arrays = read_or_clear_error(lambda: dm.load_split("train"), target)
        assert_cache_clean(tmp_path, "train", failed=arrays is None)
        if arrays is not None:
            assert_split(arrays, 16)

    assert fuzz(corrupted_text(seed, _others(seeds, "txt", "xyz")), run) >= EXAMPLES


def fuzz_h5_split(target: Path, root: Path, datamodule: Callable[[], object], check: Callable[[object], None],
                  others: tuple[bytes, ...]) -> None:
    """Fuzz ``target``, the HDF5 training file of the datamodule ``datamodule()`` builds under ``root`` (16 points a
    sample): every case either loads a split that passes :func:`assert_split` and ``check``, or raises one clear
    error and leaves no processed cache behind."""
    with h5py.File(target, "r") as fh:
        good = {k: fh[k][()] for k in fh}

    def run(case: object) -> None:
        put(target, case, good)
        shutil.rmtree(root / "processed", ignore_errors=True)
        arrays = read_or_clear_error(lambda: datamodule().load_split("train"), target)
        assert_cache_clean(root, "train", failed=arrays is None)
        if arrays is not None:
            assert_split(arrays, 16)
            check(arrays)

    assert fuzz(h5_cases(target.read_bytes(), good, others), run) >= EXAMPLES


def test_modelnet_hdf5(seeds: dict[str, bytes], tmp_path: Path) -> None:
    folder = write_modelnet_h5(tmp_path / "modelnet40_ply_hdf5_2048", MODELNET40_CLASSES, {"train": 3, "test": 2},
                               points=24)
    (folder / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")

    def check(arrays: object) -> None:
        assert (arrays.label < 40).all()

    fuzz_h5_split(folder / "ply_data_train0.h5", tmp_path,
                  lambda: ModelNet40DataModule(format="hdf5", root=str(tmp_path), download=False, num_points=16),
                  check, _others(seeds, "h5", "scan"))


def test_off_meshes(seeds: dict[str, bytes], tmp_path: Path) -> None:
    target = tmp_path / "bathtub_0001.off"

    def run(case: bytes) -> None:
        target.write_bytes(case)
        mesh = read_or_clear_error(lambda: read_off(target), target)
        if mesh is None:
            return
        vertices, triangles = mesh
        assert triangles.ndim == 2 and triangles.shape[1] == 3 and 0 <= triangles.min() <= triangles.max() < len(
            vertices)
        sampled = read_or_clear_error(lambda: sample_mesh(vertices, triangles, 32, seed=0, source=target), target)
        if sampled is not None:
            assert_cloud(*sampled)
            assert np.allclose(np.linalg.norm(sampled[1], axis=1), 1, rtol=0, atol=1e-4)

    cases = st.one_of(corrupted_text(seeds["off"], _others(seeds, "off", "off_glued")),
                      corrupted_text(seeds["off_glued"]))
    assert fuzz(cases, run) >= EXAMPLES


def _shapenet_tree(root: Path) -> Path:
    from pointgeo.datamodules.shapenet_part import SYNSETS

    folder = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    splits = {split: [(SYNSETS[i], f"{split}{i}") for i in range(2)] for split in ("train", "val", "test")}
    return write_shapenet_part_txt(folder, splits, points=24)


def test_shapenet_part_txt(seeds: dict[str, bytes], tmp_path: Path) -> None:
    from pointgeo.datamodules.shapenet_part import SYNSETS

    folder = _shapenet_tree(tmp_path)
    target = folder / SYNSETS[0] / "train0.txt"

    def run(case: bytes) -> None:
        target.write_bytes(case)
        shutil.rmtree(tmp_path / "processed", ignore_errors=True)
        dm = ShapeNetPartDataModule(root=str(tmp_path), download=False, num_points=16)
        arrays = read_or_clear_error(lambda: dm.load_split("train"), target)
        assert_cache_clean(tmp_path, "train", failed=arrays is None)
        if arrays is not None:
            assert_split(arrays, 16)
            assert arrays.seg.shape == (2, 16) and (arrays.seg >= 0).all() and (arrays.seg < 50).all()

    assert fuzz(corrupted_text(target.read_bytes(), _others(seeds, "txt", "xyz")), run) >= EXAMPLES


def test_shapenet_part_split_json(seeds: dict[str, bytes], tmp_path: Path) -> None:
    folder = _shapenet_tree(tmp_path)
    target = folder / "train_test_split" / "shuffled_train_file_list.json"
    seed = target.read_bytes()

    def run(case: bytes) -> None:
        target.write_bytes(case)
        shutil.rmtree(tmp_path / "processed", ignore_errors=True)
        dm = ShapeNetPartDataModule(root=str(tmp_path), download=False, num_points=16)
        arrays = read_or_clear_error(lambda: dm.load_split("train"), target)
        assert_cache_clean(tmp_path, "train", failed=arrays is None)
        if arrays is not None:
            assert arrays.pos.shape[1:] == (16, 3)

    cases = st.one_of(corrupted_text(seed, _others(seeds)), json_values().map(lambda v: json.dumps(v).encode()),
                      st.lists(st.text(max_size=40), max_size=4).map(lambda v: json.dumps(v).encode()))
    assert fuzz(cases, run) >= EXAMPLES


def test_scanobjectnn_hdf5(seeds: dict[str, bytes], tmp_path: Path) -> None:
    h5 = tmp_path / "h5_files" / "main_split"
    target = write_scanobjectnn_h5(h5 / "training_objectdataset.h5", 3, points=24)
    write_scanobjectnn_h5(h5 / "test_objectdataset.h5", 2, points=24)

    def check(arrays: object) -> None:
        assert arrays.mask.shape == (len(arrays.pos), 16) and arrays.mask.dtype == bool
        assert (arrays.label < 15).all()

    fuzz_h5_split(target, tmp_path,
                  lambda: ScanObjectNNDataModule(variant="OBJ_BG", root=str(tmp_path), return_mask=True, num_points=16),
                  check, _others(seeds, "scan", "h5"))


def test_truncated_processed_cache_is_reported_and_rebuilt(tmp_path: Path) -> None:
    write_modelnet_h5(tmp_path / "modelnet40_ply_hdf5_2048", MODELNET40_CLASSES, {"train": 3, "test": 2}, points=24)
    dm = ModelNet40DataModule(format="hdf5", root=str(tmp_path), download=False, num_points=16)
    reference = dm.load_split("test")
    cache = dm._cache_path("test")
    good = cache.read_bytes()
    cache.write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match=rf"processed cache .*{cache.name} is unreadable .*; rebuilding it"):
        arrays = dm.load_split("test")
    assert np.array_equal(arrays.pos, reference.pos) and np.array_equal(arrays.label, reference.label)
    assert cache.read_bytes() == good and [f.name for f in cache.parent.iterdir()].count(cache.name) == 1
    assert_cache_clean(tmp_path, "test", failed=False)


def test_corrupt_processed_cache_is_rebuilt(seeds: dict[str, bytes], tmp_path: Path) -> None:
    write_scanobjectnn_h5(tmp_path / "h5_files" / "main_split" / "training_objectdataset.h5", 3, points=24)
    write_scanobjectnn_h5(tmp_path / "h5_files" / "main_split" / "test_objectdataset.h5", 2, points=24)
    dm = ScanObjectNNDataModule(variant="OBJ_BG", root=str(tmp_path), return_mask=True, num_points=16)
    reference = dm.load_split("train")
    cache = dm._cache_path("train")
    seed = cache.read_bytes()
    rebuilt = 0

    def run(case: bytes) -> None:
        nonlocal rebuilt
        cache.write_bytes(case)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            arrays = dm.load_split("train")
        was_rebuilt = any("rebuilding it" in str(w.message) and cache.name in str(w.message) for w in caught)
        rebuilt += was_rebuilt
        for key in ("pos", "label", "mask"):  # rebuilt, or a flip that no reader can see (zip padding)
            assert np.array_equal(getattr(arrays, key), getattr(reference, key))
        if was_rebuilt:
            assert cache.read_bytes() == seed  # the rebuilt file is the original one
        assert_cache_clean(tmp_path, "train", failed=False)

    assert fuzz(corrupted(seed, (seeds["h5"], b"")), run) >= EXAMPLES
    assert rebuilt > EXAMPLES // 2


# --- checkpoints and the files `pointgeo view` reads ---------------------------------------------------------
CHECKPOINT_PARTS = st.one_of(json_values(), st.builds(torch.zeros, st.integers(0, 3)),
                             st.dictionaries(st.text(max_size=8), st.builds(torch.ones, st.integers(0, 3)), max_size=3))


def test_checkpoints(seeds: dict[str, bytes], tmp_path: Path) -> None:
    good = torch.load(hub.fetch("tinvnn_pointnet.synthetic_z"), weights_only=True)
    target = tmp_path / "model.ckpt"

    def wrongly_typed(args: tuple[str, object]) -> bytes:
        key, value = args
        ckpt = dict(good)
        if key == "top":
            ckpt = value  # type: ignore[assignment]
        elif key in ("network_kwargs", "num_classes", "network"):
            ckpt["hyper_parameters"] = {**good["hyper_parameters"], key: value}
        else:
            ckpt[key] = value
        torch.save(ckpt, target)
        return target.read_bytes()

    keys = st.sampled_from(["top", "state_dict", "hyper_parameters", "pointgeo", "datamodule_hyper_parameters",
                            "network_kwargs", "num_classes", "network"])

    def run(case: bytes) -> None:
        target.write_bytes(case)
        task = read_or_clear_error(lambda: hub.from_pretrained(str(target), progress=False), target)
        loaded = read_or_clear_error(lambda: load_model(str(target), torch.float32, "cpu"), target)
        assert (task is None) == (loaded is None)  # the robustness loader rebuilds through the same function
        if task is not None:
            assert not task.training and isinstance(task, torch.nn.Module)
            for key, value in task.state_dict().items():
                torch.testing.assert_close(loaded.task.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)
        assert hub.cache_entries() == []

    cases = st.one_of(corrupted(seeds["ckpt"], _others(seeds)), st.tuples(keys, CHECKPOINT_PARTS).map(wrongly_typed))
    assert fuzz(cases, run) >= EXAMPLES


VIEW_FILES = {"ply": "ply", "ply_ascii": "ply", "pcd": "pcd", "pcd_ascii": "pcd", "pcd_compressed": "pcd",
              "xyz": "xyz", "txt": "txt", "off": "off", "obj": "obj", "stl": "stl", "stl_ascii": "stl"}


@pytest.mark.parametrize("name", sorted(VIEW_FILES))
def test_view_files(seeds: dict[str, bytes], tmp_path: Path, name: str) -> None:
    target = tmp_path / f"scan.{VIEW_FILES[name]}"
    strategy = corrupted_text if name.endswith("ascii") or name in ("xyz", "txt", "off", "obj") else corrupted

    def run(case: bytes) -> None:
        target.write_bytes(case)
        cloud = read_or_clear_error(lambda: read_points(target, num_points=32), target)
        if cloud is not None:
            assert_cloud(*cloud)

    assert fuzz(strategy(seeds[name], _others(seeds, name)), run, EXAMPLES // 2) >= EXAMPLES // 2


def test_the_strict_ply_and_pcd_readers_read_valid_files_exactly(seeds: dict[str, bytes], tmp_path: Path) -> None:
    """The seeds (Open3D's own PLY and PCD writers: binary, ascii, binary_compressed) read back to their points and
    normals, so the strict readers that replace Open3D's lose nothing."""
    pos = np.random.default_rng(0).normal(size=(24, 3))
    normal = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    for name in ("ply", "ply_ascii", "pcd", "pcd_ascii", "pcd_compressed"):
        path = tmp_path / f"{name}.{VIEW_FILES[name]}"
        path.write_bytes(seeds[name])
        got_pos, got_normal = read_points(path)
        assert got_normal is not None, name
        assert np.allclose(got_pos, pos, rtol=0, atol=1e-5) and np.allclose(got_normal, normal, rtol=0, atol=1e-5), name


# --- 3DMatch registration files ---------------------------------------------------------------------------------
def registration_seeds(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Valid registration files (file name, bytes): a fragment, both metadata layouts, the three benchmark files."""
    from pointgeo.testing.fake_data import (
        write_3dmatch_fragment,
        write_benchmark_scene,
        write_geotransformer_metadata,
        write_predator_metadata,
    )

    rng = np.random.default_rng(0)
    transform = np.tile(np.eye(4), (2, 1, 1))
    transform[:, :3, 3] = rng.normal(size=(2, 3))
    src = ["test/s/cloud_bin_2.pth", "test/s/cloud_bin_3.pth"]
    tgt = ["test/s/cloud_bin_0.pth", "test/s/cloud_bin_1.pth"]
    scene = write_benchmark_scene(folder / "s", np.array([[0, 2], [1, 3]]), transform,
                                  np.tile(np.eye(6), (2, 1, 1)), 4, {(0, 2): 0.5, (1, 3): 0.25})
    return {
        "fragment": ("cloud_bin_0.pth",
                     write_3dmatch_fragment(folder / "f.pth", rng.normal(size=(12, 3))).read_bytes()),
        "predator": ("3DMatch.pkl", write_predator_metadata(folder / "p.pkl", src, tgt, transform,
                                                           np.array([0.5, 0.25])).read_bytes()),
        "geotransformer": ("3DMatch.pkl", write_geotransformer_metadata(folder / "g.pkl", src, tgt, transform,
                                                                        np.array([0.5, 0.25])).read_bytes()),
        "gt_log": ("gt.log", (scene / "gt.log").read_bytes()),
        "gt_info": ("gt.info", (scene / "gt.info").read_bytes()),
        "gt_overlap": ("gt_overlap.log", (scene / "gt_overlap.log").read_bytes()),
    }


@pytest.mark.parametrize("kind", ["fragment", "predator", "geotransformer", "gt_log", "gt_info", "gt_overlap"])
def test_registration_files(tmp_path: Path, kind: str) -> None:
    from pointgeo.datamodules.registration_readers import (
        read_fragment,
        read_gt_info,
        read_gt_log,
        read_gt_overlap,
        read_pair_metadata,
    )

    seeds = registration_seeds(tmp_path / "seeds")
    name, seed = seeds[kind]
    target = tmp_path / name
    reader = {"fragment": read_fragment, "predator": read_pair_metadata, "geotransformer": read_pair_metadata,
              "gt_log": read_gt_log, "gt_info": read_gt_info, "gt_overlap": read_gt_overlap}[kind]
    others = tuple(b for k, (_, b) in seeds.items() if k != kind)
    strategy = corrupted_text if kind.startswith("gt_") else corrupted

    def run(case: bytes) -> None:
        target.write_bytes(case)
        read_or_clear_error(lambda: reader(target), target)

    assert fuzz(strategy(seed, others), run, EXAMPLES) >= EXAMPLES
