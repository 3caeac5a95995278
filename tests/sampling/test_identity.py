from datetime import date

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric as stdnum_ric

from sampling.identity import normalise_phone, region_periods, region_warning, ric_birth_date, ric_check_char


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=17, max_size=17), min_size=1, max_size=50))
def test_check_char_equals_python_stdnum(prefixes):
    got = pl.DataFrame({"n": [p + "0" for p in prefixes]}).select(ric_check_char(pl.col("n"))).to_series().to_list()
    assert got == [stdnum_ric.calc_check_digit(p + "0") for p in prefixes]


def test_birth_date_must_be_real():
    frame = pl.DataFrame({"n": ["110105194912310021", "110105194913310021", "110105190002290021", "110105300001010021",
                                "110105187912310021"]})
    born = frame.select(ric_birth_date(pl.col("n"), date(2026, 12, 2))).to_series().to_list()
    assert born[0] is not None and born[0].isoformat() == "1949-12-31"
    assert born[1] is None  # month 13
    assert born[2] is None  # 1900 was not a leap year
    assert born[3] is None  # after the day it is judged on
    assert born[4] is None  # before 1880


def test_birth_date_is_judged_on_the_day_given_never_the_clock():
    """A birth date after the day judged on is not real; on that day it is. The days are chosen
    on both sides of any clock this runs on: a rule reading the clock fails one of them."""
    frame = pl.DataFrame({"n": ["110105203001010021", "110105202301010021"], "day": [date(2031, 1, 1), date(2022, 4, 4)]})

    def born(latest):
        return [None if d is None else d.isoformat() for d in frame.select(ric_birth_date(pl.col("n"), latest)).to_series()]

    assert born(date(2030, 1, 1)) == ["2030-01-01", "2023-01-01"]  # on the day: real (after today's clock)
    assert born(date(2029, 12, 31)) == [None, "2023-01-01"]  # the day after it: not
    assert born(date(2022, 4, 4)) == [None, None]  # 2023 is after 2022 (though before today's clock)
    assert born(pl.col("day")) == ["2030-01-01", None]  # per row: 2030 before 2031, 2023 after 2022
    assert born(pl.lit(None, dtype=pl.Date)) == ["2030-01-01", "2023-01-01"]  # no day: no bound
    assert born(None) == ["2030-01-01", "2023-01-01"]


def test_region_warning_is_per_birth_year():
    # 110103 (崇文区) was abolished in 2010: fine for 1980, a warning for 2015; 999999 is unknown.
    assert region_periods().height > 3000
    frame = pl.DataFrame(
        {"id_type": ["RIC", "RIC", "RIC", "PASSPORT"],
         "id_number": ["110103198001010010", "110103201501010010", "999999198001010010", "E123"]}
    )
    assert region_warning(frame).to_list() == [False, True, True, False]


def test_phones_to_e164():
    phones = pl.Series("phone", ["13800138000", "+86 138 0013 8000", "138-0013-8000", "008613800138000",
                                 "021-6321 1234", "12345", None, "", "+44 20 7946 0958"])
    assert normalise_phone(phones).to_list() == [
        "+8613800138000", "+8613800138000", "+8613800138000", "+8613800138000",
        "+862163211234", None, None, None, "+442079460958",
    ]


def test_only_allocated_mobile_ranges_are_mobiles():
    """Issue 13.4: the fast rule took 140/141/154/174/179 numbers for mobiles, and a landline
    became an SMS target. Mobiles by phonenumbers' own metadata."""
    from sampling.identity import is_mobile

    unallocated = ["14012345678", "14112345678", "15412345678", "17412345678", "17912345678"]
    assert normalise_phone(pl.Series("phone", unallocated)).to_list() == [None] * 5
    phones = pl.Series("phone", ["+8613800138000", "+8614512345678", "+8619912345678", "+862163211234",
                                 "+85291234567", "+85221234567", "+442079460958", "+447400123456", None, ""])
    assert is_mobile(phones).to_list() == [True, True, True, False, True, False, False, True, False, False]


#: the day the property test judges birth dates on (its numbers are born 1850-2035)
JUDGED_ON = date(2022, 4, 4)


def _stdnum_accepts(number: str) -> bool:
    """python-stdnum's strict RIC checks (shape, check digit, a real date) plus the project's
    bounds on the birth date (not before 1880, not after the day judged on)."""
    from stdnum.exceptions import ValidationError

    try:
        if len(number) != 18 or not number[:17].isdigit() or number[-1] not in "0123456789X":
            return False
        if number[-1] != stdnum_ric.calc_check_digit(number):
            return False
        born = stdnum_ric.get_birth_date(number)
    except ValidationError:
        return False
    return 1880 <= born.year and born <= JUDGED_ON


