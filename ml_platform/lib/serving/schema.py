"""The HTTP contract of the served delay model: request and response models (pydantic v2).

No BentoML here: the service (:mod:`ml_platform.serving.service`) uses these models as its API
types, and clients and tests can import them without a server.

A request carries what a caller knows before departure (the online store adds the rest):

* ``carrier``: the IATA airline designator, two capital letters or digits (``"B6"``, ``"9E"``);
* ``flight``: the flight number, 1 to 9999;
* ``origin``, ``dest``: IATA airport codes, three capital letters, different from each other;
* ``scheduled_departure``: an ISO 8601 date-time *string*, ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]``
  and an optional offset (``Z``, ``-05:00``): :data:`DEPARTURE_PATTERN` says exactly which. With
  an offset it is that instant; without one it is the local time of the New York airports
  (``America/New_York``, the time zone of the schedules the model was trained on). It is
  normalized to UTC. Its date, as written, lies in 1970..2099. Nothing else is read as a time:
  not a number (``1358208000``), not a digit string (``"20130115"``, which pydantic alone would
  take for a Unix timestamp), not a date without a time;
* ``distance``: great-circle miles, finite, in (0, 12500].

Validation is strict (JSON types are not coerced: ``"725"`` is not a flight number, ``true`` is not
a number; ``725.0`` is 725, the same JSON number, as JSON Schema counts it) and unknown fields are
rejected (``extra="forbid"``), so a misspelt field never goes unnoticed. Each failure names its
field: pydantic's ``loc`` (``["flights", 3, "origin"]``) and a message that says what is expected.
The JSON schema of the models says the same (patterns, bounds, the origin/dest rule in the
description); :mod:`ml_platform.lib.serving.openapi` builds the service's OpenAPI document from it.

What the *model* knows is checked separately, against the vocabularies it was trained with
(:func:`unknown_categories`): an airport or carrier the model has never seen gets a 422 from the
service, with the same error shape (:class:`ErrorDetail`).

Responses: :class:`Prediction` for one flight, :class:`BatchResponse` for a batch (one
:class:`Prediction` per flight, in request order). Both carry the request id, the registered model
name and version that answered, and when the features the service added were valid
(``features_as_of``: the trailing aggregates' cutoff; ``weather_observed_at``: the weather
observation used, null when none was recent enough; ``stale``: the departure lies beyond the
feature-freshness budget after ``features_as_of``, see :mod:`ml_platform.lib.online.freshness`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

#: The time zone of a departure given without an offset (the NYC airports' schedules).
LOCAL_TZ: Final = ZoneInfo("America/New_York")
EARLIEST_DEPARTURE: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DEPARTURE: Final = datetime(2100, 1, 1, tzinfo=UTC)
MAX_DISTANCE_MILES: Final = 12_500.0
CARRIER_PATTERN: Final = r"^[A-Z0-9]{2}$"
AIRPORT_PATTERN: Final = r"^[A-Z]{3}$"
#: A departure as the API takes it (ECMA-262 and Python alike): a real calendar date of 1970..2099
#: (leap days included), ``T``, a time ``HH:MM`` with optional seconds and fraction (1-6 digits),
#: and an optional offset (``Z`` or ``+HH:MM``/``-HH:MM``, under 24 h). The OpenAPI document
#: publishes it, and the validator accepts exactly what it matches.
DEPARTURE_PATTERN: Final = (
    r"^(?:(?:19[7-9][0-9]|20[0-9]{2})-"
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:19(?:7[26]|8[048]|9[26])|20(?:[02468][048]|[13579][26]))-02-29)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
#: The shape of an ISO 8601 date-time, whatever its values (the first check, for the message).
_ISO_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)
_DEPARTURE_EXAMPLE: Final = "2013-01-15T10:45:00-05:00"
_CARRIER = re.compile(CARRIER_PATTERN)
_AIRPORT = re.compile(AIRPORT_PATTERN)
#: Request fields checked against the model's vocabularies, in the order errors are reported.
CATEGORICAL_FIELDS: Final = ("carrier", "origin", "dest")
_QUOTE_LIMIT: Final = 24


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 4] + "...'"


def _carrier(value: str) -> str:
    if not _CARRIER.match(value):
        raise PydanticCustomError(
            "carrier_code",
            "must be a 2-character IATA airline code of capital letters or digits (e.g. 'B6'), got {got}",
            {"got": _quoted(value)},
        )
    return value


def _airport(value: str) -> str:
    if not _AIRPORT.match(value):
        raise PydanticCustomError(
            "airport_code",
            "must be a 3-letter IATA airport code in capital letters (e.g. 'JFK'), got {got}",
            {"got": _quoted(value)},
        )
    return value


def to_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is local time of :data:`LOCAL_TZ`.

    An ambiguous or missing local time (the DST changes) resolves with ``fold=0``, as
    :mod:`zoneinfo` does: the earlier of the two instants, or the time before the gap's shift.

    The range is that of the date *as written* (its own year, before any shift): what a caller
    can see, and what :data:`DEPARTURE_PATTERN` can say. The instant may then lie up to a day
    outside ``[1970, 2100)`` UTC (``1970-01-01T00:00+05:00``).

    Raises:
        ValueError: the date as written is outside ``[1970, 2100)``.
    """
    if not EARLIEST_DEPARTURE.year <= moment.year < LATEST_DEPARTURE.year:
        raise ValueError(f"{moment.isoformat()} is outside [1970, 2100)")
    aware = moment.replace(tzinfo=LOCAL_TZ) if moment.tzinfo is None else moment
    return aware.astimezone(UTC)


