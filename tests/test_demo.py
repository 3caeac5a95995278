"""The demo's playback: every file of the city handed over exactly once, in hourly waves in the
order things happened, reference data first, an export's write time kept."""

import os

from tests.builders import build, resamples
from devtools.demo import play, wave_line, waves


def test_waves_hand_over_every_file_once_in_time_order(tmp_path):
    city = build(tmp_path / "city")
    resamples(city)
    (city / "results/L1/P5.csv").touch()
    os.utime(city / "results/L1/P5.csv", (1_600_000_000, 1_600_000_000))
    planned = waves(city, "Asia/Shanghai")
    assert planned[0][0] == "reference data and the register"
    assert {f.kind for f in planned[0][1]} == {"sites", "labs", "register"}
    labels = [label for label, _ in planned[1:]]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)
    assert labels[0] == "04-04 11:00" and labels[-1] == "04-05 12:00"
    every = sorted(str(p.relative_to(city)) for p in city.rglob("*") if p.is_file())
    assert sorted(str(os.path.relpath(f.path, city)) for _, files in planned for f in files) == every

    taken = []
    count = play(city, tmp_path / "live", "Asia/Shanghai", lambda label, folder: taken.append((label, folder)),
                 pause_seconds=0)
    assert count == len(planned) == len(taken)
    copied = tmp_path / "live" / "wave-001" / "register" / "r.csv"
    assert copied.read_bytes() == (city / "register/r.csv").read_bytes()
    p5 = next((tmp_path / "live").rglob("P5.csv"))
    assert p5.stat().st_mtime == 1_600_000_000  # an export's write time travels with it


def test_wave_lines_tell_the_time_left_from_the_waves_so_far():
    assert wave_line(1, 29, "reference data and the register", 7, 100.0, 100.0) == \
        "wave 1 of 29 reference data and the register: 7 file(s)"  # nothing timed yet
    # 4 waves done in 80 s: 20 s a wave, 25 waves left
    assert wave_line(5, 29, "04-04 09:00", 12, 100.0, 180.0) == "wave 5 of 29 04-04 09:00: 12 file(s) (time left ≈ 8 min 20 s)"
    assert wave_line(28, 29, "04-05 11:00", 3, 0.0, 270.0) == "wave 28 of 29 04-05 11:00: 3 file(s) (time left ≈ 20 s)"
