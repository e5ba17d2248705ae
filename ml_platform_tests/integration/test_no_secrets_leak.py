"""Nothing secret goes into code paths' outputs: asset metadata, MLflow, logs, stores.

The platform is configured, through its ``MLP_*`` environment, with known secret values: a
database password in the MLflow tracking URI and in the Optuna storage URL (throwaway databases
on the local PostgreSQL, which trusts local connections, so any password is accepted), a token in
the path of a Slack-style webhook (a loopback receiver answering 200) and in a second one that
always fails (so the delivery-error path runs too), and an unrelated secret environment variable.
A small but real workload runs: data days, one model week (HPO on Postgres, MLflow tracking and
registry on Postgres), one monitoring day and one tick of the retrain sensor (which alerts).

Then every place the platform writes to is scanned for the secrets (raw and URL-encoded): the
Dagster event log, runs (tags, config) and job snapshots, every file under the project root
(Dagster home, Delta tables, MLflow artifacts, Prometheus textfiles), the string columns of every
Delta table, the MLflow runs, experiments and registered versions, every row of both Postgres
databases, and the test's captured stdout/stderr and Python logging. A failure names each place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import dagster as dg
import pytest

from ml_platform_tests.integration.postgres import throwaway_databases

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WEEK = "2013-01-21"
MONITORED_DAY = "2013-01-28"
SMALL: dict[str, Any] = {
    "training_window_weeks": 2,
    "validation_days": 3,
    "hpo_trials": 1,  # one trial, so the Optuna storage (Postgres) is really used
    "max_epochs": 3,
    "gate_metrics": ["roc_auc"],
    "executor": "in_process",
    "git_commit": "test",
    "partition_end": "2013-02-04",
    "champion_max_age_days": 1,  # the sensor finds the champion stale, decides and alerts
}
MAX_FILE_BYTES = 5 * 1024 * 1024


def _token(kind: str) -> str:
    return f"{kind}SECRET{uuid.uuid4().hex}"


SECRETS = {
    "mlflow db password": _token("mlflowpw"),
    "optuna db password": _token("optunapw"),
    "webhook token": _token("hooktoken"),
    "failing webhook token": _token("badhooktoken"),
    "secret env var": _token("envsecret"),
}


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret)}


class Findings:
    """Where each secret was seen."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.places = 0
        self._needles = [
            (label, form.encode()) for label, secret in SECRETS.items() for form in _forms(secret)
        ]

    def scan(self, where: str, content: str | bytes) -> None:
        self.places += 1
        data = content.encode("utf-8", errors="replace") if isinstance(content, str) else content
        found: set[str] = set()
        for label, needle in self._needles:
            if label not in found and needle in data:
                found.add(label)
                at = data.index(needle)
                excerpt = data[max(0, at - 80) : at + len(needle) + 40].decode("utf-8", errors="replace")
                self.hits.append(f"{label} in {where}: ...{excerpt}...")


class Receiver:
    """Loopback webhook: 200 for the good token's path, 503 for every other path."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.failed_posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                if self.path.endswith(SECRETS["webhook token"]):
                    receiver.bodies.append(body)
                    self.send_response(200)
                else:
                    receiver.failed_posts += 1
                    self.send_response(503)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Two throwaway databases (MLflow, Optuna); yields their URLs with the secret passwords."""
    with throwaway_databases("mlflow", "optuna", prefix="mlp_secret") as (pg, names):
        yield {kind: pg.url(name, SECRETS[f"{kind} db password"]) for kind, name in names.items()} | {
            f"{kind}_db": name for kind, name in names.items()
        }


