"""Pool-size advice (Dorfman): the formula on known values, the positivity read back from pooled
calls, the best validated size, and the advice per district on the tiny called round."""

import math
from kernel.config import replace

import pytest

from sampling.pool_advice import (NOTHING_RESULTED, best_pool_size, pool_advice_frame, positivity_from_pools,
                                  dorfman_tests, validated_sizes)
from tests.builders import AS_OF
from kernel.config import Config
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse


def test_dorfman_tests_per_person_on_known_values():
    # p = 1 %: 1/k + 1 - 0.99^k
    assert dorfman_tests(0.01, 5) == pytest.approx(0.2490099501, abs=1e-10)
    assert dorfman_tests(0.01, 10) == pytest.approx(0.1956179250, abs=1e-10)
    assert dorfman_tests(0.01, 20) == pytest.approx(0.2320930624, abs=1e-10)
    assert dorfman_tests(0.01, 1) == 1.0  # a single tube is one test, whatever p
    assert dorfman_tests(0.0, 20) == 0.05  # nobody positive: one test per pool


def test_the_best_validated_size_moves_with_positivity():
    sizes = validated_sizes(Config().pool_policy.allowed_sizes)
    assert sizes == (5, 10, 20)
    assert best_pool_size(0.01, sizes) == (10, pytest.approx(0.1956179250, abs=1e-10))  # 10 beats 5 and 20 at 1 %
    assert best_pool_size(0.001, sizes) == (20, pytest.approx(0.0698111352, abs=1e-9))
    assert best_pool_size(0.05, sizes) == (5, pytest.approx(0.4262190625, abs=1e-9))
    # a tie goes to the smaller pool (the less diluted swab)
    assert best_pool_size(0.0, (10, 10)) == (10, 0.1)
    # pools of 20 at 1 % for 1,000 people cost 36 more tests a round than pools of 10
    assert round(1000 * (dorfman_tests(0.01, 20) - dorfman_tests(0.01, 10))) == 36


def test_positivity_read_back_from_pooled_calls():
    q = 1 - 0.99 ** 10  # the share of pools of 10 that are positive at 1 %
    assert positivity_from_pools(q, 10) == pytest.approx(0.01, abs=1e-12)
    assert positivity_from_pools(0.2, 1) == pytest.approx(0.2)
    assert positivity_from_pools(0.0, 10) == 0.0
    with pytest.raises(ValueError):
        positivity_from_pools(0.1, 0)


def test_advice_per_district_from_the_rounds_calls(called, tmp_path):  # noqa: F811
    """The called round: 9 tubes with a final call (TA, TB, TC, TD, TE, TG, TH, TS1, TS2; TF is
    invalid twice, TI and TJ wait), 5 of them viral (TA, TC, TD, TS1, TS2), 12 people in them."""
    with open_warehouse(called.warehouse.path, id_hash_key()) as con:
        define_views(con, called)
        advice = pool_advice_frame(con, called, "R1", AS_OF).row(0, named=True)
        narrow = pool_advice_frame(con, replace(called, pool_policy=replace(called.pool_policy, allowed_sizes=(1, 5, 10))),
                                   "R1", AS_OF).row(0, named=True)
        # before any call: no advice, said so
        early = pool_advice_frame(con, called, "R1", AS_OF.replace(month=4, day=4, hour=12)).row(0, named=True)
    assert (advice["district"], advice["registered"], advice["tubes_called"], advice["tubes_positive"]) == ("黄浦区", 16, 9, 5)
    assert advice["mean_pool_people"] == pytest.approx(12 / 9)
    p = 1 - (4 / 9) ** (9 / 12)
    assert advice["positivity"] == pytest.approx(p)
    assert advice["current_size"] == 10 and advice["best_size"] == 20  # at this p, the larger the pool the fewer tests
    assert advice["tests_per_person_current"] == pytest.approx(0.1 + 1 - (1 - p) ** 10)
    assert advice["tests_per_person_best"] == pytest.approx(0.05 + 1 - (1 - p) ** 20)
    assert advice["tests_saved_per_round"] == round(16 * ((1 - p) ** 20 - (1 - p) ** 10 + 0.05))
    assert "single tubes need fewer" in advice["advice"]  # p ≈ 46 %: pooling saves nothing here
    assert narrow["best_size"] == 10 and narrow["tests_saved_per_round"] == 0 and math.isclose(
        narrow["tests_per_person_best"], advice["tests_per_person_current"])
    assert (early["tubes_called"], early["positivity"], early["best_size"], early["advice"]) == (0, None, None, NOTHING_RESULTED)
