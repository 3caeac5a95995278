"""What an ingest run tells the coordinator (the ``ingest-files`` table and the ``ingest-summary``
markdown artifacts of ``flows.ingest``), built from the files' outcomes: kinds, file names,
counts and reasons, never row content (a refusal's message is already masked by the reader)."""

from __future__ import annotations

from collections import Counter

from ingest.discover import is_hidden
from warehouse.writer import FileOutcome


def ingest_counts(outcomes: list[FileOutcome]) -> dict[str, int]:
    """Files taken, seen before (skipped, hidden files apart), refused and hidden (not taken)."""
    hidden = sum(is_hidden(o.file_name) for o in outcomes)
    return {"taken": sum(o.status == "accepted" for o in outcomes),
            "seen_before": sum(o.status == "skipped" for o in outcomes) - hidden,
            "refused": sum(o.status == "refused" for o in outcomes), "hidden": hidden}


def ingest_files_rows(outcomes: list[FileOutcome]) -> list[dict]:
    """One row per file: kind, name, status, rows read, accepted, quarantined, note."""
    return [{"kind": o.kind, "file": o.file_name, "status": o.status, "rows read": o.rows_read,
             "accepted": o.rows_accepted, "quarantined": o.rows_quarantined, "note": o.message}
            for o in outcomes]


def ingest_summary_markdown(outcomes: list[FileOutcome]) -> str:
    """Per kind the files taken, skipped, refused and hidden and the rows read, accepted and
    quarantined; then the quarantined rows by reason, the warnings (rows kept), the refused and
    the hidden files (each only when there is one)."""
    by_kind: dict[str, Counter[str]] = {}
    reasons: Counter[tuple[str, str]] = Counter()
    warnings: Counter[tuple[str, str]] = Counter()
    for o in outcomes:
        c = by_kind.setdefault(o.kind, Counter())
        c["files_hidden" if is_hidden(o.file_name) else f"files_{o.status}"] += 1
        c["read"] += o.rows_read
        c["accepted"] += o.rows_accepted
        c["quarantined"] += o.rows_quarantined
        for reason, n in o.quarantined_by_reason.items():
            reasons[(o.kind, reason)] += n
        for warning, n in o.warnings.items():
            warnings[(o.kind, warning)] += n
    lines = ["# Ingest summary", "", "| kind | files taken | skipped (seen) | refused | rows read | accepted | quarantined "
             "| hidden (not taken) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, c in by_kind.items():
        lines.append(
            f"| {kind} | {c['files_accepted']} | {c['files_skipped']} | {c['files_refused']} "
            f"| {c['read']:,} | {c['accepted']:,} | {c['quarantined']:,} | {c['files_hidden']} |"
        )
    if reasons:
        lines += ["", "## Quarantined rows by reason", "", "| kind | reason | rows |", "|---|---|---:|"]
        lines += [f"| {k} | {r} | {n:,} |" for (k, r), n in sorted(reasons.items())]
    if warnings:
        lines += ["", "## Warnings (rows kept)", "", "| kind | warning | rows |", "|---|---|---:|"]
        lines += [f"| {k} | {w} | {n:,} |" for (k, w), n in sorted(warnings.items())]
    refused = [o for o in outcomes if o.status == "refused"]
    if refused:
        lines += ["", "## Refused files", ""] + [f"- {o.message}" for o in refused]
    if hidden := [o for o in outcomes if is_hidden(o.file_name)]:
        lines += ["", "## Hidden files, not taken", ""] + [f"- {o.message}" for o in hidden]
    return "\n".join(lines)
