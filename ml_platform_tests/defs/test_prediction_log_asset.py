"""The prediction log end to end: lines the real writer logs for real flights become a Delta partition,
their profile, and online rows of ``live_performance`` joined with the day's actuals.

One small world for the module: features for 2013-01-01..2013-02-04, a champion trained on a
2-week window (model week 2013-01-28), the champion's batch predictions of 2013-02-04, and online
predictions of that day's flights written by :class:`PredictionLog` from two "pods", plus a
malformed line and a line still being written. Before them, a day whose lines and partition predate
the ``bento_tag`` key and column (an older deployment's table, which the new day extends).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions
from ml_platform.defs.monitoring.assets import PREDICTION_LOG_PROFILES
from ml_platform.defs.monitoring.performance import LIVE_ONLINE_DECAY, LIVE_ROWS_BY_SOURCE
from ml_platform.defs.serving.prediction_log import CHECK, NAME, QUARANTINE
from ml_platform.demo import days, run_partitions
from ml_platform.lib import metadata as keys
from ml_platform.lib.features.transforms import KEY_COLUMNS
from ml_platform.lib.online.features import FEATURE_COLUMNS, FEATURE_SCHEMA, REQUEST_COLUMNS
from ml_platform.lib.serving.prediction_log import (
    LOG_SCHEMA,
    LogRecord,
    PredictionLog,
    read_day,
    to_json_line,
)
from ml_platform.lib.storage import PARTITION_COLUMN, DeltaPartitionStore
from ml_platform.lib.training.data import INPUT_COLUMNS
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import latest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY = "2013-02-04"
#: A day logged and published before the lines named their Bento (no bento_tag key, no column).
OLD_DAY = "2013-02-02"
OLD_FLIGHTS = 5
#: The Bento of pod-a, and of the canary version pod-b also served; pod-b runs from source (null).
BENTO = "delay_service:v1-0123456789abcdef"
CANARY_BENTO = "delay_service:v999-0123456789abcdef"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SMALL: dict[str, Any] = {
    "partition_start": "2013-01-01",
    "partition_end": "2013-02-06",
    "training_window_weeks": 2,
    "validation_days": 3,
    "hpo_trials": 0,
    "max_epochs": 4,
    "gate_metrics": ["roc_auc"],
    "executor": "in_process",
    "git_commit": "test",
    "champion_max_age_days": 60,
}
ONLINE_FLIGHTS = 300
#: Online predictions are the batch ones shifted by this much, so the two sources differ.
SHIFT_MINUTES = 7.0


def _records(
    features: pl.DataFrame,
    batch: pl.DataFrame | None,
    version: str,
    start: int,
    bento_tag: str | None = BENTO,
) -> list[LogRecord]:
    """One log record per flight of ``features``, answered with the batch prediction + SHIFT_MINUTES
    (10 minutes without ``batch``)."""
    by_key = (
        {}
        if batch is None
        else {tuple(r[:5]): r[5:] for r in batch.select(*KEY_COLUMNS, *batch.columns[5:7]).iter_rows()}
    )
    frame = features.select(FEATURE_COLUMNS).cast(FEATURE_SCHEMA)  # type: ignore[arg-type]
    out = []
    for row in range(frame.height):
        request = {c: frame[c][row] for c in REQUEST_COLUMNS}
        delay, probability = by_key.get(tuple(request[c] for c in KEY_COLUMNS), (10.0 - SHIFT_MINUTES, 0.3))
        out.append(
            LogRecord(
                logged_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
                request_id=f"req-{start + row}",
                endpoint="predict_batch",
                index=row,
                model_name="delay_model",
                model_version=version,
                bento_tag=bento_tag,
                latency_ms=1.0 + row % 5,
                request=request,
                features=frame,
                row=row,
                predicted_arr_delay=float(delay) + SHIFT_MINUTES,
                delay_probability=float(probability),
            )
        )
    return out


def _without_bento_tag(record: LogRecord) -> str:
    """``record``'s line as the service wrote it before lines named their Bento (no key at all)."""
    line = json.loads(to_json_line(record))
    del line["bento_tag"]
    return json.dumps(line, separators=(",", ":")) + "\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("prediction_log")
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        settings = PlatformSettings(root_dir=root, **SMALL)
        defs = build_definitions(settings)
        outcomes = run_partitions(
            instance, defs.resolve_job_def(DATA_JOB), days(date(2013, 1, 1), date(2013, 2, 4))
        )
        assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
        model = defs.resolve_job_def(MODEL_JOB).execute_in_process(
            partition_key="2013-01-28",
            instance=instance,
            run_config=QUIET,
            asset_selection=[dg.AssetKey(a) for a in ("delay_model", "model_evaluation", "model_promotion")],
        )
        assert model.success
        monitoring = defs.resolve_job_def(MONITORING_JOB)
        batch_run = monitoring.execute_in_process(
            partition_key=DAY,
            instance=instance,
            run_config=QUIET,
            asset_selection=[dg.AssetKey("flight_delay_predictions")],
        )
        assert batch_run.success
        store = DeltaPartitionStore(settings.delta_root)
        features = pl.read_delta(store.table_uri("flight_features")).filter(pl.col("partition_date") == DAY)
        batch = pl.read_delta(store.table_uri("flight_delay_predictions")).filter(
            pl.col("partition_date") == DAY
        )
        version = str(batch["model_version"][0])
        # OLD_DAY, as logged and published before the change: lines without the bento_tag key, and a
        # partition without the column, the table's first (the asset's later writes merge the column in)
        old_features = (
            pl.read_delta(store.table_uri("flight_features"))
            .filter(pl.col("partition_date") == OLD_DAY)
            .sort("scheduled_departure", "carrier", "flight")
            .head(OLD_FLIGHTS)
        )
        old_folder = settings.prediction_log_dir / OLD_DAY
        old_folder.mkdir(parents=True)
        (old_folder / "pod-old.jsonl").write_text(
            "".join(_without_bento_tag(r) for r in _records(old_features, None, version, 500))
        )
        old_day = read_day(settings.prediction_log_dir, date.fromisoformat(OLD_DAY))
        assert old_day is not None and old_day.quarantined.height == 0
        store.write_partition(NAME, OLD_DAY, old_day.frame.drop("bento_tag"))
        asked = features.sample(ONLINE_FLIGHTS, seed=7).sort("scheduled_departure")
        # two pods: pod-a serves the Bento, pod-b the service from source (no Bento: null tags), and
        # pod-b also answered two flights with another version from its Bento (a canary)
        pod_a = PredictionLog(settings.prediction_log_dir, file_stem="pod-a")
        pod_a.append(_records(asked.slice(0, 200), batch, version, 0))
        pod_a.close()
        pod_b = PredictionLog(settings.prediction_log_dir, file_stem="pod-b")
        pod_b.append(_records(asked.slice(200, 100), batch, version, 200, bento_tag=None))
        pod_b.append(_records(asked.slice(0, 2), batch, "999", 900, bento_tag=CANARY_BENTO))
        pod_b.close()
        folder = settings.prediction_log_dir / DAY
        with (folder / "pod-a.jsonl").open("a") as handle:
            handle.write('{"request_id": "broken"\n')  # malformed: quarantined
            handle.write(
                to_json_line(_records(asked.slice(0, 1), batch, version, 999)[0])[:120]
            )  # unfinished
        run = monitoring.execute_in_process(
            partition_key=DAY,
            instance=instance,
            run_config=QUIET,
            asset_selection=[dg.AssetKey(a) for a in (NAME, PREDICTION_LOG_PROFILES, "live_performance")],
        )
        assert run.success
        yield {
            "instance": instance,
            "settings": settings,
            "store": store,
            "defs": defs,
            "features": features,
            "batch": batch,
            "version": version,
            "asked": asked,
            "run": run,
        }