def _iso_departure(value: object) -> object:
    """A JSON departure must be a string of :data:`DEPARTURE_PATTERN`'s shape (parsed here).

    A ``datetime`` (from Python code) passes as it is; anything else, numbers and digit strings
    included (pydantic would read ``"20130115"`` as a Unix timestamp), is refused.
    """
    if isinstance(value, datetime):
        return value
    expected = f"an ISO 8601 date-time string such as {_DEPARTURE_EXAMPLE!r}"
    if not isinstance(value, str) or not _ISO_SHAPE.fullmatch(value):
        raise PydanticCustomError(
            "iso_datetime", "must be {expected}, got {got}", {"expected": expected, "got": _quoted(value)}
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "iso_datetime",
            "must be {expected}: {got} is not a valid date-time",
            {"expected": expected, "got": _quoted(value)},
        ) from exc
    return moment


def _whole_number(value: object) -> object:
    """A JSON number with no fraction (``725.0``) is the integer it equals, as JSON Schema says."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _departure(value: datetime) -> datetime:
    try:
        return to_utc(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "departure_range", "must be a date-time of 1970..2099, got {got}", {"got": value.isoformat()}
        ) from exc


Carrier = Annotated[
    str,
    Field(
        description="IATA airline designator: 2 capital letters or digits.",
        examples=["B6"],
        json_schema_extra={"pattern": CARRIER_PATTERN},
    ),
    AfterValidator(_carrier),
]
Airport = Annotated[
    str,
    Field(
        description="IATA airport code: 3 capital letters.",
        examples=["JFK"],
        json_schema_extra={"pattern": AIRPORT_PATTERN},
    ),
    AfterValidator(_airport),
]


class FlightRequest(BaseModel):
    """One flight to predict, as the caller knows it before departure.

    Its origin and dest must differ: the same airport twice is a 400 (type same_airports).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, title="FlightRequest")

    carrier: Carrier
    flight: Annotated[
        int,
        Field(ge=1, le=9999, description="Flight number.", examples=[725]),
        BeforeValidator(_whole_number),
    ]
    origin: Annotated[Airport, Field(description="IATA airport code: 3 capital letters; not dest.")]
    dest: Annotated[
        Airport, Field(description="IATA airport code: 3 capital letters; not origin.", examples=["BQN"])
    ]
    scheduled_departure: Annotated[
        datetime,
        BeforeValidator(_iso_departure),
        AfterValidator(_departure),
        WithJsonSchema(
            {
                "type": "string",
                "pattern": DEPARTURE_PATTERN,
                "description": "ISO 8601 date-time of 1970..2099, YYYY-MM-DDTHH:MM[:SS[.ffffff]] and an"
                " optional offset (Z or +HH:MM); without one it is America/New_York local time."
                " Normalized to UTC. Numbers and digit strings are not times.",
                "examples": [_DEPARTURE_EXAMPLE],
            }
        ),
    ]
    distance: float = Field(
        gt=0.0,
        le=MAX_DISTANCE_MILES,
        allow_inf_nan=False,
        description="Great-circle distance in miles.",
        examples=[1576.0],
    )

    @model_validator(mode="after")
    def _different_airports(self) -> FlightRequest:
        if self.origin == self.dest:
            raise PydanticCustomError(
                "same_airports", "origin and dest must differ, both are {got}", {"got": _quoted(self.origin)}
            )
        return self

    def as_row(self) -> dict[str, Any]:
        """The request as a row of ``REQUEST_COLUMNS`` (departure aware UTC)."""
        return {
            "carrier": self.carrier,
            "flight": self.flight,
            "origin": self.origin,
            "dest": self.dest,
            "scheduled_departure": self.scheduled_departure,
            "distance": self.distance,
        }


