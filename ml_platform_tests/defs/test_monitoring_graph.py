"""Monitoring that acts, end to end: a replayed week with an injected shift on its last day.

One world for the module: features for 2013-01-01..2013-02-03, a champion trained on a 2-week
window (model week 2013-01-28), then ``Replay`` advances 2013-02-04..2013-02-10 day by day: the
real automation evaluator materializes each new day (raw -> validated -> features -> profiles ->
drift_report) and the real retrain sensor ticks once a day, alerting a webhook on loopback.
On 2013-02-10 half of the day's flights are moved to carrier UA. What must hold:

* no drift error on the six ordinary days (the false-alarm property) and no retrain for them;
* the shifted day's report is an error, naming carrier with its scores and thresholds;
* exactly one retrain request, for the first model week that can be trained and gated
  (2013-02-04), tagged with its cause, run through the gates;
* the alerts reach the webhook in the tick that saw the report;
* a second replay of the same days does nothing and re-running the sensor from scratch cannot
  launch the same evidence twice.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ml_platform.definitions import DATA_JOB, MODEL_JOB, build_definitions
from ml_platform.defs.monitoring.assets import DRIFT, DRIFT_ERRORS, DRIFT_SEVERITY
from ml_platform.defs.monitoring.sensors import TAG_CAUSE, TAG_EVIDENCE
from ml_platform.demo import days, run_partitions, run_week
from ml_platform.lib.monitoring.events import MonitoringEvents
from ml_platform.lib.storage import DeltaPartitionStore
from ml_platform.replay import Replay, ReplayState
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import latest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHIFT_DAY = "2013-02-10"
REPLAY = days(date(2013, 2, 4), date(2013, 2, 10))
SMALL: dict[str, Any] = {
    "training_window_weeks": 2,
    "validation_days": 3,
    "hpo_trials": 0,
    "max_epochs": 4,
    "gate_metrics": ["roc_auc"],
    "executor": "in_process",
    "git_commit": "test",
    "partition_end": "2013-02-11",
    # the freshness policy stays out of the way: this module is about drift
    "champion_max_age_days": 60,
}


class Receiver:
    """A webhook receiver on loopback that records every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("monitoring")
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    receiver = Receiver()
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        base = PlatformSettings(root_dir=root, notify=["log", f"webhook:{receiver.url}"], **SMALL)
        defs = build_definitions(base)
        outcomes = run_partitions(
            instance, defs.resolve_job_def(DATA_JOB), days(date(2013, 1, 1), date(2013, 2, 3))
        )
        assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
        champion = run_week(instance, defs.resolve_job_def(MODEL_JOB), "2013-01-28")
        assert champion.success, champion.error or champion.summary
        shifted = base.model_copy(update={"inject_shifts": [f"{SHIFT_DAY}:carrier=UA:0.5"]})
        ticks: list[tuple[str, int]] = []
        replay = Replay(shifted, instance)
        original_tick = replay._sensor_tick

        def tick(day: date) -> None:  # record how many alerts had arrived when each tick returned
            original_tick(day)
            ticks.append((day.isoformat(), len(receiver.bodies)))

        replay._sensor_tick = tick  # type: ignore[method-assign]
        entries = replay.run(date(2013, 2, 4), date(2013, 2, 10))
        yield {
            "root": root,
            "instance": instance,
            "settings": shifted,
            "entries": entries,
            "receiver": receiver,
            "ticks": ticks,
        }
    receiver.close()


def _drift(instance: dg.DagsterInstance, day: str) -> dg.AssetMaterialization:
    return latest(instance, DRIFT, day)


def test_each_replayed_day_flows_through_the_graph_by_automation(world):
    instance = world["instance"]
    for asset in ("raw_flights", "validated_flights", "flight_features", "flight_feature_profiles", DRIFT):
        assert set(REPLAY) <= instance.get_materialized_partitions(dg.AssetKey(asset)), asset
    runs = instance.get_runs(dg.RunsFilter(tags={"ml_platform/replay": "automation"}))
    assert runs, "the automation evaluator launched nothing"
    assert {r.job_name for r in runs} <= {DATA_JOB, "daily_monitoring_job"}


def test_ordinary_days_raise_no_drift_error(world):
    """The false-alarm property: the six unshifted days are below every error threshold."""
    for day in REPLAY[:-1]:
        assert _drift(world["instance"], day).metadata[DRIFT_SEVERITY].value != "error", day