def test_the_day_lands_as_a_typed_partition_of_every_valid_line(world):
    log = pl.read_delta(world["store"].table_uri(NAME)).filter(pl.col("partition_date") == DAY)
    # the table predates the bento_tag column (OLD_DAY): Delta appended it after the older columns
    assert dict(log.drop("partition_date").schema) == LOG_SCHEMA
    assert log.columns[-1] == "bento_tag"
    assert dict(log.group_by("bento_tag").len().rows()) == {None: 100, BENTO: 200, CANARY_BENTO: 2}
    assert set(INPUT_COLUMNS) <= set(log.columns)
    assert log.height == ONLINE_FLIGHTS + 2
    assert log.group_by("source_file").len().sort("source_file").rows() == [
        ("pod-a.jsonl", 200),
        ("pod-b.jsonl", 102),
    ]
    assert log["flight_date"].unique().to_list() == [date.fromisoformat(DAY)]
    # the logged feature row is the offline one (the flights' features, as served)
    merged = log.filter(pl.col("model_version") == world["version"]).join(
        world["features"], on=list(KEY_COLUMNS), suffix="_offline"
    )
    assert merged.height == ONLINE_FLIGHTS
    for column in ("temp", "route_delay_mean_28d", "sched_hour", "weather_age_minutes"):
        assert merged[column].equals(merged[f"{column}_offline"], null_equal=True), column
    quarantined = pl.read_delta(world["store"].table_uri(QUARANTINE)).filter(pl.col("partition_date") == DAY)
    (bad,) = quarantined.iter_rows(named=True)
    assert bad["source_file"] == "pod-a.jsonl" and bad["source_line"] == 201
    assert bad["raw_line"] == '{"request_id": "broken"'


