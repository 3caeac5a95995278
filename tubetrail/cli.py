"""``tubetrail``: the command line. Every command that changes data runs the Prefect flow that a
deployment runs. Exit codes: 0 success, 1 refused input, 2 usage (including configuration, a
missing or wrong secret, a warehouse or writer slot that stayed taken): one line on stderr, never
a traceback (the errors of :func:`_exit_2_errors`, mapped in one place: :meth:`Cli.__call__`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.console import Console
from rich.table import Table

from kernel.config import Config, ConfigError, load_config
from kernel.secrets import MissingSecret, id_hash_key

# Prefect's own telemetry has nowhere to go from a city's network: off unless said otherwise.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _exit_2_errors() -> tuple[type[BaseException], ...]:
    """The errors that end a command with exit 2: the operator's set-up, not the input."""
    from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError

    from warehouse.connection import WarehouseLocked, WrongIdHashKey

    return (MissingSecret, WrongIdHashKey, ConfigError, WarehouseLocked, AcquireConcurrencySlotTimeoutError,
            _missing_credentials())


def _missing_credentials() -> type[BaseException]:
    from notify import MissingCredentials

    return MissingCredentials


def exit_2_cause(exc: BaseException) -> BaseException | None:
    """``exc`` or the error it was raised from (a flow run re-raises what failed it), when it is
    one of the exit-2 errors."""
    known = _exit_2_errors()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, known):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(exc: BaseException) -> str:
    from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError

    text = " ".join(str(exc).split())
    if isinstance(exc, ConfigError):
        return f"configuration error: {text}"
    if isinstance(exc, AcquireConcurrencySlotTimeoutError):
        return f"the warehouse writer slot stayed taken: {text}; another writer holds it, try again later"
    return text


class Cli(typer.Typer):
    """The command line; exit-2 errors, wherever raised (also inside a flow run), end it with one
    line on stderr."""

    def __call__(self, *args, **kwargs):
        add_plugin_commands(self)  # at the call, not the import: a plug-in imports this module
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only the exit-2 errors are handled, the rest re-raised
            cause = exit_2_cause(exc)
            if cause is None:
                raise
            sys.stderr.write(f"tubetrail: {one_line(cause)}\n")
            sys.stderr.flush()
            sys.exit(EXIT_USAGE)


app = Cli(
    name="tubetrail",
    help="Logistics of citywide pooled nucleic-acid screening: collect → deliver → test → report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
lab_app = typer.Typer(help="Laboratory tools.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
round_app = typer.Typer(help="Screening rounds.", no_args_is_help=True)
app.add_typer(round_app, name="round")
console = Console(stderr=False)
errors = Console(stderr=True)


@dataclass
class State:
    config_path: str | None = None
    warehouse: str | None = None
    checked: set[str] = field(default_factory=set)
    verbose: bool = False
    logging_to: Path | None = None
    #: the command line's root context: what a command opens for its whole run closes with it
    root: typer.Context | None = None

    def with_resource(self, manager):
        """Enter ``manager`` until the command ends (Typer 0.29 brings its own click, whose
        contexts ``click.get_current_context`` does not see: the root is kept here)."""
        if self.root is None:  # a State made outside the command line: open until the process ends
            return manager.__enter__()
        return self.root.with_resource(manager)

    def config(self) -> Config:
        """The configuration of a command that works on the warehouse, checked before any flow
        runs: the ID-hash key is set and is the warehouse's own (:func:`check_secrets`), and the
        flows have one Prefect server to talk to (:func:`use_prefect_server`)."""
        from notify import check_provider

        cfg = load_config(self.config_path).with_warehouse(self.warehouse)
        check_provider(cfg.sms)
        if cfg.warehouse.path not in self.checked:
            check_secrets(cfg)
            self.checked.add(cfg.warehouse.path)
        use_prefect_server(self)
        self.log_to_file(cfg)
        return cfg

    def log_to_file(self, cfg: Config) -> None:
        """Prefect's INFO lines of this command to ``prefect.log`` beside the warehouse, not the
        terminal (``tubetrail.prefect_logs``; ``--verbose``: the terminal too)."""
        from tubetrail.prefect_logs import log_file_of, prefect_logs_to

        if self.logging_to is None:
            self.logging_to = log_file_of(cfg.warehouse.path)
            self.with_resource(prefect_logs_to(self.logging_to, terminal=self.verbose))


def check_secrets(cfg: Config) -> None:
    """Raise the exit-2 error now, not from inside a flow run: the ID-hash key is missing, too
    short, or not the one the warehouse was built with."""
    from warehouse.connection import check_id_hash_key

    check_id_hash_key(cfg.warehouse, id_hash_key())


def use_prefect_server(state: State) -> None:
    """Without a Prefect API configured (``PREFECT_API_URL`` or the Prefect profile), the flows of
    this process use the local Prefect server on 127.0.0.1:4200 (the demo's, the UI's), started
    when none answers: never a temporary server per process, which the concurrent runs of several
    processes would each start over the one SQLite database of ``PREFECT_HOME`` (locked database,
    timeouts) and whose leases on the writer slot die with it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        return
    home = Path(PREFECT_HOME.value())
    ensure_prefect_server(PREFECT_UI, home / "tubetrail-prefect-server.log")
    state.with_resource(prefect_api(PREFECT_UI))


def tubetrail_version() -> str:
    """The installed package's version (its metadata), e.g. ``0.1.0``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tubetrail")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"tubetrail {tubetrail_version()}\n")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Optional[str], typer.Option("--config", help="tubetrail.toml (or $TUBETRAIL_CONFIG)")] = None,
    warehouse: Annotated[Optional[str], typer.Option("--warehouse", help="DuckDB warehouse file")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Prefect's INFO log lines on the terminal too "
                                                            "(always in prefect.log beside the warehouse)")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="print the version and exit")] = False,
) -> None:
    ctx.obj = State(config, warehouse, verbose=verbose, root=ctx.find_root())


