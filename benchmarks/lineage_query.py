"""Lineage benchmark: ``trace`` and ``impact`` (issue 6 item 7) as the event log grows past 10,000
materialization events, on the embedded sqlite instance and on PostgreSQL (dagster-postgres).

**The instance.** A real small graph is materialized once, exactly as the lineage tests do it (the
helpers of ``ml_platform_tests/lineage/conftest.py``): ``daily_data_job`` over 2013-01-01..27 in
three range runs, ``weekly_model_job`` for 2013-01-21 (trains and registers v1, evaluates, promotes
it to champion, ``bentoml build``), ``deploy_job``, two served predictions (one collected by
``prediction_log[2013-01-22]``) and raw_weather[2013-01-10] re-ingested with a +15 °C shift (new
validated and feature versions the model never read). That world answers every hop for real:
MLflow run and registry, audit log, Bento, desired state and deployment log, prediction log.

**The history.** Then the event log is grown, through Dagster's own API
(``instance.report_dagster_event``, what ``report_runless_asset_event`` calls, here with run ids),
by synthetic weeks after the real one, each cloned from the real world's own
records so that every materialization has the metadata the assets really record (the real record's
metadata with its dates shifted by the week's offset, its ``storage/*`` pin replaced by a new table
version and content hash, and its ``lineage/upstream`` rebuilt from what it read):

* the data job's week: raw_flights, raw_weather, validated_flights, validated_weather and
  flight_features for 7 days (three range runs: one per layer), with the checks of the validated
  and feature layers (planned, then evaluated, per partition); a feature day pins
  validated_flights[D-28..D] and validated_weather[D-1..D] (the declared mappings), each at the
  newest version recorded before it, as ``RecordedVersions`` reads them;
* the model job's week W: delay_model[W] (the 14 pins of its two-week training window),
  model_evaluation[W] (the model's run and the 7 holdout pins) with its two gate checks,
  model_promotion[W] (the evaluation's run and storage id) and delay_bento[W] (a new tag; the
  model, evaluation and promotion runs);
* every ``--deploy-every`` weeks a ``deployment`` of that week's Bento; every ``--reingest-every``
  weeks one raw_weather day of the week re-ingested with new content, its validated day and the two
  feature days that read it rematerialized (one-partition runs), so partitions have several
  versions and "the latest" is not the one read.

One instance per backend grows through the sizes (``--sizes``: materialization events in the
instance, the real world's included); the queries are timed at each size. The Postgres instance
(the production instance file, ``deploy/dagster/dagster-production.yaml``, on a throwaway database
of the local server, dropped at the end) gets the real world's events replayed in their order
(``store_event`` of every event of its runs), then the same synthetic history.

Seeding costs 5-8 ms per event through the API (SQLAlchemy per event, plus ~50 ms per new sqlite
run shard), ~2.4 events per materialization with the checks: 10,000 materializations take about
6.5 min on sqlite, 8 min on Postgres. ``--sizes 1000,3000,10000,30000`` works; it takes ~20 min
more per backend. Events
are stamped when they are stored (the history is minutes of wall time), as the storages stamp their
own rows (asset check executions) then too; ``records.check_results`` stops paging an hour past the
oldest record of a chain, so here it never stops early (see docs/benchmarks.md).

**Queries** (``settings`` as the CLI passes them; the lineage's partitioning covers the synthetic
days):

* ``trace_champion``: ``trace(instance, settings, "champion")``: the real v1, the oldest model of
  the history (everything recorded after it is history it must not be confused by);
* ``trace_request``: ``trace(..., "req-collected")``: from a served prediction's request id;
* ``trace_bento_new``: ``trace(..., <the newest synthetic Bento tag>)``: the newest model's chain.
  Its MLflow run and registry version do not exist (synthetic), so those two hops are missing
  (cheaper than a real one by the MLflow calls, which the champion trace pays);
* ``impact_day``: ``impact(..., "raw_flights[2013-01-10]")``: a raw day inside v1's training window
  (reaches v1, its Bento and the deployment);
* ``impact_range``: ``impact(..., "2013-01-08..2013-01-14")``: both raw assets over a week;
* ``impact_day_new``: ``impact(..., "raw_flights[<a day in the newest model's window>]")``.

Each is timed ``--repeats`` times ``warm`` (one instance object, after an untimed first call) and
``cold`` (a new instance object from the ref for each call, its creation included; creating and
disposing one alone is ``new_instance``). p50 and max in seconds. Every result is checked: the
champion's chain is complete, the newest chain has all its partitions, the impacts reach what
they must.

**The plain alternatives, in the same run:**

* for the trace, ``naive_walk``: the same data layers (features -> validated -> raw) resolved with
  one ``fetch_materializations`` query per recorded pin (that partition's records before the
  referrer, newest first, the first with the pin), the obvious exact implementation; checked to
  find the same materializations as the trace. Compared with the trace's own data-layer phase
  (``_Tracer._data``) and with the whole trace;
* for the impact, ``naive_impact``: the same forward walk without narrowing: every materialization
  of each downstream asset fetched (paged) and matched against the impacted pins and runs; checked
  to find the same materializations as ``impact``.

A phase pass (functions of ``ml_platform.lineage`` wrapped, untimed runs) records where the time of
each query goes, and ``--profile`` keeps the top of a cProfile of each query at the largest size.

``--snapshot`` runs a copy of the working tree's ``ml_platform`` (the sources' digest is recorded
at the start and the end, as in the other benchmarks).

Usage::

    .venv/bin/python benchmarks/lineage_query.py [--sizes 1000,3000,10000] [--repeats 3]
        [--naive-repeats 1] [--backends sqlite,postgres] [--pg-sizes 1000,3000,10000]
        [--snapshot] [--profile] [--keep] [--out FILE]

The default (sqlite, 1k/3k/10k) takes ~10 min on the 2-core machine; ``--backends sqlite,postgres``
~21 min. Almost all of it is seeding through the API.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Phases,
    code_digest,
    finish_report,
    imported_package_dir,
    loadavg,
    log,
)
from common import environment as common_environment

SIZES = (1000, 3000, 10000)
PG_SIZES = (1000, 3000, 10000)
RAW = ("raw_flights", "raw_weather")
VALIDATED = ("validated_flights", "validated_weather")
FEATURES = "flight_features"
MODEL = "delay_model"
EVALUATION = "model_evaluation"
PROMOTION = "model_promotion"
BENTO = "delay_bento"
DEPLOYMENT = "deployment"
DAILY = (*RAW, *VALIDATED, FEATURES)
WEEKLY = (MODEL, EVALUATION, PROMOTION, BENTO)
#: Daily partitions the lineage's settings cover (enough for 30k+ events of synthetic weeks).
PARTITION_END = date(2040, 1, 1)
LAST_DAY = "2013-01-27"  # the real world's last data day (lineage conftest LAST)
IMPACT_DAY = "raw_flights[2013-01-10]"
IMPACT_RANGE = "2013-01-08..2013-01-14"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATA_PHASE = "trace._data (features, validated, raw)"
QUERIES = (
    "trace_champion",
    "trace_request",
    "trace_bento_new",
    "impact_day",
    "impact_range",
    "impact_day_new",
)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def stats(samples: list[float]) -> dict[str, Any]:
    return {
        "p50_s": round(statistics.median(samples), 4),
        "max_s": round(max(samples), 4),
        "min_s": round(min(samples), 4),
        "n": len(samples),
        "samples_s": [round(s, 4) for s in samples],
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def environment(snapshot: bool) -> dict[str, Any]:
    return common_environment(
        snapshot,
        ("dagster", "dagster-postgres", "mlflow", "sqlalchemy"),
        sqlite=__import__("sqlite3").sqlite_version,
    )


# --------------------------------------------------------------------------------------------------
# The real world (the lineage tests' graph)
# --------------------------------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    settings: Any  # what the graph ran with
    lineage_settings: Any  # the same, with daily partitions up to PARTITION_END
    instance: Any
    version: str
    bento_tag: str
    request: str
    build_s: float = 0.0


def build_world(root: Path) -> World:
    """The lineage tests' world (``lineage_world`` of ``ml_platform_tests/lineage/conftest.py``)."""
    import dagster as dg

    from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions
    from ml_platform.demo import days
    from ml_platform.lib.deploy.events import DeploymentLog
    from ml_platform.settings import PlatformSettings
    from ml_platform_tests.conftest import QUIET, failure_messages
    from ml_platform_tests.lineage import conftest as lw

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir(exist_ok=True)
    instance = dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    )
    settings = PlatformSettings(root_dir=root, **lw.SETTINGS)
    defs = build_definitions(settings)
    data = defs.resolve_job_def(DATA_JOB)
    span = days(lw.FIRST, lw.LAST)
    lw._layers(
        data,
        instance,
        [["raw_flights", "raw_weather"], ["validated_flights", "validated_weather"], ["flight_features"]],
        tags={"dagster/asset_partition_range_start": span[0], "dagster/asset_partition_range_end": span[-1]},
    )
    log(f"  world: data layers {time.perf_counter() - t0:.1f}s")
    week = defs.resolve_job_def(MODEL_JOB).execute_in_process(
        partition_key=lw.WEEK, instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert week.success, failure_messages(week)
    (bento,) = week.asset_materializations_for_node("delay_bento")
    tag = str(bento.metadata["bento/tag"].value)
    version = str(bento.metadata["mlflow/model_version"].value)
    log(f"  world: model week {time.perf_counter() - t0:.1f}s")
    deployed = defs.resolve_job_def("deploy_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert deployed.success, failure_messages(deployed)
    DeploymentLog(settings.deployment_log_table).append(
        "deploy",
        mode="single",
        bento_tag=tag,
        model_version=version,
        reason="first deploy",
        actor="supervisor:bench",
        detail={"generation": 1, "model_name": lw.MODEL, "bento_partition": lw.WEEK},
    )
    lw._log(settings, "req-collected", version, 0, tag)
    collected = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
        partition_key=lw.LOG_DAY,
        instance=instance,
        run_config=QUIET,
        raise_on_error=False,
        asset_selection=[dg.AssetKey("prediction_log")],
    )
    assert collected.success, failure_messages(collected)
    lw._log(settings, "req-pending", version, 1, tag)
    shifted = build_definitions(settings.model_copy(update={"inject_shifts": [f"{lw.SHIFTED_DAY}:temp+15C"]}))
    data = shifted.resolve_job_def(DATA_JOB)
    lw._layers(
        data,
        instance,
        [["raw_weather"], ["validated_weather"], ["flight_features"]],
        partition_key=lw.SHIFTED_DAY,
    )
    lw._layers(data, instance, [["flight_features"]], partition_key="2013-01-11")
    lineage_settings = settings.model_copy(update={"partition_end": PARTITION_END})
    world = World(root, settings, lineage_settings, instance, version, tag, "req-collected")
    world.build_s = round(time.perf_counter() - t0, 1)
    return world


# --------------------------------------------------------------------------------------------------
# The synthetic history, cloned from the real records
# --------------------------------------------------------------------------------------------------


def shift_dates(value: Any, days: int) -> Any:
    """``value`` (str, list, dict) with every ISO date moved by ``days``."""
    if isinstance(value, str):
        if days == 0 or not _DATE.search(value):
            return value

        def moved(match: re.Match[str]) -> str:
            try:
                return (date.fromisoformat(match.group(0)) + timedelta(days=days)).isoformat()
            except ValueError:
                return match.group(0)

        return _DATE.sub(moved, value)
    if isinstance(value, list):
        return [shift_dates(v, days) for v in value]
    if isinstance(value, dict):
        return {k: shift_dates(v, days) for k, v in value.items()}
    return value


def shift_metadata(metadata: dict[str, Any], days: int) -> dict[str, Any]:
    """The real record's metadata, its dates moved by ``days`` (each value keeps its metadata type)."""
    import dagster as dg

    out: dict[str, Any] = {}
    for key, item in metadata.items():
        if isinstance(item, dg.JsonMetadataValue):
            out[key] = dg.MetadataValue.json(shift_dates(item.data, days))
        elif isinstance(item, dg.MarkdownMetadataValue):
            out[key] = dg.MetadataValue.md(shift_dates(item.md_str, days))
        elif isinstance(item, dg.PathMetadataValue):
            out[key] = dg.MetadataValue.path(shift_dates(item.path, days))
        elif isinstance(item, dg.UrlMetadataValue):
            out[key] = dg.MetadataValue.url(shift_dates(item.url, days))
        elif isinstance(item, dg.TextMetadataValue):
            out[key] = dg.MetadataValue.text(shift_dates(item.text, days))
        else:
            out[key] = item
    return out


@dataclass
class Template:
    partition: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]
    upstream: list[dict[str, Any]]


