"""``mlp openlineage``: export the materializations as OpenLineage run events, validate event files.

* ``mlp openlineage export`` emits what is new since the cursor to the configured transport
  (``MLP_OPENLINEAGE_TRANSPORT``: file, http or none) and prints what it emitted per asset;
  ``--since-start`` re-exports everything into a new file and leaves the cursor as it is.
* ``mlp openlineage validate FILE`` validates a JSON-lines file of events and exits non-zero naming
  each bad line and field (``--spec-dir``: also against the official OpenLineage JSON Schemas).

See docs/lineage.md, "OpenLineage".
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 150)
openlineage_app = typer.Typer(
    help="OpenLineage run events of the materializations (ML facets): export them, validate event files.",
    no_args_is_help=True,
)
SPEC_DIR_ENV = "OPENLINEAGE_SPEC_DIR"


@openlineage_app.command("export")
def export(
    since_start: bool = typer.Option(
        False,
        "--since-start",
        help="Re-export every materialization into a new JSON-lines file (see --out); the cursor and"
        " the configured transport are left as they are.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="The file of --since-start (default: <storage>/openlineage/events-<UTC time>.jsonl).",
    ),
) -> None:
    """Emit the OpenLineage events of every materialization recorded since the last export."""
    from ml_platform.lineage.openlineage.config import OpenLineageConfig, OpenLineageConfigError
    from ml_platform.lineage.openlineage.cursor import CursorError, ExportBusy
    from ml_platform.lineage.openlineage.export import OpenLineageExportError, export_openlineage
    from ml_platform.lineage.openlineage.validate import OpenLineageValidationError

    if out is not None and not since_start:
        raise typer.BadParameter(
            "only with --since-start (the cursor's file is the configured one)", param_hint="--out"
        )
    instance, settings = _open()
    try:
        config = OpenLineageConfig.from_settings(settings)
        if since_start:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            target = out if out is not None else config.state_dir / f"events-{stamp}.jsonl"
            if target.exists():
                _fail(f"{target} exists: --since-start writes a new file")
            config = config.with_transport("file", events_file=target)
        partitions = asset_partitions(settings)
        summary = export_openlineage(instance, config, partitions=partitions, since_start=since_start)
    except OpenLineageValidationError as exc:
        _fail(f"nothing after it was emitted: {exc}")
    except (OpenLineageExportError, ExportBusy, CursorError, OpenLineageConfigError) as exc:
        _fail(str(exc))
    table = Table(title=f"OpenLineage events to {escape(summary.target)}")
    for column in ("asset", "materializations", "failures", "events"):
        table.add_column(column, justify="left" if column == "asset" else "right")
    for asset, row in sorted(summary.by_asset.items()):
        table.add_row(escape(asset), *(str(row[k]) for k in ("materializations", "failures", "events")))
    table.add_row(
        "[bold]total[/]", str(summary.materializations), str(summary.failures), f"[bold]{summary.events}[/]"
    )
    if summary.events:
        console.print(table)
    if since_start:
        console.print(
            f"{summary.events} events written to {escape(config.events_file.as_posix())} (cursor unchanged)"
        )
    elif summary.events:
        console.print(f"cursor: storage id {summary.cursor_before} -> {summary.cursor_after}")
    else:
        console.print(f"nothing new since storage id {summary.cursor_before} ({escape(summary.target)})")


@openlineage_app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="A JSON-lines file of OpenLineage events (one event a line)."),
    spec_dir: Path | None = typer.Option(
        None,
        "--spec-dir",
        help=f"Also validate against the official JSON Schemas in this folder (OpenLineage.json and"
        f" facets/*.json; default: ${SPEC_DIR_ENV} when set).",
    ),
) -> None:
    """Validate every event of FILE; exit 1 naming each bad line and field."""
    from ml_platform.lineage.openlineage.validate import SpecSchemas, describe, validate_lines

    if not file.is_file():
        _fail(f"{file}: no such file")
    folder = spec_dir or (Path(os.environ[SPEC_DIR_ENV]) if os.environ.get(SPEC_DIR_ENV) else None)
    spec: Any = None
    if folder is not None:
        try:
            spec = SpecSchemas(folder)
        except (OSError, ValueError) as exc:
            _fail(f"cannot read the OpenLineage schemas in {folder}: {exc}")
    events = bad = 0
    for number, event, problems in validate_lines(file):
        events += 1
        if spec is not None and event is not None:
            problems = problems + [f"(official schema) {p}" for p in spec.problems(event)]
        if problems:
            bad += 1
            console.print(f"[red]line {number}[/] ({escape(describe(event))}):", soft_wrap=True)
            for problem in problems:
                console.print(f"  {escape(problem)}", soft_wrap=True)
    against = "openlineage-python's model and the ml_platform facet schemas" + (
        f", and the official schemas in {folder}" if folder is not None else ""
    )
    if bad:
        console.print(f"[red]{bad} of {events} events invalid[/] (checked against {escape(against)})")
        raise typer.Exit(1)
    if not events:
        _fail(f"{file}: no events")
    console.print(f"[green]{events} events valid[/] (checked against {escape(against)})")


def _open() -> tuple[Any, Any]:
    from ml_platform.instance import open_instance
    from ml_platform.settings import PlatformSettings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            settings = PlatformSettings()
        except ValueError as exc:  # pydantic's ValidationError: which setting, and why
            _fail(f"invalid settings: {exc}")
        return open_instance(settings), settings


def asset_partitions(settings: Any) -> Any:
    from ml_platform.definitions import build_definitions
    from ml_platform.lineage.openlineage.export import partitions_of

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return partitions_of(build_definitions(settings))


def _fail(message: str) -> NoReturn:
    console.print(f"[red]{escape(message)}[/]", soft_wrap=True)
    raise typer.Exit(1)
