"""Cold start, end to end: an empty instance with the production sensors on, fed one day at a time.

Nothing is materialized, nothing is registered, no model exists. ``Replay`` (the code ``mlp replay``
and ``make demo`` run) advances 2013-01-07..2013-01-28 from the first daily partition: each day the
real automation evaluator materializes what is new, then every sensor of the definitions ticks
once, in order (the retrain sensor with the simulated clock, the deploy sensor, the OpenLineage
export), and what they request runs, as the daemon would launch it. No human step.

The smallest setting that trains a first model quickly: a 2-week window starting on the first
partition (a Monday), so the first model week 2013-01-21 can be trained and judged once its holdout
week is in (2013-01-27); no HPO, 4 epochs, a ROC AUC gate (the ranking edge of two weeks of January
data is reliable, the RMSE edge is not: see test_model_graph.py). What must hold:

* no sensor tick errors on any day, from the first day when nothing exists;
* ``drift_report`` and ``flight_delay_predictions`` take their "no champion yet" branch (skipped,
  no failed run) until the first champion exists, and judge and score the day after it with it;
* the retrain sensor's freshness policy ("no champion model yet") defers, once, until the first
  model week is trainable, then requests it: trained, evaluated, promoted, its Bento built;
* the deploy sensor deploys that Bento (no supervisor runs during the replay: the deployment
  records ``no_supervisor`` and the release waits in the desired state);
* live: the real supervisor (``mlp deploy serve``), started on that instance as an operator starts
  the service, serves the release the sensor deployed, and the first champion answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.defs.monitoring.sensors import TAG_CAUSE
from ml_platform.defs.serving import bento, deployment
from ml_platform.demo import days
from ml_platform.lib import metadata as keys
from ml_platform.lib.monitoring.events import MonitoringEvents
from ml_platform.replay import Replay, TimelineEntry
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import latest
from ml_platform_tests.serving.conftest import body_of, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIRST, LAST = date(2013, 1, 7), date(2013, 1, 28)
#: The day the first model week's holdout week is complete: the first champion is made that night.
TRAINABLE = "2013-01-27"
WEEK = "2013-01-21"
COLD: dict[str, Any] = {
    "partition_start": FIRST.isoformat(),
    "partition_end": "2013-02-04",
    "training_window_weeks": 2,
    "validation_days": 3,
    "hpo_trials": 0,
    "max_epochs": 4,
    "gate_metrics": ["roc_auc"],
    "executor": "in_process",
    "git_commit": "test",
    # the production values: the automation, retrain and deploy sensors run
    "sensors_running": True,
}


@dataclass(frozen=True)
class ColdWorld:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance
    replay: Replay
    entries: list[TimelineEntry]


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdWorld]:
    root = tmp_path_factory.mktemp("cold")
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    settings = PlatformSettings(root_dir=root, **COLD)
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        assert not instance.get_runs() and not instance.get_materialized_partitions(
            dg.AssetKey("flight_features")
        )
        assert build_definitions(settings).resources["mlflow_registry"].registry().champion() is None
        replay = Replay(settings, instance)
        entries = replay.run(FIRST, LAST)
        yield ColdWorld(root, settings, instance, replay, entries)


def test_every_sensor_ticks_every_day_from_the_empty_instance_and_none_errors(cold: ColdWorld) -> None:
    defs = build_definitions(cold.settings)
    sensors = {s.name for s in defs.sensors or []}
    assert {
        "data_automation_sensor",
        "retrain_sensor",
        "deploy_champion_sensor",
        "openlineage_sensor",
    } <= sensors
    for sensor in defs.sensors or []:  # the production values turn them on
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name
    ticked = {(t.day, t.sensor) for t in cold.replay.ticks}
    assert ticked == {(d, s) for d in days(FIRST, LAST) for s in sensors}
    assert len(cold.replay.ticks) == len(ticked)  # one tick each: a tick that raised would have stopped it
    assert [e for e in cold.entries if e.severity == "error"] == []


def test_no_run_failed_and_the_monitoring_assets_waited_for_a_champion(cold: ColdWorld) -> None:
    instance = cold.instance
    failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert failed == [], [r.run_id for r in failed]
    # the monitoring job ran every day; drift_report / predictions skipped until there was a champion
    monitoring = instance.get_runs(dg.RunsFilter(job_name="daily_monitoring_job"))
    assert {r.tags["dagster/partition"] for r in monitoring} == set(days(FIRST, LAST))
    after = LAST.isoformat()
    assert instance.get_materialized_partitions(dg.AssetKey("drift_report")) == {after}
    assert instance.get_materialized_partitions(dg.AssetKey("flight_delay_predictions")) == {after}
    assert latest(instance, "drift_report", after).metadata["drift/model_version"].value == "1"
    assert set(days(FIRST, LAST)) <= instance.get_materialized_partitions(dg.AssetKey("flight_features"))
    data = [e for e in cold.entries if e.kind == "data"]
    assert [e.day for e in data] == days(FIRST, date.fromisoformat(TRAINABLE))
    assert all("no champion yet" in e.text for e in data)
    assert [e.day for e in cold.entries if e.kind == "drift"] == [after]


def test_the_freshness_policy_trains_evaluates_and_promotes_the_first_model(cold: ColdWorld) -> None:
    events = MonitoringEvents(cold.settings.monitoring_events_table).to_frame()
    events = events.filter(events["kind"].str.starts_with("retrain_"))  # the day after may drift
    kinds = events["kind"].to_list()
    # a standing "nothing to train yet" is recorded once, not every day
    assert kinds == ["retrain_deferred", "retrain_requested"], events
    deferred, requested = events.iter_rows(named=True)
    assert (
        f"the first, delay_model[{WEEK}], needs its holdout week's flight_features through {TRAINABLE}"
        in (deferred["summary"])
    )
    assert requested["partition"] == WEEK and requested["day"] == TRAINABLE
    assert requested["run_key"] == f"retrain:{WEEK}:freshness@{TRAINABLE}"
    assert "no champion model yet" in requested["summary"]

    (run,) = cold.instance.get_runs(dg.RunsFilter(job_name="weekly_model_job"))
    assert run.tags[TAG_CAUSE] == "freshness" and run.status == dg.DagsterRunStatus.SUCCESS
    model = latest(cold.instance, "delay_model", WEEK)
    version = str(model.metadata[keys.MLFLOW_MODEL_VERSION].value)
    assert version == "1"
    promotion = latest(cold.instance, "model_promotion", WEEK)
    assert promotion.metadata[keys.REGISTRY_DECISION].value == "promote"
    registry = build_definitions(cold.settings).resources["mlflow_registry"].registry()
    assert registry.champion() == version
    (retrain,) = [e for e in cold.entries if e.kind == "retrain"]
    assert retrain.day == TRAINABLE and "promote -> champion v1" in retrain.text


def test_the_first_champions_bento_is_built_and_deployed_by_the_sensor(cold: ColdWorld) -> None:
    built = latest(cold.instance, bento.NAME, WEEK)
    tag = str(built.metadata[bento.BENTO_TAG].value)
    assert built.metadata[bento.ALIASES_AT_BUILD].value == ["champion"]
    (run,) = cold.instance.get_runs(dg.RunsFilter(job_name=deployment.JOB))
    assert run.tags["dagster/run_key"] == f"deploy:{tag}" and run.status == dg.DagsterRunStatus.SUCCESS
    deployed = cold.instance.fetch_materializations(dg.AssetKey(deployment.NAME), limit=5).records
    assert len(deployed) == 1 and deployed[0].run_id == run.run_id
    meta = {k: v.value for k, v in deployed[0].asset_materialization.metadata.items()}  # type: ignore[union-attr]
    assert meta[bento.BENTO_TAG] == tag and meta[keys.MLFLOW_MODEL_VERSION] == "1"
    assert meta[deployment.REQUESTED_BY] == f"sensor:{deployment.SENSOR}"
    # no supervisor in this test: the release waits in the desired state, and the record says so
    assert meta[deployment.APPLIED] == "no_supervisor"
    desired = json.loads((cold.settings.deployment_dir / "desired.json").read_text())
    assert desired["champion"]["bento_tag"] == tag and desired["generation"] == 1
    (entry,) = [e for e in cold.entries if e.kind == "run"]
    assert entry.day == TRAINABLE and "deploy_champion_sensor -> deploy_job" in entry.text
    assert "applied: no_supervisor" in entry.text


def test_the_openlineage_sensor_exported_the_cold_start(cold: ColdWorld) -> None:
    exported = [
        json.loads(line)
        for line in (cold.settings.openlineage_state_dir / "events.jsonl").read_text().splitlines()
    ]
    jobs = {e["job"]["name"] for e in exported}
    assert any("delay_model" in j for j in jobs) and any("deployment" in j for j in jobs), jobs


def _env(cold: ColdWorld) -> dict[str, str]:
    """The world's settings as the environment of an ``mlp`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "BENTOML_", "DAGSTER_"))}
    env["MLP_ROOT_DIR"] = str(cold.root)
    for name, value in COLD.items():
        env[f"MLP_{name.upper()}"] = json.dumps(value) if isinstance(value, list | bool) else str(value)
    return env


