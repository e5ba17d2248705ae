"""``mlp replay``: days go by one at a time, and automation and every sensor tick as the daemon would.

For each day D the replay sets the clock to D+1 00:30 UTC (D's data is complete), then:

1. evaluates the declarative automation conditions at that time, with the real Dagster evaluator
   (:func:`dagster.evaluate_automation_conditions`, what the daemon's ``data_automation_sensor``
   runs), and runs what they request, until they request nothing more: raw[D] appears, then
   flows through validation, features, the profiles and the drift report by itself;
2. evaluates one tick of every other sensor of the definitions, in their order (the real
   sensors, the retrain sensor with the simulated clock): the retrain sensor, then the deploy
   sensor (so a champion promoted by that day's retrain is deployed the same day), then the
   OpenLineage export; it runs what each requests, with the run key, config and tags the daemon
   would set, skipping a run key that already ran (the daemon's de-duplication). It ticks them
   whatever their default status: it plays production, where ``MLP_SENSORS_RUNNING=true`` turns
   them on (the embedded demo leaves them off because 2013 is long past);
3. prints what happened: drift found (and its scores), the sensor's decision, the retrain's gates,
   the promotion or rejection, the deployment.

A sensor tick that raises stops the replay with an error naming the sensor and the day (the
daemon would record a failed tick); every tick is kept in :attr:`Replay.ticks`.

The replay can start on an empty instance at the first daily partition (``MLP_PARTITION_START``):
the sensors then meet the cold start (no data, no registered model, no champion) and the retrain
sensor's freshness policy trains the first model once its first model week is trainable. Starting
later needs the days before the start (the trailing aggregates read them).

Everything lands in the same Dagster instance, registry and events table as the demo, so
``make ui`` shows the same history. A day already replayed is not redone: its timeline is read
back from ``<storage>/replay/timeline.jsonl``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from ml_platform.settings import PlatformSettings


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the replay's timeline."""

    day: str
    kind: str  # data | drift | live | sensor | retrain | run (of another sensor's request)
    text: str
    severity: str = "info"


