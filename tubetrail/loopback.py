"""A small HTTP server on loopback in a daemon thread (``with`` starts and stops it): the base
of the demo's notification inbox and of the SMS gateway that answers like the providers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0,
                 name: str = "loopback") -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        #: scheme, host and the port bound (port 0 asks the system for a free one)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
