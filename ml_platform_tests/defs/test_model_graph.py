"""The weekly model graph in process, on real Delta features, MLflow (sqlite) and the audit log.

One small world per module: 34 days of features and a 2-week training window, so two model weeks
(2013-01-21 and 2013-01-28) fit. Each test uses its own registered model name, so their
champions and audit chains do not mix.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest

from ml_platform.definitions import DATA_JOB, MODEL_JOB, build_definitions
from ml_platform.demo import days, run_partitions
from ml_platform.lib import metadata as keys
from ml_platform.lib.registry.audit import AuditLog
from ml_platform.lib.storage import DeltaPartitionStore
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import QUIET, failure_messages, latest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WEEK1, WEEK2 = "2013-01-21", "2013-01-28"
SMALL = {
    "training_window_weeks": 2,
    "validation_days": 3,
    "hpo_trials": 0,
    "max_epochs": 4,
    # two weeks of January data leave the model only a small edge over the per-route mean;
    # ranking (ROC AUC) is where that edge is reliable, so the tests gate on it
    "gate_metrics": ["roc_auc"],
    "executor": "in_process",
    "git_commit": "test",
    "partition_end": "2013-02-04",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dg.DagsterInstance]]:
    """Features for 2013-01-01..2013-02-03 materialized once for the module."""
    root = tmp_path_factory.mktemp("models")
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        settings = PlatformSettings(root_dir=root, **SMALL)  # type: ignore[arg-type]
        job = build_definitions(settings).resolve_job_def(DATA_JOB)
        outcomes = run_partitions(instance, job, days(settings.partition_start, _date("2013-02-03")))
        assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
        yield root, instance


def _date(value: str) -> Any:
    from datetime import date

    return date.fromisoformat(value)


def _settings(root: Path, model: str, **overrides: Any) -> PlatformSettings:
    return PlatformSettings(root_dir=root, registered_model=model, **{**SMALL, **overrides})  # type: ignore[arg-type]


def _run_week(
    settings: PlatformSettings, instance: dg.DagsterInstance, week: str
) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def(MODEL_JOB)
    return job.execute_in_process(
        partition_key=week, instance=instance, run_config=QUIET, raise_on_error=False
    )


def _gates(instance: dg.DagsterInstance) -> Any:
    try:
        return latest(instance, "model_evaluation", WEEK1).metadata[keys.EVALUATION_GATES].value
    except Exception as exc:  # only for the failure message
        return f"unavailable ({exc})"


def _client(settings: PlatformSettings) -> mlflow.MlflowClient:
    uri = settings.mlflow_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _aliases(settings: PlatformSettings) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in _client(settings).get_registered_model(settings.registered_model).aliases.items()
    }


def _events(settings: PlatformSettings) -> list[tuple[str, str | None]]:
    return [(e.action, e.version) for e in AuditLog(settings.audit_table).events(settings.registered_model)]


def test_model_week_trains_on_recorded_versions_and_is_tracked(world):
    root, instance = world
    settings = _settings(root, "model_tracked", hpo_trials=2)
    result = _run_week(settings, instance, WEEK1)
    assert result.success, f"{failure_messages(result)}; gates: {_gates(instance)}"

    model = latest(instance, "delay_model", WEEK1)
    meta = model.metadata
    assert meta[keys.TRAINING_WINDOW].value.startswith("2013-01-07..2013-01-20 (14 feature partitions)")
    version = str(meta[keys.MLFLOW_MODEL_VERSION].value)
    run_id = str(meta[keys.MLFLOW_RUN_ID].value)
    assert run_id in str(meta[keys.MLFLOW_RUN_URL].value)
    assert model.tags["dagster/data_version"] == str(meta[keys.TRAINING_WEIGHTS_DIGEST].value)[:32]
    # the model read exactly the feature versions Dagster recorded for those days
    pins = {p["partition"]: p for p in meta[keys.LINEAGE_UPSTREAM].value}
    assert sorted(pins) == [f"2013-01-{d:02d}" for d in range(7, 21)]
    for day, pin in pins.items():
        recorded = latest(instance, "flight_features", day).metadata
        assert pin["content_hash"] == recorded[keys.STORAGE_CONTENT_HASH].value
        assert pin["table_version"] == recorded[keys.STORAGE_TABLE_VERSION].value

    client = _client(settings)
    run = client.get_run(run_id)
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.partition"] == WEEK1
    assert run.data.tags["git.commit"] == "test"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {f"flight_features[{day}]" for day in pins}
    tags = {t.key: t.value for t in inputs["flight_features[2013-01-07]"].tags}
    assert tags["data_version"] == pins["2013-01-07"]["content_hash"]
    assert tags["mlflow.data.context"] == "training"
    assert len(client.get_metric_history(run_id, "val_loss")) >= 1
    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(trials) == settings.hpo_trials
    mv = client.get_model_version(settings.registered_model, version)
    assert mv.run_id == run_id
    assert {"holdout_mae", "baseline_mae", "holdout_brier"} <= set(client.get_run(run_id).data.metrics)

    evaluation = latest(instance, "model_evaluation", WEEK1).metadata
    assert evaluation[keys.MLFLOW_MODEL_VERSION].value == version
    assert evaluation[keys.EVALUATION_HOLDOUT].value.startswith("2013-01-21..2013-01-27")
    assert evaluation["evaluation/model_roc_auc"].value > evaluation["evaluation/baseline_roc_auc"].value
    for plot in ("residuals", "calibration", "metrics_over_time"):
        assert evaluation[f"evaluation/plot_{plot}"].value.startswith(f"![{plot}](data:image/png;base64,")
    promotion = latest(instance, "model_promotion", WEEK1).metadata
    assert promotion[keys.REGISTRY_DECISION].value == "promote"
    assert _aliases(settings) == {"champion": version}
    assert _events(settings) == [("set_challenger", version), ("promote", version)]


def test_retraining_with_same_versions_code_and_seed_reproduces_the_model(world):
    root, instance = world
    settings = _settings(root, "model_repro")
    first = _run_week(settings, instance, WEEK1)
    assert first.success, failure_messages(first)
    before = latest(instance, "model_evaluation", WEEK1).metadata
    weights = latest(instance, "delay_model", WEEK1).metadata[keys.TRAINING_WEIGHTS_DIGEST].value

    # someone rewrites a feature day behind Dagster's back: training must not pick it up
    store = DeltaPartitionStore(settings.delta_root)
    day = "2013-01-10"
    pin = latest(instance, "flight_features", day).metadata
    frame = store.read_at_version("flight_features", day, int(pin[keys.STORAGE_TABLE_VERSION].value))
    store.write_partition("flight_features", day, frame.drop("partition_date").head(10))

    second = _run_week(settings, instance, WEEK1)
    assert second.success, failure_messages(second)
    after = latest(instance, "model_evaluation", WEEK1).metadata
    assert after[keys.MLFLOW_MODEL_VERSION].value != before[keys.MLFLOW_MODEL_VERSION].value
    # same recorded data versions, code and seed: the same weights, so the same metrics (CPU
    # training is deterministic here; the tolerance only absorbs float formatting)
    assert latest(instance, "delay_model", WEEK1).metadata[keys.TRAINING_WEIGHTS_DIGEST].value == weights
    for metric in ("mae", "rmse", "roc_auc", "pr_auc", "brier"):
        key = f"evaluation/model_{metric}"
        assert after[key].value == pytest.approx(before[key].value, rel=1e-6), metric


def test_manual_approval_rejection_of_a_worse_challenger_and_rollback(world, monkeypatch):
    from typer.testing import CliRunner

    from ml_platform.cli import app

    root, instance = world
    name = "model_governed"
    for var, value in {"MLP_ROOT_DIR": str(root), "MLP_REGISTERED_MODEL": name}.items():
        monkeypatch.setenv(var, value)
    runner = CliRunner()

    # manual policy: the week-1 model passes its gates and waits for a person
    manual = _settings(root, name, promotion_policy="manual")
    result = _run_week(manual, instance, WEEK1)
    assert result.success, f"{failure_messages(result)}; gates: {_gates(instance)}"
    v1 = str(latest(instance, "delay_model", WEEK1).metadata[keys.MLFLOW_MODEL_VERSION].value)
    assert (
        latest(instance, "model_promotion", WEEK1).metadata[keys.REGISTRY_DECISION].value == "await_approval"
    )
    assert _aliases(manual) == {"challenger": v1}
    approved = runner.invoke(app, ["promote", "--version", v1, "--approver", "alice", "--reason", "reviewed"])
    assert approved.exit_code == 0, approved.output
    assert _aliases(manual) == {"champion": v1}
    event = AuditLog(manual.audit_table).events(name)[-1]
    assert (event.action, event.version, event.previous_version, event.actor) == (
        "promote",
        v1,
        None,
        "user:alice",
    )
    assert {g["name"] for g in event.evidence["gates"]} == {"beats_naive_baseline", "not_worse_than_champion"}

    # one gradient step from random weights: it cannot beat the per-route mean, so it is rejected
    bad = _settings(root, name, max_epochs=1, batch_size=1_000_000, refit_full_window=False)
    failed = _run_week(bad, instance, WEEK2)
    assert not failed.success
    v2 = str(latest(instance, "delay_model", WEEK2).metadata[keys.MLFLOW_MODEL_VERSION].value)
    evaluation = latest(instance, "model_evaluation", WEEK2).metadata
    assert evaluation[keys.MLFLOW_MODEL_VERSION].value == v2
    assert evaluation[keys.EVALUATION_PASSED].value is False
    assert WEEK2 not in instance.get_materialized_partitions(dg.AssetKey("model_promotion"))
    assert _aliases(manual) == {"champion": v1, "challenger": v2}
    reject = AuditLog(manual.audit_table).events(name)[-1]
    assert (reject.action, reject.version, reject.actor) == ("reject", v2, "policy:gates")
    assert any(not g["passed"] for g in reject.evidence["gates"])
    # and a person cannot approve what failed its gates
    refused = runner.invoke(app, ["promote", "--version", v2, "--approver", "alice"])
    assert refused.exit_code == 1 and "refused" in refused.output, refused.output
    assert _aliases(manual)["champion"] == v1

    # automatic policy: retraining week 1 (same data and seed, so as good) becomes champion
    automatic = _settings(root, name, champion_tolerance=0.5)
    assert _run_week(automatic, instance, WEEK1).success
    v3 = str(latest(instance, "delay_model", WEEK1).metadata[keys.MLFLOW_MODEL_VERSION].value)
    assert _aliases(manual)["champion"] == v3 != v1

    rolled = runner.invoke(app, ["rollback", "--by", "bob", "--reason", "bad canary"])
    assert rolled.exit_code == 0, rolled.output
    assert _aliases(manual)["champion"] == v1
    last = AuditLog(manual.audit_table).events(name)[-1]
    assert (last.action, last.version, last.previous_version, last.actor) == ("rollback", v1, v3, "user:bob")
    assert [a for a, _ in _events(manual)] == [
        "set_challenger",
        "await_approval",
        "promote",
        "set_challenger",
        "reject",
        "set_challenger",
        "promote",
        "rollback",
    ]
    listing = runner.invoke(app, ["audit"])
    assert listing.exit_code == 0, listing.output
    assert "hash chain verified" in listing.output and "rollback" in listing.output
    assert AuditLog(manual.audit_table).verify(name) == 8
    lineage = runner.invoke(app, ["champion"])
    assert lineage.exit_code == 0 and f"v{v1}" in lineage.output and "14 feature partitions" in lineage.output


def test_mlflow_ui_serves_the_runs_and_the_registered_versions_with_aliases(world):
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root, instance = world
    settings = _settings(root, "model_in_ui")
    assert _run_week(settings, instance, WEEK1).success
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlp")), "mlflow-ui", "--port", str(port)],
        env={**env, "MLP_ROOT_DIR": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def get(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    try:
        deadline, model = time.monotonic() + 120, None
        while model is None and time.monotonic() < deadline:
            try:
                model = get("/api/2.0/mlflow/registered-models/get?name=model_in_ui")["registered_model"]
            except OSError:
                time.sleep(1)
        assert model is not None, "the MLflow UI did not answer within 120 s"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        experiment = get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=ml_platform")["experiment"]
        runs = get(
            "/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    assert b"<html" in page.lower() or b"<!doctype html" in page.lower()
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {"champion": "1"}
    version = model["latest_versions"][0]
    assert version["run_id"] in {r["info"]["run_id"] for r in runs["runs"]}
