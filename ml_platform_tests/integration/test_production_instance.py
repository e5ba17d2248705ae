"""The production instance (deploy/dagster/dagster-production.yaml) on the local PostgreSQL.

The file is loaded as it ships, from a temporary ``DAGSTER_HOME`` whose ``DAGSTER_PG_*`` variables
point at a throwaway database, and the data graph runs on it the way production runs it: two
backfills at once, each in its own process with its own instance (as run workers are), then the
rest of the graph and one evaluation of the automation sensor. Afterwards the event log must hold
every event exactly once and the Delta store exactly the partitions the materializations recorded.

Set ``MLP_TEST_POSTGRES`` (``host:port:user``) to use another server; without a reachable server
the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from dagster._core.events import DagsterEventType

from ml_platform.definitions import AUTOMATION_SENSOR, DATA_JOB, build_definitions
from ml_platform.demo import days, run_partitions
from ml_platform.lib import metadata as keys
from ml_platform.lib.storage.delta import PARTITION_COLUMN, DeltaPartitionStore, PartitionVersion
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import QUIET
from ml_platform_tests.integration.postgres import throwaway_databases

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_YAML = ROOT / "deploy" / "dagster" / "dagster-production.yaml"

#: Backfill A: the whole data graph over its days. Backfill B, at the same time: raw and validated
#: over later days (a feature day reads the 28 validated days before it, so B's features wait until
#: both are done; A's days never read B's).
DAYS_A = days(date(2013, 1, 1), date(2013, 1, 2))
DAYS_B = days(date(2013, 1, 3), date(2013, 1, 4))
LOWER_LAYERS = ("raw_flights", "raw_weather", "validated_flights", "validated_weather")

#: One backfill in its own process: its own instance from DAGSTER_HOME, like a run worker.
WORKER = """
import json, sys
import dagster as dg
from ml_platform.definitions import DATA_JOB, build_definitions
from ml_platform.demo import run_partitions
from ml_platform.settings import PlatformSettings

partitions, assets = json.loads(sys.argv[1]), json.loads(sys.argv[2])
job = build_definitions(PlatformSettings()).resolve_job_def(DATA_JOB)
if assets:
    job = job.get_subset(asset_selection={dg.AssetKey(a) for a in assets})
with dg.DagsterInstance.get() as instance:
    outcomes = run_partitions(instance, job, partitions)
