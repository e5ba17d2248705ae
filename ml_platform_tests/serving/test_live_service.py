"""The delay service under a live ``bentoml serve`` on loopback (no token, embedded online store).

The API contract, the bad-input matrix (every case a 4xx with the field named, never a 5xx), the
online features (answers equal the offline model on the offline feature rows), the metrics and
the prediction log.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ml_platform.lib.monitoring import metrics as m
from ml_platform.lib.online import FEATURE_COLUMNS, open_online_store
from ml_platform.lib.training.data import INPUT_COLUMNS
from ml_platform_tests.serving.conftest import MAX_BATCH, MODEL_NAME, LiveServer, ServingWorld, body_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.live]

PREDICTION_FIELDS = {
    "request_id",
    "model_name",
    "model_version",
    "predicted_arr_delay",
    "delay_probability",
    "features_as_of",
    "weather_observed_at",
    "stale",
}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def known(world: ServingWorld) -> pl.DataFrame:
    rows = world.known_flights()
    delay, probability = world.model.predict_frame(rows)
    return rows.with_columns(pl.Series("offline_delay", delay), pl.Series("offline_probability", probability))


@pytest.fixture(scope="module")
def good(known: pl.DataFrame) -> dict[str, Any]:
    return body_of(known.row(0, named=True))


# -- the contract -----------------------------------------------------------------------------------


def test_predict_answers_one_flight(
    client: httpx.Client, world: ServingWorld, known: pl.DataFrame, live_server: LiveServer
) -> None:
    row = known.row(3, named=True)
    response = client.post("/predict", json=body_of(row), headers={"X-Request-ID": "contract-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PREDICTION_FIELDS
    assert body["request_id"] == "contract-1" == response.headers["x-request-id"]
    assert body["model_name"] == MODEL_NAME
    assert body["model_version"] == world.packaged.model_version == response.headers["x-model-version"]
    assert body["predicted_arr_delay"] == pytest.approx(row["offline_delay"], abs=1e-4)
    assert body["delay_probability"] == pytest.approx(row["offline_probability"], abs=1e-6)
    assert 0.0 <= body["delay_probability"] <= 1.0
    assert body["features_as_of"] == iso(row["aggregates_as_of"]) == "2013-01-15T05:00:00Z"
    assert body["weather_observed_at"] == iso(row["weather_observed_at"])
    assert body["stale"] is False  # a flight of the snapshot's day
    assert live_server.started_in_s < 60


def test_predict_batch_answers_in_order(
    client: httpx.Client, world: ServingWorld, known: pl.DataFrame
) -> None:
    rows = known.slice(10, MAX_BATCH)
    response = client.post(
        "/predict_batch", json={"flights": [body_of(r) for r in rows.iter_rows(named=True)]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"request_id", "model_name", "model_version", "predictions"}
    assert body["model_version"] == world.packaged.model_version
    predictions = body["predictions"]
    assert len(predictions) == MAX_BATCH
    assert all(set(p) == PREDICTION_FIELDS for p in predictions)
    assert (
        {p["request_id"] for p in predictions} == {body["request_id"]} == {response.headers["x-request-id"]}
    )
    assert {p["model_version"] for p in predictions} == {world.packaged.model_version}
    np.testing.assert_allclose(
        [p["predicted_arr_delay"] for p in predictions], rows["offline_delay"], atol=1e-4
    )
    np.testing.assert_allclose(
        [p["delay_probability"] for p in predictions], rows["offline_probability"], atol=1e-6
    )


def test_local_time_without_offset_is_new_york_time(client: httpx.Client, good: dict[str, Any]) -> None:
    utc = datetime.strptime(good["scheduled_departure"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    local = utc.astimezone(ZoneInfo("America/New_York")).replace(tzinfo=None)
    answers = [
        client.post("/predict", json={**good, "scheduled_departure": departure}).json()
        for departure in (good["scheduled_departure"], local.isoformat(), utc.isoformat())
    ]
    assert len({(a["predicted_arr_delay"], a["weather_observed_at"]) for a in answers}) == 1


def test_every_flight_of_the_day_gets_the_offline_prediction(
    client: httpx.Client, known: pl.DataFrame
) -> None:
    """Online features from the store + the served model == the offline model on flight_features."""
    rows = known.sample(fraction=1.0, shuffle=True, seed=15)
    served_delay: list[float] = []
    served_probability: list[float] = []
    weather: list[str | None] = []
    for start in range(0, rows.height, MAX_BATCH):
        chunk = rows.slice(start, MAX_BATCH)
        response = client.post(
            "/predict_batch", json={"flights": [body_of(r) for r in chunk.iter_rows(named=True)]}
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        served_delay += [p["predicted_arr_delay"] for p in predictions]
        served_probability += [p["delay_probability"] for p in predictions]
        weather += [p["weather_observed_at"] for p in predictions]
    assert len(served_delay) == rows.height > 500
    np.testing.assert_allclose(served_delay, rows["offline_delay"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(served_probability, rows["offline_probability"], atol=1e-6, rtol=0)
    assert weather == [iso(w) for w in rows["weather_observed_at"]]
    # the comparison was not vacuous: predictions differ between flights
    assert np.std(served_delay) > 0.1


def test_concurrent_requests_each_get_their_own_answer(client: httpx.Client, known: pl.DataFrame) -> None:
    """Many clients at once: the batcher merges their flights; each answer must still be its own."""

    rows = known.slice(100, 48)

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30.0) as http:
            responses = await asyncio.gather(
                *[
                    http.post("/predict", json=body_of(row), headers={"X-Request-ID": f"c-{i}"})
                    for i, row in enumerate(rows.iter_rows(named=True))
                ]
            )
        assert {r.status_code for r in responses} == {200}
        return [r.json() for r in responses]

    answers = asyncio.run(main())
    assert [a["request_id"] for a in answers] == [f"c-{i}" for i in range(rows.height)]
    np.testing.assert_allclose([a["predicted_arr_delay"] for a in answers], rows["offline_delay"], atol=1e-4)


def test_health_probes_and_docs(client: httpx.Client) -> None:
    for path in ("/livez", "/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    spec = client.get("/docs.json").json()
    assert {"/predict", "/predict_batch"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"carrier", "flight", "origin", "dest", "scheduled_departure", "distance"} <= set(
        schemas["FlightRequest"]["properties"]
    )


# -- bad input: always 4xx with the field, never 5xx -------------------------------------------------


def _flight(good: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**good, **change}


BAD_SINGLE: list[tuple[str, Any, int, list[Any] | None]] = [
    # (case, body (dict: JSON; bytes: raw), status, a loc the detail must hold)
    ("wrong type: flight as string", {"flight": "725"}, 400, ["flight"]),
    ("wrong type: distance as string", {"distance": "far"}, 400, ["distance"]),
    ("wrong type: bool flight", {"flight": True}, 400, ["flight"]),
    ("null field", {"origin": None}, 400, ["origin"]),
    ("extra field", {"tail_number": "N123"}, 400, ["tail_number"]),
    ("bad carrier code", {"carrier": "b6"}, 400, ["carrier"]),
    ("bad airport code", {"origin": "JF"}, 400, ["origin"]),
    ("negative distance", {"distance": -10.0}, 400, ["distance"]),
    ("zero flight number", {"flight": 0}, 400, ["flight"]),
    ("unparsable departure", {"scheduled_departure": "next tuesday"}, 400, ["scheduled_departure"]),
    ("departure out of range", {"scheduled_departure": "9999-12-31T23:59:59"}, 400, ["scheduled_departure"]),
    ("same origin and dest", {"dest": "__origin__"}, 400, []),
    ("unknown dest airport", {"dest": "XYZ"}, 422, ["dest"]),
    ("unknown origin airport", {"origin": "SFO"}, 422, ["origin"]),
    ("unknown carrier", {"carrier": "ZZ"}, 422, ["carrier"]),
]


@pytest.mark.parametrize(("case", "change", "status", "loc"), BAD_SINGLE, ids=[c[0] for c in BAD_SINGLE])
def test_bad_single_requests(
    client: httpx.Client, good: dict[str, Any], case: str, change: dict[str, Any], status: int, loc: list[Any]
) -> None:
    body = _flight(good, **change)
    if body.get("dest") == "__origin__":
        body["dest"] = body["origin"]
    response = client.post("/predict", json=body)
    assert response.status_code == status, (case, response.text)
    detail = response.json()["detail"]
    assert loc in [d["loc"] for d in detail], (case, detail)
    assert all(d["msg"] for d in detail)


def test_missing_fields_are_all_named(client: httpx.Client, good: dict[str, Any]) -> None:
    response = client.post(
        "/predict", json={k: v for k, v in good.items() if k not in ("origin", "distance")}
    )
    assert response.status_code == 400
    assert sorted(d["loc"] for d in response.json()["detail"]) == [["distance"], ["origin"]]
    assert {d["type"] for d in response.json()["detail"]} == {"missing"}


def test_bad_batches(client: httpx.Client, good: dict[str, Any]) -> None:
    def post(flights: Any) -> httpx.Response:
        return client.post("/predict_batch", json={"flights": flights})

    unknown = post([good, good, good, _flight(good, origin="BOS")])
    assert unknown.status_code == 422
    assert [d["loc"] for d in unknown.json()["detail"]] == [["flights", 3, "origin"]]
    assert unknown.json()["detail"][0]["msg"].startswith("flights[3].origin: airport 'BOS'")

    invalid = post([good, _flight(good, distance=-1), _flight(good, carrier="x")])
    assert invalid.status_code == 400
    assert sorted(d["loc"] for d in invalid.json()["detail"]) == [
        ["flights", 1, "distance"],
        ["flights", 2, "carrier"],
    ]

    oversized = post([good] * (MAX_BATCH + 1))
    assert oversized.status_code == 413
    assert oversized.json()["detail"][0]["loc"] == ["flights"]
    assert f"at most {MAX_BATCH} flights" in oversized.json()["detail"][0]["msg"]

    assert post([]).status_code == 400
    assert post(good).status_code == 400  # an object, not a list
    assert client.post("/predict_batch", json={"flight": [good]}).status_code == 400


@pytest.mark.parametrize(
    ("case", "content", "headers", "status"),
    [
        ("malformed JSON", b'{"carrier": "B6", ', {"Content-Type": "application/json"}, 400),
        ("empty body", b"", {"Content-Type": "application/json"}, 400),
        ("JSON list", b"[1, 2]", {"Content-Type": "application/json"}, 400),
        ("JSON string", b'"predict"', {"Content-Type": "application/json"}, 400),
        ("not UTF-8", b'{"carrier": "\xff\xfe"}', {"Content-Type": "application/json"}, 400),
        ("deep nesting", b"[" * 10_000 + b"]" * 10_000, {"Content-Type": "application/json"}, 400),
        ("text/plain", b"{}", {"Content-Type": "text/plain"}, 415),
        ("form", b"carrier=B6", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("multipart", b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ("pickle", b"\x80\x04N.", {"Content-Type": "application/vnd.bentoml+pickle"}, 415),
        ("huge body", b"[" + b"1," * 40_000 + b"1]", {"Content-Type": "application/json"}, 413),
    ],
)
def test_bad_bodies(
    client: httpx.Client, case: str, content: bytes, headers: dict[str, str], status: int
) -> None:
    for path in ("/predict", "/predict_batch"):
        response = client.post(path, content=content, headers=headers)
        assert response.status_code == status, (case, path, response.text)
        body = response.json()
        assert body["error"] and isinstance(body["detail"], list), (case, body)


def test_no_input_answers_5xx(client: httpx.Client, good: dict[str, Any]) -> None:
    """A sweep of odd values through every field: only 200, 400 or 422."""
    odd = [
        None,
        True,
        -1,
        0,
        1.5,
        1e308,
        -1e308,
        "",
        " ",
        "JFK",
        "ZZ",
        "\u0000",
        "é" * 3,
        [],
        {},
        "2013-02-30T10:00:00",
    ]
    statuses: set[int] = set()
    for field in ("carrier", "flight", "origin", "dest", "scheduled_departure", "distance"):
        for value in odd:
            response = client.post("/predict", json=_flight(good, **{field: value}))
            statuses.add(response.status_code)
            assert response.status_code < 500, (field, value, response.text)
    assert statuses <= {200, 400, 422} and {400, 422} <= statuses
    assert client.get("/predict").status_code == 405


# -- metrics and the prediction log ------------------------------------------------------------------


def test_metrics_are_labelled_by_model_version(
    client: httpx.Client, world: ServingWorld, good: dict[str, Any]
) -> None:
    assert client.post("/predict", json=good).status_code == 200
    assert client.post("/predict", json=_flight(good, dest="XYZ")).status_code == 422
    assert client.post("/predict", json=_flight(good, flight="x")).status_code == 400
    text = client.get("/metrics").text
    version = world.packaged.model_version
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset({"model_version": version, **labels}.items())), 0.0)

    assert value(m.REQUESTS, endpoint="predict", status="200") >= 1
    assert value(m.REQUESTS, endpoint="predict", status="422") >= 1
    assert value(m.REQUESTS, endpoint="predict", status="400") >= 1
    assert value(m.REQUEST_ERRORS, endpoint="predict", kind="UnknownCategory") >= 1
    assert value(m.REQUEST_ERRORS, endpoint="predict", kind="ValidationError") >= 1
    assert value(f"{m.REQUEST_LATENCY}_count", endpoint="predict") >= 3
    assert value(f"{m.PREDICTION}_count") >= 1 and value(f"{m.PREDICTION_PROBABILITY}_count") >= 1
    assert value(f"{m.PREDICTION_PROBABILITY}_bucket", le="+Inf") == value(f"{m.PREDICTION}_count")
    # nothing 5xx so far in this module
    assert not [k for k in samples if k[0] == m.REQUESTS and dict(k[1]).get("status", "").startswith("5")]
    # every mlp_ series of the Bento is a serving metric, labelled with the served version
    names = {family.name for family in text_string_to_metric_families(text) if family.name.startswith("mlp_")}
    assert {n.removesuffix("_total") for n in names} <= {n.removesuffix("_total") for n in m.SERVING_METRICS}
    assert {dict(k[1]).get("model_version") for k in samples if k[0].startswith("mlp_")} == {version}


def _log_lines(folder: Path, request_ids: set[str], expected: int) -> list[dict[str, Any]]:
    """The log lines of ``request_ids`` (waiting up to 10 s for the writer), with their file's day."""
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [
            {**line, "_folder": path.parent.name}
            for path in folder.glob("*/*.jsonl")
            for line in map(json.loads, path.read_text().splitlines())
            if line["request_id"] in request_ids
        ]
        if len(found) >= expected:
            break
        time.sleep(0.1)
    return found


