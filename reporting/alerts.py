"""Positive-pool alerts (混阳预警): what the coordinator must see the moment a pool turns
positive, masked. Aggregates and masked members only; the worklists (re-sampling orders)
hold the personal data for authorised staff.

What the facts make the product announce goes to the alert outbox (``alert_outbox``) in the
transaction that records those facts, and is published from there (``flows.alerts``). This
module decides what to announce: :func:`positive_alerts_of_file` (every positive call of a
results file, pooled or single, judged as of that file's last reading) and
:func:`file_refused_alert`; each is an
:class:`OutboxAlert` whose id is its kind and subject, so announcing it twice records it once.

``positive_pools(con, cfg, files, as_of)``: the pooled tubes called ``positive`` or persisting
``single_target`` by the given results files (content hashes), with lab, run, plate, round,
the call time, when their urgent re-samples are due, the number of people, and the members
masked. It looks only at the tubes of those files that show a viral target (Ct below the grey
cut-off) and at the plates they ran on, so it answers in a moment at city scale.
"""

from __future__ import annotations

import hashlib

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb

from lab.orders import urgent_due_by
from reporting.masking import define_masking_macros
from kernel.config import Config
from kernel.scope import scoped_to_tubes, warehouse_tables
from kernel.sql import INDEX_LOOKUP_MAX_KEYS, sql_in_list, sql_key_lookup, sql_text_list

#: the Prefect event a positive pool emits; the demo's automation turns it into a notification
POOL_POSITIVE_EVENT = "tubetrail.pool.positive"
#: the Prefect event a positive single tube emits: a person is positive (a single sample, a
#: re-sample of a positive pool, a key-group member), for the CDC at once (流调)
POSITIVE_SINGLE_EVENT = "tubetrail.single.positive"
#: the Prefect event a positive pool's urgent re-samples past their due time emit
URGENT_OVERDUE_EVENT = "tubetrail.order.overdue"
#: the Prefect event a refused file emits
FILE_REFUSED_EVENT = "tubetrail.file.refused"

#: outbox kinds
POOL_POSITIVE = "pool_positive"
POSITIVE_SINGLE = "positive_single"
URGENT_OVERDUE = "urgent_overdue"
FILE_REFUSED = "file_refused"


@dataclass(frozen=True)
class AlertKind:
    """An alert of DESIGN §8 told the generic way: its payload (counts, places, city times;
    never a person) carries ``title`` (one line, the artifact's description and the
    notification's subject), ``summary`` (what to do, the notification's body), ``resource``
    (what it is about: a lab id, a district, a box, a tube, a holder and item) and ``facts``
    (name → value, the event's payload and the artifact's table)."""

    kind: str
    #: the Prefect event it emits (one automation per event)
    event: str
    #: the resource type in the event's resource id: ``tubetrail.<resource_type>.<resource>``
    resource_type: str
    #: the artifact key's prefix; the subject, slugged, follows it
    artifact_prefix: str
    #: the automation's name and description
    automation: str
    description: str


#: the alerts told the generic way (the positive calls, overdue orders and refused files above
#: have their own markdown); each module that raises one adds its kind here
GENERIC_KINDS: dict[str, AlertKind] = {}


def alert_kind(kind: AlertKind) -> AlertKind:
    GENERIC_KINDS[kind.kind] = kind
    return kind


LAB_OVER_CAPACITY = alert_kind(AlertKind(
    "lab_over_capacity", "tubetrail.lab.over_capacity", "lab", "lab-over-capacity-",
    "tubetrail: lab over its daily capacity -> notify the coordinator",
    "A lab received more tubes in a day than its daily capacity (counts only)."))
TUBE_LOST = alert_kind(AlertKind(
    # one alert per round, site and box (or never boxed): what the on-call chases is a site or a
    # box that arrived short, so the event's resource is the site (lost_custody_alerts)
    "tube_lost", "tubetrail.tube.lost", "site", "tube-lost-",
    "tubetrail: tube lost -> notify the coordinator",
    "Tubes of a site were not received by the round's end + 12 h, outside any lost box (counts only)."))
