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
    frame = pl.DataFrame({"n": ["110105194912310021", "110105194913310021", "110105190002290021", "110105300001010021"]})
    born = frame.select(ric_birth_date(pl.col("n"))).to_series().to_list()
    assert born[0] is not None and born[0].isoformat() == "1949-12-31"
    assert born[1] is None  # month 13
    assert born[2] is None  # 1900 was not a leap year
    assert born[3] is None  # in the future


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


def _stdnum_accepts(number: str) -> bool:
    """python-stdnum's strict RIC checks (shape, check digit, a real date) plus the project's
    bounds on the birth date (not before 1880, not in the future)."""
    from datetime import date

    from stdnum.exceptions import ValidationError

    try:
        if len(number) != 18 or not number[:17].isdigit() or number[-1] not in "0123456789X":
            return False
        if number[-1] != stdnum_ric.calc_check_digit(number):
            return False
        born = stdnum_ric.get_birth_date(number)
    except ValidationError:
        return False
    return 1880 <= born.year and born <= date.today()


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
    good, _ = split_by_rules(frame, ric_rules())
    accepted = set(good[LINE].to_list())
    assert accepted == {i for i, n in enumerate(numbers) if _stdnum_accepts(n)}
    warned = region_warning(good).to_list()
    assert warned == [not _stdnum_region_known(n) for n in good["id_number"].to_list()]
