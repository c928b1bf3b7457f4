"""A loopback HTTP server for the download tests: serves in-memory files under ``/<mode>/<name>``.

Modes: ``ok`` (Range supported), ``norange`` (ignores Range), ``cut`` (the first request without Range sends half the
body, then drops the connection), ``html`` (200 with an error page), ``missing`` (404). Every request is logged as
``(method, path, Range header)``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple


class HubServer:
    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.log: List[Tuple[str, str, Optional[str]]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                rng = self.headers.get("Range")
                with server._lock:
                    server.log.append(("GET", self.path, rng))
                _, mode, name = self.path.split("/", 2)
                body = server.files.get(name)
                if mode == "missing" or body is None:
                    self.send_error(404, "Not Found")
                    return
                if mode == "html":
                    page = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                start = 0
                if rng and mode in ("ok", "cut"):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if mode != "norange":
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if mode == "cut" and not rng:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
