"""Retrain sensor benchmark: the cost of one tick (and of one automation evaluation) as history grows.

For each size N (``--days``, default 30, 90, 365 and 730) the script builds, in a temp folder, a
deployment that has been monitoring for N days, **without running the pipeline**: a settings root, a
sqlite ``DagsterInstance`` (``DagsterInstance.local_temp``) and an MLflow sqlite registry, filled with
synthetic but correctly shaped records (``instance.report_runless_asset_event``):

* ``flight_features``: one materialization per day, with the metadata the platform writes
  (``publish.partition_metadata``: storage version, content hash, files, row count, schema and the
  31 upstream pins of a feature day), from 2013-01-01 to the last day. A model needs 8 weeks of
  features and a week of holdout before it can be champion, so the features start 69 days before
  the first drift report: N + 69 daily partitions in all.
* ``drift_report``: one per day for the last N days (the N the tables are labelled with), shaped as
  ``_drift_asset`` writes them: severity (one day in ``WARN_EVERY`` at warn, the rest ok), the warn
  and error features as ``FeatureDrift.to_dict()`` lists, the champion version, the markdown table and
  the inline PNG plot (real ones, made once by ``report.drift_plot``), the 57 lineage pins.
* ``delay_model``: one per model week whose holdout week is complete, tagged with the asset's
  current code version, with ``mlflow/model_version`` (week i is version i) and the 56 pins of its
  training window (``PartitionVersion.to_metadata()``), matching the feature days' content hashes.
  The registry holds the registered model ``delay_model`` with one version per week (no runs, a
  ``file://`` source) and the alias ``champion`` on the newest one.

So the sensor's healthy path runs: it reads the drift reports after its cursor (the warn ones become
``drift_detected`` events and log alerts), finds the champion (fresh: its data ends 7..13 days before
the latest data day), works out the target week (the champion's own week, up to date: the pins of its
56 days match), decides nothing and writes the champion metrics textfile. Each measurement asserts
that path on the tick's result (cursor, skip reason, events written) and a probe tick checks the
champion, the latest data day and the target the sensor computed (by wrapping those functions), so a
run that times an error path fails instead of reporting.

How a tick is evaluated. The daemon does not hand the sensor one long-lived ``DagsterInstance``:
for every tick the code server (``dagster._grpc.impl.get_external_sensor_execution``, in process or
over gRPC) opens a context from ``instance.get_ref()``, so the sensor gets a new instance, disposed
when the context closes. The timed ticks do the same (``build_sensor_context(instance_ref=...)``, the
context closed after the tick): the "daemon" ticks. ``version_record`` remembers delay_model records
per process, keyed by ``(_storage_identity(instance), version)``: the ``repr`` of the instance ref's
event storage data, the same for every instance object made from one ref (the key was
``id(instance)`` before, which never hit in the daemon). So daemon ticks, like the
``*_same_instance`` ticks that pass one instance object to every tick as ``mlp replay`` does (and as
the run at 7334bf7 did), hit the cache from the second tick on, and both kinds share its entries. The
benchmark empties the cache before each size and before each first tick (``first``, the probe and
the first tick of the phases pass), so first ticks start cold, as after a code server (re)start;
``steady_cold`` times steady daemon ticks with the cache emptied before each. Each tick records
whether the champion lookup paged through delay_model records (a miss: the cache's keys changed) or
not (``paged``), and ``daemon_cache`` ticks 20 times in daemon mode after emptying the cache once,
to record how often it hits there (all but the first tick) and how many entries it keeps (one).

Measured for each N (``--repeats`` times each, wall seconds, median and best):

a. ``first``: a tick with an empty cursor (the events table and metrics reset before each). It
   reads at most 500 drift reports (the sensor's page size); for N > 500 the following ``catch_up``
   ticks read the rest, timed too.
b. ``steady``: a tick with nothing new, cache warm (``steady_same_instance`` too; ``steady_cold``:
   daemon ticks with the cache emptied before each, what the first tick after a restart pays).
c. ``new_report``: a tick after one new (ok) report (``new_report_same_instance`` too);
   ``new_error``: after one new error-severity report, which the sensor turns into a drift trigger
   and defers (the target is up to date), with a ``drift_detected`` and a ``retrain_deferred`` event
   appended and two log alerts. New reports are re-reports of the last day, so the latest data day
   and the target stay put.
d. ``automation``: ``dg.evaluate_automation_conditions`` over the definitions' automated assets (the
   daily graph) at the last day + 1 00:30 UTC, without a cursor and then with the previous cursor.
e. ``plain``: the irreducible read in the same run: ``instance.fetch_materializations`` of the
   drift_report records after the cursor (limit 500, ascending), as the sensor's first query does,
   for the first tick (after 0), the steady tick and the tick with one new report.

A tick is ``dg.build_sensor_context(...)`` plus ``sensor.evaluate_tick(context)`` (the two are
recorded separately too; a daemon tick's new instance is made inside the evaluation, by the sensor's
first use of ``context.instance``, and ``instance_from_ref`` times making and disposing one alone).
The rounds interleave the plain read and the ticks. A separate pass times the tick's phases (drift
read, latest data day, champion, target, events table read and append, textfile write) by wrapping
the sensor module's functions.

``--history-days`` (default 365) also measures the steady tick after the monitoring events table has
grown by ``--history-commits`` appends (one commit per sensor decision or finding, as the sensor
writes it). At 7334bf7 the sensor read the whole table every tick to count retrain requests; it now
keeps the counts in its cursor, so the table's size should not matter.

``--champion-depth`` also times the steady tick (N=30) with 100, 999, 1000 and 1500 delay_model
materializations newer than the champion's (challengers of its week, rejected): daemon ticks with
the cache emptied before each (``cold``: the lookup pages back through them, a page of 10 then pages
of 200), daemon ticks after one untimed cold tick (``daemon``: the cache answers, so they should be
flat) and one-instance ticks. At 7334bf7 the lookup searched only the newest 1000 and every tick
failed at 1000; with the ``id(instance)`` cache every daemon tick paged (~1 ms per newer record).

``--snapshot`` runs a copy of the working tree's ``ml_platform`` (not HEAD's: the tree may hold the
monitoring code being measured), so edits to the checkout during the run cannot change what is
measured; the sources' digest and the uncommitted files are recorded at the start, the digest again
at the end.

Usage::

    .venv/bin/python benchmarks/sensor_tick.py [--days 30,90,365,730] [--repeats 5] [--snapshot]
        [--history-days 365] [--history-commits 100,500] [--champion-depth] [--keep] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
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

DAYS = (30, 90, 365, 730)
START = date(2013, 1, 1)
WINDOW_WEEKS = 8
#: One drift report in this many is at warn severity; the others are ok.
WARN_EVERY = 17
#: The sensor's page of drift reports (``_drift_triggers``' limit).
PAGE = 500
FEATURES = "flight_features"
DRIFT = "drift_report"
MODEL = "delay_model"
PROFILES = "flight_feature_profiles"
ROWS_PER_DAY = 923
HEALTHY = "no drift error, champion fresh"
#: Daemon ticks after emptying the champion cache once (all but the first should hit).
DAEMON_CACHE_TICKS = 20
#: delay_model records newer than the champion's, for ``--champion-depth``.
DEPTHS = (100, 999, 1000, 1500)
UP_TO_DATE = "is already trained from the current feature versions by the current code"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def environment(snapshot: bool) -> dict[str, Any]:
    return common_environment(
        snapshot,
        ("dagster", "mlflow", "deltalake", "polars", "sqlalchemy", "matplotlib"),
        mlp_env={k: v for k, v in os.environ.items() if k.startswith("MLP_")},
    )


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(values), 5) if values else None,
        "min_s": round(min(values), 5) if values else None,
        "runs_s": [round(v, 5) for v in values],
    }


# --------------------------------------------------------------------------------------------------
# Synthetic history
# --------------------------------------------------------------------------------------------------


def content_hash(table: str, day: str, revision: int = 0) -> str:
    return hashlib.sha256(f"{table}/{day}/{revision}".encode()).hexdigest()


def pin(table: str, day: str, table_version: int, rows: int = ROWS_PER_DAY, revision: int = 0) -> Any:
    from ml_platform.lib.storage import PartitionVersion

    digest = content_hash(table, day, revision)
    return PartitionVersion(
        table=table,
        partition=day,
        table_version=table_version,
        content_hash=digest,
        row_count=rows,
        files=(f"_partition={day}/part-00001-{digest[:8]}-{digest[8:12]}-c000.zstd.parquet",),
    )


@dataclass
class Blobs:
    """Drift results, markdown tables and plots, made once with the platform's own report code."""

    results: dict[str, list[Any]]
    tables: dict[str, str]
    plots: dict[str, str]
    feature_frame: Any


