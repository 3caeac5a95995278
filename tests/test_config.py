import pytest

from kernel.config import Config, ConfigError, load_config, parse_config, replace


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
        ({"tat": {"late_after_sealed_hours": "four"}}, "tat.late_after_sealed_hours: expected a number, got 'four'"),
        ({"sms": {"max_attempts": 2.5}}, "sms.max_attempts: expected a whole number, got 2.5"),
        ({"city": {"timezone": 8}}, "city.timezone: expected text, got 8"),
        ({"stock": {"depots": [1]}}, "stock.depots[0]: expected text"),
        ({"shipping": {"x": 1}}, "shipping: unknown key"),
        ({"tat": {"late_after_sealed_hours": "4"}}, "tat.late_after_sealed_hours: expected a number, got '4'"),
        ({"assay": {"positive_overrides_internal_control": "yes"}}, "assay.positive_overrides_internal_control: expected true"),
        ({"pool_policy": {"allowed_sizes": [1, "5"]}}, "pool_policy.allowed_sizes[1]: expected a whole number"),
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

    from tests.conftest import REPO

    doc = tomllib.loads((REPO / "tubetrail.toml").read_text(encoding="utf-8"))
    assert parse_config(doc) == Config()
    defaults = Config().model_dump()
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
    from kernel.config import replace

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


# --- issue 16: pydantic-settings (environment overrides, unknown keys, one line) -----------------------

