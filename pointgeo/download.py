"""The one download routine of pointgeo (datasets and pretrained checkpoints): cache, verify, resume, never half.

``download(url, dest, sha256=...)`` goes through :func:`pooch.retrieve`, which writes into a temporary file beside
``dest``, checks the full sha256 and moves the file into place atomically. pooch is used because it is the
well-kept fetcher of the scientific Python stack and already does the verify-then-move part right; it does not
resume interrupted transfers, so its downloader is :class:`ResumableDownloader` (requests + tqdm): it streams into a
stable ``<dest>.part`` file, resumes it with an HTTP ``Range`` request on the next run (restarting when the server
ignores ranges), shows a progress bar, and hands the finished file to pooch. A wrong checksum removes the file and
raises :class:`ChecksumError` with both hashes; an unreachable host, a malformed or unsupported URL (only ``http``
and ``https`` are fetched), or ``POINTGEO_OFFLINE=1``, raises :class:`DownloadError` naming the URL and the exact
path where the file can be placed by hand; the mirrors are tried after any URL that fails. A local path or
``file://`` URL is accepted wherever a URL is.

A transfer is complete only when the part file holds as many bytes as the server announced: ``Content-Length``
(bytes are asked for uncompressed, ``Accept-Encoding: identity``, so that this is the file's size), else the total of
a ``Content-Range``, else the ``Content-Length`` of a ``HEAD`` request. A connection closed before that stays a part
file, never takes the final name, and is resumed by the next run. A server that announces no size at all (no length,
no range, no ``HEAD``) and ends the body by closing the connection cannot be told from a complete one; with a
``sha256`` the hash still catches it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch
import requests
from tqdm.auto import tqdm

CHUNK = 1 << 16  # small enough that an interrupted transfer keeps nearly all it received


class DownloadError(RuntimeError):
    """A file could not be downloaded (offline mode, unreachable host, HTTP error)."""


class ChecksumError(RuntimeError):
    """A file's sha256 differs from the expected one; the file has been removed."""


REMOTE_SCHEMES = ("http", "https")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched (a malformed or non-``http(s)`` URL), or ``None`` when it can be tried."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018  (raises ValueError for a port that is not a number in 0..65535)
    except ValueError as exc:
        return f"malformed URL ({exc})"
    if parsed.scheme.lower() not in REMOTE_SCHEMES:
        return f"unsupported URL scheme {parsed.scheme!r} (pointgeo downloads over {' and '.join(REMOTE_SCHEMES)})"
    if not parsed.hostname:
        return "malformed URL (no host name)"
    if any(c.isspace() for c in url):
        return "malformed URL (it contains white space)"
    return None


def cache_dir() -> Path:
    """The pointgeo cache root: ``$POINTGEO_HOME``, else ``~/.cache/pointgeo``."""
    return Path(os.environ.get("POINTGEO_HOME", "~/.cache/pointgeo")).expanduser()