def test_the_shifted_day_is_an_error_naming_carrier_with_scores_and_thresholds(world):
    mat = _drift(world["instance"], SHIFT_DAY)
    assert mat.metadata[DRIFT_SEVERITY].value == "error"
    errors = {f["feature"]: f for f in mat.metadata[DRIFT_ERRORS].value}
    carrier = errors["carrier"]
    assert carrier["scores"]["tvd"] >= carrier["thresholds"]["tvd"]["error"] == 0.2
    assert carrier["scores"]["tvd"] == pytest.approx(0.5 * (1 - _ua_share_before(world)), abs=0.08)
    assert "data:image/png;base64," in mat.metadata["drift/plot"].value
    assert "| carrier | error |" in mat.metadata["drift/table"].value
    checks = world["instance"].event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(DRIFT), "no_feature_drift"), limit=50
    )
    by_partition = {
        c.event.asset_check_evaluation.partition: c.event.asset_check_evaluation  # type: ignore[union-attr]
        for c in checks
        if c.event and c.event.asset_check_evaluation
    }
    assert by_partition[SHIFT_DAY].passed is False
    assert by_partition[SHIFT_DAY].severity == dg.AssetCheckSeverity.ERROR


def _ua_share_before(world) -> float:
    """UA's share of the flights of the day before the shift."""
    import polars as pl

    store = DeltaPartitionStore(world["settings"].delta_root)
    features = pl.read_delta(store.table_uri("flight_features")).filter(
        pl.col("partition_date") == "2013-02-09"
    )
    return float((features["carrier"] == "UA").mean())  # type: ignore[arg-type]


def test_exactly_one_retrain_is_requested_with_its_cause_and_gated(world):
    events = MonitoringEvents(world["settings"].monitoring_events_table).to_frame()
    requests = events.filter(events["kind"] == "retrain_requested")
    assert requests.height == 1
    (request,) = requests.iter_rows(named=True)
    assert request["partition"] == "2013-02-04"
    assert request["run_key"] == f"retrain:2013-02-04:drift@{SHIFT_DAY}"
    detail = json.loads(request["detail"])
    assert detail["causes"] == ["drift"]
    (trigger,) = detail["triggers"]
    assert trigger["day"] == SHIFT_DAY
    assert "carrier" in {f["feature"] for f in trigger["detail"]["features"]}

    runs = world["instance"].get_runs(
        dg.RunsFilter(job_name=MODEL_JOB, tags={"dagster/run_key": request["run_key"]})
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.tags[TAG_CAUSE] == "drift"
    assert json.loads(run.tags[TAG_EVIDENCE])[0]["day"] == SHIFT_DAY
    # the retrain went through the weekly job: trained, and judged by the blocking gates
    (model,) = (
        world["instance"]
        .fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("delay_model"), asset_partitions=["2013-02-04"]),
            limit=5,
        )
        .records
    )
    assert model.run_id == run.run_id
    evaluations = world["instance"].event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("model_evaluation"), "beats_naive_baseline"), limit=10
    )
    assert any(e.run_id == run.run_id for e in evaluations)
    retrains = [e for e in world["entries"] if e.kind == "retrain"]
    assert len(retrains) == 1 and "weekly_model_job[2013-02-04]" in retrains[0].text


def test_alerts_reach_the_webhook_in_the_tick_that_saw_the_report(world):
    bodies = world["receiver"].bodies
    drift_alerts = [b for b in bodies if SHIFT_DAY in b["text"] and "drift (error)" in b["text"]]
    assert len(drift_alerts) == 1
    blocks = {b["type"] for b in drift_alerts[0]["blocks"]}
    assert {"header", "section", "context"} <= blocks
    assert any("Retrain requested" in b["text"] for b in bodies)
    # the report of SHIFT_DAY is written before its day's tick; the alert was in by the end of that tick
    before = dict(world["ticks"])
    previous_day = REPLAY[-2]
    assert before[SHIFT_DAY] > before[previous_day]
    index = bodies.index(drift_alerts[0])
    assert before[previous_day] <= index < before[SHIFT_DAY]