def print_json(figures: dict) -> None:
    """``--json``: the figures as one JSON object on stdout, nothing else there (times as ISO text)."""
    sys.stdout.write(json.dumps(figures, ensure_ascii=False, indent=1, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def refused_line(text: str) -> None:
    """A refusal: one line on stderr, however wide (exit 1 follows)."""
    errors.print(f"refused: {' '.join(str(text).split())}", soft_wrap=True, markup=False, highlight=False)


AS_JSON = typer.Option("--json", help="print the figures as one JSON object on stdout, nothing else")


def _run_ingest(state: State, inbox: Path, as_json: bool = False, as_of: datetime | None = None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.ingest import ingest_inbox, ingest_progress

    cfg = state.config()
    # files taken of those found, on stderr (stdout stays the table's, or the JSON's)
    with Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("files"), TimeElapsedColumn(),
                  console=errors, disable=as_json) as bar:
        job = bar.add_task("ingest", total=None)

        def moved(taken: int, found: int) -> None:
            bar.update(job, completed=taken, total=found)

        with ingest_progress(moved):
            outcomes = ingest_inbox(str(inbox), state.config_path, cfg.warehouse.path, as_of=as_of)
    refused = [o for o in outcomes if o.status == "refused"]
    if as_json:
        print_json(ingest_figures(outcomes))
        return EXIT_REFUSED if refused else 0
    table = Table("kind", "files taken", "seen before", "refused", "rows read", "accepted", "quarantined")
    for kind in dict.fromkeys(o.kind for o in outcomes):
        mine = [o for o in outcomes if o.kind == kind]
        table.add_row(kind, *(str(sum(o.status == s for o in mine)) for s in ("accepted", "skipped", "refused")),
                      *(f"{sum(getattr(o, a) for o in mine):,}" for a in ("rows_read", "rows_accepted", "rows_quarantined")))
    console.print(table)
    for o in refused:
        errors.print(f"[red]refused[/red] {o.message}")
    return EXIT_REFUSED if refused else 0


def ingest_figures(outcomes: list) -> dict:
    """The table of ``tubetrail ingest`` as plain values: per kind and in total, files taken, seen
    before and refused, rows read, accepted and quarantined; the refusals' messages."""
    def counts(mine: list) -> dict:
        return {"files_taken": sum(o.status == "accepted" for o in mine),
                "seen_before": sum(o.status == "skipped" for o in mine),
                "refused": sum(o.status == "refused" for o in mine),
                "rows_read": sum(o.rows_read for o in mine), "rows_accepted": sum(o.rows_accepted for o in mine),
                "rows_quarantined": sum(o.rows_quarantined for o in mine)}

    kinds = dict.fromkeys(o.kind for o in outcomes)
    return {"kinds": {kind: counts([o for o in outcomes if o.kind == kind]) for kind in kinds},
            "total": counts(outcomes),
            "refused": [o.message for o in outcomes if o.status == "refused"]}


@app.command()
def ingest(ctx: typer.Context, inbox: Annotated[Path, typer.Argument(help="inbox folder")],
           as_json: Annotated[bool, AS_JSON] = False,
           as_of: Annotated[Optional[str], typer.Option(
               "--as-of", help="judge the rules a row's own time cannot (a register birth date: not after "
                               "that day) at this ISO time (default now)")] = None) -> None:
    """Take every new file under an inbox folder, in dependency order (a progress bar of files
    taken on stderr; exit 1 when a file was refused)."""
    if not inbox.is_dir():
        errors.print(f"{inbox}: not a folder")
        raise typer.Exit(EXIT_USAGE)
    state: State = ctx.obj
    # a bad time: exit 2 at once, before the command's set-up (its config, the Prefect server)
    when = parse_cli_time(as_of, load_config(state.config_path).city.timezone) if as_of else None
    raise typer.Exit(_run_ingest(state, inbox, as_json, when))


@lab_app.command("parse")
def lab_parse(
    file: Annotated[Path, typer.Argument(help="an instrument export")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Parquet file to write")],
) -> None:
    """Parse one instrument export to the long table well, sample, target, ct (ct null = not detected)."""
    from lab.instruments import UnrecognisedExport, parse_export, write_long_table

    if not file.is_file():
        errors.print(f"{file}: no such file")
        raise typer.Exit(EXIT_USAGE)
    try:
        parsed = parse_export(file)
    except UnrecognisedExport as exc:
        errors.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(EXIT_REFUSED) from exc
    write_long_table(parsed, out)
    console.print(f"{file.name}: {parsed.format}, {parsed.records.height} rows, "
                  f"{parsed.rejects.height} rejected → {out}")


def parse_cli_time(value: str, timezone: str) -> datetime:
    """ISO 8601; without offset, local time of the city."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        errors.print(f"{value!r}: not an ISO 8601 time")
        raise typer.Exit(EXIT_USAGE) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(timezone))


@round_app.command("open")
def round_open(
    ctx: typer.Context,
    round_id: Annotated[str, typer.Option("--id", help="round id, e.g. R20220404")],
    start: Annotated[str, typer.Option("--start", help="ISO 8601 start of the window")],
    end: Annotated[str, typer.Option("--end", help="ISO 8601 end of the window")],
    districts: Annotated[Optional[str], typer.Option("--districts", help="comma-separated scope")] = None,
    pool_size: Annotated[Optional[int], typer.Option("--pool-size")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Open a round; scans are assigned to the round whose window holds them. Exit 1, one line, when
    it is refused (already open, window overlapping another round, pool size not allowed): checked
    before the flow runs, so the refusal is no failed run in the Prefect UI."""
    from flows.rounds import open_round, round_figures, round_of, round_refusal
    from sampling.rounds import RoundRefused

    state: State = ctx.obj
    cfg = state.config()
    scope = [d.strip() for d in districts.split(",") if d.strip()] if districts else None
    rnd = round_of(cfg, round_id, parse_cli_time(start, cfg.city.timezone), parse_cli_time(end, cfg.city.timezone),
                   scope, pool_size)
    refusal = round_refusal(cfg, rnd)
    if refusal is None:
        try:  # refused only when another process opened a round in between
            opened = open_round(rnd.round_id, rnd.starts_at, rnd.ends_at, scope, rnd.pool_size, state.config_path,
                                cfg.warehouse.path)
        except RoundRefused as exc:
            refusal = str(exc)
    if refusal is not None:
        if as_json:
            print_json({**round_figures(rnd), "opened": False, "refused": refusal})
        refused_line(refusal)
        raise typer.Exit(EXIT_REFUSED)
    if as_json:
        print_json({**opened, "opened": True})
    else:
        console.print(f"opened round {round_id}: {opened['starts_at']} to {opened['ends_at']}, "
                      f"pool size {opened['pool_size']}", soft_wrap=True, markup=False, highlight=False)


@app.command()
def report(
    ctx: typer.Context,
    round_id: Annotated[str, typer.Option("--round", help="round id")],
    out: Annotated[Path, typer.Option("--out", help="folder for the report files")],
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="judge time-based rules at this ISO time (default now)")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Write the report files of a round (coverage, status, orders, untested, anomalies, TAT, worklists, report.html)."""
    from flows.report import round_report

    state: State = ctx.obj
    cfg = state.config()
    when = parse_cli_time(as_of, cfg.city.timezone) if as_of else None
    try:
        result = round_report(round_id, str(out), when, state.config_path, cfg.warehouse.path)
    except ConfigError:
        raise  # exit 2, not a refusal (a ConfigError is a ValueError)
    except ValueError as exc:
        refused_line(str(exc))
        raise typer.Exit(EXIT_REFUSED) from exc
    if as_json:
        print_json({**result, "page": str((out / "report.html").resolve())})
        return
    console.print(f"report of {round_id}: {len(result['files'])} files and {result['worklists']} worklists in {out}; "
                  f"coverage {100 * (result['coverage'] or 0):.2f} %")
    console.print(f"open {(out / 'report.html').resolve()}")


# --- tubetrail plan (issue 14: capacity and stock, reporting/plan.py) -------------------------------
@app.command()
def plan(
    ctx: typer.Context,
    round_id: Annotated[Optional[str], typer.Option("--round", help="round id (default: the round open at --as-of, "
                                                                     "else the latest)")] = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="judge at this ISO time (default now)")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Capacity and stock: tubes the scope needs at its zones' pool sizes, the labs' combined daily capacity,
    hours to test everyone, reagents and consumables in hand as days of whole-population testing, pool-size
    advice. Exit 1 when an item of the city or of a holder is under [stock] min_days (a stock_low alert)."""
    from datetime import timezone

    from flows.plan import plan_capacity
    from reporting.plan import PlanRefused

    state: State = ctx.obj
    cfg = state.config()
    # the command's clock is the one place the wall clock enters: everything is judged there
    when = parse_cli_time(as_of, cfg.city.timezone) if as_of else datetime.now(timezone.utc)
    if round_id is not None:  # a usage error, told before any flow runs (one line, no failed run)
        from warehouse.connection import open_configured

        with open_configured(cfg.warehouse, id_hash_key()) as con:
            known = con.execute("SELECT 1 FROM rounds WHERE round_id = ?", [round_id]).fetchall()
        if not known:
            errors.print(f"round {round_id} is not open in this warehouse", soft_wrap=True, markup=False,
                         highlight=False)
            raise typer.Exit(EXIT_USAGE)
    try:
        figures = plan_capacity(round_id, when, state.config_path, cfg.warehouse.path)
    except PlanRefused as exc:
        errors.print(f"{exc}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from exc
    if as_json:
        sys.stdout.write(json.dumps(figures, ensure_ascii=False, indent=1) + "\n")
    else:
        _print_plan(figures)
    raise typer.Exit(EXIT_REFUSED if figures["under_minimum"] else 0)


def _print_plan(f: dict) -> None:
    scope = f["scope"] if isinstance(f["scope"], str) else ", ".join(f["scope"])
    console.print(f"[bold]Round {f['round_id'] or '(none)'}[/bold] ({f['round_choice']}), as of {f['as_of']}; "
                  f"scope: {scope}, pool size {f['pool_size']}")
    need = Table("registered", "tubes needed", "pooled", "single", "labs' daily capacity", "hours to test everyone",
                 title="One whole-population round")
    need.add_row(f"{f['registered']:,}", f"{f['tubes']:,}", f"{f['tubes_pooled']:,}", f"{f['tubes_single']:,}",
                 f"{f['daily_capacity_tubes']:,}" + (f" ({f['labs_without_capacity']} lab(s) without)"
                                                     if f["labs_without_capacity"] else ""),
                 f"{f['hours_to_test']:,.1f}" if f["hours_to_test"] is not None else "– (no capacity known)")
    console.print(need)
    stock = Table("item", "city: days", "city: in hand", "need per round", "counted", "worst holder", "its days",
                  title=f"Days of whole-population testing in hand (minimum {f['min_days']:g})")

    def days(value, under) -> str:
        return "–" if value is None else (f"[bold red]{value:.1f} ⚠[/bold red]" if under else f"{value:.1f}")

    for s in f["stock"]:
        if s["in_hand"] is None:
            stock.add_row(s["item"], "no count", "–", "–", "–", "–", "–")
            continue
        stock.add_row(s["item"], days(s["days_in_hand"], s["under_minimum"]), f"{s['in_hand']:,} {s['unit']}",
                      f"{s['need_per_round']:,.0f}" if s["need_per_round"] is not None else "–", s["counted_at"],
                      s["worst_holder"] or "–", days(s["worst_days_in_hand"], s["worst_under_minimum"]))
    console.print(stock)
    advice = Table("district", "positivity", "pool size now", "best", "tests saved per round", "advice",
                   title="Pool-size advice (Dorfman; advice only)")
    for a in f["pool_advice"]:
        advice.add_row(a["district"], f"{100 * a['positivity']:.3f} %" if a["positivity"] is not None else "–",
                       str(a["current_size"]), str(a["best_size"] or "–"),
                       f"{a['tests_saved_per_round']:,}" if a["tests_saved_per_round"] is not None else "–", a["advice"])
    console.print(advice)
    if f["under_minimum"]:
        errors.print("[bold red]under the minimum:[/bold red] " + ", ".join(
            f"{u['item']} at {u['holder']} ({u['days_in_hand']:.1f} days)" for u in f["under_minimum"]))


sms_app = typer.Typer(help="SMS reminders to the untested.", no_args_is_help=True)
app.add_typer(sms_app, name="sms")


@sms_app.command("send")
def sms_send(
    ctx: typer.Context,
    round_id: Annotated[Optional[str], typer.Option("--round", help="round id (default: the current round)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count who is due, send nothing, write nothing")] = False,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="judge at this ISO time (default now)")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Send the due reminders (untested, with a phone, not opted out, outside quiet hours, once per cool-down).
    Exit 2 when the provider refuses the account (credentials, balance, daily limit): nothing more is sent."""
    from flows.sms import sms_reminders
    from notify import AccountRefused, MissingCredentials

    state: State = ctx.obj
    cfg = state.config()
    when = parse_cli_time(as_of, cfg.city.timezone) if as_of else None
    try:
        result = sms_reminders(round_id, dry_run, when, state.config_path, cfg.warehouse.path)
    except (MissingSecret, MissingCredentials, AccountRefused) as exc:
        errors.print(str(exc), soft_wrap=True, markup=False, highlight=False)  # one line, however wide
        raise typer.Exit(EXIT_USAGE) from exc
    if as_json:
        print_json({**result, "dry_run": dry_run})
        return
    table = Table("outcome", "messages")
    for key, value in result["counts"].items():
        table.add_row(key, f"{value:,}")
    console.print(table)
    console.print(f"round {result['round_id']}: {result['sent']:,} sent, {result['failed']:,} failed"
                  + (f", {result['unknown']:,} unknown (may have reached the provider; looked up by the next run, "
                     "never re-sent blindly)" if result.get("unknown") else "")
                  + (" (dry run: nothing sent)" if dry_run else ""))


export_app = typer.Typer(help="Exports for other systems (the health-code platform).", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("results")
def export_results_command(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="ISO 8601 time: results decided after it (without offset: city time)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the export's files")],
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Every final individual result decided since T, for the health-code platform: one CSV (and its
    Parquet twin) per export, exactly once per person, tube and result; the same T gives the same file.
    Prints the file, its rows and the --since of the next export."""
    from flows.exports import export_results

    state: State = ctx.obj
    when = parse_cli_time(since, load_config(state.config_path).city.timezone)  # a bad time: exit 2 at once
    if out.exists() and not out.is_dir():
        errors.print(f"{out}: not a folder")
        raise typer.Exit(EXIT_USAGE)
    cfg = state.config()
    result = export_results(str(out.resolve()), when, state.config_path, cfg.warehouse.path)
    if as_json:
        print_json(result)
        if not result["matches_ledger"]:
            errors.print("warning: the files differ from the content recorded for this export (see the flow run's log)")
        return
    counts = ", ".join(f"{c['rows']:,} {r}" for r, c in result["counts"].items())
    late = sum(c["decided_before_since"] for c in result["counts"].values())
    if result["export_id"] is None:
        head = f"nothing new decided after {result['since']}: nothing recorded, an empty file"
    else:
        how = "recorded now" if result["created"] else "recorded before, written again"
        head = (f"export {result['export_id']} ({how}): {result['rows']:,} results ({counts}; {late:,} decided "
                f"before --since: late or amended) decided after {result['since']} until {result['until']}")
    for line in (head, f"csv: {result['csv']}", f"parquet: {result['parquet']}",
                 f"next export: --since {result['next_since']}"):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    if not result["matches_ledger"]:
        errors.print("warning: the files differ from the content recorded for this export (see the flow run's log)")


@app.command()
def serve(ctx: typer.Context) -> None:
    """Serve every deployment of prefect.yaml from this process (a local setup without workers)."""
    from prefect import serve as prefect_serve

    from tubetrail.definitions import deployments

    ctx.obj.config()  # the served flows need the ID-hash key and a Prefect server

    served = deployments()
    console.print(f"serving {', '.join(d.name for d in served)}; runs show in the Prefect UI (stop with Ctrl-C)")
    prefect_serve(*served)


PREFECT_UI = "http://127.0.0.1:4200"


def _server_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_prefect_server(url: str, log_path: Path, timeout: float = 90.0, *, pid_file: Path | None = None,
                          env: dict[str, str] | None = None) -> bool:
    """Start a local Prefect server (analytics off) unless one answers; True if started now.
    Processes starting at once start one server: the first under a lock, the others find it.
    ``pid_file``: where its pid is written (the demo's, for ``make stop``); ``env``: added to
    its environment (the demo's ``PREFECT_HOME``, so its database lives under ``data/demo``)."""
    import fcntl
    import tempfile

    if _server_answers(url):
        return False
    host, port = url.removeprefix("http://").split(":")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / f"tubetrail-prefect-server-{port}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _server_answers(url):
            return False
        server_env = {**os.environ, **(env or {}), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        server_env.pop("PREFECT_API_URL", None)
        with log_path.open("ab") as log:
            server = subprocess.Popen(  # noqa: S603 - fixed argv
                [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", port],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env,
                start_new_session=True,
            )
        if pid_file is not None:
            pid_file.write_text(str(server.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _server_answers(url):
                return True
            time.sleep(0.5)
    raise RuntimeError(f"the Prefect server did not answer on {url} within {timeout:.0f} s; see {log_path}")


@contextmanager
def prefect_api(url: str) -> Iterator[str]:
    """Point this process's Prefect client at the server on ``url``, and its child processes too.

    Prefect reads its settings once, when it is imported: setting ``PREFECT_API_URL`` in
    ``os.environ`` afterwards reaches child processes only. This process's flows would then start
    a temporary server of their own, which shows in the UI only when it happens to share that
    server's database (not for a server that was already running elsewhere)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = f"{url}/api"
    os.environ["PREFECT_API_URL"] = api
    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield api


def add_plugin_commands(cli: typer.Typer) -> list[str]:
    """The commands other folders add (entry point group ``tubetrail.commands``): ``simulate`` and
    ``demo`` come from ``devtools/``, which a source checkout has and the wheel does not ship.
    Returns the names of the plug-ins added now (each is added to a CLI once)."""
    from importlib.metadata import entry_points

    if getattr(cli, "_plugins_added", False):
        return []
    cli._plugins_added = True
    found = []
    for point in entry_points(group="tubetrail.commands"):
        try:
            register = point.load()
        except ModuleNotFoundError:  # installed from the wheel: no devtools/
            continue
        register(cli)
        found.append(point.name)
    return found


if __name__ == "__main__":  # pragma: no cover
    app()