BOX_LOST = alert_kind(AlertKind(
    "box_lost", "tubetrail.box.lost", "box", "box-lost-",
    "tubetrail: box lost -> notify the coordinator",
    "A box that left its site never reached a lab by the round's end + 12 h (counts only)."))
DISTRICT_SILENT = alert_kind(AlertKind(
    "district_silent", "tubetrail.district.silent", "district", "district-silent-",
    "tubetrail: district silent -> notify the command",
    "A district of an open round sent nothing for [alerts] silent_hours (漏报)."))
LAB_SILENT = alert_kind(AlertKind(
    "lab_silent", "tubetrail.lab.silent", "lab", "lab-silent-",
    "tubetrail: lab silent -> notify the command",
    "A lab of an open round sent nothing for [alerts] silent_hours (漏报)."))
STOCK_LOW = alert_kind(AlertKind(
    "stock_low", "tubetrail.stock.low", "stock", "stock-low-",
    "tubetrail: stock under the minimum days -> notify the command",
    "Reagents or consumables in hand last fewer days of whole-population testing than [stock] min_days."))


def generic_alert(kind: AlertKind, subject: str, raised_at: datetime, *, title: str, summary: str, resource: str,
                  facts: dict, round_id: str | None = None, source_hash: str | None = None) -> OutboxAlert:
    """An outbox alert of a generic kind (``facts``: counts, places, ISO times; no person)."""
    return OutboxAlert(kind.kind, subject, raised_at,
                       {"title": title, "summary": summary, "resource": resource, "facts": facts},
                       round_id=round_id, source_hash=source_hash)


def generic_alert_markdown(alert: OutboxAlert, timezone: str) -> str:
    """The artifact of a generic alert: its title, what to do, and its facts as a table (an ISO
    time shown in city time)."""
    p = alert.payload
    lines = [f"# {p['title']}", "", p["summary"], "", "| fact | value |", "|---|---|"]
    for name, value in p["facts"].items():
        lines.append(f"| {name} | {city_value(value, timezone)} |")
    return "\n".join(lines) + "\n"


def city_value(value, timezone: str):
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return value
        if at.tzinfo is not None:
            return at.astimezone(ZoneInfo(timezone)).isoformat(timespec="minutes")
    return value


@dataclass(frozen=True)
class OutboxAlert:
    """One thing to announce: ``kind`` and ``subject`` (a tube barcode, a file's content hash)
    name it once and for all; ``payload`` holds counts and masked data only; ``raised_at`` is
    when it happened (the call, the file), never when it was recorded."""

    kind: str
    subject: str
    raised_at: datetime
    payload: dict = field(default_factory=dict)
    round_id: str | None = None
    source_hash: str | None = None

    @property
    def alert_id(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True)
class PoolAlert:
    tube_barcode: str
    round_id: str
    call: str
    lab_id: str
    run_id: str
    plate_id: str
    called_at: datetime
    due_by: datetime | None  # pooled: the urgent re-samples; a single tube orders none
    people: int
    grids: int
    #: (masked ID, masked name, masked phone, grid) per member
    members: tuple[tuple[str | None, str | None, str | None, str | None], ...]
    #: a pooled tube (capacity > 1); else a single tube, whose one person is positive
    pooled: bool = True
    #: a single tube taken as a re-sample (of a positive pool, a refused or lost tube)
    resample: bool = False


def positive_pools(con: duckdb.DuckDBPyConnection, cfg: Config, files: list[str], as_of: datetime) -> list[PoolAlert]:
    """The pooled tubes among :func:`positive_calls`."""
    return [alert for alert in positive_calls(con, cfg, files, as_of) if alert.pooled]


def positive_calls(con: duckdb.DuckDBPyConnection, cfg: Config, files: list[str], as_of: datetime) -> list[PoolAlert]:
    """Every tube the given results files called positive (or persisting single target): pooled
    tubes, whose people are flagged, and single tubes (a single sample or a re-sample), whose
    person is positive. Needs the views of :func:`warehouse.views.define_views`."""
    return positive_calls_judged(con, cfg, [(files, as_of)])[0]


