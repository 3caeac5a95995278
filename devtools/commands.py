"""The development commands of the ``tubetrail`` CLI: ``tubetrail simulate`` (a simulated city's
inbox) and ``tubetrail demo`` (that city's round played through every link, live in the Prefect
UI). They live here, outside the installed package, with the simulator and the loopback
stand-ins they use; ``tubetrail.cli`` adds them through the ``tubetrail.commands`` entry point
(``pyproject.toml``) when this folder is importable (a source checkout after ``make``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from devtools.alert_inbox import AlertInbox
from kernel.config import load_config
from kernel.secrets import MissingSecret
from tubetrail.prefect_logs import CHILD_CONSOLE_LEVEL
from tubetrail.cli import (EXIT_REFUSED, EXIT_USAGE, PREFECT_UI, State, console, ensure_prefect_server, errors,
                           prefect_api)


def register(app: typer.Typer) -> None:
    """Add ``simulate`` and ``demo`` to the CLI (the ``tubetrail.commands`` entry point)."""
    app.command()(simulate)
    app.command()(demo)


def simulate(
    ctx: typer.Context,
    residents: Annotated[int, typer.Option("--residents", min=100, help="registered residents")],
    out: Annotated[Path, typer.Option("--out", help="inbox folder to write")],
    seed: Annotated[int, typer.Option("--seed")] = 20220404,
    pool_size: Annotated[Optional[int], typer.Option(
        "--pool-size", help="the round's pool size, one of [pool_policy] allowed_sizes (default: default_size)")] = None,
    prevalence: Annotated[float, typer.Option("--prevalence", min=0.0, max=0.2)] = 0.0005,
    file_format: Annotated[str, typer.Option("--format", help="csv or parquet for register and scans")] = "csv",
) -> None:
    """Write a simulated city's inbox with the faults real rounds have."""
    from devtools.simcity import simulate_city

    policy = load_config(ctx.obj.config_path).pool_policy  # the pool sizes, as `round open` checks them
    pool_size = policy.default_size if pool_size is None else pool_size
    if pool_size not in policy.allowed_sizes:
        *others, last = (str(size) for size in policy.allowed_sizes)
        errors.print(f"--pool-size must be {', '.join(others)} or {last}" if others else f"--pool-size must be {last}")
        raise typer.Exit(EXIT_USAGE)
    if file_format not in ("csv", "parquet"):
        errors.print("--format must be csv or parquet")
        raise typer.Exit(EXIT_USAGE)
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        job = bar.add_task("simulating", total=1.0)

        def progress(stage: str, fraction: float) -> None:
            bar.update(job, description=stage, completed=fraction)

        result = simulate_city(
            residents, out, seed=seed, pool_size=pool_size, prevalence=prevalence,
            file_format=file_format, progress=progress,
        )
    table = Table("kind", "files")
    for kind, n in result.files.items():
        table.add_row(kind, str(n))
    console.print(table)
    console.print(f"wrote {out} in {time.perf_counter() - started:.1f} s")


