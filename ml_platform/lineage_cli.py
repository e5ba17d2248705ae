"""``mlp lineage`` and ``mlp impact``: the recorded chain behind a served model, and what a raw day reached.

* ``mlp lineage <start>`` prints deployment -> Bento -> model version (alias history, approvals,
  evaluations) -> MLflow run -> feature -> validated -> raw partitions as a tree, with code versions
  and git commits at each hop, the links that were not recorded, and the cross-checks between
  records (Dagster vs. MLflow vs. the audit log). ``--json PATH`` writes the same chain as JSON
  (``-``: JSON on stdout, no tree).
* ``mlp impact <day or range>`` lists every validated and feature partition, model version,
  evaluation, Bento and deployment recorded as derived from raw partitions.

The Python API is :mod:`ml_platform.lineage` (docs/lineage.md).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

if TYPE_CHECKING:
    from ml_platform.lineage.model import (
        CheckResult,
        ImpactedPartition,
        ImpactReport,
        LineageChain,
        Materialization,
        Missing,
        PartitionNode,
    )

console = Console(width=None if sys.stdout.isatty() else 150)
#: Partitions shown per layer without ``--all``: the first ones and the last ones.
HEAD, TAIL = 3, 2


def lineage(
    start: str = typer.Argument(
        ...,
        help="A Bento tag (delay_service:v3-...), a registry alias (champion), a model version (3),"
        " a prediction request id, or 'deployment' (the Bento the deployment serves).",
    ),
    kind: str | None = typer.Option(
        None, help="How to read START: bento, alias, version, request or deployment (default: guessed)."
    ),
    json_out: str | None = typer.Option(
        None, "--json", help="Also write the chain as JSON to this path ('-': JSON on stdout, no tree)."
    ),
    show_all: bool = typer.Option(
        False, "--all", help="List every partition (default: the first and last few of each layer)."
    ),
) -> None:
    """The recorded lineage of a served model: deployment -> Bento -> model version -> MLflow run -> data."""
    from ml_platform.lineage import LineageError, to_json, trace
    from ml_platform.lineage.model import START_KINDS

    if kind is not None and kind not in START_KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(START_KINDS)}", param_hint="--kind")
    instance, settings = _open()
    try:
        chain = trace(instance, settings, start, kind=kind)
    except LineageError as exc:
        _fail(str(exc))
    except Exception as exc:  # a store that cannot be read: say which, without a traceback
        _fail(f"cannot trace {start!r}: {type(exc).__name__}: {exc}")
    _show(to_json(chain), json_out, lambda: chain_tree(chain, show_all))


def impact(
    target: str = typer.Argument(
        ...,
        help="A raw day (2013-01-10), a range (2013-01-10..2013-01-12), one raw asset's partitions"
        " (raw_weather[2013-01-10]), or a model version (v3).",
    ),
    asset: list[str] = typer.Option(
        [], help="Raw asset(s) of a bare day or range (raw_flights, raw_weather; default: both)."
    ),
    json_out: str | None = typer.Option(
        None, "--json", help="Also write the report as JSON to this path ('-': JSON on stdout, no tree)."
    ),
    show_all: bool = typer.Option(
        False, "--all", help="List every partition (default: the first and last few of each layer)."
    ),
) -> None:
    """What raw partitions reached: validated and feature partitions, model versions, Bentos, deployments."""
    from ml_platform.lineage import LineageError, impact, to_json

    instance, settings = _open()
    try:
        report = impact(instance, settings, target, assets=asset or None)
    except LineageError as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"cannot trace the impact of {target!r}: {type(exc).__name__}: {exc}")
    _show(to_json(report), json_out, lambda: _impact_tree(report, show_all))


def evidence(
    model_version: str = typer.Argument(
        ..., help="A model version (3 or v3) or a registry alias (champion, challenger)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write the bundle into (default: <storage>/evidence/)."
    ),
) -> None:
    """The evidence bundle of a model version: one self-contained HTML file and the same content as JSON."""
    from ml_platform.lineage import LineageError
    from ml_platform.lineage.evidence import build_evidence, write_evidence

    instance, settings = _open()
    try:
        bundle = build_evidence(instance, settings, model_version)
    except LineageError as exc:
        _fail(f"{model_version!r} is not a known model version or alias: {exc}")
    except Exception as exc:  # a store that cannot be read: say which, without a traceback
        _fail(f"cannot build the evidence of {model_version!r}: {type(exc).__name__}: {exc}")
    html_path, json_path = write_evidence(
        bundle, out if out is not None else settings.storage_root / "evidence"
    )
    on_path = [m for m in bundle.missing if m.get("on_path")]
    status = (
        "[green]lineage complete[/]"
        if bundle.complete
        else f"[red]lineage incomplete[/] ({len(on_path)} missing link(s),"
        f" {sum(not c['ok'] for c in bundle.consistency)} disagreement(s))"
    )
    console.print(
        f"Evidence of {escape(bundle.model['name'])} v{escape(bundle.model['version'])}: {status}",
        soft_wrap=True,
    )
    typer.echo(f"HTML: {html_path}")
    typer.echo(f"JSON: {json_path}")


def reproduce(
    model_version: str = typer.Argument(
        ..., help="A model version (3 or v3) or a registry alias (champion, challenger)."
    ),
    tolerance: float = typer.Option(0.01, help="Largest relative difference allowed per metric (0.01: 1 %)."),
    allow_code_change: bool = typer.Option(
        False,
        "--allow-code-change",
        help="Reproduce with this checkout's training code even if it differs from the recorded code"
        " version (measures what the code change does to the same data).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the reproduced weights and report (default: <storage>/lineage/reproduce/).",
    ),
    json_out: str | None = typer.Option(
        None, "--json", help="Also write the report as JSON to this path ('-': JSON on stdout, no table)."
    ),
) -> None:
    """Train a model version again from its recorded pins, configuration and code; compare its metrics.

    Exits 0 when every recorded metric is reproduced within the tolerance, 1 otherwise.
    """
    from rich.table import Table

    from ml_platform.lineage.reproduce import ReproduceError, report_rows
    from ml_platform.lineage.reproduce import reproduce as run_reproduce

    instance, settings = _open()
    err = Console(stderr=True)
    say = (
        (lambda m: err.print(escape(m), soft_wrap=True))
        if json_out == "-"
        else (lambda m: console.print(escape(m), soft_wrap=True))
    )
    try:
        report = run_reproduce(
            instance,
            settings,
            model_version,
            tolerance=tolerance,
            allow_code_change=allow_code_change,
            out_dir=out,
            log=say,
        )
    except ReproduceError as exc:
        _fail(str(exc))
    except Exception as exc:  # a store that cannot be read: say which, without a traceback
        _fail(f"cannot reproduce {model_version!r}: {type(exc).__name__}: {exc}")
    data = report.to_dict()
    if json_out == "-":
        typer.echo(json.dumps(data, indent=2, default=str))
        raise typer.Exit(0 if report.within_tolerance else 1)
    table = Table(
        title=f"{report.model_name} v{report.version} reproduced ({report.training_materialization})"
    )
    for column in ("metric", "original", "reproduced", "difference", "verdict"):
        table.add_column(column)
    for row in report_rows(report):
        table.add_row(*(escape(c) for c in row))
    console.print(table)
    digest = (
        "[green]identical[/]"
        if report.weights_identical
        else f"[yellow]differ[/] (recorded {_short(report.original_weights_digest)},"
        f" reproduced {_short(report.reproduced_weights_digest)})"
    )
    console.print(
        f"weights: {digest}; code version {escape(report.current_code_version)}"
        + (" (as recorded)" if report.code_matches else " [yellow](not the recorded one)[/]")
    )
    console.print(
        f"read {len(report.pins)} pinned partitions"
        + (f"; changed since and not read: {', '.join(report.changed_since)}" if report.changed_since else "")
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    verdict = (
        f"[green]reproduced within {tolerance:.2%}[/]"
        if report.within_tolerance
        else f"[red]not reproduced within {tolerance:.2%}[/]"
    )
    console.print(f"{verdict} in {report.seconds:.0f} s; report and weights: {escape(str(report.artifacts))}")
    if json_out:
        _write(json_out, data)
    if not report.within_tolerance:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ helpers


def _open() -> tuple[Any, Any]:
    from ml_platform.instance import open_instance
    from ml_platform.settings import PlatformSettings

    with warnings.catch_warnings():  # Dagster's preview/beta notes about the partition mappings
        warnings.simplefilter("ignore")
        settings = PlatformSettings()
        return open_instance(settings), settings


def _fail(message: str) -> NoReturn:
    console.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(1)


def _show(data: Any, json_out: str | None, tree: Callable[[], Tree]) -> None:
    """JSON on stdout for ``--json -``; else the tree, and the JSON file ``--json PATH`` asks for."""
    if json_out == "-":
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    console.print(tree())
    if json_out:
        _write(json_out, data)


def _write(path: str, data: Any) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, default=str) + "\n")
    console.print(f"JSON: {target}")


def _short(value: str | None, n: int = 12) -> str:
    return "-" if not value else value[:n]


def _code(mat: Materialization) -> str:
    commit = mat.git_commit if mat.git_commit is not None else "[yellow]not recorded[/]"
    return f"code {_short(mat.code_version, 8)}  git {commit}"


def _mat(mat: Materialization) -> str:
    return f"{mat.label} run {_short(mat.run_id, 8)}  {_code(mat)}"


def _checks(results: Sequence[CheckResult]) -> str:
    if not results:
        return "checks: [yellow]none recorded[/]"
    failed = [c for c in results if c.passed is False]
    if not failed:
        return f"checks {len(results)}/{len(results)} [green]passed[/]"
    names = ", ".join(f"{c.name} ({(c.severity or '').lower()})" for c in failed)
    return f"checks {len(results) - len(failed)}/{len(results)} passed, [red]failed: {names}[/]"


def _missing(gap: Missing) -> str:
    text = f"[red]MISSING[/] {escape(gap.hop)}: {escape(gap.reason)} [dim]({escape(gap.ref)})[/]"
    if gap.candidates:
        text += f"\n[dim]recorded candidates, not followed: {escape(', '.join(gap.candidates))}[/]"
    return text


def _shown(items: Sequence[Any], show_all: bool) -> list[Any]:
    if show_all or len(items) <= HEAD + TAIL + 1:
        return list(items)
    return [*items[:HEAD], None, *items[-TAIL:]]


def _partition_line(node: PartitionNode) -> str:
    s = node.storage
    mat = node.materialization
    text = (
        f"{mat.label}  {s.where}  data {_short(s.content_hash)}  rows {s.row_count}"
        f"  run {_short(mat.run_id, 8)}  {_code(mat)}"
    )
    if node.quality:
        rows = node.quality.get("quality/quarantined_rows")
        share = node.quality.get("quality/quarantine_share")
        text += f"  quarantined {rows}" + (f" ({float(share):.1%})" if share is not None else "")
    if node.checks or mat.asset.startswith(("validated_", "flight_features")):
        text += f"  {_checks(node.checks)}"
    if node.source:
        text += (
            f"  source {escape(str(node.source.get('file')))} sha256 {_short(str(node.source.get('sha256')))}"
        )
    if node.upstream:
        counts: dict[str, int] = {}
        for ref in node.upstream:
            table = ref.split("[")[0]
            counts[table] = counts.get(table, 0) + 1
        text += "  [dim]<- " + ", ".join(f"{n} {t}" for t, n in counts.items()) + "[/]"
    return text


def _layer(parent: Tree, title: str, nodes: Sequence[PartitionNode | Missing], show_all: bool) -> None:
    from ml_platform.lineage.model import Missing

    branch = parent.add(f"[bold]{title}[/] ({len(nodes)})")
    if not nodes:
        branch.add("[yellow]none[/]")
    for node in _shown(nodes, show_all):
        if node is None:
            branch.add(f"[dim]… {len(nodes) - HEAD - TAIL} more (--all, or --json)[/]")
        elif isinstance(node, Missing):
            branch.add(_missing(node))
        else:
            branch.add(_partition_line(node))


def _online_features(root: Tree, chain: LineageChain) -> None:
    """The request's hop to the ``online_features`` materialization(s) whose snapshot answered it."""
    from ml_platform.lineage.model import Missing
    from ml_platform.lineage.trace import RequestChain

    if not isinstance(chain, RequestChain):
        return
    for hop in chain.online_features:
        if isinstance(hop, Missing):
            root.add(_missing(hop))
            continue
        stale = (
            f"  [yellow]stale: {hop.stale_lines} of {len(hop.lines)} line(s)[/]" if hop.stale_lines else ""
        )
        node = root.add(
            f"[bold]online features[/] {_mat(hop.materialization)}  snapshot {_short(hop.content_hash)}"
            f" as of {hop.aggregates_as_of}, written {hop.written_at}"
            f"{'' if hop.served is not False else ' [yellow](recorded as not served)[/]'}{stale}"
            f"\n[dim]answered {', '.join(escape(x) for x in hop.lines)}[/]"
        )
        for entry in hop.upstream:
            node.add(
                f"[dim]<- {entry.get('table')}[{entry.get('partition')}]"
                f" v{entry.get('table_version')} data {_short(str(entry.get('content_hash')))}[/]"
            )
        if hop.same_content_also:
            node.add(f"[dim]same content also recorded by {', '.join(hop.same_content_also)}[/]")