def test_every_prediction_is_logged(client: httpx.Client, world: ServingWorld, known: pl.DataFrame) -> None:
    prefix = uuid.uuid4().hex[:8]
    single, batch, rejected = (f"log-{prefix}-{i}" for i in range(3))
    rows = [body_of(r) for r in known.slice(40, 3).iter_rows(named=True)]
    assert client.post("/predict", json=rows[0], headers={"X-Request-ID": single}).status_code == 200
    response = client.post("/predict_batch", json={"flights": rows[1:]}, headers={"X-Request-ID": batch})
    assert response.status_code == 200
    bad = {**rows[0], "dest": "XYZ"}
    assert client.post("/predict", json=bad, headers={"X-Request-ID": rejected}).status_code == 422

    lines = _log_lines(world.settings.prediction_log_dir, {single, batch, rejected}, 3)
    assert sorted((line["request_id"], line["index"]) for line in lines) == sorted(
        [(single, 0), (batch, 0), (batch, 1)]
    )
    for line in lines:  # the file of the flight's day (local scheduled date), whenever it was logged
        departure = datetime.fromisoformat(line["request"]["scheduled_departure"])
        assert line.pop("_folder") == departure.astimezone(ZoneInfo("America/New_York")).date().isoformat()
        assert (
            line["features"]["flight_date"]
            == departure.astimezone(ZoneInfo("America/New_York")).date().isoformat()
        )
    by_id = {(line["request_id"], line["index"]): line for line in lines}
    first = by_id[(single, 0)]
    assert set(first) == {
        "logged_at",
        "request_id",
        "endpoint",
        "index",
        "model_name",
        "model_version",
        "bento_tag",
        "latency_ms",
        "online_snapshot_day",
        "online_snapshot_hash",
        "online_snapshot_written_at",
        "stale",
        "request",
        "features",
        "prediction",
    }
    assert list(first).index("bento_tag") == list(first).index("model_version") + 1
    # the snapshot that answered, as the store holds it (one snapshot in this world)
    held = open_online_store(None, world.settings.online_store_path).info()
    assert held is not None
    assert {(line["online_snapshot_day"], line["online_snapshot_hash"]) for line in lines} == {
        (held.day.isoformat(), held.content_hash)
    }
    assert {line["stale"] for line in lines} == {False}
    # served from source (`bentoml serve ml_platform.serving.service:DelayService`): no Bento
    assert {line["bento_tag"] for line in lines} == {None}
    assert first["endpoint"] == "predict" and by_id[(batch, 1)]["endpoint"] == "predict_batch"
    assert first["model_version"] == world.packaged.model_version and first["model_name"] == MODEL_NAME
    assert 0 < first["latency_ms"] < 10_000
    assert first["request"] == {
        **rows[0],
        "scheduled_departure": rows[0]["scheduled_departure"].replace("Z", "+00:00"),
    }
    assert set(first["features"]) == set(FEATURE_COLUMNS) >= set(INPUT_COLUMNS)
    assert first["features"]["route"] == f"{rows[0]['origin']}-{rows[0]['dest']}"
    served = client.post("/predict", json=rows[0]).json()
    assert first["prediction"]["predicted_arr_delay"] == pytest.approx(
        served["predicted_arr_delay"], abs=1e-6
    )
    assert set(first["prediction"]) == {"predicted_arr_delay", "delay_probability"}


