"""Coverage's rollups (``reporting.coverage``)."""

from kernel.secrets import id_hash_key
from reporting.coverage import define_coverage_views
from tests.builders import AS_OF, open_test_round
from warehouse.connection import open_warehouse
from warehouse.views import define_views


def test_a_round_with_nobody_registered_has_a_city_row_of_zeros(cfg):
    """With no grid at all, the city row still counts 0 people (not NULL counts); its coverage,
    0 of 0, stays empty rather than a made-up 0 %."""
    open_test_round(cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        define_coverage_views(con)
        rows = con.execute("SELECT level, registered, sampled, resulted, untested, coverage, outside_register "
                           "FROM coverage('R1', ?)", [AS_OF]).fetchall()
    assert rows == [("city", 0, 0, 0, 0, None, 0)]
