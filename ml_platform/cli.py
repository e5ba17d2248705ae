"""The ``mlp`` command: demo and ui now; lineage, reproduce, promote and rollback come later."""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="ml_platform: the ML lifecycle as a lineage-exact Dagster asset graph.", no_args_is_help=True
)
console = Console()


@app.command()
def demo(
    start: str = typer.Option("2013-01-01", help="First day to materialize."),
    end: str = typer.Option("2013-03-31", help="Last day to materialize (included)."),
) -> None:
    """Materialize raw -> validated -> flight_features for each day of [start, end], incrementally."""
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
    console.print("Browse it: [bold]make ui[/] (Dagster UI on http://127.0.0.1:3000)")


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


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"--{name} must be YYYY-MM-DD, got {value!r}") from exc


if __name__ == "__main__":
    app()
