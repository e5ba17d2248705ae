"""The request and response models, without a server: what is accepted, what is refused and how."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from ml_platform.lib.serving.http import error_body
from ml_platform.lib.serving.openapi import api_document
from ml_platform.lib.serving.schema import (
    DEPARTURE_PATTERN,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
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
        ({"scheduled_departure": "tomorrow"}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": "2013-01-15"}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": 1358264700}, ("scheduled_departure",), "iso_datetime"),
        # digit strings and numbers are not times (pydantic alone reads "20130115" as a Unix timestamp)
        ({"scheduled_departure": "20130115"}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": 1358208000}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": "1358208000"}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": 1358208000.5}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": "2013-02-29T10:00"}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": "2013-01-15 10:45:00"}, ("scheduled_departure",), "iso_datetime"),
        ({"scheduled_departure": "1900-01-01T00:00:00"}, ("scheduled_departure",), "departure_range"),
        ({"scheduled_departure": "0001-01-01T00:00:00"}, ("scheduled_departure",), "departure_range"),
        ({"scheduled_departure": "9999-12-31T23:59:59"}, ("scheduled_departure",), "departure_range"),
        ({"extra": 1}, ("extra",), "extra_forbidden"),
        ({"flight": 7.0}, (), None),  # 7.0 is the JSON number 7
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], loc: tuple[str, ...], kind: str | None) -> None:
    if kind is None:
        FlightRequest.model_validate_json(json.dumps({**GOOD, **change}))
        return
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
        stale=False,
    )
    assert json.loads(prediction.model_dump_json()) == {
        "request_id": "r",
        "model_name": "delay_model",
        "model_version": "3",
        "predicted_arr_delay": 1.5,
        "delay_probability": 0.25,
        "features_as_of": "2013-01-15T05:00:00Z",
        "weather_observed_at": None,
        "stale": False,
    }


# -- the published contract: the OpenAPI document says what is accepted and what is returned ------


def _validator(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON-schema validator of the document's component ``name`` (refs resolved in the document)."""
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _response_schema_name(doc: dict[str, Any], path: str, status: str) -> str:
    ref: str = doc["paths"][path]["post"]["responses"][status]["content"]["application/json"]["schema"][
        "$ref"
    ]
    return ref.rsplit("/", 1)[1]