def test_the_materialization_records_exactly_the_bytes_it_read(world):
    mat = latest(world["instance"], NAME, DAY)
    source = mat.metadata[keys.LINEAGE_SOURCE].value
    folder = world["settings"].prediction_log_dir / DAY
    assert source["folder"] == str(folder)
    files = {f["file"]: f for f in source["files"]}
    assert set(files) == {"pod-a.jsonl", "pod-b.jsonl"}
    for name, entry in files.items():
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data[: entry["bytes_read"]]).hexdigest() == entry["sha256"]
        assert entry["bytes_read"] + entry["pending_bytes"] == len(data)
    assert files["pod-a.jsonl"]["lines"] == 201 and files["pod-a.jsonl"]["pending_bytes"] == 120
    assert files["pod-b.jsonl"]["lines"] == 102 and files["pod-b.jsonl"]["pending_bytes"] == 0
    assert mat.metadata[keys.QUALITY_QUARANTINED_ROWS].value == 1
    assert mat.metadata["prediction_log/predictions_by_model_version"].value == {
        world["version"]: ONLINE_FLIGHTS,
        "999": 2,
    }
    assert mat.metadata[keys.ROW_COUNT].value == ONLINE_FLIGHTS + 2
    (check,) = [
        e.asset_check_evaluation_data
        for e in world["run"].all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data
        and e.asset_check_evaluation_data.check_name == CHECK
    ]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["malformed_lines"].value == 1


def test_the_profile_covers_the_flights_features_not_the_request_ids(world):
    from ml_platform.definitions import monitoring_spec
    from ml_platform.lib.monitoring import profiles
    from ml_platform.lib.monitoring.drift import score_drift

    store = world["store"]
    row = pl.read_delta(store.table_uri(PREDICTION_LOG_PROFILES)).filter(pl.col("partition_date") == DAY)
    assert row["rows"][0] == ONLINE_FLIGHTS + 2 and row["source_table"][0] == NAME
    columns = json.loads(row["columns"][0])
    assert set(INPUT_COLUMNS) - {"day_of_week"} <= set(columns) and "route" in columns
    assert not {"request_id", "source_file", "source_line", "index", "bento_tag"} & set(columns)
    # the drift measures read it as they read the batch profiles: online vs batch features of the day
    online = profiles.deserialize(row["profile"][0])
    batch = profiles.deserialize(
        pl.read_delta(store.table_uri("flight_feature_profiles")).filter(pl.col("partition_date") == DAY)[
            "profile"
        ][0]
    )
    drift_policy = monitoring_spec(world["settings"]).policy()
    judged_online = {r.feature: r for r in score_drift(batch, online, drift_policy)}
    assert set(judged_online) == set(drift_policy.features)
    # a sample of the same day's flights: the weather they were served is the day's weather
    assert judged_online["temp"].severity == "ok", judged_online["temp"].breaches


