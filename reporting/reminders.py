"""SMS reminders to the untested (短信提醒), planned set-based (DESIGN §8):

* only registered people in the round's scope who are ``untested`` at ``as_of``;
* with a mobile phone (landlines and unallocated ranges get no SMS: ``not_mobile``), not opted out (``sms_optouts``), and not reminded in the cool-down: a person
  has at most one outbox message per cool-down window (``message_id`` is derived from the
  round, the person and the window, so planning twice plans the same message once);
* nothing is due in quiet hours (default 21:00–08:00, city time);
* the text names an open site of their community (else of their subdistrict, else of their
  district; ``home`` teams are not a place to go) and the round's deadline;
* nobody the door-to-door teams sample is sent to a site (``sampling_route``: sealed zone,
  limited mobility, controlled zone without a site in the community: ``door_to_door``), and a
  controlled-zone resident is sent only to a site of their own community;
* no reminder once the round's deadline has passed (``after_deadline``): a reminder with a
  deadline in the past sends people to a closed round;
* key-group members overdue on their test cycle (``key_group_compliance``) who are not untested
  in the round's scope are reminded by the same rules, with their cycle's due date
  (``[sms] key_group_template``; counted in ``key_group_due``).

``plan_reminders`` returns counts (safe for logs) and the due messages (personal data, for the
outbox only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from sampling.identity import is_mobile
from kernel.config import SmsConfig


@dataclass(frozen=True)
class ReminderPlan:
    round_id: str
    as_of: datetime
    quiet_hours: bool
    counts: dict[str, int]
    #: message_id, round_id, person_key (as text: polars has no 128-bit integer), phone, planned_at
    #: (the plan's as_of: the cool-down is judged in the event's time), body, params (JSON)
    due: pl.DataFrame


def in_quiet_hours(at: datetime, sms: SmsConfig, timezone: str) -> bool:
    local = at.astimezone(ZoneInfo(timezone)).time()
    start, end = time.fromisoformat(sms.quiet_start), time.fromisoformat(sms.quiet_end)
    return (start <= local or local < end) if start > end else (start <= local < end)


def _key_group_targets(cycles: dict[str, float] | None) -> str:
    """Key-group members overdue on their cycle at ``$as_of`` who are not reminded as untested
    of the round already (outside its scope, or sampled in it too long ago): SQL rows of
    ``targets``. Needs ``reporting.keygroups.define_key_group_views``."""
    if not cycles:
        return ""
    return """
        UNION ALL
        SELECT kg.person_key, kg.district, kg.subdistrict, kg.community, kg.phone,
               rt.door_to_door_reason, rt.site_scope, 'key_group' AS kind, kg.due_by AS cycle_due
        FROM key_group_compliance($as_of) kg JOIN sampling_route($as_of) rt USING (person_key)
        WHERE kg.compliance = 'overdue' AND kg.person_key NOT IN (SELECT person_key FROM untested)"""


def _fill(template: str, round_id: str, deadline: pl.Expr) -> pl.Expr:
    """The template filled set-based: the round's id, a deadline and each person's site."""
    marker_site, marker_deadline = "\x00", "\x01"
    text = template.format(round_id=round_id, deadline=marker_deadline, site_name=marker_site)
    pieces: list[pl.Expr] = []
    for n, chunk in enumerate(text.split(marker_site)):
        if n:
            pieces.append(pl.col("site_name"))
        for m, part in enumerate(chunk.split(marker_deadline)):
            if m:
                pieces.append(deadline)
            pieces.append(pl.lit(part))
    return pl.concat_str(pieces)


def plan_reminders(con: duckdb.DuckDBPyConnection, sms: SmsConfig, timezone: str, round_id: str,
                   as_of: datetime, key_group_cycles: dict[str, float] | None = None) -> ReminderPlan:
    """Needs :func:`warehouse.views.define_views`. With ``key_group_cycles`` (``[key_groups]``),
    key-group members overdue on their cycle are reminded too, with their cycle's due date
    (``sms.key_group_template``), by the same rules and within the same cool-down."""
    if key_group_cycles:
        from reporting.keygroups import define_key_group_views

        define_key_group_views(con, key_group_cycles)
    window = int(sms.cooldown_hours * 3600)
    local_time = as_of.astimezone(ZoneInfo(timezone)).time().replace(microsecond=0)
    rows = pl.from_arrow(con.sql(
        """
        WITH untested AS (
            SELECT s.person_key, s.district, s.subdistrict, s.community, reg.phone,
                   rt.door_to_door_reason, rt.site_scope, 'round' AS kind, NULL::TIMESTAMPTZ AS cycle_due
            FROM person_status($rid, $as_of) s JOIN register reg USING (person_key)
            JOIN sampling_route($as_of) rt USING (person_key)
            WHERE s.status = 'untested'
        ), targets AS (
            SELECT * FROM untested""" + _key_group_targets(key_group_cycles) + """
        ), open_sites AS (
            SELECT site_id, name, district, subdistrict, community FROM sites
            WHERE kind <> 'home' AND (opens IS NULL OR opens <= $t) AND (closes IS NULL OR $t < closes)
        ), site AS (
            SELECT u.person_key,
                   coalesce(min(c.name), min(sd.name), min(d.name)) AS site_name
            FROM targets u
            LEFT JOIN open_sites c ON c.community = u.community AND c.district = u.district
            LEFT JOIN open_sites sd ON sd.subdistrict = u.subdistrict AND sd.district = u.district
                                     AND u.site_scope = 'district'
            LEFT JOIN open_sites d ON d.district = u.district AND u.site_scope = 'district'
            GROUP BY u.person_key
        ), recent AS (
            -- planned within a cool-down of as_of, either side: planned_at is the plan's as_of
            -- (the time judged), so a replayed or backdated sweep cools down only its own window
            SELECT DISTINCT person_key FROM sms_outbox
            WHERE round_id = $rid AND planned_at > $as_of - to_seconds($window)
              AND planned_at < $as_of + to_seconds($window)
        )
        SELECT u.person_key::VARCHAR AS person_key, u.phone, s.site_name, u.kind, u.cycle_due,
               CASE WHEN u.door_to_door_reason IS NOT NULL THEN 'door_to_door'
                    WHEN u.phone IS NULL OR u.phone = '' THEN 'no_phone'
                    WHEN o.person_key IS NOT NULL THEN 'opted_out'
                    WHEN r.person_key IS NOT NULL THEN 'cooled_down'
                    WHEN s.site_name IS NULL THEN 'no_open_site'
                    ELSE 'due' END AS outcome,
               md5($rid || '|' || u.person_key::VARCHAR || '|' || (epoch($as_of)::BIGINT // $window)::VARCHAR) AS message_id
        FROM targets u LEFT JOIN site s USING (person_key)
        LEFT JOIN sms_optouts o USING (person_key) LEFT JOIN recent r USING (person_key)
        """,
        params={"rid": round_id, "as_of": as_of, "t": local_time, "window": window},
    ).to_arrow_table())
    # only mobiles take an SMS (phonenumbers' number types; a landline is no target)
    rows = rows.with_columns(
        pl.when(pl.col("outcome").is_in(["no_phone", "door_to_door"]).not_() & ~is_mobile(rows["phone"]))
        .then(pl.lit("not_mobile")).otherwise(pl.col("outcome")).alias("outcome"))
    deadline = con.execute("SELECT ends_at FROM rounds WHERE round_id = ?", [round_id]).fetchall()[0][0]
    deadline_text = deadline.astimezone(ZoneInfo(timezone)).strftime("%m月%d日%H:%M")
    counts = dict(rows.group_by("outcome").len().iter_rows())
    quiet = in_quiet_hours(as_of, sms, timezone)
    due = rows.filter(pl.col("outcome") == "due")
    if as_of >= deadline:  # the round is over: nobody is reminded of a deadline gone by
        counts["after_deadline"] = counts.pop("due", 0) + counts.pop("no_open_site", 0)
        due = due.clear()
        quiet = False
    elif quiet:  # nobody is disturbed at night, whatever else holds
        counts["quiet_hours"] = counts.pop("due", 0) + counts.pop("no_open_site", 0)
        due = due.clear()
    # the templates filled once; only the site (and a key group's due date) differ per person
    counts["key_group_due"] = due.filter(pl.col("kind") == "key_group").height
    cycle_due = (pl.col("cycle_due").dt.convert_time_zone(timezone).dt.strftime("%m月%d日%H:%M")
                 .fill_null("无检测记录"))
    deadline = pl.when(pl.col("kind") == "key_group").then(cycle_due).otherwise(pl.lit(deadline_text))
    due = due.select("message_id", pl.lit(round_id).alias("round_id"), "person_key", "phone",
                     pl.lit(as_of).dt.convert_time_zone("UTC").alias("planned_at"),
                     pl.when(pl.col("kind") == "key_group").then(_fill(sms.key_group_template, round_id, cycle_due))
                     .otherwise(_fill(sms.template, round_id, pl.lit(deadline_text))).alias("body"),
                     # the template's variables, for providers that fill a registered template (Aliyun)
                     pl.struct(pl.lit(round_id).alias("round_id"), deadline.alias("deadline"),
                               pl.col("site_name")).struct.json_encode().alias("params"))
    for key in ("due", "key_group_due", "door_to_door", "after_deadline", "no_phone", "not_mobile", "opted_out",
                "cooled_down", "no_open_site", "quiet_hours"):
        counts.setdefault(key, 0)
    return ReminderPlan(round_id, as_of, quiet, counts, due)


def reminders_markdown(round_id: str, counts: dict[str, int], stopped: str | None = None) -> str:
    """The ``sms-reminders`` artifact of a sweep: its outcome counts (planned, sent, failed, left
    for the next run, looked up, ...) and, when the provider refused the account, why it
    stopped. Counts only."""
    return "\n".join([f"# SMS reminders, round {round_id}", "", "| outcome | messages |", "|---|---:|",
                      *[f"| {k} | {v:,} |" for k, v in counts.items()],
                      *(["", f"**Stopped**: {stopped}"] if stopped else [])])
