"""Configuration: one file, ``tubetrail.toml``, every key defaulted and validated, by pydantic-settings.

The file is found through ``--config`` or ``TUBETRAIL_CONFIG``; without either, the defaults
apply (and ``./tubetrail.toml`` is read when it exists). Load order: defaults < the file <
environment variables ``TUBETRAIL_<SECTION>__<KEY>`` (``TUBETRAIL_SMS__PROVIDER=twilio``; lists
and tables as JSON, ``TUBETRAIL_STOCK__DEPOTS='["市级仓库"]'``). A wrong or unknown key or value,
in the file or in such a variable, is a :class:`ConfigError` of one line naming the key and where
it came from. ``TUBETRAIL_*`` variables without ``__`` (``TUBETRAIL_CONFIG``,
``TUBETRAIL_ID_HASH_KEY``) are not configuration keys. Secrets (SMS credentials, the ID-hash key)
never come from this file: see :mod:`kernel.secrets`.

``Config()`` is the defaults alone (no file, no environment); :func:`load_config` reads both.
Every section is a frozen pydantic model: ``cfg.model_copy(update={...})`` makes a changed copy.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)


_M = TypeVar("_M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


class _Section(BaseModel):
    """A ``[section]`` of the file: frozen, every key typed, an unknown key refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def check(self, prefix: str) -> None:
        """Rules across keys; raise :class:`ConfigError` naming ``prefix.key``."""


class CityConfig(_Section):
    timezone: str = "Asia/Shanghai"
    phone_region: str = "CN"

    def local_day(self, instant: datetime) -> date:
        """The city's calendar day at ``instant`` (an aware time)."""
        return instant.astimezone(zoneinfo.ZoneInfo(self.timezone)).date()

    def check(self, prefix: str) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"{prefix}.timezone: unknown time zone {self.timezone!r}") from exc
        if len(self.phone_region) != 2 or not self.phone_region.isalpha():
            raise ConfigError(f"{prefix}.phone_region: expected a two-letter region, got {self.phone_region!r}")


class WarehouseConfig(_Section):
    path: str = "data/tubetrail.duckdb"
    #: Prefect global concurrency limit that serialises every write to the warehouse file.
    write_limit: str = "tubetrail-warehouse-writer"
    #: Seconds a writer waits for the warehouse file lock before giving up.
    lock_timeout_seconds: float = 600.0
    #: Lease of the writer slot, renewed by the holder while it writes; a killed writer's slot is
    #: free again after it (the Prefect server takes no lease under 60 s). The next writing flow
    #: releases it at once when the killed writer ran on its host.
    write_lease_seconds: float = 60.0
    #: DuckDB memory limit of each connection (warehouse and file staging); beyond it DuckDB
    #: spills to disk. Two such connections never run at once in one ingest.
    memory_limit: str = "3.5GB"
    # --- issue 15: bounded memory. DuckDB's working memory stays under ``memory_limit``; what
    # lives outside it (Arrow and polars frames, Python, DuckDB's own allocations outside its
    # buffer pool) adds ≈ 1.5 GB at 25.7 M residents, so 3.5 GB keeps every step ≤ 6 GB peak.
    #: where DuckDB spills what does not fit in ``memory_limit`` ("": ``<warehouse>.tmp/``
    #: beside the warehouse file; never $TMPDIR, often a small RAM disk)
    temp_directory: str = ""
    #: the most DuckDB may spill there ("": DuckDB's default, 90 % of the disk's free space)
    max_temp_directory_size: str = ""

    def spill_directory(self) -> Path:
        """The folder DuckDB spills to: ``temp_directory``, else ``<warehouse>.tmp`` beside it."""
        return Path(self.temp_directory) if self.temp_directory else Path(self.path + ".tmp")

    def check(self, prefix: str) -> None:
        if not self.path:
            raise ConfigError(f"{prefix}.path: must not be empty")
        if not re.fullmatch(r"\d+(\.\d+)?\s*(MB|GB|MiB|GiB)", self.memory_limit):
            raise ConfigError(f"{prefix}.memory_limit: expected a size like '10GB', got {self.memory_limit!r}")
        if self.max_temp_directory_size and not re.fullmatch(r"\d+(\.\d+)?\s*(MB|GB|TB|MiB|GiB|TiB)",
                                                             self.max_temp_directory_size):
            raise ConfigError(f"{prefix}.max_temp_directory_size: expected a size like '100GB' or \"\", "
                              f"got {self.max_temp_directory_size!r}")
        if self.lock_timeout_seconds <= 0:
            raise ConfigError(f"{prefix}.lock_timeout_seconds: must be positive")
        if not 60 <= self.write_lease_seconds <= 86_400:
            raise ConfigError(f"{prefix}.write_lease_seconds: must be between 60 and 86400 (the Prefect server's bounds)")


