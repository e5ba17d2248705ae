"""Online stores: Redis in production, an embedded sqlite file by default. Same semantics.

A store holds one :class:`~ml_platform.lib.online.snapshot.OnlineSnapshot`, the newest day written:

* ``write`` replaces the whole snapshot in one transaction (Redis ``MULTI``/``EXEC`` under
  ``WATCH``, sqlite ``BEGIN IMMEDIATE``), so a reader sees the old snapshot or the new one, never a
  mix. A snapshot of a day *older* than the one held is not written (a backfill of past days must
  not roll serving back); the same day replaces it.
* ``lookup`` answers a batch of requests in one round trip (Redis: one ``MULTI``/``EXEC`` pipeline;
  sqlite: one read transaction), so the whole batch is answered from one snapshot too.
  ``lookup_served`` also says which: the snapshot's day, cutoff, content hash and write time, read
  in that same transaction (what a prediction-log line records, and ``mlp lineage`` follows).

Redis layout, under a namespace (default ``mlp``):

* ``<ns>:meta``: hash with the snapshot's ``day``, ``as_of_us`` (cutoff, epoch microseconds),
  ``content_hash``, ``keys`` (JSON: keys per kind), ``observations``, ``written_at_us`` and
  ``layout`` (the packing below; a reader refuses another one);
* ``<ns>:agg:<kind>:<key>``: a string per aggregate key (``<ns>:agg:route:EWR-ORD``), the six
  aggregates of :data:`~ml_platform.lib.online.snapshot.FIELDS` packed ``flights_7d|delay_mean_7d|
  ...`` (``repr`` of each float, exact; empty for null). Strings, not hashes: a batch reads every
  key with one ``MGET``, where a hash per key costs an ``HMGET`` each, and redis-py's pure-Python
  packing and parsing per command is most of a lookup's time (benchmarks/online_lookup.py);
* ``<ns>:wx:<origin>``: sorted set of the origin's observations, scored by ``observed_at`` in epoch
  microseconds (exact in a double), member ``<observed_us>|temp|dewp|...`` packed the same way. A
  batch reads, per origin, the observations from its earliest departure minus the tolerance to its
  latest departure (one ``ZRANGEBYSCORE``), and picks each request's as-of match by bisection;
* ``<ns>:keys``: set of every key the snapshot wrote, so the next write deletes the ones it drops.

A lookup is one ``MULTI``/``EXEC`` of at most 2 + origins commands, whatever the batch size.

The sqlite file has the same three parts as tables (``snapshot``, ``aggregates``: one row per
(kind, key) with a column per field, ``weather``: one row per (origin, observed_us)), in WAL mode,
one connection per thread; a lookup is one read transaction of a query per kind and per origin.
sqlite stores a float NaN as NULL (Redis keeps it). The features hold no NaN (polars' mean of
nothing is null, the weather's missing values are nulls), and the model treats both as missing.

``redis`` is imported when a Redis store is opened, never by importing this module.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote, urlsplit

import polars as pl

from ml_platform.lib.features.transforms import WEATHER_COLUMNS
from ml_platform.lib.online.features import (
    Found,
    Observation,
    RequestBatch,
    ServedFeatures,
    Values,
    as_of_index,
    assemble_features,
)
from ml_platform.lib.online.snapshot import (
    COUNT_FIELDS,
    FIELDS,
    KINDS,
    OnlineSnapshot,
    SnapshotInfo,
    SnapshotRef,
    epoch_us,
    from_epoch_us,
)

DEFAULT_NAMESPACE: Final = "mlp"


class OnlineStoreError(RuntimeError):
    """The online store cannot answer: unreachable, no snapshot, a failed write. Names store and key."""


class OnlineStore(Protocol):
    """What the asset writes through and the service reads through."""

    def write(self, snapshot: OnlineSnapshot) -> None:
        """Replace the held snapshot with ``snapshot`` atomically (unless a newer day is held)."""
        ...

    def lookup(self, requests: pl.DataFrame) -> pl.DataFrame:
        """The online features of each request, one row per request in the same order.

        Columns :data:`~ml_platform.lib.online.features.FEATURE_COLUMNS`: what
        :func:`~ml_platform.lib.online.features.online_features` returns (it calls this).

        Raises:
            InvalidRequest: a request column is missing, null or of the wrong type.
            OnlineStoreError: the store is unreachable or holds no snapshot.
        """
        ...

    def lookup_served(self, requests: pl.DataFrame) -> ServedFeatures:
        """:meth:`lookup`'s features and the snapshot that answered them, read in the same
        transaction (a write in between cannot make the two disagree)."""
        ...

    def describe(self) -> str:
        """Where the store is, for logs and metadata (never a password)."""
        ...

    def info(self) -> SnapshotInfo | None:
        """The held snapshot's day, cutoff, counts and hash; None when the store is empty."""
        ...