def drift_results(policy: Any, severity: str) -> list[Any]:
    """A FeatureDrift per judged feature: quiet scores, ``temp`` at warn or error for those days."""
    from ml_platform.lib.monitoring.drift import MEASURES, SEVERITY_RANK, FeatureDrift

    categorical = {"carrier", "origin", "dest", "route"}
    quiet = {"psi": 0.031, "ks": 0.072, "mean_shift": 0.41, "missing": 0.0, "tvd": 0.044}
    out = []
    for feature in policy.features:
        kind = "categorical" if feature in categorical else "numeric"
        scores = {m: quiet[m] for m in MEASURES[kind]}
        if feature == "temp" and severity != "ok":
            scores["mean_shift"] = 3.62 if severity == "warn" else 6.73
        thresholds = {m: policy.threshold(feature, m) for m in scores}
        verdicts = [t.judge(scores[m]) for m, t in thresholds.items() if t is not None]
        worst = max(verdicts, key=SEVERITY_RANK.__getitem__, default="ok")
        out.append(FeatureDrift(feature, kind, scores, thresholds, worst, 49_425, ROWS_PER_DAY))  # type: ignore[arg-type]
    assert max((r.severity for r in out), key=SEVERITY_RANK.__getitem__) == severity, severity
    return out


def make_blobs(policy: Any) -> Blobs:
    import polars as pl

    from ml_platform.defs.monitoring.assets import _png_markdown
    from ml_platform.lib.monitoring import report
    from ml_platform.lib.training.data import CLASSIFICATION_TARGET, INPUT_COLUMNS, REGRESSION_TARGET

    results = {s: drift_results(policy, s) for s in ("ok", "warn", "error")}
    tables = {s: report.markdown_table(r) for s, r in results.items()}
    plots = {
        s: _png_markdown(report.drift_plot(r, "drift_report[2014-01-01] vs champion v1"), "drift")
        for s, r in results.items()
    }
    columns = ["flight_id", *INPUT_COLUMNS, REGRESSION_TARGET, CLASSIFICATION_TARGET, "weather_missing"]
    frame = pl.DataFrame(
        schema={c: pl.String if c in ("carrier", "origin", "dest") else pl.Float64 for c in columns}
    )
    return Blobs(results, tables, plots, frame)


@dataclass
class History:
    """One deployment with N days of monitoring history."""

    n: int
    root: Path
    settings: Any
    instance: Any
    defs: Any
    sensor: Any
    days: list[str]
    drift_days: list[str]
    weeks: list[str]
    versions: dict[str, str]
    model_code_version: str
    feature_pins: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {d: i for i, d in enumerate(self.days)}
        self.ref = self.instance.get_ref()
        self.warn_days = {d for k, d in enumerate(self.drift_days) if k % WARN_EVERY == WARN_EVERY - 1}

    @property
    def last_day(self) -> str:
        return self.days[-1]

    @property
    def champion(self) -> str:
        return self.versions[self.weeks[-1]]

    @property
    def evaluation_time(self) -> datetime:
        return datetime.combine(date.fromisoformat(self.last_day) + timedelta(days=1), day_time(0, 30), UTC)


def report_event(
    instance: Any, asset: str, day: str, metadata: dict[str, Any], tags: dict[str, str] | None = None
) -> None:
    import dagster as dg

    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=day, metadata=metadata, tags=tags)
    )


def feature_metadata(h: History, day: str, blobs: Blobs) -> dict[str, Any]:
    from ml_platform.defs.publish import BuildInfo, partition_metadata

    d = date.fromisoformat(day)
    flights = [(d - timedelta(days=k)).isoformat() for k in range(28, -1, -1)]
    weather = [(d - timedelta(days=k)).isoformat() for k in (1, 0)]
    first = h.days[0]
    upstream = [pin("validated_flights", x, h.index[x] + 1) for x in flights if x >= first] + [
        pin("validated_weather", x, h.index[x] + 1, rows=72) for x in weather if x >= first
    ]
    return partition_metadata(
        h.feature_pins[day],
        blobs.feature_frame,
        table_uri=str(h.settings.delta_root / FEATURES),
        upstream=upstream,
        code_version="bench-features",
        build=BuildInfo("bench"),
    )