class InboxConfig(_Section):
    path: str = "inbox"


class AssayConfig(_Section):
    """Target roles and Ct cut-offs of the assay (China CDC protocol; the kit overrides)."""

    orf1ab_target: str = "ORF1ab"
    n_target: str = "N"
    internal_control_target: str = "IC"
    detected_below: float = 37.0
    grey_below: float = 40.0
    #: sample names of the controls on every plate (compared without case)
    positive_control_sample: str = "PC"
    negative_control_sample: str = "NC"
    #: kits that say "a detected target makes the internal control irrelevant" set this true;
    #: DESIGN §8 default: internal control not detected -> invalid, whatever the targets show
    positive_overrides_internal_control: bool = False

    def check(self, prefix: str) -> None:
        if not self.positive_control_sample.strip() or not self.negative_control_sample.strip() or \
                self.positive_control_sample.strip().casefold() == self.negative_control_sample.strip().casefold():
            raise ConfigError(f"{prefix}.positive_control_sample/negative_control_sample: need two distinct names")
        if not 0 < self.detected_below <= self.grey_below <= 60:
            raise ConfigError(
                f"{prefix}.detected_below/grey_below: need 0 < detected_below <= grey_below <= 60"
            )
        names = [self.orf1ab_target, self.n_target, self.internal_control_target]
        if len({n.casefold() for n in names}) != 3 or not all(names):
            raise ConfigError(f"{prefix}: the three target roles need three distinct non-empty names")


class PoolPolicyConfig(_Section):
    """Pool size by zone (national guide, 2nd edition)."""

    default_size: int = 10
    allowed_sizes: tuple[int, ...] = (1, 5, 10, 20)
    controlled_size: int = 5
    #: sealed zones pool one tube per household; people without a household get single tubes
    sealed: str = "household"
    key_group_size: int = 1

    def check(self, prefix: str) -> None:
        if self.default_size not in self.allowed_sizes:
            raise ConfigError(f"{prefix}.default_size: {self.default_size} is not one of allowed_sizes {list(self.allowed_sizes)}")
        if self.controlled_size not in self.allowed_sizes:
            raise ConfigError(f"{prefix}.controlled_size: {self.controlled_size} is not one of allowed_sizes")
        if self.sealed not in ("household", "single"):
            raise ConfigError(f"{prefix}.sealed: expected 'household' or 'single', got {self.sealed!r}")
        if any(s < 1 or s > 50 for s in self.allowed_sizes):
            raise ConfigError(f"{prefix}.allowed_sizes: sizes must be between 1 and 50")


class TatConfig(_Section):
    collected_to_called_hours: float = 12.0
    key_group_collected_to_called_hours: float = 6.0
    late_after_sealed_hours: float = 4.0
    lost_after_round_end_hours: float = 12.0

    def check(self, prefix: str) -> None:
        for name in type(self).model_fields:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{prefix}.{name}: must be positive")


class ResampleConfig(_Section):
    pool_positive_due_hours: float = 6.0
    ordinary_due_hours: float = 24.0

    def check(self, prefix: str) -> None:
        for name in type(self).model_fields:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{prefix}.{name}: must be positive")


