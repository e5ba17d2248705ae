"""``impact``: everything recorded as derived from raw partitions or a model version (the incident workflow).

Walks the recorded ``lineage/upstream`` forward, one asset at a time, with one pass over that
asset's candidate materialization records (a batched fetch, never a query per partition):

    raw_* -> validated_* -> flight_features -> delay_model (trained on) / model_evaluation (holdout)
      -> delay_bento -> deployment (materializations, the current desired state, the deployment log)
    flight_features -> flight_feature_profiles -> drift_report
    flight_features, validated_weather -> online_features
    flight_features, delay_model -> flight_delay_predictions
    flight_feature_profiles, delay_model -> drift_report
    flight_delay_predictions, flight_features, delay_model, model_evaluation -> live_performance

A downstream materialization is impacted when its ``lineage/upstream`` names an impacted upstream
*version*: the same table, partition, table version (or lakeFS commit) and content hash as an
impacted materialization recorded, or (for a model and its evaluation) the same asset, partition
and Dagster run. So a raw day rewritten later impacts only what read the new version, and what
read the old one is reported against the old one. A model version (``v3``) starts the walk at the
delay_model materialization that registered it: its evaluations, what it predicted, judged and
scored, its Bentos and their deployments.

Candidates are narrowed by the declared partition mappings (the same mapping objects the assets
read through) and by storage id (a downstream is always recorded after what it read); the link
itself is only ever the recorded pin or run id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import (
    ImpactedBento,
    ImpactedDeployment,
    ImpactedEvaluation,
    ImpactedModel,
    ImpactedPartition,
    ImpactReport,
    LineageError,
)
from ml_platform.lineage.sources import LineageSources, deployment_events, desired_roles, read_desired
from ml_platform.lineage.trace import DELAY_BENTO, DELAY_MODEL, EVALUATION, FEATURES, deployments_of

if TYPE_CHECKING:
    from ml_platform.settings import PlatformSettings

RAW_ASSETS = ("raw_flights", "raw_weather")
PROFILES = "flight_feature_profiles"
ONLINE_FEATURES = "online_features"
PREDICTIONS = "flight_delay_predictions"
DRIFT = "drift_report"
PERFORMANCE = "live_performance"
#: A recorded run reference (``lineage/upstream`` entry of a model or evaluation): asset, partition, run.
RunKey = tuple[str, str | None, str]
_VERSION = re.compile(r"^v?(?P<version>\d+)$")


def parse_model_version(target: str) -> str | None:
    """The model version of ``v3`` or ``3``; None when ``target`` is not a version."""
    match = _VERSION.match(target.strip())
    return None if match is None else match["version"]


_TARGET = re.compile(
    r"^(?:(?P<asset>raw_\w+)(?:\[|:))?(?P<first>\d{4}-\d{2}-\d{2})(?:\.\.(?P<last>\d{4}-\d{2}-\d{2}))?\]?$"
)


def parse_target(target: str, assets: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """The raw assets and days of ``2013-01-10``, ``2013-01-10..2013-01-12`` or ``raw_weather[2013-01-10]``.

    Raises:
        LineageError: naming what is wrong.
    """
    match = _TARGET.match(target.strip())
    if match is None:
        raise LineageError(
            f"{target!r} is not a raw partition or range: use YYYY-MM-DD, YYYY-MM-DD..YYYY-MM-DD,"
            " or raw_flights[YYYY-MM-DD] / raw_weather[YYYY-MM-DD..YYYY-MM-DD]"
        )
    try:
        first = date.fromisoformat(match["first"])
        last = date.fromisoformat(match["last"]) if match["last"] else first
    except ValueError as exc:
        raise LineageError(f"{target!r}: {exc}") from exc
    if last < first:
        raise LineageError(f"{target!r}: the range ends before it starts")
    chosen = [match["asset"]] if match["asset"] else list(assets or RAW_ASSETS)
    unknown = [a for a in chosen if a not in RAW_ASSETS]
    if unknown:
        raise LineageError(f"{', '.join(unknown)} is not a raw asset (one of {', '.join(RAW_ASSETS)})")
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return chosen, days


def impact(
    instance: dg.DagsterInstance,
    settings: PlatformSettings | LineageSources,
    target: str,
    *,
    assets: Sequence[str] | None = None,
) -> ImpactReport:
    """Every validated and feature partition, profile, online snapshot, model version, evaluation,
    prediction, drift report, performance day, Bento and deployment recorded as derived from the raw
    partitions (or the model version) of ``target`` (see the module doc).

    Args:
        instance: The Dagster instance that recorded the materializations.
        settings: The platform settings (or :class:`LineageSources`).
        target: ``YYYY-MM-DD``, ``YYYY-MM-DD..YYYY-MM-DD``, ``raw_weather[YYYY-MM-DD]``, or a model
            version of the registered model (``v3`` or ``3``).
        assets: The raw assets of a bare date or range (default: both).

    Raises:
        LineageError: the target cannot be read.
    """
    src = LineageSources.of(settings)
    version = parse_model_version(target)
    if version is not None:
        if assets:
            raise LineageError(
                f"{target!r} is a model version: raw assets ({', '.join(assets)}) do not apply"
            )
        return _impact_of_version(instance, src, version)
    raw_assets, days = parse_target(target, assets)
    report = ImpactReport(assets=raw_assets, partitions=days)

    # raw: every recorded version of the target partitions
    impacted: dict[rec.PinKey, str] = {}
    for asset in raw_assets:
        records = rec.fetch(instance, asset, partitions=days)
        seen = {r.asset_materialization.partition for r in records}  # type: ignore[union-attr]
        report.not_materialized += [f"{asset}[{d}]" for d in days if d not in seen]
        for record in records:
            pin = rec.record_pin(record)
            if pin is None:
                report.notes.append(f"{rec.materialization(record).id} records no storage version")
                continue
            impacted.setdefault(pin, rec.describe_pin(pin))
            report.raw.append(_partition(record, []))

    # validated_<dataset>[D] reads raw_<dataset>[D]
    validated_pins: dict[rec.PinKey, str] = {}
    for asset in raw_assets:
        own = {p: d for p, d in impacted.items() if p[0] == asset}
        if not own:
            continue
        found = _forward(instance, asset.replace("raw_", "validated_"), own, partitions={p[1] for p in own})
        report.validated += [item for item, _ in found]
        validated_pins.update({pin: rec.describe_pin(pin) for _, pin in found if pin is not None})

    # flight_features[D] reads validated_flights[D-28..D] and validated_weather[D-1..D]
    candidates = _feature_candidates(src, validated_pins)
    first_validated = min((i.materialization.storage_id for i in report.validated), default=None)
    found = _forward(
        instance, FEATURES, validated_pins, partitions=candidates, after_storage_id=first_validated
    )
    report.features = [item for item, _ in found]
    feature_pins = {pin: rec.describe_pin(pin) for _, pin in found if pin is not None}

    # delay_model[W] trains on its window's feature pins; model_evaluation[W] reads W's as holdout
    after = min((i.materialization.storage_id for i in report.features), default=None)
    models = []
    evaluations = []
    if feature_pins:
        for record in rec.fetch(instance, DELAY_MODEL, after_storage_id=after):
            read = _reads(record, feature_pins)
            if read:
                models.append((record, read))
        for record in rec.fetch(instance, EVALUATION, after_storage_id=after):
            read = _reads(record, feature_pins)
            if read:
                evaluations.append((record, read))
    report.models = _models(src, models)
    report.evaluations = _impacted_evaluations(evaluations)

    _downstream(
        instance,
        report,
        [r for r, _ in models],
        [r for r, _ in evaluations],
        feature_pins,
        {p: d for p, d in validated_pins.items() if p[0] == "validated_weather"},
        first_validated,  # the online snapshot reads validated weather too
    )
    _bentos_and_deployments(instance, src, report, [r for r, _ in models], [r for r, _ in evaluations])
    return report


def _impacted_evaluations(
    evaluations: Sequence[tuple[dg.EventLogRecord, list[str]]],
) -> list[ImpactedEvaluation]:
    """The evaluations reached, each with the pins it read."""
    return [
        ImpactedEvaluation(
            id=rec.materialization(r).id,
            materialization=rec.materialization(r),
            model_version=rec.text(r, keys.MLFLOW_MODEL_VERSION),
            passed=rec.value(r, keys.EVALUATION_PASSED),
            read=read,
        )
        for r, read in evaluations
    ]


def _impact_of_version(instance: dg.DagsterInstance, src: LineageSources, version: str) -> ImpactReport:
    """What the delay_model materialization that registered ``version`` reached."""
    report = ImpactReport(assets=[DELAY_MODEL], partitions=[], model_version=version)
    records = [
        r
        for r in rec.fetch(instance, DELAY_MODEL)
        if rec.text(r, keys.MLFLOW_MODEL_VERSION) == version
        and rec.text(r, keys.MLFLOW_MODEL_NAME) in (None, src.model_name)
    ]
    if not records:
        raise LineageError(
            f"v{version} of {src.model_name}: no {DELAY_MODEL} materialization of this instance records"
            f" {keys.MLFLOW_MODEL_VERSION} {version}"
        )
    report.partitions = sorted({str(rec.materialization(r).partition) for r in records})
    report.models = _models(src, [(r, []) for r in records])
    runs = _run_refs(records, [])
    first = min(r.storage_id for r in records)
    evaluations = [
        (record, read)
        for record in rec.fetch(instance, EVALUATION, partitions=report.partitions, after_storage_id=first)
        if (read := _reads(record, {}, runs))
    ]
    report.evaluations = _impacted_evaluations(evaluations)
    _downstream(instance, report, records, [r for r, _ in evaluations], {}, {}, first)
    _bentos_and_deployments(instance, src, report, records, [r for r, _ in evaluations])
    return report


def _run_refs(
    models: Sequence[dg.EventLogRecord], evaluations: Sequence[dg.EventLogRecord]
) -> dict[RunKey, str]:
    """The run references of impacted models and evaluations, described."""
    out: dict[RunKey, str] = {}
    for record in [*models, *evaluations]:
        mat = rec.materialization(record)
        version = rec.text(record, keys.MLFLOW_MODEL_VERSION)
        out[mat.asset, mat.partition, record.run_id] = f"{mat.label} run {record.run_id[:8]}" + (
            f" (v{version})" if version else ""
        )
    return out


def _downstream(
    instance: dg.DagsterInstance,
    report: ImpactReport,
    models: Sequence[dg.EventLogRecord],
    evaluations: Sequence[dg.EventLogRecord],
    feature_pins: dict[rec.PinKey, str],
    weather_pins: dict[rec.PinKey, str],
    after_storage_id: int | None,
) -> None:
    """Profiles, online snapshots, predictions, drift reports and performance days of the impact."""
    runs = _run_refs(models, evaluations)
    feature_days = {p[1] for p in feature_pins}
    found = _forward(
        instance, PROFILES, feature_pins, partitions=feature_days, after_storage_id=after_storage_id
    )
    report.profiles = [item for item, _ in found]
    profile_pins = {pin: rec.describe_pin(pin) for _, pin in found if pin is not None}
    found = _forward(
        instance,
        ONLINE_FEATURES,
        {**feature_pins, **weather_pins},
        partitions=None,
        after_storage_id=after_storage_id,
    )
    report.online_features = [item for item, _ in found]
    # a model's predictions, reports and judgements are of any day: no partition narrows them
    found = _forward(
        instance,
        PREDICTIONS,
        feature_pins,
        runs=runs,
        partitions=None if runs else feature_days,
        after_storage_id=after_storage_id,
    )
    report.predictions = [item for item, _ in found]
    prediction_pins = {pin: rec.describe_pin(pin) for _, pin in found if pin is not None}
    found = _forward(
        instance, DRIFT, profile_pins, runs=runs, partitions=None, after_storage_id=after_storage_id
    )
    report.drift_reports = [item for item, _ in found]
    found = _forward(
        instance,
        PERFORMANCE,
        {**feature_pins, **prediction_pins},
        runs=runs,
        partitions=None,
        after_storage_id=after_storage_id,
    )
    report.performance = [item for item, _ in found]


def _bentos_and_deployments(
    instance: dg.DagsterInstance,
    src: LineageSources,
    report: ImpactReport,
    models: Sequence[dg.EventLogRecord],
    evaluations: Sequence[dg.EventLogRecord],
) -> None:
    """The Bentos built from impacted models or evaluations, and their deployments."""
    # delay_bento names the delay_model and model_evaluation runs it was built from
    trained = {(rec.materialization(r).partition, r.run_id): rec.materialization(r).id for r in models}
    judged = {(rec.materialization(r).partition, r.run_id): rec.materialization(r).id for r in evaluations}
    bentos: list[tuple[dg.EventLogRecord, ImpactedBento]] = []
    first = min([r.storage_id for r in models] + [r.storage_id for r in evaluations], default=None)
    if first is not None:
        for record in rec.fetch(instance, DELAY_BENTO, after_storage_id=first):
            via, read = [], []
            for entry in rec.upstream_entries(record) or []:
                ref = (entry.get("partition"), entry.get("run_id"))
                if entry.get("asset") == DELAY_MODEL and ref in trained:
                    via.append("training")
                    read.append(trained[ref])
                if entry.get("asset") == EVALUATION and ref in judged:
                    via.append("evaluation")
                    read.append(judged[ref])
            if via:
                mat = rec.materialization(record)
                bentos.append(
                    (
                        record,
                        ImpactedBento(
                            id=mat.id,
                            tag=rec.text(record, keys.BENTO_TAG),
                            model_name=rec.text(record, keys.MLFLOW_MODEL_NAME),
                            model_version=rec.text(record, keys.MLFLOW_MODEL_VERSION),
                            materialization=mat,
                            via=via,
                            read=read,
                        ),
                    )
                )
    report.bentos = [b for _, b in bentos]
    report.deployment = _deployments(instance, src, bentos)


def _partition(record: dg.EventLogRecord, read: list[str]) -> ImpactedPartition:
    mat = rec.materialization(record)
    return ImpactedPartition(id=mat.id, materialization=mat, storage=rec.storage(record), read=read)


def _reads(
    record: dg.EventLogRecord, pins: dict[rec.PinKey, str], runs: dict[RunKey, str] | None = None
) -> list[str]:
    """The impacted pins and runs (described) that ``record``'s ``lineage/upstream`` names."""
    out = []
    for entry in rec.upstream_entries(record) or []:
        pin = rec.upstream_pin(entry)
        if pin is not None and pin in pins:
            out.append(pins[pin])
        elif runs and pin is None and "asset" in entry and "run_id" in entry:
            ref = (str(entry["asset"]), entry.get("partition"), str(entry["run_id"]))
            if ref in runs:
                out.append(runs[ref])
    return out