def positive_calls_judged(con: duckdb.DuckDBPyConnection, cfg: Config,
                          judged: Sequence[tuple[Sequence[str], datetime]]) -> list[list[PoolAlert]]:
    """:func:`positive_calls` of several groups of results files, each group judged at its own
    time (a batch's files, each as of its last reading), in one pass: the candidates of every
    group found at once, the facts of all their tubes scoped once, the calls of each group at its
    time, the members of all positive tubes in one query. One list per group, in order, each
    ordered by call time and tube. Needs the views of :func:`warehouse.views.define_views`."""
    out: list[list[PoolAlert]] = [[] for _ in judged]
    groups = [(i, f) for i, (files, _) in enumerate(judged) for f in files]
    if not groups:
        return out
    candidates: dict[int, list[str]] = {}
    for i, tube in con.execute(
        """SELECT DISTINCT g.i, trim(r.sample) FROM results r
           JOIN (SELECT unnest($gi::INTEGER[]) AS i, unnest($gf::VARCHAR[]) AS source_hash) g USING (source_hash)
           WHERE r.ct < $grey AND lower(trim(r.target)) <> lower($ic) AND upper(trim(r.sample)) NOT IN (upper($pc), upper($nc))
           ORDER BY 1, 2""",
        {"gi": [i for i, _ in groups], "gf": [f for _, f in groups], "grey": cfg.assay.grey_below,
         "ic": cfg.assay.internal_control_target, "pc": cfg.assay.positive_control_sample.strip(),
         "nc": cfg.assay.negative_control_sample.strip()},
    ).fetchall():
        candidates.setdefault(i, []).append(tube)
    if not candidates:
        return out
    every = sorted({t for tubes in candidates.values() for t in tubes})
    groups = sorted(candidates)
    latest = max(judged[g][1] for g in groups)
    # the candidates' calls and tubes from their own facts (their plates' controls and wells,
    # their scans), not the city's: a results file costs its tubes (issue 15.3). A call depends
    # on its time only through the tube's runs finished by then: the groups none of whose
    # candidates has a run after the group's time (up to the latest time) are called at the
    # latest time in one statement, the others (a re-run reported before its first run) each at its own
    pools_sql = """
        SELECT c.g, k.tube_barcode, t.round_id, k.call, k.lab_id, k.run_id, k.plate_id, k.called_at,
               t.capacity > 1 AS pooled, coalesce(t.resample, FALSE) AS resample
        FROM tube_calls($as_of) k JOIN tubes t USING (tube_barcode)
        JOIN judged_candidates c USING (tube_barcode) SEMI JOIN judged_files f ON f.g = c.g AND f.source_hash = k.called_by_file
        WHERE viral_call(k.call) AND c.g IN (SELECT unnest($groups::INTEGER[]))"""
    with scoped_to_tubes(con, f"SELECT unnest({sql_text_list(every)}) AS tube_barcode"):
        pairs = [(g, t) for g in groups for t in candidates[g]]
        con.execute("CREATE OR REPLACE TEMP TABLE judged_candidates AS SELECT unnest($g::INTEGER[]) AS g,"
                    " unnest($t::VARCHAR[]) AS tube_barcode, unnest($at::TIMESTAMPTZ[]) AS as_of",
                    {"g": [g for g, _ in pairs], "t": [t for _, t in pairs], "at": [judged[g][1] for g, _ in pairs]})
        files = [(g, f) for g in groups for f in judged[g][0]]
        con.execute("CREATE OR REPLACE TEMP TABLE judged_files AS SELECT unnest($g::INTEGER[]) AS g,"
                    " unnest($f::VARCHAR[]) AS source_hash", {"g": [g for g, _ in files], "f": [f for _, f in files]})
        late = [g for (g,) in con.execute(
            """SELECT DISTINCT c.g FROM tube_runs r JOIN judged_candidates c USING (tube_barcode)
               WHERE r.finished_at > c.as_of AND r.finished_at <= $latest ORDER BY 1""", {"latest": latest}).fetchall()]
        pools = con.execute(pools_sql, {"as_of": latest, "groups": [g for g in groups if g not in late]}).fetchall()
        for g in late:
            pools += con.execute(pools_sql, {"as_of": judged[g][1], "groups": [g]}).fetchall()
        con.execute("DROP TABLE judged_candidates; DROP TABLE judged_files")
        pools.sort(key=lambda p: (p[0], p[7] is None, p[7] or latest, p[1]))  # by group, call time (nulls last), tube
        if not pools:
            return out
        # the members of the positive tubes from the scope's scans (every scan of those tubes);
        # the scope has no register: their grid, name and phone from the warehouse's, by key
        wh = warehouse_tables(con)
        define_masking_macros(con)
        tubes = sql_in_list(sorted({p[1] for p in pools}))
        con.execute("CREATE OR REPLACE TEMP TABLE alert_members AS"
                    f" SELECT tube_barcode, person_key, id_number FROM tube_members WHERE tube_barcode IN {tubes}")
        # the members' register rows through its unique index when they are few (issue 15: the
        # join scanned the whole register, ≈ 1 s a batch at 25.7 M people, the largest part of
        # a next-morning results file). Not by the upsert's share of the table: a day's batch
        # of 20 results files has ≈ 7,500 members at 25.7 M, and as an IN list they cost 1.5 s
        # a batch more than the join (docs/benchmarks.md, 2026-12-01 afternoon)
        (keys,) = con.execute("SELECT count(DISTINCT person_key) FROM alert_members").fetchall()[0]
        registered = (sql_key_lookup(con, f"{wh}.register", "person_key", "alert_members", alias="r")
                      if keys <= INDEX_LOOKUP_MAX_KEYS else "r.person_key IN (SELECT person_key FROM alert_members)")
        members: dict[str, tuple] = {}
        for tube, people, grids, listed in con.execute(
            f"""
            WITH m AS (
                SELECT * FROM alert_members
            ), scanned AS (  -- name and phone as scanned, for people outside the register
                SELECT tube_barcode, person_key, arg_min(name, scanned_at) AS name, arg_min(phone, scanned_at) AS phone
                FROM scans WHERE tube_barcode IN {tubes} AND event = 'add' GROUP BY ALL
            ), reg AS (
                SELECT person_key, name, phone, grid FROM {wh}.register r WHERE {registered}
            )
            SELECT m.tube_barcode, count(DISTINCT m.person_key), count(DISTINCT reg.grid),
                   list((mask_id(m.id_number), mask_name(coalesce(reg.name, sc.name)),
                         mask_phone(coalesce(reg.phone, sc.phone)), reg.grid) ORDER BY reg.grid, m.id_number)
            FROM m LEFT JOIN scanned sc USING (tube_barcode, person_key)
            LEFT JOIN reg USING (person_key)
            GROUP BY m.tube_barcode
            """
        ).fetchall():
            members[tube] = (people, grids, tuple(tuple(x.values()) if isinstance(x, dict) else tuple(x) for x in listed))
        con.execute("DROP TABLE alert_members")
    for g, tube, round_id, call, lab, run, plate, called_at, pooled, resample in pools:
        out[g].append(PoolAlert(tube, round_id, call, lab, run, plate, called_at,
                                urgent_due_by(called_at, cfg.resample) if pooled else None,
                                *members.get(tube, (0, 0, ())), pooled=pooled, resample=resample))
    return out


