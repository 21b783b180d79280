"""The files of a generation folder, each written whole or not at all.

Every file goes to a temporary name in its own folder (``.<name>.<random>.tmp``) and is moved into place with
``os.replace``, so a killed run leaves either the previous file or the new one, never a partial one. Temporary files
a killed run left behind are removed by :func:`remove_partial_files` when the run resumes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PARTIAL_SUFFIX = ".tmp"
"""Suffix of the temporary files; only files named ``.<name>.<random>.tmp`` are ever removed as partial."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder, with a normal file's
    permissions (not ``mkstemp``'s private 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, value: Any, *, allow_nan: bool = False) -> None:
    """``value`` as indented JSON with sorted keys (the same bytes for the same value), written atomically."""
    write_text_atomic(path, json.dumps(value, indent=1, sort_keys=True, allow_nan=allow_nan) + "\n")


def remove_partial_files(folder: Path) -> int:
    """Remove the temporary files (``.<name>.<random>.tmp``) a killed run left in ``folder``; returns how many."""
    if not folder.is_dir():
        return 0
    partial = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX)]
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON; an undefined figure stays visible)."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