def _forward(
    instance: dg.DagsterInstance,
    asset: str,
    upstream: dict[rec.PinKey, str],
    *,
    partitions: Iterable[str] | None,
    after_storage_id: int | None = None,
    runs: dict[RunKey, str] | None = None,
) -> list[tuple[ImpactedPartition, rec.PinKey | None]]:
    """The materializations of ``asset`` (one fetch) whose recorded upstream names an impacted pin or run."""
    if not upstream and not runs:
        return []
    out = []
    for record in rec.fetch(instance, asset, partitions=partitions, after_storage_id=after_storage_id):
        read = _reads(record, upstream, runs)
        if read:
            out.append((_partition(record, read), rec.record_pin(record)))
    return out


def _feature_candidates(src: LineageSources, validated: dict[rec.PinKey, str]) -> list[str] | None:
    """The feature days whose declared windows contain an impacted validated day (None: all days)."""
    parts = src.partitioning
    if parts is None:
        return None
    out: set[str] = set()
    for dataset, mapping in (
        ("validated_flights", parts.flights_window),
        ("validated_weather", parts.weather_window),
    ):
        days = sorted({p[1] for p in validated if p[0] == dataset})
        if not days:
            continue
        subset = parts.daily.subset_with_partition_keys([d for d in days if parts.daily.has_partition_key(d)])
        downstream = mapping.get_downstream_partitions_for_partitions(subset, parts.daily, parts.daily)
        out.update(downstream.get_partition_keys())
        out.update(days)  # a day always reads itself
    return sorted(out)