@dataclass
class ReplayState:
    """What the replay has done so far (persisted between ``make demo`` runs)."""

    last_day: str | None = None
    #: The retrain sensor's cursor.
    sensor_cursor: str | None = None
    #: The cursors of the other sensors, by sensor name.
    cursors: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ReplayState:
        """The state at ``path`` (a fresh one if there is none)."""
        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        """Write the state to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))


@dataclass(frozen=True)
class SensorTick:
    """One evaluated tick of one sensor."""

    day: str
    sensor: str
    #: The run keys it requested (for the automation: the runs it launched).
    requested: tuple[str, ...]
    skip_reason: str | None


def replay_dir(settings: PlatformSettings) -> Path:
    """Where the replay keeps its state and timeline."""
    return settings.storage_root / "replay"


def recorded_timeline(settings: PlatformSettings, start: date, end: date) -> list[TimelineEntry]:
    """Timeline entries already recorded for days in ``[start, end]``."""
    path = replay_dir(settings) / "timeline.jsonl"
    if not path.exists():
        return []
    entries = [TimelineEntry(**json.loads(line)) for line in path.read_text().splitlines() if line]
    return [e for e in entries if start.isoformat() <= e.day <= end.isoformat()]


class Replay:
    """Replays days forward on one instance (see the module docstring)."""

    def __init__(
        self,
        settings: PlatformSettings,
        instance: dg.DagsterInstance,
        on_entry: Callable[[TimelineEntry], None] | None = None,
    ) -> None:
        from ml_platform.definitions import (
            AUTOMATION_SENSOR,
            DATA_JOB,
            MODEL_JOB,
            MONITORING_JOB,
            build_definitions,
        )
        from ml_platform.defs.monitoring.sensors import SENSOR

        self.settings = settings
        self.instance = instance
        self.on_entry = on_entry
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        self.defs = build_definitions(settings, clock=lambda: self.now)
        self.jobs = [self.defs.resolve_job_def(name) for name in (DATA_JOB, MONITORING_JOB)]
        self.model_job = self.defs.resolve_job_def(MODEL_JOB)
        self.sensor = self.defs.resolve_sensor_def(SENSOR)
        #: The automation sensor is evaluated by :meth:`_automation`; these tick after it, in order.
        self.sensors = [
            self.defs.resolve_sensor_def(s.name)
            for s in self.defs.sensors or []
            if s.name != AUTOMATION_SENSOR
        ]
        self.automation_sensor = AUTOMATION_SENSOR
        self.automated = sorted(
            (key for job in self.jobs for key in job.asset_layer.executable_asset_keys),
            key=lambda k: k.to_user_string(),
        )
        self.state_path = replay_dir(settings) / "state.json"
        self.timeline_path = replay_dir(settings) / "timeline.jsonl"
        self.state = ReplayState.load(self.state_path)
        self.automation_cursor: Any = None
        self.entries: list[TimelineEntry] = []
        self.ticks: list[SensorTick] = []

    def _emit(self, entry: TimelineEntry) -> None:
        self.entries.append(entry)
        self.timeline_path.parent.mkdir(parents=True, exist_ok=True)
        with self.timeline_path.open("a") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
        if self.on_entry:
            self.on_entry(entry)

    def run(self, start: date, end: date) -> list[TimelineEntry]:
        """Replay every day of ``[start, end]`` not replayed yet; return the whole range's timeline."""
        done = date.fromisoformat(self.state.last_day) if self.state.last_day else None
        earlier = recorded_timeline(self.settings, start, min(end, done)) if done else []
        for entry in earlier:
            if self.on_entry:
                self.on_entry(entry)
        day = max(start, done + timedelta(days=1)) if done else start
        first = self.settings.partition_start
        if day < first:
            raise RuntimeError(
                f"replay from {day}: the first daily partition is {first} (MLP_PARTITION_START)"
            )
        before = (day - timedelta(days=1)).isoformat()
        if (
            day <= end
            and day > first
            and before not in self.instance.get_materialized_partitions(dg.AssetKey("flight_features"))
        ):
            raise RuntimeError(
                f"replay from {day}: flight_features[{before}] is not materialized; a replayed day needs"
                f" the days before it (the trailing aggregates read 28). Run `mlp demo --end {before}` first,"
                f" or replay from the first partition ({first}) on an empty instance."
            )
        if day <= end and self.automation_cursor is None:
            # the daemon's previous tick: "newly missing" is relative to it, so without it the
            # first day's partition would never count as new
            previous = datetime.combine(day, time(0, 30), tzinfo=UTC)
            self.automation_cursor = dg.evaluate_automation_conditions(
                defs=self.defs, instance=self.instance, evaluation_time=previous
            ).cursor
        while day <= end:
            self.day(day)
            day += timedelta(days=1)
        return earlier + self.entries

    def day(self, day: date) -> None:
        """Replay one day: automation until quiet, then one tick of every other sensor."""
        self.now = datetime.combine(day + timedelta(days=1), time(0, 30), tzinfo=UTC)
        ran = self._automation(day)
        self.ticks.append(
            SensorTick(
                day.isoformat(), self.automation_sensor, tuple(ran), None if ran else "nothing requested"
            )
        )
        if ran:
            self._drift_entry(day)
            self._live_entry(day)
        for sensor in self.sensors:
            if sensor.name == self.sensor.name:
                self._sensor_tick(day)
            else:
                self._tick(sensor, day)
        self.state.last_day = day.isoformat()
        self.state.save(self.state_path)

    def _evaluate(self, sensor: dg.SensorDefinition, cursor: str | None, day: date) -> Any:
        """One tick of ``sensor`` as the daemon evaluates it; a tick that raises stops the replay."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=self.defs,
            sensor_name=sensor.name,
            resources=self.defs.resources,
        )
        # what a tick logs at INFO (the daemon keeps it with the tick) would interleave with the
        # timeline; the tick's outcome is printed from its result and the records it made
        quiet = logging.root.manager.disable
        logging.disable(logging.INFO)
        try:
            data = sensor.evaluate_tick(context)
        except Exception as exc:
            raise RuntimeError(f"replay {day}: the tick of {sensor.name} failed: {exc}") from exc
        finally:
            logging.disable(quiet)
        self.ticks.append(
            SensorTick(
                day.isoformat(),
                sensor.name,
                tuple(r.run_key or "" for r in data.run_requests or []),
                data.skip_message,
            )
        )
        return data

    def _already_ran(self, day: date, run_key: str | None) -> bool:
        """Whether a run with ``run_key`` exists (the daemon's de-duplication); says so in the timeline."""
        from dagster._core.storage.tags import RUN_KEY_TAG

        if not run_key or not self.instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1):
            return False
        self._emit(TimelineEntry(day.isoformat(), "sensor", f"run key {run_key} already ran; skipped"))
        return True

    def _tick(self, sensor: dg.SensorDefinition, day: date) -> None:
        """One tick of a sensor other than the retrain sensor; run what it requests."""
        from dagster._core.storage.tags import RUN_KEY_TAG

        data = self._evaluate(sensor, self.state.cursors.get(sensor.name), day)
        self.state.cursors[sensor.name] = data.cursor
        for request in data.run_requests or []:
            if self._already_ran(day, request.run_key):
                continue
            job = self.defs.resolve_job_def(request.job_name or sensor.job_name)
            config = request.run_config
            config = dict(config.to_config_dict() if isinstance(config, dg.RunConfig) else config or {})
            config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
            outcome = job.execute_in_process(
                instance=self.instance,
                run_config=config,
                partition_key=request.partition_key,
                raise_on_error=False,
                tags={**request.tags, RUN_KEY_TAG: request.run_key or "", "ml_platform/replay": sensor.name},
            )
            self._emit(
                TimelineEntry(
                    day.isoformat(),
                    "run",
                    f"{sensor.name} -> {job.name}"
                    + (f"[{request.partition_key}]" if request.partition_key else "")
                    + f": {_run_summary(outcome)}",
                    "info" if outcome.success else "error",
                )
            )

    def _automation(self, day: date) -> list[str]:
        """Evaluate the automation conditions at ``self.now`` and run their requests, until quiet."""
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        ran: list[str] = []
        for _ in range(10):  # raw -> validated -> features -> profiles -> drift: five rounds
            result = dg.evaluate_automation_conditions(
                defs=self.defs,
                instance=self.instance,
                cursor=self.automation_cursor,
                evaluation_time=self.now,
            )
            self.automation_cursor = result.cursor
            requested: dict[str, list[dg.AssetKey]] = {}
            for key in self.automated:
                for partition in result.get_requested_partitions(key):
                    requested.setdefault(str(partition), []).append(key)
            if not requested:
                return ran
            for partition, asset_keys in sorted(requested.items()):
                for job in self.jobs:
                    selected = [k for k in asset_keys if k in job.asset_layer.executable_asset_keys]
                    if not selected:
                        continue
                    outcome = job.execute_in_process(
                        instance=self.instance,
                        partition_key=partition,
                        asset_selection=selected,
                        run_config=quiet,
                        raise_on_error=False,
                        tags={"ml_platform/replay": "automation"},
                    )
                    names = ", ".join(k.to_user_string() for k in selected)
                    if not outcome.success:
                        from ml_platform.demo import _step_error

                        errors = [_step_error(e) for e in outcome.all_events if e.is_step_failure]
                        raise RuntimeError(
                            f"replay {day}: automated run of {names}[{partition}] failed: {'; '.join(errors)}"
                        )
                    ran.append(f"{names}[{partition}]")
        raise RuntimeError(f"replay {day}: automation still requesting runs after 10 evaluations")

    def _drift_entry(self, day: date) -> None:
        from ml_platform.defs.monitoring.assets import DRIFT, DRIFT_ERRORS, DRIFT_SEVERITY, DRIFT_WARNINGS
        from ml_platform.defs.publish import latest_materializations
        from ml_platform.lib.monitoring.drift import describe

        partition = day.isoformat()
        record = latest_materializations(self.instance, dg.AssetKey(DRIFT), [partition]).get(partition)
        if record is None or record.asset_materialization is None:
            self._emit(TimelineEntry(partition, "data", "data in; no champion yet, so no drift report"))
            return
        meta = record.asset_materialization.metadata
        severity = str(meta[DRIFT_SEVERITY].value)
        flagged = [*meta[DRIFT_ERRORS].value, *meta[DRIFT_WARNINGS].value]  # type: ignore[misc]
        if severity == "ok":
            text = "data in; drift_report ok (every judged feature under its warn threshold)"
        else:
            shown = ", ".join(describe(f) for f in flagged[:4])
            text = f"drift_report {severity.upper()}: {shown}" + (
                f" (+{len(flagged) - 4} more)" if len(flagged) > 4 else ""
            )
        self._emit(TimelineEntry(partition, "drift", text, severity))

    def _live_entry(self, day: date) -> None:
        from ml_platform.defs.monitoring.performance import LIVE_DEGRADED
        from ml_platform.defs.monitoring.performance import NAME as LIVE
        from ml_platform.defs.publish import latest_materializations

        partition = day.isoformat()
        record = latest_materializations(self.instance, dg.AssetKey(LIVE), [partition]).get(partition)
        if record is None or record.asset_materialization is None:
            return
        meta = record.asset_materialization.metadata
        degraded = bool(meta[LIVE_DEGRADED].value)
        self._emit(
            TimelineEntry(
                partition,
                "live",
                f"live performance v{meta['live/model_version'].value} over {meta['live/pooled_days'].value}:"
                f" {meta['live/summary'].value}",
                "error" if degraded else "ok",
            )
        )

    def _sensor_tick(self, day: date) -> None:
        """One tick of the retrain sensor: its decisions in the timeline, its retrain run."""
        from dagster._core.storage.tags import PARTITION_NAME_TAG, RUN_KEY_TAG

        from ml_platform.demo import run_week
        from ml_platform.lib.monitoring.events import MonitoringEvents

        events = MonitoringEvents(self.settings.monitoring_events_table)
        seen = events.to_frame().height
        data = self._evaluate(self.sensor, self.state.sensor_cursor, day)
        self.state.sensor_cursor = data.cursor
        for row in events.to_frame().slice(seen).iter_rows(named=True):
            if row["kind"] in ("drift_detected", "decay_detected"):
                continue  # shown by the drift and live lines
            self._emit(
                TimelineEntry(
                    day.isoformat(),
                    "sensor",
                    f"retrain_sensor: {row['kind'].removeprefix('retrain_')}"
                    + (f" {row['partition']}" if row["partition"] else "")
                    + f" - {row['summary']}",
                    "warn" if row["kind"] == "retrain_requested" else "info",
                )
            )
        for request in data.run_requests or []:
            if self._already_ran(day, request.run_key):
                continue
            tags = {
                **request.tags,
                RUN_KEY_TAG: request.run_key or "",
                "ml_platform/replay": "retrain_sensor",
            }
            tags.pop(PARTITION_NAME_TAG, None)
            outcome = run_week(self.instance, self.model_job, str(request.partition_key), tags=tags)
            verdict = "error" if outcome.error else ("warn" if outcome.gates_failed else "info")
            self._emit(
                TimelineEntry(
                    day.isoformat(),
                    "retrain",
                    f"weekly_model_job[{request.partition_key}]: {outcome.summary}"
                    + (f"; FAILED: {outcome.error}" if outcome.error else ""),
                    verdict,
                )
            )


def _run_summary(outcome: dg.ExecuteInProcessResult) -> str:
    """What a requested run materialized (a deployment: its plan, whether applied), or why it failed."""
    from ml_platform.defs.serving.deployment import APPLIED, PLAN

    if not outcome.success:
        from ml_platform.demo import _step_error

        errors = [_step_error(e) for e in outcome.all_events if e.is_step_failure]
        return f"FAILED (run {outcome.run_id}): {'; '.join(errors) or 'run failed'}"
    parts = []
    for event in outcome.all_events:
        if not event.is_step_materialization:
            continue
        mat = event.step_materialization_data.materialization
        meta = mat.metadata
        detail = (
            f" ({meta[PLAN].value}; applied: {meta[APPLIED].value})"
            if PLAN in meta and APPLIED in meta
            else ""
        )
        parts.append(
            mat.asset_key.to_user_string() + (f"[{mat.partition}]" if mat.partition else "") + detail
        )
    return ", ".join(parts) or "materialized nothing"
