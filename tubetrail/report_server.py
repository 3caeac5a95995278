"""The coordinator's link to a report (报告链接): a small HTTP server that serves the
``report.html`` pages under one folder and the aggregate files beside a page that the page
links, and nothing else. The report folder also holds person status, untested lists,
worklists, orders and district packs with personal data; those are never served.

What is served is an explicit allow-list, :data:`SERVED` (file name → content type): a
``report.html`` inside the root, and ``report.xlsx`` (the page's workbook, aggregate only;
``reporting.workbook``) when a ``report.html`` lies beside it, as a download. Everything else
is 404: ``untested.*``, ``resample_orders.*``, ``person_status.*``, ``key_groups_overdue.*``,
``door_to_door.*``, ``district_orders.*``, ``districts/**`` and its worklists, and every other
file too, aggregate or not (``coverage.parquet`` is for machines, not the link).

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
from urllib.parse import unquote, urlsplit

from reporting.workbook import WORKBOOK
from tubetrail.loopback import LoopbackServer

PAGE = "report.html"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: the allow-list: file name → (content type, sent as a download)
SERVED = {PAGE: ("text/html; charset=utf-8", False), WORKBOOK: (XLSX, True)}
#: folders of personal files (the district packs and their worklists): nothing under them is served
PERSONAL_FOLDERS = frozenset({"districts", "worklists"})


def servable(root: Path, url_path: str) -> Path | None:
    """The file a request path names, if the allow-list lets it out: a report.html inside
    ``root``, or a workbook beside one (outside the personal folders); else None."""
    wanted = Path(unquote(urlsplit(url_path).path))
    if wanted.name not in SERVED:
        return None
    try:
        found = wanted.resolve()
    except (OSError, RuntimeError):
        return None
    root = root.resolve()
    if found.name not in SERVED or not found.is_relative_to(root) or not found.is_file():
        return None  # a link named report.html that points at another file is refused too
    if PERSONAL_FOLDERS & set(found.relative_to(root).parts[:-1]):
        return None
    if found.name != PAGE and not (found.parent / PAGE).is_file():
        return None  # a workbook is served beside its page only
    return found


class ReportServer(LoopbackServer):
    """Serves ``report.html`` files under ``root`` and their workbooks on ``host:port``; 404
    for anything else."""

    def __init__(self, root: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.root = Path(root).resolve()
        served_root = self.root

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                found = servable(served_root, self.path)
                if found is None:
                    self.send_error(HTTPStatus.NOT_FOUND, "only report pages and their workbooks are served here")
                    return
                body = found.read_bytes()
                content_type, download = SERVED[found.name]
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                if download:
                    self.send_header("Content-Disposition", f'attachment; filename="{found.name}"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

        super().__init__(Handler, host, port, name="report-server")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True,
                        help="serve report.html pages (and the report.xlsx beside each) under this folder")
    parser.add_argument("--port", type=int, default=8027)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    with ReportServer(args.root, args.port, args.host) as server:
        print(f"report pages under {server.root} at {server.url}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    main()
