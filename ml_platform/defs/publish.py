"""Shared Dagster glue: read upstreams through recorded lineage, publish partitions with metadata.

This is the only place that turns storage records into Dagster metadata and back, so every asset
records lineage the same way and the lineage tooling reads one format
(:mod:`ml_platform.lib.metadata`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.events import DagsterEventType

from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import PartitionStore, PartitionVersion


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


class RecordedVersions:
    """The storage records of an asset's partitions, as their latest materializations recorded them.

    This is how an asset reads its upstreams: through the table version, files and content hash
    that the upstream materialization recorded, never "the latest files". One instance is built per
    step for every partition the step needs (two queries), not per partition.
    """

    def __init__(
        self, instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Iterable[str], *, table: str
    ) -> None:
        self.asset_key = asset_key
        self._pins: dict[str, PartitionVersion] = {}
        self._broken: dict[str, str] = {}
        for partition, record in latest_materializations(
            instance, asset_key, sorted(set(partitions))
        ).items():
            meta = record.asset_materialization.metadata  # type: ignore[union-attr]
            try:
                if keys.STORAGE_TABLE_VERSION not in meta and keys.STORAGE_COMMIT not in meta:
                    raise KeyError(f"{keys.STORAGE_TABLE_VERSION} or {keys.STORAGE_COMMIT}")
                version = meta.get(keys.STORAGE_TABLE_VERSION)
                commit = meta.get(keys.STORAGE_COMMIT)
                self._pins[partition] = PartitionVersion(
                    table=table,
                    partition=partition,
                    table_version=None if version is None else int(version.value),  # type: ignore[arg-type]
                    content_hash=str(meta[keys.STORAGE_CONTENT_HASH].value),
                    row_count=int(meta[keys.ROW_COUNT].value),  # type: ignore[arg-type]
                    files=tuple(meta[keys.STORAGE_FILES].value),  # type: ignore[arg-type]
                    commit="" if commit is None else str(commit.value),
                )
            except KeyError as exc:
                self._broken[partition] = (
                    f"materialization (run {record.run_id}) lacks lineage metadata {exc}"
                )

    def get(self, partition: str) -> PartitionVersion | None:
        """The record of ``partition``, or None when it has no usable materialization."""
        return self._pins.get(partition)

    def require(self, partitions: Sequence[str]) -> list[PartitionVersion]:
        """The records of ``partitions``, in order.

        Raises:
            UpstreamNotMaterialized: naming every partition without a recorded materialization.
        """
        name = self.asset_key.to_user_string()
        broken = [p for p in partitions if p in self._broken]
        if broken:
            raise dg.Failure(f"{name}[{broken[0]}]: {self._broken[broken[0]]}; rematerialize it")
        missing = [p for p in partitions if p not in self._pins]
        if missing:
            raise UpstreamNotMaterialized(
                f"{name}: partition(s) {_ranges(missing)} have no materialization;"
                " materialize them first (or backfill the range)"
            )
        return [self._pins[p] for p in partitions]


def read_pinned(
    store: PartitionStore,
    pins: Sequence[PartitionVersion],
    cache: MutableMapping[PartitionVersion, pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """Read pinned partitions, turning storage errors into Dagster failures with context."""
    try:
        return store.read(pins, cache)
    except Exception as exc:
        raise dg.Failure(str(exc)) from exc


def describe(version: PartitionVersion) -> str:
    """How a published partition is logged."""
    note = " (same content as published, nothing written)" if version.reused else ""
    return f"{version.table}[{version.partition}] {version.where}{note}"


def version_metadata(version: PartitionVersion) -> dg.MetadataValue:  # type: ignore[type-arg]
    """The pin's version as one metadata value: the Delta table version, or the lakeFS commit."""
    if version.table_version is not None:
        return dg.MetadataValue.int(version.table_version)
    return dg.MetadataValue.text(version.commit)


def storage_metadata(version: PartitionVersion, table_uri: str) -> dict[str, Any]:
    """Where a published partition lives: what :class:`RecordedVersions` reads back."""
    return {
        keys.ROW_COUNT: dg.MetadataValue.int(version.row_count),
        keys.STORAGE_URI: dg.MetadataValue.path(table_uri),
        keys.STORAGE_PARTITION: version.partition,
        **(
            {keys.STORAGE_TABLE_VERSION: dg.MetadataValue.int(version.table_version)}
            if version.table_version is not None
            else {}
        ),
        **({keys.STORAGE_COMMIT: version.commit} if version.commit else {}),
        keys.STORAGE_CONTENT_HASH: version.content_hash,
        keys.STORAGE_FILES: dg.MetadataValue.json(list(version.files)),
        keys.STORAGE_WRITE_SKIPPED: dg.MetadataValue.bool(version.reused),
    }


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
        **storage_metadata(version, table_uri),
        keys.SCHEMA: dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
        ),
        keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(upstream_list),
        keys.LINEAGE_CODE_VERSION: code_version,
        keys.LINEAGE_GIT_COMMIT: build.git_commit,
        **(extra or {}),
    }


AssetEvent = dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.AssetCheckResult  # type: ignore[type-arg]


