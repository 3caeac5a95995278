"""The alerts judged at a time, not raised by one file (one list, every rule by its name).

Each rule is ``(con, cfg, as_of) -> alerts``, run by ``flows.alerts.raise_timed_alerts`` at the
latest fact of every ingest run and at the report's time (the views of
:func:`warehouse.views.define_views` are defined). An alert is recorded once per kind and subject,
so a rule may return what it returned before. The alert kinds and the outbox row are
``reporting.alerts``'s; the rules live with what they judge."""

from __future__ import annotations

from reporting.alerts import lost_custody_alerts, overdue_urgent_alerts
from reporting.daily import lab_over_capacity_alerts, silent_unit_alerts
from reporting.stock import stock_low_alerts

TIMED_ALERT_RULES: tuple = (
    overdue_urgent_alerts,
    lost_custody_alerts,  # box_lost and tube_lost
    # silent districts and labs (漏报) and labs over their daily capacity (``reporting.daily``)
    silent_unit_alerts,
    lab_over_capacity_alerts,
    # reagents or consumables under [stock] min_days in hand (``reporting.stock``)
    stock_low_alerts,
)


def timed_alerts(con, cfg, as_of) -> list:
    """Every rule of :data:`TIMED_ALERT_RULES` judged at ``as_of``, in order (needs the views of
    :func:`warehouse.views.define_views`; each rule defines what else it reads)."""
    return [alert for rule in TIMED_ALERT_RULES for alert in rule(con, cfg, as_of)]
