"""``make stop``: stop every process the demo started and left running, from the pids it
recorded in ``<workdir>/<name>.pid``: ``tubetrail serve`` first (it polls the server; stopped
after it, it would log connection errors until it noticed), then the report server, then the
Prefect server. Each was started in a session of its own, so its whole process group is
signalled (the server's children too): SIGTERM, then SIGKILL after ``grace`` seconds. A pid
whose process is gone, or is no longer the one recorded (its command line does not name it),
is only forgotten. Standard library only: it runs with the system Python, without the venv.

    python3 -m devtools.stop [data/demo]
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

#: the demo's background processes, in the order they are stopped, and what their command line holds
PROCESSES = (("serve", "tubetrail.cli serve"), ("report-server", "tubetrail.report_server"),
             ("prefect-server", "prefect server start"))


def _command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _not_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def stop_one(workdir: Path, name: str, marker: str, grace: float = 15.0) -> str:
    """Stop the process recorded in ``workdir/name.pid``; say what happened."""
    pidfile = workdir / f"{name}.pid"
    if not pidfile.exists():
        return f"{name}: not started by the demo (no {pidfile})"
    try:
        pid = int(pidfile.read_text().strip())
    except ValueError:
        pidfile.unlink()
        return f"{name}: unreadable {pidfile}, removed"
    command = _command_line(pid)
    if command is None or marker not in command or not _not_zombie(pid):
        pidfile.unlink()
        return f"{name}: pid {pid} not running, forgotten"
    try:
        os.killpg(pid, signal.SIGTERM)  # started with start_new_session: the group is its own
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _not_zombie(pid) and _command_line(pid) is not None:
        time.sleep(0.2)
    how = "stopped"
    if _command_line(pid) is not None and _not_zombie(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        how = "killed (did not stop within {grace:.0f} s)".format(grace=grace)
    pidfile.unlink()
    return f"{name}: pid {pid} {how}"


def stop_demo(workdir: Path) -> list[str]:
    return [stop_one(workdir, name, marker) for name, marker in PROCESSES]


if __name__ == "__main__":  # pragma: no cover
    for line in stop_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "data/demo")):
        print(line)