def open_online_store(
    url: str | None, embedded_path: Path, *, namespace: str = DEFAULT_NAMESPACE
) -> RedisOnlineStore | EmbeddedOnlineStore:
    """``redis://`` / ``rediss://`` -> :class:`RedisOnlineStore`; None -> the embedded sqlite file.

    Raises:
        OnlineStoreError: for any other URL scheme.
    """
    if not url:
        return EmbeddedOnlineStore(embedded_path)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisOnlineStore(url, namespace=namespace)
    raise OnlineStoreError(
        f"online store URL {redact_url(url)}: scheme {scheme!r} is not supported (redis://, rediss://,"
        " or unset for the embedded store)"
    )


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


# -- shared ---------------------------------------------------------------------------------------


def _departures_by_origin(batch: RequestBatch) -> dict[str, list[int]]:
    wanted: dict[str, list[int]] = {}
    for origin, departure in batch.unique_departures():
        wanted.setdefault(origin, []).append(departure)
    return wanted


def _info(fields: dict[str, str]) -> SnapshotInfo:
    return SnapshotInfo(
        day=date.fromisoformat(fields["day"]),
        aggregates_as_of=from_epoch_us(int(fields["as_of_us"])),
        keys=json.loads(fields["keys"]),
        observations=int(fields["observations"]),
        content_hash=fields["content_hash"],
        written_at=from_epoch_us(int(fields["written_at_us"])),
    )


def _ref(
    day: str | bytes, as_of_us: str | bytes | int, content_hash: str | bytes, written_at_us: str | bytes | int
) -> SnapshotRef:
    """The :class:`SnapshotRef` of a held snapshot's stored fields (Redis bytes or sqlite values)."""
    text = [v.decode() if isinstance(v, bytes) else v for v in (day, content_hash)]
    return SnapshotRef(
        day=date.fromisoformat(text[0]),
        aggregates_as_of=from_epoch_us(int(as_of_us)),
        content_hash=text[1],
        written_at=from_epoch_us(int(written_at_us)),
    )


def _meta(snapshot: OnlineSnapshot) -> dict[str, str]:
    return {
        "day": snapshot.day.isoformat(),
        "as_of_us": str(epoch_us(snapshot.aggregates_as_of)),
        "content_hash": snapshot.content_hash(),
        "keys": json.dumps(snapshot.key_counts(), sort_keys=True),
        "observations": str(snapshot.observations),
        "written_at_us": str(epoch_us(datetime.now(UTC))),
    }


# -- Redis ----------------------------------------------------------------------------------------


#: How values are packed; recorded in the meta hash so a reader never misreads another layout.
LAYOUT: Final = "v1:" + ",".join(FIELDS) + ";" + ",".join(WEATHER_COLUMNS)


def _pack(values: Sequence[int | float | None]) -> str:
    """Values joined by ``|``: ``repr`` of each (exact for floats), empty for null."""
    return "|".join("" if v is None else repr(v) for v in values)


def _unpack_aggregates(raw: bytes) -> Values:
    return tuple(
        None if not v else (int(v) if count else float(v))
        for v, count in zip(raw.split(b"|"), _COUNT_MASK, strict=True)
    )


_COUNT_MASK: Final = tuple(f in COUNT_FIELDS for f in FIELDS)


def _redis_observations(members: list[bytes], departures: list[int]) -> dict[int, Observation | None]:
    """Each departure's observation among one origin's members (ascending), parsing only those used."""
    times = [int(m[: m.index(b"|")]) for m in members]
    found: dict[int, Observation | None] = {}
    for departure in departures:
        index = as_of_index(times, departure)
        if index is None:
            found[departure] = None
        else:
            observed, *values = members[index].split(b"|")
            found[departure] = (int(observed), tuple(float(v) if v else None for v in values))
    return found


