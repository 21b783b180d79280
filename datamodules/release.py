"""Getting an official dataset release onto disk, and the processed-array cache beside it (shared by every dataset)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.download import DownloadError, download, extract_archive


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded."""


T = TypeVar("T")


def ensure_release(url: str, raw_dir: Path, root: Path, *, allow_download: bool, label: str,
                   sha256: str | None = None) -> None:
    """Make sure the extracted release folder ``raw_dir`` (inside ``root``) exists: download ``url`` into
    ``root/raw`` (verified against ``sha256`` when one is known) and extract it atomically if needed. The archive is
    kept in ``root/raw`` so a deleted ``raw_dir`` needs no new download. Failure raises one
    :class:`DatasetNotFoundError` naming the URL and the folder to extract the archive into."""
    if raw_dir.is_dir():
        return
    hint = f"{label} is not in {raw_dir}. Download {url} and extract it into {root} (so that {raw_dir} exists)"
    if not allow_download:
        raise DatasetNotFoundError(hint + ", or pass download=True.")
    try:
        archive = download(url, root / "raw" / Path(url).name, sha256=sha256)
    except DownloadError as exc:
        raise DatasetNotFoundError(f"{hint}. ({exc})") from exc
    staging = root / f".{raw_dir.name}.extracted"
    try:
        extracted = extract_archive(archive, staging)
    except ValueError as exc:  # corrupt or truncated: drop our copy so the next run downloads it again
        if archive.parent != root / "raw":  # a user's own file (local path URL) is never deleted
            raise DatasetFileError(str(exc)) from exc
        archive.unlink(missing_ok=True)
        raise DatasetFileError(f"{exc}; the archive was removed, run again to download it again") from exc
    if not (extracted / raw_dir.name).is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise DatasetFileError(f"{archive} has no top folder {raw_dir.name}/ (not the {label} release?)")
    os.replace(extracted / raw_dir.name, raw_dir)
    shutil.rmtree(staging, ignore_errors=True)  # whatever else the archive held (e.g. __MACOSX/)


def processed_path(root: Path, name: str, split: str, settings: list[object]) -> Path:
    """``root/processed/<name>_<split>_<hash of settings>.npz``: one file per preprocessing configuration."""
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return root / "processed" / f"{name}_{split}_{key}.npz"


def save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (``.npz``) through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_processed(path: Path, build: Callable[[], None], convert: Callable[[Mapping[str, np.ndarray]], T]) -> T:
    """``convert`` applied to the arrays of the processed cache file ``path``, which ``build()`` writes when missing.

    A cache file that cannot be read whole (truncated, bit-flipped, not an ``.npz``, missing arrays, or arrays that
    ``convert`` refuses with ``ValueError``/``KeyError``) is reported in a warning, removed and built again; if the
    rebuilt file fails too, :class:`DatasetFileError` names it. Every array is read (and its CRC checked) before
    ``convert`` sees it, so no lazily read corrupt member surfaces later.
    """
    if not path.is_file():
        build()
    try:
        return _converted(path, convert)
    except DatasetFileError as exc:
        warnings.warn(f"the processed cache {path} is unreadable ({exc}); rebuilding it", stacklevel=2)
    path.unlink(missing_ok=True)
    build()
    try:
        return _converted(path, convert)
    except DatasetFileError as exc:
        raise DatasetFileError(f"the rebuilt processed cache {path} is unreadable too: {exc}") from exc


def _converted(path: Path, convert: Callable[[Mapping[str, np.ndarray]], T]) -> T:
    arrays = _read_npz(path)
    try:
        return convert(arrays)
    except (KeyError, ValueError) as exc:
        raise DatasetFileError(f"{path} holds wrong arrays: {type(exc).__name__}: {exc}") from exc


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles); one :class:`DatasetFileError` for whatever is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile,
            NotImplementedError) as exc:
        raise DatasetFileError(f"{path}: {type(exc).__name__}: {exc}") from exc


def read_text_lines(path: Path, kind: str) -> list[str]:
    """The non-empty lines (unstripped) of a UTF-8 text file of the given ``kind`` (named in errors); at least one.

    Raises:
        DatasetFileError: the file is missing, not UTF-8 text, or has no non-blank line.
    """
    if not path.is_file():
        raise DatasetFileError(f"missing {kind} file {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFileError(f"{path} is not a text {kind} file: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetFileError(f"{path} is empty (an empty {kind} file)")
    return lines


def read_list(path: Path) -> list[str]:
    """The non-empty lines of a list file (at least one), stripped."""
    return [line.strip() for line in read_text_lines(path, "list")]
