"""Reading what the assets recorded in the Dagster instance: batched, exact, never "the latest".

* :func:`fetch` pages through the materializations of one asset (optionally some partitions, or a
  storage-id range) in as few queries as the storage allows; lineage code never queries per partition
  in a loop.
* :class:`PinIndex` resolves a recorded pin (``lineage/upstream`` entry: table, partition, table
  version or lakeFS commit, content hash) to the materialization that recorded exactly that pin,
  *before* the downstream materialization that read it (storage ids grow with time): the newest
  such one is the one the downstream's ``RecordedVersions`` read.
* :func:`check_results` fetches the asset check evaluations of many (run, partition) pairs with one
  paged query per check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster import DagsterEventType

from ml_platform.lib import metadata as keys
from ml_platform.lineage.model import CheckResult, Materialization, Missing, StorageVersion

PAGE = 1000
CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
#: A pin: (table, partition, table version, lakeFS commit, content hash).
PinKey = tuple[str, str, int | None, str, str]


def fetch(
    instance: dg.DagsterInstance,
    asset: str,
    *,
    partitions: Iterable[str] | None = None,
    after_storage_id: int | None = None,
    before_storage_id: int | None = None,
) -> list[dg.EventLogRecord]:
    """Every materialization record of ``asset`` in the filter, oldest first (one query per page)."""
    wanted = None if partitions is None else sorted(set(partitions))
    if wanted is not None and not wanted:
        return []
    records_filter = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset),
        asset_partitions=wanted,
        after_storage_id=after_storage_id,
        before_storage_id=before_storage_id,
    )
    out: list[dg.EventLogRecord] = []
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=PAGE, cursor=cursor, ascending=True)
        out.extend(page.records)
        if not page.has_more:
            return out
        cursor = page.cursor


def meta_of(record: dg.EventLogRecord) -> Mapping[str, Any]:
    mat = record.asset_materialization
    return {} if mat is None else mat.metadata


def value(record: dg.EventLogRecord, key: str) -> Any:
    """The recorded value of metadata ``key`` (None when the materialization does not record it)."""
    item = meta_of(record).get(key)
    return None if item is None else item.value


def text(record: dg.EventLogRecord, key: str) -> str | None:
    found = value(record, key)
    return None if found is None else str(found)


def materialization(record: dg.EventLogRecord) -> Materialization:
    """The identity of a materialization event: asset, partition, storage id, run, code and commit."""
    mat = record.asset_materialization
    assert mat is not None
    tags = mat.tags or {}
    recorded_code = text(record, keys.LINEAGE_CODE_VERSION)
    dagster_code = tags.get(CODE_VERSION_TAG)
    return Materialization(
        asset=mat.asset_key.to_user_string(),
        partition=mat.partition,
        storage_id=record.storage_id,
        run_id=record.run_id,
        timestamp=datetime.fromtimestamp(record.timestamp, UTC).isoformat(),
        code_version=recorded_code if recorded_code is not None else dagster_code,
        code_version_from=keys.LINEAGE_CODE_VERSION
        if recorded_code is not None
        else (CODE_VERSION_TAG + " tag" if dagster_code is not None else None),
        git_commit=text(record, keys.LINEAGE_GIT_COMMIT),
        data_version=tags.get(DATA_VERSION_TAG),
    )


def storage(record: dg.EventLogRecord) -> StorageVersion:
    """The pin a materialization recorded (``storage/*``)."""
    version = value(record, keys.STORAGE_TABLE_VERSION)
    rows = value(record, keys.ROW_COUNT)
    files = value(record, keys.STORAGE_FILES)
    skipped = value(record, keys.STORAGE_WRITE_SKIPPED)
    return StorageVersion(
        table_uri=text(record, keys.STORAGE_URI),
        table_version=None if version is None else int(version),
        commit=text(record, keys.STORAGE_COMMIT),
        content_hash=text(record, keys.STORAGE_CONTENT_HASH),
        row_count=None if rows is None else int(rows),
        files=[str(f) for f in files] if isinstance(files, list) else [],
        write_skipped=None if skipped is None else bool(skipped),
    )


def record_pin(record: dg.EventLogRecord) -> PinKey | None:
    """The pin a partition materialization recorded; None when it records no storage version."""
    mat = record.asset_materialization
    content = text(record, keys.STORAGE_CONTENT_HASH)
    version = value(record, keys.STORAGE_TABLE_VERSION)
    commit = text(record, keys.STORAGE_COMMIT) or ""
    if mat is None or mat.partition is None or content is None or (version is None and not commit):
        return None
    return (
        mat.asset_key.to_user_string(),
        mat.partition,
        None if version is None else int(version),
        commit,
        content,
    )


def upstream_pin(entry: Mapping[str, Any]) -> PinKey | None:
    """The pin of one ``lineage/upstream`` entry that names a table partition (None for run references)."""
    if "table" not in entry or "partition" not in entry or "content_hash" not in entry:
        return None
    version = entry.get("table_version")
    return (
        str(entry["table"]),
        str(entry["partition"]),
        None if version is None else int(version),
        str(entry.get("commit") or ""),
        str(entry["content_hash"]),
    )


def describe_pin(pin: PinKey) -> str:
    table, partition, version, commit, content = pin
    where = f"lakeFS commit {commit[:12]}" if commit else f"table version {version}"
    return f"{table}[{partition}] at {where}, content {content[:12]}"


def upstream_entries(record: dg.EventLogRecord) -> list[dict[str, Any]] | None:
    """``lineage/upstream`` as recorded (None when the materialization does not record it)."""
    found = value(record, keys.LINEAGE_UPSTREAM)
    if found is None:
        return None
    return [dict(e) for e in found if isinstance(e, Mapping)]


class PinIndex:
    """The materializations of some partitions of one asset, indexed by the pin each recorded."""

    def __init__(self, asset: str, records: Sequence[dg.EventLogRecord]) -> None:
        self.asset = asset
        self.by_partition: dict[str, list[dg.EventLogRecord]] = {}
        self.by_pin: dict[PinKey, list[dg.EventLogRecord]] = {}
        for record in sorted(records, key=lambda r: r.storage_id):
            mat = record.asset_materialization
            if mat is None or mat.partition is None:
                continue
            self.by_partition.setdefault(mat.partition, []).append(record)
            pin = record_pin(record)
            if pin is not None:
                self.by_pin.setdefault(pin, []).append(record)

    def resolve(
        self, pin: PinKey, before_storage_id: int, referrer: str
    ) -> tuple[dg.EventLogRecord, list[dg.EventLogRecord]] | Missing:
        """The materialization that recorded ``pin`` before ``before_storage_id`` (the one read), and the
        other ones that recorded the same pin; or why there is none."""
        matching = [r for r in self.by_pin.get(pin, []) if r.storage_id < before_storage_id]
        if matching:
            chosen = matching[-1]
            return chosen, [r for r in self.by_pin[pin] if r.storage_id != chosen.storage_id]
        table, partition = pin[0], pin[1]
        recorded = self.by_partition.get(partition, [])
        if not recorded:
            reason = f"{table}[{partition}] has no recorded materialization"
        else:
            seen = sorted(
                {
                    describe_pin(p)[len(f"{table}[{partition}] at ") :]
                    for r in recorded
                    if (p := record_pin(r))
                }
            )
            reason = (
                f"no materialization of {table}[{partition}] recorded this pin before {referrer}"
                f" (recorded: {'; '.join(seen) or 'no storage version'})"
            )
        return Missing(hop=table, ref=f"{referrer} read {describe_pin(pin)}", reason=reason)


def check_results(
    instance: dg.DagsterInstance,
    asset: str,
    check_names: Sequence[str],
    wanted: Iterable[tuple[str, str | None]],
    *,
    since: float | None = None,
) -> dict[tuple[str, str | None], list[CheckResult]]:
    """The check evaluations of ``asset`` recorded by each wanted (run id, partition), per check.

    Read run by run (the check evaluation events of each wanted run, one query per run and page),
    so the cost follows the runs asked about, not the instance's history: paging through every
    evaluation of a check, newest first, made an old model's trace grow with everything recorded
    since (docs/benchmarks.md, "Lineage queries"). A run over a range also records a summary
    evaluation without a partition; it is not a partition's result and is skipped for partitioned
    pairs. ``since`` is kept for callers; runs bound the read by themselves.
    """
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

    del since
    pairs = set(wanted)
    out: dict[tuple[str, str | None], list[CheckResult]] = {}
    if not pairs:
        return out
    names = set(check_names)
    key = dg.AssetKey(asset)
    for run_id in sorted({run for run, _ in pairs}):
        cursor: str | None = None
        while True:
            page = instance.get_records_for_run(
                run_id, cursor=cursor, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=PAGE
            )
            for record in page.records:
                event = record.event_log_entry.dagster_event
                evaluation = event.event_specific_data if event is not None else None
                if not isinstance(evaluation, AssetCheckEvaluation):
                    continue
                if evaluation.asset_key != key or evaluation.check_name not in names:
                    continue
                pair = (run_id, evaluation.partition)
                if pair not in pairs:
                    continue
                out.setdefault(pair, []).append(
                    CheckResult(
                        name=evaluation.check_name,
                        passed=evaluation.passed,
                        severity=evaluation.severity.value if evaluation.severity else None,
                        run_id=run_id,
                        partition=evaluation.partition,
                        description=evaluation.description,
                    )
                )
            if not page.has_more:
                break
            cursor = page.cursor
    # one result per check and pair, in the order of check_names (a retried check keeps its last)
    order = {name: i for i, name in enumerate(check_names)}
    for pair, results in out.items():
        last = {r.name: r for r in results}
        out[pair] = sorted(last.values(), key=lambda r: order[r.name])
    return out
