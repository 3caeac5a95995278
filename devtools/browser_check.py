"""``make browser-check``: headless Chromium (Debian's ``chromium``) against the Prefect UI and a
round's ``report.html``. Saves screenshots, and exits 1 if the report misses a section (or a
section is empty) or its link to ``report.xlsx``, the UI has no flow runs, the UI's newest
``report-link`` artifact does not open a whole report, or the workbook (beside the page, and
through the report server's link) does not open: it is read back with openpyxl (a dev
dependency, imported only here; without it the check says so and fails) and must hold the
sheets and rows the page's Workbook section lists, with no formula cell.

    python -m devtools.browser_check --report data/demo/report/report.html \\
        --ui http://127.0.0.1:4200 --out data/demo/screenshots
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from urllib.parse import urljoin

import httpx

from reporting.html import SECTIONS
from tubetrail.report_server import XLSX

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
    problems = [] if workbook_link(html) else ["report: no link to report.xlsx"]
    parts = re.split(r"<section\b", html)
    for name in SECTIONS:
        part = next((p for p in parts if f"<h2>{name}</h2>" in p), None)
        if part is None:
            problems.append(f"report: section '{name}' missing")
        elif "<td" not in part and "<svg" not in part and "class=\"card\"" not in part:
            problems.append(f"report: section '{name}' is empty")
    return problems


def workbook_link(html: str) -> str | None:
    """The page's link to its workbook (``href`` of the first ``.xlsx`` link), or None."""
    match = re.search(r'<a\b[^>]*\bhref="([^"]+\.xlsx)"', html)
    return match.group(1) if match else None


def listed_sheets(html: str) -> dict[str, int]:
    """The sheets (name → data rows) the page's Workbook section lists."""
    part = next((p for p in re.split(r"<section\b", html) if "<h2>Workbook</h2>" in p), "")
    return {name: int(rows.replace(",", "")) for name, rows in
            re.findall(r'<td class="l">([^<]+)</td>\s*<td>([\d,]+)</td>', part)}


def workbook_problems(data: bytes, html: str, where: str = "workbook") -> list[str]:
    """``data`` opens as a workbook (openpyxl, as Excel would) holding exactly the sheets and
    data rows the page lists, each with a header row, and no cell is a formula."""
    try:
        import openpyxl
    except ImportError:
        return [f"{where}: openpyxl is not installed (a dev dependency: uv sync --group dev), "
                "cannot open report.xlsx"]
    import io

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
        return [f"{where}: does not open ({type(exc).__name__})"]
    problems, found = [], {}
    try:
        for sheet in book.worksheets:
            rows = 0
            for r, row in enumerate(sheet.iter_rows(), start=0):
                if r == 0 and not any(c.value for c in row):
                    problems.append(f"{where}: sheet '{sheet.title}' has no header row")
                if any(c.data_type == "f" for c in row):
                    problems.append(f"{where}: sheet '{sheet.title}' row {r + 1} holds a formula")
                rows = r
            found[sheet.title] = rows
    finally:
        book.close()
    listed = listed_sheets(html)
    if not found:
        problems.append(f"{where}: no sheet")
    elif found != listed:
        problems.append(f"{where}: sheets {found} but the page lists {listed}")
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


def served_workbook_problems(page_url: str, html: str) -> list[str]:
    """The workbook the served page links, fetched through the report server as a browser
    would: answered, as an xlsx download, and it opens."""
    href = workbook_link(html)
    if href is None:
        return []  # report_problems names the missing link
    url = urljoin(page_url, href)
    answer = httpx.get(url, timeout=60)
    if answer.status_code != 200:
        return [f"workbook {url}: HTTP {answer.status_code}"]
    if answer.headers.get("content-type") != XLSX:
        return [f"workbook {url}: served as {answer.headers.get('content-type')}, not {XLSX}"]
    return workbook_problems(answer.content, html, f"workbook {url}")


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
    page = dom(report_url, 2_000)
    problems = report_problems(page)
    href = workbook_link(page)
    if href:  # the workbook the page links, beside it on disk
        beside = args.report.resolve().parent / href
        problems += workbook_problems(beside.read_bytes(), page, str(beside)) if beside.is_file() \
            else [f"report: its link {href} names no file beside it"]
    screenshot(report_url, args.out / "report.png", "1400,6000", 2_000)
    runs_url = args.ui.rstrip("/") + "/runs"
    problems += ui_problems(args.ui)
    screenshot(runs_url, args.out / "ui-runs.png", "1600,1000", 15_000)
    screenshot(args.ui.rstrip("/") + "/artifacts", args.out / "ui-artifacts.png", "1600,1000", 15_000)
    shots = ["report.png", "ui-runs.png", "ui-artifacts.png"]
    link = report_link_of(args.ui)
    if link is None:
        problems.append("UI: no report-link artifact (the report run had no [report] link_base)")
    else:  # the page behind the UI's link is a whole report too, and its workbook link opens
        served = dom(link, 2_000)
        problems += [f"report link {link}: {p.removeprefix('report: ')}" for p in report_problems(served)]
        problems += served_workbook_problems(link, served)
        screenshot(link, args.out / "report-link.png", "1400,3000", 2_000)
        shots.append("report-link.png")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"screenshots in {args.out}: {', '.join(shots)}; "
          f"{'FAILED: ' + str(len(problems)) + ' problem(s)' if problems else 'report and UI OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