@dataclass
class Seeder:
    """Grows an instance by synthetic weeks after the real one (deterministic: the same history on
    every backend)."""

    instance: Any
    parts: Any  # Partitioning of the lineage settings
    templates: dict[str, Template]
    checks: dict[str, list[Any]]  # asset -> AssetCheckEvaluation templates
    pins: dict[tuple[str, str], dict[str, Any]]  # (table, partition) -> newest recorded pin
    table_versions: dict[str, int]
    runs: dict[tuple[str, str], str]  # (asset, partition) -> run id of the newest materialization
    next_version: int
    week: date  # the next synthetic model week
    deploy_every: int
    reingest_every: int
    rng: random.Random = field(default_factory=lambda: random.Random(6))
    materializations: int = 0
    check_evaluations: int = 0
    weeks: int = 0
    events_s: float = 0.0
    bentos: list[tuple[str, str]] = field(default_factory=list)  # (tag, week)
    models: list[tuple[str, str]] = field(default_factory=list)  # (version, week)
    storage_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    real_week: str = "2013-01-21"

    def run_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def _emit(self, event: Any, run_id: str) -> None:
        # stamped now: the storages stamp their own rows (asset check executions) with the insert
        # time, and the lineage compares the two
        self.instance.report_dagster_event(event, run_id=run_id)

    def materialize(
        self,
        asset: str,
        partition: str | None,
        metadata: dict[str, Any],
        tags: dict[str, str],
        run_id: str,
        job: str,
    ) -> None:
        import dagster as dg
        from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData

        mat = dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata, tags=tags)
        self._emit(
            DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=job,
                step_key=asset,
                event_specific_data=StepMaterializationData(mat),
            ),
            run_id,
        )
        self.materializations += 1
        if partition is not None:
            self.runs[(asset, partition)] = run_id

    def check_planned(
        self, asset: str, partitions: list[str] | None, partitions_def: Any, run_id: str, job: str
    ) -> None:
        from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
        from dagster._core.events import DagsterEvent, DagsterEventType

        subset = (
            None
            if partitions is None
            else partitions_def.subset_with_partition_keys(partitions).to_serializable_subset()
        )
        for template in self.checks.get(asset, []):
            self._emit(
                DagsterEvent(
                    event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
                    job_name=job,
                    event_specific_data=AssetCheckEvaluationPlanned(
                        asset_key=template.asset_key, check_name=template.check_name, partitions_subset=subset
                    ),
                ),
                run_id,
            )

    def check_results(self, asset: str, partition: str | None, run_id: str, job: str) -> None:
        """The checks of ``asset[partition]``, cloned from the real evaluations (dates shifted)."""
        from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation
        from dagster._core.events import DagsterEvent, DagsterEventType

        for t in self.checks.get(asset, []):
            days = (
                (date.fromisoformat(partition) - date.fromisoformat(t.partition)).days
                if partition is not None and t.partition is not None
                else 0
            )
            evaluation = AssetCheckEvaluation(
                asset_key=t.asset_key,
                check_name=t.check_name,
                passed=t.passed,
                metadata=shift_metadata(dict(t.metadata), days),
                target_materialization_data=None,
                severity=t.severity,
                description=shift_dates(t.description, days) if t.description else t.description,
                blocking=t.blocking,
                partition=partition,
            )
            self._emit(
                DagsterEvent(
                    event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
                    job_name=job,
                    event_specific_data=evaluation,
                ),
                run_id,
            )
            self.check_evaluations += 1

    # ------------------------------------------------------------------ one partition of an asset

    def data_record(
        self, asset: str, day: str, upstream: list[dict[str, Any]], run_id: str, job: str
    ) -> None:
        import dagster as dg

        from ml_platform.lib import metadata as keys

        t = self.templates[asset]
        offset = (date.fromisoformat(day) - date.fromisoformat(str(t.partition))).days
        metadata = shift_metadata(t.metadata, offset)
        version = self.table_versions[asset] = self.table_versions[asset] + 1
        content = hashlib.sha256(f"{asset}|{day}|{version}".encode()).hexdigest()
        files = (
            shift_dates(list(t.metadata[keys.STORAGE_FILES].value), offset)
            if keys.STORAGE_FILES in t.metadata
            else []
        )
        files = [re.sub(r"part-[^/]*$", f"part-{version:05d}-bench.parquet", f) for f in files]
        metadata[keys.STORAGE_TABLE_VERSION] = version
        metadata[keys.STORAGE_CONTENT_HASH] = content
        if keys.STORAGE_FILES in t.metadata:
            metadata[keys.STORAGE_FILES] = dg.MetadataValue.json(files)
        if t.upstream:
            metadata[keys.LINEAGE_UPSTREAM] = dg.MetadataValue.json(upstream)
        rows = t.metadata.get(keys.ROW_COUNT)
        pin = {
            "table": asset,
            "partition": day,
            "table_version": version,
            "content_hash": content,
            "row_count": None if rows is None else int(rows.value),
            "files": files,
        }
        self.pins[(asset, day)] = pin
        tags = {**t.tags, "dagster/data_version": content[:16]}
        self.materialize(asset, day, metadata, tags, run_id, job)

    def pin_entries(
        self, table: str, days: list[str], template_entry: dict[str, Any]
    ) -> list[dict[str, Any]]:
        extra = {
            k: v
            for k, v in template_entry.items()
            if k
            not in ("table", "partition", "table_version", "content_hash", "row_count", "files", "commit")
        }
        return [{**self.pins[(table, d)], **extra} for d in days if (table, d) in self.pins]

    def template_entry(self, asset: str, table: str) -> dict[str, Any]:
        for entry in self.templates[asset].upstream:
            if entry.get("table") == table:
                return entry
        return {}

    def feature_upstream(self, day: str) -> list[dict[str, Any]]:
        from ml_platform.partitions import upstream_keys

        daily = self.parts.daily
        flights = upstream_keys(self.parts.flights_window, daily, day)
        weather = upstream_keys(self.parts.weather_window, daily, day)
        return self.pin_entries(
            "validated_flights", flights, self.template_entry(FEATURES, "validated_flights")
        ) + self.pin_entries("validated_weather", weather, self.template_entry(FEATURES, "validated_weather"))

    # ------------------------------------------------------------------------------- one week

    def data_week(self, first: date) -> None:
        days = [(first + timedelta(days=i)).isoformat() for i in range(7)]
        daily = self.parts.daily
        job = "daily_data_job"
        run = self.run_id()
        for d in days:
            for asset in RAW:
                self.data_record(asset, d, [], run, job)
        run = self.run_id()
        for asset in VALIDATED:
            self.check_planned(asset, days, daily, run, job)
        for d in days:
            for asset in VALIDATED:
                raw = asset.replace("validated_", "raw_")
                self.data_record(
                    asset, d, self.pin_entries(raw, [d], self.template_entry(asset, raw)), run, job
                )
                self.check_results(asset, d, run, job)
        run = self.run_id()
        self.check_planned(FEATURES, days, daily, run, job)
        for d in days:
            self.data_record(FEATURES, d, self.feature_upstream(d), run, job)
            self.check_results(FEATURES, d, run, job)

    def reingest(self, day: str) -> None:
        """raw_weather[day] re-ingested (new content), then its validated day and the feature days
        that read it, one-partition runs as the fixture's shift."""
        job = "daily_data_job"
        daily = self.parts.daily
        self.data_record("raw_weather", day, [], self.run_id(), job)
        run = self.run_id()
        self.check_planned("validated_weather", [day], daily, run, job)
        self.data_record(
            "validated_weather",
            day,
            self.pin_entries("raw_weather", [day], self.template_entry("validated_weather", "raw_weather")),
            run,
            job,
        )
        self.check_results("validated_weather", day, run, job)
        for d in (day, (date.fromisoformat(day) + timedelta(days=1)).isoformat()):
            run = self.run_id()
            self.check_planned(FEATURES, [d], daily, run, job)
            self.data_record(FEATURES, d, self.feature_upstream(d), run, job)
            self.check_results(FEATURES, d, run, job)

    def _offset(self, asset: str, day: str) -> int:
        return (date.fromisoformat(day) - date.fromisoformat(str(self.templates[asset].partition))).days

    def model_week(self, week: str) -> None:
        import dagster as dg

        from ml_platform.lib import metadata as keys
        from ml_platform.partitions import upstream_keys

        job = "weekly_model_job"
        run = self.run_id()
        version = str(self.next_version)
        self.next_version += 1
        offset = self._offset(MODEL, week)
        mlflow_run = uuid.UUID(int=self.rng.getrandbits(128)).hex
        window = upstream_keys(self.parts.training_window, self.parts.weekly, week, self.parts.daily)
        holdout = upstream_keys(self.parts.holdout_window, self.parts.weekly, week, self.parts.daily)

        def refs(asset: str, entries: list[dict[str, Any]], extra: dict[str, Any]) -> list[dict[str, Any]]:
            out = []
            for entry in entries:
                if "table" in entry:  # a pin: the newest recorded version of the shifted partition
                    moved = shift_dates(entry, offset)
                    out.append({**moved, **self.pins.get((str(moved["table"]), str(moved["partition"])), {})})
                    continue
                named = str(entry.get("asset"))
                ref = {
                    **shift_dates(entry, offset),
                    "partition": week,
                    "run_id": self.runs.get((named, week), ""),
                }
                if "model_version" in ref:
                    ref["model_version"] = version
                if "storage_id" in ref:
                    ref["storage_id"] = self.storage_ids.get((named, week))
                ref.update(extra.get(named, {}))
                out.append(ref)
            return out

        # delay_model[W]: the training window's feature pins
        t = self.templates[MODEL]
        metadata = shift_metadata(t.metadata, offset)
        metadata.update(
            {
                keys.MLFLOW_MODEL_VERSION: version,
                keys.MLFLOW_RUN_ID: mlflow_run,
                keys.REGISTRY_EVENT: str(uuid.UUID(int=self.rng.getrandbits(128))),
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                    self.pin_entries(FEATURES, window, self.template_entry(MODEL, FEATURES))
                ),
            }
        )
        checked = self.checks_partition(EVALUATION, week)
        self.check_planned(EVALUATION, None if checked is None else [week], self.parts.weekly, run, job)
        self.materialize(MODEL, week, metadata, {**t.tags, "dagster/data_version": mlflow_run[:16]}, run, job)
        self.models.append((version, week))
        # model_evaluation[W]: the model's run and the holdout pins
        t = self.templates[EVALUATION]
        metadata = shift_metadata(t.metadata, offset)
        metadata.update(
            {
                keys.MLFLOW_MODEL_VERSION: version,
                keys.MLFLOW_RUN_ID: mlflow_run,
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                    refs(EVALUATION, [e for e in t.upstream if "table" not in e], {})
                    + self.pin_entries(FEATURES, holdout, self.template_entry(EVALUATION, FEATURES))
                ),
            }
        )
        self.materialize(EVALUATION, week, metadata, dict(t.tags), run, job)
        self.storage_ids[(EVALUATION, week)] = self.newest_storage_id(EVALUATION)
        self.check_results(EVALUATION, checked, run, job)
        # model_promotion[W]: the evaluation it re-read
        t = self.templates[PROMOTION]
        metadata = shift_metadata(t.metadata, offset)
        metadata[keys.MLFLOW_MODEL_VERSION] = version
        metadata[keys.REGISTRY_EVENT] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        if t.upstream:
            metadata[keys.LINEAGE_UPSTREAM] = dg.MetadataValue.json(refs(PROMOTION, t.upstream, {}))
        self.materialize(PROMOTION, week, metadata, dict(t.tags), run, job)
        # delay_bento[W]: a new tag, the model, evaluation and promotion runs
        from ml_platform.defs.serving.bento import BENTO_TAG

        t = self.templates[BENTO]
        name = str(t.metadata[BENTO_TAG].value).split(":")[0]
        tag = f"{name}:v{version}-{hashlib.sha1(f'{week}|{version}'.encode()).hexdigest()[:12]}"
        metadata = shift_metadata(t.metadata, offset)
        metadata.update(
            {
                BENTO_TAG: tag,
                keys.MLFLOW_MODEL_VERSION: version,
                keys.MLFLOW_RUN_ID: mlflow_run,
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(refs(BENTO, t.upstream, {})),
            }
        )
        self.materialize(BENTO, week, metadata, {**t.tags, "dagster/data_version": tag}, run, job)
        self.bentos.append((tag, week))

    def checks_partition(self, asset: str, week: str) -> str | None:
        templates = self.checks.get(asset, [])
        return week if templates and templates[0].partition is not None else None

    def newest_storage_id(self, asset: str) -> int:
        import dagster as dg

        (record,) = self.instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
        return int(record.storage_id)

    def deploy(self, week: str) -> None:
        import dagster as dg

        from ml_platform.defs.serving.bento import BENTO_TAG
        from ml_platform.lib import metadata as keys

        t = self.templates[DEPLOYMENT]
        tag = self.bentos[-1][0]
        metadata = shift_metadata(
            t.metadata, (date.fromisoformat(week) - date.fromisoformat(self.real_week)).days
        )
        metadata[BENTO_TAG] = tag
        metadata[keys.MLFLOW_MODEL_VERSION] = self.models[-1][0]
        upstream = []
        for entry in t.upstream:
            entry = dict(entry)
            if entry.get("asset") == BENTO:
                entry.update(partition=week, run_id=self.runs.get((BENTO, week), ""), bento_tag=tag)
            upstream.append(entry)
        metadata[keys.LINEAGE_UPSTREAM] = dg.MetadataValue.json(upstream)
        self.materialize(DEPLOYMENT, None, metadata, dict(t.tags), self.run_id(), "deploy_job")

    def grow_to(self, target: int) -> None:
        """Synthetic weeks until the instance holds ``target`` materialization events."""
        t0 = time.perf_counter()
        while self.materializations < target:
            first = self.week
            self.data_week(first)
            self.weeks += 1
            if self.reingest_every and self.weeks % self.reingest_every == 0:
                self.reingest((first + timedelta(days=2)).isoformat())
            self.model_week(first.isoformat())
            if self.deploy_every and self.weeks % self.deploy_every == 0:
                self.deploy(first.isoformat())
            self.week = first + timedelta(days=7)
        self.events_s += time.perf_counter() - t0