def pool_alert_markdown(alert: PoolAlert, timezone: str) -> str:
    zone = ZoneInfo(timezone)
    kind = "positive" if alert.call == "positive" else "single target, persisting on the re-run"
    offset = alert.called_at.astimezone(zone).strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}"
    if alert.pooled:
        head = [f"# Positive pool {alert.tube_barcode}", "",
                f"**{alert.people} people** to re-sample one by one at home, urgently, "
                f"by **{alert.due_by.astimezone(zone):%Y-%m-%d %H:%M} {offset}** ({timezone})."]
    else:
        what = "a re-sample" if alert.resample else "a single tube"
        head = [f"# Positive single tube {alert.tube_barcode}", "",
                f"**{alert.people} person positive** ({what}): hand over to the CDC and medical care now "
                "(the person is in the re-sampling orders and person status for authorised staff)."]
    lines = [
        *head,
        "",
        "| tube | call | round | lab | run | plate | called at | people | grids |",
        "|---|---|---|---|---|---|---|---:|---:|",
        f"| {alert.tube_barcode} | {kind} | {alert.round_id} | {alert.lab_id} | {alert.run_id} | {alert.plate_id} "
        f"| {alert.called_at.astimezone(zone):%Y-%m-%d %H:%M} {offset} | {alert.people} | {alert.grids} |",
        "",
        "## Members (masked; the full list is in the re-sampling orders for authorised staff)",
        "",
        "| ID | name | phone | grid |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i or '–'} | {n or '–'} | {p or '–'} | {g or '–'} |" for i, n, p, g in alert.members]
    return "\n".join(lines) + "\n"


