"""Testing laboratories (检测机构) and their daily capacity in tubes."""

from __future__ import annotations

import polars as pl

from kernel.rules import (
    LINE,
    Checked,
    concat_quarantine,
    positive_int_rule,
    required,
    split_by_rules,
    stripped,
    text_rules,
    with_columns_present,
)

LAB_REQUIRED = ("lab_id", "name")
LAB_OPTIONAL = ("daily_capacity_tubes",)
LAB_COLUMNS = ("lab_id", "name", "daily_capacity_tubes")


def check_labs(raw: pl.DataFrame) -> Checked:
    frame = with_columns_present(raw, LAB_OPTIONAL)
    good, bad = split_by_rules(
        frame, [*text_rules(LAB_COLUMNS), required("lab_id"), required("name"),
                positive_int_rule("daily_capacity_tubes")]
    )
    good = good.with_columns(
        stripped("lab_id"),
        stripped("name"),
        pl.col("daily_capacity_tubes").str.strip_chars().cast(pl.Int64, strict=False),
    ).select(*LAB_COLUMNS, LINE)
    return Checked(good, concat_quarantine(bad))
