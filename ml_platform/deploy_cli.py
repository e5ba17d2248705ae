"""``mlp deploy``: the local deployment, from the command line.

* ``mlp deploy serve`` runs the supervisor (router, served Bentos, canary guard) until Ctrl-C;
* ``mlp deploy release`` materializes the ``deployment`` asset (the champion, or ``--version``) with a
  strategy, so the change is in the Dagster graph, linked to its Bento and model;
* ``mlp deploy rollback`` materializes it with ``rollback``: the running challenger goes back;
* ``mlp deploy status`` shows the desired state, what the supervisor runs, and the last events.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

    from ml_platform.lib.deploy.desired import Release
    from ml_platform.lib.deploy.events import DeploymentEvent
    from ml_platform.lib.deploy.process import ServedProcess
    from ml_platform.settings import PlatformSettings

deploy_app = typer.Typer(
    help="The local deployment: a supervisor serves what the `deployment` asset asks for.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 150)


@deploy_app.command("serve")
def serve(
    port: int | None = typer.Option(None, help="The router's port (default: MLP_DEPLOY_PORT, 3100)."),
    host: str = typer.Option("127.0.0.1", help="Host the router binds."),
    poll: float = typer.Option(1.0, help="Seconds between two looks at the desired state."),
) -> None:
    """Run the supervisor: serve the desired state behind one router until Ctrl-C (or SIGTERM).

    Each change of the desired state (a `deployment` materialization, `mlp deploy release`) is
    applied as it comes: blue-green switches without a lost request, canaries rolled back by
    themselves on a breach and promoted by themselves when healthy. Every event is recorded.
    """
    from ml_platform.lib.deploy.desired import DesiredStateStore
    from ml_platform.lib.deploy.events import DeploymentLog
    from ml_platform.lib.deploy.supervisor import Supervisor, read_status, supervisor_running
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    state_dir = settings.deployment_dir
    status_path = state_dir / "status.json"
    other = read_status(status_path)
    if supervisor_running(other) and other is not None and other.get("pid") != os.getpid():
        console.print(
            f"[red]A supervisor (pid {other.get('pid')}) already serves {other.get('url')}[/]"
            f" ({status_path}); stop it first."
        )
        raise typer.Exit(1)
    chosen = port or settings.deploy_port
    if not _port_free(host, chosen):
        console.print(f"[red]{host}:{chosen} is in use[/]: pick another with --port (or MLP_DEPLOY_PORT).")
        raise typer.Exit(1)
    store = DesiredStateStore(state_dir / "desired.json")
    supervisor = Supervisor(
        store,
        DeploymentLog(settings.deployment_log_table),
        _bento_launcher(settings),
        status_path=status_path,
        port=port or settings.deploy_port,
        host=host,
    )
    router = f"http://{host}:{port or settings.deploy_port}"
    console.print(
        f"Supervisor {os.getpid()}: the router will answer on [bold]{router}[/] (/predict, /predict_batch;"
        f" state: {router}/-/router)\n  desired state: {store.path}\n  events: {supervisor.log.table_uri}"
    )
    if store.read() is None:
        console.print(
            "  Nothing to serve yet: materialize the [bold]deployment[/] asset (`mlp deploy release`,"
            " or the Dagster UI). Waiting ..."
        )
    console.print("  Ctrl-C stops it.")

    def stop(signum: int, frame: Any) -> None:
        supervisor.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        supervisor.serve_forever(poll, on_tick=_print_events)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_events(supervisor.unreported())  # the stop
    if supervisor.last_error:
        console.print(f"[yellow]last error[/]: {supervisor.last_error}")
    console.print("stopped.")


@deploy_app.command("release")
def release(
    version: str | None = typer.Option(
        None, help="The registered version to deploy (default: the champion)."
    ),
    strategy: str | None = typer.Option(
        None, help="blue_green, canary or shadow (default: MLP_DEPLOY_STRATEGY)."
    ),
    share: float | None = typer.Option(None, help="The canary's share of the requests (0..1]."),
    promote_after: float | None = typer.Option(
        None, help="Seconds of a healthy canary before it is promoted by itself."
    ),
    max_p99_ms: float | None = typer.Option(None, help="Roll the canary back above this p99 latency (ms)."),
    force: bool = typer.Option(False, help="Deploy a Bento that was rolled back before."),
    reason: str = typer.Option("", help="Why (recorded in the deployment log)."),
) -> None:
    """Deploy the champion (or --version) by materializing the `deployment` asset."""
    _check_release(strategy, share)
    config: dict[str, Any] = {
        "model_version": version,
        "strategy": strategy,
        "share": share,
        "promote_after_s": promote_after,
        "max_p99_ms": max_p99_ms,
        "force": force,
        "reason": reason,
    }
    _materialize({k: v for k, v in config.items() if v is not None})


@deploy_app.command("rollback")
def rollback(reason: str = typer.Option("rolled back by hand", help="Why (recorded).")) -> None:
    """Send the running canary or shadow challenger back (materializes `deployment` with rollback)."""
    _materialize({"rollback": True, "reason": reason})


@deploy_app.command("status")
def status(events: int = typer.Option(10, help="How many of the last deployment events to show.")) -> None:
    """The desired state, what the supervisor runs (ports, pids, health), and the last events."""
    from ml_platform.lib.deploy.desired import DesiredStateStore
    from ml_platform.lib.deploy.events import DeploymentLog
    from ml_platform.lib.deploy.supervisor import read_status, supervisor_running
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    desired = DesiredStateStore(settings.deployment_dir / "desired.json").read()
    if desired is None:
        console.print("Nothing deployed yet: `mlp deploy release` (with `mlp deploy serve` running).")
    else:
        console.print(
            f"Desired (generation {desired.generation}, {desired.requested_at:%Y-%m-%d %H:%M:%S} UTC by"
            f" {desired.requested_by}): {desired.describe()}\n  why: {desired.reason}"
            + (
                f"\n  rolled back, refused without --force: {', '.join(desired.rolled_back)}"
                if desired.rolled_back
                else ""
            )
        )
    running = read_status(settings.deployment_dir / "status.json")
    if not supervisor_running(running):
        console.print("[yellow]No supervisor is running[/]: start one with `mlp deploy serve`.")
    else:
        assert running is not None
        console.print(
            f"Supervisor pid {running['pid']} serves {running['url']}: generation"
            f" {running['applied_generation']} applied, policy {running['policy']}"
            + (
                f"\n  [red]generation {running['failed_generation']} failed[/]: {running['last_error']}"
                if running.get("failed_generation")
                else ""
            )
        )
        table = Table("role", "model", "bento", "url", "pid", "healthy", "since")
        for role in ("champion", "challenger"):
            p = running.get(role)
            if p:
                table.add_row(
                    role,
                    f"v{p['model_version']}",
                    p["bento_tag"],
                    p["url"],
                    str(p["pid"]),
                    str(p["healthy"]),
                    p["since"][:19],
                )
        console.print(table)
    _print_bentos(settings)
    log = DeploymentLog(settings.deployment_log_table)
    recorded = log.events()[-events:]
    if recorded:
        _event_table(recorded, title=f"last {len(recorded)} events of {log.table_uri}")


# ------------------------------------------------------------------------------------- helpers

STRATEGIES = ("blue_green", "canary", "shadow")


def _check_release(strategy: str | None, share: float | None) -> None:
    """Refuse a strategy or a canary share the asset would refuse, before any run is launched."""
    if strategy is not None and strategy not in STRATEGIES:
        raise typer.BadParameter(
            f"{strategy!r} is not one of {', '.join(STRATEGIES)}", param_hint="--strategy"
        )
    if share is None:
        return
    if not 0.0 < share <= 1.0:  # NaN fails this too
        raise typer.BadParameter(
            f"the canary's share must be within (0, 1] (0.5: half the requests), got {share}",
            param_hint="--share",
        )
    if strategy is None:
        from ml_platform.settings import PlatformSettings

        strategy = PlatformSettings().deploy_strategy
        if strategy != "canary":
            raise typer.BadParameter(
                f"a share is for a canary, and MLP_DEPLOY_STRATEGY is {strategy}: pass --strategy canary",
                param_hint="--share",
            )
    elif strategy != "canary":
        raise typer.BadParameter(f"a share is for a canary, not {strategy}", param_hint="--share")


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _bento_launcher(settings: PlatformSettings) -> Any:
    """Builds the ``bentoml serve`` of a release's Bento in the platform's BENTOML_HOME."""
    from ml_platform.lib.deploy.process import ServedProcess
    from ml_platform.lib.serving.bento import bentoml_env

    env = bentoml_env(settings.bentoml_home, root_dir=settings.root_dir)
    logs = settings.storage_root / "logs"

    def launch(release: Release, role: str) -> ServedProcess:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return ServedProcess(
            release.bento_tag,
            env=env,
            name=f"{role}-v{release.model_version}",
            log_path=logs / f"deploy-{role}-v{release.model_version}-{stamp}.log",
        )

    return launch


def _materialize(config: dict[str, Any]) -> None:
    """Run ``deploy_job`` in this process on the platform's instance with ``config``; print the outcome.

    Every way it can fail ends in one line naming what failed and why, and exit status 1: a step's
    :class:`dagster.Failure` by its message, any other error by its message and its innermost cause
    (a Dagster wrapper says only "Error occurred while executing op"), an instance that cannot be
    opened or definitions that cannot be loaded likewise, before any run is launched.
    """
    from ml_platform.definitions import build_definitions
    from ml_platform.defs.serving import deployment as asset
    from ml_platform.instance import open_instance
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    config.setdefault("requested_by", asset.requester())
    try:
        instance = open_instance(settings)
    except Exception as exc:
        _fail(f"cannot open the Dagster instance in {settings.dagster_home}", _exception_text(exc))
    try:
        job = build_definitions(settings).resolve_job_def(asset.JOB)
    except Exception as exc:
        _fail(f"cannot load the definitions of {asset.JOB}", _exception_text(exc))
    asked = escape(", ".join(f"{k}={v}" for k, v in config.items()))
    console.print(f"Materializing [bold]{asset.NAME}[/] ({asked}) ...")
    try:
        result = job.execute_in_process(
            instance=instance,
            run_config={
                "ops": {asset.NAME: {"config": config}},
                # the outcome is printed below; a refused deploy is a message, not a stack trace
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            raise_on_error=False,
        )
    except Exception as exc:
        _fail(f"{asset.NAME} failed", _exception_text(exc))
    if not result.success:
        steps = [e for e in result.all_events if e.is_step_failure]
        failed = steps or [e for e in result.all_events if e.is_failure]  # a run that failed outside a step
        failures = list(
            dict.fromkeys(
                _failure_text(error)
                for e in failed
                if (error := getattr(e.event_specific_data, "error", None)) is not None
            )
        )
        _fail(f"{asset.NAME} failed (run {result.run_id})", "; ".join(failures) or "see the run")
    [mat] = result.asset_materializations_for_node(asset.NAME)
    meta = {k: v.value for k, v in mat.metadata.items()}
    console.print(
        f"{meta[asset.PLAN]} (generation {meta[asset.GENERATION]}, run {result.run_id})\n"
        f"  supervisor: {meta[asset.APPLIED]}"
        + (f", serving on {meta[asset.ROUTER_URL]}" if meta[asset.ROUTER_URL] else "")
    )
    if meta[asset.APPLIED] == "no_supervisor":
        console.print("  It waits in the desired state: start the supervisor with `mlp deploy serve`.")


def _fail(what: str, why: str) -> NoReturn:
    console.print(f"[red]{escape(what)}[/]: {escape(why)}", highlight=False)
    raise typer.Exit(1)


def _print_bentos(settings: PlatformSettings) -> None:
    """The versions that can be deployed: those delay_bento built a Bento for (newest first)."""
    import dagster as dg

    from ml_platform.defs.serving.bento import BENTO_TAG
    from ml_platform.defs.serving.bento import NAME as DELAY_BENTO
    from ml_platform.instance import open_instance
    from ml_platform.lib import metadata as keys

    records = open_instance(settings).fetch_materializations(dg.AssetKey(DELAY_BENTO), limit=200).records
    seen: dict[str, str] = {}
    for record in records:
        mat = record.asset_materialization
        if mat is None or keys.MLFLOW_MODEL_VERSION not in mat.metadata:
            continue
        version = str(mat.metadata[keys.MLFLOW_MODEL_VERSION].value)
        seen.setdefault(
            version, f"v{version} ({mat.metadata[BENTO_TAG].value}, {DELAY_BENTO}[{mat.partition}])"
        )
    if seen:
        console.print("Deployable (a Bento was built): " + "; ".join(seen.values()), highlight=False)


def _failure_text(error: SerializableErrorInfo) -> str:
    """What a failed step (or run) says: a :class:`dagster.Failure`'s message as written, with the
    CLI's option names; any other error's message and its innermost cause, never only the wrapper's
    "Error occurred while executing op"."""
    chain: list[SerializableErrorInfo] = []
    link: SerializableErrorInfo | None = error
    while link is not None:
        chain.append(link)
        link = link.cause or link.context
    # Dagster wraps what user code raised ("Error occurred while executing op ..."): skip wrappers
    own = [e for e in chain if not (e.cls_name or "").startswith("Dagster")] or chain
    first, innermost = own[0], chain[-1]
    text = _error_message(first)
    if first.cls_name == "Failure":  # the asset's own words, which already say why
        return text.replace("(set force: true in the run config)", "(pass --force)")
    cause = _error_message(innermost)
    return text if cause == text else f"{text} (innermost cause: {cause})"


def _error_message(error: SerializableErrorInfo) -> str:
    """One line: a Failure's message; any other error's class (without its module) and message."""
    text = " ".join(error.message.split())
    head, sep, rest = text.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == error.cls_name:
        text = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
    return text or error.cls_name or "an error without a message"


def _exception_text(exc: BaseException) -> str:
    """An exception's message and its innermost cause (``__cause__``, else ``__context__``)."""
    innermost = exc
    seen = {id(exc)}
    while (nxt := innermost.__cause__ or innermost.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        innermost = nxt
    text, cause = _one_exception(exc), _one_exception(innermost)
    return text if cause == text else f"{text} (innermost cause: {cause})"


def _one_exception(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _print_events(events: list[DeploymentEvent]) -> None:
    for event in events:
        console.print(
            f"{event.occurred_at:%H:%M:%S} [bold]{event.action}[/] {event.bento_tag} (v{event.model_version})"
            + (f" over v{event.previous_model_version}" if event.previous_model_version else "")
            + f", {event.mode}{f' {event.share:.0%}' if event.mode == 'canary' else ''}: {event.reason}"
            f" [dim]({event.actor})[/]",
            highlight=False,
        )


def _event_table(events: list[DeploymentEvent], title: str) -> None:
    table = Table("at (UTC)", "action", "model", "bento", "before", "mode", "by", "why", title=title)
    for e in events:
        table.add_row(
            f"{e.occurred_at:%Y-%m-%d %H:%M:%S}",
            e.action,
            f"v{e.model_version}",
            e.bento_tag or "",
            f"v{e.previous_model_version}" if e.previous_model_version else "",
            f"{e.mode} {e.share:.0%}" if e.mode == "canary" else e.mode,
            e.actor,
            e.reason,
        )
    console.print(table)
