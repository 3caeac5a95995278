"""One warehouse session for a flow or task: from the flow's two parameters (the config path and
the warehouse path) to a connection with the derived views defined.

:meth:`WarehouseSession.configured` loads the config (``kernel.config.load_config`` with the
warehouse path put in), fetches the ID-hash key (``kernel.secrets.id_hash_key``: a missing or too
short key fails here, before any work) and keeps the writer-slot guard it is given (the flows give
``flows.limits.warehouse_write_guard``, the Prefect global concurrency limit; without one, writes
serialise on the file lock alone). Then, per unit of work:

* :meth:`~WarehouseSession.read`: the file lock, not the writer slot (a report, a summary, the
  dashboard, a check for pending alerts). ``views=True`` defines the views, ``snapshot=True`` as
  a snapshot (a read over the whole city: ``warehouse.views.define_views``);
* :meth:`~WarehouseSession.write`: the writer slot, then the file lock; ``views=True`` defines
  the views live (no snapshot: the session writes).

Either opens through ``warehouse.connection.open_configured`` (migrations, the person-key macro
and its fingerprint check, the memory bound) and closes and unlocks on exit. Where views are
needed only after a first look (nothing to do: no views), :meth:`~WarehouseSession.define_views`
defines them later in the same session. 一个会话：配置、密钥、锁、视图。"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kernel.config import Config, load_config
from kernel.secrets import id_hash_key
from warehouse.connection import open_configured
from warehouse.views import define_views

#: a factory of context managers that hold the writer slot while a session writes
WriteGuard = Callable[[], AbstractContextManager[object]]


@dataclass(frozen=True)
class WarehouseSession:
    """A configured warehouse: its config (``cfg``, with the warehouse path), the ID-hash key and
    the writer-slot guard. Opening is per :meth:`read` / :meth:`write`; nothing is held between."""

    cfg: Config
    key: bytes = field(repr=False)
    write_guard: WriteGuard = nullcontext

    @classmethod
    def configured(cls, config_path: str | Path | None, warehouse: str | Path | None, *,
                   write_guard: Callable[[Config], WriteGuard] | None = None) -> WarehouseSession:
        """The flows' parameters made a session: ``config_path`` None is the default config
        (``TUBETRAIL_CONFIG``, else ``tubetrail.toml``), ``warehouse`` None the configured path.
        ``write_guard(cfg)`` gives the writer-slot guard of :meth:`write`."""
        return cls.of_config(load_config(config_path).with_warehouse(warehouse), write_guard=write_guard)

    @classmethod
    def of_config(cls, cfg: Config, *, write_guard: Callable[[Config], WriteGuard] | None = None) -> WarehouseSession:
        """A session of a configuration already loaded (the CLI's, checked before any flow runs)."""
        return cls(cfg, id_hash_key(), write_guard(cfg) if write_guard is not None else nullcontext)

    @contextmanager
    def read(self, *, views: bool = False, snapshot: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A session under the file lock only. ``views``: the derived views; ``snapshot``: the
        views over a snapshot of the facts (implies ``views``)."""
        with open_configured(self.cfg.warehouse, self.key) as con:
            if views or snapshot:
                self.define_views(con, snapshot=snapshot)
            yield con

    @contextmanager
    def write(self, *, views: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A session under the writer slot and the file lock; ``views``: the derived views (live)."""
        with self.write_guard(), open_configured(self.cfg.warehouse, self.key) as con:
            if views:
                self.define_views(con)
            yield con

    def define_views(self, con: duckdb.DuckDBPyConnection, *, snapshot: bool = False) -> None:
        """The derived views of this config on ``con`` (``warehouse.views.define_views``)."""
        define_views(con, self.cfg, snapshot=snapshot)
