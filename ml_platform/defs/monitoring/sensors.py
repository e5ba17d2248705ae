"""The retrain sensor: drift at error severity, live decay, a stale champion -> one gated retrain.

Each tick:

1. reads the drift reports materialized since its cursor: an error-severity report is a drift
   trigger (its features, scores and thresholds), a warn-severity one only an alert;
2. reads the live performance reports since its cursor: the champion's skill decayed past the
   threshold is a degradation trigger;
3. applies the freshness policy: a champion whose training data ends more than
   ``champion_max_age_days`` before the latest data day is a freshness trigger;
4. finds the current model partition: the newest week whose holdout week is complete, so the
   retrained model can be judged by the evaluation gates before anything is promoted; when the
   records that say whether it is up to date are broken (a training-window partition without its
   storage keys or not materialized, a model materialization without its lineage), the decision
   is a **block** naming the asset, partition and metadata key, never a retrain;
5. lets :func:`ml_platform.lib.monitoring.retrain.decide` apply the guardrails (block, defer,
   cooldown, daily cap, run key) and requests at most one run of the weekly model job;
6. records the decision in the monitoring events table, tags the run with its cause, and alerts.

Alerts go out in the tick that sees the evidence, so within one sensor interval of the report.

Cold start: with no data the sensor has nothing to judge; with data but no registered model (so no
champion) the freshness policy asks for the first model, deferred (reported once) until the first
model week has a complete holdout week, then requested like any retrain.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import CODE_VERSION_TAG

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.monitoring.assets import (
    DRIFT,
    DRIFT_ERRORS,
    DRIFT_MODEL_VERSION,
    DRIFT_SEVERITY,
    DRIFT_WARNINGS,
    MODEL,
    ChampionModel,
    find_champion,
    latest_data_day,
)
from ml_platform.defs.monitoring.performance import LIVE_DECAY, LIVE_DEGRADED, LIVE_MODEL_VERSION
from ml_platform.defs.monitoring.performance import NAME as LIVE_PERFORMANCE
from ml_platform.defs.publish import RecordedVersions, latest_materializations
from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import PartitionVersion
from ml_platform.partitions import upstream_keys
from ml_platform.resources import MlflowResource, MonitoringResource

SENSOR = "retrain_sensor"
FEATURES = "flight_features"
#: Run tags of a sensor-requested retrain.
TAG_CAUSE = "ml_platform/retrain_cause"
TAG_REASON = "ml_platform/retrain_reason"
TAG_EVIDENCE = "ml_platform/retrain_evidence"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

Clock = Callable[[], datetime]
#: Severity of each retrain decision in the events table and its alert: a block needs a human.
_SEVERITY: dict[str, Any] = {"request": "warning", "suppress": "info", "defer": "info", "block": "error"}


@dataclass(frozen=True)
class Finding:
    """A report the sensor alerts on and records: drift at warn or error, or live decay."""

    #: The events-table kind: ``drift_detected`` or ``decay_detected``.
    event: str
    asset: str
    day: str
    #: ``warn`` or ``error``.
    severity: str
    title: str
    summary: str
    model_version: str
    detail: dict[str, Any]

    def alert(self, now: datetime, monitoring: MonitoringResource) -> Any:
        """The alert of this finding."""
        from ml_platform.lib.monitoring.notify import Alert

        return Alert(
            title=self.title,
            severity="error" if self.severity == "error" else "warning",
            text=self.summary,
            fields={"asset": self.asset, "day": self.day, "model": f"v{self.model_version}"},
            occurred_at=now,
            dedupe_key=f"{self.event}:{self.day}:{self.severity}:v{self.model_version}",
            link=monitoring.asset_url(self.asset),
        )


def utc_now() -> datetime:
    """The wall clock (the replay passes its simulated clock instead)."""
    return datetime.now(UTC)


def current_target(
    instance: dg.DagsterInstance,
    build: AssetBuild,
    data_day: date | None,
    model_code_version: str | None,
    job_name: str,
) -> Any:
    """The newest model week whose holdout week is complete, and whether it is already up to date.

    A broken record (a training-window partition of ``flight_features`` without its storage keys
    or not materialized, the week's ``delay_model`` materialization without its lineage) makes the
    target ``broken``, naming the asset, partition and metadata key: the sensor blocks rather than
    retrains.
    """
    from ml_platform.lib.monitoring.retrain import Target

    parts = build.partitioning
    if data_day is None:
        return Target(None, False, f"no {FEATURES} partition is materialized yet")
    all_weeks = parts.weekly.get_partition_keys()
    weeks = [w for w in all_weeks if date.fromisoformat(w) + timedelta(days=6) <= data_day]
    if not weeks:
        # the same words every tick until it changes: a standing condition is reported once
        if not all_weeks:
            return Target(
                None,
                False,
                "no model week lies within the daily partitions: MLP_PARTITION_START..MLP_PARTITION_END"
                " is shorter than the training window plus a holdout week",
            )
        first = date.fromisoformat(all_weeks[0])
        return Target(
            None,
            False,
            f"no model week is trainable yet: the first, {MODEL}[{first}], needs its holdout week's"
            f" {FEATURES} through {first + timedelta(days=6)}",
        )
    week = weeks[-1]
    following = (date.fromisoformat(week) + timedelta(days=13)).isoformat()
    active = instance.get_runs(
        dg.RunsFilter(job_name=job_name, tags={"dagster/partition": week}, statuses=_ACTIVE), limit=1
    )
    if active:
        return Target(week, True, f"a run of {MODEL}[{week}] is already in progress ({active[0].run_id})")
    record = latest_materializations(instance, dg.AssetKey(MODEL), [week]).get(week)
    if record is None:
        return Target(week, False)
    mat = record.asset_materialization
    assert mat is not None
    if mat.tags.get(CODE_VERSION_TAG) != model_code_version:
        return Target(week, False)
    days = upstream_keys(parts.training_window, parts.weekly, week, parts.daily)
    unjudged = f"cannot tell whether {MODEL}[{week}] is trained from the current {FEATURES}"
    try:
        now_pins = RecordedVersions(instance, dg.AssetKey(FEATURES), days, table=FEATURES).require(days)
    except dg.Failure as exc:  # a broken record, or a window partition not materialized
        return Target(week, False, broken=f"{unjudged}: {exc.description}")
    where = f"{MODEL}[{week}] (materialization of run {record.run_id})"
    missing = [k for k in (keys.LINEAGE_UPSTREAM, keys.MLFLOW_MODEL_VERSION) if k not in mat.metadata]
    if missing:
        return Target(
            week, False, broken=f"{unjudged}: {where} lacks metadata {', '.join(map(repr, missing))}"
        )
    upstream: Any = mat.metadata[keys.LINEAGE_UPSTREAM].value
    try:
        trained_pins = [PartitionVersion.from_metadata(item) for item in upstream]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Target(
            week,
            False,
            broken=f"{unjudged}: {where} has an unreadable {keys.LINEAGE_UPSTREAM!r} entry ({exc!r})",
        )
    trained = {p.partition: p.content_hash for p in trained_pins}
    if all(trained.get(p.partition) == p.content_hash for p in now_pins):
        version = mat.metadata[keys.MLFLOW_MODEL_VERSION].value
        return Target(
            week,
            True,
            f"{MODEL}[{week}] (v{version}) is already trained from the current feature versions by the"
            f" current code; the next model week becomes trainable once {following} is in",
        )
    return Target(week, False)


def _drift_triggers(instance: dg.DagsterInstance, after: int) -> tuple[list[Any], list[Finding], int]:
    """Error-severity drift reports since ``after`` as triggers, every non-ok report as a finding."""
    from ml_platform.lib.monitoring.drift import describe
    from ml_platform.lib.monitoring.retrain import Trigger

    triggers, findings = [], []
    records, last = _reports_since(instance, DRIFT, after)
    for record in records:
        mat = record.asset_materialization
        if mat is None or DRIFT_SEVERITY not in mat.metadata:
            continue
        severity = str(mat.metadata[DRIFT_SEVERITY].value)
        if severity == "ok":
            continue
        day = str(mat.partition)
        flagged = list(mat.metadata[DRIFT_ERRORS if severity == "error" else DRIFT_WARNINGS].value)  # type: ignore[arg-type]
        summary = "; ".join(describe(f) for f in flagged[:5]) + (
            f" (+{len(flagged) - 5} more)" if len(flagged) > 5 else ""
        )
        version = str(mat.metadata[DRIFT_MODEL_VERSION].value)
        detail = {
            "drift_report": f"{DRIFT}[{day}]",
            "severity": severity,
            "model_version": version,
            "features": flagged,
        }
        title = f"Feature drift ({severity}) on {day}"
        findings.append(Finding("drift_detected", DRIFT, day, severity, title, summary, version, detail))
        if severity == "error":
            triggers.append(Trigger("drift", day, summary, detail))
    return triggers, findings, last


def _decay_triggers(
    instance: dg.DagsterInstance, after: int, champion: ChampionModel | None
) -> tuple[list[Any], list[Finding], int]:
    """Live performance reports since ``after`` where the champion's skill decayed past the threshold."""
    from ml_platform.lib.monitoring.retrain import Trigger

    triggers, findings = [], []
    records, last = _reports_since(instance, LIVE_PERFORMANCE, after)
    for record in records:
        mat = record.asset_materialization
        if mat is None or LIVE_DEGRADED not in mat.metadata or not mat.metadata[LIVE_DEGRADED].value:
            continue
        version = str(mat.metadata[LIVE_MODEL_VERSION].value)
        decays = [d for d in mat.metadata[LIVE_DECAY].value if d["degraded"]]  # type: ignore[union-attr]
        day = str(mat.partition)
        summary = f"v{version}: " + "; ".join(
            f"{d['metric']} skill {d['live_skill']:.3f} vs {d['evaluation_skill']:.3f} at evaluation"
            f" ({d['degradation']:+.1%} > {d['threshold']:.0%})"
            for d in decays
        )
        detail = {"live_performance": f"{LIVE_PERFORMANCE}[{day}]", "model_version": version, "decay": decays}
        title = f"Live performance decay on {day}"
        findings.append(
            Finding("decay_detected", LIVE_PERFORMANCE, day, "error", title, summary, version, detail)
        )
        # a version that is no longer champion is not served: its decay is history, not a reason to retrain
        if champion is not None and champion.version == version:
            triggers.append(Trigger("degradation", day, summary, detail))
    return triggers, findings, last


def _reports_since(
    instance: dg.DagsterInstance, asset: str, after: int
) -> tuple[list[dg.EventLogRecord], int]:
    """The materializations of ``asset`` after storage id ``after`` (oldest first) and the new cursor."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=after), limit=500, ascending=True
    ).records
    return list(records), max([after, *(r.storage_id for r in records)])


def _freshness_trigger(champion: ChampionModel | None, data_day: date | None, max_age: int) -> Any:
    from ml_platform.lib.monitoring.retrain import Trigger

    if data_day is None:
        return None
    if champion is None:
        return Trigger("freshness", data_day.isoformat(), "no champion model yet", {"max_age_days": max_age})
    age = (data_day - champion.window_end).days
    if age <= max_age:
        return None
    return Trigger(
        "freshness",
        data_day.isoformat(),
        f"champion v{champion.version} ({MODEL}[{champion.partition}]) learned from data through"
        f" {champion.window_end}: {age} days old, the policy allows {max_age}",
        {
            "model_version": champion.version,
            "model_partition": champion.partition,
            "trained_through": champion.window_end.isoformat(),
            "age_days": age,
            "max_age_days": max_age,
        },
    )


def build_retrain_sensor(build: AssetBuild, job_name: str, clock: Clock = utc_now) -> dg.SensorDefinition:
    """The retrain sensor targeting the weekly model job ``job_name``."""
    spec = build.monitoring

    @dg.sensor(
        name=SENSOR,
        job_name=job_name,
        minimum_interval_seconds=spec.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING
        if spec.sensors_running
        else dg.DefaultSensorStatus.STOPPED,
        description=(
            "Requests a retrain of the current model partition (the newest week with a complete"
            " holdout week) on drift at error severity, on live decay of the champion's skill, or"
            " when the champion is older than"
            f" {spec.champion_max_age_days} days (freshness policy). Guardrails: a"
            f" {spec.cooldown_hours:g} h cooldown, at most {spec.max_retrains_per_day} requests a day,"
            " a run key per piece of evidence. The run trains, evaluates and promotes through the"
            " weekly job's gates; nothing is promoted without them. Every decision is alerted and"
            " recorded with its cause."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, mlflow_registry: MlflowResource, monitoring: MonitoringResource
    ) -> dg.SensorResult:
        from ml_platform.lib.monitoring import metrics
        from ml_platform.lib.monitoring.events import MonitoringEvent
        from ml_platform.lib.monitoring.retrain import RetrainPolicy, RetrainState, decide

        now = clock()
        state = RetrainState.from_json(context.cursor)
        instance = context.instance
        triggers, findings, state.after_storage_id = _drift_triggers(instance, state.after_storage_id)
        data_day = latest_data_day(instance)
        champion = find_champion(instance, mlflow_registry)
        decay, decay_findings, state.after_live_storage_id = _decay_triggers(
            instance, state.after_live_storage_id, champion
        )
        triggers.extend(decay)
        findings.extend(decay_findings)
        fresh = _freshness_trigger(champion, data_day, spec.champion_max_age_days)
        if fresh is not None:
            triggers.append(fresh)
        model_code = context.repository_def.assets_defs_by_key[dg.AssetKey(MODEL)].code_versions_by_key[  # type: ignore[union-attr]
            dg.AssetKey(MODEL)
        ]
        target = current_target(instance, build, data_day, model_code, job_name)
        policy = RetrainPolicy(timedelta(hours=spec.cooldown_hours), spec.max_retrains_per_day)
        new_events = any(t.cause != "freshness" for t in triggers)  # drift or decay seen this tick
        decision = decide([*state.pending, *triggers], target, state.history, now, policy)
        events = [
            MonitoringEvent(now, f.event, f.day, f.severity, f.summary, detail=f.detail)  # type: ignore[arg-type]
            for f in findings
        ]
        run_requests = []
        news = decision is not None and state.is_news(decision, new_events)
        if decision is not None:
            state.record(decision, now)
        if decision is not None and news:
            kind = {
                "request": "retrain_requested",
                "suppress": "retrain_suppressed",
                "defer": "retrain_deferred",
                "block": "retrain_blocked",
            }
            events.append(
                MonitoringEvent(
                    now,
                    kind[decision.action],  # type: ignore[arg-type]
                    decision.triggers[-1].day,
                    _SEVERITY[decision.action],
                    decision.reason,
                    decision.partition,
                    decision.run_key,
                    decision.to_dict(),
                )
            )
        if decision is not None and decision.action == "request":
            assert decision.partition is not None
            run_requests.append(
                dg.RunRequest(
                    run_key=decision.run_key,
                    partition_key=decision.partition,
                    tags={
                        TAG_CAUSE: ",".join(decision.causes),
                        TAG_REASON: decision.reason[:1000],
                        TAG_EVIDENCE: json.dumps([t.to_dict() for t in decision.triggers])[:4000],
                    },
                )
            )
        alerts = [f.alert(now, monitoring) for f in findings]
        if decision is not None and news:
            alerts.append(_decision_alert(decision, now, monitoring))
        failed = _send(alerts, monitoring, context)
        events.extend(
            MonitoringEvent(now, "alert_failed", a.fields.get("day", ""), "error", f"{a.title}: {err}")
            for a, err in failed
        )
        monitoring.events().append(events)
        if champion is not None and data_day is not None:
            metrics.write_textfile(
                monitoring.metrics_path("champion"),
                metrics.champion_exposition(
                    champion.version, (data_day - champion.window_end).days, state.requested, written_at=now
                ),
            )
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=state.to_json(),
            skip_reason=None
            if run_requests
            else (decision.reason if decision else "no drift error, champion fresh"),
        )

    return _sensor


def _decision_alert(decision: Any, now: datetime, monitoring: MonitoringResource) -> Any:
    """The alert of a retrain decision (only news is alerted: RetrainState.is_news)."""
    from ml_platform.lib.monitoring.notify import Alert

    verb = {"request": "requested", "suppress": "suppressed", "defer": "deferred", "block": "blocked"}[
        decision.action
    ]
    return Alert(
        title=f"Retrain {verb}: {MODEL}[{decision.partition}]" if decision.partition else f"Retrain {verb}",
        severity=_SEVERITY[decision.action],
        text=decision.reason,
        fields={
            "causes": ", ".join(decision.causes),
            "day": decision.triggers[-1].day,
            "run_key": decision.run_key or "-",
        },
        occurred_at=now,
        dedupe_key=decision.run_key or f"retrain:{decision.action}:{decision.triggers[-1].day}",
        link=monitoring.asset_url(MODEL),
    )


def _send(
    alerts: list[Any], monitoring: MonitoringResource, context: dg.SensorEvaluationContext
) -> list[Any]:
    """Send every alert; a failed delivery is logged and returned (the retrain must not wait for Slack)."""
    from ml_platform.lib.monitoring.notify import NotificationError

    notifier = monitoring.notifier()
    failed = []
    for alert in alerts:
        try:
            notifier.send(alert)
        except NotificationError as exc:
            context.log.error(f"{SENSOR}: alert {alert.dedupe_key!r} was not delivered: {exc}")
            failed.append((alert, str(exc)))
    return failed