def test_a_flight_beyond_the_freshness_budget_is_answered_stale_and_counted(
    client: httpx.Client, world: ServingWorld, good: dict[str, Any]
) -> None:
    """#15 item 5: a departure in 2026 on the 2013 snapshot is answered 200 with stale=true (weather
    null), counted in mlp_stale_predictions_total and logged with stale=true."""
    request_id = f"stale-{uuid.uuid4().hex[:8]}"
    far = {**good, "scheduled_departure": "2026-05-01T21:00:00Z"}
    response = client.post(
        "/predict_batch", json={"flights": [good, far]}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert [a["stale"] for a in answers] == [False, True]
    assert (
        answers[1]["weather_observed_at"] is None
        and answers[1]["features_as_of"] == answers[0]["features_as_of"]
    )
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    labels = frozenset({"model_version": world.packaged.model_version, "endpoint": "predict_batch"}.items())
    assert samples.get((m.STALE_PREDICTIONS, labels), 0) >= 1
    lines = _log_lines(world.settings.prediction_log_dir, {request_id}, 2)
    assert sorted((line["index"], line["stale"]) for line in lines) == [(0, False), (1, True)]


def test_the_server_survived_everything(client: httpx.Client, live_server: LiveServer) -> None:
    assert live_server.process.poll() is None, live_server.log_tail()
    assert client.get("/readyz").status_code == 200
