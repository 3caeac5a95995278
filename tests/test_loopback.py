"""The loopback servers (demo stand-ins, the report server) stay silent when a client hangs up
before its answer is written (a fault test's client timing out): no traceback from the
server's thread on stderr; any other handler error is still printed."""

import socket
import threading
from http.server import BaseHTTPRequestHandler

from tubetrail.loopback import LoopbackServer


def serve(write_after: threading.Event, failures: list):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            write_after.wait(10)
            try:
                self.send_response(200)
                self.end_headers()
                for _ in range(200):  # the client is gone: the writes fail
                    self.wfile.write(b"x" * 65536)
            except Exception as exc:
                failures.append(type(exc).__name__)
                raise

        def log_message(self, format, *args):  # noqa: A002
            pass

    return LoopbackServer(Handler)


def test_a_client_that_hangs_up_leaves_no_traceback(capfd):
    hung_up, failures = threading.Event(), []
    with serve(hung_up, failures) as server:
        port = int(server.url.rsplit(":", 1)[1])
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        client.close()
        hung_up.set()
        for _ in range(100):
            if failures:
                break
            threading.Event().wait(0.1)
    assert failures and failures[0] in ("BrokenPipeError", "ConnectionResetError")
    assert capfd.readouterr().err == ""


def test_other_handler_errors_are_still_printed(capfd):
    with LoopbackServer(BaseHTTPRequestHandler) as server:
        try:
            raise ValueError("a real fault")
        except ValueError:
            server.server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a real fault" in capfd.readouterr().err
