"""Shared Dagster glue: read upstreams through recorded lineage, publish partitions with metadata.

This is the only place that turns storage records into Dagster metadata and back, so every asset
records lineage the same way and the lineage tooling reads one format
(:mod:`ml_platform.lib.metadata`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.events import DagsterEventType

from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import DeltaPartitionStore, PartitionVersion


class UpstreamNotMaterialized(dg.Failure):
    """An upstream partition this asset needs has no recorded materialization."""


@dataclass(frozen=True)
class BuildInfo:
    """What every asset records about the code that produced it."""

    git_commit: str


@dataclass
class PartitionResult:
    """One published partition, ready to be reported to Dagster."""

    partition: str
    version: PartitionVersion
    metadata: dict[str, Any]
    checks: list[dg.AssetCheckResult] = field(default_factory=list)


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of each of ``partitions`` that has one (two queries)."""
    if not partitions:
        return {}
    latest = instance.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not latest:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    return {r.asset_materialization.partition: r for r in records if r.asset_materialization}  # type: ignore[misc]


def recorded_pins(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Sequence[str], *, table: str
) -> list[PartitionVersion]:
    """Return the storage record of the latest materialization of each upstream partition.

    This is how an asset reads its upstreams: through the table version and files that the
    upstream materialization recorded, never "the latest files".

    Raises:
        UpstreamNotMaterialized: naming every partition without a recorded materialization.
    """
    records = latest_materializations(instance, asset_key, partitions)
    missing = sorted(set(partitions) - set(records))
    if missing:
        raise UpstreamNotMaterialized(
            f"{asset_key.to_user_string()}: partition(s) {_ranges(missing)} have no materialization;"
            " materialize them first (or backfill the range)"
        )
    pins = []
    for partition in partitions:
        record = records[partition]
        meta = record.asset_materialization.metadata  # type: ignore[union-attr]
        try:
            pins.append(
                PartitionVersion(
                    table=table,
                    partition=partition,
                    table_version=int(meta[keys.STORAGE_TABLE_VERSION].value),  # type: ignore[arg-type]
                    content_hash=str(meta[keys.STORAGE_CONTENT_HASH].value),
                    row_count=int(meta[keys.ROW_COUNT].value),  # type: ignore[arg-type]
                    files=tuple(meta[keys.STORAGE_FILES].value),  # type: ignore[arg-type]
                )
            )
        except KeyError as exc:
            raise dg.Failure(
                f"{asset_key.to_user_string()}[{partition}]: materialization (run {record.run_id})"
                f" lacks lineage metadata {exc}; rematerialize it"
            ) from exc
    return pins


def read_pinned(store: DeltaPartitionStore, pins: Sequence[PartitionVersion]) -> pl.DataFrame:
    """Read pinned partitions, turning storage errors into Dagster failures with context."""
    try:
        return store.read(pins)
    except Exception as exc:
        raise dg.Failure(str(exc)) from exc


def previous_version(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str, table: str
) -> PartitionVersion | None:
    """The storage record of this partition's latest materialization, if it has one."""
    try:
        return recorded_pins(instance, asset_key, [partition], table=table)[0]
    except (UpstreamNotMaterialized, dg.Failure):
        return None


def describe(version: PartitionVersion) -> str:
    """How a published partition is logged."""
    note = " (same content as published, nothing written)" if version.reused else ""
    return f"{version.table}[{version.partition}] at table version {version.table_version}{note}"


def partition_metadata(
    version: PartitionVersion,
    frame: pl.DataFrame,
    *,
    table_uri: str,
    upstream: Iterable[PartitionVersion],
    code_version: str,
    build: BuildInfo,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The standard metadata of one published partition."""
    upstream_list = [pin.to_metadata() for pin in upstream]
    for item in upstream_list:
        item.pop("files", None)
    return {
        keys.ROW_COUNT: dg.MetadataValue.int(version.row_count),
        keys.SCHEMA: dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
        ),
        keys.STORAGE_URI: dg.MetadataValue.path(table_uri),
        keys.STORAGE_PARTITION: version.partition,
        keys.STORAGE_TABLE_VERSION: dg.MetadataValue.int(version.table_version),
        keys.STORAGE_CONTENT_HASH: version.content_hash,
        keys.STORAGE_FILES: dg.MetadataValue.json(list(version.files)),
        keys.STORAGE_WRITE_SKIPPED: dg.MetadataValue.bool(version.reused),
        keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(upstream_list),
        keys.LINEAGE_CODE_VERSION: code_version,
        keys.LINEAGE_GIT_COMMIT: build.git_commit,
        **(extra or {}),
    }


def report(context: dg.AssetExecutionContext, results: Sequence[PartitionResult]) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Report published partitions to Dagster.

    One partition (the default, one run per partition): its content hash is the DataVersion and
    the checks are scoped to the partition. A range (a single-run backfill): each partition gets
    its own metadata, including its content hash under ``storage/content_hash``; Dagster 1.13
    keeps one DataVersion per step output, so the range records a digest of the partition hashes
    and each check reports whether it passed on every partition, naming the ones that did not.
    """
    if len(results) == 1:
        only = results[0]
        return dg.MaterializeResult(
            metadata=only.metadata,
            data_version=dg.DataVersion(only.version.content_hash),
            check_results=only.checks,
        )
    for result in results:
        context.add_asset_metadata(result.metadata, partition_key=result.partition)
    digest = hashlib.sha256(
        json.dumps([(r.partition, r.version.content_hash) for r in results]).encode()
    ).hexdigest()
    merged: dict[str, list[dg.AssetCheckResult]] = {}
    for result in results:
        for check in result.checks:
            merged.setdefault(check.check_name or "", []).append(check)
    checks = [
        dg.AssetCheckResult(
            check_name=name,
            passed=all(c.passed for c in items),
            severity=items[0].severity,
            metadata={
                "partitions": len(items),
                "failed_partitions": dg.MetadataValue.json(
                    [r.partition for r, c in zip(results, items, strict=True) if not c.passed]
                ),
            },
        )
        for name, items in merged.items()
    ]
    return dg.MaterializeResult(data_version=dg.DataVersion(digest), check_results=checks)


def _ranges(partitions: Sequence[str]) -> str:
    if len(partitions) <= 4:
        return ", ".join(partitions)
    return f"{partitions[0]} … {partitions[-1]} ({len(partitions)} partitions)"
