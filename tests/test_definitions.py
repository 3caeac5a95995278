"""The composition root lists every registry, and they agree with each other and with the design."""

from __future__ import annotations

from flows.serve import load_flow
from tubetrail.definitions import definitions


def test_the_composition_root_lists_every_registry():
    d = definitions()
    # DESIGN's inbox, in dependency order: reference data and the register before the chain
    assert d.feeds[-4:] == ("scans", "manifests", "receipts", "results")
    assert {"register", "sites", "labs", "zones", "stock"} <= set(d.feeds)
    assert set(d.instrument_formats) >= {"quantstudio", "cfx_maestro", "rdml", "generic_csv"}
    assert set(d.sms_providers) == {"webhook", "twilio", "aliyun"}
    assert d.view_rules[0] == "tubes" and len(set(d.view_rules)) == len(d.view_rules)
    assert set(d.flows) >= {"ingest-inbox", "nightly-report", "reminder-sweep", "export-results"}


def test_every_deployment_names_a_flow_that_exists():
    from flows.serve import deployment_specs

    for spec in deployment_specs():
        assert callable(load_flow(spec["entrypoint"])), spec["entrypoint"]


def test_the_view_rules_define_every_view_on_an_empty_warehouse(tmp_path):
    import duckdb

    from kernel.config import load_config
    from warehouse.connection import migrate
    from warehouse.views import VIEW_RULES, define_views

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    migrate(con)
    define_views(con, load_config(None))
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"tubes", "custody", "tube_members", "tube_runs"} <= views
    assert [name for name, _d, _s in VIEW_RULES][-1] == "stock"
