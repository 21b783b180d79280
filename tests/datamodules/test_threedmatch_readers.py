"""3DMatch / 3DLoMatch readers on the real shared files (fragments, both projects' pair metadata, the benchmark's
ground truth of all 8 scenes of both benchmarks) and on files written here in the same formats; crafted and
malformed files give one DatasetFileError each, and a crafted pickle executes nothing."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pointgeo.datamodules import DatasetFileError
from pointgeo.datamodules.registration_readers import (
    read_benchmark,
    read_benchmark_scene,
    read_fragment,
    read_gt_log,
    read_gt_overlap,
    read_pair_metadata,
    read_pickle,
)
from pointgeo.testing.fake_data import (
    write_3dmatch_fragment,
    write_benchmark_scene,
    write_geotransformer_metadata,
    write_predator_metadata,
)

SCENE_PAIRS = {  # pairs per scene (3DMatch, 3DLoMatch), benchmark folder order
    "7-scenes-redkitchen": (506, 525), "sun3d-home_at-home_at_scan1_2013_jan_1": (156, 289),
    "sun3d-home_md-home_md_scan9_2012_sep_30": (208, 230), "sun3d-hotel_uc-scan3": (226, 218),
    "sun3d-hotel_umd-maryland_hotel1": (104, 158), "sun3d-hotel_umd-maryland_hotel3": (54, 49),
    "sun3d-mit_76_studyroom-76-1studyroom2": (292, 240),
    "sun3d-mit_lab_hj-lab_hj_tea_nov_2_2012_scan1_erika": (77, 72),
}


def test_real_fragments(shared_sample) -> None:
    a = read_fragment(shared_sample("3dmatch", "assets", "cloud_bin_21.pth"))
    b = read_fragment(shared_sample("3dmatch", "assets", "cloud_bin_34.pth"))
    assert a.shape == (25337, 3) and b.shape == (14602, 3) and a.dtype == np.float64
    assert 1.1 < a[:, 2].min() < 1.2 and 3.4 < a[:, 2].max() < 3.5  # metres, camera frame (z 1.16 ... 3.49)
    demo = read_fragment(shared_sample("3dmatch", "geotransformer", "data", "demo", "src.npy"))
    assert demo.shape == (15953, 3)


def test_real_metadata_both_layouts_agree(shared_sample) -> None:
    for name, count in (("3DMatch", 1623), ("3DLoMatch", 1781)):
        predator = read_pair_metadata(shared_sample("3dmatch", "configs", "indoor", f"{name}.pkl"))
        geo = read_pair_metadata(shared_sample("3dmatch", "geotransformer", "data", "3DMatch", "metadata",
                                               f"{name}.pkl"))
        assert len(predator) == len(geo) == count
        assert predator.source == geo.source and predator.target == geo.target
        np.testing.assert_allclose(predator.transform, geo.transform, rtol=0, atol=1e-12)
        assert sorted(set(predator.scene)) == sorted(SCENE_PAIRS)
    first = read_pair_metadata(shared_sample("3dmatch", "configs", "indoor", "3DMatch.pkl"))
    assert (first.scene[0], first.source_id[0], first.target_id[0]) == ("7-scenes-redkitchen", 1, 0)
    assert abs(first.overlap[0] - 0.672) < 1e-3
    lo = read_pair_metadata(shared_sample("3dmatch", "configs", "indoor", "3DLoMatch.pkl"))
    assert 0.1 <= lo.overlap.min() and lo.overlap.max() < 0.3
    val = read_pair_metadata(shared_sample("3dmatch", "configs", "indoor", "val_info.pkl"))
    assert len(val) == 1331 and len(set(val.scene)) == 8


def test_real_benchmark_all_scenes(shared_sample) -> None:
    """All 8 scenes of both benchmarks; the metadata poses equal the gt.log poses (PREDATOR: src = j, tgt = i)."""
    for column, name in enumerate(("3DMatch", "3DLoMatch")):
        scenes = read_benchmark(shared_sample("3dmatch", "configs", "benchmarks", name))
        assert {k: len(v.pairs) for k, v in scenes.items()} == {k: v[column] for k, v in SCENE_PAIRS.items()}
        non_consecutive = sum(int((s.pairs[:, 1] - s.pairs[:, 0] > 1).sum()) for s in scenes.values())
        assert non_consecutive == (1279, 1726)[column]
        table = read_pair_metadata(shared_sample("3dmatch", "configs", "indoor", f"{name}.pkl"))
        lookup = {(s, int(i), int(j)): scenes[s].transform[k]
                  for s in scenes for k, (i, j) in enumerate(scenes[s].pairs)}
        gt = np.stack([lookup[(s, t, j)] for s, t, j in zip(table.scene, table.target_id, table.source_id)])
        np.testing.assert_allclose(gt, table.transform, rtol=0, atol=2e-3)  # measured: max 1.1e-3 (rounding)
        kitchen = scenes["7-scenes-redkitchen"]
        assert kitchen.num_fragments == 60 and len(kitchen.overlap) == 60 * 59 // 2
        if name == "3DLoMatch":  # exactly the pairs with 0.1 <= overlap < 0.3 of gt_overlap.log
            for scene in scenes.values():
                low = {p for p, o in scene.overlap.items() if 0.1 <= o < 0.3}
                assert low == {(int(i), int(j)) for i, j in scene.pairs}
    zero = read_benchmark(shared_sample("3dmatch", "configs", "benchmarks", "3DLoMatch"))
    empty = [(s, tuple(v.pairs[k])) for s, v in zero.items() for k in np.flatnonzero(v.information[:, 0, 0] == 0)]
    assert empty == [("sun3d-home_md-home_md_scan9_2012_sep_30", (23, 25))]


def fake_pairs(rng: np.random.Generator, count: int = 3) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    from scipy.spatial.transform import Rotation

    transform = np.tile(np.eye(4), (count, 1, 1))
    transform[:, :3, :3] = Rotation.random(count, random_state=1).as_matrix()
    transform[:, :3, 3] = rng.normal(size=(count, 3))
    source = [f"test/scene-a/cloud_bin_{k + 2}.pth" for k in range(count)]
    target = [f"test/scene-a/cloud_bin_{k}.pth" for k in range(count)]
    return source, target, transform, rng.uniform(0.3, 0.9, count)


def test_written_files_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3))
    np.testing.assert_array_equal(read_fragment(write_3dmatch_fragment(tmp_path / "cloud_bin_0.pth", points)), points)
    source, target, transform, overlap = fake_pairs(rng)
    for writer in (write_predator_metadata, write_geotransformer_metadata):
        table = read_pair_metadata(writer(tmp_path / f"{writer.__name__}.pkl", source, target, transform, overlap))
        assert table.source == source and table.target == target and table.scene == ["scene-a"] * 3
        np.testing.assert_allclose(table.transform, transform, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(table.source_id, [2, 3, 4])
    pairs = np.array([[0, 2], [1, 3]])
    info = np.tile(np.eye(6) * 5000, (2, 1, 1))
    scene = read_benchmark_scene(write_benchmark_scene(tmp_path / "scene-a", pairs, transform[:2], info, 5,
                                                       {(0, 2): 0.5, (1, 3): 0.4}))
    np.testing.assert_array_equal(scene.pairs, pairs)
    np.testing.assert_allclose(scene.transform, transform[:2], rtol=0, atol=1e-11)
    assert scene.num_fragments == 5 and scene.overlap == {(0, 2): 0.5, (1, 3): 0.4}


class _Exploit:
    """A pickle whose reduce calls os.system: loading it with plain pickle would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def legacy_torch_stream(obj: object) -> bytes:
    """The legacy torch.save framing (magic, protocol, system info, object, storage keys) around ``obj``."""
    out = io.BytesIO()
    for record in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}, obj, []):
        pickle.dump(record, out, protocol=2)
    return out.getvalue()


