"""A small HTTP server on 127.0.0.1 for download tests: Range requests, cut-off responses, corrupted bytes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RangeServer:
    """Serves ``payload`` at ``/file.bin`` with Range support; can cut one response short or corrupt it."""

    def __init__(self, payload: bytes) -> None:
        self.requests: list[dict[str, str]] = []
        self.cut_after: int | None = None
        self.corrupt = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(dict(self.headers))
                body = bytearray(payload)
                if owner.corrupt:
                    body[1000] ^= 0xFF
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = bytes(body[start:])
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if owner.cut_after is not None:
                    self.wfile.write(chunk[: owner.cut_after])
                    owner.cut_after = None
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-body
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