class AlertsConfig(_Section):
    """Where the positive-pool automation sends its notifications (a custom webhook)."""

    webhook_url: str = "http://127.0.0.1:8026/pool-alerts"
    #: a district (no scan, no box) or lab (no receipt, no result) that sent nothing for this
    #: long while its round is open is silent (漏报): marked in daily.parquet and alerted
    silent_hours: float = 2.0

    def check(self, prefix: str) -> None:
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.webhook_url: expected an http(s) URL")
        if self.silent_hours <= 0:
            raise ConfigError(f"{prefix}.silent_hours: must be positive")


class ReportConfig(_Section):
    """Where coordinators open report.html: with ``link_base`` set (the URL of a
    ``python -m tubetrail.report_server``), each report run publishes a link artifact to its page."""

    link_base: str = ""

    def check(self, prefix: str) -> None:
        if self.link_base and not self.link_base.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.link_base: expected an http(s) URL or empty")


class SmsConfig(_Section):
    provider: str = "webhook"
    base_url: str = "http://127.0.0.1:8025"
    sender: str = "tubetrail"
    template: str = (
        "【核酸筛查】您尚未完成本轮（{round_id}）核酸检测，请于{deadline}前到{site_name}采样。"
    )
    #: to a key-group member overdue on their test cycle (deadline: the cycle's due date)
    key_group_template: str = (
        "【核酸筛查】您属于重点人群，本周期核酸检测已逾期（应检：{deadline}），请尽快到{site_name}采样。"
    )
    #: Aliyun fills a template registered with it (variables round_id, deadline, site_name)
    aliyun_template_code: str = "SMS_000000000"
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    cooldown_hours: float = 12.0
    rate_per_second: float = 50.0
    max_attempts: int = 5
    timeout_seconds: float = 10.0
    #: a sender owns the messages it claimed for this long (wall clock: a mechanism, not a rule of
    #: the domain); it starts no request it could not finish inside it, so once the lease has run
    #: out nothing of that sender is still on its way and its claims can be reconciled
    lease_seconds: float = 300.0
    #: an ambiguous answer (read timeout, 5xx) is looked up at the provider this long after it
    settle_seconds: float = 60.0

    def check(self, prefix: str) -> None:
        # ``provider`` names one of ``notify.PROVIDERS`` (the registry): checked there, by
        # ``notify.check_provider``, which the CLI runs with the configuration's other checks
        for key in ("quiet_start", "quiet_end"):
            try:
                time.fromisoformat(getattr(self, key))
            except ValueError as exc:
                raise ConfigError(f"{prefix}.{key}: expected HH:MM, got {getattr(self, key)!r}") from exc
        for key in ("cooldown_hours", "rate_per_second", "timeout_seconds", "lease_seconds"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{prefix}.{key}: must be positive")
        if self.settle_seconds < 0:
            raise ConfigError(f"{prefix}.settle_seconds: must not be negative")
        if self.lease_seconds < 4 * self.timeout_seconds:
            raise ConfigError(f"{prefix}.lease_seconds: must be at least 4 × timeout_seconds")
        if self.max_attempts < 1:
            raise ConfigError(f"{prefix}.max_attempts: must be at least 1")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.base_url: expected an http(s) URL")


class ScaleConfig(_Section):
    """The per-district fan-out of the report (prefect-dask's ``DaskTaskRunner``)."""

    #: "" : the flow starts a ``distributed.LocalCluster`` of its own (the keys below);
    #: else the address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``
    dask_address: str = ""
    #: LocalCluster only: worker processes and threads in each
    n_workers: int = 2
    threads_per_worker: int = 1

    def check(self, prefix: str) -> None:
        if self.dask_address and not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", self.dask_address):
            raise ConfigError(f"{prefix}.dask_address: expected '' or a scheduler address like "
                              f"'tcp://host:8786', got {self.dask_address!r}")
        for key in ("n_workers", "threads_per_worker"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}: must be at least 1")


# --- stock and capacity (issue 14: the stock/ feed, `tubetrail plan`, stock.parquet) -------------------
class StockConfig(_Section):
    """Reagents and consumables in hand, judged as days of whole-population testing
    (``reporting/stock.py``): one whole-population round a day (全员核酸), so days in hand are what
    is in hand ÷ one round's need."""

    #: fewer days in hand than this is a ``stock_low`` alert and makes ``tubetrail plan`` exit 1
    min_days: float = 7.0
    #: wells of one PCR plate; two of them are the controls (PC, NC), the rest hold tubes
    wells_per_plate: int = 96
    #: tubes one transport box holds
    tubes_per_box: int = 100
    #: names of depot holders (仓库) in the stock/ feed: their stock is not consumed by facts and
    #: is judged against the whole city's need
    depots: tuple[str, ...] = ()

    def check(self, prefix: str) -> None:
        if self.min_days <= 0:
            raise ConfigError(f"{prefix}.min_days: must be positive")
        if self.wells_per_plate < 3:
            raise ConfigError(f"{prefix}.wells_per_plate: must be at least 3 (two controls and a tube)")
        if self.tubes_per_box < 1:
            raise ConfigError(f"{prefix}.tubes_per_box: must be at least 1")
        if any(not d.strip() for d in self.depots):
            raise ConfigError(f"{prefix}.depots: a depot name must not be empty")


# --- ingest batches (issue 15: a stretch of files of one kind taken as one batch) -----------------------
class IngestConfig(_Section):
    """How ``ingest.take.plan_batches`` cuts a stretch of files of one kind into batches: each
    batch is one warehouse session, one transaction and one checkpoint."""

    #: the most files in one batch
    batch_files: int = 500
    #: the most bytes in one batch (a larger file is a batch alone)
    batch_bytes: int = 256 << 20
    #: the most files in one batch of a feed whose facts raise alerts (results): its alerts are
    #: published after the batch, so a positive pool waits for at most this many files
    alert_batch_files: int = 20

    def check(self, prefix: str) -> None:
        if self.batch_files < 1 or self.alert_batch_files < 1:
            raise ConfigError(f"{prefix}.batch_files, alert_batch_files: must be at least 1")
        if self.batch_bytes < 1:
            raise ConfigError(f"{prefix}.batch_bytes: must be at least 1")


#: ``load_config`` sets the file of the load in progress: ``Config()`` alone is the defaults
_LOADING: ContextVar[tuple[Path | None] | None] = ContextVar("tubetrail_config_loading", default=None)

ENV_PREFIX = "TUBETRAIL_"
ENV_NESTING = "__"


class Config(BaseSettings):
    """Every section of ``tubetrail.toml``; ``Config()`` is the defaults, :func:`load_config`
    adds the file and the ``TUBETRAIL_<SECTION>__<KEY>`` environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING,
                                      case_sensitive=False, extra="forbid", frozen=True)

    city: CityConfig = Field(default_factory=CityConfig)
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    inbox: InboxConfig = Field(default_factory=InboxConfig)
    assay: AssayConfig = Field(default_factory=AssayConfig)
    pool_policy: PoolPolicyConfig = Field(default_factory=PoolPolicyConfig)
    tat: TatConfig = Field(default_factory=TatConfig)
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    sms: SmsConfig = Field(default_factory=SmsConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    stock: StockConfig = Field(default_factory=StockConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    #: key group -> test cycle in days (重点人群检测周期)
    key_groups: dict[str, float] = Field(
        default_factory=lambda: {"medical": 7.0, "courier": 2.0, "cold_chain": 2.0}
    )

    @model_validator(mode="after")
    def _check_sections(self) -> Config:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, _Section):
                value.check(name)
        for group, days in self.key_groups.items():
            if days <= 0:
                raise ConfigError(f"key_groups.{group}: the test cycle in days must be positive")
        return self

    def with_warehouse(self, path: str | os.PathLike[str] | None) -> Config:
        if path is None:
            return self
        return self.model_copy(update={"warehouse": self.warehouse.model_copy(update={"path": str(path)})})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """First wins: the values given, the environment, the file (then the defaults).
        Outside :func:`load_config` only the values given."""
        loading = _LOADING.get()
        if loading is None:
            return (init_settings,)
        (file,) = loading
        if file is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=file))


_SECRET_HINTS = ("secret", "token", "password", "auth", "key_value", "hash_key", "access_key")

#: pydantic's error types, said as the file's reader would
_EXPECTED = {
    "float_type": "expected a number", "float_parsing": "expected a number", "finite_number": "expected a number",
    "int_type": "expected a whole number", "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "tuple_type": "expected a list", "list_type": "expected a list",
    "dict_type": "expected a table", "model_type": "expected a table", "model_attributes_type": "expected a table",
}


def _refuse_secrets(data: Any, prefix: str, where: str) -> None:
    """A key that looks like a secret is refused wherever it is (secrets never go in the file)."""
    if not isinstance(data, dict):
        return
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if any(h in str(name).lower() for h in _SECRET_HINTS):
            raise ConfigError(f"{where}{key}: secrets never go in the config file; set them in the environment "
                              f"or a Prefect Secret block")
        _refuse_secrets(value, key, where)


def _refuse_loose_types(doc: dict[str, Any], where: str) -> None:
    """The file's values as TOML types them, strictly: ``"4"`` is no number, ``1`` no boolean (the
    environment, all text, is read the usual pydantic way). Unknown keys are left to the model."""
    for section, table in doc.items():
        info = Config.model_fields.get(section)
        if info is None or not isinstance(table, dict):
            continue
        model = info.annotation
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else None
        for name, value in table.items():
            field = fields.get(name) if fields is not None else info
            if field is None:
                continue
            annotation = field.annotation if fields is not None else dict[str, float]
            value = value if fields is not None else {name: value}
            try:
                TypeAdapter(annotation).validate_json(json.dumps(value, default=str), strict=True)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                key = _key((section, name, *first["loc"][1 if fields is None else 0:]))
                got = first.get("input")
                raise ConfigError(f"{where}{key}: {_EXPECTED.get(first['type'], first['msg'])}, got {got!r}") from exc


def _section_keys(section: str) -> list[str] | None:
    """The keys of ``[section]``; ``None``: any key (a table such as ``key_groups``)."""
    info = Config.model_fields[section]
    model = info.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return None


def _config_env() -> dict[str, str]:
    """The ``TUBETRAIL_<SECTION>__<KEY>`` variables set, by name; one that names no key is refused.
    ``TUBETRAIL_*`` without ``__`` (``TUBETRAIL_CONFIG``, ``TUBETRAIL_ID_HASH_KEY``) is not one."""
    found = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_NESTING not in upper[len(ENV_PREFIX):]:
            continue
        section, _, key = upper[len(ENV_PREFIX):].lower().partition(ENV_NESTING)
        where = f"environment variable {name}: "
        if any(h in key for h in _SECRET_HINTS):
            raise ConfigError(f"{where}{section}.{key}: secrets are not configuration keys; see kernel.secrets")
        if section not in Config.model_fields:
            raise ConfigError(f"{where}{section}: unknown section (known: {', '.join(sorted(Config.model_fields))})")
        known = _section_keys(section)
        if not key or ENV_NESTING in key or (known is not None and key not in known):
            listed = f" (known: {', '.join(known)})" if known is not None else ""
            raise ConfigError(f"{where}{section}.{key}: unknown key{listed}")
        found[name] = value
    return found


def _env_names(section: str) -> list[str]:
    """The variables set that feed ``[section]`` (``TUBETRAIL_SMS__*``, or ``TUBETRAIL_SMS`` as JSON)."""
    whole = f"{ENV_PREFIX}{section}".upper()
    return sorted(n for n in os.environ if n.upper() == whole or n.upper().startswith(whole + ENV_NESTING))


def _key(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _one_line(exc: ValidationError, file: Path | None, env: bool) -> str:
    """The first error of ``exc`` as one line: where it came from, the key, what is wrong."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # a rule across keys (``check``): its message names the key
        text = str(cause)
        section = re.split(r"[.:/]", text, maxsplit=1)[0]
    else:
        key = _key(loc)
        section = str(loc[0]) if loc else ""
        kind = first["type"]
        if kind == "extra_forbidden":
            known = sorted(Config.model_fields) if len(loc) == 1 else _section_keys(section) or []
            text = f"{key}: unknown key (known: {', '.join(known)})"
        elif kind in ("model_type", "model_attributes_type", "dict_type") and len(loc) == 1:
            text = f"{key}: expected a table [{key}]"
        elif kind in _EXPECTED:
            text = f"{key}: {_EXPECTED[kind]}, got {first.get('input')!r}"
        else:
            text = f"{key}: {first['msg']}"
    where = []
    if env and section in Config.model_fields:  # the variables of the keys named, if set
        if isinstance(cause, ConfigError):
            named = re.match(r"[\w]+(?:\.([\w/, ]+))?", text)
            keys = {k.strip() for k in re.split(r"[/,]", named.group(1) or "")} if named else set()
        else:
            keys = {str(loc[1])} if len(loc) > 1 else set()
        wanted = {f"{ENV_PREFIX}{section}".upper()} | {f"{ENV_PREFIX}{section}{ENV_NESTING}{k}".upper() for k in keys}
        where += [f"environment variable {n}" for n in _env_names(section) if n.upper() in wanted]
    if file is not None and not where:
        where.append(f"config file {file}")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{' / '.join(where)}: {text}{more}" if where else f"{text}{more}"


