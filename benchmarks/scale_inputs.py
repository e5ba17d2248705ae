"""Inputs for docs/scaling.md: what one partition costs, measured, so the scale-up can be done on paper.

Three parts (``--parts``, default all), each printed as it goes and written to one JSON:

1. ``postgres``: the production instance (``deploy/dagster/dagster-production.yaml``) on throwaway
   databases of the local PostgreSQL (``ml_platform_tests.integration.postgres.throwaway_databases``;
   ``MLP_TEST_POSTGRES`` = ``host:port:user`` points elsewhere), with MLflow and Optuna on Postgres
   too, and a fresh Delta store. Phases, each measured as the growth of every table of the three
   databases, plus the event-log rows and bytes of its runs by step and event type:

   * ``range``: ``daily_data_job`` over 2013-01-01..03-10 in one range run per layer (in-process,
     ``ml_platform.demo.run_partitions``): what the model week 2013-03-04 needs;
   * ``data``: ``daily_data_job`` for each of ``--days`` (default 3) days after that, one run per
     partition, as a UI or automation run launches it, with the **multiprocess** executor (a process
     per step, the closest local stand-in for the Kubernetes executor's pod per step);
   * ``model``: ``weekly_model_job`` for 2013-03-04, multiprocess (delay_model with the default
     Optuna search, model_evaluation, model_promotion), with its MLflow and Optuna rows;
   * ``monitoring``: ``daily_monitoring_job`` for the same days (drift_report against the champion,
     batch predictions, live performance), multiprocess.

   Then: steps (= step pods under ``k8s_job_executor``) and pod requests of a one-partition run of
   each job, from its execution plan (as ``ml_platform_tests/test_k8s_jobs.py`` builds them); the
   per-step seconds (worker start, STEP_START..STEP_SUCCESS) from the event log; the size of the
   ``lineage/upstream`` metadata per pin; and Delta bytes, files, rows and log files per partition
   of every table.
2. ``rows``: the pure library functions, no Dagster, on one day's flights (2013-03-13) at
   ``--scales`` times its rows (default 1, 4, 10, 100): the contract cast, validation + derive,
   features over a 28-day history at the same scale (and, from 24x, one hour's features against
   it), the profile and its serialized size, the content hash, three Delta partition writes, and the
   hash-verified pinned read of the 29-day window; the process's peak RSS after each scale. Copies
   get new carrier codes and flight numbers (the uniqueness key of ``FlightsSchema``), so every copy
   validates. Weather stays at 1x (3 stations). Gives seconds and bytes per row.
3. ``growth``: one Delta table written partition after partition with hourly keys
   (``YYYY-MM-DD-HH:00``), each partition the size of an hourly partition at 100x volume (the 4x
   day), up to ``--growth-partitions``: write seconds, table-open seconds and checkpoint bytes as
   the table grows; then the pinned read of the last 673 partitions (28 days of hours and one),
   what an hourly ``flight_features`` partition would read.

``--snapshot`` runs HEAD's ``ml_platform`` (``git archive``) and a copy of this script, so edits to
the checkout while this runs change nothing measured; the digest of the measured sources is recorded
at the start and the end. The databases and the workdir are removed afterwards (``--keep`` keeps
the workdir). About 5 minutes on 2 cores.

Usage::

    .venv/bin/python benchmarks/scale_inputs.py [--snapshot] [--parts postgres,rows,growth]
        [--days 3] [--scales 1,4,10,100] [--repeats 3] [--growth-partitions 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from common import REPO, code_digest, finish_report, imported_package_dir, loadavg, log
from common import environment as common_environment

PARTS = ("postgres", "rows", "growth")
PRODUCTION_YAML = REPO / "deploy" / "dagster" / "dagster-production.yaml"
#: The range phase: every feature day the model week 2013-03-04 reads (window and holdout).
RANGE = (date(2013, 1, 1), date(2013, 3, 10))
MODEL_WEEK = "2013-03-04"
#: The first day of the one-run-per-partition phases (data, then monitoring).
FIRST_DAY = date(2013, 3, 11)
#: Hours of validated flights an hourly flight_features partition would read before its own hour.
HOURLY_WINDOW = 28 * 24
#: The day the row-scaling part multiplies.
SCALE_DAY = date(2013, 3, 13)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
RUN_EVENTS = (
    "STEP_WORKER_STARTING",
    "STEP_WORKER_STARTED",
    "STEP_START",
    "STEP_SUCCESS",
    "STEP_FAILURE",
    # the run's start and end keep their legacy names in the event log
    "PIPELINE_START",
    "PIPELINE_SUCCESS",
    "PIPELINE_FAILURE",
)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


# --------------------------------------------------------------------------------------------------
# Part 1: the production instance on Postgres
# --------------------------------------------------------------------------------------------------


def job_for(name: str) -> Any:
    """The job ``name`` of the Definitions the ``MLP_*`` environment describes (for ``reconstructable``).

    The multiprocess executor's step processes import this module by name and call this function.
    """
    from ml_platform.definitions import build_definitions
    from ml_platform.settings import PlatformSettings

    return build_definitions(PlatformSettings()).resolve_job_def(name)


class Database:
    """One throwaway database: table sizes and row counts, and queries."""

    def __init__(self, pg: Any, name: str) -> None:
        import psycopg2

        self.name = name
        self.conn = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname=name)
        self.conn.autocommit = True

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def tables(self) -> dict[str, dict[str, int]]:
        """Every public table: rows, and bytes of heap, indexes and the total (heap + TOAST + indexes)."""
        out = {}
        sizes = self.query(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
        )
        for name, total, heap, indexes in sizes:
            rows = self.query(f'SELECT count(*) FROM "{name}"')[0][0]
            out[name] = {"rows": rows, "total_bytes": total, "heap_bytes": heap, "index_bytes": indexes}
        return out

    def close(self) -> None:
        self.conn.close()


def growth(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per table, what changed between two :meth:`Database.tables` snapshots (tables that changed)."""
    out = {}
    for table, now in after.items():
        was = before.get(table, dict.fromkeys(now, 0))
        delta = {k: now[k] - was[k] for k in now}
        if any(delta.values()):
            out[table] = delta
    total = {k: sum(d[k] for d in out.values()) for k in ("rows", "total_bytes", "heap_bytes", "index_bytes")}
    out["(all tables)"] = total
    return out