print(json.dumps([o.__dict__ for o in outcomes]))
"""


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh database, as the DAGSTER_PG_* variables of the production file; dropped afterwards."""
    with throwaway_databases("instance") as (pg, names):
        env = {
            "DAGSTER_PG_USERNAME": pg.user,
            "DAGSTER_PG_PASSWORD": os.environ.get("PGPASSWORD", ""),
            "DAGSTER_PG_HOST": pg.host,
            "DAGSTER_PG_DB": names["instance"],
            "DAGSTER_PG_PORT": str(pg.port),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env


@pytest.fixture
def production(
    pg_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """The instance of a DAGSTER_HOME holding a copy of the production file."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def test_production_file_configures_postgres_and_the_daemons(production: dg.DagsterInstance) -> None:
    from dagster._core.instance.config import PoolGranularity
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import (
        DagsterPostgresStorage,
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    assert set(config["storage"]["postgres"]["postgres_db"]) >= {
        "username",
        "password",
        "hostname",
        "db_name",
        "port",
    }
    storage = production.get_ref().storage_data
    assert storage is not None
    assert (storage.module_name, storage.class_name) == ("dagster_postgres", DagsterPostgresStorage.__name__)
    assert isinstance(production.run_storage, PostgresRunStorage)
    assert isinstance(production.event_log_storage, PostgresEventLogStorage)
    assert isinstance(production.schedule_storage, PostgresScheduleStorage)
    # the env: sources resolved to the throwaway database, through psycopg2 (see the file's scheme)
    host, port = os.environ["DAGSTER_PG_HOST"], os.environ["DAGSTER_PG_PORT"]
    for url in (
        production.run_storage.postgres_url,
        production.event_log_storage.postgres_url,
        production.schedule_storage.postgres_url,
    ):
        assert url.startswith("postgresql+psycopg2://"), url
        assert url.endswith(f"@{host}:{port}/{os.environ['DAGSTER_PG_DB']}"), url

    monitoring = config["run_monitoring"]
    assert production.run_monitoring_enabled is monitoring["enabled"] is True
    assert production.run_monitoring_start_timeout_seconds == monitoring["start_timeout_seconds"]
    assert production.run_monitoring_cancel_timeout_seconds == monitoring["cancel_timeout_seconds"]
    assert production.run_monitoring_max_resume_run_attempts == monitoring["max_resume_run_attempts"]
    retries = config["run_retries"]
    assert production.run_retries_enabled is retries["enabled"] is True
    assert production.run_retries_max_retries == retries["max_retries"] > 0
    assert production.run_retries_retry_on_asset_or_op_failure is retries["retry_on_asset_or_op_failure"]
    assert production.telemetry_enabled is False

    assert isinstance(production.run_coordinator, QueuedRunCoordinator)
    concurrency = production.get_concurrency_config()
    runs, pools = config["concurrency"]["runs"], config["concurrency"]["pools"]
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.max_concurrent_runs == runs["max_concurrent_runs"]
    assert concurrency.run_queue_config.tag_concurrency_limits == runs["tag_concurrency_limits"]
    assert {"key": "ml_platform/accelerator", "value": "gpu", "limit": 1} in runs["tag_concurrency_limits"]
    assert concurrency.pool_config.default_pool_limit == pools["default_limit"]
    assert concurrency.pool_config.pool_granularity == PoolGranularity(pools["granularity"])


def _backfill(
    settings: PlatformSettings, partitions: list[str], assets: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env.update(MLP_ROOT_DIR=str(settings.root_dir), MLP_EXECUTOR="in_process", MLP_GIT_COMMIT="test")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(partitions), json.dumps(list(assets))],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _outcomes(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-4000:]
    outcomes: list[dict[str, object]] = json.loads(out.strip().splitlines()[-1])
    return outcomes


def test_concurrent_backfills_lose_and_duplicate_nothing(
    production: dg.DagsterInstance, make_settings: Callable[..., PlatformSettings]
) -> None:
    settings = make_settings(executor="in_process")
    defs = build_definitions(settings)
    job = defs.resolve_job_def(DATA_JOB)

    # two backfills at once, each a process with its own instance on the same database
    backfills = [_backfill(settings, DAYS_A), _backfill(settings, DAYS_B, LOWER_LAYERS)]
    try:
        a, b = (_outcomes(process) for process in backfills)
    finally:
        for process in backfills:
            if process.poll() is None:
                process.kill()
                process.wait()
    _assert_overlapped(production, [str(o["run_id"]) for o in a], [str(o["run_id"]) for o in b])
    outcomes = a + b
    # then the rest of B's days (their features read A's days)
    upper = job.get_subset(
        asset_selection={
            k for k in job.asset_layer.executable_asset_keys if k.to_user_string() not in LOWER_LAYERS
        }
    )
    outcomes += [o.__dict__ for o in run_partitions(production, upper, DAYS_B)]
    assert all(o["success"] for o in outcomes), [o["error"] for o in outcomes if not o["success"]]
    expected: dict[tuple[str, str], str] = {}  # (asset, partition) -> the run that made it
    for o in outcomes:
        for asset in str(o["layer"]).split(", "):
            for day in days(_date(o["first"]), _date(o["last"])):
                assert (asset, day) not in expected, f"{asset}[{day}] targeted twice"
                expected[(asset, day)] = str(o["run_id"])
    data_assets = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {a for a, _ in expected} == data_assets
    assert {d for _, d in expected} == set(DAYS_A + DAYS_B)

    # the automation sensor, as the daemon ticks it: the backfilled days are done, so nothing is
    # requested; a tick later the new day is missing, and the sensor requests the data graph for it
    # (eager automation requests a day's whole chain at once), which runs as one run of the job
    automated = list(job.asset_layer.executable_asset_keys)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=production, evaluation_time=_at(5))
    assert tick.total_requested == 0, _requests(tick, automated)
    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=production, cursor=tick.cursor, evaluation_time=_at(6)
    )
    new_day = "2013-01-05"
    assert _requests(tick, automated) == {(a, new_day) for a in data_assets}
    result = job.execute_in_process(
        instance=production,
        partition_key=new_day,
        run_config=QUIET,
        tags={"dagster/sensor_name": AUTOMATION_SENSOR},
    )
    assert result.success
    expected.update({(a, new_day): result.run_id for a in data_assets})

    _assert_event_log_exact(production, expected)
    _assert_delta_store_exact(production, settings, expected)


def _assert_overlapped(instance: dg.DagsterInstance, a: list[str], b: list[str]) -> None:
    """The two backfills' runs were in progress at the same time (else the test proves little)."""
    spans = []
    for run_ids in (a, b):
        records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
        starts = [r.start_time for r in records if r.start_time]
        ends = [r.end_time for r in records if r.end_time]
        assert len(starts) == len(ends) == len(run_ids), "a run record lacks its start or end time"
        spans.append((min(starts), max(ends)))
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, f"the backfills ran one after the other: {spans}"


def _date(value: object) -> date:
    return date.fromisoformat(str(value))


def _at(day: int) -> datetime:
    """When the daemon ticks for the day before ``day`` of January 2013 (half past midnight UTC)."""
    return datetime(2013, 1, day, 0, 30, tzinfo=UTC)


def _requests(tick: dg.EvaluateAutomationConditionsResult, assets: list[dg.AssetKey]) -> set[tuple[str, str]]:
    return {(k.to_user_string(), str(p)) for k in assets for p in tick.get_requested_partitions(k)}


#: What a run's log holds before RUN_START: what launching it logged.
PRELUDE = {
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
    DagsterEventType.RUN_ENQUEUED,
    DagsterEventType.RUN_DEQUEUED,
    DagsterEventType.RUN_STARTING,
}


def _assert_event_log_exact(instance: dg.DagsterInstance, expected: dict[tuple[str, str], str]) -> None:
    """Every run succeeded, logged its events once and in order, and made exactly its partitions."""
    runs = instance.get_runs()
    assert {r.run_id for r in runs} == set(expected.values())
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    storage_ids: list[int] = []
    logged: Counter[tuple[str, str, str]] = Counter()  # (asset, partition, run) in the runs' logs
    for run in runs:
        records = instance.get_records_for_run(run.run_id, limit=100_000).records
        ids = [r.storage_id for r in records]
        assert ids == sorted(ids), f"run {run.run_id}: events out of order"
        storage_ids += ids
        kinds = [r.event_log_entry.dagster_event_type for r in records if r.event_log_entry.is_dagster_event]
        # created (its planned materializations), started once, ...; succeeded, last
        start = kinds.index(DagsterEventType.RUN_START)
        assert set(kinds[:start]) <= PRELUDE, kinds[:start]
        assert kinds[-1] == DagsterEventType.RUN_SUCCESS, kinds[-3:]
        counts = Counter(kinds)
        assert counts[DagsterEventType.RUN_START] == counts[DagsterEventType.RUN_SUCCESS] == 1
        assert DagsterEventType.STEP_FAILURE not in kinds
        for record in records:
            mat = record.asset_materialization
            if mat is not None:
                logged[(mat.asset_key.to_user_string(), str(mat.partition), run.run_id)] += 1
    assert len(storage_ids) == len(set(storage_ids)), "an event was stored twice"
    assert logged == Counter({(a, p, run): 1 for (a, p), run in expected.items()})

    # the asset index (what the UI and the automation read) agrees with the runs' logs
    indexed: Counter[tuple[str, str, str]] = Counter()
    for asset in {a for a, _ in expected}:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
        for record in records:
            assert record.storage_id in set(storage_ids)
            mat = record.asset_materialization
            assert mat is not None
            indexed[(asset, str(mat.partition), record.run_id)] += 1
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {
            p for a, p in expected if a == asset
        }
    assert indexed == logged


def _assert_delta_store_exact(
    instance: dg.DagsterInstance, settings: PlatformSettings, expected: dict[tuple[str, str], str]
) -> None:
    """Each Delta table holds exactly the materialized partitions, at the versions their metadata pins."""
    from deltalake import DeltaTable

    store = DeltaPartitionStore(settings.delta_root)
    tables = 0
    for asset in sorted({a for a, _ in expected}):
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
        meta = [r.asset_materialization.metadata for r in records if r.asset_materialization]
        if not all(keys.STORAGE_TABLE_VERSION in m for m in meta):
            assert not any(keys.STORAGE_TABLE_VERSION in m for m in meta), asset
            continue  # a profile: no Delta table of its own
        tables += 1
        pins = {
            str(m[keys.STORAGE_PARTITION].value): PartitionVersion(
                table=asset,
                partition=str(m[keys.STORAGE_PARTITION].value),
                table_version=int(m[keys.STORAGE_TABLE_VERSION].value),  # type: ignore[arg-type]
                content_hash=str(m[keys.STORAGE_CONTENT_HASH].value),
                row_count=int(m[keys.ROW_COUNT].value),  # type: ignore[arg-type]
                files=tuple(m[keys.STORAGE_FILES].value),  # type: ignore[arg-type]
            )
            for m in meta
        }
        assert set(pins) == {p for a, p in expected if a == asset}
        table = DeltaTable(store.table_uri(asset))
        stored = set(pl.DataFrame(table.get_add_actions(flatten=True))[f"partition.{PARTITION_COLUMN}"])
        assert stored == set(pins), f"{asset}: Delta holds {sorted(stored)}, Dagster recorded {sorted(pins)}"
        # one commit per partition, at the version its materialization recorded
        commits = {
            int(c["version"]): str(c.get("mlp.partition"))
            for c in table.history()
            if c.get("operation") == "WRITE"
        }
        assert sorted(commits.values()) == sorted(pins), f"{asset}: commits {commits}"
        for partition, pin in pins.items():
            assert commits[pin.table_version] == partition
            frame = store.read([pin])  # the pinned files, hash-verified
            assert frame.height == pin.row_count
            assert set(frame[PARTITION_COLUMN]) == {partition}
    assert tables >= 5