def replace(model: _M, /, **changes: Any) -> _M:
    """A copy of a section or of the whole :class:`Config` with ``changes``, validated again
    (``dataclasses.replace`` for these models; the cross-key rules run where ``Config`` is replaced)."""
    try:
        return type(model).model_validate({**dict(model), **changes})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, None, env=False)) from exc


def parse_config(data: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a parsed TOML document (no environment)."""
    _refuse_secrets(data, "", "")
    _refuse_loose_types(data, "")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, None, env=False)) from exc


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration: the defaults, then the file (``path``, ``$TUBETRAIL_CONFIG`` or
    ``./tubetrail.toml``), then the ``TUBETRAIL_<SECTION>__<KEY>`` environment variables."""
    explicit = path or os.environ.get("TUBETRAIL_CONFIG")
    candidate = Path(explicit) if explicit else Path("tubetrail.toml")
    file: Path | None = None
    if candidate.exists():
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {candidate}: not valid TOML ({exc})") from exc
        _refuse_secrets(data, "", f"config file {candidate}: ")
        _refuse_loose_types(data, f"config file {candidate}: ")
        file = candidate
    elif explicit:
        raise ConfigError(f"config file {candidate} does not exist")
    _config_env()  # an unknown TUBETRAIL_<SECTION>__<KEY> is refused before anything is read
    with _loading(file):
        try:
            return Config()
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, file, env=True)) from exc
        except SettingsError as exc:  # a TUBETRAIL_ variable that is not valid JSON where a list or table goes
            field = re.search(r'field "(\w+)"', str(exc))
            names = ", ".join(_env_names(field.group(1))) if field else "TUBETRAIL_*"
            raise ConfigError(f"environment variable {names}: {field.group(1) if field else 'a key'}: "
                              f"expected JSON for a list or table") from exc


@contextmanager
def _loading(file: Path | None) -> Iterator[None]:
    token = _LOADING.set((file,))
    try:
        yield
    finally:
        _LOADING.reset(token)