@pytest.fixture
def mlflow_globals() -> Iterator[None]:
    """Restore MLflow's process-wide tracking/registry URI (training sets them) afterwards."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        os.environ.get("MLFLOW_TRACKING_URI"),
    )
    yield
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved[0], saved[1]
    if saved[2] is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved[2]


def test_configured_secrets_appear_nowhere(
    databases, mlflow_globals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, caplog
):
    from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions
    from ml_platform.defs.monitoring.sensors import SENSOR
    from ml_platform.demo import days, run_partitions, run_week
    from ml_platform.lib.monitoring.events import MonitoringEvents
    from ml_platform.settings import PlatformSettings

    caplog.set_level(logging.INFO)
    for name in list(os.environ):
        if name.startswith("MLP_") and name != "MLP_TEST_POSTGRES":
            monkeypatch.delenv(name)
    receiver = Receiver()
    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", databases["mlflow"])
    monkeypatch.setenv("MLP_OPTUNA_STORAGE", databases["optuna"])
    monkeypatch.setenv(
        "MLP_NOTIFY",
        json.dumps(
            [
                "log",
                f"webhook:{receiver.base}/{SECRETS['webhook token']}",
                f"webhook:{receiver.base}/{SECRETS['failing webhook token']}",
            ]
        ),
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["secret env var"])
    monkeypatch.setenv("ML_PLATFORM_API_TOKEN", SECRETS["secret env var"])

    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    (tmp_path / ".dagster").mkdir()
    outputs: list[str] = []
    try:
        with dg.DagsterInstance.local_temp(
            tempdir=str(tmp_path / ".dagster"), overrides={"telemetry": {"enabled": False}}
        ) as instance:
            settings = PlatformSettings(root_dir=tmp_path, **SMALL)
            assert settings.mlflow_tracking_uri == databases["mlflow"]  # the secrets are configured
            defs = build_definitions(settings)

            # the workload: data days, a model week, a monitoring day, a retrain-sensor tick
            outcomes = run_partitions(
                instance, defs.resolve_job_def(DATA_JOB), days(date(2013, 1, 1), date(2013, 1, 28))
            )
            assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
            week = run_week(instance, defs.resolve_job_def(MODEL_JOB), WEEK)
            assert week.error is None, week.error
            outputs.append(f"{week.summary} {week!r}")
            monitored = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
                instance=instance, partition_key=MONITORED_DAY, raise_on_error=False
            )
            assert monitored.success, [e.message for e in monitored.all_events if e.is_step_failure]
            context = dg.build_sensor_context(
                instance=instance, definitions=defs, sensor_name=SENSOR, resources=defs.resources
            )
            tick = defs.resolve_sensor_def(SENSOR).evaluate_tick(context)
            outputs.append(repr(tick))

            # the workload reached every secret-bearing path
            assert receiver.bodies, "no alert reached the webhook: the notifier was not exercised"
            assert receiver.failed_posts, "the failing webhook was never called"
            kinds = set(MonitoringEvents(settings.monitoring_events_table).to_frame()["kind"].to_list())
            assert "alert_failed" in kinds, kinds

            findings = Findings()
            for i, text in enumerate(outputs):
                findings.scan(f"workload outcome #{i}", text)
            _scan_dagster(instance, findings)
            _scan_files(tmp_path, findings)
            _scan_delta_tables(settings.storage_root, findings)
            _scan_mlflow(databases["mlflow"], findings)
            for kind in ("mlflow", "optuna"):
                _scan_postgres(databases[f"{kind}_db"], findings)
    finally:
        receiver.close()

    out, err = capfd.readouterr()
    findings.scan("captured stdout", out)
    findings.scan("captured stderr", err)
    findings.scan("captured Python logging", caplog.text)
    for record in caplog.records:
        findings.scan(f"log record {record.name}", f"{record.getMessage()} {record.args!r}")
    with capfd.disabled():
        print(f"\nsecret scan: {findings.places} places scanned")
    assert not findings.hits, "secrets leaked:\n" + "\n".join(findings.hits)


def _scan_dagster(instance: dg.DagsterInstance, findings: Findings) -> None:
    from dagster._serdes import serialize_value

    runs = instance.get_runs()
    assert runs
    for run in runs:
        where = f"dagster run {run.run_id} ({run.job_name})"
        findings.scan(f"{where} tags", json.dumps(dict(run.tags)))
        findings.scan(f"{where} run_config", json.dumps(run.run_config, default=str))
        findings.scan(where, serialize_value(run))
        if run.job_snapshot_id:
            snapshot = instance.get_job_snapshot(run.job_snapshot_id)
            findings.scan(f"{where} job snapshot", serialize_value(snapshot))
        if run.execution_plan_snapshot_id:
            plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            findings.scan(f"{where} execution plan snapshot", serialize_value(plan))
        for entry in instance.all_logs(run.run_id):
            kind = entry.dagster_event.event_type_value if entry.dagster_event else "log"
            step = f" step {entry.step_key}" if entry.step_key else ""
            findings.scan(f"{where}{step} event {kind}", serialize_value(entry))


def _scan_files(root: Path, findings: Findings) -> None:
    """Every file under the project root: Dagster home (sqlite, compute logs), storage, artifacts."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.stat().st_size < MAX_FILE_BYTES:
            findings.scan(f"file {path.relative_to(root)}", path.read_bytes())