def make_seeder(world: World, instance: Any, args: argparse.Namespace, real_materializations: int) -> Seeder:
    """Templates, newest pins, table versions and run ids read from the real world in ``instance``."""
    import dagster as dg
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

    from ml_platform.lineage import records as rec
    from ml_platform.lineage.trace import CHECKS
    from ml_platform.partitions import build_partitioning

    templates: dict[str, Template] = {}
    pins: dict[tuple[str, str], dict[str, Any]] = {}
    versions: dict[str, int] = {}
    runs: dict[tuple[str, str], str] = {}
    for asset in (*DAILY, *WEEKLY, DEPLOYMENT):
        records = rec.fetch(instance, asset)
        assert records, f"the real world has no {asset} materialization"
        # the template: a daily asset's record of the range run's last day (the longest feature
        # window), the one record of a weekly asset and of the deployment
        last = [r for r in records if r.asset_materialization.partition == LAST_DAY]
        chosen = last[-1] if asset in DAILY else records[-1]
        mat = chosen.asset_materialization
        templates[asset] = Template(
            mat.partition, dict(mat.metadata), dict(mat.tags or {}), rec.upstream_entries(chosen) or []
        )
        for r in records:
            m = r.asset_materialization
            if m.partition is not None:
                runs[(asset, m.partition)] = r.run_id
            pin = rec.record_pin(r)
            if pin is None:
                continue
            version = pin[2] or 0
            versions[asset] = max(versions.get(asset, 0), version)
            pins[(asset, pin[1])] = {
                "table": asset,
                "partition": pin[1],
                "table_version": pin[2],
                "content_hash": pin[4],
                "row_count": rec.value(r, "dagster/row_count"),
                "files": [str(f) for f in rec.value(r, "storage/files") or []],
            }
    checks: dict[str, list[Any]] = {}
    storage = instance.event_log_storage
    for asset, names in CHECKS.items():
        for name in names:
            rows = storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(asset), name), limit=50
            )
            evaluated = [
                data
                for row in rows
                if row.event
                and row.event.dagster_event
                and isinstance(data := row.event.dagster_event.event_specific_data, AssetCheckEvaluation)
            ]
            if evaluated:  # the newest evaluation of the check (not a planned-only row)
                checks.setdefault(asset, []).append(evaluated[0])
    parts = build_partitioning(world.lineage_settings)
    return Seeder(
        instance=instance,
        parts=parts,
        templates=templates,
        checks=checks,
        pins=pins,
        table_versions={a: versions.get(a, 0) for a in DAILY},
        runs=runs,
        next_version=int(world.version) + 1,
        week=date(2013, 1, 28),
        deploy_every=args.deploy_every,
        reingest_every=args.reingest_every,
        materializations=real_materializations,
    )


