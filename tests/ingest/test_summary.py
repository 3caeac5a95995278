"""``ingest.summary``: the ingest run's file table and summary markdown, from a few outcomes."""

from ingest.summary import ingest_counts, ingest_files_rows, ingest_summary_markdown
from warehouse.writer import FileOutcome

OUTCOMES = [
    FileOutcome("scans", "scans/a.csv", "h1", "accepted", 10, 8, 2, {"bad RIC": 2}, {"landline phone": 3}),
    FileOutcome("scans", "scans/b.csv", "h2", "skipped", message="scans/b.csv: seen before"),
    FileOutcome("scans", "scans/.c.csv.part", "h3", "skipped", message="scans/.c.csv.part: hidden, not taken"),
    FileOutcome("results", "results/L1/P1.csv", "h4", "refused", message="results/L1/P1.csv: no column well"),
    FileOutcome("results", "results/L1/P2.csv", "h5", "accepted", 96, 96, 0, {}, {}),
]


def test_counts():
    assert ingest_counts(OUTCOMES) == {"taken": 2, "seen_before": 1, "refused": 1, "hidden": 1}
    assert ingest_counts([]) == {"taken": 0, "seen_before": 0, "refused": 0, "hidden": 0}


def test_the_file_table_has_one_row_per_file():
    rows = ingest_files_rows(OUTCOMES)
    assert [r["file"] for r in rows] == [o.file_name for o in OUTCOMES]
    assert rows[0] == {"kind": "scans", "file": "scans/a.csv", "status": "accepted", "rows read": 10,
                       "accepted": 8, "quarantined": 2, "note": ""}


def test_the_summary_per_kind_then_reasons_warnings_refused_and_hidden():
    text = ingest_summary_markdown(OUTCOMES)
    assert text.splitlines() == [
        "# Ingest summary", "",
        "| kind | files taken | skipped (seen) | refused | rows read | accepted | quarantined | hidden (not taken) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| scans | 1 | 1 | 0 | 10 | 8 | 2 | 1 |",
        "| results | 1 | 0 | 1 | 96 | 96 | 0 | 0 |", "",
        "## Quarantined rows by reason", "", "| kind | reason | rows |", "|---|---|---:|", "| scans | bad RIC | 2 |", "",
        "## Warnings (rows kept)", "", "| kind | warning | rows |", "|---|---|---:|", "| scans | landline phone | 3 |", "",
        "## Refused files", "", "- results/L1/P1.csv: no column well", "",
        "## Hidden files, not taken", "", "- scans/.c.csv.part: hidden, not taken"]


def test_a_quiet_run_has_the_table_only():
    text = ingest_summary_markdown([OUTCOMES[1]])
    assert text.splitlines()[-1] == "| scans | 0 | 1 | 0 | 0 | 0 | 0 | 0 |"
    assert "##" not in text
