"""Downloads from a local HTTP server on 127.0.0.1: good, corrupted, interrupted and resumed, cached, offline, local."""

from __future__ import annotations

import functools
import hashlib
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from local_server import RangeServer

from pointgeo.download import ChecksumError, DownloadError, download, extract_archive

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def plain_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """The standard library's file server (it ignores ``Range``; 404 for missing files) over ``tmp_path/www``:
    yields its base URL and the headers of every request."""
    monkeypatch.delenv("POINTGEO_OFFLINE", raising=False)
    www = tmp_path / "www"
    www.mkdir()
    (www / "file.bin").write_bytes(PAYLOAD)
    seen: list[dict[str, str]] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            seen.append(dict(self.headers))
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


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
    bad = bytearray(PAYLOAD)
    bad[1000] ^= 0xFF
    dest = tmp_path / "file.bin"
    with pytest.raises(ChecksumError) as info:
        download(server.url, dest, sha256=SHA, progress=False)
    assert SHA in str(info.value) and hashlib.sha256(bad).hexdigest() in str(info.value)
    assert not dest.exists() and not list(tmp_path.iterdir())
    server.corrupt = False
    assert download(server.url, dest, sha256=SHA, progress=False).read_bytes() == PAYLOAD  # a rerun recovers


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


def test_interrupted_download_without_checksum_keeps_the_part_file(server: RangeServer, tmp_path: Path) -> None:
    server.cut_after = 100_000
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="running again resumes it"):
        download(server.url, dest, progress=False)
    assert not dest.exists()  # a short file never takes the final name, even unverified
    assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_scratch(plain_server: tuple[str, list[dict[str, str]]],
                                                     tmp_path: Path) -> None:
    base, seen = plain_server
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes of another version")
    assert download(f"{base}/file.bin", dest, sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert seen[0].get("Range") == "bytes=30-"  # asked to resume, got the whole file, wrote it from byte 0


def test_mirror_is_used_when_the_first_url_fails(plain_server: tuple[str, list[dict[str, str]]],
                                                 server: RangeServer, tmp_path: Path) -> None:
    base, _ = plain_server
    dest = tmp_path / "file.bin"
    assert download(f"{base}/missing.bin", dest, sha256=SHA, mirrors=[server.url], progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"404.*missing\.bin.*place it at"):
        download(f"{base}/missing.bin", tmp_path / "other.bin", progress=False)


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
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("folder/data.txt", "hello")
    out = extract_archive(archive, tmp_path / "out", progress=False)
    assert (out / "folder" / "data.txt").read_text() == "hello"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data.txt").write_text("tarred")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src", arcname="folder")
    out_tar = extract_archive(tmp_path / "a.tar.gz", tmp_path / "out_tar", progress=False)
    assert (out_tar / "folder" / "data.txt").read_text() == "tarred"
    broken = tmp_path / "b.zip"
    broken.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        extract_archive(broken, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.*"))


@pytest.mark.parametrize(("bad", "problem"), [
    ("ftp://127.0.0.1/file.bin", "unsupported URL scheme 'ftp'"),
    ("htps://127.0.0.1/file.bin", "unsupported URL scheme 'htps'"),
    ("http://[::1/file.bin", "malformed URL"),
    ("http:///file.bin", "malformed URL .no host name"),
    ("http://127.0.0.1:99999/file.bin", "malformed URL"),
    ("http://127.0.0.1/my file.bin", "malformed URL .it contains white space"),
])
def test_malformed_or_unsupported_urls_are_reported_as_such_and_the_mirrors_are_tried(
        server: RangeServer, tmp_path: Path, bad: str, problem: str) -> None:
    dest = tmp_path / "file.bin"
    assert download(bad, dest, sha256=SHA, mirrors=[server.url], progress=False).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=problem) as info:
        download(bad, tmp_path / "other.bin", sha256=SHA, progress=False)
    assert "sha256" not in str(info.value) and "place it at" in str(info.value)  # not a checksum mismatch
    assert not isinstance(info.value, ChecksumError)


def test_cut_without_content_length_is_caught_by_the_head_size_and_resumed(server: RangeServer,
                                                                          tmp_path: Path) -> None:
    server.send_length = False  # the body ends when the connection closes: a cut looks like the end
    server.cut_after = 100_000
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match=f"closed after 100000 of {len(PAYLOAD)} bytes"):
        download(server.url, dest, progress=False)  # no hash to catch it either
    assert not dest.exists() and (tmp_path / "file.bin.part").stat().st_size == 100_000
    assert server.requests[-1]["method"] == "HEAD"
    assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD
    assert server.requests[-1].get("Range") == "bytes=100000-"


def test_cut_of_a_resumed_transfer_without_length_or_head_is_caught_by_its_content_range(
        server: RangeServer, tmp_path: Path) -> None:
    server.send_length, server.answer_head = False, False
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:100_000])
    server.cut_after = 200_000
    with pytest.raises(DownloadError, match=f"closed after 300000 of {len(PAYLOAD)} bytes"):
        download(server.url, dest, progress=False)
    assert not dest.exists()
    assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD
    assert not any(r.get("method") == "HEAD" for r in server.requests)  # the Content-Range total sufficed


def test_cut_chunked_transfer_is_never_moved_into_place(server: RangeServer, tmp_path: Path) -> None:
    server.chunked, server.cut_after = True, 150_000
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="running again resumes it"):
        download(server.url, dest, progress=False)
    assert not dest.exists()
    assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD


def test_complete_transfer_without_any_announced_size_is_accepted(server: RangeServer, tmp_path: Path) -> None:
    server.send_length, server.answer_head = False, False
    assert download(server.url, tmp_path / "file.bin", progress=False).read_bytes() == PAYLOAD
    assert all(r.get("Accept-Encoding") == "identity" for r in server.requests)