def count_events(instance: Any) -> dict[str, int]:
    """Materializations and asset check evaluations in the instance (a count of the event log's
    index: on sqlite the cross-run shard every asset event is mirrored to, on Postgres the table)."""
    import sqlalchemy as db
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as events

    with instance.event_log_storage.index_connection() as conn:
        rows = conn.execute(
            db.select(events.c.dagster_event_type, db.func.count()).group_by(events.c.dagster_event_type)
        ).fetchall()
    by_type = {str(kind): int(n) for kind, n in rows}
    return {
        "materializations": by_type.get("ASSET_MATERIALIZATION", 0),
        "check_evaluations": by_type.get("ASSET_CHECK_EVALUATION", 0),
        "index_rows": sum(by_type.values()),
    }


# --------------------------------------------------------------------------------------------------
# The plain alternatives
# --------------------------------------------------------------------------------------------------


def model_record(instance: Any, week: str, run_id: str | None = None) -> Any:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(MODEL), asset_partitions=[week]), limit=100
    ).records
    return next(r for r in records if run_id is None or r.run_id == run_id)


def naive_walk(instance: Any, model: Any) -> tuple[dict[str, list[str]], int]:
    """features -> validated -> raw from ``model``: one query per recorded pin (that partition's
    records before the referrer, newest first; the first with the pin is the one read)."""
    import dagster as dg

    from ml_platform.lineage import records as rec

    queries = 0
    frontier = [model]
    out: dict[str, list[str]] = {}
    for layer, prefix in (("features", FEATURES), ("validated", "validated_"), ("raw", "raw_")):
        found: dict[int, Any] = {}
        for referrer in frontier:
            for entry in rec.upstream_entries(referrer) or []:
                pin = rec.upstream_pin(entry)
                if pin is None or not pin[0].startswith(prefix):
                    continue
                cursor = None
                hit = None
                while hit is None:
                    page = instance.fetch_materializations(
                        dg.AssetRecordsFilter(
                            asset_key=dg.AssetKey(pin[0]),
                            asset_partitions=[pin[1]],
                            before_storage_id=referrer.storage_id,
                        ),
                        limit=20,
                        cursor=cursor,
                    )
                    queries += 1
                    hit = next((r for r in page.records if rec.record_pin(r) == pin), None)
                    if not page.has_more:
                        break
                    cursor = page.cursor
                if hit is not None:
                    found[hit.storage_id] = hit
        frontier = sorted(found.values(), key=lambda r: r.storage_id)
        out[layer] = sorted(rec.materialization(r).id for r in frontier)
    return out, queries