def test_the_drift_metrics_textfile_names_the_scores(world):
    text = (world["settings"].metrics_dir / "drift.prom").read_text()
    samples = {
        (s.name, s.labels.get("feature"), s.labels.get("measure")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("mlp_feature_drift_score", "carrier", "tvd")] >= 0.2
    assert samples[("mlp_feature_drift_severity", "carrier", None)] == 2


def test_a_second_replay_is_incremental_and_a_fresh_sensor_cannot_relaunch_the_evidence(world):
    instance = world["instance"]
    before = len(instance.get_runs())
    again = Replay(world["settings"], instance).run(date(2013, 2, 4), date(2013, 2, 10))
    assert len(instance.get_runs()) == before
    assert [e.text for e in again] == [e.text for e in world["entries"]]
    # forget the sensor's cursor: it re-reads every report, finds the shifted day again, and sees
    # that the week it would retrain is already trained from these very feature versions
    state_path = world["settings"].storage_root / "replay" / "state.json"
    state = ReplayState.load(state_path)
    ReplayState(last_day="2013-02-09", sensor_cursor=None).save(state_path)
    try:
        replay = Replay(world["settings"], instance)
        replay.day(date(2013, 2, 10))
        assert (
            len(instance.get_runs(dg.RunsFilter(job_name=MODEL_JOB))) == 2
        )  # the champion's + the one retrain
        decisions = [e.text for e in replay.entries if e.kind == "sensor"]
        assert any("deferred 2013-02-04" in t and "already trained" in t for t in decisions), decisions
        assert not any("requested" in t for t in decisions), decisions
        assert not [e for e in replay.entries if e.kind == "retrain"]
    finally:
        state.save(state_path)


def test_the_champion_scores_each_day_and_its_live_metrics_are_measured(world):
    """Batch predictions by the champion, joined with the actuals: the reported RMSE is recomputable."""
    import numpy as np
    import polars as pl

    instance = world["instance"]
    store = DeltaPartitionStore(world["settings"].delta_root)
    live = latest(instance, "live_performance", SHIFT_DAY)
    pooled = live.metadata["live/pooled_days"].value
    assert pooled.startswith(f"{REPLAY[0]}..{SHIFT_DAY}")
    predictions = pl.read_delta(store.table_uri("flight_delay_predictions")).filter(
        pl.col("partition_date").is_in(REPLAY)
    )
    assert set(predictions["partition_date"].unique()) == set(REPLAY)
    assert set(predictions["model_version"].unique()) == {live.metadata["live/model_version"].value}
    features = pl.read_delta(store.table_uri("flight_features")).filter(
        pl.col("partition_date").is_in(REPLAY)
    )
    joined = predictions.join(
        features, on=["carrier", "flight", "origin", "dest", "scheduled_departure"], how="inner"
    ).filter(pl.col("has_target"))
    rmse = float(np.sqrt(((joined["predicted_arr_delay"] - joined["arr_delay"]) ** 2).mean()))  # type: ignore[operator]
    assert live.metadata["live/model_metrics"].value["rmse"] == pytest.approx(rmse, rel=1e-9)
    (decay,) = live.metadata["live/decay"].value
    assert decay["metric"] == "roc_auc" and decay["threshold"] == 0.05
    assert decay["degraded"] == (decay["degradation"] > 0.05)


def test_live_decay_of_the_champion_reaches_the_sensor_and_the_webhook(world):
    """The degradation path: a decayed live report of the champion becomes a trigger and an alert.

    The report is written as a runless event shaped exactly like ``live_performance``'s (a real
    decay of this small model cannot be ordered up); everything after it is the real sensor. The
    week it would retrain is already trained from the same data, so the decision is a deferral
    that carries the degradation as its cause.
    """
    from ml_platform.defs.monitoring.performance import LIVE_DECAY, LIVE_DEGRADED, LIVE_MODEL_VERSION
    from ml_platform.lib.monitoring.retrain import RetrainState

    instance = world["instance"]
    settings = world["settings"]
    # the champion now (the retrain of 2013-02-04 may have replaced the version that scored the days)
    champion = build_definitions(settings).resources["mlflow_registry"].registry().champion()
    decay = {
        "metric": "roc_auc",
        "live_model": 0.55,
        "live_baseline": 0.60,
        "evaluation_model": 0.70,
        "evaluation_baseline": 0.60,
        "live_skill": 0.60 / 0.55,
        "evaluation_skill": 0.60 / 0.70,
        "degradation": (0.60 / 0.55) / (0.60 / 0.70) - 1,
        "threshold": 0.05,
        "degraded": True,
    }
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="live_performance",
            partition=SHIFT_DAY,
            metadata={
                LIVE_DEGRADED: True,
                LIVE_MODEL_VERSION: champion,
                LIVE_DECAY: dg.MetadataValue.json([decay]),
            },
        )
    )
    state_path = settings.storage_root / "replay" / "state.json"
    saved = ReplayState.load(state_path)
    alerts_before = len(world["receiver"].bodies)
    events = MonitoringEvents(settings.monitoring_events_table)
    seen = events.to_frame().height
    try:
        replay = Replay(settings, instance)
        replay.now = replay.now.replace(year=2013, month=2, day=11, hour=1)
        context = dg.build_sensor_context(
            instance=instance,
            cursor=saved.sensor_cursor,
            definitions=replay.defs,
            sensor_name="retrain_sensor",
            resources=replay.defs.resources,
        )
        result = replay.sensor.evaluate_tick(context)
    finally:
        saved.save(state_path)
    assert not result.run_requests
    assert RetrainState.from_json(result.cursor).pending[-1].cause == "degradation"
    new = events.to_frame().slice(seen)
    kinds = new["kind"].to_list()
    assert "decay_detected" in kinds and "retrain_deferred" in kinds
    deferral = json.loads(new.filter(new["kind"] == "retrain_deferred")["detail"][0])
    assert "degradation" in deferral["causes"]
    alerts = world["receiver"].bodies[alerts_before:]
    assert any("Live performance decay" in a["text"] for a in alerts)