VOCAB = {
    "carrier": frozenset({"B6", "UA"}),
    "origin": frozenset({"EWR", "JFK", "LGA"}),
    "dest": frozenset({"BQN", "LGA"}),
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return api_document(title="delay_service", version="delay_model/3", vocabularies=VOCAB, max_batch=4)


def test_the_document_is_openapi_3_1_with_the_models_schemas(doc: dict[str, Any]) -> None:
    # pydantic writes JSON Schema 2020-12 (numeric exclusiveMinimum, "type": "null"): OpenAPI 3.1's dialect
    assert doc["openapi"] == "3.1.0"
    flight = doc["components"]["schemas"]["FlightRequest"]
    assert flight["properties"]["distance"]["exclusiveMinimum"] == 0.0
    assert flight["additionalProperties"] is False and "root_input" not in flight
    assert "origin and dest must differ" in flight["description"]
    assert flight["properties"]["scheduled_departure"]["pattern"] == DEPARTURE_PATTERN
    assert doc["components"]["schemas"]["BatchRequest"]["properties"]["flights"]["maxItems"] == 4
    assert set(doc["paths"]) == {"/predict", "/predict_batch", "/livez", "/healthz", "/readyz", "/metrics"}
    assert "security" not in doc and "401" not in doc["paths"]["/predict"]["post"]["responses"]
    secured = api_document(title="t", version="v", bearer_auth=True)
    assert secured["security"] == [{"bearer": []}]
    assert "401" in secured["paths"]["/predict"]["post"]["responses"]
    assert secured["paths"]["/livez"]["get"]["security"] == []


def test_the_request_schema_accepts_what_the_service_accepts(doc: dict[str, Any]) -> None:
    schema = _validator(doc, "FlightRequest")
    good = {**GOOD, "scheduled_departure": "2013-01-15T10:45:00-05:00"}
    assert schema.is_valid(good)
    FlightRequest.model_validate_json(json.dumps(good))
    for bad in ("20130115", 1358208000, "1358208000", "2013-01-15", "2013-02-29T10:00"):
        assert not schema.is_valid({**good, "scheduled_departure": bad}), bad
        errors_of({**good, "scheduled_departure": bad})
    # the served model's codes: a well-formed unknown one is outside the schema (the service: 422)
    assert not schema.is_valid({**good, "carrier": "AA"})
    # origin == dest is outside it for the airports both vocabularies share (the service: 400)
    assert not schema.is_valid({**good, "origin": "LGA", "dest": "LGA"})
    assert schema.is_valid({**good, "origin": "JFK", "dest": "LGA"})


@pytest.mark.parametrize(
    "departure",
    [
        "1970-01-01T00:00",
        "1970-01-01T00:00+05:00",  # 1969 in UTC, but the date as written is 1970
        "2099-12-31T23:59:59.999999-05:00",
        "2012-02-29T10:00Z",
        "2000-02-29T10:00:00+23:59",
        "2100-02-29T10:00",
        "1969-12-31T23:59:59Z",
        "2100-01-01T00:00",
        "2013-02-29T10:00",
        "2013-04-31T10:00",
        "2013-01-15T24:00",
        "2013-01-15T10:60",
        "2013-01-15T10:45:60",
        "2013-01-15T10:45:00.1234567",
        "2013-01-15T10:45:00z",
        "2013-01-15t10:45:00",
        "2013-01-15T10:45:00+24:00",
        "2013-01-15T10:45:00+0500",
        "2013-01-15T10:45:00Z\n",
        "2013-01-15T10",
        "+2013-01-15T10:45",
    ],
)
def test_the_departure_pattern_is_exactly_what_is_accepted(departure: str) -> None:
    # ECMA-262 regex semantics (JSON Schema's): "$" is the end of the string, never before a "\n"
    documented = re.fullmatch(DEPARTURE_PATTERN.removeprefix("^").removesuffix("$"), departure) is not None
    try:
        FlightRequest.model_validate_json(json.dumps({**GOOD, "scheduled_departure": departure}))
        accepted = True
    except ValidationError:
        accepted = False
    assert documented == accepted


def test_the_document_declares_what_is_returned(doc: dict[str, Any]) -> None:
    # 200: a prediction, with and without the optional times
    prediction = Prediction(
        request_id="r",
        model_name="delay_model",
        model_version="3",
        predicted_arr_delay=-1.5,
        delay_probability=0.25,
        features_as_of=datetime(2013, 1, 15, 5, tzinfo=UTC),
        weather_observed_at=None,
        stale=True,
    )
    body = prediction.model_dump(mode="json")
    assert _validator(doc, _response_schema_name(doc, "/predict", "200")).is_valid(body)
    batch = BatchResponse(
        request_id="r", model_name="delay_model", model_version="3", predictions=[prediction]
    )
    assert _validator(doc, _response_schema_name(doc, "/predict_batch", "200")).is_valid(
        batch.model_dump(mode="json")
    )
    # every error status: the ErrorResponse, detail a list of {type, loc, msg} objects
    for status in ("400", "413", "415", "422", "500", "503", "504"):
        assert _response_schema_name(doc, "/predict", status) == "ErrorResponse", status
    errors = _validator(doc, "ErrorResponse")
    # BentoML's 400: pydantic's errors as it dumps them (with pydantic's "url")
    with pytest.raises(ValidationError) as caught:
        FlightRequest.model_validate_json(json.dumps({**GOOD, "dest": "JFK", "flight": "1"}))
    bentoml_400 = {
        "error": f"{caught.value.error_count()} validation error for {caught.value.title}",
        "detail": json.loads(json.dumps(caught.value.errors(include_context=False, include_input=False))),
    }
    bodies = [
        bentoml_400,
        json.loads(
            error_body(
                "unsupported media type", [{"type": "t", "loc": ["header", "Content-Type"], "msg": "m"}]
            )
        ),
        ErrorResponse(
            error="unknown category",
            detail=unknown_categories(
                [FlightRequest.model_validate_json(json.dumps(GOOD))], VOCAB, indexed=False
            ),
        ).model_dump(mode="json"),
        {"error": "An unexpected error has occurred, please check the server log."},  # BentoML's 500
    ]
    for body in bodies:
        assert errors.is_valid(body), body
    # what the document did not say before: detail as a string is not the contract
    assert not errors.is_valid({"error": "x", "detail": "a string"})
