"""The OpenAPI document of the served delay model (``GET /docs.json``), built from the API's models.

BentoML generates a document from the same pydantic models, but it is not true, and not valid: it
declares OpenAPI 3.0.2 yet carries JSON Schema 2020-12 (pydantic's dialect: numeric
``exclusiveMinimum``, ``examples``, ``{"type": "null"}``) and keys of its own (``root_input``); it
loses the ``null`` of the response's optional times when it inlines them; it documents errors as
``{"error": string, "detail": string}`` where every answer carries a *list* of ``{type, loc, msg}``;
and it leaves out the statuses the service answers (401, 413, 415, 422, 503). So the service
serves this document instead (the edge middleware answers ``/docs.json`` with it:
:attr:`~ml_platform.lib.serving.http.EdgeConfig.documents`).

It is OpenAPI **3.1.0**, whose schema dialect is the one pydantic writes, so the models' schemas
go in as pydantic makes them (:func:`model_schemas`). Built when the service starts, it says what
that service really does:

* the request schemas of :mod:`~ml_platform.lib.serving.schema` (strict ISO 8601 departures,
  bounds, patterns), narrowed to the served model: ``carrier``, ``origin`` and ``dest`` list the
  codes its vocabularies hold (``enum``: any other well-formed code is a 422), and the rule that
  origin and dest differ is a ``not`` over the airports both lists share, besides its description;
* ``maxItems`` of a batch is the service's ``MLP_SERVING_MAX_BATCH`` (413 beyond);
* every status the API routes answer, each with its body (:class:`ErrorResponse` for errors) and
  the ``X-Request-ID`` and ``X-Model-Version`` headers the edge middleware adds (all but BentoML's
  504, which its timeout middleware sends from outside ours);
* bearer authentication (and the 401) only when a token is configured; the probes and
  ``/metrics`` are open.

schemathesis checks the document against the live service (``make test-live``:
``ml_platform_tests/serving/test_api_contract.py``), every check on.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ml_platform.lib.serving.schema import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    FlightRequest,
    Prediction,
)

OPENAPI_VERSION: Final = "3.1.0"
REF_PREFIX: Final = "#/components/schemas/"
BEARER: Final = "bearer"
JSON: Final = "application/json"
TEXT: Final = "text/plain"


@dataclass(frozen=True)
class Operation:
    """One API route: ``POST path``, its request and its answer."""

    path: str
    name: str
    summary: str
    request: type[BaseModel]
    response: type[BaseModel]


#: The API routes, as the service declares them (``@bentoml.api(route=...)``).
OPERATIONS: Final = (
    Operation("/predict", "predict", "Predict the arrival delay of one flight.", FlightRequest, Prediction),
    Operation(
        "/predict_batch",
        "predict_batch",
        "Predict the arrival delays of several flights (answered in request order).",
        BatchRequest,
        BatchResponse,
    ),
)

#: The error statuses of the API routes and when each is answered (the body is an ErrorResponse).
ERRORS: Final = {
    "400": "The body is not JSON or does not match the request schema (pydantic's errors, one per"
    " problem, each naming its field in `loc`; `same_airports` when origin and dest are equal).",
    "401": "A token is configured and `Authorization: Bearer <token>` is missing or wrong.",
    "413": "The body is larger than the service's limit, or a batch has more flights than maxItems.",
    "415": "A Content-Type other than application/json.",
    "422": "Well formed, but a carrier or airport the served model was not trained on.",
    "500": "An unexpected error (see the server log); the body carries `error` only.",
    "503": "The online feature store cannot answer (down, or no snapshot yet).",
    "504": "Not answered within the service's timeout (BentoML's answer: `error` only, no X-headers).",
}
#: The headers the edge middleware adds to every answer of an API route.
HEADERS: Final = {
    "X-Request-ID": "The request id: the caller's X-Request-ID when it is 1-128 characters of"
    " [A-Za-z0-9._:-], else a new one.",
    "X-Model-Version": "The registry version of the served model.",
}
#: BentoML's own routes: the probes and the Prometheus scrape (open, plain text).
INFRA: Final = {
    "/livez": ("Liveness: 200 while the process is up.", ("200",)),
    "/healthz": ("Liveness (deprecated alias of /livez).", ("200",)),
    "/readyz": ("Readiness: 200 once the model is loaded and the store holds a snapshot.", ("200", "503")),
    "/metrics": ("Prometheus metrics (BentoML's and the mlp_* serving series).", ("200",)),
}
DESCRIPTION: Final = (
    "Arrival-delay predictions of the registered delay model, from what a caller knows before"
    " departure plus the online features the service adds. Every answer of /predict and"
    " /predict_batch names the model version and the request id (body and X-headers); every error"
    " is an ErrorResponse: `error` and a list of `detail` items ({type, loc, msg}). Requests are"
    " validated strictly: JSON types are not coerced, unknown fields are refused,"
    " scheduled_departure is an ISO 8601 string (not a number or a digit string), origin and dest"
    " differ."
)


def model_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """The JSON schemas of ``models`` and of every model they use, by name, refs into components.

    Request models are written as pydantic validates them, responses as it serializes them.
    """
    responses = {Prediction, BatchResponse, ErrorResponse}
    pairs = [(model, "serialization" if model in responses else "validation") for model in models]
    _, top = models_json_schema(pairs, ref_template=REF_PREFIX + "{model}")  # type: ignore[arg-type]
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


def api_document(
    *,
    title: str,
    version: str,
    vocabularies: Mapping[str, frozenset[str]] | None = None,
    max_batch: int | None = None,
    bearer_auth: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service (see the module doc).

    Args:
        title: the service's name.
        version: what ``info.version`` says (the served model, e.g. ``delay_model/3``).
        vocabularies: the served model's codes by request field (``carrier``, ``origin``,
            ``dest``); a field without one keeps just its pattern.
        max_batch: the most flights a batch may have.
        bearer_auth: whether the API routes need ``Authorization: Bearer <token>``.
    """
    schemas = model_schemas(*(m for op in OPERATIONS for m in (op.request, op.response)), ErrorResponse)
    if vocabularies:
        narrow_to_vocabularies(schemas["FlightRequest"], vocabularies)
    if max_batch is not None:
        schemas["BatchRequest"]["properties"]["flights"]["maxItems"] = max_batch
    components: dict[str, Any] = {"schemas": schemas, "headers": _headers()}
    paths: dict[str, Any] = {op.path: {"post": _operation(op, bearer_auth=bearer_auth)} for op in OPERATIONS}
    for path, (description, statuses) in INFRA.items():
        paths[path] = {
            "get": {
                "tags": ["Infrastructure"],
                "description": description,
                "operationId": path.strip("/"),
                "security": [],
                "responses": {
                    status: {
                        "description": "OK" if status == "200" else "Not ready",
                        "content": {TEXT: {"schema": {"type": "string"}}},
                    }
                    for status in statuses
                },
            }
        }
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "tags": [
            {"name": "Service APIs", "description": "Predictions."},
            {"name": "Infrastructure", "description": "Probes and metrics (no token needed)."},
        ],
        "paths": paths,
        "components": components,
    }
    if bearer_auth:
        components["securitySchemes"] = {
            BEARER: {"type": "http", "scheme": "bearer", "description": "MLP_SERVING_API_TOKEN"}
        }
        document["security"] = [{BEARER: []}]
    return document


