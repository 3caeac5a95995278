"""``kernel.rules.parse_time``: the first format reads every row, the others only the rows it
leaves; the answer must be exactly "the first format in order that parses the text" (the rule
as written before issue 15's speed-up, kept here as the reference)."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from kernel.rules import _LOCAL, _WITH_OFFSET, parse_time, time_rule, with_parsed_times


def reference_parse_time(column: str, tz: str) -> pl.Expr:
    """Every format over every row, the first that parses wins."""
    value = pl.col(column).str.strip_chars().str.replace(r"Z$", "+00:00")
    candidates = [value.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC")
                  for fmt in _WITH_OFFSET]
    candidates += [value.str.to_datetime(fmt, strict=False, time_unit="us")
                   .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
                   for fmt in _LOCAL]
    return pl.coalesce(candidates).alias(column)


FORMS = [
    "2022-04-04T06:02:12+08:00", "2022-04-04 06:02:12+08:00", "2022-04-04T06:02+08:00", "2022-04-04T06:02:12.5Z",
    "2022-04-04T06:02:12Z", "2022-04-04T06:02:12", "2022-04-04 06:02:12.123", "2022-04-04T06:02", "2022-04-04 06:02",
    "2022-04-04", " 2022-04-04 ", "2022-03-27T01:30", "2022-10-30T01:30", "1988-04-10T02:30", "junk", "",
    "2022-04-04T06:02:12+0800", "2022-13-01", "2022-02-30T10:00", None,
]


def test_parse_time_reads_each_form_as_the_first_format_that_parses_it() -> None:
    frame = pl.DataFrame({"at": FORMS * 3})
    for tz in ("Asia/Shanghai", "Europe/London"):
        got = frame.select(parse_time("at", tz))
        assert got.equals(frame.select(reference_parse_time("at", tz))), tz
        assert got.schema["at"] == pl.Datetime("us", "UTC")
    london = frame.head(len(FORMS)).select(parse_time("at", "Europe/London"))["at"].to_list()
    assert london[0] == datetime(2022, 4, 3, 22, 2, 12, tzinfo=timezone.utc)  # its own offset, not the city's
    assert london[5] == datetime(2022, 4, 4, 5, 2, 12, tzinfo=timezone.utc)  # local: BST
    assert london[11] is None  # 01:30 on 27 March 2022 does not exist in London
    assert london[12] == datetime(2022, 10, 30, 0, 30, tzinfo=timezone.utc)  # ambiguous: the earliest
    assert london[14:16] == [None, None] and london[-1] is None


def test_a_rule_and_its_parse_agree_on_every_row_of_a_mixed_frame() -> None:
    frame = pl.DataFrame({"at": ["2022-04-04T06:02:12+08:00"] * 5 + ["2022-04-04 06:02", "junk", None]})
    broken = with_parsed_times(frame, ["at"], "Asia/Shanghai").select(time_rule("at").broken)["at"].to_list()
    parsed = frame.select(parse_time("at", "Asia/Shanghai"))["at"].to_list()
    assert broken == [p is None for p in parsed] == [False] * 6 + [True, True]


@given(st.lists(st.one_of(st.sampled_from(FORMS), st.text(alphabet="0123456789-: TZ+.", max_size=26)), max_size=40))
def test_parse_time_equals_the_reference_on_any_text(texts: list[str | None]) -> None:
    frame = pl.DataFrame({"at": pl.Series(texts, dtype=pl.Utf8)})
    assert frame.select(parse_time("at", "Asia/Shanghai")).equals(frame.select(reference_parse_time("at", "Asia/Shanghai")))
    # and inside a lazy query that filters first (the expression is elementwise)
    lazy = frame.lazy().filter(pl.col("at").str.len_bytes() > 9).select(parse_time("at", "Asia/Shanghai")).collect()
    assert lazy.equals(frame.filter(pl.col("at").str.len_bytes() > 9).select(reference_parse_time("at", "Asia/Shanghai")))


def test_the_scan_manifest_and_receipt_checks_keep_the_time_rule_with_the_time_parsed_once() -> None:
    """``with_parsed_times``: each check parses a time column once for its rule and its rows kept;
    the rows kept hold exactly ``parse_time``'s instant, a broken time is quarantined by its rule,
    and a blank optional time (``departed_at``) is no time, not a broken one."""
    from lab.custody import check_manifests, check_receipts
    from sampling.scans import check_scans

    tz = "Asia/Shanghai"
    times = ["2022-04-04T06:02:12+08:00", "2022-04-04 06:02", "junk", "2022-04-04T06:02:12Z"]
    line = pl.Series("_line", range(1, 5), dtype=pl.Int64)
    expected = pl.DataFrame({"t": times}).select(parse_time("t", tz))["t"].to_list()

    scans = check_scans(pl.DataFrame({"_line": line, "scanned_at": times, "site_id": ["S1"] * 4,
                                      "collector_id": ["C1"] * 4, "tube_barcode": ["T1"] * 4,
                                      "event": ["seal"] * 4}), timezone=tz)
    assert scans.accepted["_line"].to_list() == [1, 2, 4]
    assert scans.accepted["scanned_at"].to_list() == [expected[0], expected[1], expected[3]]
    assert scans.accepted.schema["scanned_at"] == pl.Datetime("us", "UTC")
    assert [c for c in scans.accepted.columns if c.startswith("__")] == []
    assert scans.quarantined.select("_line", "reason").rows() == [(3, "scanned_at not an ISO 8601 time")]

    manifests = check_manifests(pl.DataFrame({
        "_line": line, "box_id": ["B1"] * 4, "tube_barcode": ["T1", "T2", "T3", "T4"], "site_id": ["S1"] * 4,
        "packed_at": [times[0], times[2], times[1], times[3]], "departed_at": ["", None, "junk", times[1]]}),
        timezone=tz)
    assert manifests.accepted.select("_line", "packed_at", "departed_at").rows() == [
        (1, expected[0], None), (4, expected[3], expected[1])]
    assert manifests.quarantined.select("_line", "reason").rows() == [
        (2, "packed_at not an ISO 8601 time"), (3, "departed_at not an ISO 8601 time")]

    receipts = check_receipts(pl.DataFrame({"_line": line, "lab_id": ["L1"] * 4, "box_id": ["B1"] * 4,
                                            "tube_barcode": ["T1", "T2", "T3", "T4"], "received_at": times}),
                              timezone=tz)
    assert receipts.accepted.select("_line", "received_at").rows() == [(1, expected[0]), (2, expected[1]),
                                                                       (4, expected[3])]
    assert receipts.quarantined.select("_line", "reason").rows() == [(3, "received_at not an ISO 8601 time")]
