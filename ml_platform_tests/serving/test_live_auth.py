"""A second live server: API token on, the model taken from the MLflow registry's alias, Redis features.

This server starts without ``MLP_SERVING_MODEL_TAG``: it resolves ``delay_model@champion`` in the
test registry and packages it itself, as a pod of the Kubernetes manifests does. Its online store
is the Redis on 127.0.0.1:6379 under a namespace of its own when one answers (the module's Redis
tests are skipped otherwise, and the server reads the embedded store).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ml_platform.lib.monitoring import metrics as m
from ml_platform.lib.online import build_snapshot
from ml_platform.lib.online.store import RedisOnlineStore
from ml_platform_tests.serving.conftest import MODEL_NAME, SNAPSHOT_DAY, LiveServer, ServingWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.live]

TOKEN = "s3cret-" + uuid.uuid4().hex
REDIS_URL = "redis://127.0.0.1:6379/0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _redis() -> RedisOnlineStore | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception:
        return None
    return RedisOnlineStore(REDIS_URL, namespace=f"mlp-test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def redis_store(world: ServingWorld) -> Iterator[RedisOnlineStore | None]:
    store = _redis()
    if store is None:
        yield None
        return
    store.write(build_snapshot(SNAPSHOT_DAY, world.features, world.weather))
    try:
        yield store
    finally:
        store.clear()
        store.close()


@pytest.fixture(scope="module")
def auth_server(world: ServingWorld, redis_store: RedisOnlineStore | None) -> Iterator[LiveServer]:
    client = mlflow.MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    client.set_registered_model_alias(MODEL_NAME, "champion", world.packaged.model_version)
    env = {
        "MLP_SERVING_MODEL_TAG": "",
        "MLP_MLFLOW_TRACKING_URI": world.tracking_uri,
        "MLP_SERVING_API_TOKEN": TOKEN,
        "TMPDIR": str(world.root / "tmp-auth"),
    }
    (world.root / "tmp-auth").mkdir(exist_ok=True)
    if redis_store is not None:
        env |= {"MLP_ONLINE_STORE_URL": REDIS_URL, "MLP_ONLINE_STORE_NAMESPACE": redis_store.namespace}
    server = LiveServer(world, "auth", env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(auth_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def flight(world: ServingWorld) -> dict[str, Any]:
    row = world.known_flights(1).row(0, named=True)
    return {
        "carrier": row["carrier"],
        "flight": row["flight"],
        "origin": row["origin"],
        "dest": row["dest"],
        "scheduled_departure": row["scheduled_departure"].astimezone(UTC).isoformat(),
        "distance": row["distance"],
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
    ],
    ids=["none", "empty", "no-token", "wrong", "basic", "longer", "shorter"],
)
def test_a_request_without_the_token_is_401(
    http: httpx.Client, flight: dict[str, Any], headers: dict[str, str]
) -> None:
    for path, body in (("/predict", flight), ("/predict_batch", {"flights": [flight]})):
        response = http.post(path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"][0]["loc"] == ["header", "Authorization"]
        assert TOKEN not in response.text
    # bad input without the token is 401 too: nothing is parsed before authentication
    assert http.post("/predict", content=b"{oops", headers=headers).status_code == 401


def test_the_right_token_is_served_and_validated(
    http: httpx.Client, flight: dict[str, Any], world: ServingWorld
) -> None:
    response = http.post("/predict", json=flight, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == world.packaged.model_version
    assert http.post("/predict_batch", json={"flights": [flight, flight]}, headers=AUTH).status_code == 200
    assert http.post("/predict", json={**flight, "flight": "x"}, headers=AUTH).status_code == 400
    assert http.post("/predict", json={**flight, "dest": "XYZ"}, headers=AUTH).status_code == 422


def test_probes_and_metrics_need_no_token_but_the_docs_do(http: httpx.Client) -> None:
    for path in ("/livez", "/healthz", "/readyz", "/metrics"):
        assert http.get(path).status_code == 200, path
    assert http.get("/docs.json").status_code == 401
    assert http.get("/docs.json", headers=AUTH).status_code == 200
    assert http.get("/schema.json").status_code == 401


def test_unauthorized_requests_are_counted(
    http: httpx.Client, flight: dict[str, Any], world: ServingWorld
) -> None:
    http.post("/predict", json=flight)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for s in family.samples
    }
    labels = {"model_version": world.packaged.model_version, "endpoint": "predict"}
    assert samples[(m.REQUESTS, frozenset({**labels, "status": "401"}.items()))] >= 1
    assert samples[(m.REQUEST_ERRORS, frozenset({**labels, "kind": "Unauthorized"}.items()))] >= 1


def test_the_model_comes_from_the_registry_alias(auth_server: LiveServer, world: ServingWorld) -> None:
    packaged = list((world.root / "tmp-auth" / "mlp-serving-models" / "delay_model").iterdir())
    assert world.packaged.tag.split(":")[1] in {p.name for p in packaged}
    assert "MLP_SERVING_MODEL_TAG" in auth_server.env and not auth_server.env["MLP_SERVING_MODEL_TAG"]


def test_redis_features_give_the_offline_predictions(
    http: httpx.Client, world: ServingWorld, redis_store: RedisOnlineStore | None
) -> None:
    if redis_store is None:
        pytest.skip("no Redis answers on 127.0.0.1:6379")
    rows = world.known_flights(64)
    offline_delay, offline_probability = world.model.predict_frame(rows)
    bodies = [
        {
            "carrier": r["carrier"],
            "flight": r["flight"],
            "origin": r["origin"],
            "dest": r["dest"],
            "scheduled_departure": r["scheduled_departure"].astimezone(UTC).isoformat(),
            "distance": r["distance"],
        }
        for r in rows.iter_rows(named=True)
    ]
    served = [http.post("/predict", json=b, headers=AUTH).json() for b in bodies]
    np.testing.assert_allclose([s["predicted_arr_delay"] for s in served], offline_delay, atol=1e-4)
    np.testing.assert_allclose([s["delay_probability"] for s in served], offline_probability, atol=1e-6)


def test_without_a_snapshot_the_service_answers_503_and_is_not_ready(
    http: httpx.Client, world: ServingWorld, flight: dict[str, Any], redis_store: RedisOnlineStore | None
) -> None:
    if redis_store is None:
        pytest.skip("no Redis answers on 127.0.0.1:6379")
    redis_store.clear()
    try:
        response = http.post("/predict", json=flight, headers=AUTH)
        assert response.status_code == 503, response.text
        assert response.json()["detail"][0]["type"] == "online_store_unavailable"
        assert http.get("/readyz").status_code == 503
        assert http.get("/livez").status_code == 200
    finally:
        redis_store.write(build_snapshot(SNAPSHOT_DAY, world.features, world.weather))
    assert http.post("/predict", json=flight, headers=AUTH).status_code == 200
    assert http.get("/readyz").status_code == 200


def test_stopping_flushes_the_log_and_leaves_no_process(
    http: httpx.Client, auth_server: LiveServer, world: ServingWorld, flight: dict[str, Any]
) -> None:
    """Last in the module: SIGTERM, as Kubernetes sends it; the buffered log lines are written."""
    request_id = f"last-{uuid.uuid4().hex[:8]}"
    assert http.post("/predict", json=flight, headers={**AUTH, "X-Request-ID": request_id}).status_code == 200
    auth_server.stop()  # at once: the writer flushes every second, this is sooner
    lines = [
        line
        for path in world.settings.prediction_log_dir.glob("*/*.jsonl")
        for line in path.read_text().splitlines()
        if request_id in line
    ]
    assert len(lines) == 1
    with pytest.raises(ProcessLookupError):
        os.killpg(auth_server.process.pid, 0)  # the whole group is gone
    assert "Completed cleanup hook: shutdown" in auth_server.log_path.read_text()