class PartitionReporter:
    """Reports an asset's partitions to Dagster, one by one, with exact per-partition versions.

    * A run of one partition (what the UI launches: the backfill policy is one partition per run)
      ends with a plain ``MaterializeResult`` whose DataVersion is the partition's data version
      (its content hash on Delta, its lakeFS commit on lakeFS).
    * A run over a range (``mlp demo`` and the benchmark run each layer of the graph over a range,
      see :func:`ml_platform.demo.layers`) yields, as each partition is published, its own
      ``AssetMaterialization`` with its data version, and its own partition-scoped
      check evaluations. Dagster's ``MaterializeResult`` cannot do this (it carries one DataVersion
      for the whole range), so the data-version tags are written the way Dagster writes them for a
      user-provided version. The check outputs Dagster requires per step close the range with one
      summary result per check. A failure midway keeps the partitions already reported.

    Such an asset yields no output in a range run, so Dagster would skip its downstream assets in
    the same run; a range run therefore must select a single layer, and the constructor refuses
    anything else with a clear error.
    """

    def __init__(self, context: dg.AssetExecutionContext) -> None:
        self.context = context
        self.partitions = list(context.partition_keys)
        # a range run (even of one day) has no single partition key for Dagster to scope checks by
        self.ranged = len(self.partitions) > 1 or not context.has_partition_key
        self.results: list[PartitionResult] = []
        if self.ranged:
            self._refuse_multi_layer_range()

    def publish(self, result: PartitionResult) -> Iterator[AssetEvent]:
        """Record one published partition (streamed right away in a range run)."""
        self.results.append(result)
        if not self.ranged:
            return
        from dagster._core.definitions.data_version import (
            CODE_VERSION_TAG,
            DATA_VERSION_IS_USER_PROVIDED_TAG,
            DATA_VERSION_TAG,
        )

        key = self.context.asset_key
        yield dg.AssetMaterialization(
            asset_key=key,
            partition=result.partition,
            metadata=result.metadata,
            tags={
                DATA_VERSION_TAG: result.version.data_version,
                DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
                CODE_VERSION_TAG: self.context.assets_def.code_versions_by_key[key] or "",
            },
        )
        yield from self._evaluations(result.partition, result.checks)

    def log(self, message: str) -> None:
        """Log one partition's outcome in a one-partition run.

        In a range run the per-day materialization already carries all of it, and a log line per
        day would add a fifth of the run's event-log writes; the range is summed up in one line.
        """
        if not self.ranged:
            self.context.log.info(message)

    def fail(self, partition: str, checks: Sequence[dg.AssetCheckResult]) -> Iterator[AssetEvent]:
        """Report failed checks of ``partition`` before the asset raises."""
        if self.ranged:
            yield from self._evaluations(partition, checks)
        else:
            yield from checks

    def finish(self) -> Iterator[AssetEvent]:
        """Close the run: the MaterializeResult of a single partition, or the range's check summary."""
        if not self.ranged:
            (only,) = self.results
            yield dg.MaterializeResult(
                metadata=only.metadata,
                data_version=dg.DataVersion(only.version.data_version),
                check_results=only.checks,
            )
            return
        self.context.log.info(
            f"{self.context.asset_key.to_user_string()}: published {len(self.results)} partitions"
            f" {self.partitions[0]}..{self.partitions[-1]}"
            f" ({sum(r.version.reused for r in self.results)} unchanged, nothing written)"
        )
        for spec in self.context.assets_def.check_specs:
            outcomes = [(r.partition, c) for r in self.results for c in r.checks if c.check_name == spec.name]
            failed = [p for p, c in outcomes if not c.passed]
            yield dg.AssetCheckResult(
                check_name=spec.name,
                passed=not failed,
                severity=outcomes[0][1].severity if outcomes else dg.AssetCheckSeverity.ERROR,
                description=f"Summary of a range run: {len(outcomes)} partitions, each evaluated separately.",
                metadata={
                    "range": f"{self.partitions[0]}..{self.partitions[-1]}",
                    "partitions": len(outcomes),
                    "failed_partitions": dg.MetadataValue.json(failed),
                },
            )

    def _evaluations(self, partition: str, checks: Sequence[dg.AssetCheckResult]) -> Iterator[AssetEvent]:
        specs = {spec.name: spec for spec in self.context.assets_def.check_specs}
        for check in checks:
            yield dg.AssetCheckEvaluation(
                asset_key=self.context.asset_key,
                check_name=check.check_name or "",
                passed=check.passed,
                metadata=check.metadata,
                severity=check.severity,
                description=check.description,
                blocking=specs[check.check_name or ""].blocking,
                partition=partition,
            )

    def _refuse_multi_layer_range(self) -> None:
        layer = self.context.job_def.asset_layer
        in_run = set(self.context.run.asset_selection or layer.executable_asset_keys)
        downstream = layer.asset_graph.get(self.context.asset_key).child_keys & in_run
        if downstream:
            names = ", ".join(sorted(k.to_user_string() for k in downstream))
            raise dg.Failure(
                f"{self.context.asset_key.to_user_string()}: a run over a partition range"
                f" ({self.partitions[0]}..{self.partitions[-1]}) must not also select its downstream"
                f" assets ({names}); run one layer at a time (as `mlp demo` does) or one partition per run."
            )


def _ranges(partitions: Sequence[str]) -> str:
    if len(partitions) <= 4:
        return ", ".join(partitions)
    return f"{partitions[0]} … {partitions[-1]} ({len(partitions)} partitions)"
