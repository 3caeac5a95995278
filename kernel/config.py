"""Configuration: one file, ``tubetrail.toml``, every key defaulted and validated.

The file is found through ``--config`` or ``TUBETRAIL_CONFIG``; without either, the defaults
apply (and ``./tubetrail.toml`` is read when it exists). A wrong key or value is a
:class:`ConfigError` naming the key. Secrets (SMS credentials, the ID-hash key) never come
from this file: see :mod:`kernel.secrets`.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import time
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


@dataclass(frozen=True)
class CityConfig:
    timezone: str = "Asia/Shanghai"
    phone_region: str = "CN"

    def validate(self, prefix: str) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"{prefix}.timezone: unknown time zone {self.timezone!r}") from exc
        if len(self.phone_region) != 2 or not self.phone_region.isalpha():
            raise ConfigError(f"{prefix}.phone_region: expected a two-letter region, got {self.phone_region!r}")


@dataclass(frozen=True)
class WarehouseConfig:
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

    def validate(self, prefix: str) -> None:
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


@dataclass(frozen=True)
class InboxConfig:
    path: str = "inbox"


@dataclass(frozen=True)
class AssayConfig:
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

    def validate(self, prefix: str) -> None:
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


@dataclass(frozen=True)
class PoolPolicyConfig:
    """Pool size by zone (national guide, 2nd edition)."""

    default_size: int = 10
    allowed_sizes: tuple[int, ...] = (1, 5, 10, 20)
    controlled_size: int = 5
    #: sealed zones pool one tube per household; people without a household get single tubes
    sealed: str = "household"
    key_group_size: int = 1

    def validate(self, prefix: str) -> None:
        if self.default_size not in self.allowed_sizes:
            raise ConfigError(f"{prefix}.default_size: {self.default_size} is not one of allowed_sizes {list(self.allowed_sizes)}")
        if self.controlled_size not in self.allowed_sizes:
            raise ConfigError(f"{prefix}.controlled_size: {self.controlled_size} is not one of allowed_sizes")
        if self.sealed not in ("household", "single"):
            raise ConfigError(f"{prefix}.sealed: expected 'household' or 'single', got {self.sealed!r}")
        if any(s < 1 or s > 50 for s in self.allowed_sizes):
            raise ConfigError(f"{prefix}.allowed_sizes: sizes must be between 1 and 50")


@dataclass(frozen=True)
class TatConfig:
    collected_to_called_hours: float = 12.0
    key_group_collected_to_called_hours: float = 6.0
    late_after_sealed_hours: float = 4.0
    lost_after_round_end_hours: float = 12.0

    def validate(self, prefix: str) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"{prefix}.{f.name}: must be positive")


@dataclass(frozen=True)
class ResampleConfig:
    pool_positive_due_hours: float = 6.0
    ordinary_due_hours: float = 24.0

    def validate(self, prefix: str) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"{prefix}.{f.name}: must be positive")


@dataclass(frozen=True)
class AlertsConfig:
    """Where the positive-pool automation sends its notifications (a custom webhook)."""

    webhook_url: str = "http://127.0.0.1:8026/pool-alerts"
    #: a district (no scan, no box) or lab (no receipt, no result) that sent nothing for this
    #: long while its round is open is silent (漏报): marked in daily.parquet and alerted
    silent_hours: float = 2.0

    def validate(self, prefix: str) -> None:
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.webhook_url: expected an http(s) URL")
        if self.silent_hours <= 0:
            raise ConfigError(f"{prefix}.silent_hours: must be positive")


@dataclass(frozen=True)
class ReportConfig:
    """Where coordinators open report.html: with ``link_base`` set (the URL of a
    ``python -m tubetrail.report_server``), each report run publishes a link artifact to its page."""

    link_base: str = ""

    def validate(self, prefix: str) -> None:
        if self.link_base and not self.link_base.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.link_base: expected an http(s) URL or empty")


@dataclass(frozen=True)
class SmsConfig:
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

    def validate(self, prefix: str) -> None:
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


@dataclass(frozen=True)
class ScaleConfig:
    """The per-district fan-out of the report (prefect-dask's ``DaskTaskRunner``)."""

    #: "" : the flow starts a ``distributed.LocalCluster`` of its own (the keys below);
    #: else the address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``
    dask_address: str = ""
    #: LocalCluster only: worker processes and threads in each
    n_workers: int = 2
    threads_per_worker: int = 1

    def validate(self, prefix: str) -> None:
        if self.dask_address and not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", self.dask_address):
            raise ConfigError(f"{prefix}.dask_address: expected '' or a scheduler address like "
                              f"'tcp://host:8786', got {self.dask_address!r}")
        for key in ("n_workers", "threads_per_worker"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}: must be at least 1")


# --- stock and capacity (issue 14: the stock/ feed, `tubetrail plan`, stock.parquet) -------------------
@dataclass(frozen=True)
class StockConfig:
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

    def validate(self, prefix: str) -> None:
        if self.min_days <= 0:
            raise ConfigError(f"{prefix}.min_days: must be positive")
        if self.wells_per_plate < 3:
            raise ConfigError(f"{prefix}.wells_per_plate: must be at least 3 (two controls and a tube)")
        if self.tubes_per_box < 1:
            raise ConfigError(f"{prefix}.tubes_per_box: must be at least 1")
        if any(not d.strip() for d in self.depots):
            raise ConfigError(f"{prefix}.depots: a depot name must not be empty")


# --- ingest batches (issue 15: a stretch of files of one kind taken as one batch) -----------------------
@dataclass(frozen=True)
class IngestConfig:
    """How ``ingest.take.plan_batches`` cuts a stretch of files of one kind into batches: each
    batch is one warehouse session, one transaction and one checkpoint."""

    #: the most files in one batch
    batch_files: int = 500
    #: the most bytes in one batch (a larger file is a batch alone)
    batch_bytes: int = 256 << 20
    #: the most files in one batch of a feed whose facts raise alerts (results): its alerts are
    #: published after the batch, so a positive pool waits for at most this many files
    alert_batch_files: int = 20

    def validate(self, prefix: str) -> None:
        if self.batch_files < 1 or self.alert_batch_files < 1:
            raise ConfigError(f"{prefix}.batch_files, alert_batch_files: must be at least 1")
        if self.batch_bytes < 1:
            raise ConfigError(f"{prefix}.batch_bytes: must be at least 1")


@dataclass(frozen=True)
class Config:
    city: CityConfig = field(default_factory=CityConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    inbox: InboxConfig = field(default_factory=InboxConfig)
    assay: AssayConfig = field(default_factory=AssayConfig)
    pool_policy: PoolPolicyConfig = field(default_factory=PoolPolicyConfig)
    tat: TatConfig = field(default_factory=TatConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    stock: StockConfig = field(default_factory=StockConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    #: key group -> test cycle in days (重点人群检测周期)
    key_groups: dict[str, float] = field(
        default_factory=lambda: {"medical": 7.0, "courier": 2.0, "cold_chain": 2.0}
    )

    def with_warehouse(self, path: str | os.PathLike[str] | None) -> Config:
        if path is None:
            return self
        return replace(self, warehouse=replace(self.warehouse, path=str(path)))


_SECRET_HINTS = ("secret", "token", "password", "auth", "key_value", "hash_key", "access_key")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner, _ellipsis) = get_args(typ)
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _k, inner = get_args(typ)
        return {str(k): _coerce(v, inner, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - programming error


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if any(h in name.lower() for h in _SECRET_HINTS):
            raise ConfigError(
                f"{key}: secrets never go in the config file; set them in the environment or a Prefect Secret block"
            )
        if name not in known:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
        typ = hints[name]
        if is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table [{key}]")
            kwargs[name] = _build(typ, value, key)
        else:
            kwargs[name] = _coerce(value, typ, key)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def parse_config(data: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a parsed TOML document."""
    cfg: Config = _build(Config, data, "")
    for group, days in cfg.key_groups.items():
        if days <= 0:
            raise ConfigError(f"key_groups.{group}: the test cycle in days must be positive")
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration from ``path``, ``$TUBETRAIL_CONFIG`` or ``./tubetrail.toml``."""
    explicit = path or os.environ.get("TUBETRAIL_CONFIG")
    candidate = Path(explicit) if explicit else Path("tubetrail.toml")
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist")
        return Config()
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {candidate}: not valid TOML ({exc})") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"config file {candidate}: {exc}") from exc
