"""Export the Dagster instance's materializations as OpenLineage run events.

:func:`export_openlineage` reads what is new since the target's cursor, in batches of storage ids
(one query per asset and page, never one per partition):

1. the materializations of every asset and the run failures, after the cursor and up to the event
   log's newest id at the start;
2. their runs (job, tags, start time), and each run's step starts, step failures and check
   evaluations (one paged query per run); of a failed run also what it planned and materialized, so
   each asset a failed step did not materialize becomes a FAIL (Dagster's open-source storages keep
   no ``ASSET_FAILED_TO_MATERIALIZE`` events);
3. the materializations their ``lineage/upstream`` entries name: a pin resolves to the
   materialization that recorded exactly that pin before the reader
   (:class:`~ml_platform.lineage.records.PinIndex`), a run reference to that run's materialization of
   that partition. Inputs come only from these recorded entries, never from "the latest";
4. the registry audit-log events they name (approvals: actor, time, hash).

Each materialization becomes a START and a COMPLETE event, each failed asset a START and a FAIL
(:mod:`.events`). Every event is
validated (:mod:`.validate`) before anything of the batch is emitted; an invalid one raises
:class:`~.validate.OpenLineageValidationError` naming the asset, partition, run and field, after the
events *before* it were emitted, and nothing after it is. The cursor moves only past what was
emitted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster import DagsterEventType

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import Missing
from ml_platform.lineage.openlineage.config import OpenLineageConfig
from ml_platform.lineage.openlineage.cursor import locked, read_cursor, write_cursor
from ml_platform.lineage.openlineage.events import (
    AuditRecord,
    Check,
    DatasetRef,
    Recorded,
    Upstream,
    build_events,
)
from ml_platform.lineage.openlineage.validate import OpenLineageValidationError, validate_event

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent
    from openlineage.client.transport import Transport

RUN_CHUNK = 100
_RUN_EVENT_TYPES = {
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.ASSET_CHECK_EVALUATION,
}
_FAILED_RUN_EVENT_TYPES = {
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    DagsterEventType.ASSET_MATERIALIZATION,
}


class OpenLineageExportError(RuntimeError):
    """An event could not be emitted, or what it must carry could not be read; the message names the
    materialization and the target (or the store that could not be read)."""


@dataclass
class ExportSummary:
    """What one export did."""

    target: str
    #: The cursor (storage id) before and after; ``since_start`` exports leave the cursor as it is.
    cursor_before: int
    cursor_after: int
    materializations: int = 0
    failures: int = 0
    events: int = 0
    #: asset -> {"materializations": n, "failures": n, "events": n}
    by_asset: dict[str, dict[str, int]] = field(default_factory=dict)
    #: More is waiting: the export stopped after ``max_batches``.
    more: bool = False

    def count(self, asset: str, kind: str, events: int) -> None:
        row = self.by_asset.setdefault(asset, {"materializations": 0, "failures": 0, "events": 0})
        row["failures" if kind == "failure" else "materializations"] += 1
        row["events"] += events
        if kind == "failure":
            self.failures += 1
        else:
            self.materializations += 1
        self.events += events


def partitions_of(
    defs: dg.Definitions | dg.RepositoryDefinition | None,
) -> dict[str, dg.PartitionsDefinition]:
    """Each asset's partitions definition (the nominal time of a partition comes from it)."""
    if defs is None:
        return {}
    graph = defs.resolve_asset_graph() if isinstance(defs, dg.Definitions) else defs.asset_graph
    out = {}
    for key in graph.get_all_asset_keys():
        partitions_def = graph.get(key).partitions_def
        if partitions_def is not None:
            out[key.to_user_string()] = partitions_def
    return out


