"""Identity documents and phone numbers, checked and normalised set-based.

* RIC (居民身份证号码, GB 11643-1999): 17 digits + ISO 7064 MOD 11-2 check character and a real
  birth date are strict; a region code unknown for the birth year is only a warning, because
  codes are given at registration and real numbers fail a strict region check.
* Phones are normalised to E.164: the common Chinese mobile spellings by vectorised text rules,
  every other spelling once per distinct value through ``phonenumbers``.

The check digit is computed in polars (no Python per row); tests hold it equal to
``stdnum.cn.ric.calc_check_digit``, the reference implementation.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from importlib import resources

import phonenumbers
import polars as pl

ID_TYPES = ("RIC", "PASSPORT", "HKMO", "OTHER")

#: GB 11643 as the standard writes it: the weights of the 17 digits (2^(17-i) mod 11) and the
#: check character of (weighted sum mod 11); :func:`ric_check_char` computes the same in one
#: parse, the bench's plain-SQL floor (``bench.floor``) spells it out with these
RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
RIC_CHECK_CHARS = "10X98765432"


def normalise_id_number(id_type: pl.Expr, id_number: pl.Expr) -> pl.Expr:
    """Strip white space; an RIC is stored upper-case (a trailing lower-case ``x`` becomes ``X``)."""
    value = id_number.str.strip_chars().str.replace_all(r"\s", "")
    return pl.when(id_type == "RIC").then(value.str.to_uppercase()).otherwise(value)


def ric_shape_ok(id_number: pl.Expr) -> pl.Expr:
    return id_number.str.contains(r"^\d{17}[\dX]$").fill_null(False)


def ric_birth_date(id_number: pl.Expr, latest: pl.Expr | date | None = None) -> pl.Expr:
    """Birth date of an 18-character RIC; null where not a real calendar date, before 1880 or
    after ``latest``, the day the row is judged on (a date, or an expression per row; a null
    row or ``None`` sets no bound). Never the wall clock: the register is judged on the take's
    ``as_of`` and a scan on its own day (``sampling.scans.check_scans``), so a replay judges
    alike."""
    born = id_number.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)
    real = born.dt.year() >= 1880
    if latest is not None:
        bound = latest if isinstance(latest, pl.Expr) else pl.lit(latest, dtype=pl.Date)
        real = real & ((born <= bound) | bound.is_null())
    return pl.when(real).then(born).otherwise(None)


def ric_check_char(id_number: pl.Expr) -> pl.Expr:
    """The GB 11643 check character computed from the first 17 digits (null unless they are 17
    digits): the weights are 2^(17-i) mod 11 and 13 ≡ 2 (mod 11), so the weighted sum is the
    17 digits read as one base-13 integer (< 2^63), mod 11 — one parse per ID, not 17 slices
    (python-stdnum computes it the same way)."""
    prefix = id_number.str.slice(0, 17)
    value = pl.when(prefix.str.contains(r"^\d{17}$")).then(prefix.str.to_integer(base=13, strict=False))
    index = ((1 - 2 * (value % 11)) % 11).cast(pl.UInt32)  # polars' % is a floor modulo, like Python's
    return index.replace_strict(list(range(11)), list("0123456789X"), return_dtype=pl.Utf8)


def ric_check_ok(id_number: pl.Expr) -> pl.Expr:
    return (ric_check_char(id_number) == id_number.str.slice(17, 1)).fill_null(False)


@functools.cache
def region_periods() -> pl.DataFrame:
    """Region codes known to python-stdnum's administrative division table, with the years each
    was in use (``start``/``end`` null = open)."""
    text = resources.files("stdnum").joinpath("cn/loc.dat").read_text(encoding="utf-8")
    rows: list[tuple[str, int | None, int | None]] = []
    province = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if not line.startswith(" "):
            province = line.split()[0]
            continue
        code, _, rest = line.strip().partition(" ")
        match = re.search(r'county="([^"]*)"', rest)
        if not match:
            continue
        for entry in match.group(1).split(","):
            period = re.match(r"\[(\d*)-(\d*)\]", entry)
            start = int(period.group(1)) if period and period.group(1) else None
            end = int(period.group(2)) if period and period.group(2) else None
            rows.append((province + code, start, end))
    return pl.DataFrame(rows, schema={"region": pl.Utf8, "start": pl.Int32, "end": pl.Int32}, orient="row")


def region_warning(frame: pl.DataFrame, id_type: str = "id_type", id_number: str = "id_number",
                   born: str | None = None) -> pl.Series:
    """Per row: true where an RIC's region code was not in use in its birth year (warning only).
    ``born``: a column already holding :func:`ric_birth_date` (computed once by the caller).

    Judged once per distinct (region, birth year) — a few thousand pairs for a whole city — and
    joined back, not once per person."""
    periods = region_periods()
    birth = pl.col(born) if born is not None else ric_birth_date(pl.col(id_number))
    probe = frame.select(
        pl.col(id_number).str.slice(0, 6).alias("region"),
        pl.when(pl.col(id_type) == "RIC").then(birth.dt.year().cast(pl.Int32)).alias("__year"),
    )
    known = (
        probe.filter(pl.col("__year").is_not_null())
        .unique()
        .join(periods, on="region", how="inner")
        .filter(
            (pl.col("start").is_null() | (pl.col("__year") >= pl.col("start")))
            & (pl.col("end").is_null() | (pl.col("__year") <= pl.col("end")))
        )
        .select("region", "__year", pl.lit(True).alias("__known"))
        .unique()
    )
    flagged = probe.join(known, on=["region", "__year"], how="left", maintain_order="left")
    return flagged.select(
        (pl.col("__year").is_not_null() & pl.col("__known").is_null()).alias("region_warning")
    ).to_series()


def mobile_pattern(region: str = "CN") -> str:
    """The national numbers of ``region``'s mobile ranges, as phonenumbers' own metadata gives
    them (a regular expression that polars and DuckDB both run): the allocated ranges only, so
    unallocated, data-only and satellite prefixes (140, 141, 154, 174, 179 …) are not mobiles."""
    return phonenumbers.PhoneMetadata.metadata_for_region(region).mobile.national_number_pattern


_CN_MOBILE = rf"^(?:\+?86|0086)?({mobile_pattern('CN')})$"
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def is_mobile(phones: pl.Series) -> pl.Series:
    """Per E.164 phone: can it take an SMS (a mobile number by phonenumbers' number types)?
    Mainland numbers by the metadata's mobile pattern, vectorised; every other distinct number
    once through ``phonenumbers.number_type``. Null or empty → False (短信只发手机)."""
    text = phones.cast(pl.Utf8).fill_null("")
    cn = text.str.starts_with("+86")
    fast = text.str.contains(rf"^\+86(?:{mobile_pattern('CN')})$")
    others = text.filter(~cn & (text != "")).unique().to_list()
    slow: dict[str, bool] = {}
    for raw in others:
        try:
            slow[raw] = phonenumbers.number_type(phonenumbers.parse(raw, None)) in _MOBILE_TYPES
        except phonenumbers.NumberParseException:
            slow[raw] = False
    looked_up = text.replace_strict(slow, default=False, return_dtype=pl.Boolean) if slow else pl.Series([False] * len(text))
    return pl.select(pl.when(cn).then(fast).otherwise(looked_up)).to_series().alias(phones.name)


def normalise_phone(phones: pl.Series, region: str = "CN") -> pl.Series:
    """E.164 text per phone; null where missing or not a valid number.

    Chinese mobiles in their usual spellings are handled by text rules; every other distinct
    spelling goes once through ``phonenumbers``.
    """
    compact = phones.str.strip_chars().str.replace_all(r"[\s\-\(\)\.]", "")
    compact = pl.Series(phones.name, compact).replace("", None)
    mobile = compact.str.extract(_CN_MOBILE, 1)
    fast = pl.when(mobile.is_not_null()).then(pl.lit("+86") + mobile)
    frame = pl.DataFrame({"raw": compact, "fast": pl.select(fast.otherwise(None)).to_series()})
    leftovers = frame.filter(pl.col("fast").is_null() & pl.col("raw").is_not_null())["raw"].unique()
    mapping: dict[str, str | None] = {}
    for raw in leftovers.to_list():
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            mapping[raw] = None
            continue
        mapping[raw] = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            if phonenumbers.is_valid_number(number)
            else None
        )
    slow = frame["raw"].replace_strict(mapping, default=None, return_dtype=pl.Utf8) if mapping else None
    result = frame["fast"] if slow is None else frame["fast"].fill_null(slow)
    return result.alias(phones.name)
