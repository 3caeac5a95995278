"""Pool-size advice (混采比例建议; Dorfman, 1943): per district, the pool size among the validated
ones that needs the fewest tests per person at the positivity observed, and the tests it would
save per round. Advice only: nothing changes the round's pool size (DESIGN §8).

* **Positivity** is estimated from the round's pooled calls, not from people: a pool is called
  hours before its people are re-sampled one by one, so people positive ÷ people resulted lags
  and undercounts while a round runs. Per district (the district of the tube's site), over the
  round's tubes with a final call at ``as_of`` (``positive``, ``negative``, a persisting
  ``single_target``; twice-invalid tubes and re-samples left out): q = viral tubes ÷ called
  tubes, k = their mean number of people, and p = 1 − (1 − q)^(1/k), the chance a person is
  positive when a pool of k is positive with chance q (single tubes are pools of 1).
* **Tests per person** for pool size k (Dorfman): 1/k + 1 − (1 − p)^k, one pooled test shared
  by k people plus, when the pool is positive, one test each; a single tube is 1.
* **The best size** among the validated pool sizes (``[pool_policy] allowed_sizes`` above 1:
  5, 10, 20) is the one with the fewest tests per person (a tie: the smaller pool, the less
  diluted swab); **tests saved per round** = the district's registered people in scope ×
  (tests per person at the round's pool size − at the best size).
* A district with nothing called yet gets no advice, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import polars as pl

from kernel.config import Config

ADVICE_SCHEMA = {"district": pl.Utf8, "registered": pl.Int64, "tubes_called": pl.Int64, "tubes_positive": pl.Int64,
                 "mean_pool_people": pl.Float64, "positivity": pl.Float64, "current_size": pl.Int64,
                 "tests_per_person_current": pl.Float64, "best_size": pl.Int64, "tests_per_person_best": pl.Float64,
                 "tests_saved_per_round": pl.Int64, "advice": pl.Utf8}
ADVICE_COLUMNS = tuple(ADVICE_SCHEMA)
#: what a district without any final call yet is told
NOTHING_RESULTED = "no advice: nothing resulted yet in this round"


def dorfman_tests(p: float, k: int) -> float:
    """Dorfman's expected tests per person for pools of ``k`` at positivity ``p`` (k = 1: one)."""
    if k <= 1:
        return 1.0
    return 1.0 / k + (1.0 - (1.0 - p) ** k)


def positivity_from_pools(q: float, k: float) -> float:
    """The chance a person is positive when pools of ``k`` people are positive with chance ``q``."""
    if k <= 0:
        raise ValueError("a pool holds at least one person")
    return 1.0 - (1.0 - q) ** (1.0 / k)


def best_pool_size(p: float, sizes: Sequence[int]) -> tuple[int, float]:
    """The size among ``sizes`` with the fewest tests per person (a tie: the smaller), and that figure."""
    return min(((k, dorfman_tests(p, k)) for k in sorted(set(sizes))), key=lambda pair: (pair[1], pair[0]))


def validated_sizes(allowed_sizes: Sequence[int]) -> tuple[int, ...]:
    """The validated pool sizes: the allowed sizes above 1 (5, 10, 20 by default)."""
    return tuple(sorted({k for k in allowed_sizes if k > 1}))


def pool_advice_frame(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str | None, as_of: datetime, *,
                      need: str | None = None, calls: str | None = None) -> pl.DataFrame:
    """``pool_advice.parquet``: the advice per district of the round's scope (``ADVICE_COLUMNS``),
    among ``[pool_policy] allowed_sizes`` above 1 (no round: no rows). ``need``: a table already
    holding ``scope_need(round_id, as_of)``; ``calls``: one holding the final calls at ``as_of``
    (``tube_barcode``, ``call``: the report's). Needs the views of
    ``warehouse.views.define_views`` (``scope_need``, ``tube_calls``, ``tubes``)."""
    if round_id is None:
        return pl.DataFrame(schema=ADVICE_SCHEMA)
    rows = con.execute(
        f"""
        WITH r AS (SELECT pool_size FROM rounds WHERE round_id = $rid),
        scope AS (SELECT district, registered FROM {need or "scope_need($rid, $as_of)"}),
        called AS (
            SELECT s.district, t.members, viral_call(k.call) AS viral
            FROM {calls or "(SELECT tube_barcode, call FROM tube_calls($as_of) WHERE final)"} k
                 JOIN tubes t USING (tube_barcode) JOIN sites s USING (site_id)
            WHERE t.round_id = $rid AND k.call <> 'invalid' AND NOT coalesce(t.resample, FALSE)
              AND t.members > 0
        ), observed AS (
            SELECT district, count(*) AS tubes_called, count(*) FILTER (WHERE viral) AS tubes_positive,
                   avg(members) AS mean_people
            FROM called GROUP BY district
        )
        SELECT s.district, s.registered, coalesce(o.tubes_called, 0), coalesce(o.tubes_positive, 0), o.mean_people,
               (SELECT pool_size FROM r)
        FROM scope s LEFT JOIN observed o USING (district) ORDER BY s.district
        """, {"rid": round_id, **({"as_of": as_of} if need is None or calls is None else {})}).fetchall()
    sizes = validated_sizes(cfg.pool_policy.allowed_sizes)
    out = []
    for district, registered, called, positive, mean_people, current in rows:
        row = dict(zip(ADVICE_COLUMNS, (district, registered, called, positive, mean_people, None, current,
                                        None, None, None, None, NOTHING_RESULTED)))
        if called and sizes:
            p = positivity_from_pools(positive / called, mean_people)
            best, best_tests = best_pool_size(p, sizes)
            now = dorfman_tests(p, current)
            saved = max(0, round(registered * (now - best_tests)))
            if best_tests >= 1.0:
                advice = (f"positivity about {100 * p:.0f} %: no validated pool saves tests, single tubes need "
                          "fewer (1 test a person)")
            elif best == current or saved == 0:
                advice = f"keep pools of {current}"
            else:
                advice = f"pools of {best} instead of {current}: {saved:,} fewer tests per round"
            row.update(positivity=p, tests_per_person_current=now, best_size=best, tests_per_person_best=best_tests,
                       tests_saved_per_round=saved, advice=advice)
        out.append(row)
    return pl.DataFrame(out, schema=ADVICE_SCHEMA)
