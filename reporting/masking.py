"""Masking (脱敏) of personal data for everything a coordinator sees outside the worklists:
artifacts, logs, ``report.html``. SQL macros, so masking happens where the data is, set-based.

* ``mask_id``: an 18-character resident ID keeps its region (6) and its last 4:
  ``110101********1234``; any other ID keeps its first character and last 2.
* ``mask_name``: the family name and one star: ``张*``.
* ``mask_phone``: a Chinese mobile (``+86`` and 11 digits) as ``138****5678``; any other
  number keeps only its last 4 digits.
"""

from __future__ import annotations

import duckdb


def define_masking_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO mask_id(x) AS
            CASE WHEN x IS NULL THEN NULL
                 WHEN length(x) = 18 THEN left(x, 6) || repeat('*', 8) || right(x, 4)
                 WHEN length(x) <= 4 THEN repeat('*', length(x))
                 ELSE left(x, 1) || repeat('*', length(x) - 3) || right(x, 2) END
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO mask_name(x) AS
            CASE WHEN x IS NULL OR trim(x) = '' THEN NULL ELSE left(trim(x), 1) || '*' END
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO mask_phone(x) AS
            CASE WHEN x IS NULL OR x = '' THEN NULL
                 WHEN regexp_full_match(x, '\\+861[0-9]{10}') THEN substr(x, 4, 3) || '****' || right(x, 4)
                 ELSE repeat('*', greatest(length(x) - 4, 0)) || right(x, 4) END
        """
    )