def who(step_key: str | None, asset_key: str | None) -> str:
    if step_key:
        return step_key
    if asset_key:
        return ".".join(json.loads(asset_key)) if asset_key.startswith("[") else asset_key
    return "(run)"


def run_events(db: Database, run_ids: list[str]) -> dict[str, Any]:
    """The runs' event-log rows and bytes, by step (or asset, or the run) and event type."""
    rows = db.query(
        "SELECT step_key, asset_key, coalesce(dagster_event_type, 'LOG_MESSAGE'), count(*),"
        " sum(octet_length(event)), sum(pg_column_size(event))"
        " FROM event_logs e WHERE run_id = ANY(%s) GROUP BY 1, 2, 3",
        (run_ids,),
    )
    by_who: dict[str, dict[str, Any]] = {}
    by_type: dict[str, dict[str, int]] = {}
    for step, asset, kind, count, text_bytes, stored_bytes in rows:
        entry = by_who.setdefault(
            who(step, asset), {"rows": 0, "text_bytes": 0, "stored_bytes": 0, "types": {}}
        )
        entry["rows"] += count
        entry["text_bytes"] += int(text_bytes)
        entry["stored_bytes"] += int(stored_bytes)
        entry["types"][kind] = entry["types"].get(kind, 0) + count
        kind_entry = by_type.setdefault(kind, {"rows": 0, "text_bytes": 0, "stored_bytes": 0})
        kind_entry["rows"] += count
        kind_entry["text_bytes"] += int(text_bytes)
        kind_entry["stored_bytes"] += int(stored_bytes)
    total_rows = sum(e["rows"] for e in by_who.values())
    return {
        "rows": total_rows,
        "text_bytes": sum(e["text_bytes"] for e in by_who.values()),
        "stored_bytes": sum(e["stored_bytes"] for e in by_who.values()),
        "by_step": dict(sorted(by_who.items())),
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["stored_bytes"])),
    }


def step_seconds(db: Database, run_ids: list[str]) -> dict[str, Any]:
    """Per step: worker start (STEP_WORKER_STARTING -> STEP_START) and compute (STEP_START -> end)."""
    rows = db.query(
        "SELECT run_id, step_key, dagster_event_type, extract(epoch FROM timestamp)::float8 FROM event_logs"
        " WHERE run_id = ANY(%s) AND dagster_event_type = ANY(%s)",
        (run_ids, list(RUN_EVENTS)),
    )
    at: dict[tuple[str, str | None, str], float] = {(r, s, k): t for r, s, k, t in rows}
    steps: dict[str, dict[str, list[float]]] = {}
    runs = []
    for run_id in run_ids:
        start = at.get((run_id, None, "PIPELINE_START"))
        end = at.get((run_id, None, "PIPELINE_SUCCESS")) or at.get((run_id, None, "PIPELINE_FAILURE"))
        if start and end:
            runs.append(end - start)
        for (rid, step, kind), t in at.items():
            if rid != run_id or step is None or kind != "STEP_START":
                continue
            done = at.get((rid, step, "STEP_SUCCESS")) or at.get((rid, step, "STEP_FAILURE"))
            launched = at.get((rid, step, "STEP_WORKER_STARTING"))
            entry = steps.setdefault(step, {"compute_s": [], "worker_start_s": []})
            if done:
                entry["compute_s"].append(done - t)
            if launched:
                entry["worker_start_s"].append(t - launched)
    return {
        "run_s": [round(x, 3) for x in runs],
        "steps": {
            step: {k: median(v) for k, v in entry.items() if v} | {"runs": len(entry["compute_s"])}
            for step, entry in sorted(steps.items())
        },
    }


