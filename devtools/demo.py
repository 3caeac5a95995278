"""The demo's round, played as it happens: the simulated city's files are handed to the inbox
in waves (reference data and the register first, then one wave per hour of event time), each
wave taken by its own ingest flow run, so the coordinator watches tubes, boxes, results and
positive pools arrive in the Prefect UI. Also the demo's local services: a ``tubetrail serve``
process that keeps the deployments served after the demo ends (no work pool: served
deployments need no worker), and the report server; their pids in ``<workdir>/<name>.pid``
for ``make stop`` (``devtools.stop``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from ingest.feeds import EVENT_TIME
from ingest.discover import InboxFile, discover, first_event_at

#: the demo's report server (report.html pages and the report.xlsx beside each, nothing else): 127.0.0.1:8027
REPORT_PORT = 8027


def waves(city: Path, timezone: str) -> list[tuple[str, list[InboxFile]]]:
    """The city's files in the order things happened, cut into hourly waves (city time)."""
    files = discover(city, timezone_name=timezone)
    reference = [f for f in files if f.kind not in EVENT_TIME]
    out: list[tuple[str, list[InboxFile]]] = [("reference data and the register", reference)] if reference else []
    zone = ZoneInfo(timezone)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = ?", [timezone])
        for f in (f for f in files if f.kind in EVENT_TIME):
            at = first_event_at(f, con)
            label = at.astimezone(zone).strftime("%m-%d %H:00") if at else "files without a time"
            if out and out[-1][0] == label:
                out[-1][1].append(f)
            else:
                out.append((label, [f]))
    finally:
        con.close()
    return out


def play(city: Path, live: Path, timezone: str, take: Callable[[str, Path], None], pause_seconds: float = 2.0,
         on_wave: Callable[[int, int, str, int], None] | None = None) -> int:
    """Copy each wave into its own folder under ``live`` and have ``take(label, folder)`` ingest
    it; a pause between waves lets the UI show them arrive. Returns the number of waves."""
    planned = waves(city, timezone)
    for n, (label, files) in enumerate(planned, start=1):
        folder = live / f"wave-{n:03d}"
        for f in files:
            target = folder / Path(f.path).relative_to(city)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f.path, target)  # keeps the modification time (an export's write time)
        if on_wave:
            on_wave(n, len(planned), label, len(files))
        take(label, folder)
        if n < len(planned):
            time.sleep(pause_seconds)
    return len(planned)


def wave_line(n: int, total: int, label: str, files: int, started: float, now: float) -> str:
    """``wave 3 of 29 04-04 08:00: 12 file(s) (time left ≈ 4 min 10 s)``: the time left is the
    mean time of the waves so far times the waves left (none known before the first is done)."""
    done = n - 1
    left = ""
    if done:
        seconds = round((now - started) / done * (total - done))
        left = f" (time left ≈ {seconds // 60} min {seconds % 60:02d} s)" if seconds >= 60 else \
            f" (time left ≈ {seconds} s)"
    return f"wave {n} of {total} {label}: {files} file(s){left}"


def ensure_background(workdir: Path, name: str, argv: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """A background process of the demo (its pid in ``workdir/<name>.pid``, its output in
    ``<name>.log``), left running after the demo like the server; a second demo finds it.
    Returns (pid, started now)."""
    pidfile = workdir / f"{name}.pid"
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
            return pid, False
        except (ValueError, ProcessLookupError, PermissionError):
            pass
    with (workdir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    pidfile.write_text(str(proc.pid))
    return proc.pid, True


def ensure_served(workdir: Path, env: dict[str, str]) -> tuple[int, bool]:
    """``tubetrail serve``: the deployments stay runnable from the UI after the demo."""
    return ensure_background(workdir, "serve", [sys.executable, "-m", "tubetrail.cli", "serve"], env)


def ensure_report_server(workdir: Path, port: int, env: dict[str, str]) -> tuple[int, bool]:
    """The report pages under ``workdir`` on 127.0.0.1:``port`` (``tubetrail.report_server``)."""
    return ensure_background(workdir, "report-server", [sys.executable, "-m", "tubetrail.report_server",
                                                        "--root", str(workdir), "--port", str(port)], env)


def report_time(round_end: datetime, timezone: str) -> datetime:
    """When the demo (and the city benchmark) judge a played round's report: the next day at
    noon, city time, when the next morning's re-samples are in."""
    from datetime import timedelta

    return round_end.astimezone(ZoneInfo(timezone)).replace(hour=12, minute=0, second=0) + timedelta(days=1)


def sweep_time(round_end: datetime, timezone: str) -> datetime:
    """When the demo's reminder sweep runs: three hours before the round closes (city time)."""
    from datetime import timedelta

    return round_end.astimezone(ZoneInfo(timezone)) - timedelta(hours=3)
