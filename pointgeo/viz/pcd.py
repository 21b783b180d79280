"""A strict reader of PCD point files (the Point Cloud Library's format): ``ascii``, ``binary`` and
``binary_compressed`` data, checked against the header before anything is allocated.

Open3D's own PCD reader crashes the process on some corrupt files, so pointgeo parses the format itself with numpy.
Layout (PCD v0.7): header lines ``FIELDS``, ``SIZE``, ``TYPE`` (``F``/``I``/``U``), ``COUNT``, ``WIDTH``, ``HEIGHT``,
``POINTS`` and last ``DATA <kind>``. ``binary`` stores the points row by row (fields interleaved);
``binary_compressed`` stores ``uint32`` compressed and uncompressed sizes and then the fields one after the other
(column by column), compressed with LZF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointgeo.datamodules.readers import DatasetFileError

KINDS = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "<i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
         ("U", 1): "<u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}
MAX_HEADER = 1 << 16


def read_pcd(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pos (N, 3), normal (N, 3) | None)`` float64 of a PCD file; ``DatasetFileError`` names what is wrong."""
    raw = path.read_bytes()
    end = raw.find(b"\nDATA ", 0, MAX_HEADER)
    if not raw.startswith((b"#", b"VERSION", b"FIELDS")) or end < 0:
        raise DatasetFileError(f"{path} is not a PCD file (no header ending in a DATA line)")
    stop = raw.find(b"\n", end + 1)
    stop = len(raw) if stop < 0 else stop
    try:
        header = raw[: stop].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DatasetFileError(f"{path}: the PCD header is not ASCII text") from exc
    fields, dtype, points, kind = _parse_header(path, header)
    body = raw[stop + 1 :]
    if kind == "ascii":
        values = _ascii(path, body, points, len(dtype.names))
        table = {name: values[:, i] for i, name in enumerate(dtype.names)}
    elif kind == "binary":
        if len(body) < points * dtype.itemsize:
            raise DatasetFileError(f"{path} is truncated: {points} points need {points * dtype.itemsize} bytes of "
                                   f"binary data, {len(body)} present")
        records = np.frombuffer(body, dtype=dtype, count=points)
        table = {name: records[name] for name in dtype.names}
    else:
        table = _compressed(path, body, points, dtype)
    if not {"x", "y", "z"} <= set(table):
        raise DatasetFileError(f"{path} has no x, y, z fields (FIELDS {' '.join(fields)})")
    pos = np.stack([table[a].astype(np.float64) for a in "xyz"], -1)
    names = ("normal_x", "normal_y", "normal_z")
    normal = np.stack([table[a].astype(np.float64) for a in names], -1) if set(names) <= set(table) else None
    return pos, normal


def _parse_header(path: Path, header: str) -> tuple[list[str], np.dtype, int, str]:
    entries: dict[str, list[str]] = {}
    for line in header.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            entries[words[0].upper()] = words[1:]
    fields = entries.get("FIELDS", [])
    sizes, types = entries.get("SIZE", []), entries.get("TYPE", [])
    counts = entries.get("COUNT", ["1"] * len(fields))
    kind = " ".join(entries.get("DATA", [])).lower()
    if kind not in ("ascii", "binary", "binary_compressed"):
        raise DatasetFileError(f"{path}: unknown PCD DATA kind {kind!r} (ascii, binary or binary_compressed)")
    if not fields or not len(fields) == len(sizes) == len(types) == len(counts) or len(set(fields)) != len(fields):
        raise DatasetFileError(f"{path}: the PCD header's FIELDS, SIZE, TYPE and COUNT lines do not match")
    try:
        width = int(entries["WIDTH"][0])
        height = int(entries.get("HEIGHT", ["1"])[0])
        points = int(entries.get("POINTS", [str(width * height)])[0])
        counts_int = [int(c) for c in counts]
        formats = [KINDS[(t.upper(), int(s))] for t, s in zip(types, sizes)]
    except (KeyError, IndexError, ValueError) as exc:
        raise DatasetFileError(f"{path}: malformed PCD header ({type(exc).__name__}: {exc})") from exc
    if points <= 0 or points != width * height or min(counts_int) < 1 or sum(counts_int) > 1024:
        raise DatasetFileError(f"{path}: the PCD header announces {points} points for WIDTH {width} x HEIGHT "
                               f"{height} with COUNT {counts}; expected a positive WIDTH x HEIGHT and counts >= 1")
    names = [f if c == 1 else f"{f}_{i}" for f, c in zip(fields, counts_int) for i in range(c)]
    repeated = [fmt for fmt, c in zip(formats, counts_int) for _ in range(c)]
    return fields, np.dtype({"names": names, "formats": repeated}), points, kind


def _ascii(path: Path, body: bytes, points: int, columns: int) -> np.ndarray:
    try:
        rows = np.loadtxt(body.decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DatasetFileError(f"{path}: the PCD ascii data are not rows of numbers ({exc})") from exc
    if rows.shape != (points, columns):
        raise DatasetFileError(f"{path}: the PCD ascii data have shape {rows.shape}; the header announces "
                               f"{points} rows of {columns} values")
    return rows


def _compressed(path: Path, body: bytes, points: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    if len(body) < 8:
        raise DatasetFileError(f"{path} is truncated: no compressed-data sizes")
    packed, unpacked = (int(v) for v in np.frombuffer(body[:8], dtype="<u4"))
    if unpacked != points * dtype.itemsize or packed > len(body) - 8:
        raise DatasetFileError(f"{path}: binary_compressed sizes {packed} -> {unpacked} bytes do not fit "
                               f"{points} points of {dtype.itemsize} bytes in a body of {len(body) - 8} bytes")
    data = lzf_decompress(body[8 : 8 + packed], unpacked, path)
    table, at = {}, 0
    for name in dtype.names:
        field = dtype.fields[name][0]
        table[name] = np.frombuffer(data, dtype=field, count=points, offset=at)
        at += points * field.itemsize
    return table


def lzf_decompress(data: bytes, size: int, path: Path) -> bytes:
    """Decode LZF (the liblzf format): a control byte below 32 copies that many + 1 literal bytes; above, its top
    3 bits (7: plus the next byte) give a back-reference length - 2 and its low 5 bits with the next byte the
    distance - 1. Exactly ``size`` bytes must come out."""
    out = bytearray()
    at = 0
    try:
        while at < len(data):
            ctrl = data[at]
            at += 1
            if ctrl < 32:
                out += data[at : at + ctrl + 1]
                if at + ctrl + 1 > len(data):
                    raise IndexError("a literal run past the end")
                at += ctrl + 1
            else:
                length = ctrl >> 5
                if length == 7:
                    length += data[at]
                    at += 1
                ref = len(out) - ((ctrl & 0x1F) << 8) - data[at] - 1
                at += 1
                length += 2
                if ref < 0:
                    raise IndexError("a back reference before the start")
                for i in range(length):  # may overlap the bytes it writes: byte by byte
                    out.append(out[ref + i])
            if len(out) > size:
                raise IndexError("more data than announced")
    except IndexError as exc:
        raise DatasetFileError(f"{path}: corrupt binary_compressed data ({exc})") from exc
    if len(out) != size:
        raise DatasetFileError(f"{path}: binary_compressed data decode to {len(out)} bytes, {size} announced")
    return bytes(out)