class RedisOnlineStore:
    """The production store: a Redis server, keys under ``<namespace>:``."""

    def __init__(self, url: str, *, namespace: str = DEFAULT_NAMESPACE, timeout_s: float = 2.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.namespace = namespace
        self._password = urlsplit(url).password
        self._redis = redis
        try:
            # one retry without backoff: a pooled connection the server closed is reopened at once,
            # and a store that is down fails within the timeout instead of backing off for seconds
            self._client: Any = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise OnlineStoreError(
                f"online store {self.describe()}: invalid URL: {self._scrub(exc)}"
            ) from exc
        self.meta_key = f"{namespace}:meta"
        self.index_key = f"{namespace}:keys"

    def agg_key(self, kind: str, key: str) -> str:
        """The string of one aggregate key, e.g. ``mlp:agg:route:EWR-ORD``."""
        return f"{self.namespace}:agg:{kind}:{key}"

    def weather_key(self, origin: str) -> str:
        """The sorted set of one origin's observations, e.g. ``mlp:wx:EWR``."""
        return f"{self.namespace}:wx:{origin}"

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
        db = parts.path.lstrip("/") or "0"
        auth = ""
        if parts.password is not None:
            auth = f"{unquote(parts.username or '')}:***@"
        elif parts.username:
            auth = f"{unquote(parts.username)}@"
        return f"{parts.scheme}://{auth}{host}:{port}/{db} (namespace {self.namespace})"

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._password, "***") if self._password else text

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except self._redis.RedisError as exc:
            raise OnlineStoreError(
                f"online store {self.describe()}: {action} ({key}) failed: {self._scrub(exc)}"
            ) from exc

    def write(self, snapshot: OnlineSnapshot) -> None:
        aggregates = {
            self.agg_key(kind, key): _pack(values)
            for kind in KINDS
            for key, values in snapshot.aggregate_records(kind)
        }
        weather: dict[str, dict[str, int]] = {}
        for origin, observed, values in snapshot.weather_records():
            weather.setdefault(self.weather_key(origin), {})[_pack((observed, *values))] = observed
        written = [*aggregates, *weather]
        meta = {**_meta(snapshot), "layout": LAYOUT}
        with self._errors("write", self.meta_key), self._client.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    pipe.watch(self.meta_key, self.index_key)
                    held = pipe.hget(self.meta_key, "day")
                    if held is not None and date.fromisoformat(held.decode()) > snapshot.day:
                        pipe.unwatch()
                        return  # a newer day is held: serving never goes back
                    stale = {k.decode() for k in pipe.smembers(self.index_key)}
                    pipe.multi()
                    pipe.delete(self.meta_key, self.index_key, *stale, *written)
                    if aggregates:
                        pipe.mset(aggregates)
                    for key, scores in weather.items():
                        pipe.zadd(key, scores)
                    if written:
                        pipe.sadd(self.index_key, *written)
                    pipe.hset(self.meta_key, mapping=meta)
                    pipe.execute()
                    return
                except self._redis.WatchError:
                    continue  # another writer committed in between: look again
        raise OnlineStoreError(
            f"online store {self.describe()}: write ({self.meta_key}) kept conflicting with other writers"
        )

    def lookup(self, requests: pl.DataFrame) -> pl.DataFrame:
        return self.lookup_served(requests).features

    def lookup_served(self, requests: pl.DataFrame) -> ServedFeatures:
        batch = RequestBatch.of(requests)
        keys = [(kind, key) for kind in KINDS for key in batch.unique_keys(kind)]
        spans = batch.departure_spans()
        # one MULTI/EXEC round trip: the meta, every aggregate key (one MGET), and per origin the
        # observations that can precede one of its departures within the tolerance
        pipe = self._client.pipeline(transaction=True)
        pipe.hmget(self.meta_key, ["day", "as_of_us", "layout", "content_hash", "written_at_us"])
        if keys:
            pipe.mget([self.agg_key(kind, key) for kind, key in keys])
        for origin, (low, high) in spans.items():
            pipe.zrangebyscore(self.weather_key(origin), low, f"({high}")
        with self._errors("lookup", f"{self.meta_key} and {len(keys) + len(spans)} keys"):
            replies = pipe.execute()
        (day, as_of, layout, content_hash, written_at), *rest = replies
        if day is None:
            raise OnlineStoreError(
                f"online store {self.describe()}: no snapshot ({self.meta_key} is missing);"
                " materialize online_features"
            )
        if layout is None or layout.decode() != LAYOUT or content_hash is None or written_at is None:
            raise OnlineStoreError(
                f"online store {self.describe()}: the snapshot in {self.meta_key} was written with another"
                " layout (another version of ml_platform); rematerialize online_features"
            )
        aggregates: dict[str, dict[str, Values | None]] = {kind: {} for kind in KINDS}
        for (kind, key), raw in zip(keys, rest.pop(0) if keys else [], strict=True):
            aggregates[kind][key] = None if raw is None else _unpack_aggregates(raw)
        weather: dict[tuple[str, int], Observation | None] = {}
        wanted = _departures_by_origin(batch)
        for origin, members in zip(spans, rest, strict=True):
            for departure, observation in _redis_observations(members, wanted[origin]).items():
                weather[(origin, departure)] = observation
        return ServedFeatures(
            assemble_features(batch, Found(int(as_of), aggregates, weather)),
            _ref(day, as_of, content_hash, written_at),
        )

    def info(self) -> SnapshotInfo | None:
        with self._errors("info", self.meta_key):
            fields = self._client.hgetall(self.meta_key)
        if not fields:
            return None
        return _info({k.decode(): v.decode() for k, v in fields.items()})

    def clear(self) -> None:
        """Delete the snapshot (every key of the namespace the store wrote)."""
        with self._errors("clear", self.index_key):
            keys = [k.decode() for k in self._client.smembers(self.index_key)]
            self._client.delete(self.meta_key, self.index_key, *keys)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