def narrow_to_vocabularies(flight: dict[str, Any], vocabularies: Mapping[str, frozenset[str]]) -> None:
    """Restrict the FlightRequest schema ``flight`` (in place) to the codes the model knows.

    Each vocabulary becomes the field's ``enum`` (its examples too, when the example is not in
    it), and equal origin and dest are excluded (``not``) for the airports both vocabularies share.
    """
    properties = flight["properties"]
    for name, known in vocabularies.items():
        if name not in properties or not known:
            continue
        field = properties[name]
        codes = sorted(known)
        field["enum"] = codes
        field["description"] += " One of the codes the served model knows: another well-formed code is a 422."
        if not set(field.get("examples", ())) <= known:
            field["examples"] = [codes[0]]
    origin, dest = properties.get("origin", {}), properties.get("dest", {})
    if "enum" in origin and "enum" in dest:
        if origin["examples"] == dest["examples"]:
            other = [code for code in dest["enum"] if code not in origin["examples"]]
            dest["examples"] = other[:1] or dest["examples"]
        shared = sorted(set(origin["enum"]) & set(dest["enum"]))
        if shared:
            flight["not"] = {
                "description": "origin and dest are the same airport",
                "anyOf": [
                    {
                        "properties": {"origin": {"const": code}, "dest": {"const": code}},
                        "required": ["origin", "dest"],
                    }
                    for code in shared
                ],
            }


def _headers() -> dict[str, Any]:
    return {
        name: {"description": description, "required": True, "schema": {"type": "string"}}
        for name, description in HEADERS.items()
    }


def _operation(op: Operation, *, bearer_auth: bool) -> dict[str, Any]:
    headers = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}
    responses: dict[str, Any] = {
        "200": {
            "description": "The prediction.",
            "headers": headers,
            "content": {JSON: {"schema": {"$ref": REF_PREFIX + op.response.__name__}}},
        }
    }
    for status, description in ERRORS.items():
        if status == "401" and not bearer_auth:
            continue
        responses[status] = {
            "description": description,
            "content": {JSON: {"schema": {"$ref": REF_PREFIX + ErrorResponse.__name__}}},
        }
        if status != "504":
            responses[status]["headers"] = copy.deepcopy(headers)
    return {
        "tags": ["Service APIs"],
        "summary": op.summary,
        "operationId": op.name,
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": REF_PREFIX + op.request.__name__}}},
        },
        "responses": responses,
    }