@pytest.fixture
def no_config_env(monkeypatch, tmp_path):
    """No TUBETRAIL_<SECTION>__<KEY> of the caller's shell, and no ./tubetrail.toml."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("TUBETRAIL_") and "__" in name:
            monkeypatch.delenv(name)
    monkeypatch.delenv("TUBETRAIL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_environment_overrides_the_file_which_overrides_the_defaults(tmp_path, no_config_env):
    path = tmp_path / "t.toml"
    path.write_text('[sms]\nprovider = "aliyun"\nsender = "city-hall"\n[city]\ntimezone = "Asia/Urumqi"\n')
    no_config_env.setenv("TUBETRAIL_SMS__PROVIDER", "twilio")
    no_config_env.setenv("TUBETRAIL_SMS__MAX_ATTEMPTS", "3")
    no_config_env.setenv("tubetrail_warehouse__memory_limit", "2GB")  # names are read without case
    no_config_env.setenv("TUBETRAIL_STOCK__DEPOTS", '["市级仓库", "区仓库"]')  # lists and tables as JSON
    cfg = load_config(path)
    assert cfg.sms.provider == "twilio" and cfg.sms.max_attempts == 3  # environment over the file
    assert cfg.sms.sender == "city-hall" and cfg.city.timezone == "Asia/Urumqi"  # the file over the defaults
    assert cfg.sms.quiet_start == "21:00" and cfg.city.phone_region == "CN"  # the defaults
    assert cfg.warehouse.memory_limit == "2GB" and cfg.stock.depots == ("市级仓库", "区仓库")
    assert Config().sms.provider == "webhook"  # Config() is the defaults alone, whatever the environment
    no_config_env.setenv("TUBETRAIL_KEY_GROUPS__MEDICAL", "3.5")
    assert load_config().key_groups == {"medical": 3.5}  # without a file: defaults and environment


def test_variables_that_are_not_configuration_keys_are_left_alone(tmp_path, no_config_env):
    no_config_env.setenv("TUBETRAIL_ID_HASH_KEY", "a-key-of-at-least-16-characters")
    no_config_env.setenv("TUBETRAIL_SOMETHING_ELSE", "x")
    no_config_env.setenv("TWILIO_AUTH_TOKEN", "t0ken")
    assert load_config() == Config()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TUBETRAIL_SMS__PROVIDR", "twilio",
         "environment variable TUBETRAIL_SMS__PROVIDR: sms.providr: unknown key (known: aliyun_template_code,"),
        ("TUBETRAIL_SHIPPING__SPEED", "1", "environment variable TUBETRAIL_SHIPPING__SPEED: shipping: unknown section"),
        ("TUBETRAIL_SMS__QUIET__START", "1", "environment variable TUBETRAIL_SMS__QUIET__START: sms.quiet__start: unknown key"),
        ("TUBETRAIL_SMS__AUTH_TOKEN", "t0ken", "environment variable TUBETRAIL_SMS__AUTH_TOKEN: sms.auth_token: secrets"),
        ("TUBETRAIL_SMS__MAX_ATTEMPTS", "many",
         "environment variable TUBETRAIL_SMS__MAX_ATTEMPTS: sms.max_attempts: expected a whole number, got 'many'"),
        ("TUBETRAIL_SMS__QUIET_START", "9pm",
         "environment variable TUBETRAIL_SMS__QUIET_START: sms.quiet_start: expected HH:MM, got '9pm'"),
        ("TUBETRAIL_STOCK__DEPOTS", "[not json", "environment variable TUBETRAIL_STOCK__DEPOTS: stock: expected JSON"),
    ],
)
def test_a_wrong_variable_is_refused_in_one_line_naming_it(no_config_env, name, value, message):
    no_config_env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_wrong_key_in_the_file_is_refused_in_one_line_naming_key_and_file(tmp_path, no_config_env):
    path = tmp_path / "t.toml"
    for text, message in (('[city]\ntz = "Asia/Urumqi"\n', "city.tz: unknown key (known: phone_region, timezone)"),
                          ('[shipping]\nspeed = 1\n', "shipping: unknown key"),
                          ('[tat]\nlate_after_sealed_hours = "four"\n', "tat.late_after_sealed_hours: expected a number"),
                          ('[sms]\nsecret = "x"\n', "sms.secret: secrets never go in the config file"),
                          ('[sms]\nlease_seconds = 10.0\n', "sms.lease_seconds: must be at least 4 × timeout_seconds"),
                          ('[city\n', "not valid TOML")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value).startswith(f"config file {path}: ") and message in str(err.value)
        assert "\n" not in str(err.value)


def test_the_cli_says_a_configuration_error_in_one_line_and_exits_2(tmp_path, no_config_env):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "TUBETRAIL_SMS__QUIET_START": "9pm", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tubetrail.cli", "--warehouse", str(tmp_path / "wh.duckdb"), "plan"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("tubetrail: configuration error: environment variable TUBETRAIL_SMS__QUIET_START:"
                                   " sms.quiet_start: expected HH:MM, got '9pm'")


def test_replace_validates_and_config_holds_no_secret():
    from pydantic import SecretStr

    cfg = Config()
    changed = replace(cfg, sms=replace(cfg.sms, cooldown_hours=6.0))
    assert changed.sms.cooldown_hours == 6.0 and cfg.sms.cooldown_hours == 12.0  # a copy; frozen original
    with pytest.raises(Exception):
        cfg.sms.cooldown_hours = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="sms.cooldown_hours"):
        replace(cfg, sms=replace(cfg.sms, cooldown_hours=-1.0))
    # the file and its environment variables hold no secret (they live in kernel.secrets)
    assert not [name for name, info in Config.model_fields.items() if info.annotation is SecretStr]


def test_secrets_are_read_from_the_environment_and_never_shown(monkeypatch):
    from kernel.secrets import MissingSecret, Secrets, id_hash_key

    key, token, aliyun = "a-key-of-at-least-16-characters", "twilio-t0ken-value", "aliyun-s3cret-value"
    monkeypatch.setenv("TUBETRAIL_ID_HASH_KEY", key)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", aliyun)
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    secrets = Secrets()
    assert secrets.id_hash_key.get_secret_value() == key and secrets.twilio_account_sid is None
    shown = " ".join([repr(secrets), str(secrets), str(secrets.twilio_auth_token), repr(secrets.aliyun_access_key_secret),
                      f"{secrets.id_hash_key}", str(secrets.model_dump())])
    assert "**********" in shown
    assert not any(value in shown for value in (key, token, aliyun))
    assert id_hash_key() == key.encode()
    for value, message in (("", "the ID-hash key is not set"), ("k3y-9", "too short")):
        monkeypatch.setenv("TUBETRAIL_ID_HASH_KEY", value)
        with pytest.raises(MissingSecret, match=message) as err:
            id_hash_key()
        assert value not in str(err.value) or not value


def test_sms_providers_hold_their_credentials_hidden(monkeypatch):
    from notify import MissingCredentials
    from notify.aliyun import AliyunProvider
    from notify.twilio import TwilioProvider

    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC0123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-t0ken-value")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI0123")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "aliyun-s3cret-value")
    twilio, aliyun = TwilioProvider(Config().sms), AliyunProvider(Config().sms)
    assert twilio._auth() == ("AC0123", "twilio-t0ken-value")
    assert "twilio-t0ken-value" not in repr(vars(twilio)) and "aliyun-s3cret-value" not in repr(vars(aliyun))
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "")
    with pytest.raises(MissingCredentials, match="TWILIO_AUTH_TOKEN"):
        TwilioProvider(Config().sms)
