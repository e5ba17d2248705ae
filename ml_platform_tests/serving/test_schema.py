"""The request and response models, without a server: what is accepted, what is refused and how."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from ml_platform.lib.serving.schema import (
    BatchRequest,
    FlightRequest,
    Prediction,
    field_path,
    to_utc,
    unknown_categories,
)

GOOD: dict[str, Any] = {
    "carrier": "B6",
    "flight": 725,
    "origin": "JFK",
    "dest": "BQN",
    "scheduled_departure": "2013-01-15T10:45:00",
    "distance": 1576.0,
}


def errors_of(
    body: dict[str, Any] | str, model: type[FlightRequest] | type[BatchRequest] = FlightRequest
) -> list[dict[str, Any]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(raw)
    return caught.value.errors(include_context=False, include_input=False)  # type: ignore[return-value]


def test_a_good_request_is_normalized_to_utc() -> None:
    flight = FlightRequest.model_validate_json(json.dumps(GOOD))
    # naive: New York local time (EST, UTC-5, in January)
    assert flight.scheduled_departure == datetime(2013, 1, 15, 15, 45, tzinfo=UTC)
    aware = FlightRequest.model_validate_json(
        json.dumps({**GOOD, "scheduled_departure": "2013-01-15T15:45:00Z"})
    )
    assert aware.scheduled_departure == flight.scheduled_departure
    offset = FlightRequest.model_validate_json(
        json.dumps({**GOOD, "scheduled_departure": "2013-01-15T16:45:00+01:00"})
    )
    assert offset.scheduled_departure == flight.scheduled_departure
    # an integer distance is a number; the row keeps the request's values
    row = FlightRequest.model_validate_json(json.dumps({**GOOD, "distance": 1576})).as_row()
    assert row == {**GOOD, "scheduled_departure": flight.scheduled_departure, "distance": 1576.0}


def test_summer_local_time_uses_daylight_saving() -> None:
    flight = FlightRequest.model_validate_json(
        json.dumps({**GOOD, "scheduled_departure": "2013-07-01T10:45:00"})
    )
    assert flight.scheduled_departure == datetime(2013, 7, 1, 14, 45, tzinfo=UTC)  # EDT, UTC-4


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        ({"flight": "725"}, ("flight",), "int_type"),
        ({"flight": 7.5}, ("flight",), "int_type"),
        ({"flight": True}, ("flight",), "int_type"),
        ({"flight": 0}, ("flight",), "greater_than_equal"),
        ({"flight": 10000}, ("flight",), "less_than_equal"),
        ({"carrier": "b6"}, ("carrier",), "carrier_code"),
        ({"carrier": "B66"}, ("carrier",), "carrier_code"),
        ({"carrier": 66}, ("carrier",), "string_type"),
        ({"origin": "jfk"}, ("origin",), "airport_code"),
        ({"dest": "JF1"}, ("dest",), "airport_code"),
        ({"dest": "JFK"}, (), "same_airports"),
        ({"distance": -1.0}, ("distance",), "greater_than"),
        ({"distance": 0}, ("distance",), "greater_than"),
        ({"distance": 1e6}, ("distance",), "less_than_equal"),
        ({"distance": "far"}, ("distance",), "float_type"),
        ({"distance": None}, ("distance",), "float_type"),
        ({"scheduled_departure": "tomorrow"}, ("scheduled_departure",), "datetime_parsing"),
        ({"scheduled_departure": "2013-01-15"}, ("scheduled_departure",), "datetime_parsing"),
        ({"scheduled_departure": 1358264700}, ("scheduled_departure",), "datetime_type"),
        ({"scheduled_departure": "1900-01-01T00:00:00"}, ("scheduled_departure",), "departure_range"),
        ({"scheduled_departure": "0001-01-01T00:00:00"}, ("scheduled_departure",), "departure_range"),
        ({"scheduled_departure": "9999-12-31T23:59:59"}, ("scheduled_departure",), "departure_range"),
        ({"extra": 1}, ("extra",), "extra_forbidden"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], loc: tuple[str, ...], kind: str) -> None:
    errors = errors_of({**GOOD, **change})
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, kind)]
    assert errors[0]["msg"]


def test_nan_and_infinity_are_refused() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = json.dumps(GOOD).replace("1576.0", literal)
        assert [e["loc"] for e in errors_of(raw)] == [("distance",)], literal


def test_every_missing_field_is_reported() -> None:
    errors = errors_of({})
    assert sorted(e["loc"][0] for e in errors) == sorted(GOOD)
    assert {e["type"] for e in errors} == {"missing"}


def test_malformed_json_and_wrong_shapes() -> None:
    assert errors_of('{"carrier": ')[0]["type"] == "json_invalid"
    assert errors_of("[]")[0]["type"] == "model_type"
    batch_errors = errors_of({"flights": [GOOD, {**GOOD, "distance": -5}, GOOD]}, BatchRequest)
    assert [e["loc"] for e in batch_errors] == [("flights", 1, "distance")]
    assert errors_of({"flights": []}, BatchRequest)[0]["type"] == "too_short"
    assert errors_of({"flights": GOOD}, BatchRequest)[0]["type"] == "list_type"


def test_messages_say_what_is_expected() -> None:
    (carrier,) = errors_of({**GOOD, "carrier": "b6"})
    assert "2-character IATA airline code" in carrier["msg"] and "'b6'" in carrier["msg"]
    (airport,) = errors_of({**GOOD, "origin": "x" * 500})
    assert "3-letter IATA airport code" in airport["msg"] and len(airport["msg"]) < 120


def test_to_utc_bounds() -> None:
    assert to_utc(datetime(2013, 1, 15, 10, 45)) == datetime(2013, 1, 15, 15, 45, tzinfo=UTC)
    for bad in (datetime(1, 1, 1), datetime(9999, 12, 31, 23), datetime(2100, 1, 1, tzinfo=UTC)):
        with pytest.raises(ValueError, match=r"\[1970, 2100\)"):
            to_utc(bad)


def test_unknown_categories_name_the_field_path() -> None:
    flights = [
        FlightRequest.model_validate_json(json.dumps({**GOOD, **change}))
        for change in ({}, {"dest": "XYZ"}, {"carrier": "ZZ", "origin": "ABC"})
    ]
    vocab = {"carrier": frozenset({"B6"}), "origin": frozenset({"JFK"}), "dest": frozenset({"BQN"})}
    errors = unknown_categories(flights, vocab, ("flights",))
    assert [(e.loc, e.type) for e in errors] == [
        (["flights", 1, "dest"], "unknown_airport"),
        (["flights", 2, "carrier"], "unknown_carrier"),
        (["flights", 2, "origin"], "unknown_airport"),
    ]
    assert errors[0].msg.startswith("flights[1].dest: airport 'XYZ' is not one the model knows")
    single = unknown_categories(flights[1:2], vocab, indexed=False)
    assert [e.loc for e in single] == [["dest"]]
    assert unknown_categories(flights[:1], vocab) == []


def test_field_path() -> None:
    assert field_path(["flights", 3, "origin"]) == "flights[3].origin"
    assert field_path(["dest"]) == "dest"
    assert field_path([]) == ""


def test_prediction_serializes_model_fields() -> None:
    prediction = Prediction(
        request_id="r",
        model_name="delay_model",
        model_version="3",
        predicted_arr_delay=1.5,
        delay_probability=0.25,
        features_as_of=datetime(2013, 1, 15, 5, tzinfo=UTC),
        weather_observed_at=None,
    )
    assert json.loads(prediction.model_dump_json()) == {
        "request_id": "r",
        "model_name": "delay_model",
        "model_version": "3",
        "predicted_arr_delay": 1.5,
        "delay_probability": 0.25,
        "features_as_of": "2013-01-15T05:00:00Z",
        "weather_observed_at": None,
    }