def chain_tree(chain: LineageChain, show_all: bool) -> Tree:
    from ml_platform.lineage.model import DeploymentHop, Missing, ModelHop, RunHop

    on_path = [m for m in chain.missing if m.on_path]
    status = (
        "[green]complete[/]"
        if chain.complete
        else f"[red]incomplete[/]: {len(on_path)} missing link(s),"
        f" {sum(not c.ok for c in chain.consistency)} disagreement(s)"
    )
    root = Tree(
        f"[bold]Lineage of {escape(chain.start.value)}[/] ({chain.start.kind})"
        f" -> {escape(chain.start.resolved)}  {status}"
    )
    if chain.prediction is not None:
        p = chain.prediction
        node = root.add(f"[bold]request[/] {escape(p.request_id)}  [dim]{escape(p.found_in)}[/]")
        for line in p.lines:
            req = line.request
            collected = (
                f"collected by {', '.join(line.collected_by)}"
                + ("" if line.collected_sha256_ok is not False else " [red](file changed since)[/]")
                if line.collected_by
                else "[yellow]not collected into prediction_log yet[/]"
            )
            node.add(
                f"{line.flight_day}/{escape(line.file)}:{line.line}  {req.get('carrier')} {req.get('flight')}"
                f" {req.get('origin')}-{req.get('dest')} {req.get('scheduled_departure')}"
                f"  -> delay {line.prediction.get('predicted_arr_delay')} min,"
                f" P {line.prediction.get('delay_probability')}  by {line.model_name} v{line.model_version}"
                f"  {collected}"
            )
    _online_features(root, chain)
    if isinstance(chain.served_by, Missing):
        root.add(_missing(chain.served_by))
    elif chain.served_by is not None:
        root.add(f"served by Bento {escape(chain.served_by)}")
    if isinstance(chain.deployment, Missing):
        root.add(_missing(chain.deployment))
    elif isinstance(chain.deployment, DeploymentHop):
        _deployment(root, chain.deployment)
    if not chain.bentos:
        root.add("[bold]bento[/]: [yellow]no delay_bento build of this version was recorded[/]")
    for bento in chain.bentos:
        node = root.add(
            f"[bold]bento[/] {escape(bento.tag)}  {_mat(bento.materialization)}"
            f"\nbuilt {bento.built_at}{' (reused)' if bento.reused else ''},"
            f" model tag {bento.bento_model_tag}, lock sha256 {_short(bento.lock_sha256)},"
            f" aliases at build: {', '.join(bento.aliases_at_build) or '-'}"
        )
        for entry in bento.upstream:
            node.add(
                f"[dim]<- {entry.get('asset')}[{entry.get('partition')}]"
                f" run {_short(str(entry.get('run_id')), 8)}"
                + "".join(f" {k}={entry[k]}" for k in ("model_version", "decision", "passed") if k in entry)
                + "[/]"
            )
        if bento.also_built_by:
            node.add(f"[dim]same tag also recorded by {', '.join(bento.also_built_by)}[/]")
    if isinstance(chain.model, Missing):
        root.add(_missing(chain.model))
    elif isinstance(chain.model, ModelHop):
        _model(root, chain.model)
    if isinstance(chain.mlflow_run, Missing):
        root.add(_missing(chain.mlflow_run))
    elif isinstance(chain.mlflow_run, RunHop):
        run = chain.mlflow_run
        tags = run.tags
        metrics = "  ".join(
            f"{k}={v:.4g}" for k, v in sorted(run.metrics.items()) if k.startswith(("holdout_", "baseline_"))
        )
        params = "  ".join(
            f"{k}={run.params[k]}"
            for k in (
                "lr",
                "hidden",
                "layers",
                "dropout",
                "embedding_dim",
                "max_epochs",
                "hpo_trials",
                "seed",
            )
            if k in run.params
        )
        node = root.add(
            f"[bold]MLflow run[/] {run.run_id}  {run.status}"
            f"  (Dagster run {_short(tags.get('dagster.run_id'), 8)},"
            f" {tags.get('dagster.asset_key')}[{tags.get('dagster.partition')}],"
            f" code {_short(tags.get('dagster.code_version'), 8)},"
            f" git {tags.get('git.commit', '[yellow]not recorded[/]')})"
        )
        node.add(f"params: {params or '-'}")
        node.add(f"metrics: {metrics or '-'}")
        node.add(
            f"{len(run.datasets)} dataset inputs (feature partitions with table version and data version)"
        )
    _layer(root, "feature partitions (training window)", chain.features, show_all)
    _layer(root, "validated partitions", chain.validated, show_all)
    _layer(root, "raw partitions", chain.raw, show_all)
    if chain.missing:
        node = root.add(f"[bold]not recorded[/] ({len(chain.missing)})")
        for gap in chain.missing:
            node.add(_missing(gap) + ("" if gap.on_path else " [dim](beside the chain)[/]"))
    disagree = [c for c in chain.consistency if not c.ok]
    node = root.add(
        f"[bold]cross-checks[/]: {len(chain.consistency) - len(disagree)}/{len(chain.consistency)} agree"
        " (Dagster records vs. MLflow run, registry and audit log)"
    )
    for c in disagree:
        node.add(f"[red]{escape(c.name)}[/]: {escape(c.detail)}")
    return root