def test_live_performance_judges_online_predictions_on_the_days_actuals(world):
    live = latest(world["instance"], "live_performance", DAY)
    by_source = live.metadata[LIVE_ROWS_BY_SOURCE].value
    labelled = world["features"].filter(pl.col("has_target"))
    asked_labelled = world["asked"].filter(pl.col("has_target")).height
    assert by_source == {"batch": labelled.height, "online": asked_labelled}
    assert live.metadata["live/online_other_versions"].value == 2
    # the online RMSE is recomputable from the log and the actuals
    log = pl.read_delta(world["store"].table_uri(NAME)).filter(
        (pl.col("partition_date") == DAY) & (pl.col("model_version") == world["version"])
    )
    joined = log.join(labelled, on=list(KEY_COLUMNS), suffix="_actual")
    rmse = float(np.sqrt(((joined["predicted_arr_delay"] - joined["arr_delay"]) ** 2).mean()))  # type: ignore[operator]
    assert live.metadata["live/online_model_metrics"].value["rmse"] == pytest.approx(rmse, rel=1e-9)
    assert live.metadata["live/online_model_metrics"].value != live.metadata["live/model_metrics"].value
    (online_decay,) = live.metadata[LIVE_ONLINE_DECAY].value
    assert online_decay["metric"] == "roc_auc"
    table = pl.read_delta(world["store"].table_uri("live_performance")).filter(
        pl.col("partition_date") == DAY
    )
    assert sorted(table["source"].to_list()) == ["batch", "online"]
    assert dict(table.select("source", "rows").iter_rows()) == by_source
    roles = {u["role"] for u in live.metadata[keys.LINEAGE_UPSTREAM].value}
    assert roles == {"predictions", "online_predictions", "actuals", "model", "evaluation"}


def test_reading_the_same_lines_again_publishes_the_same_version(world):
    instance, monitoring = world["instance"], world["defs"].resolve_job_def(MONITORING_JOB)
    before = latest(instance, NAME, DAY)
    again = monitoring.execute_in_process(
        partition_key=DAY, instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey(NAME)]
    )
    assert again.success
    after = latest(instance, NAME, DAY)
    assert after.metadata[keys.STORAGE_CONTENT_HASH] == before.metadata[keys.STORAGE_CONTENT_HASH]
    assert after.metadata[keys.STORAGE_WRITE_SKIPPED].value is True


def test_a_day_without_a_log_publishes_nothing_and_live_performance_still_runs(world):
    instance, monitoring = world["instance"], world["defs"].resolve_job_def(MONITORING_JOB)
    result = monitoring.execute_in_process(
        partition_key="2013-02-03",
        instance=instance,
        run_config=QUIET,
        asset_selection=[dg.AssetKey(a) for a in (NAME, PREDICTION_LOG_PROFILES)],
    )
    assert result.success
    assert "2013-02-03" not in instance.get_materialized_partitions(dg.AssetKey(NAME))
    assert "2013-02-03" not in instance.get_materialized_partitions(dg.AssetKey(PREDICTION_LOG_PROFILES))
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("no complete log line" in m and "nothing published" in m for m in logs)


def test_a_day_published_before_the_bento_tag_reads_null_beside_the_new_day(world):
    """An older deployment's table: its days have no bento_tag in their files; the table has it now."""
    store, instance = world["store"], world["instance"]
    table = pl.read_delta(store.table_uri(NAME))
    assert sorted(table[PARTITION_COLUMN].unique().to_list()) == [OLD_DAY, DAY]
    old = table.filter(pl.col(PARTITION_COLUMN) == OLD_DAY)
    assert old.height == OLD_FLIGHTS and old["bento_tag"].null_count() == OLD_FLIGHTS
    assert table.filter(pl.col(PARTITION_COLUMN) == DAY)["bento_tag"].null_count() == 100
    # the old day's lines (no key) are read again by today's asset: every line, tags null
    monitoring = world["defs"].resolve_job_def(MONITORING_JOB)
    again = monitoring.execute_in_process(
        partition_key=OLD_DAY, instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey(NAME)]
    )
    assert again.success
    mat = latest(instance, NAME, OLD_DAY)
    assert mat.metadata[keys.QUALITY_QUARANTINED_ROWS].value == 0
    assert mat.metadata[keys.ROW_COUNT].value == OLD_FLIGHTS
    reread = pl.read_delta(store.table_uri(NAME)).filter(pl.col(PARTITION_COLUMN) == OLD_DAY)
    assert reread.height == OLD_FLIGHTS and reread["bento_tag"].null_count() == OLD_FLIGHTS
