"""``mlp reproduce``: the lineage tests' model trained again from its recorded pins, config and code.

The world re-ingested raw_weather[2013-01-10] with shifted temperatures after the model trained, so
flight_features[2013-01-10] has a newer version than the one the model read: a reproduction that read
"the latest" would train on other data. It must read the pins, fit the same weights, and score the same
holdout metrics as the evaluation on record.
"""

from __future__ import annotations

import json
import os

import pytest

from ml_platform.cli import app
from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.reproduce import MetricDiff, ReproduceError, ReproduceReport, reproduce
from ml_platform_tests.lineage.conftest import SHIFTED_DAY, LineageWorld

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reproduced(lineage_world: LineageWorld, tmp_path_factory: pytest.TempPathFactory) -> ReproduceReport:
    messages: list[str] = []
    report = reproduce(
        lineage_world.instance,
        lineage_world.settings,
        "champion",
        out_dir=tmp_path_factory.mktemp("reproduce"),
        log=messages.append,
    )
    assert any("(changed since, not read: 2013-01-10)" in m for m in messages), messages
    return report


def test_reproduce_reads_the_recorded_pins_not_the_latest_versions(lineage_world, reproduced):
    w = lineage_world
    (model,) = [
        r for r in rec.fetch(w.instance, "delay_model") if rec.text(r, keys.MLFLOW_MODEL_VERSION) == w.version
    ]
    recorded = sorted(rec.upstream_entries(model) or [], key=lambda e: e["partition"])
    assert reproduced.version == w.version and reproduced.partition == "2013-01-21"
    assert reproduced.training_materialization == rec.materialization(model).id
    assert reproduced.pins == recorded and len(reproduced.pins) == 14
    assert [p["partition"] for p in reproduced.pins][0::13] == ["2013-01-07", "2013-01-20"]
    # the day rematerialized with other content after training was not read: its pin is the old
    # version (2013-01-11 was rematerialized too, with the same content and table version)
    assert reproduced.changed_since == [SHIFTED_DAY]
    latest = {
        rec.materialization(r).partition: rec.storage(r)
        for r in rec.fetch(w.instance, "flight_features", partitions=reproduced.changed_since)
    }
    for pin in reproduced.pins:
        if pin["partition"] in latest:
            assert pin["content_hash"] != latest[pin["partition"]].content_hash, pin


def test_the_same_weights_and_metrics_come_back_within_tolerance(lineage_world, reproduced):
    r = reproduced
    assert r.code_matches and r.recorded_git_commit == "test"
    # seeded, deterministic kernels, same data, same code: the very same weights
    assert r.weights_identical, (r.original_weights_digest, r.reproduced_weights_digest)
    assert {d.name for d in r.training} == {
        "validation loss (selection)",
        "best epoch",
        "final training rows",
    }
    assert all(d.original is not None for d in r.training)
    assert r.evaluation_materialization and r.evaluation_materialization.startswith(
        "model_evaluation[2013-01-21]"
    )
    assert [d.name for d in r.holdout] == ["mae", "rmse", "roc_auc", "pr_auc", "brier"]
    assert r.holdout_rows and r.holdout_rows > 1000
    for d in [*r.training, *r.holdout]:
        assert d.within, d
    # the per-route baseline is fitted and scored on the pinned window and holdout: the same data
    # gives exactly the recorded figures
    assert r.holdout_baseline and all(d.abs_diff == 0 for d in r.holdout_baseline), r.holdout_baseline
    assert r.within_tolerance
    assert r.artifacts is not None
    with open(os.path.join(r.artifacts, "report.json")) as f:
        saved = json.load(f)
    assert saved["within_tolerance"] is True and saved["version"] == r.version
    assert os.path.exists(os.path.join(r.artifacts, "weights.pt"))


def test_a_metric_outside_the_tolerance_fails_the_reproduction(reproduced):
    off = MetricDiff("rmse", 10.0, 10.5, 0.01)
    assert off.rel_diff == pytest.approx(0.05) and off.within is False
    assert MetricDiff("rmse", None, 10.5, 0.01).within is None  # not recorded: nothing to compare
    worse = ReproduceReport(**{**reproduced.__dict__, "holdout": [*reproduced.holdout, off]})
    assert not worse.within_tolerance


def test_changed_training_code_is_refused_naming_the_commit(lineage_world, monkeypatch, tmp_path):
    import ml_platform.lib.versioning as versioning

    monkeypatch.setattr(versioning, "code_version_of_names", lambda *names: "0123456789ab")
    with pytest.raises(ReproduceError) as caught:
        reproduce(lineage_world.instance, lineage_world.settings, lineage_world.version, out_dir=tmp_path)
    message = str(caught.value)
    assert "git commit test" in message and "0123456789ab" in message and "--allow-code-change" in message
    assert not any(tmp_path.iterdir()), "a refused reproduction trains nothing and writes nothing"


def test_unknown_versions_and_aliases_are_clear_errors(lineage_world, tmp_path):
    with pytest.raises(
        ReproduceError, match=r"lineage_model v99: no delay_model materialization registered it"
    ):
        reproduce(lineage_world.instance, lineage_world.settings, "v99", out_dir=tmp_path)
    with pytest.raises(ReproduceError, match=r"'nosuch' is neither a model version .* nor an alias"):
        reproduce(lineage_world.instance, lineage_world.settings, "nosuch", out_dir=tmp_path)


def test_mlp_reproduce_prints_the_comparison_and_exits_by_the_tolerance(lineage_world, runner, tmp_path):
    result = runner.invoke(
        app, ["reproduce", f"v{lineage_world.version}", "--out", str(tmp_path), "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["within_tolerance"] is True and data["weights_identical"] is True
    assert data["changed_since"] == [SHIFTED_DAY]

    table = runner.invoke(app, ["reproduce", "champion", "--out", str(tmp_path)])
    assert table.exit_code == 0, table.output
    for expected in (
        "holdout: roc_auc",
        "weights: identical",
        "changed since and not read",
        "reproduced within 1.00%",
    ):
        assert expected in table.output, expected

    missing = runner.invoke(app, ["reproduce", "42", "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "no delay_model materialization registered it" in missing.output
    assert "Traceback" not in missing.output