def upstream_sizes(db: Database, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per asset: pins in its ``lineage/upstream`` metadata and that entry's JSON bytes (mean per event)."""
    from dagster._serdes import deserialize_value

    from ml_platform.lib import metadata as keys

    rows = db.query(
        "SELECT asset_key, event FROM event_logs WHERE run_id = ANY(%s)"
        " AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (run_ids,),
    )
    acc: dict[str, list[tuple[int, int, int]]] = {}
    for asset_key, text in rows:
        entry = deserialize_value(text)
        mat = entry.dagster_event.event_specific_data.materialization
        upstream = mat.metadata.get(keys.LINEAGE_UPSTREAM)
        pins = upstream.value if upstream is not None else []
        pins_bytes = len(json.dumps(pins)) if pins else 0
        acc.setdefault(who(None, asset_key), []).append((len(pins), pins_bytes, len(text)))
    return {
        asset: {
            "events": len(v),
            "pins": statistics.mean(p for p, _, _ in v),
            "upstream_json_bytes": round(statistics.mean(b for _, b, _ in v)),
            "event_text_bytes": round(statistics.mean(t for _, _, t in v)),
            "bytes_per_pin": round(statistics.mean(b / p for p, b, _ in v if p), 1)
            if any(p for p, _, _ in v)
            else 0,
        }
        for asset, v in sorted(acc.items())
    }


def plan(job_names: tuple[str, ...], partitions: dict[str, str]) -> dict[str, Any]:
    """Steps of a one-partition run of each job (one pod each under k8s_job_executor) and their pods."""
    from dagster._core.execution.api import create_execution_plan

    from ml_platform.defs.k8s import K8S_CONFIG_TAG

    out = {}
    for name in job_names:
        steps = create_execution_plan(
            job_for(name), tags={"dagster/partition": partitions[name]}
        ).get_all_steps_in_topo_order()
        pods = {}
        for step in steps:
            config = (step.tags or {}).get(K8S_CONFIG_TAG)
            config = json.loads(config) if isinstance(config, str) else config or {}
            pods[step.key] = config.get("container_config", {}).get("resources", {})
        out[name] = {"steps": len(steps), "pods_per_run": len(steps) + 1, "step_pods": pods}
    return out


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def delta_stats(delta_root: Path, focus: list[str]) -> dict[str, Any]:
    """Per Delta table: partitions, files, bytes and rows (all, and for the ``focus`` partitions), log."""
    import polars as pl
    from deltalake import DeltaTable

    out: dict[str, Any] = {}
    for table_dir in sorted(p for p in delta_root.iterdir() if (p / "_delta_log").is_dir()):
        dt = DeltaTable(str(table_dir))
        adds = pl.DataFrame(dt.get_add_actions(flatten=True))
        column = "partition.partition_date"
        log_dir = table_dir / "_delta_log"
        commits = list(log_dir.glob("*.json"))
        checkpoints = list(log_dir.glob("*.checkpoint.parquet"))
        entry: dict[str, Any] = {
            "version": dt.version(),
            "log_json_files": len(commits),
            "log_json_bytes": sum(p.stat().st_size for p in commits),
            "checkpoints": len(checkpoints),
            "last_checkpoint_bytes": max((p.stat().st_size for p in checkpoints), default=0),
        }
        if not adds.is_empty() and column in adds.columns:
            parts = adds.group_by(column).agg(
                pl.len().alias("files"), pl.col("size_bytes").sum().alias("bytes"),
                pl.col("num_records").sum().alias("rows"),
            )  # fmt: skip
            entry.update(
                partitions=parts.height,
                files=int(parts["files"].sum()),
                bytes=int(parts["bytes"].sum()),
                rows=int(parts["rows"].sum()),
                mean_bytes_per_partition=round(float(parts["bytes"].mean()), 1),  # type: ignore[arg-type]
                mean_rows_per_partition=round(float(parts["rows"].mean()), 1),  # type: ignore[arg-type]
                focus={
                    r[column]: {"files": r["files"], "bytes": r["bytes"], "rows": r["rows"]}
                    for r in parts.filter(pl.col(column).is_in(focus)).sort(column).iter_rows(named=True)
                },
            )
        out[table_dir.name] = entry
    return out


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def init_tracking_schemas(mlflow_uri: str, optuna_uri: str) -> None:
    """Create the MLflow and Optuna tables up front, so the model phase's growth is its rows only."""
    import mlflow
    import optuna

    mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).search_experiments()
    optuna.storages.RDBStorage(optuna_uri)