class BatchRequest(BaseModel):
    """Several flights in one request (at most ``MLP_SERVING_MAX_BATCH``: larger batches get 413)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, title="BatchRequest")

    flights: list[FlightRequest] = Field(min_length=1, description="The flights, answered in this order.")


class Prediction(BaseModel):
    """The model's answer for one flight."""

    model_config = ConfigDict(protected_namespaces=(), frozen=True, title="Prediction")

    request_id: str = Field(description="X-Request-ID of the request (generated when absent).")
    model_name: str = Field(description="The registered model (MLflow) that answered.")
    model_version: str = Field(description="Its registry version.")
    predicted_arr_delay: float = Field(description="Predicted arrival delay, minutes (negative: early).")
    delay_probability: float = Field(ge=0.0, le=1.0, description="Probability of arriving > 15 min late.")
    features_as_of: datetime | None = Field(
        description="Cutoff of the trailing aggregates the online store added (UTC)."
    )
    weather_observed_at: datetime | None = Field(
        description="The weather observation used (UTC); null when none was at most 6 h old."
    )
    stale: bool = Field(
        description="True when the flight departs more than the feature-freshness budget"
        " (MLP_SERVING_FEATURE_FRESHNESS_HOURS, default 30 h) after features_as_of: the online features"
        " are older than the flight needs (weather null, aggregates days behind). The prediction is still"
        " made from them; treat it as degraded."
    )


class BatchResponse(BaseModel):
    """The answers for a batch, in request order."""

    model_config = ConfigDict(protected_namespaces=(), frozen=True, title="BatchResponse")

    request_id: str
    model_name: str
    model_version: str
    predictions: list[Prediction]


class ErrorDetail(BaseModel):
    """One problem with a request, in the shape of pydantic's (and BentoML's 400) error items.

    ``loc`` is the path of the field (empty for the request as a whole); BentoML's 400 items also
    carry pydantic's ``url`` (the page of the error type).
    """

    model_config = ConfigDict(frozen=True)

    type: str
    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer of the API routes (BentoML's validation errors share it).

    ``detail`` lists the problems, each naming its field; BentoML's 500 and 504 answers carry only
    ``error``.
    """

    model_config = ConfigDict(frozen=True)

    error: str
    detail: list[ErrorDetail] = Field(default_factory=list)


def field_path(loc: Sequence[str | int]) -> str:
    """``["flights", 3, "origin"]`` -> ``flights[3].origin``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def unknown_categories(
    flights: Sequence[FlightRequest],
    vocabularies: Mapping[str, frozenset[str]],
    prefix: Sequence[str | int] = (),
    *,
    indexed: bool = True,
) -> list[ErrorDetail]:
    """The carriers and airports of ``flights`` that the model's vocabularies do not hold.

    ``prefix`` is the location of the flights in the body (``("flights",)`` for a batch, so the
    error says ``flights[3].origin``); ``indexed=False`` for a single flight (the body itself).
    """
    errors: list[ErrorDetail] = []
    for index, flight in enumerate(flights):
        for name in CATEGORICAL_FIELDS:
            known = vocabularies.get(name)
            value: str = getattr(flight, name)
            if known is None or value in known:
                continue
            loc: list[str | int] = [*prefix, index, name] if indexed else [*prefix, name]
            what = "carrier" if name == "carrier" else "airport"
            errors.append(
                ErrorDetail(
                    type=f"unknown_{what}",
                    loc=loc,
                    msg=f"{field_path(loc)}: {what} {_quoted(value)} is not one the model knows"
                    f" ({len(known)} known{_examples(known)})",
                )
            )
    return errors


def _examples(known: frozenset[str]) -> str:
    shown = sorted(known)[:5]
    return f", e.g. {', '.join(shown)}" if shown else ""
