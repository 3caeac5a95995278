"""Sampling scans (采样扫码): ``add`` a person's swab to a tube, ``seal`` the tube (封管), ``void``
a person from it. Row rules here; turning events into tubes is :mod:`sampling.tubes`."""

from __future__ import annotations

import polars as pl

from sampling.identity import ID_TYPES, normalise_id_number, normalise_phone
from sampling.register import ric_rules
from kernel.rules import (
    LINE,
    Checked,
    Rule,
    blank,
    concat_quarantine,
    parsed_column,
    parsed_time,
    positive_int_rule,
    required,
    split_by_rules,
    stripped,
    text_rules,
    time_rule,
    with_columns_present,
    with_parsed_times,
)

EVENTS = ("add", "seal", "void")
REQUIRED = ("scanned_at", "site_id", "collector_id", "tube_barcode", "event")
OPTIONAL = ("id_type", "id_number", "name", "phone", "capacity")
COLUMNS = ("scanned_at", "site_id", "collector_id", "tube_barcode", "event", "id_type", "id_number", "name", "phone", "capacity")


def check_scans(raw: pl.DataFrame, *, timezone: str) -> Checked:
    frame = with_columns_present(raw, OPTIONAL).with_columns(
        pl.col("event").str.strip_chars().str.to_lowercase(),
        pl.col("id_type").str.strip_chars().str.to_uppercase(),
    )
    frame = with_parsed_times(
        frame.with_columns(normalise_id_number(pl.col("id_type"), pl.col("id_number")).alias("id_number")),
        ["scanned_at"], timezone)
    person_event = pl.col("event").is_in(["add", "void"])
    rules = [
        *text_rules(COLUMNS),
        time_rule("scanned_at"),
        *(required(c) for c in ("site_id", "collector_id", "tube_barcode")),
        Rule("event", "event not one of add, seal, void", ~pl.col("event").is_in(list(EVENTS))),
        Rule("id_type", "add/void without id_type", person_event & blank("id_type")),
        Rule("id_type", f"id_type not one of {', '.join(sorted(ID_TYPES))}",
             person_event & ~pl.col("id_type").is_in(list(ID_TYPES))),
        Rule("id_number", "add/void without id_number", person_event & blank("id_number")),
        # born after the scan's own day is not a real birth date (the event's day, not the clock)
        *(Rule(r.column, r.reason, person_event & r.broken)
          for r in ric_rules(latest=pl.col(parsed_column("scanned_at")).dt.convert_time_zone(timezone).dt.date())),
        positive_int_rule("capacity"),
        Rule("capacity", "capacity must be at least 1",
             pl.col("capacity").str.strip_chars().cast(pl.Int64, strict=False).fill_null(1) < 1),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.with_columns(
        parsed_time("scanned_at"),
        *(stripped(c) for c in ("site_id", "collector_id", "tube_barcode", "name", "phone")),
        pl.when(person_event).then(pl.col("id_type")).otherwise(None).alias("id_type"),
        pl.when(person_event).then(pl.col("id_number")).otherwise(None).alias("id_number"),
        pl.col("capacity").str.strip_chars().cast(pl.Int32, strict=False),
    ).select(*COLUMNS, LINE)
    good = good.with_columns(normalise_phone(good["phone"]).alias("phone"))
    return Checked(good, concat_quarantine(bad))