def postgres_part(work: Path, args: argparse.Namespace, head: str) -> dict[str, Any]:
    import dagster as dg

    from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB
    from ml_platform.demo import days, run_partitions
    from ml_platform_tests.integration.postgres import throwaway_databases

    per_day = days(FIRST_DAY, FIRST_DAY + timedelta(days=args.days - 1))
    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    storage = work / "storage"
    out: dict[str, Any] = {"days": per_day, "range": [RANGE[0].isoformat(), RANGE[1].isoformat()]}
    try:
        context = throwaway_databases("instance", "mlflow", "optuna", prefix="mlp_scale")
        pg, names = context.__enter__()
    except BaseException as exc:  # pytest.skip's exception when no server answers
        raise SystemExit(f"no PostgreSQL for the postgres part: {exc}") from None
    try:
        os.environ.update(
            DAGSTER_HOME=str(home),
            DAGSTER_PG_USERNAME=pg.user,
            DAGSTER_PG_PASSWORD=os.environ.get("PGPASSWORD", ""),
            DAGSTER_PG_HOST=pg.host,
            DAGSTER_PG_DB=names["instance"],
            DAGSTER_PG_PORT=str(pg.port),
            MLP_ROOT_DIR=str(REPO),
            MLP_STORAGE_ROOT=str(storage),
            MLP_PARTITION_START=RANGE[0].isoformat(),
            MLP_PARTITION_END=(FIRST_DAY + timedelta(days=args.days)).isoformat(),
            MLP_EXECUTOR="multiprocess",
            MLP_GIT_COMMIT=head[:12],
            MLP_MLFLOW_TRACKING_URI=pg.url(names["mlflow"]),
            MLP_OPTUNA_STORAGE=pg.url(names["optuna"]),
        )
        dbs = {kind: Database(pg, name) for kind, name in names.items()}
        init_tracking_schemas(os.environ["MLP_MLFLOW_TRACKING_URI"], os.environ["MLP_OPTUNA_STORAGE"])
        out["server_version"] = dbs["instance"].query("SHOW server_version")[0][0]
        out["plan"] = plan(
            (DATA_JOB, MODEL_JOB, MONITORING_JOB),
            {DATA_JOB: per_day[0], MODEL_JOB: MODEL_WEEK, MONITORING_JOB: per_day[0]},
        )
        instance = dg.DagsterInstance.from_config(str(home))
        phases: dict[str, Any] = {}

        def phase(name: str, partitions: int, body: Callable[[], list[tuple[str, bool]]]) -> None:
            before = {kind: db.tables() for kind, db in dbs.items()}
            t0 = time.perf_counter()
            runs = body()
            wall = time.perf_counter() - t0
            after = {kind: db.tables() for kind, db in dbs.items()}
            run_ids = [r for r, _ in runs]
            result = {
                "partitions": partitions,
                "runs": len(runs),
                "success": all(ok for _, ok in runs),
                "wall_s": round(wall, 2),
                "growth": {kind: growth(before[kind], after[kind]) for kind in dbs},
                "events": run_events(dbs["instance"], run_ids),
                "timing": step_seconds(dbs["instance"], run_ids),
                "upstream": upstream_sizes(dbs["instance"], run_ids),
                "run_tags_rows": dbs["instance"].query(
                    "SELECT count(*) FROM run_tags WHERE run_id = ANY(%s)", (run_ids,)
                )[0][0],
            }
            phases[name] = result
            grew, events = result["growth"]["instance"]["(all tables)"], result["events"]
            log(
                f"  {name}: {len(runs)} run(s), success={result['success']}, {wall:.1f}s; event_logs"
                f" +{events['rows']} rows ({events['text_bytes'] / 1024:.0f} KiB JSON), instance DB"
                f" +{grew['rows']} rows, +{grew['total_bytes'] / 1024:.0f} KiB"
            )

        def range_runs() -> list[tuple[str, bool]]:
            job = job_for(DATA_JOB)
            outcomes = run_partitions(instance, job, days(*RANGE), chunk_days=10_000)
            for o in outcomes:
                if not o.success:
                    log(f"  range run {o.layer} failed: {o.error}")
            return [(o.run_id, o.success) for o in outcomes]

        def one_per_partition(job_name: str, partitions: list[str]) -> Callable[[], list[tuple[str, bool]]]:
            recon = dg.build_reconstructable_job("scale_inputs", "job_for", reconstructable_args=(job_name,))

            def body() -> list[tuple[str, bool]]:
                runs = []
                for partition in partitions:
                    t = time.perf_counter()
                    with dg.execute_job(
                        recon, instance, run_config=QUIET, tags={"dagster/partition": partition}
                    ) as result:
                        runs.append((result.run_id, result.success))
                    took = time.perf_counter() - t
                    log(f"    {job_name}[{partition}]: success={result.success} {took:.1f}s")
                return runs

            return body

        log(f"postgres: databases {names}, DAGSTER_HOME {home}")
        phase("range", len(days(*RANGE)), range_runs)
        phase("data", len(per_day), one_per_partition(DATA_JOB, per_day))
        phase("model", 1, one_per_partition(MODEL_JOB, [MODEL_WEEK]))
        if phases["model"]["success"]:
            phase("monitoring", len(per_day), one_per_partition(MONITORING_JOB, per_day))
        else:
            log("  the model week failed: no champion, so the monitoring phase is skipped")
        out["phases"] = phases
        out["databases_end"] = {kind: db.tables() for kind, db in dbs.items()}
        out["delta"] = delta_stats(storage / "delta", per_day)
        out["storage_bytes"] = {p.name: folder_bytes(p) for p in sorted(storage.iterdir()) if p.is_dir()}
        out["dagster_home_bytes"] = folder_bytes(home)
        instance.dispose()
        for db in dbs.values():
            db.close()
    finally:
        context.__exit__(None, None, None)
    return out