def _open_demo_round(state: State, rnd: dict) -> None:
    """Open the simulated round (once: a re-run of the demo finds it open, asked before the flow
    runs, so the UI shows no failed open-round run)."""
    from flows.rounds import open_round, round_of, round_refusal

    cfg = state.config()
    wanted = round_of(cfg, rnd["id"], datetime.fromisoformat(rnd["start"]), datetime.fromisoformat(rnd["end"]),
                      rnd.get("districts"), rnd.get("pool_size"))
    refusal = round_refusal(cfg, wanted)
    if refusal is None:
        open_round(wanted.round_id, wanted.starts_at, wanted.ends_at, rnd.get("districts"), wanted.pool_size,
                   state.config_path, cfg.warehouse.path)
        console.print(f"opened round {rnd['id']}")
    elif "already open" in refusal:
        console.print(f"round {rnd['id']} already open")
    else:
        errors.print(f"refused: {refusal}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(EXIT_REFUSED)


def demo(
    ctx: typer.Context,
    residents: Annotated[int, typer.Option("--residents")] = 500_000,
    workdir: Annotated[Path, typer.Option("--workdir", help="where the demo city and warehouse live")] = Path("data/demo"),
    pause: Annotated[float, typer.Option("--pause", help="seconds between the round's hourly waves")] = 2.0,
) -> None:
    """Simulate a city and play its round through every link, live in the Prefect UI."""
    from flows.ingest import ingest_inbox
    from flows.report import round_report
    from flows.sms import sms_reminders
    from flows.limits import ensure_concurrency_limits
    from devtools.demo import (REPORT_PORT, ensure_report_server, ensure_served, play, report_time,
                                sweep_time, wave_line)
    from devtools.sms_gateway import LoopbackGateway

    state: State = ctx.obj
    # the demo's Prefect database lives under workdir (`make clean` removes it); its pid is
    # recorded for `make stop`
    server_env = {"PREFECT_HOME": os.environ.get("PREFECT_HOME") or str((workdir / "prefect").resolve())}
    Path(server_env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    with console.status("Prefect server on 127.0.0.1:4200 …"):
        started = ensure_prefect_server(PREFECT_UI, workdir / "prefect-server.log",
                                        pid_file=workdir / "prefect-server.pid", env=server_env)
    console.print(f"Prefect server {'started' if started else 'already running'}: {PREFECT_UI}"
                  + (f" (database in {server_env['PREFECT_HOME']})" if started else ""))
    ctx.with_resource(prefect_api(PREFECT_UI))
    if state.warehouse is None:
        state.warehouse = str(workdir / "tubetrail.duckdb")
    cfg = state.config()
    workdir = workdir.resolve()
    city = workdir / "city"
    ctx.invoke(simulate, ctx, residents=residents, out=city)
    truth = json.loads((city / "_truth.json").read_text(encoding="utf-8"))["round"]
    _open_demo_round(state, truth)
    # no work pool: the demo's deployments are served by `tubetrail serve`, without a worker (a
    # pool nobody polls would show NOT_READY); prefect.yaml's tubetrail-process is for `prefect deploy`
    ensure_concurrency_limits(cfg)
    console.print(f"global concurrency limit {cfg.warehouse.write_limit}: 1 slot (one warehouse writer at a time)")
    # the served deployments run in workdir with the demo's warehouse (the defaults otherwise),
    # the loopback SMS gateway takes 1,000 messages a second (not a provider's 50), and every
    # report run links its page on the demo's report server
    report_base = f"http://127.0.0.1:{REPORT_PORT}"
    served_config = workdir / "served.toml"
    served_config.write_text(f'[warehouse]\npath = "{Path(cfg.warehouse.path).resolve()}"\n\n'
                             f'[report]\nlink_base = "{report_base}"\n\n'
                             f'[sms]\nrate_per_second = 1000.0\n', encoding="utf-8")
    # the simulated city's depot holds stock ([stock] depots); the waves are taken with this
    # configuration too unless one was given, so its counts are a depot's, not an unknown holder's
    depot = json.loads((city / "_truth.json").read_text(encoding="utf-8")).get("stock", {}).get("depot")
    if depot:
        with served_config.open("a", encoding="utf-8") as conf:
            conf.write(f'\n[stock]\ndepots = ["{depot}"]\n')
    ingest_config = state.config_path or os.environ.get("TUBETRAIL_CONFIG") or str(served_config)
    serve_env = {**os.environ, "TUBETRAIL_CONFIG": str(served_config)}
    serve_env.pop(CHILD_CONSOLE_LEVEL, None)  # serve.log keeps the served runs' INFO lines
    pid, served_now = ensure_served(workdir, serve_env)
    console.print(f"deployments {'served' if served_now else 'already served'} by `tubetrail serve` (pid {pid})")
    report_pid, report_now = ensure_report_server(workdir, REPORT_PORT, serve_env)
    if report_now:
        time.sleep(1.0)  # a server that cannot bind its port exits at once
    if not report_now or os.waitpid(report_pid, os.WNOHANG)[0] == 0:
        console.print(f"report pages on {report_base} (pid {report_pid}; report.html files only)")
    else:
        errors.print(f"[yellow]the report server did not start (port {REPORT_PORT} taken?): see "
                     f"{workdir / 'report-server.log'}; open report.html from its folder[/yellow]")
    alerts_file = workdir / "pool-alerts.jsonl"
    refused = 0
    try:
        with _demo_alert_inbox(cfg.alerts.webhook_url, alerts_file) as alert_inbox:

            def take(label: str, folder: Path) -> None:
                nonlocal refused
                outcomes = ingest_inbox(str(folder), ingest_config, cfg.warehouse.path, label=f"wave {label}")
                refused += sum(o.status == "refused" for o in outcomes)

            playing_since = time.monotonic()

            def shown(n: int, total: int, label: str, files: int) -> None:
                console.print(wave_line(n, total, label, files, playing_since, time.monotonic()),
                              soft_wrap=True, markup=False, highlight=False)

            play(city, workdir / "inbox", cfg.city.timezone, take, pause, on_wave=shown)
            _wait_for_quiet(alert_inbox)
    except MissingSecret as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from exc
    # the reminder sweep of the afternoon, to an SMS gateway on loopback
    sweep_at = sweep_time(datetime.fromisoformat(truth["end"]), cfg.city.timezone)
    gateway_url = urlsplit(cfg.sms.base_url)
    if cfg.sms.provider == "webhook" and gateway_url.hostname in ("127.0.0.1", "localhost"):
        with LoopbackGateway(gateway_url.port or 80) as gateway:
            swept = sms_reminders(truth["id"], False, sweep_at, str(served_config), cfg.warehouse.path)
        console.print(f"reminder sweep at {sweep_at:%H:%M}: {swept['sent']:,} SMS sent to the loopback gateway "
                      f"({len(gateway.state.deliveries):,} delivered), {swept['counts']['no_phone']:,} without phone")
    # the nightly report of the round, judged the next day at noon (the re-samples are in by then)
    next_noon = report_time(datetime.fromisoformat(truth["end"]), cfg.city.timezone)
    reported = round_report(truth["id"], str(workdir / "report"), next_noon, str(served_config), cfg.warehouse.path)
    # the capacity plan at the same time: the artifact capacity-plan, and the stock alerts it finds
    from flows.plan import plan_capacity

    planned = plan_capacity(truth["id"], next_noon, str(served_config), cfg.warehouse.path)
    console.print(f"\nOpen the Prefect UI: [bold]{PREFECT_UI}/runs[/bold] (flow runs, logs, artifacts)")
    console.print(f"Report of {truth['id']} as of {next_noon:%Y-%m-%d %H:%M}: coverage "
                  f"{100 * (reported['coverage'] or 0):.2f} %, {reported['worklists']} door-to-door worklists; "
                  f"open [bold]{reported['link']}[/bold] (file {workdir / 'report' / 'report.html'})")
    from reporting.dashboard import dashboard_key, positive_pools_key

    console.print(f"Live dashboard of {truth['id']} (updated by every wave and the report): "
                  f"[bold]{PREFECT_UI}/artifacts/key/{dashboard_key(truth['id'])}[/bold] (artifact key "
                  f"'{dashboard_key(truth['id'])}'; every positive pool in one table: '{positive_pools_key(truth['id'])}')")
    console.print(f"Positive-pool alerts: artifacts 'positive-pool-*' in {PREFECT_UI}/artifacts, events in "
                  f"{PREFECT_UI}/events, notifications received: {len(alert_inbox.received) if alert_inbox else 0} "
                  f"(kept in {alerts_file})")
    console.print(f"Capacity plan (artifact 'capacity-plan'): {planned['tubes']:,} tubes for everyone, "
                  f"{planned['hours_to_test']} h at the labs' {planned['daily_capacity_tubes']:,} a day; "
                  + (f"under {planned['min_days']:g} days in hand: " + ", ".join(
                      f"{u['item']} at {u['holder']}" for u in planned["under_minimum"])
                     + " (stock_low alerts; `tubetrail plan` exits 1)" if planned["under_minimum"]
                     else "every item above the minimum days in hand"))
    console.print(f"Deployments: {PREFECT_UI}/deployments (nightly-report, reminder-sweep, ingest-inbox; "
                  f"served by pid {pid}, log {workdir / 'serve.log'})")
    console.print(f"Warehouse: {state.warehouse}")
    raise typer.Exit(EXIT_REFUSED if refused else 0)


@contextmanager
def _demo_alert_inbox(url: str, store: Path) -> Iterator[AlertInbox | None]:
    """One automation per alert event (``flows.alerts.AUTOMATIONS``), and (for a loopback webhook)
    the inbox that receives their notifications."""
    from flows.alerts import ensure_alert_automations

    created = ensure_alert_automations(url)  # one per alert event of DESIGN §8
    console.print(f"automations: {len(created)}, one per alert event ({', '.join(sorted(created))}) "
                  f"-> notifications to {url}")
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        yield None
        return

    def show(alert: dict) -> None:
        console.print(f"[bold red]ALERT[/bold red] {alert.get('body', '')}")

    try:
        inbox = AlertInbox(url, store, on_alert=show)
    except OSError as exc:  # the port is taken: someone else receives them
        console.print(f"alert inbox not started ({exc}); notifications go to whatever listens on {url}")
        yield None
        return
    with inbox:
        yield inbox


def _wait_for_quiet(inbox: AlertInbox | None, quiet: float = 10.0, limit: float = 90.0) -> None:
    """Automations act within seconds of an event: wait until notifications stop arriving."""
    if inbox is None:
        return
    start = last_count_change = time.monotonic()
    count = len(inbox.received)
    while time.monotonic() - last_count_change < quiet and time.monotonic() - start < limit:
        time.sleep(0.5)
        if len(inbox.received) != count:
            count, last_count_change = len(inbox.received), time.monotonic()