def naive_impact(instance: Any, raw_assets: list[str], days: list[str]) -> dict[str, list[str]]:
    """The forward walk with no narrowing: every materialization of each downstream asset."""
    from ml_platform.lineage import records as rec

    def pins_of(records: list[Any]) -> set[Any]:
        return {p for r in records if (p := rec.record_pin(r))}

    def reading(asset: str, pins: set[Any]) -> list[Any]:
        return [
            r
            for r in rec.fetch(instance, asset)
            if any(
                (p := rec.upstream_pin(e)) is not None and p in pins for e in rec.upstream_entries(r) or []
            )
        ]

    raw = [r for a in raw_assets for r in rec.fetch(instance, a, partitions=days)]
    validated = [r for a in raw_assets for r in reading(a.replace("raw_", "validated_"), pins_of(raw))]
    features = reading(FEATURES, pins_of(validated))
    models = reading(MODEL, pins_of(features))
    evaluations = reading(EVALUATION, pins_of(features))
    runs = {(MODEL, rec.materialization(r).partition, r.run_id) for r in models} | {
        (EVALUATION, rec.materialization(r).partition, r.run_id) for r in evaluations
    }
    bentos = [
        r
        for r in rec.fetch(instance, BENTO)
        if any(
            (e.get("asset"), e.get("partition"), e.get("run_id")) in runs
            for e in rec.upstream_entries(r) or []
        )
    ]
    built = {(rec.materialization(r).partition, r.run_id) for r in bentos}
    deployments = [
        r
        for r in rec.fetch(instance, DEPLOYMENT)
        if any(
            e.get("asset") == BENTO and (e.get("partition"), e.get("run_id")) in built
            for e in rec.upstream_entries(r) or []
        )
    ]
    ids = {
        "validated": validated,
        "features": features,
        "models": models,
        "evaluations": evaluations,
        "bentos": bentos,
        "deployments": deployments,
    }
    return {k: sorted(rec.materialization(r).id for r in v) for k, v in ids.items()}


