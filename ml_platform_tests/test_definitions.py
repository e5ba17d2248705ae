"""Definitions load, every job resolves, and loading stays cheap and side-effect free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.definitions import AUTOMATION_SENSOR, DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions

ROOT = Path(__file__).resolve().parents[1]
ASSETS = {"raw_flights", "raw_weather", "validated_flights", "validated_weather", "flight_features"}
MODEL_ASSETS = {"delay_model", "model_evaluation", "model_promotion", "delay_bento"}
PROFILE_ASSETS = {"flight_feature_profiles", "validated_flight_profiles"}
MONITORING_ASSETS = {
    "drift_report",
    "flight_delay_predictions",
    "live_performance",
    "prediction_log",
    "prediction_log_profiles",
}
ONLINE_ASSETS = {"online_features"}
DEPLOY_ASSETS = {"deployment"}


def test_every_job_resolves_and_every_asset_is_described(make_settings):
    defs = build_definitions(make_settings())
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert DATA_JOB in jobs
    for name in jobs:
        assert defs.resolve_job_def(name).get_job_snapshot().name == name
    # the daily data job carries the profiles and the online store's snapshot; the monitoring job
    # judges the day against the champion
    assert {
        k.to_user_string() for k in jobs[DATA_JOB].asset_layer.executable_asset_keys
    } == ASSETS | PROFILE_ASSETS | ONLINE_ASSETS
    assert {k.to_user_string() for k in jobs[MODEL_JOB].asset_layer.executable_asset_keys} == MODEL_ASSETS
    assert {
        k.to_user_string() for k in jobs[MONITORING_JOB].asset_layer.executable_asset_keys
    } == MONITORING_ASSETS
    all_specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert {k.to_user_string() for k in jobs["deploy_job"].asset_layer.executable_asset_keys} == DEPLOY_ASSETS
    assert (
        set(all_specs)
        == ASSETS | MODEL_ASSETS | PROFILE_ASSETS | MONITORING_ASSETS | ONLINE_ASSETS | DEPLOY_ASSETS
    )
    for name in PROFILE_ASSETS | MONITORING_ASSETS | ONLINE_ASSETS:
        spec = all_specs[name]
        assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition), name
        assert spec.description and len(spec.description) > 40 and spec.code_version and spec.kinds, name
        assert spec.automation_condition is not None, name  # new days flow in by themselves
    for name in ASSETS:
        assert all_specs[name].automation_condition is not None, name
    assert all_specs["delay_model"].freshness_policy is not None
    sensors = {s.name: s for s in defs.get_repository_def().sensor_defs}
    assert set(sensors) == {
        AUTOMATION_SENSOR,
        "retrain_sensor",
        "deploy_champion_sensor",
        "openlineage_sensor",
    }
    assert sensors["retrain_sensor"].job_name == MODEL_JOB
    assert sensors["deploy_champion_sensor"].job_name == "deploy_job"
    # the demo replays the sensors that launch runs; the daemon starts them only in production
    assert all(
        s.default_status == dg.DefaultSensorStatus.STOPPED
        for n, s in sensors.items()
        if n != "openlineage_sensor"
    )
    # the OpenLineage export launches nothing and only reads the instance: it runs wherever a daemon does
    assert sensors["openlineage_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert not sensors["openlineage_sensor"].targets
    for name in MODEL_ASSETS:
        spec = all_specs[name]
        assert isinstance(spec.partitions_def, dg.WeeklyPartitionsDefinition), name
        assert spec.description and len(spec.description) > 40 and spec.code_version and spec.kinds, name
    assert jobs[MODEL_JOB].partitions_def == all_specs["delay_model"].partitions_def
    specs = {name: spec for name, spec in all_specs.items() if name in ASSETS}
    for name, spec in specs.items():
        assert spec.group_name in {"ingest", "validation", "features"}, name
        assert spec.kinds and {"polars", "delta"} <= set(spec.kinds), name
        assert spec.description and len(spec.description) > 40, name
        assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition), name
        assert spec.code_version, name
    assert len(specs["raw_flights"].partitions_def.get_partition_keys()) == 365  # type: ignore[union-attr]
    assert jobs[DATA_JOB].partitions_def == specs["raw_flights"].partitions_def
    assert "pandera" in specs["validated_flights"].kinds


def test_guarding_checks_are_blocking_and_partitioned(make_settings):
    defs = build_definitions(make_settings())
    checks = {
        (spec.asset_key.to_user_string(), spec.name): spec
        for assets_def in defs.resolve_asset_graph().assets_defs
        for spec in assets_def.check_specs
    }
    for key in [
        ("validated_flights", "quarantine_share_within_threshold"),
        ("validated_weather", "quarantine_share_within_threshold"),
        ("flight_features", "no_look_ahead"),
        ("flight_features", "complete"),
        ("flight_features", "targets_consistent"),
    ]:
        assert checks[key].blocking, key
        assert checks[key].partitions_def is not None, key
    assert not checks[("validated_flights", "no_quarantined_rows")].blocking


def test_feature_window_mapping_matches_what_the_asset_reads(make_settings):
    defs = build_definitions(make_settings())
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("flight_features"))
    mapping = node.partition_mappings[dg.AssetKey("validated_flights")]
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    assert (mapping.start_offset, mapping.end_offset) == (-28, 0)


def _python(code: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_settings_are_read_when_definitions_are_built_not_at_import(tmp_path):
    code = (
        "import ml_platform.definitions as d\n"
        "print('imported')\n"
        "try:\n"
        "    d.defs()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, str(exc).splitlines()[0])\n"
    )
    out = _python(code, {"MLP_SOURCE": "not-a-source", "MLP_ROOT_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "imported"
    assert "ValidationError" in out.stdout


def test_loading_definitions_does_not_import_heavy_libraries(tmp_path):
    code = (
        "import sys, json\n"
        "import ml_platform.definitions as d\n"
        "d.defs()\n"
        "heavy = ('torch', 'bentoml', 'whylogs', 'mlflow', 'optuna', 'dagster_k8s', 'kubernetes')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = _python(code, {"MLP_ROOT_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_workspace_loads_like_the_ui_does(tmp_path):
    """`dagster definitions validate` loads workspace.yaml exactly as `make ui` will."""
    home = tmp_path / "home"
    home.mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        env={**os.environ, "DAGSTER_HOME": str(home), "MLP_ROOT_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


@pytest.mark.parametrize("gpus", [0, 2])
def test_training_declares_its_resources_for_the_kubernetes_executor(make_settings, gpus):
    from dagster_k8s.job import get_user_defined_k8s_config
    from kubernetes.client import V1ResourceRequirements

    defs = build_definitions(make_settings(training_gpus=gpus))
    tags = defs.resolve_assets_def("delay_model").node_def.tags
    assert tags["ml_platform/accelerator"] == ("gpu" if gpus else "cpu")
    # parsed by dagster-k8s exactly as its k8s_job_executor parses a step's tags
    config = get_user_defined_k8s_config(tags)
    resources = V1ResourceRequirements(**config.container_config["resources"])
    assert resources.requests == {"cpu": "2", "memory": "4Gi"}
    if gpus:
        assert resources.limits["nvidia.com/gpu"] == "2"
        assert config.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert config.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}
    else:
        assert "nvidia.com/gpu" not in resources.limits and not config.pod_spec_config


@pytest.mark.parametrize(("weeks", "first_week"), [(8, "2013-03-04"), (2, "2013-01-21")])
def test_model_weeks_start_when_their_window_is_inside_the_data(make_settings, weeks, first_week):
    from ml_platform.partitions import build_partitioning, upstream_keys

    settings = make_settings(training_window_weeks=weeks, validation_days=3)
    parts = build_partitioning(settings)
    keys = parts.weekly.get_partition_keys()
    assert keys[0] == first_week
    assert keys[-1] == "2013-12-23"  # the last whole Monday-to-Sunday week of 2013
    window = upstream_keys(parts.training_window, parts.weekly, first_week, parts.daily)
    assert len(window) == 7 * weeks and window[0] >= "2013-01-01" and window[-1] < first_week
    holdout = upstream_keys(parts.holdout_window, parts.weekly, first_week, parts.daily)
    assert holdout[0] == first_week and len(holdout) == 7


def test_settings_refuse_a_validation_split_as_long_as_the_window(make_settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="MLP_VALIDATION_DAYS"):
        make_settings(training_window_weeks=2, validation_days=14)
