"""One small, really materialized graph for the lineage tests (~45 s, once per session).

* ``daily_data_job``'s raw, validated and feature layers over 2013-01-01..2013-01-27 (range runs,
  as ``mlp demo`` runs them), then the feature profiles and the online snapshots up to the day
  before 2013-01-22 (the store serves its newest day: see below), so the first model
  week, 2013-01-21, has its two-week training window (2013-01-07..20) and its holdout week
  (2013-01-21..27);
* ``weekly_model_job`` for 2013-01-21: trains and registers v1, evaluates, promotes it to champion
  and builds its Bento (``bentoml build``);
* the champion's monitoring of 2013-01-22: ``drift_report``, ``flight_delay_predictions`` and
  ``live_performance`` (each records the delay_model run, the last the evaluation, it used);
* ``deploy_job``: the ``deployment`` asset writes the desired state (no supervisor runs, so the
  supervisor's ``deploy`` event is appended to the deployment log as it would append it);
* two served predictions of flights of 2013-01-22 written by :class:`PredictionLog` as the served
  Bento writes them (their ``bento_tag`` is the week's Bento), the first one collected by
  ``prediction_log[2013-01-22]`` and the second one not yet; each names the online snapshot that
  answered it: ``online_features[2013-01-22]`` is materialized before each (two runs, the same
  content, two writes to the store), so the two lines name two materializations of one hash;
* then raw_weather[2013-01-10] re-ingested with an injected +15 °C shift, and its validated day and
  the feature days 2013-01-10/11 rematerialized (one-partition runs): their newest versions are not
  the ones the model read, so a trace that took "the latest" would be caught.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions
from ml_platform.demo import days
from ml_platform.lib.deploy.events import DeploymentLog
from ml_platform.lib.online import open_online_store
from ml_platform.lib.online.features import FEATURE_COLUMNS, FEATURE_SCHEMA, REQUEST_COLUMNS
from ml_platform.lib.online.snapshot import SnapshotRef
from ml_platform.lib.serving.prediction_log import LogRecord, PredictionLog
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import QUIET, failure_messages

ROOT = Path(__file__).resolve().parents[2]
FIRST, LAST = date(2013, 1, 1), date(2013, 1, 27)
WEEK = "2013-01-21"
SHIFTED_DAY = "2013-01-10"
LOG_DAY = "2013-01-22"
MODEL = "lineage_model"
SETTINGS: dict[str, Any] = {
    "registered_model": MODEL,
    "training_window_weeks": 2,
    "validation_days": 2,
    "hpo_trials": 0,
    "max_epochs": 3,
    "gate_metrics": ["roc_auc"],
    "partition_end": "2013-01-28",
    "executor": "in_process",
    "git_commit": "test",
}
#: The environment the ``mlp`` commands of the CLI test read these settings from.
ENV = {
    "MLP_REGISTERED_MODEL": MODEL,
    "MLP_TRAINING_WINDOW_WEEKS": "2",
    "MLP_VALIDATION_DAYS": "2",
    "MLP_PARTITION_END": "2013-01-28",
    "MLP_GIT_COMMIT": "test",
}


@dataclass(frozen=True)
class LineageWorld:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance
    version: str
    bento_tag: str
    #: A request collected by prediction_log[LOG_DAY], and one logged after it.
    collected_request: str
    pending_request: str
    #: The run ids of the two online_features[LOG_DAY] materializations that served them.
    online_runs: tuple[str, str]


def _layers(
    job: dg.JobDefinition, instance: dg.DagsterInstance, layers: list[list[str]], **where: Any
) -> None:
    for layer in layers:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(a) for a in layer],
            run_config=QUIET,
            raise_on_error=False,
            **where,
        )
        assert result.success, f"{layer}: {failure_messages(result)}"


def _log(
    settings: PlatformSettings,
    request_id: str,
    version: str,
    row: int,
    bento_tag: str | None,
    folder: Path | None = None,
    snapshot: SnapshotRef | None = None,
) -> None:
    """One prediction of a flight of LOG_DAY, as the served Bento logs it (its own writer, like a pod).

    ``bento_tag`` None: as a service served from source, or one older than the key, logged it.
    ``folder``: another log folder than the world's (a test's own lines).
    The line names the snapshot the world's online store holds now (``snapshot`` overrides it).
    """
    features = (
        pl.read_delta(str(settings.delta_root / "flight_features"))
        .filter(pl.col("partition_date") == LOG_DAY)
        .sort("scheduled_departure", "carrier", "flight")
        .select(FEATURE_COLUMNS)
        .cast(FEATURE_SCHEMA)  # type: ignore[arg-type]
    )
    if snapshot is None:
        store = open_online_store(None, settings.online_store_path)
        held = store.info()
        store.close()
        assert held is not None, "materialize online_features before logging"
        snapshot = held.ref
    writer = PredictionLog(folder or settings.prediction_log_dir, file_stem=f"pod-{request_id}")
    writer.append(
        [
            LogRecord(
                logged_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
                request_id=request_id,
                endpoint="predict",
                index=0,
                model_name=MODEL,
                model_version=version,
                bento_tag=bento_tag,
                latency_ms=1.5,
                request={c: features[c][row] for c in REQUEST_COLUMNS},
                features=features,
                row=row,
                predicted_arr_delay=12.5,
                delay_probability=0.4,
                snapshot=snapshot,
                stale=False,
            )
        ]
    )
    writer.close()


@pytest.fixture(scope="session")
def lineage_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LineageWorld]:
    root = tmp_path_factory.mktemp("lineage")
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        settings = PlatformSettings(root_dir=root, **SETTINGS)
        defs = build_definitions(settings)
        data = defs.resolve_job_def(DATA_JOB)
        span = days(FIRST, LAST)
        _layers(
            data,
            instance,
            [
                ["raw_flights", "raw_weather"],
                ["validated_flights", "validated_weather"],
                ["flight_features"],
                ["flight_feature_profiles"],
            ],
            tags={
                "dagster/asset_partition_range_start": span[0],
                "dagster/asset_partition_range_end": span[-1],
            },
        )
        # the online snapshots up to the day before LOG_DAY: the store holds its newest day, so the
        # two online_features[LOG_DAY] runs below are what serves the logged requests
        before_log = days(FIRST, date.fromisoformat(LOG_DAY) - timedelta(days=1))
        _layers(
            data,
            instance,
            [["online_features"]],
            tags={
                "dagster/asset_partition_range_start": before_log[0],
                "dagster/asset_partition_range_end": before_log[-1],
            },
        )
        week = defs.resolve_job_def(MODEL_JOB).execute_in_process(
            partition_key=WEEK, instance=instance, run_config=QUIET, raise_on_error=False
        )
        assert week.success, failure_messages(week)
        (bento,) = week.asset_materializations_for_node("delay_bento")
        tag = str(bento.metadata["bento/tag"].value)
        version = str(bento.metadata["mlflow/model_version"].value)
        _layers(
            defs.resolve_job_def(MONITORING_JOB),
            instance,
            [["drift_report", "flight_delay_predictions", "live_performance"]],
            partition_key=LOG_DAY,
        )
        deployed = defs.resolve_job_def("deploy_job").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
        assert deployed.success, failure_messages(deployed)
        desired = (settings.deployment_dir / "desired.json").read_text()
        assert tag in desired
        # what the supervisor appends when it applies the first generation (lib/deploy/supervisor.py)
        DeploymentLog(settings.deployment_log_table).append(
            "deploy",
            mode="single",
            bento_tag=tag,
            model_version=version,
            reason="first deploy",
            actor="supervisor:test",
            detail={"generation": 1, "model_name": MODEL, "bento_partition": WEEK},
        )
        online = [
            data.execute_in_process(
                instance=instance,
                asset_selection=[dg.AssetKey("online_features")],
                partition_key=LOG_DAY,
                run_config=QUIET,
                raise_on_error=False,
            )
        ]
        assert online[0].success, failure_messages(online[0])
        _log(settings, "req-collected", version, 0, tag)
        collected = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
            partition_key=LOG_DAY,
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
            asset_selection=[dg.AssetKey("prediction_log")],
        )
        assert collected.success, failure_messages(collected)
        # the same day's snapshot written again (same content, a later write) before the next request
        online.append(
            data.execute_in_process(
                instance=instance,
                asset_selection=[dg.AssetKey("online_features")],
                partition_key=LOG_DAY,
                run_config=QUIET,
                raise_on_error=False,
            )
        )
        assert online[1].success, failure_messages(online[1])
        _log(settings, "req-pending", version, 1, tag)
        # a later re-ingestion of one raw day with other content: new versions the model never read
        shifted = build_definitions(
            settings.model_copy(update={"inject_shifts": [f"{SHIFTED_DAY}:temp+15C"]})
        )
        data = shifted.resolve_job_def(DATA_JOB)
        _layers(
            data,
            instance,
            [["raw_weather"], ["validated_weather"], ["flight_features"]],
            partition_key=SHIFTED_DAY,
        )
        _layers(data, instance, [["flight_features"]], partition_key="2013-01-11")
        yield LineageWorld(
            root,
            settings,
            instance,
            version,
            tag,
            "req-collected",
            "req-pending",
            (online[0].run_id, online[1].run_id),
        )


@pytest.fixture
def runner(lineage_world: LineageWorld, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner whose ``mlp`` commands read the world's settings and instance (the ``ENV`` above)."""
    import os

    for name in list(os.environ):
        if name.startswith("MLP_"):
            monkeypatch.delenv(name)
    for name, value in {**ENV, "MLP_ROOT_DIR": str(lineage_world.root)}.items():
        monkeypatch.setenv(name, value)
    # open_instance exports DAGSTER_HOME; the monkeypatch puts the caller's back afterwards
    monkeypatch.setenv("DAGSTER_HOME", str(lineage_world.root / ".dagster"))
    return CliRunner()