def impact_ids(report: Any) -> dict[str, list[str]]:
    return {
        "validated": sorted(i.id for i in report.validated),
        "features": sorted(i.id for i in report.features),
        "models": sorted(i.id for i in report.models),
        "evaluations": sorted(i.id for i in report.evaluations),
        "bentos": sorted(i.id for i in report.bentos),
        # a deployment naming two impacted Bentos is listed once per Bento
        "deployments": sorted({m.materialization.id for m in report.deployment.materializations}),
    }


def chain_ids(chain: Any) -> dict[str, list[str]]:
    def ids(layer: list[Any]) -> list[str]:
        return sorted(n.id for n in layer if hasattr(n, "materialization"))

    return {"features": ids(chain.features), "validated": ids(chain.validated), "raw": ids(chain.raw)}


# --------------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------------


@dataclass
class Target:
    world: World
    seeder: Seeder


def queries(t: Target) -> dict[str, Callable[[Any], Any]]:
    from ml_platform.lineage import impact, trace

    settings = t.world.lineage_settings
    new_tag, new_week = t.seeder.bentos[-1]
    day = (date.fromisoformat(new_week) - timedelta(days=10)).isoformat()  # in its training window
    return {
        "trace_champion": lambda i: trace(i, settings, "champion"),
        "trace_request": lambda i: trace(i, settings, t.world.request),
        "trace_bento_new": lambda i: trace(i, settings, new_tag),
        "impact_day": lambda i: impact(i, settings, IMPACT_DAY),
        "impact_range": lambda i: impact(i, settings, IMPACT_RANGE),
        "impact_day_new": lambda i: impact(i, settings, f"raw_flights[{day}]"),
    }


def check_result(name: str, result: Any, t: Target) -> dict[str, Any]:
    """What the query found, asserted where the answer is known."""
    if name.startswith("trace"):
        summary = {
            "complete": result.complete,
            "missing": sorted({m.hop for m in result.missing}),
            "features": len(result.features),
            "validated": len(result.validated),
            "raw": len(result.raw),
            "bentos": [b.tag for b in result.bentos],
        }
        assert summary["features"] == 14 and summary["raw"] >= 14, (name, summary)
        if name in ("trace_champion",):
            assert result.complete, (name, [(m.hop, m.reason) for m in result.missing])
        return summary
    summary = {k: len(v) for k, v in impact_ids(result).items()}
    if name in ("impact_day", "impact_range"):
        assert summary["models"] >= 1 and summary["bentos"] >= 1 and summary["deployments"] >= 1, (
            name,
            summary,
        )
    if name == "impact_day_new":
        assert summary["models"] >= 1, (name, summary)
    return summary


