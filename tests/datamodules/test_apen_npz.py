"""APEN's npz layout (``arr_0 (S, N, 11)``: xyz, normal, part, vote, class) read from fixtures the tests write."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from pointgeo.datamodules import DatasetFileError
from pointgeo.datamodules.readers import read_apen_npz
from pointgeo.testing.fake_data import write_apen_npz


def test_a_fixture_in_apens_layout_is_read_column_by_column(tmp_path: Path) -> None:
    path = write_apen_npz(tmp_path / "train_random_pose.npz", 5, points=40, parts=4, classes=3)
    raw = np.load(path)["arr_0"]
    out = read_apen_npz(path)
    assert out["pos"].shape == out["normal"].shape == out["vote"].shape == (5, 40, 3)
    assert np.array_equal(out["pos"], raw[..., :3]) and np.array_equal(out["vote"], raw[..., 7:10])
    assert out["part"].dtype == np.int64 and np.array_equal(out["part"], raw[..., 6].astype(np.int64))
    assert out["label"].tolist() == [0, 1, 2, 0, 1] and set(out["part"].ravel()) == {0, 1, 2, 3}
    centre = out["pos"] + out["vote"]  # the vote points every point to its part's centroid
    for s in range(5):
        for p in range(4):
            inside = out["part"][s] == p
            assert np.allclose(centre[s, inside], out["pos"][s, inside].mean(0), atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def write_array(path: Path, arr: np.ndarray, name: str = "arr_0") -> Path:
    np.savez(path, **{name: arr})
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda a: a[..., :10], r"must be \(shapes, points, 11\)"),
    (lambda a: a[0], r"must be \(shapes, points, 11\)"),
    (lambda a: np.where(np.arange(11) == 6, 0.5, a), "must be non-negative integers"),
    (lambda a: np.where(np.arange(11) == 10, -1.0, a), "must be non-negative integers"),
    (lambda a: np.concatenate([a[:, :1], a[:, 1:] + (np.arange(11) == 10)], 1), "one value per shape"),
    (lambda a: np.where(np.arange(11) == 0, np.nan, a), "NaN or inf"),
    (lambda a: a.astype("U8"), "expected numbers"),
])
def test_bad_arrays_get_one_clear_error(tmp_path: Path, make, message: str) -> None:
    good = np.load(write_apen_npz(tmp_path / "good.npz", 2, points=8))["arr_0"]
    with pytest.raises(DatasetFileError, match=message):
        read_apen_npz(write_array(tmp_path / "bad.npz", make(good)))


def test_unreadable_files_get_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match="missing APEN npz file"):
        read_apen_npz(tmp_path / "absent.npz")
    with pytest.raises(DatasetFileError, match="has no arr_0 array; arrays: \\['points'\\]"):
        read_apen_npz(write_array(tmp_path / "other.npz", np.zeros((1, 2, 11)), name="points"))
    good = write_apen_npz(tmp_path / "good.npz", 2, points=8).read_bytes()
    for name, data in (("truncated", good[: len(good) // 2]), ("flipped", good[:40] + b"\xff" * 30 + good[70:]),
                       ("text", b"x,y,z\n1,2,3\n")):
        (tmp_path / f"{name}.npz").write_bytes(data)
        with pytest.raises(DatasetFileError, match="not a readable npz file"):
            read_apen_npz(tmp_path / f"{name}.npz")
    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as zf:  # an object array: never unpickled
        with zf.open("arr_0.npy", "w") as fh:
            np.lib.format.write_array(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetFileError, match="not a readable npz file"):
        read_apen_npz(tmp_path / "pickled.npz")