def export_openlineage(
    instance: dg.DagsterInstance,
    config: OpenLineageConfig,
    transport: Transport | None = None,
    *,
    partitions: Mapping[str, dg.PartitionsDefinition] | None = None,
    since_start: bool = False,
    batch_size: int = 500,
    max_batches: int | None = None,
    lock_timeout_s: float = 30.0,
) -> ExportSummary:
    """Emit the OpenLineage events of every materialization recorded after the target's cursor.

    Args:
        instance: The Dagster instance whose event log is exported.
        config: Where and how to export (:meth:`OpenLineageConfig.from_settings`).
        transport: Where events go; default: the one the configuration names.
        partitions: Asset -> partitions definition, for the nominal time of partitions (default:
            none). The caller that has the Definitions gives them (:func:`partitions_of`: the
            sensor its repository, ``mlp openlineage export`` the Definitions of the settings), so
            this module never imports :mod:`ml_platform.definitions`, which imports it (issue #16).
        since_start: Export everything from the first event and leave the cursor as it is (a full
            re-export, e.g. into a new file).
        batch_size: Dagster events read and emitted per batch.
        max_batches: Stop after this many batches (``summary.more`` says more is waiting).
        lock_timeout_s: How long to wait for another export to finish.

    Raises:
        OpenLineageValidationError: an event does not validate (what came before it was emitted).
        OpenLineageExportError: the transport failed (what came before it was emitted), or the
            registry's audit log that approvals name cannot be read (nothing of that batch is emitted).
        ExportBusy: another export held the lock for ``lock_timeout_s``.
    """
    partitions = partitions or {}
    if transport is None:
        from ml_platform.lineage.openlineage.transport import make_transport

        transport = make_transport(config)
    with locked(config.lock_file, lock_timeout_s):
        start = 0 if since_start else read_cursor(config.cursor_file, config.target)
        summary = ExportSummary(target=config.target, cursor_before=start, cursor_after=start)
        try:
            batches = 0
            while True:
                records, more = _fetch(instance, summary.cursor_after, batch_size)
                if not records:
                    break
                _export_batch(instance, config, partitions, transport, records, summary)
                batches += 1
                if not more:
                    break
                if max_batches is not None and batches >= max_batches:
                    summary.more = True
                    break
        finally:
            if not since_start and summary.cursor_after > start:
                write_cursor(config.cursor_file, config.target, summary.cursor_after, summary.events)
    return summary


# ------------------------------------------------------------------------------------------- reading


def _fetch(instance: dg.DagsterInstance, after: int, batch_size: int) -> tuple[list[dg.EventLogRecord], bool]:
    """The first ``batch_size`` materializations (of any asset) and run failures after ``after``.

    Bounded by the event log's newest id when it starts, so an event committed meanwhile by an asset
    already read cannot be skipped by the cursor moving past it. Each asset's first ``batch_size``
    records are read (one query each), and the first ``batch_size`` run failures; their union holds
    the first ``batch_size`` of all.
    """
    try:
        high = instance.event_log_storage.get_maximum_record_id()
    except NotImplementedError:
        high = None
    if high is not None and high <= after:
        return [], False
    before = None if high is None else high + 1
    out: list[dg.EventLogRecord] = []
    more = False
    for key in instance.get_asset_keys():
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after, before_storage_id=before),
            limit=batch_size,
            ascending=True,
        )
        out.extend(page.records)
        more = more or page.has_more
    page = instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(
            event_type=DagsterEventType.RUN_FAILURE, after_storage_id=after, before_storage_id=before
        ),
        limit=batch_size,
        ascending=True,
    )
    out.extend(page.records)
    more = more or page.has_more
    out.sort(key=lambda r: r.storage_id)
    if len(out) > batch_size:
        out, more = out[:batch_size], True
    return out, more


@dataclass(frozen=True)
class _Planned:
    """An asset (partition or range) a run planned to materialize, and the step that would."""

    step_key: str
    asset: str
    partition: str | None
    partitions: tuple[str, ...]


@dataclass
class _RunFacts:
    job_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    start_time: float | None = None
    step_starts: dict[str, float] = field(default_factory=dict)
    #: step -> (when it failed, the error)
    step_failures: dict[str, tuple[float, Any]] = field(default_factory=dict)
    checks: dict[tuple[str, str | None], list[Check]] = field(default_factory=dict)
    #: Failed runs only: what the run planned, and what it materialized.
    planned: list[_Planned] = field(default_factory=list)
    materialized: set[tuple[str, str | None]] = field(default_factory=set)


