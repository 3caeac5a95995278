import pytest

from kernel.config import Config, ConfigError, load_config, parse_config


def test_defaults_match_the_design():
    cfg = Config()
    assert cfg.city.timezone == "Asia/Shanghai"
    assert cfg.warehouse.path == "data/tubetrail.duckdb"
    assert (cfg.assay.detected_below, cfg.assay.grey_below) == (37.0, 40.0)
    assert (cfg.pool_policy.default_size, cfg.pool_policy.controlled_size, cfg.pool_policy.sealed) == (10, 5, "household")
    assert cfg.tat.late_after_sealed_hours == 4 and cfg.tat.lost_after_round_end_hours == 12
    assert cfg.resample.pool_positive_due_hours == 6
    assert (cfg.sms.quiet_start, cfg.sms.quiet_end, cfg.sms.cooldown_hours) == ("21:00", "08:00", 12)
    assert cfg.alerts.silent_hours == 2


def test_file_overrides_and_env_path(tmp_path, monkeypatch):
    path = tmp_path / "t.toml"
    path.write_text('[city]\ntimezone = "Asia/Urumqi"\n[pool_policy]\ndefault_size = 20\n[key_groups]\nmedical = 3\n')
    monkeypatch.setenv("TUBETRAIL_CONFIG", str(path))
    cfg = load_config()
    assert cfg.city.timezone == "Asia/Urumqi" and cfg.pool_policy.default_size == 20
    assert cfg.key_groups == {"medical": 3.0}


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"city": {"timezone": "Mars/Olympus"}}, "city.timezone"),
        ({"city": {"tz": "Asia/Shanghai"}}, "city.tz: unknown key"),
        ({"pool_policy": {"default_size": 7}}, "pool_policy.default_size"),
        ({"assay": {"detected_below": 41}}, "assay.detected_below"),
        ({"sms": {"quiet_start": "9pm"}}, "sms.quiet_start"),
        ({"tat": {"late_after_sealed_hours": "four"}}, "tat.late_after_sealed_hours: expected a number"),
        ({"sms": {"auth_token": "abc"}}, "sms.auth_token: secrets never go in the config file"),
        ({"key_groups": {"medical": 0}}, "key_groups.medical"),
        ({"warehouse": "x"}, "warehouse: expected a table"),
        ({"scale": {"dask_address": "10.0.0.5:8786"}}, "scale.dask_address"),
        ({"scale": {"n_workers": 0}}, "scale.n_workers"),
        ({"alerts": {"silent_hours": 0}}, "alerts.silent_hours"),
    ],
)
def test_wrong_key_or_value_names_the_key(doc, key):
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert key in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_the_shipped_file_holds_every_key_at_its_default():
    import tomllib
    from dataclasses import asdict

    from tests.conftest import REPO

    doc = tomllib.loads((REPO / "tubetrail.toml").read_text(encoding="utf-8"))
    assert parse_config(doc) == Config()
    defaults = asdict(Config())
    assert {section: set(values) for section, values in doc.items()} == {
        section: set(values) for section, values in defaults.items()}


def test_stock_defaults_and_wrong_values():
    cfg = Config()
    assert (cfg.stock.min_days, cfg.stock.wells_per_plate, cfg.stock.tubes_per_box, cfg.stock.depots) == (7.0, 96, 100, ())
    assert parse_config({"stock": {"depots": ["市级仓库"], "min_days": 3}}).stock.depots == ("市级仓库",)
    for doc, key in (({"stock": {"min_days": 0}}, "stock.min_days"), ({"stock": {"wells_per_plate": 2}}, "stock.wells_per_plate"),
                     ({"stock": {"tubes_per_box": 0}}, "stock.tubes_per_box"), ({"stock": {"depots": [" "]}}, "stock.depots"),
                     ({"stock": {"depots": "x"}}, "stock.depots: expected a list")):
        with pytest.raises(ConfigError, match=key):
            parse_config(doc)


# --- issue 15: bounded memory -----------------------------------------------------------------------

def test_temp_directory_and_memory_limit_are_applied_to_the_warehouse_connection(tmp_path):
    from dataclasses import replace

    from kernel.secrets import id_hash_key
    from warehouse.connection import open_configured

    beside = Config().with_warehouse(tmp_path / "w" / "city.duckdb")
    assert beside.warehouse.spill_directory() == tmp_path / "w" / "city.duckdb.tmp"
    chosen = replace(beside.warehouse, temp_directory=str(tmp_path / "spill here"), memory_limit="300MB",
                     max_temp_directory_size="5GB")
    for wh, folder in ((beside.warehouse, tmp_path / "w" / "city.duckdb.tmp"), (chosen, tmp_path / "spill here")):
        with open_configured(wh, id_hash_key()) as con:
            settings = dict(con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('temp_directory', 'memory_limit', "
                "'max_temp_directory_size')").fetchall())
        assert settings["temp_directory"] == str(folder) and folder.is_dir()
    assert settings["memory_limit"] == "286.1 MiB"  # 300 MB as DuckDB shows it
    assert settings["max_temp_directory_size"] == "4.6 GiB"


def test_memory_settings_are_checked():
    assert Config().warehouse.memory_limit == "3.5GB" and Config().warehouse.temp_directory == ""
    for doc, key in (({"warehouse": {"max_temp_directory_size": "lots"}}, "warehouse.max_temp_directory_size"),
                     ({"warehouse": {"memory_limit": "4"}}, "warehouse.memory_limit")):
        with pytest.raises(ConfigError, match=key):
            parse_config(doc)
