"""``make browser-check``: headless Chromium (Debian's ``chromium``) against the Prefect UI and a
round's ``report.html``. Saves screenshots, and exits 1 if the report misses a section (or a
section is empty), the UI has no flow runs, or the UI's newest ``report-link`` artifact does
not open a whole report.

    python -m tubetrail.browser_check --report data/demo/report/report.html \\
        --ui http://127.0.0.1:4200 --out data/demo/screenshots
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from reporting.html import SECTIONS

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no headless browser: install Debian's chromium (apt-get install chromium fonts-noto-cjk)")


def _run(args: list[str], timeout: float = 120.0) -> str:
    done = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


def dom(url: str, budget_ms: int = 10_000) -> str:
    """The page's DOM after its scripts ran (``--virtual-time-budget``)."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url])


def screenshot(url: str, path: Path, size: str = "1400,2400", budget_ms: int = 10_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={path}", url])


def report_problems(html: str) -> list[str]:
    """Each section of ``reporting.html.SECTIONS`` present and filled (a table row or a chart)."""
    problems = []
    parts = re.split(r"<section\b", html)
    for name in SECTIONS:
        part = next((p for p in parts if f"<h2>{name}</h2>" in p), None)
        if part is None:
            problems.append(f"report: section '{name}' missing")
        elif "<td" not in part and "<svg" not in part and "class=\"card\"" not in part:
            problems.append(f"report: section '{name}' is empty")
    return problems


def ui_problems(ui: str) -> list[str]:
    """The UI answers and its API (what the runs page lists) has flow runs. The runs page is
    judged by its screenshot: Chromium's DOM dump returns before the page's data has loaded."""
    base = ui.rstrip("/")
    if not httpx.get(f"{base}/", timeout=30, follow_redirects=True).is_success:
        return [f"UI: {base} does not answer"]
    count = httpx.post(f"{base}/api/flow_runs/count", json={}, timeout=30).json()
    return [] if count else ["UI: no flow runs at all"]


def report_link_of(ui: str) -> str | None:
    """The URL of the newest ``report-link`` artifact (the link a coordinator clicks in the
    UI's Artifacts), or None."""
    found = httpx.post(f"{ui.rstrip('/')}/api/artifacts/filter", timeout=30, json={
        "artifacts": {"key": {"any_": ["report-link"]}}, "sort": "CREATED_DESC", "limit": 1}).json()
    match = re.search(r"\]\((https?://[^)]+)\)", found[0].get("data") or "") if found else None
    return match.group(1) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--ui", default="http://127.0.0.1:4200")
    parser.add_argument("--out", type=Path, default=Path("data/demo/screenshots"))
    args = parser.parse_args(argv)
    if not args.report.exists():
        print(f"{args.report}: no report (run make demo first)", file=sys.stderr)
        return 1
    report_url = args.report.resolve().as_uri()
    problems = report_problems(dom(report_url, 2_000))
    screenshot(report_url, args.out / "report.png", "1400,6000", 2_000)
    runs_url = args.ui.rstrip("/") + "/runs"
    problems += ui_problems(args.ui)
    screenshot(runs_url, args.out / "ui-runs.png", "1600,1000", 15_000)
    screenshot(args.ui.rstrip("/") + "/artifacts", args.out / "ui-artifacts.png", "1600,1000", 15_000)
    shots = ["report.png", "ui-runs.png", "ui-artifacts.png"]
    link = report_link_of(args.ui)
    if link is None:
        problems.append("UI: no report-link artifact (the report run had no [report] link_base)")
    else:  # the page behind the UI's link is a whole report too
        problems += [f"report link {link}: {p.removeprefix('report: ')}" for p in report_problems(dom(link, 2_000))]
        screenshot(link, args.out / "report-link.png", "1400,3000", 2_000)
        shots.append("report-link.png")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"screenshots in {args.out}: {', '.join(shots)}; "
          f"{'FAILED: ' + str(len(problems)) + ' problem(s)' if problems else 'report and UI OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
