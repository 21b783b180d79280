"""Getting an official dataset release onto disk, and the processed-array cache beside it (shared by every dataset)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.download import DownloadError, download, extract_archive


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded."""


def ensure_release(url: str, raw_dir: Path, root: Path, *, allow_download: bool, label: str) -> None:
    """Make sure the extracted release folder ``raw_dir`` (inside ``root``) exists: download ``url`` into
    ``root/raw`` and extract it atomically if needed. Failure raises one :class:`DatasetNotFoundError` naming the URL
    and the folder to extract the archive into."""
    if raw_dir.is_dir():
        return
    hint = f"{label} is not in {raw_dir}. Download {url} and extract it into {root} (so that {raw_dir} exists)"
    if not allow_download:
        raise DatasetNotFoundError(hint + ", or pass download=True.")
    try:
        archive = download(url, root / "raw" / Path(url).name)
    except DownloadError as exc:
        raise DatasetNotFoundError(f"{hint}. ({exc})") from exc
    extracted = extract_archive(archive, root / ".extracted")
    os.replace(extracted / raw_dir.name, raw_dir)


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


def read_list(path: Path) -> list[str]:
    """The non-empty lines of a list file."""
    if not path.is_file():
        raise DatasetFileError(f"missing list file {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