def _models(src: LineageSources, models: list[tuple[dg.EventLogRecord, list[str]]]) -> list[ImpactedModel]:
    aliases: dict[str, dict[str, str] | None] = {}
    if models:
        from mlflow.exceptions import MlflowException

        client = src.client()
        for name in {rec.text(r, keys.MLFLOW_MODEL_NAME) for r, _ in models}:
            if name is None:
                continue
            try:
                aliases[name] = {
                    str(k): str(v) for k, v in (client.get_registered_model(name).aliases or {}).items()
                }
            except MlflowException:
                aliases[name] = None
    out = []
    for record, read in models:
        name = rec.text(record, keys.MLFLOW_MODEL_NAME)
        version = rec.text(record, keys.MLFLOW_MODEL_VERSION)
        now = aliases.get(name or "")
        out.append(
            ImpactedModel(
                id=rec.materialization(record).id,
                model_name=name,
                version=version,
                materialization=rec.materialization(record),
                mlflow_run_id=rec.text(record, keys.MLFLOW_RUN_ID),
                aliases_now=None if now is None else sorted(a for a, v in now.items() if v == version),
                read=read,
            )
        )
    return out


def _deployments(
    instance: dg.DagsterInstance, src: LineageSources, bentos: list[tuple[dg.EventLogRecord, Any]]
) -> ImpactedDeployment:
    tags = {b.tag for _, b in bentos if b.tag}
    state, _ = read_desired(src.desired_path)
    events, _, _ = deployment_events(src.deployment_log_table, tags) if tags else ([], None, None)
    refs = deployments_of(instance, [r for r, _ in bentos])
    return ImpactedDeployment(
        desired_path=str(src.desired_path),
        roles=desired_roles(state, tags),
        events=events,
        materializations=refs,
    )
