"""``impact``: exactly what the recorded lineage derived from raw partitions, version by version."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ml_platform.lib import metadata as keys
from ml_platform.lineage import LineageError, impact, parse_target, to_json
from ml_platform_tests.conftest import latest
from ml_platform_tests.lineage.conftest import LOG_DAY, MODEL, SHIFTED_DAY, WEEK, LineageWorld

pytestmark = pytest.mark.slow


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _labels(items) -> list[str]:
    return sorted(i.materialization.label for i in items)


def test_a_raw_day_outside_every_training_window_reaches_features_but_no_model(lineage_world: LineageWorld):
    w = lineage_world
    report = impact(w.instance, w.settings, "raw_flights[2013-01-25]")
    assert _labels(report.raw) == ["raw_flights[2013-01-25]"]
    assert _labels(report.validated) == ["validated_flights[2013-01-25]"]
    # the trailing aggregates of the following days read it too
    assert _labels(report.features) == [f"flight_features[{d}]" for d in _days("2013-01-25", "2013-01-27")]
    assert report.models == []
    # it is in the holdout week: the evaluation that gated v1 read it, so v1's Bento is listed, via it
    assert [(e.materialization.label, e.model_version) for e in report.evaluations] == [
        (f"model_evaluation[{WEEK}]", w.version)
    ]
    assert [(b.tag, b.via) for b in report.bentos] == [(w.bento_tag, ["evaluation"])]
    assert [r.role for r in report.deployment.roles] == ["champion"]
    assert report.not_materialized == []


def test_a_raw_day_in_the_window_reaches_the_model_its_bento_and_the_deployment(lineage_world):
    w = lineage_world
    report = impact(w.instance, w.settings, "2013-01-02", assets=["raw_flights"])
    assert _labels(report.validated) == ["validated_flights[2013-01-02]"]
    # every feature day whose 28-day window holds it, each at its one recorded version, plus the
    # two days rematerialized after the weather shift (they read the same flights)
    expected = [f"flight_features[{d}]" for d in _days("2013-01-02", "2013-01-27")]
    assert _labels(report.features) == sorted(
        [*expected, f"flight_features[{SHIFTED_DAY}]", "flight_features[2013-01-11]"]
    )
    (model,) = report.models
    assert (model.model_name, model.version, model.aliases_now) == (MODEL, w.version, ["champion"])
    assert len(model.read) == 14  # every day of its window read the flights of 2013-01-02
    assert [b.via for b in report.bentos] == [["training", "evaluation"]]
    assert [e.bento_tag for e in report.deployment.events] == [w.bento_tag]
    assert [m.bento_tag for m in report.deployment.materializations] == [w.bento_tag]


def test_impact_follows_the_version_that_was_read(lineage_world):
    w = lineage_world
    report = impact(w.instance, w.settings, f"raw_weather[{SHIFTED_DAY}]")
    old, new = sorted(report.raw, key=lambda r: r.materialization.storage_id)
    assert old.storage.content_hash != new.storage.content_hash
    # one validated version per raw version, each reading its own
    first, second = sorted(report.validated, key=lambda r: r.materialization.storage_id)
    assert old.storage.content_hash[:12] in first.read[0] and new.storage.content_hash[:12] in second.read[0]
    # both feature days that read the day's weather, once per version of it
    assert _labels(report.features) == [
        f"flight_features[{SHIFTED_DAY}]",
        f"flight_features[{SHIFTED_DAY}]",
        "flight_features[2013-01-11]",
        "flight_features[2013-01-11]",
    ]
    # the model read the versions made from the original weather, and nothing made from the shifted one
    (model,) = report.models
    recorded = latest(w.instance, "delay_model", WEEK).metadata[keys.LINEAGE_UPSTREAM].value
    assert sorted(model.read) == sorted(
        f"flight_features[{p['partition']}] at table version {p['table_version']},"
        f" content {p['content_hash'][:12]}"
        for p in recorded
        if p["partition"] in (SHIFTED_DAY, "2013-01-11")
    )
    newest = latest(w.instance, "flight_features", SHIFTED_DAY).metadata[keys.STORAGE_CONTENT_HASH].value
    assert not any(newest[:12] in r for r in model.read)
    assert report.evaluations == []  # the holdout week does not read that day's weather
    assert [(b.tag, b.via) for b in report.bentos] == [(w.bento_tag, ["training"])]
    data = to_json(report)
    assert data["models"][0]["version"] == w.version and len(data["features"]) == 4


def test_targets_are_parsed_or_refused():
    assert parse_target("2013-01-10..2013-01-12") == (
        ["raw_flights", "raw_weather"],
        _days("2013-01-10", "2013-01-12"),
    )
    assert parse_target("raw_weather[2013-01-10]") == (["raw_weather"], ["2013-01-10"])
    assert parse_target("2013-01-10", ["raw_flights"]) == (["raw_flights"], ["2013-01-10"])
    for bad in ("yesterday", "2013-01-12..2013-01-10", "2013-02-30", "validated_flights[2013-01-10]"):
        with pytest.raises(LineageError):
            parse_target(bad)
    with pytest.raises(LineageError, match="not a raw asset"):
        parse_target("2013-01-10", ["flight_features"])


def test_a_day_never_materialized_is_said_so(lineage_world):
    report = impact(lineage_world.instance, lineage_world.settings, "2013-01-27..2013-01-28")
    assert report.not_materialized == ["raw_flights[2013-01-28]", "raw_weather[2013-01-28]"]
    assert _labels(report.raw) == ["raw_flights[2013-01-27]", "raw_weather[2013-01-27]"]


def test_a_raw_day_reaches_profiles_online_snapshots_predictions_drift_and_performance(lineage_world):
    w = lineage_world
    report = impact(w.instance, w.settings, "2013-01-02", assets=["raw_flights"])
    days = _days("2013-01-02", "2013-01-27")
    # every day whose features read it, at the version they read (the later reruns were not profiled)
    assert _labels(report.profiles) == [f"flight_feature_profiles[{d}]" for d in days]
    # the snapshots of every day up to LOG_DAY (written twice, from the same feature version)
    assert sorted({i.materialization.partition for i in report.online_features}) == _days(
        "2013-01-02", LOG_DAY
    )
    assert all(
        i.read[0].startswith(f"flight_features[{i.materialization.partition}]")
        for i in report.online_features
    )
    # the champion's day: scored from an impacted feature day by a model trained on impacted data
    (predictions,) = report.predictions
    assert predictions.materialization.label == f"flight_delay_predictions[{LOG_DAY}]"
    assert any(r.startswith(f"flight_features[{LOG_DAY}]") for r in predictions.read)
    assert any(r.startswith(f"delay_model[{WEEK}]") for r in predictions.read)
    assert _labels(report.drift_reports) == [f"drift_report[{LOG_DAY}]"]
    assert _labels(report.performance) == [f"live_performance[{LOG_DAY}]"]
    assert [e.bento_tag for e in report.deployment.events] == [w.bento_tag]


def test_a_model_version_reaches_its_evaluation_predictions_reports_performance_and_deployment(lineage_world):
    w = lineage_world
    report = impact(w.instance, w.settings, f"v{w.version}")
    assert report.model_version == w.version and report.partitions == [WEEK]
    assert [(m.model_name, m.version, m.aliases_now) for m in report.models] == [
        (MODEL, w.version, ["champion"])
    ]
    assert _labels(report.evaluations) == [f"model_evaluation[{WEEK}]"]
    assert _labels(report.predictions) == [f"flight_delay_predictions[{LOG_DAY}]"]
    assert _labels(report.drift_reports) == [f"drift_report[{LOG_DAY}]"]
    (performance,) = report.performance
    assert performance.materialization.label == f"live_performance[{LOG_DAY}]"
    # judged as the model's, against its evaluation, on its predictions
    assert {r.split(" ")[0] for r in performance.read} >= {
        f"delay_model[{WEEK}]",
        f"model_evaluation[{WEEK}]",
        f"flight_delay_predictions[{LOG_DAY}]",
    }
    assert [(b.tag, b.via) for b in report.bentos] == [(w.bento_tag, ["training", "evaluation"])]
    assert [r.role for r in report.deployment.roles] == ["champion"]
    assert [m.bento_tag for m in report.deployment.materializations] == [w.bento_tag]
    # the data is not derived from the model: no feature, profile or online snapshot is listed
    assert report.features == report.profiles == report.online_features == []
    assert to_json(report)["predictions"][0]["materialization"]["partition"] == LOG_DAY


def test_an_unknown_model_version_is_refused(lineage_world):
    with pytest.raises(LineageError, match=r"v99 of lineage_model: no delay_model materialization"):
        impact(lineage_world.instance, lineage_world.settings, "v99")
    with pytest.raises(LineageError, match="is a model version"):
        impact(lineage_world.instance, lineage_world.settings, "v1", assets=["raw_flights"])
