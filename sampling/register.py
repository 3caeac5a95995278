"""The residential register (常住人口台账): everyone who should be tested in scope.

:func:`check_register` turns a raw inbox frame (all text, ``_line``) into accepted rows, typed and
normalised, and quarantined rows with their reason. A person's identity, ``UNIQUE_KEY``, is
(id_type, id_number): within one file an exact repeat of a row is quarantined as a duplicate and
two different rows for one person keep the later line; across files the later file wins (the
warehouse audits the amendment).
"""

from __future__ import annotations

from datetime import date

import polars as pl

from sampling.identity import (
    ID_TYPES,
    normalise_id_number,
    normalise_phone,
    region_warning,
    ric_birth_date,
    ric_check_ok,
    ric_shape_ok,
)
from kernel.rules import (
    LINE,
    Checked,
    WARNING_PREFIX,
    Rule,
    as_boolean,
    blank,
    boolean_rule,
    concat_quarantine,
    one_of,
    required,
    split_by_rules,
    stripped,
    text_rules,
    with_columns_present,
)

REQUIRED = ("id_type", "id_number", "name", "district", "subdistrict", "community", "grid")
OPTIONAL = ("phone", "address", "household_id", "mobility_limited", "key_group")
#: columns of an accepted register row, in warehouse order
COLUMNS = (
    "id_type",
    "id_number",
    "name",
    "phone",
    "district",
    "subdistrict",
    "community",
    "grid",
    "address",
    "household_id",
    "mobility_limited",
    "key_group",
)

UNIQUE_KEY = ("id_type", "id_number")

#: a helper column of the check: the RIC's birth date (dropped before the rows leave it)
_BORN = "__born"

WARN_REGION = "RIC region code not in use in the birth year (kept)"
WARN_PHONE_INVALID = "phone not a valid number (kept without phone)"
WARN_PHONE_MISSING = "no phone (kept)"


def ric_rules(id_type: str = "id_type", id_number: str = "id_number", born: str | None = None,
              latest: pl.Expr | date | None = None) -> list[Rule]:
    """The strict RIC rules: shape, real birth date (not after ``latest``: see
    :func:`ric_birth_date`), GB 11643 check character. ``born``: a column already holding
    :func:`ric_birth_date` (computed once, also for the region warning)."""
    is_ric = pl.col(id_type) == "RIC"
    number = pl.col(id_number)
    birth = pl.col(born) if born is not None else ric_birth_date(number, latest)
    return [
        Rule(id_number, "RIC not 17 digits plus a check character", is_ric & ~ric_shape_ok(number)),
        Rule(id_number, "RIC birth date not a real date", is_ric & birth.is_null()),
        Rule(id_number, "RIC check digit wrong (GB 11643)", is_ric & ~ric_check_ok(number)),
    ]


def check_register(raw: pl.DataFrame, *, judged_on: date, phone_region: str = "CN") -> Checked:
    """The register's rows judged on the city-local day ``judged_on`` (the take's ``as_of``: a
    register row has no time of its own); a birth date after it is not a real date."""
    frame = with_columns_present(raw, OPTIONAL)
    frame = frame.with_columns(
        pl.col("id_type").str.strip_chars().str.to_uppercase(),
    ).with_columns(normalise_id_number(pl.col("id_type"), pl.col("id_number")).alias("id_number"))
    # the birth date once: the RIC rules and the region warning both need it
    frame = frame.with_columns(ric_birth_date(pl.col("id_number"), judged_on).alias(_BORN))

    rules = [
        *text_rules(COLUMNS),
        one_of("id_type", ID_TYPES),
        required("id_number"),
        *ric_rules(born=_BORN),
        required("name"),
        *(required(c) for c in ("district", "subdistrict", "community", "grid")),
        boolean_rule("mobility_limited"),
    ]
    good, bad = split_by_rules(frame, rules)

    phone_given = ~blank("phone")
    good = good.with_columns(
        *(stripped(c) for c in ("name", "district", "subdistrict", "community", "grid", "address", "household_id")),
        pl.col("key_group").str.strip_chars().str.to_lowercase().replace("", None),
        as_boolean("mobility_limited"),
        phone_given.alias("__phone_given"),
    )
    good = good.with_columns(normalise_phone(good["phone"], phone_region).alias("phone"))
    good = good.with_columns(region_warning(good, born=_BORN).alias(WARNING_PREFIX + WARN_REGION))
    good = good.with_columns(
        (~pl.col("__phone_given")).alias(WARNING_PREFIX + WARN_PHONE_MISSING),
        (pl.col("__phone_given") & pl.col("phone").is_null()).alias(WARNING_PREFIX + WARN_PHONE_INVALID),
    )
    warnings = [c for c in good.columns if c.startswith(WARNING_PREFIX)]
    good = good.select(*COLUMNS, LINE, *warnings)
    return Checked(accepted=good, quarantined=concat_quarantine(bad))