def pool_alert_payload(alert: PoolAlert) -> dict:
    """A pool alert as outbox payload: counts, places and masked members (JSON-ready)."""
    payload = asdict(alert)
    payload["called_at"] = alert.called_at.isoformat()
    payload["due_by"] = alert.due_by.isoformat() if alert.due_by else None
    payload["members"] = [list(m) for m in alert.members]
    return payload


def pool_alert_from_payload(payload: dict) -> PoolAlert:
    return PoolAlert(**{
        **payload,
        "called_at": datetime.fromisoformat(payload["called_at"]),
        "due_by": datetime.fromisoformat(payload["due_by"]) if payload.get("due_by") else None,
        "members": tuple(tuple(m) for m in payload["members"]),
    })


def positive_alerts_of_file(con: duckdb.DuckDBPyConnection, cfg: Config, content_hash: str) -> list[OutboxAlert]:
    """:func:`positive_alerts_of_files` of one results file."""
    return positive_alerts_of_files(con, cfg, [content_hash])[0]


def positive_alerts_of_files(con: duckdb.DuckDBPyConnection, cfg: Config,
                             content_hashes: Sequence[str]) -> list[list[OutboxAlert]]:
    """Every positive call each results file decided (DESIGN §8: pooled, single tube, re-sample),
    judged as of that file's last reading (its event time, not the clock), each raised at its
    call: ``pool_positive`` for a pooled tube, ``positive_single`` for a single tube. One list per
    file, in order; the files judged in one pass (:func:`positive_calls_judged`). Needs the views
    of :func:`warehouse.views.define_views` and the files' results and ledger entries (the writer
    calls it inside their transaction). Files judged together after all of them are taken raise
    what each raises right after its own facts when their facts concern different tubes and
    plates (:func:`results_files_apart`)."""
    if not content_hashes:
        return []
    as_of = dict(con.execute(
        """SELECT r.source_hash, max(coalesce(r.finished_at, l.ingested_at)) FROM results r
           JOIN ingest_ledger l ON l.content_hash = r.source_hash
           WHERE r.source_hash IN (SELECT unnest($files::VARCHAR[])) GROUP BY ALL""",
        {"files": list(content_hashes)},
    ).fetchall())
    judged = [h for h in content_hashes if as_of.get(h) is not None]
    calls = dict(zip(judged, positive_calls_judged(con, cfg, [([h], as_of[h]) for h in judged])))
    return [
        [OutboxAlert(POOL_POSITIVE if alert.pooled else POSITIVE_SINGLE, alert.tube_barcode, alert.called_at,
                     pool_alert_payload(alert), round_id=alert.round_id, source_hash=h)
         for alert in calls.get(h, [])]
        for h in content_hashes
    ]


def results_files_apart(con: duckdb.DuckDBPyConnection, files_sql: str) -> bool:
    """Are results files, not taken yet, apart: may their positive calls be judged together after
    all of them are taken (:func:`positive_alerts_of_files`), with what judging each right after
    its own facts gives? ``files_sql``: their rows (``i`` the file, ``lab_id``, ``run_id``,
    ``plate_id``, ``sample``). Apart when no tube is in two of them, no plate in two of them nor
    reported before (a later file that reports a plate again supersedes readings, even of tubes it
    does not name), and none of their tubes is a waiting re-sample (placed in a round only by the
    settle of their files: a file's alert would see it placed by a later file). Needs the views."""
    (clashes,) = con.execute(
        f"""WITH s AS (SELECT DISTINCT i, lab_id, run_id, plate_id, trim(sample) AS sample FROM ({files_sql})),
        plates AS (SELECT DISTINCT i, lab_id, run_id, plate_id FROM s)
        SELECT (SELECT count(*) FROM (SELECT sample FROM s WHERE NOT control_sample(sample)
                                      GROUP BY sample HAVING count(DISTINCT i) > 1))
             + (SELECT count(*) FROM (SELECT lab_id, run_id, plate_id FROM plates GROUP BY ALL HAVING count(*) > 1))
             + (SELECT count(*) FROM results r SEMI JOIN plates p USING (lab_id, run_id, plate_id))
             + (SELECT count(*) FROM s WHERE sample IN (SELECT tube_barcode FROM waiting_scans))"""
    ).fetchall()[0]
    return clashes == 0