def time_call(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def on_new_instance(call: Callable[[Any], Any], instance: Any) -> Any:
    """``call`` on a new instance object made from ``instance``'s ref (disposed afterwards)."""
    fresh = new_instance(instance)
    try:
        return call(fresh)
    finally:
        fresh.dispose()


def new_instance(instance: Any) -> Any:
    import dagster as dg

    return dg.DagsterInstance.from_ref(instance.get_ref())


@contextmanager
def wrapped(phases: Phases) -> Iterator[None]:
    """The lineage's functions wrapped under phase names (restored afterwards)."""
    import importlib

    # the modules (the package re-exports the functions under the same names)
    im = importlib.import_module("ml_platform.lineage.impact")
    rec = importlib.import_module("ml_platform.lineage.records")
    tr = importlib.import_module("ml_platform.lineage.trace")

    targets = [
        (rec, "fetch", "records.fetch"),
        (rec, "check_results", "records.check_results"),
        (tr._Tracer, "_all_bentos", "trace._all_bentos"),
        (tr._Tracer, "_deployment", "trace._deployment"),
        (tr._Tracer, "_run", "trace._run (MLflow run)"),
        (tr._Tracer, "_model_hop", "trace._model_hop (registry, audit, evaluations)"),
        (tr._Tracer, "_data", DATA_PHASE),
        (tr._Tracer, "aliases", "trace.aliases"),
        (im, "_forward", "impact._forward"),
        (im, "_models", "impact._models"),
        (im, "_deployments", "impact._deployments"),
    ]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
    for obj, attr, name in targets:
        setattr(obj, attr, phases.wrap(name, getattr(obj, attr)))
    try:
        yield
    finally:
        for obj, attr, original in saved:
            setattr(obj, attr, original)


def profile_top(fn: Callable[..., Any], *args: Any, limit: int = 25) -> list[str]:
    """The top of a cProfile of ``fn(*args)``, by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn(*args)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(limit)
    lines = [line.rstrip() for line in stream.getvalue().splitlines() if line.strip()]
    return [
        re.sub(r"/\S*/site-packages/", "", re.sub(str(REPO) + "/", "", line)) for line in lines[-limit - 1 :]
    ]


def measure(t: Target, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    from ml_platform.lineage import parse_target

    instance = t.seeder.instance
    calls = queries(t)
    out: dict[str, Any] = {}
    # the answers (and an untimed first call of each on this instance)
    answers: dict[str, Any] = {}
    for name, call in calls.items():
        result = call(instance)
        answers[name] = check_result(name, result, t)
        if name == "trace_champion":
            champion_chain = result
        if name == "impact_day":
            impact_day_report = result
        if name == "impact_range":
            impact_range_report = result
    out["answers"] = answers
    # warm and cold, interleaved round by round
    warm: dict[str, list[float]] = {n: [] for n in calls}
    cold: dict[str, list[float]] = {n: [] for n in calls}
    inst_s: list[float] = []
    naive_trace: list[float] = []
    naive_imp: dict[str, list[float]] = {"impact_day": [], "impact_range": []}
    model = model_record(instance, "2013-01-21")
    targets = {n: parse_target(s) for n, s in (("impact_day", IMPACT_DAY), ("impact_range", IMPACT_RANGE))}
    for round_ in range(args.repeats):
        for name, call in calls.items():
            warm[name].append(time_call(call, instance)[1])
            cold[name].append(time_call(on_new_instance, call, instance)[1])
        fresh, took = time_call(new_instance, instance)
        fresh.dispose()
        inst_s.append(took)
        if round_ >= args.naive_repeats:
            continue
        (walk, n_queries), took = time_call(naive_walk, instance, model)
        naive_trace.append(took)
        for name, (assets, days) in targets.items():
            _, took = time_call(naive_impact, instance, assets, days)
            naive_imp[name].append(took)
    assert walk == chain_ids(champion_chain), (walk, chain_ids(champion_chain))
    for name, report in (("impact_day", impact_day_report), ("impact_range", impact_range_report)):
        assets, days = targets[name]
        naive = naive_impact(instance, assets, days)
        assert naive == impact_ids(report), (
            name,
            {k: (len(v), len(impact_ids(report)[k])) for k, v in naive.items()},
        )
    out["warm"] = {n: stats(v) for n, v in warm.items()}
    out["cold"] = {n: stats(v) for n, v in cold.items()}
    out["new_instance"] = stats(inst_s)
    out["naive_walk"] = {**stats(naive_trace), "queries": n_queries}
    out["naive_impact"] = {n: stats(v) for n, v in naive_imp.items()}
    # phases: one wrapped (untimed) call per query, warm
    phases_out: dict[str, Any] = {}
    for name, call in calls.items():
        phases = Phases()
        with wrapped(phases):
            _, took = time_call(call, instance)
        phases_out[name] = {
            "total_s": round(took, 4),
            **phases.rounded(),
            "fetch_calls": phases.calls.get("records.fetch", 0),
        }
    out["phases"] = phases_out
    if profile:
        out["profile"] = {name: profile_top(call, instance) for name, call in calls.items()}
    return out


def run_backend(
    name: str, world: World, instance: Any, sizes: list[int], args: argparse.Namespace, profile_at: int | None
) -> dict[str, Any]:
    counts = count_events(instance)
    seeder = make_seeder(world, instance, args, counts["materializations"])
    out: dict[str, Any] = {"real_world_events": counts, "sizes": {}}
    for size in sizes:
        seeder.grow_to(size)
        counts = count_events(instance)
        target = Target(world, seeder)
        t0 = time.perf_counter()
        result = measure(target, args, profile=profile_at == size)
        result["measure_wall_s"] = round(time.perf_counter() - t0, 1)
        result["setup"] = {
            **counts,
            "synthetic_weeks": seeder.weeks,
            "model_versions": seeder.next_version - 1,
            "days": f"2013-01-01..{(seeder.week - timedelta(days=1)).isoformat()}",
            "seed_s_total": round(seeder.events_s, 1),
            "newest_bento": seeder.bentos[-1][0],
        }
        out["sizes"][str(size)] = result
        w, c = result["warm"], result["cold"]
        log(
            f"{name} N={counts['materializations']} ({counts['check_evaluations']} check evaluations,"
            f" {seeder.weeks} synthetic weeks, seeded in {seeder.events_s:.0f}s): "
            + ", ".join(f"{q} {w[q]['p50_s']:.3f}/{c[q]['p50_s']:.3f}" for q in QUERIES)
            + f"; naive walk {result['naive_walk']['p50_s']:.3f} ({result['naive_walk']['queries']} queries),"
            f" naive impact {result['naive_impact']['impact_day']['p50_s']:.3f}"
            f" ({result['measure_wall_s']}s)"
        )
    return out


@contextmanager
def postgres_instance(work: Path) -> Iterator[tuple[Any, str]]:
    """The production instance file on a throwaway database of the local PostgreSQL (dropped after)."""
    import dagster as dg

    from ml_platform_tests.integration.postgres import throwaway_databases

    home = work / "pg_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster" / "dagster-production.yaml", home / "dagster.yaml")
    try:
        context = throwaway_databases("instance", prefix="mlp_lineage_bench")
        pg, names = context.__enter__()
    except BaseException as exc:  # pytest.skip's exception when no server answers
        raise SystemExit(f"no PostgreSQL: {exc}") from None
    saved = {
        k: os.environ.get(k)
        for k in (
            "DAGSTER_PG_USERNAME",
            "DAGSTER_PG_PASSWORD",
            "DAGSTER_PG_HOST",
            "DAGSTER_PG_DB",
            "DAGSTER_PG_PORT",
        )
    }
    os.environ.update(
        DAGSTER_PG_USERNAME=pg.user,
        DAGSTER_PG_PASSWORD=os.environ.get("PGPASSWORD", ""),
        DAGSTER_PG_HOST=pg.host,
        DAGSTER_PG_DB=names["instance"],
        DAGSTER_PG_PORT=str(pg.port),
    )
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance, names["instance"]
    finally:
        instance.dispose()
        context.__exit__(None, None, None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def postgres(
    world: World, work: Path, sizes: list[int], args: argparse.Namespace, report: dict[str, Any]
) -> None:
    """The real world replayed into a throwaway Postgres instance, then grown and measured."""
    with postgres_instance(work) as (pg, db):
        t0 = time.perf_counter()
        replayed = replay(world.instance, pg)
        took = time.perf_counter() - t0
        log(f"postgres: {replayed} events of the real world replayed into {db} in {took:.1f}s")
        report["backends"]["postgres"] = run_backend(
            "postgres", world, pg, sizes, args, max(sizes) if args.profile else None
        )
        report["backends"]["postgres"]["replayed_events"] = replayed


def replay(source: Any, target: Any) -> int:
    """Every event of the source's runs stored in the target, run by run in the order they ran."""
    runs = sorted(source.get_runs(), key=lambda r: source.get_run_record_by_id(r.run_id).create_timestamp)
    n = 0
    for run in runs:
        for entry in source.all_logs(run.run_id):
            target.event_log_storage.store_event(entry)
            n += 1
    return n


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def summary_text(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"lineage_query {report['date']}: {env['cpu_model']}, nproc {env['nproc']},"
        f" python {env['python']}, dagster {env['dagster']};"
        f" load {report['loadavg_start']} -> {report['loadavg_end']};"
        f" real world built in {report['world']['build_s']}s",
        "",
        "p50 s, warm / cold (max of both):",
        "| backend | materializations | check evals | weeks | " + " | ".join(QUERIES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(QUERIES),
    ]
    for backend, b in report["backends"].items():
        for r in b["sizes"].values():
            s = r["setup"]
            cells = []
            for q in QUERIES:
                w, c = r["warm"][q], r["cold"][q]
                cells.append(f"{w['p50_s']:.3f} / {c['p50_s']:.3f} ({max(w['max_s'], c['max_s']):.3f})")
            head = (
                f"| {backend} | {s['materializations']} | {s['check_evaluations']} | {s['synthetic_weeks']}"
            )
            lines.append(f"{head} | " + " | ".join(cells) + " |")
    lines += ["", "plain alternatives (p50 s); x = lineage warm p50 / plain p50:"]
    for backend, b in report["backends"].items():
        for r in b["sizes"].values():
            s, walk, naive = r["setup"], r["naive_walk"], r["naive_impact"]
            data_phase = r["phases"]["trace_champion"].get(DATA_PHASE)
            day, span = naive["impact_day"]["p50_s"], naive["impact_range"]["p50_s"]
            data_x = ratio(data_phase, walk["p50_s"])
            lines.append(
                f"  {backend} N={s['materializations']}:"
                f" naive walk {walk['p50_s']:.3f} s ({walk['queries']} queries),"
                f" trace data phase {fmt(data_phase, '.3f')} s (x{fmt(data_x, '')}),"
                f" whole trace x{fmt(ratio(r['warm']['trace_champion']['p50_s'], walk['p50_s']), '')};"
                f" naive impact day {day:.3f} s (x{fmt(ratio(r['warm']['impact_day']['p50_s'], day), '')}),"
                f" range {span:.3f} s (x{fmt(ratio(r['warm']['impact_range']['p50_s'], span), '')});"
                f" new instance {r['new_instance']['p50_s']:.3f} s"
            )
    lines += ["", "phases (one warm call each, s; fetch and check_results run inside the others):"]
    for backend, b in report["backends"].items():
        for r in b["sizes"].values():
            n = r["setup"]["materializations"]
            for q, ph in r["phases"].items():
                lines.append(f"  {backend} N={n} {q}: " + ", ".join(f"{k} {v}" for k, v in ph.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="materialization events, comma list"
    )
    parser.add_argument("--pg-sizes", default=",".join(map(str, PG_SIZES)), help="the sizes on Postgres")
    parser.add_argument("--backends", default="sqlite", help="sqlite and/or postgres (~11 min more to 10k)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each query, warm and cold")
    parser.add_argument("--naive-repeats", type=int, default=1, help="timed runs of the plain alternatives")
    parser.add_argument("--deploy-every", type=int, default=4, help="a deployment every N synthetic weeks")
    parser.add_argument("--reingest-every", type=int, default=5, help="a re-ingested raw day every N weeks")
    parser.add_argument("--profile", action="store_true", help="cProfile each query at the largest size")
    parser.add_argument(
        "--snapshot", action="store_true", help="run a copy of the working tree's ml_platform"
    )
    parser.add_argument("--workdir", help="where the instances are built (default: temp, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/lineage_query-<date>.json)")
    args = parser.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(",") if x.strip())
    pg_sizes = sorted(int(x) for x in args.pg_sizes.split(",") if x.strip())
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlp-lineage-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.snapshot:
        src = work / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(
            REPO / "ml_platform", src / "ml_platform", ignore=shutil.ignore_patterns("__pycache__")
        )
        sys.path.insert(0, str(src))
    sys.path.insert(1 if args.snapshot else 0, str(REPO))  # ml_platform_tests (the world's helpers)

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    digest_start = code_digest(imported_package_dir())
    env = environment(args.snapshot)
    env["code_digest"] = digest_start
    log(f"lineage query benchmark, sizes {sizes} (postgres {pg_sizes}), {args.repeats} repeats")
    log(f"workdir {work}\n{json.dumps(env)}")
    from datetime import UTC, datetime

    report: dict[str, Any] = {
        "benchmark": "lineage_query",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "loadavg_start": loadavg(),
        "config": {
            "sizes": sizes,
            "pg_sizes": pg_sizes,
            "repeats": args.repeats,
            "naive_repeats": args.naive_repeats,
            "deploy_every": args.deploy_every,
            "reingest_every": args.reingest_every,
            "impact_day": IMPACT_DAY,
            "impact_range": IMPACT_RANGE,
        },
        "backends": {},
    }
    world = build_world(work / "world")
    report["world"] = {"build_s": world.build_s, "version": world.version, "bento_tag": world.bento_tag}
    log(f"real world built in {world.build_s}s (v{world.version}, {world.bento_tag})")
    try:
        if "postgres" in backends:
            try:
                postgres(world, work, pg_sizes, args, report)
            except Exception as exc:  # recorded; the sqlite part still runs
                log(f"postgres part failed: {exc!r}")
                report["postgres_error"] = repr(exc)
        if "sqlite" in backends:
            report["backends"]["sqlite"] = run_backend(
                "sqlite", world, world.instance, sizes, args, max(sizes) if args.profile else None
            )
    finally:
        world.instance.dispose()
    finish_report(
        report,
        digest_start,
        Path(args.out or REPO / "benchmarks" / "results" / f"lineage_query-{report['date']}.json"),
        summary_text,
        remove=None if args.workdir or args.keep else work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
