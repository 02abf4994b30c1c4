"""What the local fakes of Google's REST APIs share: a threaded HTTP server on 127.0.0.1 that answers every GET and
POST with JSON, started and stopped by the test (or used as a context manager).

A fake subclasses JsonApiFake and implements `answer`; it holds its state under `self._lock`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


class JsonApiFake:
    """start() binds 127.0.0.1 on a free port; stop() shuts the server down and joins its thread."""

    name = "api-fake"  # its thread's name
    # Whether `answer` gets every value of a repeated query parameter (a list), not only the last (a string).
    multi_query = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, method: str, path: str, query: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for one request (PATH as it came, still percent-encoded)."""
        raise NotImplementedError

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        parsed = parse_qs(url.query, keep_blank_values=True)
        query: dict[str, Any] = parsed if self.multi_query else {k: v[-1] for k, v in parsed.items()}
        status, answer = self.answer(method, url.path, query, body)
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
