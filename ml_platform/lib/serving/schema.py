"""The HTTP contract of the served delay model: request and response models (pydantic v2).

No BentoML here: the service (:mod:`ml_platform.serving.service`) uses these models as its API
types, and clients and tests can import them without a server.

A request carries what a caller knows before departure (the online store adds the rest):

* ``carrier``: the IATA airline designator, two capital letters or digits (``"B6"``, ``"9E"``);
* ``flight``: the flight number, 1 to 9999;
* ``origin``, ``dest``: IATA airport codes, three capital letters, different from each other;
* ``scheduled_departure``: an ISO 8601 date-time. With an offset (``...Z``, ``...-05:00``) it is
  that instant; without one it is the local time of the New York airports
  (``America/New_York``, the time zone of the schedules the model was trained on). It is
  normalized to UTC; it must lie in [1970, 2100);
* ``distance``: great-circle miles, finite, in (0, 12500].

Validation is strict (JSON types are not coerced: ``"725"`` is not a flight number, ``true`` is not
a number) and unknown fields are rejected (``extra="forbid"``), so a misspelt field never goes
unnoticed. Each failure names its field: pydantic's ``loc`` (``["flights", 3, "origin"]``) and a
message that says what is expected.

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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

#: The time zone of a departure given without an offset (the NYC airports' schedules).
LOCAL_TZ: Final = ZoneInfo("America/New_York")
EARLIEST_DEPARTURE: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DEPARTURE: Final = datetime(2100, 1, 1, tzinfo=UTC)
MAX_DISTANCE_MILES: Final = 12_500.0
CARRIER_PATTERN: Final = r"^[A-Z0-9]{2}$"
AIRPORT_PATTERN: Final = r"^[A-Z]{3}$"
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

    Raises:
        ValueError: the instant is outside ``[1970, 2100)``.
    """
    try:
        aware = moment.replace(tzinfo=LOCAL_TZ) if moment.tzinfo is None else moment
        utc = aware.astimezone(UTC)
    except (OverflowError, ValueError) as exc:  # year 1 or 9999 shifted out of range
        raise ValueError(f"{moment.isoformat()} is outside [1970, 2100)") from exc
    if not EARLIEST_DEPARTURE <= utc < LATEST_DEPARTURE:
        raise ValueError(f"{moment.isoformat()} is outside [1970, 2100)")
    return utc


def _departure(value: datetime) -> datetime:
    try:
        return to_utc(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "departure_range", "must be a date-time in [1970, 2100), got {got}", {"got": value.isoformat()}
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
    """One flight to predict, as the caller knows it before departure."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, title="FlightRequest")

    carrier: Carrier
    flight: int = Field(ge=1, le=9999, description="Flight number.", examples=[725])
    origin: Airport
    dest: Airport
    scheduled_departure: Annotated[
        datetime,
        Field(
            description="ISO 8601; without an offset it is America/New_York local time. Normalized to UTC.",
            examples=["2013-01-15T10:45:00-05:00"],
        ),
        AfterValidator(_departure),
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
    """One problem with a request, in the shape of pydantic's (and BentoML's 400) error items."""

    model_config = ConfigDict(frozen=True)

    type: str
    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer of the service (BentoML's validation errors share it)."""

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