def _deployment(root: Tree, hop: Any) -> None:
    if hop.desired_generation is None:
        head = f"[bold]deployment[/]: nothing deployed ({hop.desired_path})"
    else:
        head = (
            f"[bold]deployment[/] desired state generation {hop.desired_generation} ({hop.desired_mode},"
            f" by {escape(str(hop.desired_requested_by))} at {hop.desired_requested_at})"
        )
    node = root.add(head)
    if hop.desired_generation is not None and not hop.roles:
        node.add("[dim]the current desired state serves none of these Bentos[/]")
    for role in hop.roles:
        node.add(
            f"now {role.role}: {escape(role.bento_tag)} (v{role.model_version},"
            f" built by delay_bento[{role.bento_partition}] run {_short(role.bento_run_id, 8)})"
        )
    for tag in hop.rolled_back:
        node.add(f"[yellow]rolled back before: {escape(tag)}[/]")
    for m in hop.materializations:
        node.add(
            f"{m.materialization.id} run {_short(m.materialization.run_id, 8)}: generation {m.generation},"
            f" {m.role} {escape(str(m.bento_tag))}, applied: {m.applied}  {_code(m.materialization)}"
        )
    verified = {
        True: "hash chain verified",
        False: f"[red]does not verify: {hop.log_error}[/]",
        None: "empty",
    }
    log = node.add(
        f"deployment log ({verified[hop.log_verified]}): {len(hop.events)} event(s) name these Bentos"
    )
    for e in hop.events:
        log.add(
            f"{e.occurred_at[:19]} {e.action} {escape(str(e.bento_tag))} (v{e.model_version}) mode {e.mode}"
            f" share {e.share:g} by {escape(e.actor)}: {escape(e.reason)}"
        )


