"""A small HTTP server on 127.0.0.1 for download tests: Range requests, cut-off responses, corrupted bytes, and
responses without ``Content-Length`` (ended by closing the connection, or chunked)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RangeServer:
    """Serves ``payload`` at ``/file.bin`` with Range support; can cut one response short or corrupt it.

    ``send_length=False`` omits ``Content-Length`` (the body ends when the connection closes, HTTP/1.0 style),
    ``chunked=True`` sends the body with HTTP/1.1 chunked encoding instead, and ``answer_head=False`` refuses
    ``HEAD`` requests (501), so that a server which announces no size at all can be imitated.
    """

    def __init__(self, payload: bytes) -> None:
        self.requests: list[dict[str, str]] = []
        self.cut_after: int | None = None
        self.corrupt = False
        self.send_length = True
        self.chunked = False
        self.answer_head = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                owner.requests.append({"method": "HEAD", **self.headers})
                if not owner.answer_head:
                    self.send_error(501)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(dict(self.headers))
                body = bytearray(payload)
                if owner.corrupt:
                    body[1000] ^= 0xFF
                start = 0
                if owner.chunked:
                    self.protocol_version = "HTTP/1.1"
                if rng := self.headers.get("Range"):
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = bytes(body[start:])
                if owner.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                elif owner.send_length:
                    self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if owner.cut_after is not None:
                    chunk = chunk[: owner.cut_after]
                self._write(chunk, final=owner.cut_after is None)
                if owner.cut_after is not None:
                    owner.cut_after = None
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-body

            def _write(self, data: bytes, final: bool) -> None:
                if not owner.chunked:
                    self.wfile.write(data)
                    return
                for at in range(0, len(data), 1 << 15):
                    piece = data[at : at + (1 << 15)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                if final:
                    self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
