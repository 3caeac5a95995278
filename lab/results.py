"""Results (检测结果) as facts: every well, target and Ct of an instrument export, with the lab,
run and plate it came from. Calling (判读) is derived from these facts, never stored over them.

An export that does not name its lab, run or plate takes them from where it lies in the inbox:
``results/<lab_id>/<file>`` gives the lab, the file's stem the run and the plate."""

from __future__ import annotations

from pathlib import PurePosixPath

import polars as pl

from kernel.rules import LINE, Checked, Rule, blank, concat_quarantine, split_by_rules, text_rules

#: the text columns of a parsed export (well, ct and finished_at are typed by the parser)
TEXT_COLUMNS = ("lab_id", "run_id", "plate_id", "sample", "target")


def check_results(records: pl.DataFrame, label: str) -> Checked:
    """``records``: a parsed export's long table (``_line`` for its line). ``label`` is the file's
    path below the inbox, e.g. ``results/L01/P001.txt``."""
    parts = PurePosixPath(label).parts
    lab_from_path = parts[1] if len(parts) > 2 else None
    stem = PurePosixPath(label).stem
    frame = records.with_columns(
        pl.col("lab_id").fill_null(pl.lit(lab_from_path, dtype=pl.Utf8)),
        pl.col("run_id").fill_null(pl.lit(stem)),
        pl.col("plate_id").fill_null(pl.col("run_id")).fill_null(pl.lit(stem)),
    )
    rules = [
        *text_rules(TEXT_COLUMNS),
        Rule("lab_id", "no lab: neither in the file nor a results/<lab_id>/ folder", blank("lab_id")),
        Rule("sample", "missing sample", blank("sample")),
        Rule("target", "missing target", blank("target")),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.select("lab_id", "run_id", "plate_id", "well", "sample", "target", "ct", "finished_at",
                       "source_format", LINE)
    return Checked(good, concat_quarantine(bad))