@pytest.mark.live
def test_the_supervisor_serves_the_release_the_sensor_deployed(cold: ColdWorld) -> None:
    import httpx
    import polars as pl

    from ml_platform.lib.deploy.supervisor import read_status, supervisor_running
    from ml_platform.lib.storage import DeltaPartitionStore

    store = DeltaPartitionStore(cold.settings.delta_root)
    row = (
        pl.read_delta(store.table_uri("flight_features"))
        .filter((pl.col("partition_date") == LAST.isoformat()) & (pl.col("carrier") == "UA"))
        .sort("scheduled_departure", "flight")
        .row(0, named=True)
    )
    port = free_port()
    status_path = cold.settings.deployment_dir / "status.json"
    log_path = cold.root / "mlp-deploy-serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlp")), "deploy", "serve", "--port", str(port)],
            env=_env(cold),
            cwd=cold.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                status = read_status(status_path)
                if supervisor_running(status) and status and status.get("applied_generation") == 1:
                    break
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
                time.sleep(0.5)
            answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=body_of(row), timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Model-Version"] == "1" and answer.headers["X-Served-By"] == "champion"
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise
    assert code == 0, log_path.read_text()[-3000:]


def test_mlp_replay_starts_on_an_empty_instance(tmp_path: Path) -> None:
    """`mlp replay` from the first partition needs no demo before it; a later start still says what to run."""
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "DAGSTER_"))}
    env.update({"MLP_ROOT_DIR": str(tmp_path), "MLP_PARTITION_START": FIRST.isoformat(), "COLUMNS": "200"})
    mlp = str(Path(sys.executable).with_name("mlp"))
    later = subprocess.run(
        [mlp, "replay", "--start", "2013-01-08", "--end", "2013-01-08"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert later.returncode == 1
    text = " ".join((later.stdout + later.stderr).split())
    assert "flight_features[2013-01-07] is not materialized" in text
    assert f"or replay from the first partition ({FIRST}) on an empty instance" in text
    first = subprocess.run(
        [mlp, "replay", "--start", FIRST.isoformat(), "--end", FIRST.isoformat()],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{FIRST}  data in; no champion yet, so no drift report" in first.stdout, first.stdout
