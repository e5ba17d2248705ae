"""What the evidence bundle records: the names it reads, :class:`Evidence`, its JSON Schema and checker."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ml_platform.lineage.model import to_json

SCHEMA_ID = "ml_platform.evidence/1"
#: The monitoring assets whose recorded metadata the bundle reads (``ml_platform.defs.monitoring``;
#: not imported: the asset modules cost polars' and whylogs' import).
PROFILES = "flight_feature_profiles"
DRIFT = "drift_report"
DRIFT_SEVERITY = "drift/severity"
DRIFT_ERRORS = "drift/features_error"
DRIFT_WARNINGS = "drift/features_warn"
DRIFT_MODEL_VERSION = "drift/model_version"
DRIFT_MODEL_PARTITION = "drift/model_partition"
DRIFT_REFERENCE = "drift/reference_window"
#: A layer's partitions of one asset are drawn as one node when there are more than this many.
COLLAPSE = 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_VERSION = re.compile(r"^v?(\d+)$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_IMAGE = re.compile(r"^!\[(?P<alt>(?:[^\]\\]|\\.)*)\]\(data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)\)$")
WHO = ("model", "baseline", "champion")
METRIC_ORDER = ("mae", "rmse", "roc_auc", "pr_auc", "brier")
LAYERS = (
    ("raw", "raw partitions"),
    ("validated", "validated partitions"),
    ("features", "feature partitions"),
    ("model", "model version"),
    ("decisions", "evaluation / promotion"),
    ("bento", "Bento"),
    ("deployment", "deployment"),
)


# ---------------------------------------------------------------------------------- the record


@dataclass
class Evidence:
    """The bundle's content: plain JSON data, section by section (the JSON file is :meth:`to_json`)."""

    schema: str
    generated_at: str
    #: name, version, what the start resolved to, training window, aliases now, Bentos, serving roles.
    model: dict[str, Any]
    #: The lineage chain is complete: every link recorded and every cross-check agrees.
    complete: bool
    #: Every link that was not recorded (``Missing`` as JSON); ``on_path`` ones make it incomplete.
    missing: list[dict[str, Any]]
    consistency: list[dict[str, Any]]
    #: What the SVG draws: ``{"layers": [{"name", "title", "nodes": [...]}], "edges": [[from, to]]}``.
    graph: dict[str, Any]
    metrics: dict[str, Any]
    checks: dict[str, Any]
    #: Data profiles, drift and quarantine at training time.
    data: dict[str, Any]
    approvals: dict[str, Any]
    reproduce: dict[str, Any]
    #: The evaluation plots as recorded (``{name, source, media_type, sha256, base64}``).
    plots: list[dict[str, Any]]
    #: The whole lineage chain (``to_json(trace(...))``).
    chain: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """The JSON file's text (strict JSON: no NaN or Infinity)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """The bundle from its JSON; raises ``ValueError`` listing where it does not fit :data:`SCHEMA`."""
        errors = validate(data)
        if errors:
            raise ValueError("not an evidence bundle: " + "; ".join(errors[:10]))
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _object(required: Sequence[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


def _array(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": dict(items)}


_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_BOOL_OR_NULL = {"type": ["boolean", "null"]}
_MISSING = _object(
    ("hop", "ref", "reason", "candidates", "on_path", "missing"),
    hop=_STR,
    ref=_STR,
    reason=_STR,
    candidates=_array(_STR),
    on_path={"type": "boolean"},
    missing={"const": True},
)
_NODE = _object(
    ("id", "label", "status", "members", "detail"),
    id=_STR,
    label=_array(_STR),
    status={"enum": ["ok", "failed", "missing", "absent"]},
    members=_array(_STR),
    detail=_STR,
)
_EVENT = _object(
    (
        "event_id",
        "action",
        "actor",
        "reason",
        "evidence",
        "occurred_at",
        "prev_hash",
        "event_hash",
        "hash_ok",
    ),
    event_id=_STR,
    action=_STR,
    alias=_STR_OR_NULL,
    version=_STR_OR_NULL,
    previous_version=_STR_OR_NULL,
    actor=_STR,
    reason=_STR,
    evidence={"type": "object"},
    occurred_at=_STR,
    prev_hash=_STR,
    event_hash=_STR,
    hash_ok={"type": "boolean"},
    approval={"type": "boolean"},
)
_PIN = _object(
    ("recorded", "materialization", "data_version", "still_latest", "latest_now"),
    recorded=_object(("table", "partition", "content_hash")),
    materialization=_STR_OR_NULL,
    data_version=_STR_OR_NULL,
    still_latest=_BOOL_OR_NULL,
    latest_now={"type": ["object", "null"]},
)
#: The JSON Schema (draft 2020-12 subset) of the bundle's JSON; :func:`validate` checks it.
SCHEMA: dict[str, Any] = {
    "$id": SCHEMA_ID,
    **_object(
        tuple(f.name for f in fields(Evidence)),
        schema={"const": SCHEMA_ID},
        generated_at=_STR,
        model=_object(
            ("name", "version", "resolved", "delay_model", "aliases_now", "bentos", "serving"),
            name=_STR,
            version=_STR,
            resolved=_STR,
            delay_model=_STR_OR_NULL,
            aliases_now=_array(_STR),
            bentos=_array(_STR),
            serving=_array(_STR),
        ),
        complete={"type": "boolean"},
        missing=_array(_MISSING),
        consistency=_array(_object(("name", "ok", "detail"), name=_STR, ok={"type": "boolean"}, detail=_STR)),
        graph=_object(
            ("layers", "edges"),
            layers=_array(_object(("name", "title", "nodes"), name=_STR, title=_STR, nodes=_array(_NODE))),
            edges=_array({"type": "array", "items": _STR, "minItems": 2, "maxItems": 2}),
        ),
        metrics=_object(
            ("evaluations", "training", "mlflow_run_metrics", "notes"),
            evaluations=_array(
                _object(
                    ("evaluation", "passed", "holdout", "champion_version", "table"),
                    evaluation=_STR,
                    passed=_BOOL_OR_NULL,
                    table=_array(
                        _object(
                            ("metric", "model", "baseline", "champion"),
                            metric=_STR,
                            model={"type": ["number", "null"]},
                            baseline={"type": ["number", "null"]},
                            champion={"type": ["number", "null"]},
                        )
                    ),
                )
            ),
            training={"type": "object"},
            mlflow_run_metrics={"type": "object"},
            notes=_array(_STR),
        ),
        checks=_object(
            ("gates", "assets"),
            gates=_array(
                _object(
                    ("evaluation", "passed", "gates", "asset_checks"),
                    evaluation=_STR,
                    passed=_BOOL_OR_NULL,
                    gates=_array({"type": "object"}),
                    asset_checks=_array({"type": "object"}),
                )
            ),
            assets=_array(
                _object(
                    ("asset", "layer", "partitions", "checks", "failures", "without_results"),
                    asset=_STR,
                    layer=_STR,
                    partitions={"type": "integer"},
                    checks=_array(
                        _object(
                            ("name", "passed", "failed", "not_recorded"),
                            name=_STR,
                            passed={"type": "integer"},
                            failed={"type": "integer"},
                            not_recorded={"type": "integer"},
                        )
                    ),
                    failures=_array({"type": "object"}),
                    without_results=_array(_STR),
                )
            ),
        ),
        data=_object(
            ("profiles", "drift_training_window", "drift_against_this_model", "quarantine"),
            profiles=_object(("recorded", "entries", "not_recorded", "note"), recorded={"type": "integer"}),
            drift_training_window=_object(("entries", "note"), entries=_array({"type": "object"})),
            drift_against_this_model=_object(("entries", "note"), entries=_array({"type": "object"})),
            quarantine=_array({"type": "object"}),
        ),
        approvals=_object(
            ("audit_table", "verified", "verify_error", "events", "approvals", "deployment"),
            audit_table=_STR,
            verified=_BOOL_OR_NULL,
            verify_error=_STR_OR_NULL,
            events=_array(_EVENT),
            approvals=_array(_STR),
            deployment={"type": ["object", "null"]},
        ),
        reproduce=_object(
            (
                "pins",
                "holdout_pins",
                "code_version",
                "git_commit",
                "mlflow_run_id",
                "params",
                "commands",
                "notes",
            ),
            pins=_array(_PIN),
            holdout_pins=_array({"type": "object"}),
            code_version=_STR_OR_NULL,
            git_commit=_STR_OR_NULL,
            mlflow_run_id=_STR_OR_NULL,
            params={"type": "object"},
            commands=_array(
                _object(
                    ("command", "status", "note"),
                    command=_STR,
                    status={"enum": ["available", "planned", "equivalent"]},
                    note=_STR,
                )
            ),
            notes=_array(_STR),
        ),
        plots=_array(
            _object(
                ("name", "source", "media_type", "sha256", "base64"),
                name=_STR,
                source=_STR,
                media_type={"const": "image/png"},
                sha256=_STR,
                base64=_STR,
            )
        ),
        chain={"type": "object"},
    ),
}

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def validate(data: Any, schema: Mapping[str, Any] = SCHEMA, where: str = "$") -> list[str]:
    """Where ``data`` does not fit ``schema`` (the JSON Schema subset :data:`SCHEMA` uses); [] if it fits."""
    errors: list[str] = []
    if "const" in schema and data != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}")
    if "enum" in schema and data not in schema["enum"]:
        errors.append(f"{where}: {data!r} is not one of {schema['enum']}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(data, k) for k in kinds):
            return [*errors, f"{where}: expected {' or '.join(kinds)}, got {type(data).__name__}"]
    if isinstance(data, dict):
        errors += [f"{where}: lacks {k!r}" for k in schema.get("required", []) if k not in data]
        for key, sub in schema.get("properties", {}).items():
            if key in data:
                errors += validate(data[key], sub, f"{where}.{key}")
    if isinstance(data, list):
        if "minItems" in schema and len(data) < schema["minItems"]:
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(data) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(data):
                errors += validate(item, schema["items"], f"{where}[{i}]")
    return errors


def _clean(value: Any) -> Any:
    """``value`` as strict JSON data: tuples become lists, NaN and infinities None, others ``str``."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return _clean(to_json(value)) if hasattr(value, "__dataclass_fields__") else str(value)


def json_sha256(evidence: Evidence) -> str:
    """The sha256 of the bundle's JSON file (what the HTML footer names)."""
    return hashlib.sha256(evidence.to_json().encode("utf-8")).hexdigest()
