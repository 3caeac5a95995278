"""Prefect's log lines for a person at a terminal (``tubetrail.prefect_logs``): INFO and up in the
file, only warnings and errors through Prefect's console handler, the processes started
meanwhile told the same; all undone when the command ends. The whole path through a real
command: ``tests/test_cli_for_people.py``."""

import logging
import os

from tubetrail.prefect_logs import CHILD_CONSOLE_LEVEL, log_file_of, prefect_logs_to


def test_info_to_the_file_warnings_to_the_terminal_too(tmp_path):
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    console = next(h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler))
    logger = logging.getLogger("prefect.tubetrail-test")  # a flow run's records need its name: not here
    level = logger.level
    logger.setLevel(logging.INFO)
    shown: list[str] = []
    try:
        with prefect_logs_to(log_file_of(tmp_path / "wh.duckdb")) as path:
            assert os.environ[CHILD_CONSOLE_LEVEL] == "WARNING"
            for record in (logging.makeLogRecord({"levelno": logging.INFO, "msg": "flow run created"}),
                           logging.makeLogRecord({"levelno": logging.WARNING, "msg": "positive pool"})):
                if console.filter(record):
                    shown.append(record.msg)
            logger.info("Finished in state Completed()")
            logger.warning("a refused file")
        assert path == tmp_path / "prefect.log"
        text = path.read_text(encoding="utf-8")
        assert "INFO    | prefect.tubetrail-test - Finished in state Completed()" in text
        assert "WARNING | prefect.tubetrail-test - a refused file" in text
        assert shown == ["positive pool"]  # the terminal: warnings only
        assert CHILD_CONSOLE_LEVEL not in os.environ and console.filter(
            logging.makeLogRecord({"levelno": logging.INFO, "msg": "after"}))  # undone
        logger.info("after the command")
        assert "after the command" not in path.read_text(encoding="utf-8")
    finally:
        logger.setLevel(level)


def test_a_transport_fault_the_client_reconnects_from_goes_to_the_file_not_the_terminal(tmp_path):
    """A busy Prefect server made the events websocket miss a keepalive during a concurrent
    ingest: ``websockets.client`` logged an error with its traceback on the terminal of a run
    that then finished 0 (the fault suite's gate, 2026-12-01). The file keeps it whole."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    console = next(h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler))
    with prefect_logs_to(log_file_of(tmp_path / "wh.duckdb")) as path:
        try:
            raise ConnectionError("no close frame received or sent")
        except ConnectionError:
            logging.getLogger("websockets.client").error("keepalive ping failed", exc_info=True)
            fault = logging.LogRecord("websockets.client", logging.ERROR, __file__, 1, "keepalive ping failed", None, None)
        ours = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "a flow run failed", None, None)
        assert not console.filter(fault) and console.filter(ours)
    text = path.read_text(encoding="utf-8")
    assert "ERROR   | websockets.client - keepalive ping failed" in text and "Traceback" in text
