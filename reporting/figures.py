"""The figures of one report (counts only: safe for artifacts and logs), shared by the report's
writer (``reporting.report``), its page (``reporting.html``) and the flow's artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class ReportFigures:
    """What the report found, in counts: safe for artifacts and logs."""

    round_id: str
    as_of: datetime
    files: list[str] = field(default_factory=list)
    city: dict = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    key_groups: dict[str, dict[str, int]] = field(default_factory=dict)
    #: seconds per part of the report (``make bench`` shows them: what each part adds)
    timings: dict[str, float] = field(default_factory=dict)
    #: report.xlsx: data rows per sheet, in the workbook's order
    sheets: dict[str, int] = field(default_factory=dict)
    #: the capacity plan of the round at the report's time (``reporting.plan``: figures only)
    plan: dict = field(default_factory=dict)
    #: coverage per district (the rollup's district rows, by district): for the flow's artifact
    districts: list[dict] = field(default_factory=list)
