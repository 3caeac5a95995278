"""The coordinator's link to a report (报告链接): a small HTTP server that serves the
``report.html`` pages under one folder and nothing else. The report folder also holds person
status, untested lists, worklists and orders with personal data; those are never served.

A page is addressed by its absolute path: ``<base>/<absolute path of report.html>``, so a
report run only needs the server's base URL (``[report] link_base``) to publish its link.

    python -m tubetrail.report_server --root data/demo --port 8027
"""

from __future__ import annotations

import argparse
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from tubetrail.loopback import LoopbackServer

PAGE = "report.html"


def report_link(link_base: str, page: Path) -> str:
    """The URL of ``page`` (a report.html) on the report server at ``link_base``."""
    return link_base.rstrip("/") + quote(str(page.resolve()))


def servable(root: Path, url_path: str) -> Path | None:
    """The file a request path names, if it is a report.html inside ``root``; else None."""
    wanted = Path(unquote(urlsplit(url_path).path))
    if wanted.name != PAGE:
        return None
    try:
        page = wanted.resolve()
    except (OSError, RuntimeError):
        return None
    if not page.is_relative_to(root.resolve()) or not page.is_file():
        return None
    return page


class ReportServer(LoopbackServer):
    """Serves ``report.html`` files under ``root`` on ``host:port``; 404 for anything else."""

    def __init__(self, root: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.root = Path(root).resolve()
        served_root = self.root

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                page = servable(served_root, self.path)
                if page is None:
                    self.send_error(HTTPStatus.NOT_FOUND, "only report pages are served here")
                    return
                body = page.read_bytes()
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

        super().__init__(Handler, host, port, name="report-server")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="serve report.html pages under this folder")
    parser.add_argument("--port", type=int, default=8027)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    with ReportServer(args.root, args.port, args.host) as server:
        print(f"report pages under {server.root} at {server.url}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    main()