def file_refused_alert(*, content_hash: str, kind: str, file_name: str, size_bytes: int,
                       received_at: datetime) -> OutboxAlert:
    """A refused file (DESIGN §8): its name, kind and size; the reason stays in the ledger."""
    return OutboxAlert(FILE_REFUSED, content_hash, received_at,
                       {"file_name": file_name, "kind": kind, "size_bytes": size_bytes},
                       source_hash=content_hash)


def file_refused_markdown(alert: OutboxAlert) -> str:
    p = alert.payload
    return (f"# File refused: {p['file_name']}\n\n"
            f"A {p['kind']} file of {p['size_bytes']:,} bytes could not be read and was refused whole; "
            "the reason is in the ingest summary and the ledger. Fix it at the source and drop the corrected "
            "file in the inbox.\n")


def overdue_urgent_alerts(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime) -> list[OutboxAlert]:
    """Positive pools whose urgent home re-samples are past their due time at ``as_of`` with
    people not re-sampled yet (DESIGN §8: an urgent order overdue), one alert per pool, raised at
    the due time; a pool alerted once is not alerted again. The pools are those the outbox
    announced (``pool_positive``), so only their people's tubes are looked at. Needs the views of
    :func:`warehouse.views.define_views` and the outbox."""
    pools = [r[0] for r in con.execute(
        """SELECT subject FROM alert_outbox
           WHERE kind = $pool AND CAST(payload->>'due_by' AS TIMESTAMPTZ) < $as_of
             AND subject NOT IN (SELECT subject FROM alert_outbox WHERE kind = $overdue)
           ORDER BY subject""",
        {"pool": POOL_POSITIVE, "overdue": URGENT_OVERDUE, "as_of": as_of}).fetchall()]
    if not pools:
        return []
    tubes = [r[0] for r in con.execute(
        f"""SELECT DISTINCT tube_barcode FROM scans WHERE person_key IN
                (SELECT person_key FROM tube_members WHERE tube_barcode IN {sql_in_list(pools)})
            UNION SELECT unnest({sql_text_list(pools)}) ORDER BY 1""").fetchall()]
    rows = con.execute(
        f"""SELECT o.source_tube, any_value(o.round_id), min(o.due_by), count(DISTINCT o.person_key),
                   list(DISTINCT coalesce(reg.district, 'unknown district') ORDER BY coalesce(reg.district, 'unknown district'))
            FROM resample_orders($as_of, tubes := {sql_text_list(tubes)}) o LEFT JOIN register reg USING (person_key)
            WHERE urgent_reason(o.reason) AND o.source_tube IN {sql_in_list(pools)}
              AND NOT o.fulfilled AND o.due_by < $as_of
            GROUP BY o.source_tube ORDER BY o.source_tube""", {"as_of": as_of}).fetchall()
    return [OutboxAlert(URGENT_OVERDUE, tube, due_by,
                        {"tube_barcode": tube, "round_id": round_id, "due_by": due_by.isoformat(),
                         "people_overdue": people, "districts": list(districts)}, round_id=round_id)
            for tube, round_id, due_by, people, districts in rows]


