"""Prefect's logs for a person at a terminal: every record of the flow runs of a command goes to
a file (``prefect.log`` beside the warehouse; the demo's: ``data/demo/prefect.log``) and to the
Prefect UI as before; the terminal shows only Prefect's warnings and errors, and the command's
own lines. ``tubetrail --verbose`` keeps Prefect's INFO lines on the terminal too."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the file's name, in the warehouse's folder
LOG_NAME = "prefect.log"
#: Prefect's override of its console handler's level (``PREFECT_LOGGING_[PATH]_[KEY]``), set for
#: the processes a command starts while its logs go to the file: the report's Dask workers
CHILD_CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"


#: the loggers of the transport under Prefect's clients: a fault there (a busy server missing a
#: websocket keepalive, logged as an error with its traceback) is one the client reconnects from,
#: so the terminal does not show it; the file keeps it whole
TRANSPORT_LOGGERS = ("websockets",)


class _WarningsAndUp(logging.Filter):
    """On the terminal: warnings and errors only (a filter, not the handler's level, so Prefect's
    incremental logging set-up, which resets handler levels, does not undo it), and none of the
    transport's (:data:`TRANSPORT_LOGGERS`) below critical."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name or "").partition(".")[0] in TRANSPORT_LOGGERS:
            return record.levelno >= logging.CRITICAL
        return record.levelno >= logging.WARNING


def log_file_of(warehouse: str | Path) -> Path:
    """Where a command's Prefect logs go: beside its warehouse."""
    return Path(warehouse).resolve().parent / LOG_NAME


@contextmanager
def prefect_logs_to(path: Path, *, terminal: bool = False) -> Iterator[Path]:
    """While open: Prefect's records (INFO and up, as ``PREFECT_LOGGING_LEVEL`` says) appended to
    ``path``; Prefect's console handler keeps warnings and errors only, unless ``terminal``."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(PrefectFormatter(
        format="%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
        flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
        task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    quiet = _WarningsAndUp()
    consoles = [] if terminal else [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    for console in consoles:
        console.addFilter(quiet)
    root.addHandler(handler)
    children = not terminal and CHILD_CONSOLE_LEVEL not in os.environ
    if children:  # the processes started meanwhile (Dask workers) print warnings and errors only
        os.environ[CHILD_CONSOLE_LEVEL] = "WARNING"
    try:
        yield path
    finally:
        if children:
            os.environ.pop(CHILD_CONSOLE_LEVEL, None)
        root.removeHandler(handler)
        handler.close()
        for console in consoles:
            console.removeFilter(quiet)