def drift_metadata(h: History, day: str, severity: str, blobs: Blobs, table_version: int) -> dict[str, Any]:
    import dagster as dg

    from ml_platform.defs.monitoring import assets as mon
    from ml_platform.lib import metadata as keys

    week = champion_week(h, day)
    window = week_days(h, week)
    results = blobs.results[severity]
    version = pin(DRIFT, day, table_version, rows=len(results), revision=table_version)
    reference = [pin(PROFILES, x, h.index[x] + 1, rows=1) for x in window]
    current = pin(PROFILES, day, h.index[day] + 1, rows=1)
    return {
        **mon._storage_metadata(version, str(h.settings.delta_root / DRIFT)),
        mon.DRIFT_SEVERITY: severity,
        mon.DRIFT_ERRORS: dg.MetadataValue.json([r.to_dict() for r in results if r.severity == "error"]),
        mon.DRIFT_WARNINGS: dg.MetadataValue.json([r.to_dict() for r in results if r.severity == "warn"]),
        mon.DRIFT_MODEL_VERSION: h.versions[week],
        mon.DRIFT_MODEL_PARTITION: week,
        mon.DRIFT_REFERENCE: f"{window[0]}..{window[-1]} ({len(window)} feature partitions as the champion"
        " trained on them)",
        "drift/table": dg.MetadataValue.md(blobs.tables[severity]),
        "drift/plot": dg.MetadataValue.md(blobs.plots[severity]),
        keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
            [{**p.to_metadata(), "role": "reference"} for p in reference]
            + [{**current.to_metadata(), "role": "current"}]
        ),
        keys.LINEAGE_CODE_VERSION: "bench-drift",
        keys.LINEAGE_GIT_COMMIT: "bench",
    }


def model_metadata(h: History, week: str) -> dict[str, Any]:
    import dagster as dg

    from ml_platform.lib import metadata as keys

    v = h.versions[week]
    days = week_days(h, week)
    trials = "\n".join(
        ["| trial | state | validation loss | epochs | params |", "|---|---|---|---|---|"]
        + [f"| {i} | COMPLETE | 0.{4100 + i} | {7 + i % 3} | lr=0.00{i + 1}, hidden=64 |" for i in range(6)]
    )
    return {
        keys.MLFLOW_EXPERIMENT_ID: "1",
        keys.MLFLOW_RUN_ID: hashlib.md5(week.encode()).hexdigest(),
        keys.MLFLOW_RUN_URL: dg.MetadataValue.url(f"http://127.0.0.1:5000/#/experiments/1/runs/{week}"),
        keys.MLFLOW_MODEL_NAME: MODEL,
        keys.MLFLOW_MODEL_VERSION: v,
        keys.MLFLOW_MODEL_URI: f"models:/{MODEL}/{v}",
        keys.MLFLOW_MODEL_URL: dg.MetadataValue.url(f"http://127.0.0.1:5000/#/models/{MODEL}/versions/{v}"),
        keys.TRAINING_WINDOW: f"{days[0]}..{days[-1]} ({len(days)} feature partitions)",
        keys.TRAINING_ROWS: 41_199,
        keys.TRAINING_VALIDATION_ROWS: 6_302,
        keys.TRAINING_CONFIG: dg.MetadataValue.json(
            {"max_epochs": 15, "patience": 3, "batch_size": 512, "seed": 0, "best_epoch": 4, "epochs": 7}
        ),
        keys.TRAINING_WEIGHTS_DIGEST: hashlib.sha256(week.encode()).hexdigest(),
        keys.TRAINING_SAMPLES_PER_SECOND: 177_101.0,
        keys.TRAINING_DEVICE: "cpu x1",
        "training/best_val_loss": 0.4123,
        keys.HPO_STUDY: f"{MODEL}-{week}",
        keys.HPO_TRIALS: dg.MetadataValue.md(trials),
        keys.LINEAGE_UPSTREAM: dg.MetadataValue.json([h.feature_pins[d].to_metadata() for d in days]),
        keys.LINEAGE_CODE_VERSION: h.model_code_version,
        keys.LINEAGE_GIT_COMMIT: "bench",
        keys.REGISTRY_EVENT: hashlib.sha1(week.encode()).hexdigest(),
    }


@functools.cache
def _week_days(first: str, last_exclusive: str, week: str) -> tuple[str, ...]:
    from ml_platform.partitions import build_partitioning, upstream_keys
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings(
        root_dir=Path(tempfile.gettempdir()),
        partition_start=date.fromisoformat(first),
        partition_end=date.fromisoformat(last_exclusive),
        training_window_weeks=WINDOW_WEEKS,
    )
    parts = build_partitioning(settings)
    return tuple(upstream_keys(parts.training_window, parts.weekly, week, parts.daily))


def week_days(h: History, week: str) -> list[str]:
    """The training window of ``week``, from the platform's own mapping."""
    end = (date.fromisoformat(h.last_day) + timedelta(days=1)).isoformat()
    return list(_week_days(h.days[0], end, week))


def champion_week(h: History, day: str) -> str:
    """The champion when ``day``'s report was made: the newest week whose holdout ended before it."""
    d = date.fromisoformat(day)
    done = [w for w in h.weeks if date.fromisoformat(w) + timedelta(days=6) < d]
    return done[-1] if done else h.weeks[0]