def overdue_markdown(alert: OutboxAlert, timezone: str) -> str:
    p = alert.payload
    due = datetime.fromisoformat(p["due_by"]).astimezone(ZoneInfo(timezone))
    offset = due.strftime("%z")
    return (f"# Urgent re-samples overdue: pool {p['tube_barcode']}\n\n"
            f"**{p['people_overdue']} people** of the positive pool {p['tube_barcode']} (round {p['round_id']}) were due "
            f"for home re-sampling by **{due:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}** and are not re-sampled yet. "
            f"District(s): {', '.join(p['districts'])}. Their names are in the districts' worklists.\n")


# --- lost boxes and tubes (DESIGN §8: a box or tube lost) -----------------------------------------

def city_time_text(at: datetime | None, timezone: str) -> str:
    """A time people read: city time with its offset (``2022-04-05 10:00 +08:00``)."""
    if at is None:
        return "–"
    local = at.astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}"


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def artifact_slug(text: str) -> str:
    """Artifact keys are lower-case letters, digits and dashes: ``R 2022/04`` → ``r-2022-04``.
    A text with other letters (a district's Chinese name) keeps what it can and gets a short
    digest of the whole text, so two districts never share a key (``黄浦区`` and ``崇明区`` would
    both slug to nothing)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if re.search(r"[^\x00-\x7f]", text):
        slug = "-".join(filter(None, [slug, hashlib.sha256(text.encode()).hexdigest()[:8]]))
    return slug


def _known(facts: dict) -> dict:
    return {name: value for name, value in facts.items() if value is not None}


#: how many barcodes a lost-tubes alert names (the rest are counted)
LOST_TUBES_LISTED = 10


def lost_custody_alerts(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime) -> list[OutboxAlert]:
    """Boxes and tubes lost at ``as_of`` (``lab.custody``: ``box_lost``, ``tube_lost``, judged at
    the round's end + ``[tat] lost_after_round_end_hours``), told so the on-call can act without
    a flood (one round's losses are all found at one moment):

    * ``box_lost``, one alert per lost box (subject ``<round>:<box>``; box ids are reused from
      round to round): its tubes and people counted inside it, never alerted again one by one;
      what to chase: the courier and the planned lab;
    * ``tube_lost``, one alert per round, site and box for the lost tubes outside a lost box
      (subject ``<round>:<site>:<box>``, ``<round>:<site>:unboxed`` for tubes never packed):
      what to chase: the site (tubes never sealed or never boxed) or the lab that received the
      box short; the first barcodes are named (a barcode is no personal data).

    Raised at the moment of loss (round end + threshold); facts are counts, places and ISO
    times; never a person. A tube of that round, site and box found lost later (a late file)
    adds no second alert. Needs the views of :func:`warehouse.views.define_views`."""
    lost_us = int(timedelta(hours=cfg.tat.lost_after_round_end_hours).total_seconds() * 1_000_000)
    rounds = con.execute("SELECT round_id FROM rounds WHERE ends_at + to_microseconds(?) <= ?", [lost_us, as_of]).fetchall()
    if not rounds:  # before any round's end + threshold nothing is lost: custody is not looked at
        return []
    zone = cfg.city.timezone
    hours = f"{cfg.tat.lost_after_round_end_hours:g} h"
    alerts = []
    # the rule once (it reads custody, the whole round's tubes): both lists below use it
    con.execute("CREATE OR REPLACE TEMP TABLE lost_boxes_now AS SELECT * FROM box_lost(?)", [as_of])
    for (rid, box, site, district, tubes, people, first_sealed, last_sealed, packed, departed, lab,
         lost_at) in con.execute(
            """SELECT b.round_id, b.box_id, b.site_id, s.district, b.tubes, b.people, b.first_sealed_at,
                      b.last_sealed_at, b.packed_at, b.departed_at, b.planned_lab_id, b.detected_at
               FROM lost_boxes_now b LEFT JOIN sites s USING (site_id) ORDER BY b.round_id, b.box_id""").fetchall():
        where = f"site {site}" + (f" ({district})" if district else "")
        left = (f"left {where} at {city_time_text(departed, zone)}" if departed
                else f"was packed at {where} at {city_time_text(packed, zone)} (no departure recorded)")
        alerts.append(generic_alert(
            BOX_LOST, f"{rid}:{box}", lost_at,
            title=f"Box {box} lost: {tubes} tube(s), {people} people (round {rid}, {where})",
            summary=(f"Box {box} {left}" + (f" for lab {lab}" if lab else "")
                     + f"; none of its {tubes} tube(s) reached a lab by {city_time_text(lost_at, zone)} "
                     f"(round end + {hours}). Chase the courier" + (f" and lab {lab}" if lab else "")
                     + f". Its {people} people get re-sampling orders (tube_lost) in the districts' worklists."),
            resource=box, round_id=rid,
            facts=_known({"round": rid, "box": box, "site": site, "district": district, "planned_lab": lab,
                          "tubes": tubes, "people": int(people or 0), "first_sealed_at": _iso(first_sealed),
                          "last_sealed_at": _iso(last_sealed), "packed_at": _iso(packed),
                          "departed_at": _iso(departed), "lost_at": _iso(lost_at)})))
    for (rid, site, district, box, received_lab, tubes, people, never_sealed, first_sealed, last_sealed, departed,
         barcodes, lost_at) in con.execute(
            f"""SELECT l.round_id, c.site_id, any_value(s.district), l.box_id,
                       any_value(r.lab_id) AS received_lab, count(*), sum(c.members),
                       count(*) FILTER (WHERE c.sealed_at IS NULL), min(c.sealed_at), max(c.sealed_at),
                       min(c.departed_at), list(l.tube_barcode ORDER BY l.tube_barcode)[:{LOST_TUBES_LISTED}],
                       min(l.detected_at)
                FROM tube_lost($as_of) l JOIN custody c USING (round_id, tube_barcode)
                LEFT JOIN sites s ON s.site_id = c.site_id
                LEFT JOIN (  -- the lab that received the box in the round (box ids are reused)
                    SELECT rd.round_id, r.box_id, min(r.lab_id) AS lab_id
                    FROM receipts r JOIN rounds rd ON r.received_at BETWEEN rd.starts_at AND rd.ends_at + to_microseconds($lost)
                    GROUP BY ALL
                ) r ON r.round_id = l.round_id AND r.box_id = l.box_id
                WHERE NOT EXISTS (SELECT 1 FROM lost_boxes_now b WHERE b.round_id = l.round_id AND b.box_id = l.box_id)
                GROUP BY l.round_id, c.site_id, l.box_id
                ORDER BY l.round_id, c.site_id, l.box_id NULLS FIRST""",
            {"as_of": as_of, "lost": lost_us}).fetchall():
        where = f"site {site}" + (f" ({district})" if district else "")
        named = ", ".join(barcodes) + (f" and {tubes - len(barcodes)} more" if tubes > len(barcodes) else "")
        if box:
            title = f"{tubes} tube(s) lost from box {box}, {people} people (round {rid}, {where})"
            chase = (f"Box {box} reached lab {received_lab} without them: ask the lab, then the courier and {where}"
                     if received_lab else f"Box {box} has no receipt of these tubes: ask the courier and {where}")
        else:
            title = f"{tubes} tube(s) lost at {where}, never in a box: {people} people (round {rid})"
            chase = (f"They were never packed ({never_sealed} never sealed): ask {where} and its collectors"
                     if never_sealed else f"They were sealed but never packed: ask {where} and its collectors")
        alerts.append(generic_alert(
            TUBE_LOST, f"{rid}:{site}:{box or 'unboxed'}", lost_at,
            title=title,
            summary=(f"Tube(s) {named} not received by {city_time_text(lost_at, zone)} (round end + {hours}). "
                     f"{chase}. Their {people} people get re-sampling orders (tube_lost) in the districts' worklists."),
            resource=site or "unknown-site", round_id=rid,
            facts=_known({"round": rid, "site": site, "district": district, "box": box or "none (never packed)",
                          "received_by_lab": received_lab, "tubes": tubes, "people": int(people or 0),
                          "tubes_never_sealed": never_sealed, "tube_barcodes": ", ".join(barcodes),
                          "first_sealed_at": _iso(first_sealed), "last_sealed_at": _iso(last_sealed),
                          "departed_at": _iso(departed), "lost_at": _iso(lost_at)})))
    con.execute("DROP TABLE lost_boxes_now")
    return alerts
