"""Downloads from a local HTTP server on 127.0.0.1: good, corrupted, interrupted and resumed, cached, offline, local."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_server import RangeServer

from pointgeo.download import ChecksumError, DownloadError, download, extract_archive

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeServer]:
    monkeypatch.delenv("POINTGEO_OFFLINE", raising=False)
    srv = RangeServer(PAYLOAD)
    yield srv
    srv.close()


def test_good_download_and_cache_hit_without_request(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "file.bin"
    assert download(server.url, dest, sha256=SHA, progress=False).read_bytes() == PAYLOAD
    count = len(server.requests)
    assert download(server.url, dest, sha256=SHA, progress=False) == dest
    assert len(server.requests) == count
    assert not list(dest.parent.glob("*.part"))


def test_corrupted_download_is_removed_and_reports_both_hashes(server: RangeServer, tmp_path: Path) -> None:
    server.corrupt = True
    dest = tmp_path / "file.bin"
    with pytest.raises(ChecksumError, match=SHA):
        download(server.url, dest, sha256=SHA, progress=False)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_interrupted_download_resumes_with_a_range_request(server: RangeServer, tmp_path: Path) -> None:
    server.cut_after = 300_000
    dest = tmp_path / "file.bin"
    with pytest.raises((DownloadError, ChecksumError)):
        download(server.url, dest, sha256=SHA, progress=False)
    assert not dest.exists()
    part = tmp_path / "file.bin.part"
    kept = part.stat().st_size
    assert part.exists() and 0 < kept <= 300_000
    download(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1].get("Range") == f"bytes={kept}-"


def test_offline_mode_makes_no_request_and_names_the_manual_path(server: RangeServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTGEO_OFFLINE", "1")
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match=str(dest)):
        download(server.url, dest, sha256=SHA, progress=False)
    assert server.requests == []


def test_unreachable_host_lists_urls_and_the_manual_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POINTGEO_OFFLINE", raising=False)
    dest = tmp_path / "x.zip"
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:9/x\.zip.*place it at"):
        download("http://127.0.0.1:9/x.zip", dest, progress=False)


def test_local_paths_and_file_urls_are_verified_in_place(tmp_path: Path) -> None:
    src = tmp_path / "local.bin"
    src.write_bytes(PAYLOAD)
    assert download(str(src), tmp_path / "unused", sha256=SHA) == src
    assert download(src.as_uri(), tmp_path / "unused", sha256=SHA) == src
    with pytest.raises(ChecksumError, match="expected 0000"):
        download(str(src), tmp_path / "unused", sha256="0" * 64)
    assert src.exists()  # a user's own file is never deleted


def test_extraction_is_atomic_and_rejects_corrupt_archives(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("folder/data.txt", "hello")
    out = extract_archive(archive, tmp_path / "out", progress=False)
    assert (out / "folder" / "data.txt").read_text() == "hello"
    broken = tmp_path / "b.zip"
    broken.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        extract_archive(broken, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.*"))