def _run_facts(
    instance: dg.DagsterInstance, run_ids: Iterable[str], failed: set[str]
) -> dict[str, _RunFacts]:
    """Job, tags and start of each run; its step starts, step failures and check evaluations; and,
    of the ``failed`` runs, what they planned and what they materialized (one paged query a run)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

    wanted = sorted(set(run_ids) | failed)
    out = {run_id: _RunFacts() for run_id in wanted}
    for i in range(0, len(wanted), RUN_CHUNK):
        for run_record in instance.get_run_records(dg.RunsFilter(run_ids=wanted[i : i + RUN_CHUNK])):
            run = run_record.dagster_run
            facts = out[run.run_id]
            facts.job_name, facts.tags, facts.start_time = run.job_name, run.tags, run_record.start_time
    for run_id, facts in out.items():
        types = _RUN_EVENT_TYPES | _FAILED_RUN_EVENT_TYPES if run_id in failed else _RUN_EVENT_TYPES
        cursor: str | None = None
        while True:
            page = instance.get_records_for_run(run_id, cursor=cursor, of_type=types, limit=rec.PAGE)
            for record in page.records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if event is None:
                    continue
                data = event.event_specific_data
                kind = event.event_type
                if kind == DagsterEventType.STEP_START and entry.step_key:
                    facts.step_starts.setdefault(entry.step_key, entry.timestamp)
                elif kind == DagsterEventType.STEP_FAILURE and entry.step_key:
                    facts.step_failures[entry.step_key] = (entry.timestamp, getattr(data, "error", None))
                elif kind == DagsterEventType.ASSET_MATERIALIZATION_PLANNED and entry.step_key:
                    plan = event.asset_materialization_planned_data
                    subset = plan.partitions_subset
                    facts.planned.append(
                        _Planned(
                            entry.step_key,
                            plan.asset_key.to_user_string(),
                            plan.partition,
                            tuple(sorted(subset.get_partition_keys())) if subset is not None else (),
                        )
                    )
                elif kind == DagsterEventType.ASSET_MATERIALIZATION:
                    mat = event.step_materialization_data.materialization
                    facts.materialized.add((mat.asset_key.to_user_string(), mat.partition))
                elif isinstance(data, AssetCheckEvaluation):
                    facts.checks.setdefault((data.asset_key.to_user_string(), data.partition), []).append(
                        Check(
                            name=data.check_name,
                            passed=bool(data.passed),
                            severity=data.severity.value if data.severity else None,
                            description=data.description,
                        )
                    )
            if not page.has_more:
                break
            cursor = page.cursor
    return out


def _checks(facts: _RunFacts, asset: str, partition: str | None) -> list[Check]:
    """The check evaluations of one materialization: those of its partition, or, in a run of that
    one partition, those recorded without a partition (a range run's are summaries, not its)."""
    found = facts.checks.get((asset, partition))
    if not found and partition is not None and facts.tags.get("dagster/partition") == partition:
        found = facts.checks.get((asset, None))
    last = {c.name: c for c in found or []}  # a retried check keeps its last evaluation
    return list(last.values())


# ------------------------------------------------------------------------------------------ batches


def _export_batch(
    instance: dg.DagsterInstance,
    config: OpenLineageConfig,
    partitions: Mapping[str, dg.PartitionsDefinition],
    transport: Transport,
    records: Sequence[dg.EventLogRecord],
    summary: ExportSummary,
) -> None:
    from openlineage.client.serde import Serde

    prepared: list[tuple[int, list[tuple[Recorded, list[RunEvent]]]]] = []
    invalid: OpenLineageValidationError | None = None
    for storage_id, recorded in _recorded(instance, config, partitions, records):
        built = []
        for one in recorded:
            events = build_events(one, config, dg.__version__)
            problems: list[str] = []
            for event in events:
                found = validate_event(json.loads(Serde.to_json(event)))
                problems += [f"{_kind(event)} event: {p}" for p in found]
            if problems:
                invalid = OpenLineageValidationError(one.label, problems)
                break
            built.append((one, events))
        if invalid is not None:
            break
        prepared.append((storage_id, built))
    for storage_id, built in prepared:
        for one, events in built:
            for event in events:
                try:
                    transport.emit(event)
                except Exception as exc:
                    raise OpenLineageExportError(
                        f"{one.label}: cannot emit its {_kind(event)} event to {summary.target}:"
                        f" {type(exc).__name__}: {exc}"
                    ) from exc
            summary.count(one.asset, one.kind, len(events))
        summary.cursor_after = storage_id
    if invalid is not None:
        raise invalid


def _recorded(
    instance: dg.DagsterInstance,
    config: OpenLineageConfig,
    partitions: Mapping[str, dg.PartitionsDefinition],
    records: Sequence[dg.EventLogRecord],
) -> Iterable[tuple[int, list[Recorded]]]:
    """Each record with everything its events need: a materialization is one :class:`Recorded`, a
    run failure one per asset (partition or range) that a failed step did not materialize."""
    failed = {r.run_id for r in records if r.asset_materialization is None}
    facts = _run_facts(instance, (r.run_id for r in records), failed)
    resolver = _Resolver(instance, config, records)
    audit, verified = _audit(config, records)
    for record in records:
        run = facts.get(record.run_id, _RunFacts())
        if record.asset_materialization is None:
            yield record.storage_id, _failures(record, run, partitions)
            continue
        entry = record.event_log_entry
        event = entry.dagster_event
        step = entry.step_key
        started = run.step_starts.get(step) if step else None
        started = started if started is not None else run.start_time
        mat = record.asset_materialization
        asset = mat.asset_key.to_user_string()
        identity = rec.materialization(record)
        meta = _plain(rec.meta_of(record))
        event_id = meta.get(keys.REGISTRY_EVENT)
        yield (
            record.storage_id,
            [
                Recorded(
                    kind="materialization",
                    asset=asset,
                    partition=mat.partition,
                    storage_id=record.storage_id,
                    run_id=record.run_id,
                    job_name=run.job_name or (event.job_name if event is not None else None),
                    step_key=step,
                    started_at=_iso(started) if started is not None else None,
                    recorded_at=_iso(record.timestamp),
                    metadata=meta,
                    schema=_schema(rec.meta_of(record)),
                    code_version=identity.code_version,
                    code_version_from=identity.code_version_from,
                    git_commit=identity.git_commit,
                    data_version=identity.data_version,
                    output=output_ref(asset, meta, record.storage_id, config),
                    upstream=resolver.upstream(record),
                    checks=_checks(run, asset, mat.partition),
                    nominal=_nominal(partitions.get(asset), mat.partition),
                    audit=audit.get(str(event_id)) if event_id is not None else None,
                    audit_verified=verified,
                )
            ],
        )


def _failures(
    record: dg.EventLogRecord, run: _RunFacts, partitions: Mapping[str, dg.PartitionsDefinition]
) -> list[Recorded]:
    """The assets a failed run's failed steps planned and did not materialize.

    Dagster's open-source storages do not keep ``ASSET_FAILED_TO_MATERIALIZE`` events, so a failure
    is read from the run: its ``RUN_FAILURE``, the steps that failed (``STEP_FAILURE``: when, and the
    error), what those steps planned (``ASSET_MATERIALIZATION_PLANNED``: asset and partition or
    range) and what the run did materialize. An asset skipped because its upstream failed is not a
    failure (its step never ran); a range that was partly published fails for the rest.
    """
    out = []
    for planned in run.planned:
        failure = run.step_failures.get(planned.step_key)
        if failure is None:
            continue
        failed_at, error = failure
        if planned.partitions:
            missing = [p for p in planned.partitions if (planned.asset, p) not in run.materialized]
            if not missing:
                continue
            partition = None
            first, last = planned.partitions[0], planned.partitions[-1]
            window = (
                _nominal(partitions.get(planned.asset), first),
                _nominal(partitions.get(planned.asset), last),
            )
            nominal = (window[0][0], window[1][1]) if window[0] and window[1] else None
            where = (
                f" (a run over {first}..{last}: {len(missing)} of {len(planned.partitions)} partitions"
                f" not materialized, from {missing[0]})"
            )
        else:
            if (planned.asset, planned.partition) in run.materialized:
                continue
            partition = planned.partition
            nominal = _nominal(partitions.get(planned.asset), partition)
            where = ""
        message = getattr(error, "message", None) or "no error recorded"
        started = run.step_starts.get(planned.step_key, run.start_time)
        out.append(
            Recorded(
                kind="failure",
                asset=planned.asset,
                partition=partition,
                storage_id=record.storage_id,
                run_id=record.run_id,
                job_name=run.job_name,
                step_key=planned.step_key,
                started_at=_iso(started) if started is not None else None,
                recorded_at=_iso(failed_at),
                nominal=nominal,
                error_message=f"step {planned.step_key} failed{where}: {message.strip()}",
                error_stack="".join(getattr(error, "stack", None) or []) or None,
            )
        )
    return out


def _kind(event: RunEvent) -> str:
    return event.eventType.value if event.eventType is not None else "?"


# ---------------------------------------------------------------------------------------- datasets


def output_ref(asset: str, meta: Mapping[str, Any], storage_id: int, config: OpenLineageConfig) -> DatasetRef:
    """The dataset a materialization wrote, named by what it recorded.

    * a table (``storage/table_uri``): ``file`` + its absolute path (Delta), ``lakefs://<host>`` +
      ``<repo>/<main branch>/<path>`` (lakeFS); version: the table version or the lakeFS commit;
    * a registered model (``mlflow/model_uri``, or a promotion's ``registry/decision``): the MLflow
      registry URI + the model's name; version: the model version;
    * a Bento (``bento/tag`` and ``bento/path``): ``bentoml`` + the Bento's name; version: its version;
    * anything else (an evaluation, a deployment): ``dagster://<namespace>`` + the asset; version: the
      materialization's storage id.
    """
    uri = meta.get(keys.STORAGE_URI)
    if uri:
        namespace, name = table_name(str(uri), config)
        version = meta.get(keys.STORAGE_TABLE_VERSION)
        commit = meta.get(keys.STORAGE_COMMIT)
        return DatasetRef(
            namespace, name, str(version) if version is not None else (str(commit) if commit else None)
        )
    if (
        keys.MLFLOW_MODEL_URI in meta or keys.REGISTRY_DECISION in meta
    ) and keys.MLFLOW_MODEL_VERSION in meta:
        name = str(meta.get(keys.MLFLOW_MODEL_NAME) or config.model_name)
        return DatasetRef(config.model_namespace, name, str(meta[keys.MLFLOW_MODEL_VERSION]))
    if keys.BENTO_TAG in meta and keys.BENTO_PATH in meta:
        bento, _, version = str(meta[keys.BENTO_TAG]).partition(":")
        return DatasetRef("bentoml", bento, version or None)
    return DatasetRef(config.asset_namespace, asset, str(storage_id))


def table_name(uri: str, config: OpenLineageConfig) -> tuple[str, str]:
    """(namespace, name) of a table by the OpenLineage naming conventions."""
    if uri.startswith("lakefs://"):
        repo, _, rest = uri.removeprefix("lakefs://").partition("/")
        _branch, _, path = rest.partition("/")  # the run's branch: what it publishes lands on main
        return config.lakefs_namespace, f"{repo}/{config.lakefs_main_branch}/{path.strip('/')}"
    from openlineage.client.naming.dataset import LocalFileSystem

    path = uri.removeprefix("file://")
    naming = LocalFileSystem(path=str(Path(path).expanduser().absolute()))
    return naming.get_namespace(), naming.get_name()


class _Resolver:
    """Resolves the ``lineage/upstream`` entries of a batch to the materializations they name.

    The materializations of each named asset are read once for the batch (only the named partitions,
    only before the batch's last reader).
    """

    def __init__(
        self, instance: dg.DagsterInstance, config: OpenLineageConfig, records: Sequence[dg.EventLogRecord]
    ):
        self.config = config
        wanted: dict[str, set[str]] = {}
        self.entries: dict[int, list[dict[str, Any]]] = {}
        for record in records:
            if record.asset_materialization is None:
                continue
            entries = rec.upstream_entries(record) or []
            self.entries[record.storage_id] = entries
            for e in entries:
                asset = e.get("table") if rec.upstream_pin(e) is not None else e.get("asset")
                if asset is not None and e.get("partition") is not None:
                    wanted.setdefault(str(asset), set()).add(str(e["partition"]))
        before = max((r.storage_id for r in records), default=0)
        self.records: dict[str, list[dg.EventLogRecord]] = {
            asset: rec.fetch(instance, asset, partitions=parts, before_storage_id=before)
            for asset, parts in sorted(wanted.items())
        }
        self.pins = {asset: rec.PinIndex(asset, found) for asset, found in self.records.items()}

    def upstream(self, record: dg.EventLogRecord) -> list[Upstream]:
        return [self._one(record, e) for e in self.entries.get(record.storage_id, [])]

    def _one(self, reader: dg.EventLogRecord, entry: dict[str, Any]) -> Upstream:
        label = rec.materialization(reader).id
        pin = rec.upstream_pin(entry)
        if pin is not None:
            table = pin[0]
            version = str(pin[2]) if pin[2] is not None else (pin[3] or None)
            index = self.pins.get(table)
            found = index.resolve(pin, reader.storage_id, label) if index is not None else None
            if found is None or isinstance(found, Missing):
                reason = (
                    found.reason if isinstance(found, Missing) else f"{table} has no recorded materialization"
                )
                namespace, name = self._table_fallback(table)
                return Upstream(entry, DatasetRef(namespace, name, version), unresolved=reason)
            chosen, _ = found
            uri = rec.text(chosen, keys.STORAGE_URI)
            namespace, name = table_name(uri, self.config) if uri else self._table_fallback(table)
            return Upstream(entry, DatasetRef(namespace, name, version), chosen.storage_id, chosen.run_id)
        asset = str(entry.get("asset") or "")
        run_id, partition = entry.get("run_id"), entry.get("partition")
        storage_id = entry.get("storage_id")
        candidates = [
            r
            for r in self.records.get(asset, [])
            if r.run_id == run_id
            and r.storage_id < reader.storage_id
            and (r.asset_materialization is not None and r.asset_materialization.partition == partition)
            and (storage_id is None or r.storage_id == storage_id)
        ]
        if not candidates:
            reason = (
                f"no materialization of {asset}[{partition}] by run {run_id} was recorded before {label}"
                if partition is not None
                else f"the entry names no partition of {asset}"
            )
            version = str(storage_id) if storage_id is not None else None
            return Upstream(
                entry, DatasetRef(self.config.asset_namespace, asset or "?", version), unresolved=reason
            )
        chosen = candidates[-1]
        ref = output_ref(asset, _plain(rec.meta_of(chosen)), chosen.storage_id, self.config)
        return Upstream(entry, ref, chosen.storage_id, chosen.run_id)

    def _table_fallback(self, table: str) -> tuple[str, str]:
        """A table's name when no materialization resolves the pin: any materialization of the table
        recorded its location (a table's location is the table's, not a partition's); else settings."""
        for other in self.records.get(table, []):
            uri = rec.text(other, keys.STORAGE_URI)
            if uri:
                return table_name(uri, self.config)
        if self.config.storage_backend == "delta":
            return table_name(str(self.config.delta_root / table), self.config)
        return self.config.lakefs_namespace, table


def _audit(
    config: OpenLineageConfig, records: Sequence[dg.EventLogRecord]
) -> tuple[dict[str, AuditRecord], bool | None]:
    """The audit-log events the batch names (``registry/audit_event``), and whether the log verifies.

    Raises:
        OpenLineageExportError: the log cannot be read (or checked): the approvals would lose who
            decided and when, so nothing of the batch is emitted and the cursor stays; the message
            names the table, the materializations that need it and the cause. A log that reads but
            fails its hash-chain check is a state, recorded as ``auditVerified: false``.
    """
    wanted: dict[str, str] = {}
    for r in records:
        mat = r.asset_materialization
        if mat is not None and (event_id := rec.value(r, keys.REGISTRY_EVENT)) is not None:
            label = mat.asset_key.to_user_string() + (f"[{mat.partition}]" if mat.partition else "")
            wanted.setdefault(str(event_id), f"{label}@{r.storage_id}")
    if not wanted:
        return {}, None
    from ml_platform.lib.registry.audit import AuditIntegrityError, AuditLog

    log = AuditLog(config.audit_table)
    verified = True
    try:
        events = [e for e in log.events() if e.event_id in wanted]
        try:
            log.verify()
        except AuditIntegrityError:
            verified = False
    except Exception as exc:
        needing = ", ".join(sorted(set(wanted.values())))
        raise OpenLineageExportError(
            f"cannot read the registry's audit log {config.audit_table}, which the approvals of"
            f" {needing} name (registry/audit_event): {type(exc).__name__}: {exc}"
        ) from exc
    return {
        e.event_id: AuditRecord(
            event_id=e.event_id,
            action=e.action,
            alias=e.alias,
            version=e.version,
            previous_version=e.previous_version,
            actor=e.actor,
            reason=e.reason,
            occurred_at=e.occurred_at.astimezone(UTC).isoformat(),
            event_hash=e.event_hash,
        )
        for e in events
    }, verified


# ------------------------------------------------------------------------------------------ helpers


def _plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.value for k, v in meta.items() if hasattr(v, "value")}


def _schema(meta: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    item = meta.get(keys.SCHEMA)
    schema = getattr(item, "value", None)
    columns = getattr(schema, "columns", None)
    if not columns:
        return None
    return [(str(c.name), str(c.type)) for c in columns]


def _nominal(partitions_def: dg.PartitionsDefinition | None, partition: str | None) -> tuple[str, str] | None:
    if partition is None or not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return None
    try:
        window = partitions_def.time_window_for_partition_key(partition)
    except Exception:  # a key outside the definition (it was changed since): no nominal time
        return None
    return window.start.isoformat(), window.end.isoformat()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