def _stdnum_region_known(number: str) -> bool:
    from stdnum.exceptions import ValidationError

    try:
        stdnum_ric.get_birth_place(number)
    except (ValidationError, KeyError):  # KeyError: a code stdnum knows with no county (e.g. 110001)
        return False
    return True


_REGIONS = ["110101", "110103", "310101", "310104", "310115", "440305", "999999", "123456"]


@st.composite
def ric_like(draw) -> str:
    region = draw(st.sampled_from(_REGIONS) | st.text(alphabet="0123456789", min_size=6, max_size=6))
    year = draw(st.integers(1850, 2035))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    first17 = f"{region}{year:04d}{month:02d}{day:02d}{draw(st.integers(0, 999)):03d}"
    check = draw(st.sampled_from(["right", "right", "any"]))
    last = stdnum_ric.calc_check_digit(first17 + "0") if check == "right" else draw(st.sampled_from("0123456789X"))
    number = first17 + last
    if draw(st.integers(0, 9)) == 0:  # now and then a wrong shape
        number = draw(st.sampled_from([number[:-1], number + "1", number[:5] + "A" + number[6:], number[:-1] + "Y"]))
    return number


@settings(max_examples=300, deadline=None)
@given(st.lists(ric_like(), min_size=1, max_size=40))
def test_vectorised_ric_rules_and_region_warning_equal_python_stdnum(numbers):
    """Issue 15: the register's RIC check, vectorised end to end (one base-13 parse for the check
    character, the birth date once, the region per distinct region and year), decides as
    python-stdnum does for every ID."""
    from sampling.register import ric_rules
    from kernel.rules import LINE, split_by_rules

    frame = pl.DataFrame({LINE: list(range(len(numbers))), "id_type": ["RIC"] * len(numbers), "id_number": numbers})
    good, _ = split_by_rules(frame, ric_rules(latest=JUDGED_ON))
    accepted = set(good[LINE].to_list())
    assert accepted == {i for i, n in enumerate(numbers) if _stdnum_accepts(n)}
    warned = region_warning(good).to_list()
    assert warned == [not _stdnum_region_known(n) for n in good["id_number"].to_list()]


def test_a_register_row_is_judged_on_the_take_day_and_a_scan_on_its_own_local_day():
    """The register has no time of its own: a birth date after ``judged_on`` (the take's
    ``as_of``) is quarantined, on it is kept. A scan is judged on its own day in the city: born
    on 2030-01-01, a scan at 2029-12-31T16:30Z (00:30 on 1 January in Shanghai) is real and one at
    16:00Z (23:59:59 local, 31 December) is not; a scan whose time is unreadable is quarantined
    for its time alone."""
    from tests.builders import ric
    from sampling.register import check_register
    from sampling.scans import check_scans

    born_2030, born_2000 = ric("11010120300101001"), ric("11010120000101001")
    raw = pl.DataFrame({"_line": [1, 2], "id_type": ["RIC"] * 2, "id_number": [born_2030, born_2000],
                        "name": ["张三", "李四"], "district": ["黄浦区"] * 2, "subdistrict": ["外滩街道"] * 2,
                        "community": ["中山居委"] * 2, "grid": ["G1"] * 2}).with_columns(pl.col("_line").cast(pl.Int64))
    early = check_register(raw, judged_on=date(2029, 12, 31))
    assert early.accepted["_line"].to_list() == [2]
    assert early.quarantined.select("_line", "reason").rows() == [(1, "RIC birth date not a real date")]
    assert check_register(raw, judged_on=date(2030, 1, 1)).accepted["_line"].to_list() == [1, 2]

    scans = check_scans(pl.DataFrame({
        "_line": pl.Series([1, 2, 3, 4], dtype=pl.Int64),
        "scanned_at": ["2029-12-31T16:30:00Z", "2029-12-31T23:59:59+08:00", "junk", "2029-12-31T10:00:00+08:00"],
        "site_id": ["S1"] * 4, "collector_id": ["C1"] * 4, "tube_barcode": ["T1"] * 4, "event": ["add"] * 4,
        "id_type": ["RIC"] * 4, "id_number": [born_2030, born_2030, born_2030, born_2000]}), timezone="Asia/Shanghai")
    assert scans.accepted["_line"].to_list() == [1, 4]
    assert scans.quarantined.select("_line", "reason").rows() == [
        (2, "RIC birth date not a real date"), (3, "scanned_at not an ISO 8601 time")]