def _scan_delta_tables(storage: Path, findings: Findings) -> None:
    """String columns of every Delta table (their Parquet files are compressed)."""
    import polars as pl

    tables = sorted(p.parent for p in storage.rglob("_delta_log"))
    assert tables
    for table in tables:
        frame = pl.read_delta(str(table))
        text = [c for c, t in frame.schema.items() if t in (pl.String, pl.Categorical)]
        if not text:
            continue
        for label, secret in SECRETS.items():
            for form in _forms(secret):
                hit = frame.select(
                    [pl.col(c).cast(pl.String).str.contains(form, literal=True).any() for c in text]
                ).row(0)
                for column, found in zip(text, hit, strict=True):
                    if found:
                        findings.hits.append(
                            f"{label} in Delta table {table.relative_to(storage)} column {column}"
                        )
        findings.places += 1


def _scan_mlflow(uri: str, findings: Findings) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = client.search_experiments()
    runs = 0
    for exp in experiments:
        findings.scan(
            f"mlflow experiment {exp.name}",
            json.dumps([exp.artifact_location, exp.tags, exp.name], default=str),
        )
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            runs += 1
            where = f"mlflow run {run.info.run_id} ({run.info.run_name})"
            findings.scan(f"{where} params", json.dumps(run.data.params))
            findings.scan(f"{where} tags", json.dumps(run.data.tags))
            findings.scan(f"{where} metric keys", json.dumps(sorted(run.data.metrics)))
            findings.scan(f"{where} artifact_uri", str(run.info.artifact_uri))
            findings.scan(f"{where} inputs", repr(run.inputs))
    assert runs, "no MLflow run was recorded"
    versions = 0
    for model in client.search_registered_models():
        findings.scan(f"mlflow registered model {model.name}", repr(model))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            versions += 1
            findings.scan(
                f"mlflow model version {model.name}/{version.version}",
                json.dumps(
                    [version.tags, version.description, version.source, version.run_link], default=str
                ),
            )
    assert versions, "no model version was registered"


def _scan_postgres(dbname: str, findings: Findings) -> None:
    """Every row of every table of a throwaway database, as JSON."""
    import psycopg2

    host, port, user = os.environ.get("MLP_TEST_POSTGRES", "127.0.0.1:5432:postgres").split(":")
    with psycopg2.connect(host=host, port=int(port), user=user, dbname=dbname) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            tables = [row[0] for row in cur.fetchall()]
            assert tables, f"database {dbname} is empty: the store was not used"
            for table in tables:
                cur.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
                findings.scan(f"postgres {dbname}.{table}", "\n".join(row[0] for row in cur.fetchall()))
        conn.rollback()
    conn.close()