# -- embedded sqlite ------------------------------------------------------------------------------

#: The three tables, dropped and created again by every write (in its transaction): a write
#: replaces the file's whole content, whatever layout an earlier version of the code left there.
_TABLES: Final = {
    "snapshot": """CREATE TABLE snapshot (
        id INTEGER PRIMARY KEY CHECK (id = 1), day TEXT NOT NULL, as_of_us INTEGER NOT NULL,
        content_hash TEXT NOT NULL, keys TEXT NOT NULL, observations INTEGER NOT NULL,
        written_at_us INTEGER NOT NULL, layout TEXT NOT NULL)""",
    "aggregates": f"""CREATE TABLE aggregates (
        kind TEXT NOT NULL, key TEXT NOT NULL,
        {", ".join(f"{f} {'INTEGER' if f in COUNT_FIELDS else 'REAL'}" for f in FIELDS)},
        PRIMARY KEY (kind, key)) WITHOUT ROWID""",
    "weather": f"""CREATE TABLE weather (
        origin TEXT NOT NULL, observed_us INTEGER NOT NULL,
        {", ".join(f"{c} REAL" for c in WEATHER_COLUMNS)},
        PRIMARY KEY (origin, observed_us)) WITHOUT ROWID""",
}
_INFO_COLUMNS: Final = ("day", "as_of_us", "content_hash", "keys", "observations", "written_at_us")
_SELECT_AGG = f"SELECT key, {', '.join(FIELDS)} FROM aggregates WHERE kind = ? AND key IN "
_SELECT_WEATHER = (
    f"SELECT observed_us, {', '.join(WEATHER_COLUMNS)} FROM weather"
    " WHERE origin = ? AND observed_us >= ? AND observed_us < ? ORDER BY observed_us"
)