def build_history(n: int, root: Path, blobs: Blobs) -> History:
    """The settings root, instance, registry and synthetic records of ``n`` days of monitoring."""
    import dagster as dg
    import mlflow

    from ml_platform.definitions import build_definitions
    from ml_platform.defs.monitoring.sensors import SENSOR
    from ml_platform.partitions import build_partitioning, first_model_week
    from ml_platform.settings import PlatformSettings

    t0 = time.perf_counter()
    first_drift = first_model_week(START, WINDOW_WEEKS) + timedelta(days=7)
    last = first_drift + timedelta(days=n - 1)
    settings = PlatformSettings(
        root_dir=root,
        partition_start=START,
        partition_end=last + timedelta(days=1),
        executor="in_process",
        git_commit="bench",
        training_window_weeks=WINDOW_WEEKS,
        champion_max_age_days=21,
        notify=["log"],
        sensors_running=False,
    )
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(tempdir=str(root / "dagster"))
    now = datetime.combine(last + timedelta(days=1), day_time(0, 30), UTC)
    defs = build_definitions(settings, clock=lambda: now)
    sensor = defs.resolve_sensor_def(SENSOR)
    model_def = defs.resolve_assets_def(MODEL)
    code = model_def.code_versions_by_key[dg.AssetKey(MODEL)]
    assert code, "delay_model has no code version"
    parts = build_partitioning(settings)
    days = [(START + timedelta(days=i)).isoformat() for i in range((last - START).days + 1)]
    weeks = [
        w for w in parts.weekly.get_partition_keys() if date.fromisoformat(w) + timedelta(days=6) <= last
    ]
    h = History(
        n=n,
        root=root,
        settings=settings,
        instance=instance,
        defs=defs,
        sensor=sensor,
        days=days,
        drift_days=days[-n:],
        weeks=weeks,
        versions={w: str(i + 1) for i, w in enumerate(weeks)},
        model_code_version=code,
        feature_pins={d: pin(FEATURES, d, i + 1) for i, d in enumerate(days)},
    )
    assert h.drift_days[0] == first_drift.isoformat()
    h.setup["definitions_s"] = round(time.perf_counter() - t0, 3)

    # the registry: one version per model week, the champion alias on the newest
    t = time.perf_counter()
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    client.create_registered_model(MODEL)
    source = root / "model_source"
    source.mkdir(exist_ok=True)
    for week in weeks:
        mv = client.create_model_version(MODEL, source=source.as_uri())
        assert str(mv.version) == h.versions[week], (mv.version, week)
    client.set_registered_model_alias(MODEL, "champion", h.champion)
    h.setup["registry_s"] = round(time.perf_counter() - t, 3)

    # the events, in the order the platform would write them
    t = time.perf_counter()
    holdout_done = {(date.fromisoformat(w) + timedelta(days=6)).isoformat(): w for w in weeks}
    drift_index = {d: k for k, d in enumerate(h.drift_days)}
    counts = {FEATURES: 0, DRIFT: 0, MODEL: 0, "warn_reports": 0}
    for day in days:
        report_event(instance, FEATURES, day, feature_metadata(h, day, blobs))
        counts[FEATURES] += 1
        if day in drift_index:
            k = drift_index[day]
            severity = "warn" if day in h.warn_days else "ok"
            counts["warn_reports"] += severity == "warn"
            report_event(instance, DRIFT, day, drift_metadata(h, day, severity, blobs, k + 1))
            counts[DRIFT] += 1
        if day in holdout_done:
            week = holdout_done[day]
            report_event(
                instance,
                MODEL,
                week,
                model_metadata(h, week),
                tags={"dagster/code_version": h.model_code_version},
            )
            counts[MODEL] += 1
    h.setup["events_s"] = round(time.perf_counter() - t, 3)
    h.setup["events"] = counts
    h.setup["daily_partitions"] = len(parts.daily.get_partition_keys())
    h.setup["days"] = f"{days[0]}..{days[-1]}"
    h.setup["drift_days"] = f"{h.drift_days[0]}..{h.drift_days[-1]}"
    h.setup["weeks"] = f"{weeks[0]}..{weeks[-1]} ({len(weeks)})"
    h.setup["assets"] = len(defs.resolve_asset_graph().get_all_asset_keys())
    h.setup["automated_assets"] = sorted(
        k.to_user_string()
        for k in defs.resolve_asset_graph().get_all_asset_keys()
        if defs.resolve_asset_graph().get(k).automation_condition is not None
    )
    h.setup["asset_checks"] = len(defs.resolve_asset_graph().asset_check_keys)
    h.setup["champion"] = f"v{h.champion} ({MODEL}[{weeks[-1]}])"
    clear_model_cache()  # each size starts cold (the key names its own storage anyway)
    return h


def add_report(h: History, severity: str, blobs: Blobs, revision: int) -> int:
    """A new drift report of the last day (a rematerialization); returns its storage id."""
    import dagster as dg

    report_event(
        h.instance, DRIFT, h.last_day, drift_metadata(h, h.last_day, severity, blobs, 10_000 + revision)
    )
    (record,) = h.instance.fetch_materializations(dg.AssetKey(DRIFT), limit=1).records
    return record.storage_id


# --------------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------------


def model_cache() -> dict[Any, Any] | None:
    """``version_record``'s per-process delay_model records, by (event storage identity, version)
    (None where the code has no cache)."""
    from ml_platform.defs.monitoring import assets

    return getattr(assets, "_MODEL_RECORDS", None)


def clear_model_cache() -> None:
    cache = model_cache()
    if cache is not None:
        cache.clear()


def tick(
    h: History, cursor: str | None, *, same_instance: bool = False, clear_cache: bool = False
) -> tuple[Any, dict[str, float]]:
    """One tick: by default as the daemon evaluates it, with a new instance from the ref.

    ``same_instance``: the one instance object, as ``mlp replay`` passes it. Either way the champion
    cache is keyed by the event storage, so it answers from the second tick on; ``clear_cache``
    empties it first (untimed), for a cold tick. ``paged`` is 1 when the champion lookup read
    delay_model records (a miss: the cache's keys changed), 0 when the cache answered.
    """
    import dagster as dg

    # so that the checks see this tick's textfile, not an earlier one's
    (h.settings.metrics_dir / "champion.prom").unlink(missing_ok=True)
    if clear_cache:
        clear_model_cache()
    cache = model_cache()
    cached = set(cache) if cache is not None else set()
    t0 = time.perf_counter()
    context = dg.build_sensor_context(
        instance=h.instance if same_instance else None,
        instance_ref=None if same_instance else h.ref,
        cursor=cursor,
        definitions=h.defs,
        sensor_name=h.sensor.name,
        resources=h.defs.resources,
    )
    t1 = time.perf_counter()
    with context:  # the code server closes it, which disposes a daemon tick's instance
        data = h.sensor.evaluate_tick(context)
    t2 = time.perf_counter()
    paged = float(cache is None or set(cache) != cached)
    return data, {"tick_s": t2 - t0, "context_s": t1 - t0, "evaluate_s": t2 - t1, "paged": paged}


def plain_read(h: History, after: int) -> tuple[int, float]:
    """The irreducible read: the drift_report records after ``after`` (the sensor's first query)."""
    import dagster as dg

    t0 = time.perf_counter()
    records = h.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(DRIFT), after_storage_id=after),
        limit=PAGE,
        ascending=True,
    ).records
    return len(records), time.perf_counter() - t0


def checked_read(h: History, after: int, expect: int) -> float:
    n, took = plain_read(h, after)
    assert n == expect, (n, expect)
    return took


def after_id(cursor: str | None) -> int:
    from ml_platform.lib.monitoring.retrain import RetrainState

    return RetrainState.from_json(cursor).after_storage_id


def drift_ids(h: History) -> list[int]:
    import dagster as dg

    out: list[int] = []
    after = 0
    while True:
        records = h.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(DRIFT), after_storage_id=after),
            limit=1000,
            ascending=True,
        ).records
        if not records:
            return out
        out += [r.storage_id for r in records]
        after = out[-1]


def events_frame(h: History) -> Any:
    from ml_platform.lib.monitoring.events import MonitoringEvents

    return MonitoringEvents(h.settings.monitoring_events_table).to_frame()


def reset_outputs(h: History) -> None:
    """The events table and the metrics textfiles, as before the sensor's first tick."""
    shutil.rmtree(h.settings.monitoring_events_table, ignore_errors=True)
    shutil.rmtree(h.settings.metrics_dir, ignore_errors=True)