def is_offline() -> bool:
    """Whether ``POINTGEO_OFFLINE`` forbids network access (``1``, ``true``, ``yes``)."""
    return os.environ.get("POINTGEO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def sha256sum(path: Path) -> str:
    """The full sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def local_path(url: str) -> Path | None:
    """The filesystem path of a local path or ``file://`` URL, ``None`` for a remote (or malformed) URL."""
    try:
        parsed = urlparse(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: not a path; download() reports it as malformed
        return None
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if len(parsed.scheme) <= 1:  # a plain path (a one-letter scheme is a Windows drive)
        return Path(url).expanduser()
    return None


class ResumableDownloader:
    """A pooch downloader that resumes ``part_path`` with HTTP ``Range`` requests.

    Args:
        part_path: the stable partial file kept between runs (beside the destination).
        progress: show a progress bar.
        timeout: seconds to wait for the server.
    """

    def __init__(self, part_path: Path, progress: bool = True, timeout: float = 30.0) -> None:
        self.part_path = part_path
        self.progress = progress
        self.timeout = timeout

    def __call__(self, url: str, output_file: str, pooch_obj: object, check_only: bool = False) -> bool | None:
        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).ok
        done = self.part_path.stat().st_size if self.part_path.exists() else 0
        if not self._fetch(url, done):
            self._fetch(url, 0)  # the server answered another range than the one asked for: start over
        os.replace(self.part_path, output_file)
        return None

    def _fetch(self, url: str, done: int) -> bool:
        """Stream ``url`` into the part file, continuing from byte ``done``; ``False`` when the server answered a range
        other than the one asked for (the caller then starts over). A server that ignores ``Range`` and sends the
        whole file (200) is followed from byte 0.

        Raises:
            DownloadError: fewer bytes arrived than the server announced (the part file is kept).
        """
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={done}-"} if done else {})}
        with requests.get(url, stream=True, timeout=self.timeout, headers=headers) as response:
            if done and response.status_code == 416:  # nothing left past ``done``: complete if the sizes agree
                return _content_range(response)[1] == done
            response.raise_for_status()
            if response.status_code == 206 and _content_range(response)[0] != done:
                return False
            if response.status_code != 206:
                done = 0
            total = self._announced_total(response, done)
            with open(self.part_path, "ab" if done else "wb") as fh, tqdm(
                total=total, initial=done, unit="B", unit_scale=True, desc=Path(urlparse(url).path).name,
                disable=not self.progress,
            ) as bar:
                for block in response.iter_content(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
        size = self.part_path.stat().st_size
        if total is None:
            total = self._head_length(url)
        if total is not None and size < total:
            raise DownloadError(f"{url}: the connection closed after {size} of {total} bytes")
        if total is not None and size > total:
            raise DownloadError(f"{url}: {size} bytes arrived but the server announced {total}")
        return True

    @staticmethod
    def _announced_total(response: requests.Response, done: int) -> int | None:
        """The file's full size as this response announces it: ``done + Content-Length`` (unless the body is
        content-encoded), else the total of its ``Content-Range``; ``None`` when it announces neither."""
        length = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if length is not None and length.strip().isdigit() and not encoded:
            return int(length) + done
        return _content_range(response)[1] if response.status_code == 206 else None

    def _head_length(self, url: str) -> int | None:
        """The ``Content-Length`` of a ``HEAD`` request (``None`` when the server gives none, or 0 as some dynamic
        servers do, or refuses ``HEAD``)."""
        try:
            head = requests.head(url, timeout=self.timeout, allow_redirects=True,
                                 headers={"Accept-Encoding": "identity"})
        except requests.RequestException:
            return None
        length = head.headers.get("Content-Length", "")
        return int(length) if head.ok and length.strip().isdigit() and int(length) > 0 else None


def _content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of ``Content-Range: bytes <start>-<end>/<total>`` (or ``bytes */<total>``)."""
    value = response.headers.get("Content-Range", "")
    try:
        span, total = value.split()[1].split("/")
        start = None if span == "*" else int(span.split("-")[0])
        return start, (None if total == "*" else int(total))
    except (IndexError, ValueError):
        return None, None


def _manual_hint(urls: Sequence[str], dest: Path) -> str:
    return f"download {' or '.join(urls)} yourself and place it at {dest}"


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    mirrors: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Fetch ``url`` (or a mirror) into ``dest``, verified against ``sha256``; return the file's path.

    A present ``dest`` with the right hash is returned without any request. A local path or ``file://`` URL is
    verified and returned in place (not copied). ``sha256=None`` skips verification (documented per caller).

    Raises:
        DownloadError: offline mode, or every URL failed; the message says where to place the file by hand.
        ChecksumError: the file's sha256 is not ``sha256`` (the bad file is removed).
    """
    dest = Path(dest).expanduser()
    expected = sha256.lower() if sha256 else None
    source = local_path(url)
    if source is not None:
        if not source.is_file():
            raise DownloadError(f"no such file: {source}")
        _verify(source, expected, remove=False)
        return source
    if dest.is_file():
        if expected is None or sha256sum(dest) == expected:
            return dest
        dest.unlink()  # a stale or corrupt cached copy: fetch it again
    urls = [url, *mirrors]
    if is_offline():
        raise DownloadError(f"POINTGEO_OFFLINE is set, so {dest.name} cannot be downloaded: {_manual_hint(urls, dest)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for candidate in urls:
        if (problem := url_problem(candidate)) is not None:
            errors.append(f"{candidate}: {problem}")
            continue
        try:
            pooch.retrieve(
                candidate, known_hash=f"sha256:{expected}" if expected else None, fname=dest.name, path=dest.parent,
                downloader=ResumableDownloader(part, progress=progress),
            )
            return dest
        except (requests.RequestException, OSError, DownloadError) as exc:  # before ValueError: some are both
            errors.append(f"{candidate}: {exc}")
        except ValueError as exc:  # pooch's hash mismatch; it has removed the file
            raise ChecksumError(f"{candidate}: {exc}. The file was removed; run again to retry.") from exc
    kept = f" The partial file {part} is kept; running again resumes it." if part.exists() else ""
    raise DownloadError(f"could not download {dest.name} ({'; '.join(errors)}); {_manual_hint(urls, dest)}.{kept}")


def _verify(path: Path, expected: str | None, *, remove: bool) -> None:
    if expected is None:
        return
    actual = sha256sum(path)
    if actual != expected:
        if remove:
            path.unlink()
        raise ChecksumError(f"sha256 of {path} is {actual}, expected {expected}")


def extract_archive(archive: Path, dest: Path, *, progress: bool = True) -> Path:
    """Extract a ``.zip`` or ``.tar(.gz)`` into ``dest`` atomically: into a temp folder beside it, then renamed.

    An existing ``dest`` is left alone and returned. A corrupt archive raises ``ValueError`` and leaves nothing.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in tqdm(zf.infolist(), desc=f"extracting {archive.name}", disable=not progress):
                    zf.extract(member, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tqdm(tf.getmembers(), desc=f"extracting {archive.name}", disable=not progress):
                    tf.extract(member, tmp, filter="data")
        else:
            raise ValueError(f"{archive} is not a zip or tar archive (corrupt or truncated download?)")
        os.replace(tmp, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ValueError(f"{archive} is corrupt or truncated: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