def _snapshot_row(conn: sqlite3.Connection, columns: str) -> tuple[Any, ...] | None:
    """The snapshot table's row (``columns``), None when the file holds no snapshot."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshot'").fetchone()
    if exists is None:
        return None
    row: tuple[Any, ...] | None = conn.execute(f"SELECT {columns} FROM snapshot WHERE id = 1").fetchone()
    return row


def _held_day(conn: sqlite3.Connection) -> date | None:
    row = _snapshot_row(conn, "day")
    return None if row is None else date.fromisoformat(row[0])


class EmbeddedOnlineStore:
    """The embedded default: one sqlite file (WAL), no server. One connection per thread."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.path)

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if not self.path.exists():
            if not create:
                raise OnlineStoreError(
                    f"online store {self.describe()}: no snapshot (the file does not exist);"
                    " materialize online_features"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"online store {self.describe()}: cannot open: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def write(self, snapshot: OnlineSnapshot) -> None:
        conn = self._connect(create=True)
        marks = ", ".join("?" * (2 + len(FIELDS)))
        weather_marks = ", ".join("?" * (2 + len(WEATHER_COLUMNS)))
        meta = _meta(snapshot)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                held = _held_day(conn)
                if held is not None and held > snapshot.day:
                    conn.execute("ROLLBACK")
                    return  # a newer day is held: serving never goes back
                for table, create in _TABLES.items():
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                    conn.execute(create)
                conn.executemany(
                    f"INSERT INTO aggregates VALUES ({marks})",
                    [
                        (kind, key, *values)
                        for kind in KINDS
                        for key, values in snapshot.aggregate_records(kind)
                    ],
                )
                conn.executemany(
                    f"INSERT INTO weather VALUES ({weather_marks})",
                    [(origin, observed, *values) for origin, observed, values in snapshot.weather_records()],
                )
                conn.execute(
                    "INSERT INTO snapshot VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        meta["day"],
                        int(meta["as_of_us"]),
                        meta["content_hash"],
                        meta["keys"],
                        int(meta["observations"]),
                        int(meta["written_at_us"]),
                        LAYOUT,
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"online store {self.describe()}: write (snapshot) failed: {exc}") from exc

    def lookup(self, requests: pl.DataFrame) -> pl.DataFrame:
        return self.lookup_served(requests).features

    def lookup_served(self, requests: pl.DataFrame) -> ServedFeatures:
        batch = RequestBatch.of(requests)
        conn = self._connect(create=False)
        try:
            conn.execute("BEGIN")  # one read transaction: the whole batch sees one snapshot
            try:
                meta = _snapshot_row(conn, "as_of_us, layout, day, content_hash, written_at_us")
                if meta is None:
                    raise OnlineStoreError(
                        f"online store {self.describe()}: no snapshot (table snapshot is empty or"
                        " missing); materialize online_features"
                    )
                if meta[1] != LAYOUT:
                    raise OnlineStoreError(
                        f"online store {self.describe()}: the snapshot was written with another layout"
                        " (another version of ml_platform); rematerialize online_features"
                    )
                aggregates: dict[str, dict[str, Values | None]] = {}
                for kind in KINDS:
                    keys = batch.unique_keys(kind)
                    if not keys:
                        aggregates[kind] = {}
                        continue
                    rows = conn.execute(
                        _SELECT_AGG + f"({', '.join('?' * len(keys))})", (kind, *keys)
                    ).fetchall()
                    table: dict[str, Values | None] = dict.fromkeys(keys)
                    for row in rows:
                        table[row[0]] = tuple(row[1:])
                    aggregates[kind] = table
                weather: dict[tuple[str, int], Observation | None] = {}
                wanted = _departures_by_origin(batch)
                for origin, (low, high) in batch.departure_spans().items():
                    rows = conn.execute(_SELECT_WEATHER, (origin, low, high)).fetchall()
                    times = [row[0] for row in rows]
                    for departure in wanted[origin]:
                        index = as_of_index(times, departure)
                        weather[(origin, departure)] = (
                            None if index is None else (rows[index][0], tuple(rows[index][1:]))
                        )
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OnlineStoreError(
                f"online store {self.describe()}: lookup (snapshot) failed: {exc}"
            ) from exc
        return ServedFeatures(
            assemble_features(batch, Found(int(meta[0]), aggregates, weather)),
            _ref(meta[2], meta[0], meta[3], meta[4]),
        )

    def info(self) -> SnapshotInfo | None:
        if not self.path.exists():
            return None
        conn = self._connect(create=False)
        try:
            row = _snapshot_row(conn, ", ".join(_INFO_COLUMNS))
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"online store {self.describe()}: info (snapshot) failed: {exc}") from exc
        if row is None:
            return None
        return _info({n: str(v) for n, v in zip(_INFO_COLUMNS, row, strict=True)})

    def clear(self) -> None:
        """Delete the snapshot."""
        conn = self._connect(create=True)
        conn.execute("BEGIN IMMEDIATE")
        for table in _TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
