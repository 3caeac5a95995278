"""The demo's notification inbox: a small HTTP server on loopback that receives what the
positive-pool automation sends (Prefect's custom-webhook notification) and keeps each one as a
line of JSON. In production the automation's webhook points at the coordinator's own channel."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from tubetrail.loopback import LoopbackServer


class AlertInbox(LoopbackServer):
    def __init__(self, url: str, store: Path, on_alert: Callable[[dict], None] | None = None) -> None:
        parts = urlsplit(url)
        self.store = store
        self.received: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)) or 0)
                try:
                    alert = json.loads(body or b"{}")
                except ValueError:
                    alert = {"body": body.decode("utf-8", "replace")}
                inbox.received.append(alert)
                with inbox.store.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(alert, ensure_ascii=False) + "\n")
                if on_alert is not None:
                    on_alert(alert)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        store.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(Handler, parts.hostname or "127.0.0.1", parts.port if parts.port is not None else 80,
                         "alert-inbox")
        self.url += parts.path