# --------------------------------------------------------------------------------------------------
# Part 2: seconds and bytes per row, library functions only
# --------------------------------------------------------------------------------------------------


def scale_flights(raw: Any, scale: int, copies_per_prefix: int = 24, block: int = 400) -> Any:
    """``raw`` (one day of conformed flights) and ``scale - 1`` copies with new keys.

    Copy k >= 1 gets carrier ``<prefix><letter of the carrier>``, where no real carrier code starts
    with the prefix, and flight number ``rank within the carrier`` + ``block * (k-1 mod 24)``: every
    (carrier, flight, day, sched_dep_time) stays unique and within ``FlightsSchema``'s ranges.
    """
    import polars as pl

    carriers = sorted(raw["carrier"].unique().to_list())
    alphabet = string.digits + string.ascii_uppercase
    prefixes = [c for c in alphabet if c not in {code[0] for code in carriers}]
    if (scale - 2) // copies_per_prefix >= len(prefixes) or len(carriers) > len(alphabet):
        raise ValueError(f"scale {scale} needs more carrier prefixes than {len(prefixes)}")
    rank = pl.int_range(1, pl.len() + 1).over("carrier")
    if raw.select(rank.max()).item() > block:
        raise ValueError(f"a carrier has more than {block} flights on the day")
    letter = pl.col("carrier").replace_strict({c: alphabet[i] for i, c in enumerate(carriers)})
    frames = [raw]
    for k in range(1, scale):
        prefix, offset = prefixes[(k - 1) // copies_per_prefix], block * ((k - 1) % copies_per_prefix)
        frames.append(
            raw.with_columns(
                (pl.lit(prefix) + letter).alias("carrier"),
                (rank + offset).cast(raw.schema["flight"]).alias("flight"),
            )
        )
    return pl.concat(frames)


def timed(samples: dict[str, list[float]], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    result = fn()
    samples.setdefault(name, []).append(time.perf_counter() - t)
    return result


def partition_bytes(store: Any, pin: Any) -> int:
    from urllib.parse import unquote

    return sum((Path(store.table_uri(pin.table)) / unquote(f)).stat().st_size for f in pin.files)


def rows_part(work: Path, scales: list[int], repeats: int) -> dict[str, Any]:
    import polars as pl

    from ml_platform.lib.features.transforms import MAX_WINDOW_DAYS
    from ml_platform.lib.ingest.sources import NycFlights13Source, with_source_columns
    from ml_platform.lib.validation.derive import derive_weather_columns
    from ml_platform.lib.validation.quarantine import validate_day
    from ml_platform.lib.validation.schemas import WeatherSchema

    source = NycFlights13Source()
    window = [SCALE_DAY - timedelta(days=i) for i in range(MAX_WINDOW_DAYS, -1, -1)]  # D-28 .. D
    raw_days = {d: source.read_day("flights", d) for d in window}
    weather_parts = []
    for d in (SCALE_DAY - timedelta(days=1), SCALE_DAY):
        w = with_source_columns(source.read_day("weather", d), datetime.now(UTC))
        weather_parts.append(derive_weather_columns(validate_day(w, WeatherSchema, d, "weather").valid))
    weather = pl.concat(weather_parts, how="diagonal_relaxed")
    out: dict[str, Any] = {
        "day": SCALE_DAY.isoformat(),
        "window_days": len(window),
        "weather_rows": weather.height,
    }
    for scale in scales:
        t_scale = time.perf_counter()
        result = measure_scale(work / f"rows-x{scale}", scale, repeats, window, raw_days, weather)
        result["wall_s"] = round(time.perf_counter() - t_scale, 1)
        # the process's peak so far: the scales run in increasing order, so this is the largest's
        result["peak_rss_mib_so_far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        out[f"x{scale}"] = result
        log(
            f"  x{scale}: {result['rows']} rows (quarantined {result['quarantined_rows']}), window"
            f" {result['window_rows']} rows; median s: {json.dumps(result['median_s'])}; partition bytes"
            f" {json.dumps(result['partition_bytes'])}, peak RSS {result['peak_rss_mib_so_far']} MiB"
            f" ({result['wall_s']}s)"
        )
        shutil.rmtree(work / f"rows-x{scale}", ignore_errors=True)
    out["slopes"] = slopes(out, scales)
    out["config_scales"] = scales
    return out


def measure_scale(
    root: Path, scale: int, repeats: int, window: list[date], raw_days: dict[date, Any], weather: Any
) -> dict[str, Any]:
    """One scale of the rows part: each phase ``repeats`` times, then the window's pinned read."""
    import polars as pl

    from ml_platform.lib.features.transforms import build_flight_features, feature_invariants
    from ml_platform.lib.hashing import content_hash
    from ml_platform.lib.ingest.contracts import INGESTED_AT_COLUMN
    from ml_platform.lib.ingest.sources import RawDay, conform, with_source_columns
    from ml_platform.lib.monitoring import profiles
    from ml_platform.lib.storage import DeltaPartitionStore
    from ml_platform.lib.validation.derive import derive_flight_columns
    from ml_platform.lib.validation.quarantine import enforce_threshold, validate_day
    from ml_platform.lib.validation.schemas import FlightsSchema

    store = DeltaPartitionStore(root)
    partition = SCALE_DAY.isoformat()
    day = raw_days[SCALE_DAY]
    scaled_raw = scale_flights(day.frame, scale)
    history = []
    for d in window[:-1]:
        prior = RawDay(scale_flights(raw_days[d].frame, scale), day.source_file, day.source_sha256)
        history.append(
            derive_flight_columns(with_source_columns(prior, datetime.now(UTC))).drop(INGESTED_AT_COLUMN)
        )

    def ingest() -> Any:
        conformed = conform(scaled_raw, "flights", partition, day.source_file)
        return with_source_columns(RawDay(conformed, day.source_file, day.source_sha256), datetime.now(UTC))

    def validate(raw: Any) -> Any:
        outcome = validate_day(raw, FlightsSchema, SCALE_DAY, "validated_flights")
        enforce_threshold(outcome, 0.05, "validated_flights", partition)
        return outcome, derive_flight_columns(outcome.valid).drop(INGESTED_AT_COLUMN, strict=False)

    def features_of(flights: Any, valid: Any) -> Any:
        frame = build_flight_features(SCALE_DAY, flights, weather)
        failed = [o.name for o in feature_invariants(frame, valid) if not o.passed]
        if failed:
            raise RuntimeError(f"x{scale}: feature invariants failed: {failed}")
        return frame

    samples: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    quarantined, features, valid = 0, None, None
    # untimed: the tables' first commits (creating a table costs more than a write) and the whylogs
    # import of the first profile
    warm = validate(ingest())[1]
    for table, frame in (("raw_flights", ingest()), ("validated_flights", warm)):
        store.write_partition(table, "warm-up", frame)
    warm_features = features_of(pl.concat([*history, warm], how="diagonal_relaxed"), warm)
    store.write_partition("flight_features", "warm-up", warm_features)
    profiles.profile_frame(profiles.with_route(warm_features.head(10)), SCALE_DAY)
    for r in range(repeats):
        key = f"{partition}-r{r}"
        raw = timed(samples, "ingest_conform", ingest)
        outcome, valid = timed(samples, "validate_derive", functools.partial(validate, raw))
        quarantined = outcome.quarantined.height
        flights = pl.concat([*history, valid], how="diagonal_relaxed")
        features = timed(samples, "features", functools.partial(features_of, flights, valid))
        routed = profiles.with_route(features)
        kinds = profiles.profiled_columns(routed)
        view = timed(samples, "profile", functools.partial(profiles.profile_frame, routed, SCALE_DAY, kinds))
        sizes["feature_profile_serialized"] = len(profiles.serialize(view))
        framed = store.with_partition("flight_features", key, features)
        timed(samples, "content_hash_features", functools.partial(content_hash, framed))
        for table, frame in (
            ("raw_flights", raw),
            ("validated_flights", valid),
            ("flight_features", features),
        ):
            pin = timed(
                samples, f"write_{table}", functools.partial(store.write_partition, table, key, frame)
            )
            sizes[table] = partition_bytes(store, pin)
    hour = None
    if scale >= 24 and valid is not None:
        # an hourly feature partition: one hour's flights (the hour nearest the day's mean per hour)
        # against the same 28 days of history
        counts = valid.group_by("hour").len()
        hour = counts.sort((pl.col("len") - valid.height / 24).abs()).row(0, named=True)
        one_hour = valid.filter(pl.col("hour") == hour["hour"])
        flights = pl.concat([*history, one_hour], how="diagonal_relaxed")
        for _ in range(repeats):
            timed(samples, "features_one_hour", functools.partial(features_of, flights, one_hour))
    # the pinned, hash-verified read of the window, as the feature step reads its upstream days
    pins = [
        store.write_partition("window", d.isoformat(), frame)
        for d, frame in zip(window, [*history, valid], strict=True)
    ]
    for _ in range(repeats):
        timed(samples, "pinned_read_window", functools.partial(store.read, pins))
    rows = scaled_raw.height
    return {
        "rows": rows,
        "quarantined_rows": quarantined,
        "feature_rows": features.height if features is not None else 0,
        "window_rows": sum(p.row_count for p in pins),
        "window_partitions": len(pins),
        "one_hour": hour,
        "median_s": {k: median(v) for k, v in samples.items()},
        "samples_s": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        "partition_bytes": sizes,
        "bytes_per_row": {t: round(b / rows, 1) for t, b in sizes.items() if not t.endswith("_serialized")},
    }


def slopes(out: dict[str, Any], scales: list[int]) -> dict[str, dict[str, float]]:
    """Per phase: seconds at the smallest and largest scale, and the marginal microseconds per row
    between the two largest scales (the window read counts the window's rows)."""
    if len(scales) < 2:
        return {}
    ordered = sorted(scales)
    low, prev, high = (out[f"x{s}"] for s in (ordered[0], ordered[-2], ordered[-1]))
    fits = {}
    for phase in low["median_s"]:
        if phase not in prev["median_s"] or phase not in high["median_s"]:
            continue
        rows = "window_rows" if phase == "pinned_read_window" else "rows"
        marginal = (high["median_s"][phase] - prev["median_s"][phase]) / (high[rows] - prev[rows])
        fits[phase] = {
            "s_at_min": low["median_s"][phase],
            "s_at_max": high["median_s"][phase],
            "marginal_us_per_row": round(marginal * 1e6, 3),
            "us_per_row_at_max": round(high["median_s"][phase] / high[rows] * 1e6, 3),
        }
    return fits


# --------------------------------------------------------------------------------------------------
# Part 3: one table, partition after partition
# --------------------------------------------------------------------------------------------------


def growth_part(work: Path, partitions: int, every: int = 50) -> dict[str, Any]:
    from deltalake import DeltaTable

    from ml_platform.lib.ingest.sources import NycFlights13Source, RawDay, with_source_columns
    from ml_platform.lib.storage import DeltaPartitionStore

    day = NycFlights13Source().read_day("flights", SCALE_DAY)
    frame = with_source_columns(
        RawDay(scale_flights(day.frame, 4), day.source_file, day.source_sha256), datetime.now(UTC)
    )
    store = DeltaPartitionStore(work / "growth")
    start = datetime(2013, 1, 1)
    writes: list[float] = []
    marks = []
    pins = []
    t0 = time.perf_counter()
    for i in range(partitions):
        key = (start + timedelta(hours=i)).strftime("%Y-%m-%d-%H:%M")  # Dagster's hourly key format
        t = time.perf_counter()
        pins.append(store.write_partition("hourly", key, frame))
        writes.append(time.perf_counter() - t)
        if (i + 1) % every == 0 or i + 1 == partitions:
            uri = store.table_uri("hourly")
            t = time.perf_counter()
            dt = DeltaTable(uri)
            open_s = time.perf_counter() - t
            t = time.perf_counter()
            dt.get_add_actions(flatten=True)
            actions_s = time.perf_counter() - t
            log_dir = Path(uri) / "_delta_log"
            checkpoints = sorted(log_dir.glob("*.checkpoint.parquet"))
            marks.append(
                {
                    "partitions": i + 1,
                    "write_s_median_last": median(writes[-every:]),
                    "open_s": round(open_s, 4),
                    "add_actions_s": round(actions_s, 4),
                    "checkpoint_bytes": checkpoints[-1].stat().st_size if checkpoints else 0,
                    "log_json_files": len(list(log_dir.glob("*.json"))),
                }
            )
            log(f"  growth: {json.dumps(marks[-1])} ({time.perf_counter() - t0:.0f}s)")
    # what an hourly flight_features partition reads: the 28 days (672 hours) before it and its own
    window = pins[-(HOURLY_WINDOW + 1) :]
    reads = []
    for _ in range(2):
        t = time.perf_counter()
        store.read(window)
        reads.append(time.perf_counter() - t)
    read = {"pins": len(window), "rows": sum(p.row_count for p in window), "s": [round(x, 3) for x in reads]}
    log(f"  growth: pinned read of the last {len(window)} partitions: {json.dumps(read)}")
    shutil.rmtree(work / "growth", ignore_errors=True)
    return {"rows_per_partition": frame.height, "partitions": partitions, "marks": marks, "window_read": read}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def environment(snapshot: bool) -> dict[str, Any]:
    return common_environment(
        snapshot,
        ("dagster", "dagster-postgres", "deltalake", "polars", "pandera", "mlflow", "optuna", "torch"),
    )


def summary_text(report: dict[str, Any]) -> str:
    lines = [f"scale inputs, {report['date']}, wall {report.get('wall_s')} s"]
    pg = report.get("postgres")
    if pg:
        for job, p in pg["plan"].items():
            lines.append(f"{job}: {p['steps']} steps -> {p['pods_per_run']} pods per one-partition run")
        for name, ph in pg["phases"].items():
            g = ph["growth"]["instance"]["(all tables)"]
            n = ph["partitions"]
            lines.append(
                f"{name}: {ph['runs']} runs, {n} partitions, success={ph['success']}: event_logs"
                f" {ph['events']['rows'] / n:.0f} rows and {ph['events']['stored_bytes'] / n / 1024:.1f} KiB"
                f" stored per partition; instance DB +{g['rows'] / n:.0f} rows,"
                f" +{g['total_bytes'] / n / 1024:.0f} KiB per partition (with indexes)"
            )
    rows = report.get("rows")
    if rows:
        low, high = min(rows["config_scales"]), max(rows["config_scales"])
        for phase, fit in rows["slopes"].items():
            lines.append(
                f"{phase}: {fit['s_at_min']:.4f} s at x{low}, {fit['s_at_max']:.4f} s at x{high};"
                f" marginal {fit['marginal_us_per_row']:.2f} us/row"
            )
    grow = report.get("growth")
    if grow and grow["marks"]:
        first, last = grow["marks"][0], grow["marks"][-1]
        lines.append(
            f"growth: write {first['write_s_median_last']:.3f} s at {first['partitions']} partitions,"
            f" {last['write_s_median_last']:.3f} s at {last['partitions']}; checkpoint"
            f" {last['checkpoint_bytes']} bytes"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument(
        "--days", type=int, default=3, help="days run one partition per run (data, monitoring)"
    )
    parser.add_argument("--scales", default="1,4,10,100", help="multiples of a day's flights (rows part)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per scale (median)")
    parser.add_argument(
        "--growth-partitions", type=int, default=1000, help="partitions the growth part writes"
    )
    parser.add_argument("--snapshot", action="store_true", help="run HEAD's ml_platform (git archive)")
    parser.add_argument("--workdir", help="where stores go (default: temp, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/scale_inputs-<date>.json)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(parts) - set(PARTS):
        sys.exit(f"unknown part(s) {sorted(set(parts) - set(PARTS))}; choose from {', '.join(PARTS)}")
    scales = sorted({int(x) for x in args.scales.split(",") if x.strip()})

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlp-scale-inputs-"))
    work.mkdir(parents=True, exist_ok=True)
    # the step processes of the multiprocess executor import this module (job_for) and ml_platform
    paths = [str(Path(__file__).resolve().parent), str(REPO)]
    if args.snapshot:
        # HEAD's ml_platform (git archive), and this script as it started: the checkout may be edited
        # while this runs, and the step processes import both
        src = work / "src"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "ml_platform"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        for script in (Path(__file__), Path(__file__).with_name("common.py")):
            shutil.copy(script, src / script.name)
        paths.insert(0, str(src))
    for p in reversed(paths):
        sys.path.insert(0, p)
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])

    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    digest_start = code_digest(imported_package_dir())
    env = environment(args.snapshot)
    env["code_digest"] = digest_start
    log(f"scale inputs: parts {parts}, workdir {work}\n{json.dumps(env)}")
    report: dict[str, Any] = {
        "benchmark": "scale_inputs",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "loadavg_start": loadavg(),
        "config": {"parts": parts, "days": args.days, "scales": scales, "repeats": args.repeats,
                   "growth_partitions": args.growth_partitions},
    }  # fmt: skip
    t0 = time.perf_counter()
    if "postgres" in parts:
        t = time.perf_counter()
        log("\n=== postgres: the production instance, one phase after another ===")
        report["postgres"] = postgres_part(work / "pg", args, env["git_head"])
        report["postgres"]["wall_s"] = round(time.perf_counter() - t, 1)
        report["loadavg_after_postgres"] = loadavg()
    if "rows" in parts:
        t = time.perf_counter()
        log(f"\n=== rows: library functions at {scales} x a day's flights ===")
        report["rows"] = rows_part(work, scales, args.repeats)
        report["rows"]["wall_s"] = round(time.perf_counter() - t, 1)
        report["loadavg_after_rows"] = loadavg()
    if "growth" in parts:
        t = time.perf_counter()
        log(f"\n=== growth: one table, {args.growth_partitions} hourly partitions ===")
        report["growth"] = growth_part(work, args.growth_partitions)
        report["growth"]["wall_s"] = round(time.perf_counter() - t, 1)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    finish_report(
        report,
        digest_start,
        Path(args.out or REPO / "benchmarks" / "results" / f"scale_inputs-{report['date']}.json"),
        summary_text,
        remove=None if args.workdir or args.keep else work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