def test_crafted_pickles_are_refused_without_executing(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    exploit = _Exploit(marker)
    fragment = tmp_path / "cloud_bin_0.pth"
    fragment.write_bytes(legacy_torch_stream(exploit))
    metadata = tmp_path / "3DMatch.pkl"
    metadata.write_bytes(pickle.dumps({"src": [exploit], "tgt": [], "rot": [], "trans": [], "overlap": []}))
    nested = tmp_path / "nested.pkl"
    nested.write_bytes(pickle.dumps([{"pcd0": np.zeros(3), "rotation": [eval]}]))
    with pytest.raises(DatasetFileError, match=r"posix\.system|os\.system|refuses"):
        read_fragment(fragment)
    with pytest.raises(DatasetFileError, match="refuses"):
        read_pair_metadata(metadata)
    with pytest.raises(DatasetFileError, match="builtins.eval"):
        read_pickle(nested)
    assert not marker.exists()
    objects = tmp_path / "objects.pkl"
    objects.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object)))
    with pytest.raises(DatasetFileError, match="dtype object"):
        read_pickle(objects)
    pickle.loads(pickle.dumps(exploit))  # the same bytes do run under plain pickle: the test can fail
    assert marker.exists()


@pytest.mark.parametrize("content, match", [
    ("0\t1\t5\n1 0 0 0\n0 1 0 0\n0 0 1 0\n", "whole number of 5-line blocks"),
    ("0\t1\n1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "'i j n'"),
    ("0\t1\t5\n1 0 0 0\n0 1 0 0\n0 0 1 x\n0 0 0 1\n", "numbers"),
    ("0\t1\t5\n1 0 0 0\n0 1 0 0\n0 0 1 0 9\n0 0 0 1\n", "4×4"),
    ("0\t1\t5\n1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n", "last row"),
    ("0\t9\t5\n1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "0 <= i, j < n"),
    ("", "empty"),
])
def test_malformed_gt_log(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "gt.log"
    path.write_text(content)
    with pytest.raises(DatasetFileError, match=match):
        read_gt_log(path)


def test_malformed_metadata_and_overlap(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    source, target, transform, overlap = fake_pairs(rng)
    cases = {
        "missing.pkl": {"src": source},
        "lengths.pkl": {"src": source, "tgt": target[:2], "rot": [t[:3, :3] for t in transform],
                        "trans": [t[:3, 3] for t in transform], "overlap": list(overlap)},
        "path.pkl": {"src": ["scene/not_a_fragment.ply"], "tgt": target[:1], "rot": [np.eye(3)],
                     "trans": [np.zeros(3)], "overlap": [0.5]},
        "rotation.pkl": {"src": source[:1], "tgt": target[:1], "rot": [2 * np.eye(3)], "trans": [np.zeros(3)],
                         "overlap": [0.5]},
        "type.pkl": 3.5,
    }
    messages = {"missing.pkl": "without tgt", "lengths.pkl": "different lengths", "path.pkl": "cloud_bin",
                "rotation.pkl": "not a rotation", "type.pkl": "float"}
    for name, obj in cases.items():
        (tmp_path / name).write_bytes(pickle.dumps(obj))
        with pytest.raises(DatasetFileError, match=messages[name]):
            read_pair_metadata(tmp_path / name)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"src": source})[:-5])
    with pytest.raises(DatasetFileError, match="not a readable pickle"):
        read_pair_metadata(truncated)
    with pytest.raises(DatasetFileError, match="missing file"):
        read_fragment(tmp_path / "absent.pth")
    bad = tmp_path / "gt_overlap.log"
    bad.write_text("0,1,0.5\n0,2\n")
    with pytest.raises(DatasetFileError, match="line 2"):
        read_gt_overlap(bad)
    flat = write_3dmatch_fragment(tmp_path / "flat.pth", np.zeros((4, 2)))
    with pytest.raises(DatasetFileError, match=r"\(N, 3\)"):
        read_fragment(flat)
    nan = write_3dmatch_fragment(tmp_path / "nan.pth", np.full((4, 3), np.nan))
    with pytest.raises(DatasetFileError, match="NaN"):
        read_fragment(nan)
