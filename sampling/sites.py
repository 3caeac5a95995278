"""Sampling sites (采样点) and zones (封控/管控/防范区): reference data for the collect link."""

from __future__ import annotations

import polars as pl

from kernel.rules import (
    LINE,
    Checked,
    as_clock,
    clock_rule,
    concat_quarantine,
    one_of,
    parsed_time,
    required,
    split_by_rules,
    stripped,
    text_rules,
    time_rule,
    with_columns_present,
    with_parsed_times,
)

SITE_KINDS = ("fixed", "mobile", "home")
SITE_REQUIRED = ("site_id", "name", "district")
SITE_OPTIONAL = ("subdistrict", "community", "kind", "opens", "closes")
SITE_COLUMNS = ("site_id", "name", "district", "subdistrict", "community", "kind", "opens", "closes")

ZONES = ("sealed", "controlled", "precaution")
ZONE_REQUIRED = ("grid", "zone")
ZONE_OPTIONAL = ("since",)
ZONE_COLUMNS = ("grid", "zone", "since")


def check_sites(raw: pl.DataFrame) -> Checked:
    frame = with_columns_present(raw, SITE_OPTIONAL)
    rules = [
        *text_rules(SITE_COLUMNS),
        *(required(c) for c in SITE_REQUIRED),
        one_of("kind", SITE_KINDS, optional=True),
        clock_rule("opens"),
        clock_rule("closes"),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.with_columns(
        *(stripped(c) for c in ("site_id", "name", "district", "subdistrict", "community")),
        pl.col("kind").str.strip_chars().str.to_lowercase().replace("", None).fill_null("fixed"),
        as_clock("opens"),
        as_clock("closes"),
    ).select(*SITE_COLUMNS, LINE)
    return Checked(good, concat_quarantine(bad))


def check_zones(raw: pl.DataFrame, *, timezone: str) -> Checked:
    """A zone row says a grid is sealed / controlled / precaution since a time (no time = always)."""
    frame = with_parsed_times(with_columns_present(raw, ZONE_OPTIONAL), ["since"], timezone)
    rules = [
        *text_rules(ZONE_COLUMNS),
        required("grid"),
        one_of("zone", ZONES),
        time_rule("since", optional=True),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.with_columns(
        stripped("grid"),
        pl.col("zone").str.strip_chars().str.to_lowercase(),
        parsed_time("since"),
    ).select(*ZONE_COLUMNS, LINE)
    return Checked(good, concat_quarantine(bad))
