"""Both online stores for the tests: the embedded sqlite file and the local Redis server.

Redis is one of this project's local CI services (like PostgreSQL): ``MLP_TEST_REDIS`` names it
(default ``redis://127.0.0.1:6379/0``). A test that needs it and cannot reach it FAILS, saying so;
it is not skipped. Each test writes under its own key namespace and deletes it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ml_platform.lib.online import EmbeddedOnlineStore, RedisOnlineStore

STORE_KINDS = ("embedded", "redis")
#: Both kinds as parameters; the Redis one is marked ``integration`` (a local service).
STORE_PARAMS = (pytest.param("embedded"), pytest.param("redis", marks=pytest.mark.integration))


def redis_url() -> str:
    """The test Redis server."""
    return os.environ.get("MLP_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require_redis(store: RedisOnlineStore) -> None:
    """Fail (not skip) when the test Redis server is unreachable."""
    import redis

    try:
        store._client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"no Redis server at {store.describe()} ({exc}). The online store tests need the local"
            " Redis of this project's CI services: start it (redis-server) or point MLP_TEST_REDIS"
            " at one."
        )


def drop_namespace(store: RedisOnlineStore) -> None:
    """Delete every key of the store's namespace."""
    client = store._client
    keys = list(client.scan_iter(match=f"{store.namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[[str], EmbeddedOnlineStore | RedisOnlineStore]]:
    """``make_store(kind)``: a fresh, empty store of that kind (closed and cleaned up afterwards)."""
    made: list[EmbeddedOnlineStore | RedisOnlineStore] = []

    def make(kind: str) -> EmbeddedOnlineStore | RedisOnlineStore:
        store: EmbeddedOnlineStore | RedisOnlineStore
        if kind == "embedded":
            store = EmbeddedOnlineStore(tmp_path / f"online-{len(made)}" / "features.sqlite")
        else:
            store = RedisOnlineStore(redis_url(), namespace=f"mlptest:{uuid.uuid4().hex}")
            require_redis(store)
        made.append(store)
        return store

    yield make
    for store in made:
        if isinstance(store, RedisOnlineStore):
            drop_namespace(store)
        store.close()


@pytest.fixture(params=STORE_PARAMS)
def store(request: pytest.FixtureRequest, make_store: Callable[[str], object]) -> object:
    """Each kind of store, fresh and empty."""
    return make_store(request.param)