def _model(root: Tree, model: Any) -> None:
    if model.materialization is None:
        head = (
            f"[bold]model[/] {model.model_name} v{model.version}  [yellow]no delay_model materialization[/]"
        )
    else:
        head = (
            f"[bold]model[/] {model.model_name} v{model.version}  {_mat(model.materialization)}"
            f"\nwindow {model.training_window}, weights {_short(model.weights_digest)},"
            f" aliases now: {', '.join(model.aliases_now) or 'none'}"
        )
    node = root.add(head)
    verified = (
        "hash chain verified"
        if model.audit_verified
        else f"[red]does not verify: {model.audit_error}[/]"
        if model.audit_verified is False
        else "not checked"
    )
    history = node.add(f"alias history ({len(model.alias_history)} audit events, {verified})")
    approved = {a.event_id for a in model.approvals}
    for e in model.alias_history:
        moved = f"{e.alias} {e.previous_version or 'none'} -> {e.version}" if e.alias else f"v{e.version}"
        history.add(
            f"{e.occurred_at[:19]} {e.action} {moved} by {escape(e.actor)}: {escape(e.reason)}"
            + ("  [green](approval)[/]" if e.event_id in approved else "")
        )
    for ev in model.evaluations:
        gates = ", ".join(f"{g['name']} {'passed' if g['passed'] else 'FAILED'}" for g in ev.gates)
        node.add(
            f"evaluation {_mat(ev.materialization)}: "
            + ("[green]passed[/]" if ev.passed else "[red]failed[/]")
            + f" ({gates}); holdout {ev.holdout}; champion then: {ev.champion_version}"
        )
    for p in model.promotions:
        node.add(
            f"promotion {_mat(p.materialization)}: {p.decision}"
            f" (champion {p.champion_before} -> {p.champion_after}); audit event {_short(p.audit_event)}"
        )