def check_healthy(h: History, data: Any, cursor_before: str | None, expect_after: int) -> None:
    """The tick read up to ``expect_after``, requested nothing and found the champion fresh."""
    assert not data.run_requests, data.run_requests
    assert data.skip_message == HEALTHY, data.skip_message
    assert after_id(data.cursor) == expect_after, (
        after_id(cursor_before),
        after_id(data.cursor),
        expect_after,
    )
    text = (h.settings.metrics_dir / "champion.prom").read_text()
    assert f'model_version="{h.champion}"' in text, text


def first_ticks(h: History) -> tuple[str, list[dict[str, float]], int]:
    """From an empty cursor until the cursor stops moving: the first tick (cache emptied: cold), then
    the catch-up ticks (the same code server: warm)."""
    ids = drift_ids(h)
    cursor: str | None = None
    ticks = []
    while True:
        before = after_id(cursor)
        read = [i for i in ids if i > before][:PAGE]
        data, took = tick(h, cursor, clear_cache=cursor is None)
        expect = read[-1] if read else before
        check_healthy(h, data, cursor, expect)
        cursor = data.cursor
        ticks.append(took)
        if not read:
            break
    ticks.pop()  # the last one read nothing: that is a steady tick, not a catch-up
    warn = len(h.warn_days)
    frame = events_frame(h)
    kinds = frame["kind"].to_list()
    assert kinds.count("drift_detected") == warn and len(kinds) == warn, (kinds, warn)
    assert cursor is not None
    return cursor, ticks, len(ticks) - 1


class Spies(Phases):
    """Wraps the sensor's steps to time them and to see what they return."""

    #: The sensor module's steps (``_decay_triggers`` where the checkout has live performance).
    NAMES = (
        "_drift_triggers",
        "_decay_triggers",
        "latest_data_day",
        "find_champion",
        "current_target",
        "_send",
    )

    @contextlib.contextmanager
    def installed(self) -> Iterator[Spies]:
        from ml_platform.defs.monitoring import sensors
        from ml_platform.lib.monitoring import metrics, retrain
        from ml_platform.lib.monitoring.events import MonitoringEvents
        from ml_platform.lib.registry.promotion import ModelRegistry

        patches: list[tuple[Any, str, str, Any]] = [
            (sensors, n, n, getattr(sensors, n)) for n in self.NAMES if hasattr(sensors, n)
        ]
        patches += [
            (retrain, "decide", "decide", retrain.decide),
            (metrics, "write_textfile", "textfile_write", metrics.write_textfile),
            (MonitoringEvents, "append", "events_append", MonitoringEvents.append),
            (MonitoringEvents, "to_frame", "events_read", MonitoringEvents.to_frame),
        ]
        # inside find_champion and current_target (reported apart, not added to the tick's sum)
        patches += [
            (ModelRegistry, "champion", "find_champion/mlflow_alias", ModelRegistry.champion),
            (
                sensors,
                "latest_materializations",
                "current_target/model_record",
                sensors.latest_materializations,
            ),
            (sensors, "upstream_keys", "current_target/window_mapping", sensors.upstream_keys),
            (sensors, "RecordedVersions", "current_target/feature_pins", sensors.RecordedVersions),
        ]
        for owner, name, label, fn in patches:
            setattr(owner, name, self.wrap(label, fn))
        try:
            yield self
        finally:
            for owner, name, _, fn in patches:
                setattr(owner, name, fn)


def profiled(
    h: History, cursor: str | None, *, same_instance: bool = False, clear_cache: bool = False
) -> tuple[Any, dict[str, float], Spies]:
    spies = Spies()
    with spies.installed():
        data, took = tick(h, cursor, same_instance=same_instance, clear_cache=clear_cache)
    return data, took, spies


def phases(took: dict[str, float], spies: Spies) -> dict[str, float]:
    out = {k: round(v, 5) for k, v in spies.seconds.items()}
    top = sum(v for k, v in spies.seconds.items() if "/" not in k)
    out["context"] = round(took["context_s"], 5)
    out["rest_of_tick"] = round(took["tick_s"] - top - took["context_s"], 5)
    out["tick"] = round(took["tick_s"], 5)
    out["paged"] = took["paged"]
    return out


def probe(h: History) -> dict[str, Any]:
    """An untimed first tick that checks what the sensor computed: champion, latest day, target."""
    from ml_platform.lib.monitoring.retrain import Target

    reset_outputs(h)
    data, _, spies = profiled(h, None, clear_cache=True)
    champion = spies.returned["find_champion"]
    assert champion is not None and champion.version == h.champion, champion
    assert champion.partition == h.weeks[-1] and len(champion.pins) == WINDOW_WEEKS * 7, champion
    assert spies.returned["latest_data_day"].isoformat() == h.last_day
    target = spies.returned["current_target"]
    assert target == Target(h.weeks[-1], True, target.reason) and UP_TO_DATE in target.reason, target
    triggers, findings, _ = spies.returned["_drift_triggers"]
    assert not triggers and findings and all(f["severity"] == "warn" for f in findings), findings
    assert data.skip_message == HEALTHY, data.skip_message
    age = (date.fromisoformat(h.last_day) - champion.window_end).days
    return {
        "champion": f"v{champion.version} {MODEL}[{champion.partition}],"
        f" trained through {champion.window_end}",
        "champion_age_days": age,
        "latest_data_day": h.last_day,
        "target": f"{target.partition} up_to_date={target.up_to_date}",
        "first_page_findings": len(findings),
        "skip_reason": data.skip_message,
    }


