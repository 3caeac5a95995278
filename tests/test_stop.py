"""``make stop`` (``devtools.stop``): every process the demo recorded in ``<workdir>/*.pid`` is
stopped with its process group, ``tubetrail serve`` before the Prefect server; a pid whose process
is gone or is another program now is only forgotten, never signalled."""

import os
import subprocess
import sys
import time

from devtools.stop import PROCESSES, stop_demo


def started(workdir, name: str, marker: str, child: bool = False) -> subprocess.Popen:
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            "time.sleep(120)") if child else "import time; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True)
    (workdir / f"{name}.pid").write_text(str(proc.pid))
    return proc


def group_members(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout.split("\n")
    return [int(f[0]) for f in (line.split() for line in out) if len(f) == 3 and int(f[1]) == pgid
            and not f[2].startswith("Z")]


def test_stop_ends_every_recorded_process_and_its_group(tmp_path):
    procs = {name: started(tmp_path, name, f"-m {marker}", child=name == "prefect-server")
             for name, marker in PROCESSES}
    time.sleep(1.0)
    assert len(group_members(procs["prefect-server"].pid)) == 2  # the server and its child
    said = stop_demo(tmp_path)
    assert said == [f"{name}: pid {procs[name].pid} stopped" for name, _ in PROCESSES]  # serve first
    for proc in procs.values():
        assert proc.wait(timeout=10) is not None
        assert group_members(proc.pid) == []
    assert list(tmp_path.glob("*.pid")) == []


def test_a_pid_that_is_no_longer_the_demos_is_forgotten_not_signalled(tmp_path):
    (tmp_path / "serve.pid").write_text(str(os.getpid()))  # this test process: not `tubetrail serve`
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "report-server.pid").write_text(str(gone.pid))
    assert stop_demo(tmp_path) == [f"serve: pid {os.getpid()} not running, forgotten",
                                   f"report-server: pid {gone.pid} not running, forgotten",
                                   f"prefect-server: not started by the demo (no {tmp_path / 'prefect-server.pid'})"]
    assert list(tmp_path.glob("*.pid")) == []
