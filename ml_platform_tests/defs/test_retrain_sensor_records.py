"""The sensors on an empty or half-built instance, and the retrain sensor on broken records.

No training here: the records the sensors read are reported to a sqlite instance exactly as the
assets write them (``flight_features``' storage keys, ``delay_model``'s lineage and code version),
then one real tick of each sensor runs against a real (sqlite) MLflow registry and the real events
table. The end-to-end cold start, trained and deployed, is ``test_cold_start.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.data_version import CODE_VERSION_TAG

from ml_platform.definitions import AUTOMATION_SENSOR, build_definitions
from ml_platform.defs.monitoring.sensors import SENSOR
from ml_platform.demo import days
from ml_platform.lib import metadata as keys
from ml_platform.lib.monitoring.events import MonitoringEvents
from ml_platform.lib.storage import PartitionVersion
from ml_platform.settings import PlatformSettings

WEEK = "2013-01-21"  # the first model week: window 2013-01-07..2013-01-20, holdout ..2013-01-27
WINDOW = days(date(2013, 1, 7), date(2013, 1, 20))
#: The data days through the first model week's holdout week.
THROUGH_HOLDOUT = days(date(2013, 1, 7), date(2013, 1, 27))
BROKEN_DAY = "2013-01-14"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite MLflow for the module (its schema takes seconds): nothing here registers a model."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def settings(make_settings: Callable[..., PlatformSettings], tracking_uri: str) -> PlatformSettings:
    return make_settings(
        mlflow_tracking_uri=tracking_uri,
        partition_start="2013-01-07",
        partition_end="2013-02-04",
        training_window_weeks=2,
        validation_days=3,
        sensors_running=True,
    )


def _pin(day: str) -> PartitionVersion:
    return PartitionVersion(
        table="flight_features",
        partition=day,
        table_version=3,
        content_hash=f"hash-{day}",
        row_count=900,
        files=(f"part-{day}.parquet",),
    )


def _features(instance: dg.DagsterInstance, day: str, *, drop: str | None = None) -> None:
    """A flight_features materialization with the storage keys its asset records (``drop`` left out)."""
    pin = _pin(day)
    metadata: dict[str, Any] = {
        keys.STORAGE_TABLE_VERSION: pin.table_version,
        keys.STORAGE_CONTENT_HASH: pin.content_hash,
        keys.ROW_COUNT: pin.row_count,
        keys.STORAGE_FILES: dg.MetadataValue.json(list(pin.files)),
    }
    metadata.pop(drop or "", None)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="flight_features", partition=day, metadata=metadata)
    )


def _model(instance: dg.DagsterInstance, settings: PlatformSettings, *, drop: str | None = None) -> None:
    """delay_model[WEEK] trained by the current code on WINDOW, as its asset records it."""
    defs = build_definitions(settings)
    key = dg.AssetKey("delay_model")
    code = defs.get_repository_def().assets_defs_by_key[key].code_versions_by_key[key]
    metadata: dict[str, Any] = {
        keys.MLFLOW_MODEL_VERSION: "1",
        keys.LINEAGE_UPSTREAM: dg.MetadataValue.json([_pin(d).to_metadata() for d in WINDOW]),
    }
    metadata.pop(drop or "", None)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="delay_model", partition=WEEK, metadata=metadata, tags={CODE_VERSION_TAG: code or ""}
        )
    )


def _tick(
    settings: PlatformSettings, instance: dg.DagsterInstance, name: str, cursor: str | None = None
) -> Any:
    defs = build_definitions(settings)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, sensor_name=name, resources=defs.resources
    )
    return defs.resolve_sensor_def(name).evaluate_tick(context)


def test_every_sensor_ticks_on_an_empty_and_on_a_half_built_instance(
    settings: PlatformSettings, instance: dg.DagsterInstance
) -> None:
    """Nothing materialized, no model registered: every tick says so; none raises."""
    sensors = [s.name for s in build_definitions(settings).sensors or [] if s.name != AUTOMATION_SENSOR]
    assert {SENSOR, "deploy_champion_sensor", "openlineage_sensor"} <= set(sensors)
    ticks = {name: _tick(settings, instance, name) for name in sensors}
    assert not any(t.run_requests for t in ticks.values())
    assert ticks[SENSOR].skip_message == "no drift error, champion fresh"

    # half-built: a first data day, no registered model (the registry lookup used to raise here)
    _features(instance, "2013-01-07")
    ticks = {name: _tick(settings, instance, name, ticks[name].cursor) for name in sensors}
    assert not any(t.run_requests for t in ticks.values())
    assert ticks[SENSOR].skip_message == (
        "no model week is trainable yet: the first, delay_model[2013-01-21], needs its holdout"
        " week's flight_features through 2013-01-27"
    )
    (event,) = MonitoringEvents(settings.monitoring_events_table).to_frame().iter_rows(named=True)
    assert event["kind"] == "retrain_deferred" and "no champion model yet" in event["detail"]


def test_the_first_trainable_week_without_a_champion_is_requested(
    settings: PlatformSettings, instance: dg.DagsterInstance
) -> None:
    for day in THROUGH_HOLDOUT:
        _features(instance, day)
    data = _tick(settings, instance, SENSOR)
    (request,) = data.run_requests
    assert request.partition_key == WEEK and request.run_key == f"retrain:{WEEK}:freshness@2013-01-27"


@pytest.mark.parametrize(
    ("broken_feature_key", "broken_model_key", "named"),
    [
        (keys.STORAGE_CONTENT_HASH, None, f"flight_features[{BROKEN_DAY}]"),
        (keys.ROW_COUNT, None, f"flight_features[{BROKEN_DAY}]"),
        (None, keys.LINEAGE_UPSTREAM, f"delay_model[{WEEK}]"),
        (None, keys.MLFLOW_MODEL_VERSION, f"delay_model[{WEEK}]"),
    ],
    ids=["feature-content-hash", "feature-row-count", "model-lineage", "model-version"],
)
def test_a_broken_training_window_record_blocks_the_retrain_naming_asset_partition_and_key(
    settings: PlatformSettings,
    instance: dg.DagsterInstance,
    broken_feature_key: str | None,
    broken_model_key: str | None,
    named: str,
) -> None:
    """Not a retrain: the retrain would fail on the same record, or train from what nobody can vouch for."""
    for day in THROUGH_HOLDOUT:
        _features(instance, day, drop=broken_feature_key if day == BROKEN_DAY else None)
    _model(instance, settings, drop=broken_model_key)
    key = broken_feature_key or broken_model_key
    data = _tick(settings, instance, SENSOR)
    assert not data.run_requests
    assert data.skip_message.startswith(
        f"retrain blocked: cannot tell whether delay_model[{WEEK}] is trained"
    )
    assert named in data.skip_message and repr(key) in data.skip_message, data.skip_message
    events = MonitoringEvents(settings.monitoring_events_table).to_frame()
    (blocked,) = events.filter(events["kind"] == "retrain_blocked").iter_rows(named=True)
    assert blocked["severity"] == "error" and blocked["partition"] == WEEK
    assert named in blocked["summary"] and repr(key) in blocked["summary"]
    # a standing block is recorded once, and still blocks on the next tick
    again = _tick(settings, instance, SENSOR, data.cursor)
    assert not again.run_requests and again.skip_message == data.skip_message
    assert MonitoringEvents(settings.monitoring_events_table).to_frame().height == events.height


def _bento(instance: dg.DagsterInstance, week: str, tag: str, version: str, aliases: list[str]) -> None:
    from ml_platform.defs.serving.bento import ALIASES_AT_BUILD
    from ml_platform.defs.serving.bento import NAME as DELAY_BENTO

    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=DELAY_BENTO,
            partition=week,
            metadata={
                keys.BENTO_TAG: tag,
                keys.MLFLOW_MODEL_VERSION: version,
                ALIASES_AT_BUILD: dg.MetadataValue.json(aliases),
            },
        )
    )


def test_the_deploy_sensor_deploys_only_the_newest_champion_bento_of_a_tick(
    settings: PlatformSettings, instance: dg.DagsterInstance
) -> None:
    """A tick that finds several champions' Bentos (a replay, a daemon that was down) deploys the newest
    one; deploying each in turn started a canary of every superseded champion."""
    from ml_platform.defs.serving.deployment import SENSOR as DEPLOY_SENSOR

    _bento(instance, "2013-01-21", "delay_service:v1", "1", ["champion"])
    _bento(instance, "2013-01-28", "delay_service:v2", "2", ["champion"])
    _bento(instance, "2013-01-28", "delay_service:v2", "2", ["champion"])  # the same Bento built again
    _bento(instance, "2013-02-04", "delay_service:v3", "3", ["challenger"])  # rejected: never deployed
    tick = _tick(settings, instance, DEPLOY_SENSOR)
    [request] = tick.run_requests
    assert request.run_key == "deploy:delay_service:v2"
    assert request.run_config["ops"]["deployment"]["config"]["model_version"] == "2"
    # nothing new: nothing requested; a later champion's Bento is deployed on the next tick
    assert not _tick(settings, instance, DEPLOY_SENSOR, tick.cursor).run_requests
    _bento(instance, "2013-02-04", "delay_service:v4", "4", ["champion"])
    [later] = _tick(settings, instance, DEPLOY_SENSOR, tick.cursor).run_requests
    assert later.run_key == "deploy:delay_service:v4"