def measure(h: History, args: argparse.Namespace, blobs: Blobs) -> dict[str, Any]:
    import dagster as dg

    out: dict[str, Any] = {"setup": h.setup, "loadavg_before": loadavg()}
    out["checks"] = probe(h)
    ids = drift_ids(h)
    log(f"  probe: {json.dumps(out['checks'])}")

    # (a) first tick from an empty cursor, with the plain read of the same first page
    first: list[float] = []
    catch_up: list[float] = []
    context_s: list[float] = []
    plain_first: list[float] = []
    cursor = ""
    for r in range(args.repeats):
        # the plain read goes before the tick in even rounds and after it in odd ones
        if r % 2 == 0:
            plain_first.append(checked_read(h, 0, min(PAGE, len(ids))))
        reset_outputs(h)
        cursor, ticks, _pages = first_ticks(h)
        first.append(ticks[0]["tick_s"])
        context_s.append(ticks[0]["context_s"])
        catch_up += [t["tick_s"] for t in ticks[1:]]
        if r % 2 == 1:
            plain_first.append(checked_read(h, 0, min(PAGE, len(ids))))
    out["first"] = {**stats(first), "context": stats(context_s), "reads": min(PAGE, h.n)}
    out["catch_up"] = {**stats(catch_up), "ticks_per_first_sync": len(catch_up) // args.repeats}
    out["plain_first"] = stats(plain_first)

    # (b) steady tick and (c) a tick after one new ok report, interleaved with their plain reads;
    # daemon ticks, the cache warm since the first ticks (it is keyed by the storage, not the object)
    steady: list[float] = []
    new: list[float] = []
    plain_steady: list[float] = []
    plain_new: list[float] = []
    steady_context: list[float] = []
    paged = {"steady": 0.0, "new_report": 0.0}
    for r in range(args.repeats):
        after = after_id(cursor)
        if r % 2 == 0:
            plain_steady.append(checked_read(h, after, 0))
        data, t = tick(h, cursor)
        check_healthy(h, data, cursor, after)
        steady.append(t["tick_s"])
        steady_context.append(t["context_s"])
        paged["steady"] += t["paged"]
        cursor = data.cursor
        if r % 2 == 1:
            plain_steady.append(checked_read(h, after, 0))
        new_id = add_report(h, "ok", blobs, r)
        if r % 2 == 0:
            plain_new.append(checked_read(h, after, 1))
        data, t = tick(h, cursor)
        check_healthy(h, data, cursor, new_id)
        new.append(t["tick_s"])
        paged["new_report"] += t["paged"]
        cursor = data.cursor
        if r % 2 == 1:
            plain_new.append(checked_read(h, after, 1))
    out["steady"] = {**stats(steady), "context": stats(steady_context), "paged": paged["steady"]}
    out["new_report"] = {**stats(new), "paged": paged["new_report"]}
    out["plain_steady"] = stats(plain_steady)
    out["plain_new"] = stats(plain_new)

    # (b'') steady daemon ticks with the cache emptied before each: the first tick after a restart
    cold: list[float] = []
    cold_paged = 0.0
    for _ in range(args.repeats):
        data, t = tick(h, cursor, clear_cache=True)
        check_healthy(h, data, cursor, after_id(cursor))
        cold.append(t["tick_s"])
        cold_paged += t["paged"]
    out["steady_cold"] = {**stats(cold), "paged": cold_paged}

    # (b', c'') the same with one instance object (mlp replay); the cache is shared with the daemon
    # ticks (same storage), and warm already
    data, _ = tick(h, cursor, same_instance=True)  # untimed, as before a measurement
    check_healthy(h, data, cursor, after_id(cursor))
    same_steady: list[float] = []
    same_new: list[float] = []
    paged = {"steady": 0.0, "new_report": 0.0}
    for r in range(args.repeats):
        data, t = tick(h, cursor, same_instance=True)
        check_healthy(h, data, cursor, after_id(cursor))
        same_steady.append(t["tick_s"])
        paged["steady"] += t["paged"]
        new_id = add_report(h, "ok", blobs, 50 + r)
        data, t = tick(h, cursor, same_instance=True)
        check_healthy(h, data, cursor, new_id)
        same_new.append(t["tick_s"])
        paged["new_report"] += t["paged"]
        cursor = data.cursor
    out["steady_same_instance"] = {**stats(same_steady), "paged": paged["steady"]}
    out["new_report_same_instance"] = {**stats(same_new), "paged": paged["new_report"]}

    # what a daemon tick adds: a new instance from the ref, disposed afterwards
    made: list[float] = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        dg.DagsterInstance.from_ref(h.ref).dispose()
        made.append(time.perf_counter() - t0)
    out["instance_from_ref"] = stats(made)

    # the cache as a daemon process meets it: emptied once, then ticks without emptying it (all but
    # the first should hit, and it should keep one entry: one storage, one champion)
    cache = model_cache()
    if cache is not None:
        clear_model_cache()
        hits = 0
        for _ in range(DAEMON_CACHE_TICKS):
            data, t = tick(h, cursor, clear_cache=False)
            check_healthy(h, data, cursor, after_id(cursor))
            hits += t["paged"] == 0.0
        out["daemon_cache"] = {"ticks": DAEMON_CACHE_TICKS, "hits": hits, "entries_after": len(cache)}
        log(f"  daemon cache: {hits} hits in {DAEMON_CACHE_TICKS} ticks, {len(cache)} entries")

    # phases of each kind of tick (wrapped, a separate pass)
    reset_outputs(h)
    data, took, spies = profiled(h, None, clear_cache=True)  # a first tick: cold
    out["phases_first"] = phases(took, spies)
    sync = data.cursor
    while True:  # catch up (N > 500) untimed
        data, _ = tick(h, sync)
        if after_id(data.cursor) == after_id(sync):
            break
        sync = data.cursor
    steady_phases = []
    for _ in range(args.repeats):
        data, took, spies = profiled(h, cursor)
        assert data.skip_message == HEALTHY
        steady_phases.append(phases(took, spies))
    out["phases_steady"] = {k: median([p.get(k, 0.0) for p in steady_phases]) for k in steady_phases[0]}
    profiled(h, cursor, same_instance=True)  # untimed, as before a measurement
    same_phases = []
    for _ in range(args.repeats):
        data, took, spies = profiled(h, cursor, same_instance=True)
        assert data.skip_message == HEALTHY
        same_phases.append(phases(took, spies))
    out["phases_steady_same_instance"] = {
        k: median([p.get(k, 0.0) for p in same_phases]) for k in same_phases[0]
    }
    new_phases = []
    for r in range(min(args.repeats, 3)):
        new_id = add_report(h, "ok", blobs, 100 + r)
        data, took, spies = profiled(h, cursor)
        check_healthy(h, data, cursor, new_id)
        cursor = data.cursor
        new_phases.append(phases(took, spies))
    out["phases_new_report"] = {k: median([p.get(k, 0.0) for p in new_phases]) for k in new_phases[0]}

    # (d) automation: one evaluation without a cursor, then with the previous one
    auto_first: list[float] = []
    auto_next: list[float] = []
    requested = []
    for _ in range(args.automation_repeats):
        t0 = time.perf_counter()
        result = dg.evaluate_automation_conditions(
            defs=h.defs, instance=h.instance, evaluation_time=h.evaluation_time
        )
        auto_first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        again = dg.evaluate_automation_conditions(
            defs=h.defs, instance=h.instance, cursor=result.cursor, evaluation_time=h.evaluation_time
        )
        auto_next.append(time.perf_counter() - t0)
        requested.append([result.total_requested, again.total_requested])
    out["automation_first"] = stats(auto_first)
    out["automation_next"] = stats(auto_next)
    out["automation_requested"] = requested

    # the events table's history: steady ticks after the sensor has appended many times
    if h.n == args.history_days and args.history_commits:
        out["events_history"] = events_history(h, cursor, args)

    # (c') a new error report: a drift trigger, deferred because the target is up to date
    err: list[float] = []
    err_phases = []
    for r in range(args.repeats + 1):
        new_id = add_report(h, "error", blobs, 1000 + r)
        seen = events_frame(h).height
        if r == args.repeats:
            data, took, spies = profiled(h, cursor)
            err_phases.append(phases(took, spies))
        else:
            data, took = tick(h, cursor)
            err.append(took["tick_s"])
        assert not data.run_requests and UP_TO_DATE in (data.skip_message or ""), data.skip_message
        assert after_id(data.cursor) == new_id
        kinds = events_frame(h)["kind"].to_list()[seen:]
        assert kinds == ["drift_detected", "retrain_deferred"], kinds
        cursor = data.cursor
    out["new_error"] = {**stats(err), "skip_reason": data.skip_message}
    out["phases_new_error"] = err_phases[0]
    out["loadavg_after"] = loadavg()
    return out


def events_history(h: History, cursor: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steady ticks after ``--history-commits`` appends to the events table (restored afterwards)."""
    from ml_platform.lib.monitoring.events import MonitoringEvent, MonitoringEvents

    table = h.settings.monitoring_events_table
    backup = h.root / "events_backup"
    shutil.copytree(table, backup)
    events = MonitoringEvents(table)
    at = h.evaluation_time - timedelta(days=400)
    done = 0
    out: dict[str, Any] = {}
    t_append = time.perf_counter()
    for target in sorted(args.history_commits):
        while done < target:
            requested = done % 10 == 9
            kind = "retrain_requested" if requested else "drift_detected"
            detail = {"causes": ["drift"], "action": "request"} if requested else {"features": []}
            events.append([MonitoringEvent(at, kind, h.last_day, "warning", "bench", detail=detail)])  # type: ignore[arg-type]
            done += 1
        ticks = []
        phase = []
        for _ in range(args.repeats):
            data, took = tick(h, cursor)
            assert data.skip_message == HEALTHY
            ticks.append(took["tick_s"])
            data, took, spies = profiled(h, cursor)
            phase.append(spies.seconds.get("events_read", 0.0))
        files = sum(1 for _ in Path(table).glob("*.parquet"))
        out[str(target)] = {"steady": stats(ticks), "events_read": stats(phase), "parquet_files": files}
        log(
            f"  events table +{target} commits ({files} files): steady tick {median(ticks):.4f} s,"
            f" events read {median(phase):.4f} s"
        )
    out["append_s_per_commit"] = round((time.perf_counter() - t_append) / max(done, 1), 4)
    shutil.rmtree(table)
    shutil.copytree(backup, table)
    shutil.rmtree(backup)
    return out


def champion_depth(work: Path, blobs: Blobs, args: argparse.Namespace) -> dict[str, Any]:
    """The steady tick with ``DEPTHS`` delay_model materializations newer than the champion's.

    ``version_record`` pages back through the delay_model materializations, newest first, for the
    champion's version (a page of 10, then pages of 200; at 7334bf7 it searched only the newest 1000,
    so a champion behind 1000 newer records failed every tick). Here the newer ones are challengers of
    the champion's week retrained from the same data by the same code (rejected, so the champion
    stays), which keeps the tick on its healthy path. ``cold`` daemon ticks (cache emptied before
    each) page; ``daemon`` ticks after one untimed cold tick and one-instance ticks do not.
    """
    import dagster as dg

    root = work / "champion_depth"
    shutil.rmtree(root, ignore_errors=True)
    h = build_history(30, root, blobs)
    try:
        reset_outputs(h)
        cursor, _, _ = first_ticks(h)
        week = h.weeks[-1]
        metadata = model_metadata(h, week)
        tags = {"dagster/code_version": h.model_code_version}
        out: dict[str, Any] = {"n": 30, "champion": h.champion}
        for depth in range(1, max(DEPTHS) + 1):
            report_event(
                h.instance, MODEL, week, {**metadata, "mlflow/model_version": str(1000 + depth)}, tags
            )
            if depth not in DEPTHS:
                continue
            result: dict[str, Any] = {}
            for mode, same, cold in (
                ("cold", False, True),
                ("daemon", False, False),
                ("same_instance", True, False),
            ):
                ticks: list[float] = []
                paged = 0.0
                try:
                    if not cold:  # untimed: a cold tick fills the cache
                        tick(h, cursor, same_instance=same, clear_cache=True)
                    for _ in range(args.repeats):
                        data, took = tick(h, cursor, same_instance=same, clear_cache=cold)
                        check_healthy(h, data, cursor, after_id(cursor))
                        ticks.append(took["tick_s"])
                        paged += took["paged"]
                    result[mode] = {**stats(ticks), "paged": paged}
                except dg.Failure as exc:
                    result[mode] = {"failure": f"dg.Failure: {exc.description}"}
            out[f"newer_{depth}"] = result
            log(
                f"  champion behind {depth} newer delay_model records: "
                + ", ".join(
                    f"{mode} {fmt(r.get('median_s'), '.3f')} s (paged {r.get('paged')})"
                    if "failure" not in r
                    else f"{mode} {r['failure']}"
                    for mode, r in result.items()
                )
            )
        return out
    finally:
        h.instance.dispose()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a is not None and b else None


def summary_text(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"{env['cpu_model']}, nproc {env['nproc']}, python {env['python']}, dagster {env['dagster']};"
        f" load {report['loadavg_start']} -> {report['loadavg_end']}",
        "",
        "| N report days | daily partitions | model weeks | assets | first tick s | catch-up tick s"
        " | steady tick s (daemon / one instance / daemon, cache emptied)"
        " | tick + 1 report s (daemon / one instance)"
        " | tick + 1 error report s | automation s (no cursor / cursor)"
        " | plain read s (first / steady / +1) | x plain (first / steady / +1) | new instance s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in report["sizes"].items():
        s = r["setup"]
        med = {k: v["median_s"] for k, v in r.items() if isinstance(v, dict) and "median_s" in v}
        ratios = " / ".join(
            fmt(ratio(med[a], med[b]), "")
            for a, b in (("first", "plain_first"), ("steady", "plain_steady"), ("new_report", "plain_new"))
        )
        lines.append(
            f"| {n} | {s['daily_partitions']} | {s['events'][MODEL]} | {s['assets']}"
            f" | {fmt(med['first'], '.3f')} (best {fmt(r['first']['min_s'], '.3f')})"
            f" | {fmt(med['catch_up'], '.3f')}"
            f" | {fmt(med['steady'], '.3f')} (best {fmt(r['steady']['min_s'], '.3f')})"
            f" / {fmt(med.get('steady_same_instance'), '.3f')} / {fmt(med.get('steady_cold'), '.3f')}"
            f" | {fmt(med['new_report'], '.3f')} (best {fmt(r['new_report']['min_s'], '.3f')})"
            f" / {fmt(med.get('new_report_same_instance'), '.3f')}"
            f" | {fmt(med['new_error'], '.3f')}"
            f" | {fmt(med['automation_first'], '.2f')} / {fmt(med['automation_next'], '.2f')}"
            f" | {fmt(med['plain_first'], '.4f')} / {fmt(med['plain_steady'], '.4f')}"
            f" / {fmt(med['plain_new'], '.4f')} | {ratios} | {fmt(med.get('instance_from_ref'), '.3f')} |"
        )
    for label, key in (("daemon", "phases_steady"), ("one instance", "phases_steady_same_instance")):
        lines += ["", f"phases of a steady tick, {label} (median s):"]
        for n, r in report["sizes"].items():
            lines.append(f"  N={n}: " + ", ".join(f"{k} {v:.4f}" for k, v in r[key].items()))
    lines += ["phases of the first tick (one run, s):"]
    for n, r in report["sizes"].items():
        lines.append(f"  N={n}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["phases_first"].items()))
    for n, r in report["sizes"].items():
        if "daemon_cache" in r:
            c = r["daemon_cache"]
            lines.append(
                f"daemon ticks after emptying the cache once, N={n}: {c['hits']} hits in {c['ticks']},"
                f" {c['entries_after']} entries after"
            )
    for n, r in report["sizes"].items():
        if "events_history" in r:
            hist = r["events_history"]
            lines.append(
                f"events table history at N={n}: steady tick {fmt(r['steady']['median_s'], '.4f')} s with"
                " the table of one first tick (1 commit); "
                + "; ".join(
                    f"+{k} commits ({v['parquet_files']} files): {fmt(v['steady']['median_s'], '.4f')} s"
                    f" (events read {fmt(v['events_read']['median_s'], '.4f')} s)"
                    for k, v in hist.items()
                    if isinstance(v, dict)
                )
            )
    depth = report.get("champion_depth")
    if depth:
        cells = []
        for d in DEPTHS:
            r = depth.get(f"newer_{d}", {})
            cells.append(
                f"{d} -> "
                + " / ".join(
                    r[m]["failure"] if "failure" in r.get(m, {}) else fmt(r.get(m, {}).get("median_s"), ".3f")
                    for m in ("cold", "daemon", "same_instance")
                )
            )
        lines.append(
            "champion behind newer delay_model records (N=30), steady tick s"
            " daemon cold / daemon / one instance: " + "; ".join(cells)
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days", default=",".join(map(str, DAYS)), help="N: days of drift reports, comma list"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each tick kind (median, best)")
    parser.add_argument(
        "--automation-repeats", type=int, default=2, help="runs of each automation evaluation"
    )
    parser.add_argument(
        "--history-days", type=int, default=365, help="the N whose events-table growth is measured"
    )
    parser.add_argument(
        "--history-commits",
        default="100,500",
        help="events-table appends before the steady ticks (comma list)",
    )
    parser.add_argument(
        "--snapshot", action="store_true", help="run a copy of the working tree's ml_platform"
    )
    parser.add_argument("--workdir", help="where the deployments are built (default: temp, removed)")
    parser.add_argument(
        "--champion-depth",
        action="store_true",
        help="also time the tick with 100, 999, 1000 and 1500 delay_model records newer than the champion's",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/sensor_tick-<date>.json)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.days.split(",") if x.strip()]
    args.history_commits = [int(x) for x in args.history_commits.split(",") if x.strip()]

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlp-sensor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.snapshot:
        src = work / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(
            REPO / "ml_platform", src / "ml_platform", ignore=shutil.ignore_patterns("__pycache__")
        )
        sys.path.insert(0, str(src))

    t = time.perf_counter()
    import warnings

    import dagster as dg

    import ml_platform.definitions  # noqa: F401
    from ml_platform.definitions import monitoring_spec
    from ml_platform.settings import PlatformSettings

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    # the sensor's log alerts (warn reports) would go to stderr through logging's last resort
    notify_log = logging.getLogger("ml_platform.lib.monitoring.notify")
    notify_log.addHandler(logging.NullHandler())
    notify_log.propagate = False
    imports_s = round(time.perf_counter() - t, 2)

    digest_start = code_digest(imported_package_dir())
    env = environment(args.snapshot)
    env["code_digest"] = digest_start
    log(f"sensor tick benchmark, N = {sizes}, {args.repeats} repeats, workdir {work}\n{json.dumps(env)}")
    report: dict[str, Any] = {
        "benchmark": "sensor_tick",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "loadavg_start": loadavg(),
        "imports_s": imports_s,
        "config": {
            "start": START.isoformat(),
            "training_window_weeks": WINDOW_WEEKS,
            "warn_every": WARN_EVERY,
            "page": PAGE,
            "repeats": args.repeats,
            "automation_repeats": args.automation_repeats,
            "history_days": args.history_days,
            "history_commits": args.history_commits,
        },
        "sizes": {},
    }
    t = time.perf_counter()
    policy = monitoring_spec(PlatformSettings(root_dir=work, training_window_weeks=WINDOW_WEEKS)).policy()
    blobs = make_blobs(policy)
    report["blobs"] = {
        "features": len(policy.features),
        "plot_markdown_chars": {k: len(v) for k, v in blobs.plots.items()},
        "make_s": round(time.perf_counter() - t, 2),
    }
    for n in sizes:
        root = work / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        h = build_history(n, root, blobs)
        log(f"N={n}: built in {time.perf_counter() - t:.1f}s: {json.dumps(h.setup)}")
        try:
            t = time.perf_counter()
            result = measure(h, args, blobs)
            result["measure_wall_s"] = round(time.perf_counter() - t, 1)
        finally:
            h.instance.dispose()
        report["sizes"][str(n)] = result
        med = {k: v["median_s"] for k, v in result.items() if isinstance(v, dict) and "median_s" in v}
        log(
            f"N={n}: first {med['first']:.4f}, steady {med['steady']:.4f} (one instance"
            f" {med['steady_same_instance']:.4f}, cold {med['steady_cold']:.4f}),"
            f" +1 report {med['new_report']:.4f} (one instance"
            f" {med['new_report_same_instance']:.4f}), +1 error {med['new_error']:.4f}, automation"
            f" {med['automation_first']:.3f}/{med['automation_next']:.3f}, plain {med['plain_first']:.4f}/"
            f"{med['plain_steady']:.4f}/{med['plain_new']:.4f} ({result['measure_wall_s']}s)"
        )
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.champion_depth:
        report["champion_depth"] = champion_depth(work, blobs, args)
    finish_report(
        report,
        digest_start,
        Path(args.out or REPO / "benchmarks" / "results" / f"sensor_tick-{report['date']}.json"),
        summary_text,
        remove=None if args.workdir or args.keep else work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
