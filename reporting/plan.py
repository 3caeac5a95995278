"""The capacity plan (``tubetrail plan``, flow ``capacity-plan``, DESIGN §6): can the city test
everyone, and for how long does what it holds last?

* the tubes one whole-population round of the scope needs at its zones' pool sizes, pooled and
  single (``sampling.need``), the labs' combined daily capacity, and the hours the labs need to
  test them all: tubes ÷ capacity × 24;
* reagents and consumables in hand as days of whole-population testing (``reporting.stock``):
  per item the city's total and the worst holder;
* pool-size advice per district (``sampling.pool_advice``).

**Under the minimum** is every row of ``stock.parquet`` under ``[stock] min_days``: an item of the
city's total *or* of a single holder (a lab short of kits is short whatever the depot holds),
exactly the rows that raise a ``stock_low`` alert; ``tubetrail plan`` exits 1 when there is any.
An item nobody has counted is shown as "no count" and is not judged.

Aggregates only: counts, places, times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from reporting.stock import stock_frame, stock_summary
from sampling.pool_advice import pool_advice_frame
from sampling.rounds import round_in_view
from kernel.config import Config


class PlanRefused(ValueError):
    """The plan cannot be made (a round that does not exist); the message says why."""


@dataclass(frozen=True)
class CapacityPlan:
    #: the figures, JSON-ready (``tubetrail plan --json``)
    figures: dict
    #: ``stock.parquet`` and ``pool_advice.parquet`` of the plan's round and time
    stock: pl.DataFrame
    advice: pl.DataFrame

    @property
    def under_minimum(self) -> bool:
        return bool(self.figures["under_minimum"])


def _city(at: datetime | None, zone: ZoneInfo) -> str | None:
    return at.astimezone(zone).isoformat(timespec="minutes") if at is not None else None


def _num(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None


def capacity_plan(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str | None, as_of: datetime, *,
                  calls: str | None = None) -> CapacityPlan:
    """The plan of ``round_id`` (None: the round open at ``as_of``, else the latest; no round at
    all: the whole register at the default pool size) judged at ``as_of``. ``calls``: a table of
    the final calls at ``as_of`` (the report's). Needs the views of ``warehouse.views.define_views``."""
    zone = ZoneInfo(cfg.city.timezone)
    if round_id is not None:
        if not con.execute("SELECT 1 FROM rounds WHERE round_id = ?", [round_id]).fetchall():
            raise PlanRefused(f"round {round_id} is not open in this warehouse")
        choice = "given"
    else:
        chosen = round_in_view(con, as_of)
        round_id, choice = chosen if chosen else (None, "no round: the whole register at the default pool size")
    rnd = con.execute("SELECT starts_at, ends_at, districts, pool_size FROM rounds WHERE round_id = ?",
                      [round_id]).fetchall()
    starts, ends, scope, pool_size = rnd[0] if rnd else (None, None, None, cfg.pool_policy.default_size)
    # one whole-population round of the scope, once (the stock and the advice read it too)
    con.execute("CREATE OR REPLACE TEMP TABLE plan_scope_need AS SELECT * FROM scope_need(?, ?)", [round_id, as_of])
    need = con.execute(
        """SELECT coalesce(sum(registered), 0)::BIGINT, coalesce(sum(tubes_pooled), 0)::BIGINT,
                  coalesce(sum(tubes_single), 0)::BIGINT, count(*) FROM plan_scope_need""").fetchall()[0]
    registered, pooled, single, districts = need
    labs = [{"lab_id": lab, "name": name, "daily_capacity_tubes": cap} for lab, name, cap in con.execute(
        "SELECT lab_id, name, daily_capacity_tubes FROM labs ORDER BY lab_id").fetchall()]
    capacity = sum(lab["daily_capacity_tubes"] or 0 for lab in labs)
    tubes = pooled + single
    stock = stock_frame(con, cfg, round_id, as_of, need="plan_scope_need")
    advice = pool_advice_frame(con, cfg, round_id, as_of, need="plan_scope_need", calls=calls)
    con.execute("DROP TABLE plan_scope_need")
    items = []
    for entry in stock_summary(stock):
        city, worst = entry["city"], entry["worst"]
        items.append({
            "item": entry["item"], "unit": entry["unit"],
            "counted_at": _city(city["counted_at"], zone) if city else None,
            "in_hand": city["in_hand"] if city else None,
            "need_per_round": _num(city["need_per_round"], 1) if city else None,
            "days_in_hand": _num(city["days_in_hand"]) if city else None,
            "under_minimum": city["under_minimum"] if city else False,
            "worst_holder": worst["holder"] if worst else None,
            "worst_holder_kind": worst["holder_kind"] if worst else None,
            "worst_days_in_hand": _num(worst["days_in_hand"]) if worst else None,
            "worst_under_minimum": worst["under_minimum"] if worst else False,
        })
    under = [{"holder": r["holder"], "holder_kind": r["holder_kind"], "item": r["item"],
              "days_in_hand": _num(r["days_in_hand"]), "counted_at": _city(r["counted_at"], zone)}
             for r in stock.filter(pl.col("under_minimum")).iter_rows(named=True)]
    figures = {
        "round_id": round_id, "round_choice": choice, "as_of": _city(as_of, zone),
        "round_starts_at": _city(starts, zone), "round_ends_at": _city(ends, zone),
        "scope": list(scope) if scope else "all districts", "districts": districts, "pool_size": pool_size,
        "registered": registered, "tubes_pooled": pooled, "tubes_single": single, "tubes": tubes,
        "labs": labs, "daily_capacity_tubes": capacity,
        "labs_without_capacity": sum(lab["daily_capacity_tubes"] is None for lab in labs),
        "hours_to_test": _num(tubes / capacity * 24, 1) if capacity else None,
        "min_days": cfg.stock.min_days, "stock": items, "under_minimum": under,
        "pool_advice": [{k: (_num(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
                        for row in advice.iter_rows(named=True)],
    }
    return CapacityPlan(figures, stock, advice)


def plan_markdown(figures: dict) -> str:
    """The plan as the ``capacity-plan`` artifact: counts and places only."""
    f = figures
    hours = f"{f['hours_to_test']:,.1f} h" if f["hours_to_test"] is not None else "– (no lab capacity known)"
    lines = [f"# Capacity plan: round {f['round_id'] or '(none)'} ({f['round_choice']})", "",
             f"As of {f['as_of']}. Scope: {f['scope'] if isinstance(f['scope'], str) else ', '.join(f['scope'])} "
             f"({f['districts']} district(s)), pool size {f['pool_size']}.", "",
             "| registered | tubes needed | pooled | single | labs' daily capacity | hours to test everyone |",
             "|---:|---:|---:|---:|---:|---:|",
             f"| {f['registered']:,} | {f['tubes']:,} | {f['tubes_pooled']:,} | {f['tubes_single']:,} "
             f"| {f['daily_capacity_tubes']:,} | {hours} |", "",
             f"## Days of whole-population testing in hand (minimum {f['min_days']:g}; ⚠ under it)", "",
             "| item | city: days | city: in hand | counted | worst holder | its days |", "|---|---:|---:|---|---|---:|"]
    for s in f["stock"]:
        if s["in_hand"] is None:
            lines.append(f"| {s['item']} | no count | – | – | – | – |")
            continue
        city = "–" if s["days_in_hand"] is None else ("⚠ " if s["under_minimum"] else "") + f"{s['days_in_hand']:.1f}"
        worst = ("–" if s["worst_days_in_hand"] is None else
                 ("⚠ " if s["worst_under_minimum"] else "") + f"{s['worst_days_in_hand']:.1f}")
        lines.append(f"| {s['item']} | {city} | {s['in_hand']:,} {s['unit']} | {s['counted_at']} "
                     f"| {s['worst_holder'] or '–'} | {worst} |")
    if f["under_minimum"]:
        lines += ["", "Under the minimum: " + ", ".join(f"{u['item']} at {u['holder']} ({u['days_in_hand']:.1f} days)"
                                                     for u in f["under_minimum"])]
    lines += ["", "## Pool-size advice (Dorfman; advice only)", "",
              "| district | positivity | now | best | tests saved per round | advice |", "|---|---:|---:|---:|---:|---|"]
    for a in f["pool_advice"]:
        positivity = f"{100 * a['positivity']:.3f} %" if a["positivity"] is not None else "–"
        saved = f"{a['tests_saved_per_round']:,}" if a["tests_saved_per_round"] is not None else "–"
        lines.append(f"| {a['district']} | {positivity} | {a['current_size']} | {a['best_size'] or '–'} | {saved} "
                     f"| {a['advice']} |")
    return "\n".join(lines) + "\n"
