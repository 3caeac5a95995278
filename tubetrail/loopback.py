"""A small HTTP server on loopback in a daemon thread (``with`` starts and stops it): the base
of the demo's notification inbox and of the SMS gateway that answers like the providers."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: a client that went away before its answer was written (a fault test's timeout): not an error of the server
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class QuietServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` that stays silent when a client hangs up before its answer is
    written (socketserver would print a traceback on stderr from the handler's thread); any
    other error of a handler is printed as before."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], GONE):
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0,
                 name: str = "loopback") -> None:
        self.server = QuietServer((host, port), handler)
        #: scheme, host and the port bound (port 0 asks the system for a free one)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