def _impact_line(item: ImpactedPartition) -> str:
    s = item.storage
    mat = item.materialization
    return (
        f"{mat.label}  {s.where}  data {_short(s.content_hash)}  run {_short(mat.run_id, 8)}  {_code(mat)}"
        + (f"  [dim]<- {len(item.read)} impacted upstream version(s)[/]" if item.read else "")
    )


def _impact_tree(report: ImpactReport, show_all: bool) -> Tree:
    root = Tree(
        f"[bold]Impact of model version v{report.model_version}[/]"
        if report.model_version is not None
        else f"[bold]Impact of {', '.join(report.assets)} {report.partitions[0]}..{report.partitions[-1]}[/]"
    )
    for title, items in (
        ("raw partition versions", report.raw),
        ("validated partitions", report.validated),
        ("feature partitions", report.features),
        ("feature profiles", report.profiles),
        ("online feature snapshots", report.online_features),
        ("batch predictions", report.predictions),
        ("drift reports", report.drift_reports),
        ("live performance days", report.performance),
    ):
        branch = root.add(f"[bold]{title}[/] ({len(items)})")
        if not items:
            branch.add("[dim]none[/]")
        for item in _shown(items, show_all):
            branch.add(f"[dim]… {len(items) - HEAD - TAIL} more[/]" if item is None else _impact_line(item))
    branch = root.add(f"[bold]model versions trained on it[/] ({len(report.models)})")
    if not report.models:
        branch.add("[dim]none[/]")
    for m in report.models:
        aliases = "unknown" if m.aliases_now is None else ", ".join(m.aliases_now) or "none"
        branch.add(
            f"{m.model_name} v{m.version}  {_mat(m.materialization)}  MLflow run {_short(m.mlflow_run_id)}"
            f"  aliases now: {aliases}  [dim]<- {len(m.read)} impacted feature version(s)[/]"
        )
    branch = root.add(f"[bold]evaluations whose holdout read it[/] ({len(report.evaluations)})")
    if not report.evaluations:
        branch.add("[dim]none[/]")
    for e in report.evaluations:
        branch.add(
            f"{_mat(e.materialization)}  judged v{e.model_version}: {'passed' if e.passed else 'failed'}"
        )
    branch = root.add(f"[bold]Bentos[/] ({len(report.bentos)})")
    if not report.bentos:
        branch.add("[dim]none[/]")
    for b in report.bentos:
        branch.add(
            f"{escape(str(b.tag))} ({b.model_name} v{b.model_version})  {_mat(b.materialization)}"
            f"  via {' and '.join(b.via)}"
        )
    dep = report.deployment
    branch = root.add("[bold]deployment[/]")
    if dep is None or not (dep.roles or dep.events or dep.materializations):
        branch.add("[dim]no impacted Bento was deployed[/]")
    else:
        for role in dep.roles:
            branch.add(f"[red]now {role.role}[/]: {escape(role.bento_tag)} (v{role.model_version})")
        for ref in dep.materializations:
            branch.add(
                f"{ref.materialization.id}: generation {ref.generation},"
                f" {ref.role} {escape(str(ref.bento_tag))}"
            )
        for event in dep.events:
            branch.add(
                f"log: {event.occurred_at[:19]} {event.action} {escape(str(event.bento_tag))}"
                f" by {escape(event.actor)}"
            )
    if report.not_materialized:
        root.add(f"[yellow]never materialized[/]: {', '.join(report.not_materialized)}")
    for note in report.notes:
        root.add(f"[yellow]{escape(note)}[/]")
    return root
