"""The ``mlp`` command: demo, ui, mlflow-ui, serve; promote, rollback, audit and champion for the registry."""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from ml_platform.settings import PlatformSettings

app = typer.Typer(
    help="ml_platform: the ML lifecycle as a lineage-exact Dagster asset graph.", no_args_is_help=True
)
# piped output (CI logs, `| tee`) gets room for the tables instead of the 80-column default
console = Console(width=None if sys.stdout.isatty() else 150)


def _register_subcommands() -> None:
    from ml_platform.deploy_cli import deploy_app

    app.add_typer(deploy_app, name="deploy")
    from ml_platform import lineage_cli
    from ml_platform.cli_commands import LINEAGE_COMMANDS

    for name in LINEAGE_COMMANDS:  # the list other modules read to know what `mlp` has
        app.command(name)(getattr(lineage_cli, name))
    from ml_platform.openlineage_cli import openlineage_app

    app.add_typer(openlineage_app, name="openlineage")


_register_subcommands()


@app.command()
def demo(
    start: str = typer.Option("2013-01-01", help="First day to materialize."),
    end: str = typer.Option("2013-03-31", help="Last day to materialize (included)."),
    model_weeks: int = typer.Option(
        4,
        min=0,
        help="Train, evaluate and promote the last N model weeks that fit in --start..--end (0: none).",
    ),
    replay_days: int = typer.Option(
        28,
        min=0,
        help="After the models, replay this many days after --end tick by tick (0: no replay).",
    ),
    inject: list[str] = typer.Option(
        ["2013-04-10:temp+15C"],
        help="Shift injected into the replay's raw data (repeatable; see `mlp replay --help`).",
    ),
) -> None:
    """Materialize raw -> features for each day of --start..--end, then the weekly models, incrementally."""
    from ml_platform.definitions import DATA_JOB, build_definitions
    from ml_platform.demo import RunOutcome, days, layers, partitions_to_run, run_partitions, summarize
    from ml_platform.instance import open_instance
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    first, last = _parse_day(start, "start"), _parse_day(end, "end")
    if last < first:
        raise typer.BadParameter(f"--end {end} is before --start {start}")
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(DATA_JOB)
    wanted = days(first, last)
    todo = partitions_to_run(instance, job, wanted)
    console.print(
        f"[bold]{DATA_JOB}[/]: {len(wanted)} days {first}..{last};"
        f" {len(wanted) - len(todo)} already up to date, {len(todo)} to run.\n"
        f"DAGSTER_HOME={settings.dagster_home}  store={settings.delta_root}"
    )
    failed = None
    if todo:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("materializing", total=len(todo) * len(layers(job)))

            def done(outcome: RunOutcome) -> None:
                progress.update(
                    task, advance=outcome.days, description=f"{outcome.layer} {outcome.first}..{outcome.last}"
                )

            outcomes = run_partitions(instance, job, todo, on_done=done)
        failed = next((o for o in outcomes if not o.success), None)
    summaries = summarize(instance, job, wanted)
    table = Table(title=f"{DATA_JOB} {first}..{last}")
    for column in ("asset", "partitions", "rows", "quarantined rows", f"data version of {last}"):
        table.add_column(column, justify="right" if column != "asset" else "left")
    for s in summaries:
        table.add_row(
            s.asset,
            str(s.partitions),
            f"{s.rows:,}",
            f"{s.quarantined:,}",
            s.data_versions.get(str(last), "-")[:16],
        )
    console.print(table)
    out = settings.storage_root / "demo_summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([s.__dict__ for s in summaries], indent=2))
    console.print(f"Every partition's data version: {out}")
    if failed:
        console.print(
            f"[red]{failed.layer} {failed.first}..{failed.last} failed[/]"
            f" (run {failed.run_id}): {failed.error}"
        )
        raise typer.Exit(1)
    trained = bool(model_weeks) and _demo_models(settings, instance, first, last, model_weeks)
    if trained and replay_days:
        from datetime import timedelta

        start_replay = last + timedelta(days=1)
        _replay(settings, instance, start_replay, last + timedelta(days=replay_days), inject or [])
    if trained:
        _demo_serve(settings)
        _demo_lineage(settings, instance)
        _demo_openlineage(settings, instance)
    console.print(
        "Browse it: [bold]make ui[/] (Dagster UI on http://127.0.0.1:3000),"
        " [bold]make mlflow-ui[/] (MLflow on http://127.0.0.1:5000)"
    )


