"""Data versions are functions of their inputs: the whole daily graph, run twice, records the same ones.

Two independent worlds (own root, Dagster instance, Delta tables, MLflow registry, online store),
built by the same steps from the same settings: the daily data job over three weeks (raw ->
validated -> features -> profiles and the online snapshot), the weekly model job for the first
model week (trained with the same seed, evaluated, promoted to champion), then the monitoring
assets of the first days the champion serves (drift_report, flight_delay_predictions,
live_performance). Every materialization of every asset must record the same data version in both,
and every asset check the same outcome and the same metadata about the data: a data version that
depends on the run, the instance, a timestamp, a path or a random seed shows up here as a
difference. (Dagster's run ids, storage ids and MLflow run ids do differ, and are not compared.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.events import DagsterEventType

from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions
from ml_platform.defs.monitoring.assets import DRIFT
from ml_platform.defs.monitoring.performance import NAME as LIVE_PERFORMANCE
from ml_platform.defs.predictions.assets import NAME as PREDICTIONS
from ml_platform.demo import days, run_partitions
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import QUIET, failure_messages

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: A Monday start: the first model week (2013-01-21) then has its two-week window from day one.
FIRST, LAST = date(2013, 1, 7), date(2013, 1, 27)
WEEK = "2013-01-21"
SCORED = days(date(2013, 1, 21), date(2013, 1, 23))
SETTINGS: dict[str, Any] = {
    "partition_start": FIRST,
    "partition_end": date(2013, 1, 28),
    "training_window_weeks": 2,
    "validation_days": 2,
    "hpo_trials": 0,
    "max_epochs": 2,
    "gate_metrics": ["roc_auc"],
    "live_window_days": 2,
    "executor": "in_process",
    "git_commit": "test",
}
#: Every asset the daily graph and the model week make here; each must be found in both worlds.
EXPECTED = {
    "raw_flights",
    "raw_weather",
    "validated_flights",
    "validated_weather",
    "flight_features",
    "flight_feature_profiles",
    "validated_flight_profiles",
    "online_features",
    "delay_model",
    "model_evaluation",
    "model_promotion",
    DRIFT,
    PREDICTIONS,
    LIVE_PERFORMANCE,
}
#: Check metadata that names where a run wrote, not what the data is.
RUN_DEPENDENT_CHECK_METADATA = frozenset({"run_id", "mlflow_run_id", "storage/table_uri"})

Recorded = dict[str, Any]


def _world(root: Path) -> Recorded:
    """Build one world under ``root``; what it recorded, by asset and partition."""
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        defs = build_definitions(PlatformSettings(root_dir=root, **SETTINGS))
        outcomes = run_partitions(instance, defs.resolve_job_def(DATA_JOB), days(FIRST, LAST))
        assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
        week = defs.resolve_job_def(MODEL_JOB).execute_in_process(
            partition_key=WEEK,
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
            # the Bento build is about packaging, not data versions, and takes longer than the rest
            asset_selection=[dg.AssetKey(a) for a in ("delay_model", "model_evaluation", "model_promotion")],
        )
        assert week.success, failure_messages(week)
        monitoring = defs.resolve_job_def(MONITORING_JOB)
        for day in SCORED:
            result = monitoring.execute_in_process(
                partition_key=day,
                instance=instance,
                run_config=QUIET,
                raise_on_error=False,
                asset_selection=[dg.AssetKey(a) for a in (DRIFT, PREDICTIONS, LIVE_PERFORMANCE)],
            )
            assert result.success, f"{day}: {failure_messages(result)}"
        return _recorded(instance, defs)


def _recorded(instance: dg.DagsterInstance, defs: dg.Definitions) -> Recorded:
    versions: dict[tuple[str, str | None], list[str | None]] = {}
    checks: dict[tuple[str, str, str | None], list[tuple[Any, ...]]] = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        records = instance.fetch_materializations(key, limit=10_000, ascending=True).records
        for record in records:
            mat = record.asset_materialization
            assert mat is not None
            versions.setdefault((key.to_user_string(), mat.partition), []).append(
                mat.tags.get(DATA_VERSION_TAG) if mat.tags else None
            )
    for record in instance.get_event_records(
        dg.EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True
    ):
        event = record.event_log_entry.dagster_event
        assert event is not None
        evaluation = event.event_specific_data
        metadata = {
            name: getattr(value, "value", value)
            for name, value in (evaluation.metadata or {}).items()  # type: ignore[union-attr]
            if name not in RUN_DEPENDENT_CHECK_METADATA
        }
        checks.setdefault(
            (evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.partition),  # type: ignore[union-attr]
            [],
        ).append(
            (
                evaluation.passed,  # type: ignore[union-attr]
                evaluation.severity.value if evaluation.severity else None,  # type: ignore[union-attr]
                evaluation.description,  # type: ignore[union-attr]
                repr(sorted(metadata.items())),
            )
        )
    return {"versions": versions, "checks": checks}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Recorded, Recorded]]:
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("MLP_")}
    try:
        yield _world(tmp_path_factory.mktemp("first")), _world(tmp_path_factory.mktemp("second"))
    finally:
        os.environ.update(saved)


def test_every_asset_records_the_same_data_versions_in_both_worlds(worlds: tuple[Recorded, Recorded]):
    first, second = (w["versions"] for w in worlds)
    assert {asset for asset, _ in first} >= EXPECTED
    assert set(first) == set(second)
    # every scored day has its drift report, predictions and performance, with a data version
    for asset in (DRIFT, PREDICTIONS, LIVE_PERFORMANCE):
        for day in SCORED:
            assert all(first[asset, day]), f"{asset}[{day}] recorded no data version"
    differ = {
        f"{a}[{p}]": (first[a, p], second[a, p])
        for a, p in sorted(first, key=str)
        if first[a, p] != second[a, p]
    }
    assert not differ, f"data versions that depend on the run: {differ}"


def test_every_check_records_the_same_outcome_and_metadata_in_both_worlds(worlds: tuple[Recorded, Recorded]):
    first, second = (w["checks"] for w in worlds)
    assert {(a, c) for a, c, _ in first} >= {
        (DRIFT, "no_feature_drift"),
        (LIVE_PERFORMANCE, "no_performance_decay"),
    }
    assert set(first) == set(second)
    differ = {k: (first[k], second[k]) for k in sorted(first, key=str) if first[k] != second[k]}
    assert not differ, f"check evaluations that depend on the run: {differ}"