@app.command()
def replay(
    start: str = typer.Option("2013-04-01", help="First day to replay."),
    end: str = typer.Option("2013-04-28", help="Last day to replay (included)."),
    inject: list[str] = typer.Option(
        ["2013-04-10:temp+15C"],
        help="Injected shift '<day>:temp+15C' or '<day>:carrier=UA:0.5' (repeatable; '' for none).",
    ),
) -> None:
    """Replay days forward: automation and every sensor tick as the daemon would; print a timeline.

    After `make demo` it continues the demo's history. On an empty instance it may start at the
    first partition (MLP_PARTITION_START): the sensors then train, promote and deploy the first
    model by themselves once enough days exist.
    Days already replayed print their recorded timeline instead of running again.
    """
    from ml_platform.instance import open_instance
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    first, last = _parse_day(start, "start"), _parse_day(end, "end")
    if last < first:
        raise typer.BadParameter(f"--end {end} is before --start {start}")
    _replay(settings, open_instance(settings), first, last, [i for i in inject if i])


def _replay(settings: PlatformSettings, instance: Any, first: date, last: date, inject: list[str]) -> None:
    import time

    from ml_platform.lib.ingest.scenarios import parse_shift
    from ml_platform.replay import Replay, TimelineEntry

    for text in inject:
        try:
            parse_shift(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--inject") from exc
    _quiet_mlflow()
    shifted = settings.model_copy(update={"inject_shifts": [*settings.inject_shifts, *inject]})
    console.print(
        f"\n[bold]Replay[/] {first}..{last}: automation and {settings.sensor_interval_seconds}s sensor ticks"
        f" evaluated day by day (injected: {', '.join(inject) or 'nothing'})."
    )
    colors = {"error": "red", "warn": "yellow", "info": "default", "ok": "default"}
    started = time.perf_counter()

    def show(entry: TimelineEntry) -> None:
        if entry.kind == "data" or (entry.kind in ("drift", "live") and entry.severity == "ok"):
            console.print(f"  [dim]{entry.day}  {entry.text}[/]")
        else:
            console.print(f"  [{colors[entry.severity]}]{entry.day}  {entry.text}[/]")

    import logging

    class AlertLine(logging.Handler):
        """The log notifier's alerts, one short line each under the timeline entry they belong to."""

        def emit(self, record: logging.LogRecord) -> None:
            title = record.getMessage().split(" | ")[0].removeprefix("ALERT ")
            console.print(f"  [magenta]            alert sent: {title}[/]")

    notify_log = logging.getLogger("ml_platform.lib.monitoring.notify")
    notify_log.addHandler(AlertLine())
    notify_log.propagate = False
    try:
        entries = Replay(shifted, instance, on_entry=show).run(first, last)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    retrains = [e for e in entries if e.kind == "retrain"]
    drifted = sorted({e.day for e in entries if e.kind == "drift" and e.severity == "error"})
    console.print(
        f"Replay done in {time.perf_counter() - started:.0f}s: drift errors on"
        f" {', '.join(drifted) or 'no day'}; {len(retrains)} retrain(s)."
        f" Events: {settings.monitoring_events_table}; `make ui` shows the runs, drift reports and checks."
    )


def _demo_models(settings: PlatformSettings, instance: Any, first: date, last: date, limit: int) -> bool:
    """Train, evaluate and promote the model weeks of [first, last]; print the champion's lineage.

    Returns whether any model week fits in the range.
    """
    import time

    import dagster as dg

    from ml_platform.definitions import MODEL_JOB, build_definitions
    from ml_platform.demo import model_weeks, partitions_to_run, run_week

    _quiet_mlflow()
    job = build_definitions(settings).resolve_job_def(MODEL_JOB)
    weeks = model_weeks(settings, first, last)[-limit:]
    if not weeks:
        console.print(
            f"[yellow]No model week fits in {first}..{last}:[/] a week needs"
            f" {settings.training_window_weeks} weeks of features before it and must end by {last}."
        )
        return False
    # a week is done once its model is trained and evaluated by the current code; its promotion
    # may rightly not exist (rejected by a gate, or waiting for approval)
    done_when = [dg.AssetKey("delay_model"), dg.AssetKey("model_evaluation")]
    todo = partitions_to_run(instance, job, weeks, done_when)
    console.print(
        f"\n[bold]{MODEL_JOB}[/]: weeks {', '.join(weeks)}; {len(weeks) - len(todo)} up to date,"
        f" {len(todo)} to train ({settings.hpo_trials} Optuna trials each,"
        f" policy {settings.promotion_policy})."
    )
    for week in todo:
        started = time.perf_counter()
        outcome = run_week(instance, job, week)
        status = (
            "[green]ok[/]"
            if outcome.success
            else "[yellow]rejected[/]"
            if outcome.gates_failed
            else "[red]failed[/]"
        )
        console.print(f"  week {week}: {status} in {time.perf_counter() - started:.0f}s  {outcome.summary}")
        if outcome.error:
            console.print(f"  [red]{outcome.error}[/] (run {outcome.run_id})")
            raise typer.Exit(1)
    _print_champion(settings)
    return True


def _quiet_mlflow() -> None:
    """Keep MLflow's INFO lines, progress bars and schema hints out of the demo's progress output."""
    import logging
    import warnings

    import mlflow  # configures its loggers on import, so levels are set after it

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger(mlflow.__name__).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")


def _registry(settings: PlatformSettings, *, registered: bool = True) -> Any:
    """The model registry; with ``registered``, exit with a clear message when no version exists yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from ml_platform.lib.registry.audit import AuditLog
    from ml_platform.lib.registry.promotion import ModelRegistry

    uri = settings.mlflow_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    if registered:
        try:
            client.get_registered_model(settings.registered_model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            console.print(
                f"[red]{settings.registered_model} is not registered in {uri}[/]: train a model week first"
                " (`make demo`, or materialize delay_model in `make ui`)."
            )
            raise typer.Exit(1) from exc
    return ModelRegistry(client, settings.registered_model, AuditLog(settings.audit_table))


def _print_champion(settings: PlatformSettings) -> None:
    from ml_platform.lib.training.tracking import model_lineage

    registry = _registry(settings)
    version = registry.champion()
    if version is None:
        console.print(f"[yellow]{settings.registered_model} has no champion yet.[/]")
        return
    lineage = model_lineage(registry.client, settings.registered_model, version)
    metrics = ", ".join(
        f"{m}={lineage.metrics[f'holdout_{m}']:.3f}"
        for m in ("mae", "rmse", "roc_auc", "brier")
        if f"holdout_{m}" in lineage.metrics
    )
    console.print(
        f"\n[bold]Champion[/]: {lineage.model_name} v{lineage.version}"
        f" (aliases: {', '.join(lineage.aliases)})\n"
        f"  model version -> MLflow run {lineage.run_id}"
        f" (Dagster run {lineage.tags.get('dagster.run_id', '?')},"
        f" {lineage.tags.get('dagster.asset_key', '?')}[{lineage.tags.get('dagster.partition', '?')}],"
        f" git {lineage.tags.get('git.commit', '?')[:12]})\n"
        f"  holdout: {metrics}\n"
        f"  MLflow run -> {len(lineage.datasets)} feature partitions (dataset inputs):"
    )
    table = Table(show_header=True)
    for column in ("feature partition", "context", "Delta table version", "data version"):
        table.add_column(column)
    shown = (
        lineage.datasets
        if len(lineage.datasets) <= 8
        else [*lineage.datasets[:4], None, *lineage.datasets[-3:]]
    )
    for item in shown:
        if item is None:
            table.add_row(f"… {len(lineage.datasets) - 7} more", "", "", "")
        else:
            table.add_row(item[0], item[1], item[2], item[3][:16])
    console.print(table)
    out = settings.storage_root / "champion_lineage.json"
    out.write_text(json.dumps(lineage.__dict__, indent=2, default=str))
    console.print(f"Full lineage: {out}")


@app.command()
def promote(
    version: str = typer.Option(..., help="Model version to make champion."),
    approver: str = typer.Option(..., help="Who approves (recorded in the audit log)."),
    reason: str = typer.Option("manual approval", help="Why, for the audit log."),
) -> None:
    """Approve a challenger whose gates passed: point 'champion' at it and record the approval."""
    from ml_platform.lib.registry.promotion import PromotionRefused
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    registry = _registry(settings)
    before = registry.champion()
    try:
        event = registry.promote(version, approver=approver, reason=reason)
    except PromotionRefused as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"{settings.registered_model}: champion {before or 'none'} -> {version}, approved by {approver}"
        f" (audit event {event.event_id})"
    )


@app.command()
def rollback(
    by: str = typer.Option(None, help="Who rolls back (default: the login name)."),
    reason: str = typer.Option("rollback", help="Why, for the audit log."),
) -> None:
    """Point 'champion' back at the previous champion, in one step, and record it."""
    import getpass

    from ml_platform.lib.registry.promotion import NothingToRollBack, PromotionRefused
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    registry = _registry(settings)
    before = registry.champion()
    try:
        event = registry.rollback(actor=f"user:{by or getpass.getuser()}", reason=reason)
    except (NothingToRollBack, PromotionRefused) as exc:
        console.print(f"[red]cannot roll back:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"{settings.registered_model}: champion {before} -> {registry.champion()}"
        f" (audit event {event.event_id})"
    )


@app.command()
def audit(
    limit: int = typer.Option(20, help="Show the last N events."),
) -> None:
    """The model's alias events (promotions, rejections, rollbacks), hash chain verified."""
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    registry = _registry(settings, registered=False)  # the log is readable before any registration
    checked = registry.audit.verify(settings.registered_model)
    events = registry.history()[-limit:]
    table = Table(title=f"{settings.registered_model}: audit log ({checked} events, hash chain verified)")
    for column in ("when (UTC)", "action", "alias", "version", "previous", "actor", "reason", "event"):
        table.add_column(column)
    for e in events:
        table.add_row(
            e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.alias or "",
            e.version or "",
            e.previous_version or "",
            e.actor,
            e.reason[:60],
            e.event_id[:8],
        )
    console.print(table)


@app.command()
def champion() -> None:
    """The champion version and its lineage: MLflow run, Dagster run, feature partitions and versions."""
    from ml_platform.settings import PlatformSettings

    _print_champion(PlatformSettings())


@app.command()
def serve(
    port: int = typer.Option(3000, help="Port of the HTTP server (`make ui` uses 3000 too: pick another)."),
    host: str = typer.Option("127.0.0.1", help="Host to bind."),
) -> None:
    """Serve the champion's Bento (the delay_bento built for it) with `bentoml serve`, until Ctrl-C.

    The Bento is the one the latest delay_bento materialization recorded for the current champion
    version, in the platform's BENTOML_HOME; the server reads the online store of these settings.
    """
    from ml_platform.defs.serving.bento import NAME as DELAY_BENTO
    from ml_platform.lib.serving.bento import bentoml_command, bentoml_env
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    version, tag, partition = _champion_bento(settings)
    home = settings.bentoml_home
    url = f"http://{host}:{port}"
    store_text, snapshot_day = _online_snapshot(settings)
    console.print(
        f"Serving [bold]{settings.registered_model} v{version}[/] (champion) from Bento [bold]{tag}[/]"
        f" ({DELAY_BENTO}[{partition}])\n"
        f"  URL: {url}  (ready: {url}/readyz, metrics: {url}/metrics, API docs: {url}/docs)\n"
        f"  online store: {store_text}"
    )
    # one line each, whatever the terminal's width, so they can be copied
    console.print(f"  try: {_curl_example(settings, url, snapshot_day)}", soft_wrap=True, highlight=False)
    console.print("  Ctrl-C stops it.")
    command = [bentoml_command(), "serve", tag, "--host", host, "--port", str(port)]
    console.print(f"$ BENTOML_HOME={home} {' '.join(command)}", soft_wrap=True, highlight=False)
    env = bentoml_env(home, root_dir=settings.root_dir)  # the same online store and log paths
    _run_until_interrupted(command, env)


def _champion_bento(settings: Any) -> tuple[str, str, str]:
    """The champion's version, the tag of its Bento and the delay_bento week that built it.

    Raises:
        typer.Exit: with what to run first, when there is no champion or no Bento of it.
    """
    from ml_platform.defs.monitoring.assets import version_record
    from ml_platform.defs.serving.bento import BENTO_TAG, bento_record
    from ml_platform.defs.serving.bento import NAME as DELAY_BENTO
    from ml_platform.instance import open_instance
    from ml_platform.lib.serving.bento import bento_path

    registry = _registry(settings)
    version = registry.champion()
    if version is None:
        console.print(
            f"[red]{settings.registered_model} has no champion yet[/]: promote a model week first"
            " (`make demo`, or `mlp promote --version N --approver NAME` under the manual policy)."
        )
        raise typer.Exit(1)
    instance = open_instance(settings)
    record = bento_record(instance, settings.registered_model, version)
    if record is None or record.asset_materialization is None:
        model = version_record(instance, "delay_model", version)
        week = model.asset_materialization.partition if model and model.asset_materialization else None
        where = f"{DELAY_BENTO}[{week}]" if week else DELAY_BENTO
        console.print(
            f"[red]No Bento of the champion, {settings.registered_model} v{version}, yet.[/] Build it first:"
            f" materialize {where} (`make ui`: Assets -> {DELAY_BENTO} -> Materialize"
            + (f" week {week}" if week else "")
            + "), or rerun weekly_model_job for that week; `make demo` builds the Bento of each"
            " week it trains."
        )
        raise typer.Exit(1)
    mat = record.asset_materialization
    tag = str(mat.metadata[BENTO_TAG].value)
    home = settings.bentoml_home
    if not bento_path(home, tag).exists():
        console.print(
            f"[red]The Bento {tag}[/] ({DELAY_BENTO}[{mat.partition}], run {record.run_id}) is not in"
            f" {home}: rematerialize {DELAY_BENTO}[{mat.partition}] on this machine."
        )
        raise typer.Exit(1)
    return str(version), tag, str(mat.partition)


def _demo_lineage(settings: PlatformSettings, instance: Any) -> None:
    """The demo's last word: the champion's recorded lineage (tree and JSON) and its evidence bundle."""
    from ml_platform.lineage import LineageError, to_json, trace
    from ml_platform.lineage_cli import chain_tree

    try:
        chain = trace(instance, settings, "champion")
    except LineageError as exc:
        console.print(f"[red]The champion's lineage could not be traced[/]: {exc}")
        raise typer.Exit(1) from exc
    console.print(chain_tree(chain, show_all=False))
    out = settings.storage_root / "lineage" / "champion.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_json(chain), indent=2, default=str) + "\n")
    console.print(f"The same chain as JSON: {out}  (any start: `mlp lineage <bento tag|version|request id>`)")
    if not chain.complete:
        console.print("[red]The champion's lineage is incomplete[/]: see the missing links above.")
        raise typer.Exit(1)
    from ml_platform.lineage.evidence import build_evidence, write_evidence
    from ml_platform.lineage.model import ModelHop

    assert isinstance(chain.model, ModelHop)  # a complete chain has its model hop
    version = chain.model.version
    html_path, json_path = write_evidence(
        build_evidence(instance, settings, version), settings.storage_root / "evidence"
    )
    console.print(
        f"Evidence bundle of v{version} for auditors (one self-contained HTML file, and its JSON):\n"
        f"  {html_path}\n  {json_path}"
    )


def _demo_openlineage(settings: PlatformSettings, instance: Any) -> None:
    """Export what the demo materialized as OpenLineage events (no daemon runs the sensor here)."""
    if settings.openlineage_transport == "none":
        console.print("OpenLineage: off (MLP_OPENLINEAGE_TRANSPORT=none)")
        return
    from ml_platform.lineage.openlineage.config import OpenLineageConfig
    from ml_platform.lineage.openlineage.export import export_openlineage
    from ml_platform.openlineage_cli import asset_partitions

    config = OpenLineageConfig.from_settings(settings)
    try:
        summary = export_openlineage(instance, config, partitions=asset_partitions(settings))
    except Exception as exc:  # a transport or validation failure: say which, no traceback
        console.print(f"[red]OpenLineage export failed[/]: {type(exc).__name__}: {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    in_all = ""
    if summary.target.startswith("file:"):  # the replay's openlineage_sensor ticks exported its days
        lines = Path(summary.target.removeprefix("file:")).read_text(encoding="utf-8").splitlines()
        in_all = f"; the file holds {sum(1 for line in lines if line.strip())} events in all"
    console.print(
        f"OpenLineage: {summary.events} new run events of {summary.materializations} materializations and"
        f" {summary.failures} failures, each validated, to {summary.target}{in_all}"
        " (`mlp openlineage validate <file>` checks a file again)",
        soft_wrap=True,
    )


#: The demo's requests: three real routes of the NYC airports, departing at 17:00 local time.
DEMO_FLIGHTS = (
    {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "distance": 1400},
    {"carrier": "B6", "flight": 1021, "origin": "JFK", "dest": "BOS", "distance": 187},
    {"carrier": "DL", "flight": 1999, "origin": "LGA", "dest": "ATL", "distance": 762},
)


def _demo_serve(settings: Any) -> None:
    """Serve the champion's Bento on a free loopback port, ask it about three flights, stop it.

    The flights depart on the online store's snapshot day, so the answers use that day's trailing
    aggregates and weather; each answer names the model version that made it.
    """
    import httpx

    from ml_platform.lib.deploy.process import ServedProcess, ServedProcessError
    from ml_platform.lib.serving.bento import bentoml_env

    version, tag, partition = _champion_bento(settings)
    _, day = _online_snapshot(settings)
    env = bentoml_env(settings.bentoml_home, root_dir=settings.root_dir)
    console.print(
        f"Serving the champion, v{version}, from Bento [bold]{tag}[/] (delay_bento[{partition}]) ..."
    )
    server = ServedProcess(
        tag, env=env, name="demo", log_path=settings.storage_root / "logs" / "demo-serve.log"
    )
    try:
        server.start()
    except ServedProcessError as exc:
        console.print(f"[red]The Bento did not start[/]: {exc}")
        raise typer.Exit(1) from exc
    try:
        table = Table(title=f"{server.url}/predict_batch (flights of {day})")
        for column in ("flight", "route", "departs", "predicted delay (min)", "P(delay > 15 min)", "model"):
            table.add_column(column)
        flights = [{**f, "scheduled_departure": f"{day or date.today()}T17:00:00"} for f in DEMO_FLIGHTS]
        answer = httpx.post(f"{server.url}/predict_batch", json={"flights": flights}, timeout=30.0)
        if answer.status_code != 200:
            console.print(f"[red]The Bento answered {answer.status_code}[/]: {answer.text[:500]}")
            raise typer.Exit(1)
        body = answer.json()
        for flight, prediction in zip(flights, body["predictions"], strict=True):
            table.add_row(
                f"{flight['carrier']} {flight['flight']}",
                f"{flight['origin']}-{flight['dest']}",
                str(flight["scheduled_departure"]),
                f"{prediction['predicted_arr_delay']:.1f}",
                f"{prediction['delay_probability']:.2f}",
                f"{prediction['model_name']} v{prediction['model_version']}",
            )
        console.print(table)
        console.print(f"request id {body['request_id']}; keep it running with [bold]make serve[/]")
    finally:
        code = server.stop()
        console.print(f"Bento stopped (exit code {code}).")


def _online_snapshot(settings: PlatformSettings) -> tuple[str, date | None]:
    """The online store with the day of its snapshot (or why predictions will answer 503), and that day."""
    from ml_platform.lib.online import open_online_store
    from ml_platform.lib.online.store import OnlineStoreError

    try:
        store = open_online_store(
            settings.online_store_url, settings.online_store_path, namespace=settings.online_store_namespace
        )
    except OnlineStoreError as exc:
        return f"[yellow]{exc}[/]", None
    try:
        info = store.info()
    except OnlineStoreError as exc:
        return f"[yellow]{exc}[/] (predictions answer 503 until it is reachable)", None
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()
    if info is None:
        return (
            f"{store.describe()} [yellow]holds no snapshot[/]: predictions answer 503 until online_features"
            " is materialized (`make demo` does)",
            None,
        )
    return f"{store.describe()}, snapshot of {info.day}", info.day


def _curl_example(settings: PlatformSettings, url: str, day: date | None) -> str:
    """A request for a flight of the snapshot's day (United, Newark to Houston)."""
    auth = " -H 'Authorization: Bearer $MLP_SERVING_API_TOKEN'" if settings.serving_api_token else ""
    body = json.dumps(
        {
            "carrier": "UA",
            "flight": 1545,
            "origin": "EWR",
            "dest": "IAH",
            "scheduled_departure": f"{day or date.today()}T17:00:00Z",
            "distance": 1400,
        }
    )
    return f"curl -s -X POST {url}/predict -H 'Content-Type: application/json'{auth} -d '{body}'"


def _run_until_interrupted(command: list[str], env: dict[str, str]) -> None:
    """Run the server ``command`` in its own session until it exits, or until Ctrl-C or SIGTERM.

    Then the server gets SIGTERM (BentoML finishes in-flight requests, runs the shutdown hooks, which
    flush the prediction log, and stops its workers) and 30 s to exit; a second Ctrl-C, or the 30 s,
    kill it and its workers. The
    handlers are installed explicitly: a shell that starts ``mlp`` in the background leaves SIGINT
    ignored, and Ctrl-C must still stop the server.
    """
    import signal
    import subprocess

    from ml_platform.lib.deploy.process import kill_tree

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            code = process.wait()
        except KeyboardInterrupt:
            console.print("\nstopping the server ...")
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                kill_tree(process.pid)
                process.wait()
            console.print("stopped.")
            return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        console.print(f"[red]bentoml serve exited with {code}[/]")
        raise typer.Exit(code)


def _signal_group(pid: int, sig: int) -> None:
    import contextlib

    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, sig)


@app.command("mlflow-ui")
def mlflow_ui(
    port: int = typer.Option(5000, help="Port."),
    host: str = typer.Option("127.0.0.1", help="Host."),
) -> None:
    """Start the MLflow UI on the platform's tracking store (runs, registered versions, aliases)."""
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    mlflow = Path(sys.executable).with_name("mlflow")
    args = [
        str(mlflow),
        "ui",
        "--backend-store-uri",
        str(settings.mlflow_tracking_uri),
        "-h",
        host,
        "-p",
        str(port),
    ]
    shown = [_redacted(a) if a == str(settings.mlflow_tracking_uri) else a for a in args]
    console.print(f"$ {' '.join(shown)}")
    os.execv(args[0], args)


def _redacted(uri: str) -> str:
    """A database URI without its password (for the console)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except ArgumentError:
        return uri


@app.command()
def ui(
    port: int = typer.Option(3000, help="Webserver port."),
    host: str = typer.Option("127.0.0.1", help="Webserver host."),
) -> None:
    """Start the Dagster UI and daemon (``dagster dev``) on the project's instance."""
    from ml_platform.instance import prepare_dagster_home
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    prepare_dagster_home(settings)
    workspace = settings.root_dir / "workspace.yaml"
    dagster = Path(sys.executable).with_name("dagster")
    args = [str(dagster), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    console.print(f"DAGSTER_HOME={settings.dagster_home}\n$ {' '.join(args)}")
    # Run from DAGSTER_HOME: dagster warns about (and ignores) a dagster.yaml in the working
    # directory; ours is the template that prepare_dagster_home copied there.
    os.environ["MLP_ROOT_DIR"] = str(settings.root_dir)  # the code server resolves the same paths
    os.chdir(settings.dagster_home)
    os.execv(args[0], args)


@app.command("audit-ui")
def audit_ui(
    port: int = typer.Option(3001, help="Webserver port (`make ui` has 3000)."),
    host: str = typer.Option("127.0.0.1", help="Webserver host."),
) -> None:
    """The Dagster UI read-only on the project's instance, for auditors: browse, never launch.

    Assets, their lineage graph and metadata, runs, checks and logs are all there; every mutation
    (launching or re-executing runs, materializing, backfills, turning sensors on or off, wiping)
    is refused by the webserver itself (``--read-only``). No daemon is started.
    """
    from ml_platform.instance import prepare_dagster_home
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    prepare_dagster_home(settings)
    workspace = settings.root_dir / "workspace.yaml"
    webserver = Path(sys.executable).with_name("dagster-webserver")
    args = [str(webserver), "-w", str(workspace), "-h", host, "-p", str(port), "--read-only"]
    console.print(f"DAGSTER_HOME={settings.dagster_home} (read-only)\n$ {' '.join(args)}")
    os.environ["MLP_ROOT_DIR"] = str(settings.root_dir)
    os.chdir(settings.dagster_home)
    os.execv(args[0], args)


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"--{name} must be YYYY-MM-DD, got {value!r}") from exc


if __name__ == "__main__":
    app()
