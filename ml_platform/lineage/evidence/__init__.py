"""The evidence bundle of a model version: one self-contained HTML file and the same content as JSON.

``mlp evidence <version|alias>`` / :func:`build_evidence` + :func:`write_evidence`. For auditors, a
bundle holds, read from what the platform recorded and nothing else:

* a header: model name and version, when the bundle was generated, whether the lineage chain is
  complete, and every link that was not recorded (:class:`~ml_platform.lineage.model.Missing`);
* a picture of the lineage graph (an inline SVG, :mod:`ml_platform.lineage.evidence_svg`): raw ->
  validated -> features -> model -> evaluation/promotion -> Bento -> deployment, the partitions of
  an asset collapsed into one node when there are many;
* metrics: the holdout metrics of each evaluation against the naive baseline and the champion of
  the time (``evaluation/{model,baseline,champion}_*``), the training facts, the plots the
  evaluation rendered (PNG, inlined as ``data:`` URIs);
* check results: the gates as ``evaluation/gates`` recorded them, and the asset checks of every
  partition of the chain, counted per check with the failures listed;
* data profiles and drift at training time: the ``flight_feature_profiles`` materializations that
  profiled exactly the feature versions the model trained on, the ``drift_report`` days of the
  training window recorded before it trained, and the drift reports judged against this version
  (read through their recorded metadata; when nothing is recorded the bundle says so);
* the approval and alias history: every audit-log event about the version (actor, time, reason,
  evidence, hash), the hash-chain verification, the deployment log's events;
* how to reproduce: the pins the model recorded (verbatim) with the feature materialization and
  Dagster data version each resolved to, whether each pin is still the latest recorded version of
  its partition, the code version, git commit, MLflow run id and params, and the commands.

The trace itself is :func:`ml_platform.lineage.trace`; what it does not expose (the evaluation's
champion metrics and plots, the verbatim gates and pins, the audit events' evidence, profiles and
drift) is read here from the same recorded metadata, never recomputed and never guessed.

The HTML references nothing outside itself (no CSS, script, font or image files, no links), escapes
every text, and carries the sha256 of the JSON file's bytes in its footer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.evidence_svg import render_svg
from ml_platform.lineage.model import (
    DeploymentHop,
    LineageChain,
    Missing,
    ModelHop,
    PartitionNode,
    RunHop,
    to_json,
)
from ml_platform.lineage.sources import LineageSources
from ml_platform.lineage.trace import CHECKS, DELAY_MODEL, EVALUATION, FEATURES, PROMOTION, trace

if TYPE_CHECKING:
    import dagster as dg

    from ml_platform.settings import PlatformSettings

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


# ---------------------------------------------------------------------------------- building


def build_evidence(
    instance: dg.DagsterInstance,
    settings: PlatformSettings | LineageSources,
    model_version: str,
    *,
    now: datetime | None = None,
) -> Evidence:
    """The evidence bundle of ``model_version`` (``3``, ``v3``, or an alias such as ``champion``).

    Raises:
        LineageError: the version or alias is unknown (the message says what was tried).
    """
    sources = LineageSources.of(settings)
    start = model_version.strip()
    chain = trace(instance, sources, start, kind="version" if _VERSION.match(start) else "alias")
    return _Builder(instance, sources, chain).build(now or datetime.now(UTC))


class _Builder:
    def __init__(self, instance: dg.DagsterInstance, sources: LineageSources, chain: LineageChain) -> None:
        self.instance = instance
        self.src = sources
        self.chain = chain
        self.model = chain.model if isinstance(chain.model, ModelHop) else None
        self.run = chain.mlflow_run if isinstance(chain.mlflow_run, RunHop) else None
        mat = None if self.model is None else self.model.materialization
        self.model_record = (
            None if mat is None else _record(instance, mat.asset, mat.partition, mat.storage_id)
        )
        self.evaluations = [] if self.model is None else self.model.evaluations
        self.eval_records = [
            _record(
                instance, e.materialization.asset, e.materialization.partition, e.materialization.storage_id
            )
            for e in self.evaluations
        ]

    @property
    def version(self) -> str:
        if self.model is not None:
            return self.model.version
        match = re.search(r"v(\d+)", self.chain.start.resolved)
        return match.group(1) if match else self.chain.start.value

    def build(self, now: datetime) -> Evidence:
        chain = self.chain
        pins = self._pins()
        holdout = self._holdout_pins()
        evidence = Evidence(
            schema=SCHEMA_ID,
            generated_at=now.astimezone(UTC).isoformat(timespec="seconds"),
            model=self._model(),
            complete=chain.complete,
            missing=[to_json(m) for m in chain.missing],
            consistency=[to_json(c) for c in chain.consistency],
            graph=self._graph(holdout),
            metrics=self._metrics(),
            checks=self._checks(),
            data=self._data(pins),
            approvals=self._approvals(),
            reproduce=self._reproduce(pins, holdout),
            plots=self._plots(),
            chain=to_json(chain),
        )
        return Evidence(**_clean(evidence.to_dict()))

    # ------------------------------------------------------------------------------ header

    def _model(self) -> dict[str, Any]:
        chain, model = self.chain, self.model
        dep = chain.deployment if isinstance(chain.deployment, DeploymentHop) else None
        return {
            "name": chain.model_name,
            "version": self.version,
            "start": chain.start.value,
            "resolved": chain.start.resolved,
            "delay_model": None
            if model is None or model.materialization is None
            else model.materialization.id,
            "training_window": None if model is None else model.training_window,
            "weights_digest": None if model is None else model.weights_digest,
            "aliases_now": [] if model is None else list(model.aliases_now),
            "registry_source": None if model is None else model.source,
            "mlflow_run_id": None if self.run is None else self.run.run_id,
            "bentos": [b.tag for b in chain.bentos],
            "serving": []
            if dep is None
            else [
                f"{r.role}: {r.bento_tag} (desired state generation {dep.desired_generation},"
                f" {dep.desired_mode})"
                for r in dep.roles
            ],
        }

    # ------------------------------------------------------------------------------- graph

    def _graph(self, holdout: list[dict[str, Any]]) -> dict[str, Any]:
        chain = self.chain
        layers: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in LAYERS}
        member_of: dict[str, str] = {}
        edges: list[tuple[str, str]] = []

        def edge(a: str | None, b: str | None) -> None:
            if a and b and (a, b) not in edges:
                edges.append((a, b))

        for name, items in (("raw", chain.raw), ("validated", chain.validated), ("features", chain.features)):
            layers[name] = _partition_nodes(items, member_of)
        for items in (chain.validated, chain.features):
            for item in items:
                if isinstance(item, PartitionNode):
                    for up in item.upstream:
                        edge(_source_of(up, member_of), member_of.get(item.id))
        holdout_id = None
        if holdout:
            parts = sorted(str(p.get("partition")) for p in holdout)
            holdout_id = f"holdout:{parts[0]}..{parts[-1]}"
            layers["features"].append(
                _node(
                    holdout_id,
                    [f"{len(parts)} {FEATURES} partitions", f"holdout {parts[0]}..{parts[-1]}"]
                    if len(parts) > 1
                    else [f"{FEATURES}[{parts[0]}]", "holdout"],
                    "ok",
                    [rec.describe_pin(pin) for e in holdout if (pin := rec.upstream_pin(e))],
                    "evaluation holdout (as model_evaluation's lineage/upstream recorded it): "
                    + ", ".join(parts),
                )
            )
        model_id = None
        if isinstance(chain.model, ModelHop):
            m = chain.model
            model_id = f"model:{m.model_name}:v{m.version}"
            label = [f"{m.model_name} v{m.version}"]
            label.append(m.materialization.label if m.materialization else "no delay_model materialization")
            if self.run is not None:
                label.append(f"MLflow run {self.run.run_id[:12]}")
            layers["model"].append(
                _node(
                    model_id,
                    label,
                    "ok" if m.materialization else "missing",
                    [m.materialization.id] if m.materialization else [],
                    f"{m.model_name} v{m.version}; aliases now: {', '.join(m.aliases_now) or 'none'};"
                    f" window {m.training_window}",
                )
            )
        else:
            model_id = _gap_node(layers["model"], "model", chain.model, f"{chain.model_name} v{self.version}")
        if isinstance(chain.mlflow_run, Missing):
            _gap_node(layers["model"], "mlflow_run", chain.mlflow_run, "MLflow run")
        for node in layers["features"]:
            if node["id"] != holdout_id:
                edge(node["id"], model_id)
        eval_ids: dict[str, str] = {}
        for ev in self.evaluations:
            mat = ev.materialization
            eval_ids[mat.run_id] = mat.id
            layers["decisions"].append(
                _node(
                    mat.id,
                    [
                        mat.label,
                        f"gates {'passed' if ev.passed else 'FAILED'}",
                        f"champion then: {ev.champion_version}",
                    ],
                    "ok" if ev.passed else "failed",
                    [mat.id],
                    "; ".join(f"{g.get('name')}: {g.get('detail')}" for g in ev.gates) or "no gates recorded",
                )
            )
            edge(model_id, mat.id)
            edge(holdout_id, mat.id)
        promo_ids: dict[str, str] = {}
        for promo in [] if self.model is None else self.model.promotions:
            mat = promo.materialization
            promo_ids[mat.run_id] = mat.id
            layers["decisions"].append(
                _node(
                    mat.id,
                    [
                        mat.label,
                        f"decision: {promo.decision}",
                        f"champion {promo.champion_before} -> {promo.champion_after}",
                    ],
                    "ok",
                    [mat.id],
                    f"{promo.decision}: {promo.reason}",
                )
            )
            edge(model_id, mat.id)
        if not layers["decisions"]:
            layers["decisions"].append(
                _node(
                    "decisions:none",
                    ["no evaluation recorded"],
                    "absent",
                    [],
                    "no model_evaluation judged it",
                )
            )
        for b in chain.bentos:
            bento_id = f"bento:{b.tag}"
            layers["bento"].append(
                _node(
                    bento_id,
                    [b.materialization.label, b.tag, f"lock {(b.lock_sha256 or '-')[:12]}"],
                    "ok",
                    [b.materialization.id, *b.also_built_by],
                    f"{b.tag} built {b.built_at} by run {b.materialization.run_id}",
                )
            )
            for entry in b.upstream:
                asset, run_id = entry.get("asset"), str(entry.get("run_id"))
                if asset == DELAY_MODEL:
                    edge(model_id, bento_id)
                elif asset == EVALUATION and run_id in eval_ids:
                    edge(eval_ids[run_id], bento_id)
                elif asset == PROMOTION and run_id in promo_ids:
                    edge(promo_ids[run_id], bento_id)
        if not chain.bentos:
            layers["bento"].append(
                _node(
                    "bento:none",
                    ["no Bento built"],
                    "absent",
                    [],
                    "no delay_bento build of this version was recorded",
                )
            )
        dep = chain.deployment
        if isinstance(dep, DeploymentHop):
            for role in dep.roles:
                node_id = f"deployment:{role.role}:{role.bento_tag}"
                layers["deployment"].append(
                    _node(
                        node_id,
                        [
                            f"serving: {role.role}",
                            f"generation {dep.desired_generation} ({dep.desired_mode})",
                            f"v{role.model_version}",
                        ],
                        "ok",
                        [],
                        f"desired state {dep.desired_path}: {role.role} {role.bento_tag}",
                    )
                )
                edge(f"bento:{role.bento_tag}", node_id)
            serving = {r.bento_tag for r in dep.roles}
            for ref in dep.materializations:
                if ref.bento_tag in serving:
                    continue
                layers["deployment"].append(
                    _node(
                        ref.materialization.id,
                        [
                            ref.materialization.label,
                            f"generation {ref.generation} {ref.role}",
                            "not serving now",
                        ],
                        "absent",
                        [ref.materialization.id],
                        f"deployed {ref.bento_tag} (applied: {ref.applied})",
                    )
                )
                edge(f"bento:{ref.bento_tag}", ref.materialization.id)
            for tag in dep.rolled_back:
                node_id = f"rolled_back:{tag}"
                layers["deployment"].append(
                    _node(node_id, ["rolled back", tag], "absent", [], f"{tag} was rolled back")
                )
                edge(f"bento:{tag}", node_id)
        elif isinstance(dep, Missing):
            _gap_node(layers["deployment"], "deployment", dep, "deployment")
        if not layers["deployment"]:
            layers["deployment"].append(
                _node(
                    "deployment:none",
                    ["not deployed"],
                    "absent",
                    [],
                    "no desired state or deployment names its Bentos",
                )
            )
        for name, _ in LAYERS:
            if not layers[name]:
                layers[name].append(
                    _node(f"{name}:none", ["none recorded"], "absent", [], f"no {name} recorded")
                )
        return {
            "layers": [{"name": name, "title": title, "nodes": layers[name]} for name, title in LAYERS],
            "edges": [list(e) for e in edges],
        }

    # ----------------------------------------------------------------------------- metrics

    def _metrics(self) -> dict[str, Any]:
        evaluations = []
        notes = []
        for ev, record in zip(self.evaluations, self.eval_records, strict=True):
            meta = {} if record is None else rec.meta_of(record)
            values: dict[str, dict[str, float]] = {}
            for key in meta:
                for who in WHO:
                    prefix = f"evaluation/{who}_"
                    if key.startswith(prefix):
                        number = rec.value(record, key)  # type: ignore[arg-type]
                        if isinstance(number, int | float) and not isinstance(number, bool):
                            values.setdefault(key.removeprefix(prefix), {})[who] = float(number)
            names = [m for m in METRIC_ORDER if m in values] + sorted(set(values) - set(METRIC_ORDER))
            evaluations.append(
                {
                    "evaluation": ev.materialization.id,
                    "run_id": ev.materialization.run_id,
                    "timestamp": ev.materialization.timestamp,
                    "passed": ev.passed,
                    "holdout": ev.holdout,
                    "champion_version": ev.champion_version,
                    "table": [{"metric": m, **{w: values[m].get(w) for w in WHO}} for m in names],
                }
            )
            if record is None:
                notes.append(f"{ev.materialization.id}: its record could not be read back; no metrics shown")
            elif not any(v.get("champion") is not None for v in values.values()):
                notes.append(
                    f"{ev.materialization.id}: no champion metrics recorded (champion then:"
                    f" {ev.champion_version}); the comparison is against the naive baseline only"
                )
        if not self.evaluations:
            notes.append(
                "no model_evaluation materialization judged this version: no holdout metrics are recorded"
            )
        training: dict[str, Any] = {}
        if self.model_record is not None:
            for key in (
                keys.TRAINING_WINDOW,
                keys.TRAINING_ROWS,
                keys.TRAINING_VALIDATION_ROWS,
                "training/best_val_loss",
                keys.TRAINING_SAMPLES_PER_SECOND,
                keys.TRAINING_DEVICE,
                keys.TRAINING_WEIGHTS_DIGEST,
                keys.HPO_STUDY,
            ):
                found = rec.value(self.model_record, key)
                if found is not None:
                    training[key] = found
        else:
            notes.append("no delay_model materialization of this version: training facts are not recorded")
        return {
            "evaluations": evaluations,
            "training": training,
            "mlflow_run_metrics": {} if self.run is None else dict(sorted(self.run.metrics.items())),
            "notes": notes,
        }

    def _plots(self) -> list[dict[str, Any]]:
        out = []
        for ev, record in zip(self.evaluations, self.eval_records, strict=True):
            if record is None:
                continue
            for key in sorted(rec.meta_of(record)):
                if not key.startswith("evaluation/plot_"):
                    continue
                match = _IMAGE.match(str(rec.value(record, key)).strip())
                if match is None:
                    continue
                data = match.group("data")
                try:
                    png = base64.b64decode(data, validate=True)
                except ValueError:
                    continue
                if not png.startswith(PNG_MAGIC):
                    continue
                out.append(
                    {
                        "name": key.removeprefix("evaluation/plot_"),
                        "source": f"{ev.materialization.id} {key}",
                        "media_type": "image/png",
                        "sha256": hashlib.sha256(png).hexdigest(),
                        "base64": data,
                    }
                )
        return out

    # ------------------------------------------------------------------------------ checks

    def _checks(self) -> dict[str, Any]:
        gates = []
        for ev, record in zip(self.evaluations, self.eval_records, strict=True):
            recorded = None if record is None else rec.value(record, keys.EVALUATION_GATES)
            gates.append(
                {
                    "evaluation": ev.materialization.id,
                    "passed": ev.passed,
                    # verbatim, as evaluation/gates recorded them (comparisons included)
                    "gates": [dict(g) for g in recorded] if isinstance(recorded, list) else ev.gates,
                    "asset_checks": [to_json(c) for c in ev.checks],
                }
            )
        assets = []
        for layer, items in (
            ("raw", self.chain.raw),
            ("validated", self.chain.validated),
            ("features", self.chain.features),
        ):
            by_asset: dict[str, list[PartitionNode]] = {}
            for item in items:
                if isinstance(item, PartitionNode):
                    by_asset.setdefault(item.materialization.asset, []).append(item)
            for asset, nodes in sorted(by_asset.items()):
                declared = CHECKS.get(asset, ())
                counts: dict[str, dict[str, Any]] = {
                    n: {"name": n, "passed": 0, "failed": 0, "not_recorded": 0} for n in declared
                }
                failures = []
                without = []
                for node in nodes:
                    if not node.checks:
                        without.append(node.materialization.label)
                    results = {c.name: c for c in node.checks}
                    for name in declared:
                        found = results.get(name)
                        if found is None or found.passed is None:
                            counts[name]["not_recorded"] += 1
                        elif found.passed:
                            counts[name]["passed"] += 1
                        else:
                            counts[name]["failed"] += 1
                    for c in node.checks:
                        if c.passed is False:
                            failures.append(
                                {
                                    "partition": node.materialization.partition,
                                    "materialization": node.id,
                                    "check": c.name,
                                    "severity": c.severity,
                                    "description": c.description,
                                }
                            )
                assets.append(
                    {
                        "asset": asset,
                        "layer": layer,
                        "partitions": len(nodes),
                        "checks": list(counts.values()),
                        "failures": failures,
                        "without_results": without if declared else [],
                    }
                )
        return {"gates": gates, "assets": assets}

    # -------------------------------------------------------------------------------- data

    def _pins(self) -> list[dict[str, Any]]:
        """The model's ``lineage/upstream`` pins, verbatim, each with what it resolved to and if current."""
        if self.model_record is None:
            return []
        entries = [e for e in rec.upstream_entries(self.model_record) or [] if rec.upstream_pin(e)]
        resolved: dict[tuple[Any, ...], PartitionNode] = {}
        for item in self.chain.features:
            if isinstance(item, PartitionNode):
                pin = _node_pin(item)
                resolved[pin] = item
        partitions = sorted({str(e["partition"]) for e in entries})
        latest: dict[tuple[str, str], Any] = {}
        for table in sorted({str(e["table"]) for e in entries}):
            for record in rec.fetch(self.instance, table, partitions=partitions):
                latest[(table, str(record.asset_materialization.partition))] = record  # type: ignore[union-attr]
        out = []
        for entry in entries:
            found = rec.upstream_pin(entry)
            assert found is not None
            pin = found
            node = resolved.get(pin)
            now = latest.get((pin[0], pin[1]))
            now_pin = None if now is None else rec.record_pin(now)
            out.append(
                {
                    "recorded": dict(entry),
                    "materialization": None if node is None else node.id,
                    "data_version": None if node is None else node.materialization.data_version,
                    "still_latest": None if now_pin is None else now_pin == pin,
                    "latest_now": None
                    if now is None or now_pin == pin
                    else {
                        "materialization": rec.materialization(now).id,
                        "table_version": None if now_pin is None else now_pin[2],
                        "commit": None if now_pin is None else now_pin[3] or None,
                        "content_hash": None if now_pin is None else now_pin[4],
                    },
                }
            )
        return out

    def _holdout_pins(self) -> list[dict[str, Any]]:
        """The first evaluation's holdout pins (its ``lineage/upstream`` entries naming a table)."""
        for record in self.eval_records:
            if record is not None:
                return [e for e in rec.upstream_entries(record) or [] if rec.upstream_pin(e)]
        return []

    def _data(self, pins: list[dict[str, Any]]) -> dict[str, Any]:
        trained = {rec.upstream_pin(p["recorded"]): p for p in pins}
        days = sorted(str(p["recorded"]["partition"]) for p in pins)
        model_sid = None if self.model_record is None else self.model_record.storage_id
        profiles: dict[str, Any] = {}
        for record in rec.fetch(self.instance, PROFILES, partitions=days) if days else []:
            for entry in rec.upstream_entries(record) or []:
                pin = rec.upstream_pin(entry)
                if pin not in trained:
                    continue
                before = model_sid is not None and record.storage_id < model_sid
                day = pin[1]  # type: ignore[index]
                kept = profiles.get(day)
                # prefer the newest profile recorded before the model trained, else the first one after
                if kept is None or (
                    before and (not kept["before_training"] or record.storage_id > kept["_sid"])
                ):
                    s = rec.storage(record)
                    profiles[day] = {
                        "_sid": record.storage_id,
                        "partition": day,
                        "profile": rec.materialization(record).id,
                        "timestamp": rec.materialization(record).timestamp,
                        "before_training": before,
                        "columns": rec.value(record, "profile/columns"),
                        "rows": rec.value(record, "profile/rows"),
                        "bytes": rec.value(record, "profile/bytes"),
                        "table_version": s.table_version,
                        "commit": s.commit,
                        "content_hash": s.content_hash,
                    }
        entries = [{k: v for k, v in profiles[d].items() if k != "_sid"} for d in sorted(profiles)]
        not_profiled = [d for d in days if d not in profiles]
        if not days:
            note = (
                "the model recorded no training pins: which data it trained on is not recorded, so no"
                " profile can be matched"
            )
        elif not entries:
            note = (
                f"not recorded: no {PROFILES} materialization profiled the exact feature versions this model"
                f" trained on ({len(days)} days {days[0]}..{days[-1]}); no profile is shown"
            )
        elif not_profiled:
            note = (
                f"{len(entries)} of {len(days)} training days have a recorded profile of the version trained"
            )
        else:
            note = (
                f"every one of the {len(days)} training days has a recorded profile of the version trained on"
            )
        drift_window: list[dict[str, Any]] = []
        drift_model: list[dict[str, Any]] = []
        window = set(days)
        for record in rec.fetch(self.instance, DRIFT):
            partition = str(record.asset_materialization.partition)  # type: ignore[union-attr]
            report = _drift_entry(record)
            if report["model_version"] == self.version:
                drift_model.append(report)
            if partition in window and model_sid is not None and record.storage_id < model_sid:
                drift_window.append(report)
        latest_window: dict[str, dict[str, Any]] = {}
        for report in drift_window:  # oldest first: keep the newest report of each day before training
            latest_window[report["partition"]] = report
        counts: dict[str, int] = {}
        for report in drift_model:
            counts[str(report["severity"])] = counts.get(str(report["severity"]), 0) + 1
        return {
            "profiles": {
                "asset": PROFILES,
                "training_days": len(days),
                "recorded": len(entries),
                "entries": entries,
                "not_recorded": not_profiled,
                "note": note,
            },
            "drift_training_window": {
                "entries": [latest_window[d] for d in sorted(latest_window)],
                "note": (
                    f"the newest {DRIFT} of each training day recorded before the model trained (drift of"
                    " that day against the champion of the time)"
                    if latest_window
                    else f"not recorded: no {DRIFT} of the training window's days was recorded before this"
                    " model trained"
                ),
            },
            "drift_against_this_model": {
                "entries": drift_model,
                "severity_counts": counts,
                "note": (
                    f"{len(drift_model)} {DRIFT} materialization(s) judged days against this version's"
                    " training window (drift/model_version)"
                    if drift_model
                    else f"not recorded: no {DRIFT} materialization judged drift against this version"
                ),
            },
            "quarantine": self._quarantine(),
        }

    def _quarantine(self) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for item in self.chain.validated:
            if not isinstance(item, PartitionNode):
                continue
            asset = item.materialization.asset
            row = out.setdefault(
                asset,
                {
                    "asset": asset,
                    "partitions": 0,
                    "quarantined_rows": 0,
                    "not_recorded": 0,
                    "with_quarantine": [],
                },
            )
            row["partitions"] += 1
            rows = item.quality.get(keys.QUALITY_QUARANTINED_ROWS)
            if rows is None:
                row["not_recorded"] += 1
                continue
            row["quarantined_rows"] += int(rows)
            if int(rows):
                row["with_quarantine"].append(
                    {
                        "partition": item.materialization.partition,
                        "quarantined_rows": int(rows),
                        "share": item.quality.get(keys.QUALITY_QUARANTINE_SHARE),
                        "failures_by_check": item.quality.get(keys.QUALITY_FAILURES_BY_CHECK),
                    }
                )
        return [out[a] for a in sorted(out)]

    # --------------------------------------------------------------------------- approvals

    def _approvals(self) -> dict[str, Any]:
        from ml_platform.lib.registry.audit import AuditIntegrityError, AuditLog

        audit = AuditLog(self.src.audit_table)
        name, version = self.chain.model_name, self.version
        verified: bool | None
        error = None
        try:
            verified = audit.verify(name) > 0 or None
        except AuditIntegrityError as exc:
            verified, error = False, str(exc)
        approved = set() if self.model is None else {a.event_id for a in self.model.approvals}
        events = [
            {**e.to_dict(), "hash_ok": e.compute_hash() == e.event_hash, "approval": e.event_id in approved}
            for e in audit.events(name)
            if version in (e.version, e.previous_version)
        ]
        dep = self.chain.deployment
        deployment = None
        if isinstance(dep, DeploymentHop):
            deployment = {
                "desired_path": dep.desired_path,
                "desired_generation": dep.desired_generation,
                "desired_mode": dep.desired_mode,
                "desired_requested_by": dep.desired_requested_by,
                "desired_requested_at": dep.desired_requested_at,
                "roles": to_json(dep.roles),
                "rolled_back": dep.rolled_back,
                "log_table": dep.log_table,
                "log_verified": dep.log_verified,
                "log_error": dep.log_error,
                "events": to_json(dep.events),
            }
        return {
            "audit_table": str(self.src.audit_table),
            "verified": verified,
            "verify_error": error,
            "events": events,
            "approvals": sorted(approved),
            "deployment": deployment,
        }

    # --------------------------------------------------------------------------- reproduce

    def _reproduce(self, pins: list[dict[str, Any]], holdout: list[dict[str, Any]]) -> dict[str, Any]:
        model = self.model
        mat = None if model is None else model.materialization
        version = self.version
        config = None if self.model_record is None else rec.value(self.model_record, keys.TRAINING_CONFIG)
        notes: list[str] = []
        commands = [
            {
                "command": f"mlp reproduce {version}",
                "status": "available" if _has_command("reproduce") else "planned",
                "note": "trains the version again from exactly these pins, with its recorded configuration"
                " (the search's choice, the seed) and the recorded training code (it refuses when this"
                " checkout's code version differs), then compares the weights digest, the validation loss"
                " and the holdout metrics of the evaluation on record; it registers nothing"
                + ("" if _has_command("reproduce") else " (not in this checkout)"),
            }
        ]
        commit = None if mat is None else mat.git_commit
        if commit and _COMMIT.match(commit):
            commands.append(
                {
                    "command": f"git checkout {commit}",
                    "status": "available",
                    "note": "the code the model was trained with",
                }
            )
        elif mat is not None:
            notes.append(
                f"the recorded git commit ({commit!r}) is not a git object name: the exact source tree is"
                f" identified only by the code version {mat.code_version!r} ({mat.code_version_from})"
            )
        if mat is not None and mat.partition is not None:
            stale = [p for p in pins if p["still_latest"] is False]
            unknown = [p for p in pins if p["still_latest"] is None]
            note = (
                "materializes a new delay_model version (a new MLflow run, registered as challenger) from the"
                " latest recorded version of each window partition (RecordedVersions), not from these pins: "
            )
            if stale:
                note += (
                    f"{len(pins) - len(stale) - len(unknown)} of {len(pins)} pins are still the latest"
                    " recorded; rematerialized since: "
                    + ", ".join(f"{p['recorded']['table']}[{p['recorded']['partition']}]" for p in stale)
                    + ". It would not train on the same data."
                )
            elif unknown:
                note += f"the latest version of {len(unknown)} pin(s) could not be read."
            else:
                note += f"all {len(pins)} pins are still the latest recorded, so it reads the same data."
            seed = None if self.run is None else self.run.params.get("seed")
            note += (
                f" Training is seeded (MLflow param seed={seed}); HPO and hardware may still change the"
                " metrics."
                if seed is not None
                else " No seed is recorded among the MLflow params."
            )
            commands.append(
                {
                    "command": f"dagster asset materialize -m ml_platform.definitions --select {DELAY_MODEL}"
                    f" --partition {mat.partition}",
                    "status": "equivalent",
                    "note": note,
                }
            )
            if len(pins) % 7 == 0 and pins:
                notes.append(
                    f"the training window has {len(pins)} feature partitions: run with"
                    f" MLP_TRAINING_WINDOW_WEEKS={len(pins) // 7} and the MLflow params below"
                )
        if not pins:
            notes.append("no training pins are recorded for this version: its inputs cannot be pinned")
        if not holdout:
            notes.append("no evaluation holdout pins are recorded for this version")
        return {
            "model": self.chain.model_name,
            "version": version,
            "delay_model": None if mat is None else mat.id,
            "partition": None if mat is None else mat.partition,
            "dagster_run_id": None if mat is None else mat.run_id,
            "code_version": None if mat is None else mat.code_version,
            "code_version_from": None if mat is None else mat.code_version_from,
            "git_commit": commit,
            "mlflow_run_id": None if self.run is None else self.run.run_id,
            "mlflow_experiment_id": None if self.run is None else self.run.experiment_id,
            "params": {} if self.run is None else dict(sorted(self.run.params.items())),
            "training_config": config if isinstance(config, dict) else None,
            "mlflow_datasets": [] if self.run is None else self.run.datasets,
            "pins": pins,
            "holdout_pins": holdout,
            "commands": commands,
            "notes": notes,
        }


def _has_command(name: str) -> bool:
    """Whether ``mlp`` has the command ``name``.

    Only a CLI module that is not installed at all makes a command "not there"; a CLI that is there
    and fails to import (a broken dependency, an error in its code) is an error, with its cause, and
    never reported as a missing command.
    """
    try:
        from ml_platform.cli import app
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "ml_platform.cli":
            return False
        raise RuntimeError(
            f"cannot tell whether `mlp {name}` is available: importing ml_platform.cli failed:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    return any((c.name or getattr(c.callback, "__name__", "")) == name for c in app.registered_commands)


def _record(
    instance: dg.DagsterInstance, asset: str, partition: str | None, storage_id: int
) -> dg.EventLogRecord | None:
    """The materialization record with ``storage_id`` (one query)."""
    found = rec.fetch(
        instance,
        asset,
        partitions=None if partition is None else [partition],
        after_storage_id=storage_id - 1,
        before_storage_id=storage_id + 1,
    )
    return next((r for r in found if r.storage_id == storage_id), None)


def _node_pin(node: PartitionNode) -> tuple[Any, ...]:
    s = node.storage
    return (
        node.materialization.asset,
        node.materialization.partition,
        s.table_version,
        s.commit or "",
        s.content_hash,
    )


def _drift_entry(record: dg.EventLogRecord) -> dict[str, Any]:
    def features(key: str) -> list[dict[str, Any]]:
        found = rec.value(record, key)
        out = []
        for item in found if isinstance(found, list) else []:
            try:
                from ml_platform.lib.monitoring.drift import describe

                line = describe(item)
            except Exception:  # an older or partial record: name the feature only
                line = str(item.get("feature"))
            out.append({"feature": item.get("feature"), "severity": item.get("severity"), "describe": line})
        return out

    return {
        "partition": str(record.asset_materialization.partition),  # type: ignore[union-attr]
        "report": rec.materialization(record).id,
        "timestamp": rec.materialization(record).timestamp,
        "severity": rec.text(record, DRIFT_SEVERITY),
        "model_version": rec.text(record, DRIFT_MODEL_VERSION),
        "model_partition": rec.text(record, DRIFT_MODEL_PARTITION),
        "reference_window": rec.text(record, DRIFT_REFERENCE),
        "errors": features(DRIFT_ERRORS),
        "warnings": features(DRIFT_WARNINGS),
    }


def _node(node_id: str, label: list[str], status: str, members: list[str], detail: str) -> dict[str, Any]:
    return {"id": node_id, "label": label, "status": status, "members": members, "detail": detail}


def _gap_node(layer: list[dict[str, Any]], hop: str, gap: Any, what: str) -> str:
    node_id = f"missing:{hop}"
    if isinstance(gap, Missing):
        layer.append(_node(node_id, [f"MISSING {hop}", what], "missing", [], gap.describe()))
    else:
        layer.append(_node(node_id, [f"no {hop}", what], "absent", [], f"no {hop} recorded"))
    return node_id


def _source_of(upstream: str, member_of: Mapping[str, str]) -> str | None:
    if upstream in member_of:
        return member_of[upstream]
    if upstream.startswith("missing: "):
        return f"missing:{upstream.removeprefix('missing: ').split('[')[0]}"
    return None


def _partition_nodes(
    items: Iterable[PartitionNode | Missing], member_of: dict[str, str]
) -> list[dict[str, Any]]:
    """One node per partition, or one per asset when it has more than :data:`COLLAPSE`; gaps per table."""
    by_asset: dict[str, list[PartitionNode]] = {}
    gaps: dict[str, list[Missing]] = {}
    for item in items:
        if isinstance(item, Missing):
            gaps.setdefault(item.hop, []).append(item)
        else:
            by_asset.setdefault(item.materialization.asset, []).append(item)
    out = []
    for asset, nodes in sorted(by_asset.items()):
        nodes.sort(key=lambda n: (n.materialization.partition or "", n.materialization.storage_id))
        failed = [c for n in nodes for c in n.checks if c.passed is False]
        checks = sum(len(n.checks) for n in nodes)
        check_line = (
            f"{len(failed)} of {checks} checks failed"
            if failed
            else f"checks {checks}/{checks} passed"
            if checks
            else "no check results"
            if asset in CHECKS
            else "declares no checks"
        )
        if len(nodes) > COLLAPSE:
            parts = [n.materialization.partition or "" for n in nodes]
            group = f"{asset}[{parts[0]}..{parts[-1]}]"
            for n in nodes:
                member_of[n.id] = group
            out.append(
                _node(
                    group,
                    [f"{len(nodes)} {asset} partitions", f"{parts[0]}..{parts[-1]}", check_line],
                    "failed" if failed else "ok",
                    [n.id for n in nodes],
                    f"{len(nodes)} {asset} partitions {parts[0]}..{parts[-1]}"
                    + (
                        f"; failed: {', '.join(sorted({f'{c.partition} {c.name}' for c in failed}))}"
                        if failed
                        else ""
                    ),
                )
            )
            continue
        for n in nodes:
            member_of[n.id] = n.id
            own_failed = [c.name for c in n.checks if c.passed is False]
            out.append(
                _node(
                    n.id,
                    [
                        n.materialization.label,
                        f"{n.storage.where} data {(n.storage.content_hash or '-')[:8]}",
                        f"failed: {', '.join(own_failed)}"
                        if own_failed
                        else f"{len(n.checks)} checks passed",
                    ],
                    "failed" if own_failed else "ok",
                    [n.id],
                    f"{n.id} run {n.materialization.run_id}; {n.storage.where}; rows {n.storage.row_count}",
                )
            )
    for hop, found in sorted(gaps.items()):
        out.append(
            _node(
                f"missing:{hop}",
                [f"MISSING {len(found)} {hop}", "not recorded: see header"],
                "missing",
                [],
                "; ".join(g.describe() for g in found[:5])
                + (f"; and {len(found) - 5} more" if len(found) > 5 else ""),
            )
        )
    return out


# ---------------------------------------------------------------------------------- writing


def write_evidence(evidence: Evidence, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<model>-v<version>.evidence.html`` and ``.json`` into ``out_dir``; return both paths.

    The JSON is written first; the HTML's footer carries the sha256 of the JSON file's bytes.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{evidence.model['name']}-v{evidence.model['version']}")
    json_path = folder / f"{stem}.evidence.json"
    html_path = folder / f"{stem}.evidence.html"
    data = evidence.to_json().encode("utf-8")
    json_path.write_bytes(data)
    html_path.write_bytes(
        render_html(evidence, hashlib.sha256(data).hexdigest(), json_path.name).encode("utf-8")
    )
    return html_path, json_path


def json_sha256(evidence: Evidence) -> str:
    """The sha256 of the bundle's JSON file (what the HTML footer names)."""
    return hashlib.sha256(evidence.to_json().encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1a1a1a;
max-width:1800px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #3b6ea5;padding-bottom:3px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;
vertical-align:top;font-size:13px}th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.ok{color:#1d6b2f;font-weight:600}.bad{color:#b42318;font-weight:600}.warn{color:#9a5b00;font-weight:600}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0}
.banner.ok{background:#e6f4ea;border:1px solid #1d6b2f}
.banner.bad{background:#fdecea;border:1px solid #b42318}.note{color:#555;font-style:italic}
.graph{overflow-x:auto;border:1px solid #ddd;padding:6px;background:#fff}
img.plot{max-width:560px;border:1px solid #ddd;margin:4px}
footer{margin-top:40px;border-top:1px solid #ccc;padding-top:8px;font-size:12px;color:#444}
"""


def _e(value: Any) -> str:
    return escape("-" if value is None else str(value), quote=True)


def _yes(value: bool | None, yes: str = "passed", no: str = "FAILED", none: str = "not recorded") -> str:
    if value is None:
        return f'<span class="warn">{_e(none)}</span>'
    return f'<span class="ok">{_e(yes)}</span>' if value else f'<span class="bad">{_e(no)}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table whose cells are already HTML (escape with :func:`_e`)."""
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append(
            "<tr>"
            + "".join(
                f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _num(value: Any) -> str:
    return _e(f"{value:.4f}" if isinstance(value, float) else value)


def _pre(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"


def render_html(evidence: Evidence, sha256: str, json_name: str) -> str:
    """The bundle as one self-contained HTML page (``sha256``: of the JSON file named ``json_name``)."""
    ev = evidence
    m = ev.model
    title = f"Evidence bundle: {m['name']} v{m['version']}"
    on_path = [g for g in ev.missing if g.get("on_path")]
    beside = [g for g in ev.missing if not g.get("on_path")]
    disagree = [c for c in ev.consistency if not c.get("ok")]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="evidence-json-sha256" content="{_e(sha256)}">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f"<div>Generated at <b>{_e(ev.generated_at)}</b> from <code>{_e(m.get('start'))}</code>"
        f" (resolved: {_e(m.get('resolved'))}). Schema <code>{_e(ev.schema)}</code>.</div>",
    ]
    if ev.complete:
        parts.append(
            '<div class="banner ok" id="completeness"><b>Lineage chain complete</b>: every link from the'
            " deployment to the raw files was recorded and every cross-check agrees"
            f" ({len(ev.consistency)} cross-checks).</div>"
        )
    else:
        parts.append(
            '<div class="banner bad" id="completeness"><b>Lineage chain INCOMPLETE</b>:'
            f" {len(on_path)} missing link(s) on the chain, {len(disagree)} cross-check disagreement(s).<ul>"
            + "".join(
                f"<li><b>MISSING {_e(g['hop'])}</b>: {_e(g['reason'])} ({_e(g['ref'])})</li>" for g in on_path
            )
            + "".join(f"<li><b>{_e(c['name'])}</b> disagrees: {_e(c['detail'])}</li>" for c in disagree)
            + "</ul></div>"
        )
    if beside:
        parts.append(
            '<div class="banner bad"><b>Not recorded beside the chain</b>:<ul>'
            + "".join(f"<li>{_e(g['hop'])}: {_e(g['reason'])} ({_e(g['ref'])})</li>" for g in beside)
            + "</ul></div>"
        )
    parts.append(
        _table(
            ("", ""),
            [
                ("model", _e(f"{m['name']} v{m['version']}")),
                ("trained by", f"<code>{_e(m.get('delay_model'))}</code>"),
                ("training window", _e(m.get("training_window"))),
                ("weights digest", f"<code>{_e(m.get('weights_digest'))}</code>"),
                ("MLflow run", f"<code>{_e(m.get('mlflow_run_id'))}</code>"),
                ("registry source", f"<code>{_e(m.get('registry_source'))}</code>"),
                ("aliases now", _e(", ".join(m.get("aliases_now") or []) or "none")),
                ("Bentos", "<br>".join(f"<code>{_e(t)}</code>" for t in m.get("bentos") or []) or "none"),
                ("serving now", "<br>".join(_e(s) for s in m.get("serving") or []) or "not serving"),
            ],
        )
        + "</header>"
    )
    parts += _graph_section(ev)
    parts += _metrics_section(ev)
    parts += _checks_section(ev)
    parts += _data_section(ev)
    parts += _approvals_section(ev)
    parts += _reproduce_section(ev)
    parts.append('<section id="cross-checks"><h2>7. Cross-checks between records</h2>')
    parts.append(
        _table(
            ("check", "result", "detail"),
            [(_e(c["name"]), _yes(c["ok"], "agrees", "DISAGREES"), _e(c["detail"])) for c in ev.consistency],
        )
        if ev.consistency
        else '<p class="note">no cross-check was possible (nothing to compare)</p>'
    )
    parts.append("</section>")
    parts.append(
        '<section id="chain"><h2>Appendix: the whole lineage chain</h2><details><summary>the chain as'
        " <code>mlp lineage --json</code> writes it (every partition with its storage pin, run, code"
        f" version and checks)</summary>{_pre(ev.chain)}</details></section>"
    )
    parts.append(
        f'<footer>JSON: <code>{_e(json_name)}</code>, sha256 <code id="json-sha256">{_e(sha256)}</code>'
        " (of the JSON file's bytes: <code>sha256sum</code> it to match this page to its JSON). Generated by"
        " <code>mlp evidence</code> from the recorded metadata only.</footer></body></html>"
    )
    return "\n".join(parts) + "\n"


def _graph_section(ev: Evidence) -> list[str]:
    return [
        '<section id="graph"><h2>1. Lineage graph</h2>',
        '<p class="note">From the recorded <code>lineage/upstream</code> links, run ids and pins. Many'
        " partitions of one asset are one node (hover a node for its details); blue: recorded, amber: a"
        " check or gate failed, red dashed: not recorded, grey dashed: nothing there.</p>",
        f'<div class="graph">{render_svg(ev.graph)}</div></section>',
    ]


def _metrics_section(ev: Evidence) -> list[str]:
    out = ['<section id="metrics"><h2>2. Metrics</h2>']
    for e in ev.metrics["evaluations"]:
        out.append(
            f"<h3>{_e(e['evaluation'])}: gates {_yes(e['passed'])}</h3><p>holdout {_e(e['holdout'])};"
            f" champion then: {_e(e['champion_version'])}; run <code>{_e(e.get('run_id'))}</code></p>"
        )
        out.append(
            _table(
                ("holdout metric", "model", "naive baseline", "champion"),
                [
                    (_e(r["metric"]), _num(r["model"]), _num(r["baseline"]), _num(r["champion"]))
                    for r in e["table"]
                ],
                numeric=(1, 2, 3),
            )
        )
    for note in ev.metrics["notes"]:
        out.append(f'<p class="note">{_e(note)}</p>')
    if ev.metrics["training"]:
        out.append("<h3>Training (delay_model metadata)</h3>")
        out.append(_table(("key", "value"), [(_e(k), _e(v)) for k, v in ev.metrics["training"].items()]))
    if ev.metrics["mlflow_run_metrics"]:
        out.append("<h3>MLflow run metrics</h3>")
        out.append(
            _table(
                ("metric", "value"),
                [(_e(k), _num(v)) for k, v in ev.metrics["mlflow_run_metrics"].items()],
                (1,),
            )
        )
    if ev.plots:
        out.append("<h3>Evaluation plots (as the evaluation rendered them)</h3><div>")
        for p in ev.plots:
            out.append(
                f'<figure style="display:inline-block"><img class="plot" alt="{_e(p["name"])}"'
                f' src="data:image/png;base64,{_e(p["base64"])}"><figcaption>{_e(p["name"])}'
                f" ({_e(p['source'])}, sha256 {_e(p['sha256'][:12])})</figcaption></figure>"
            )
        out.append("</div>")
    out.append("</section>")
    return out


def _checks_section(ev: Evidence) -> list[str]:
    out = ['<section id="checks"><h2>3. Check results</h2><h3>Gates (blocking)</h3>']
    if not ev.checks["gates"]:
        out.append('<p class="note">not recorded: no evaluation judged this version, so no gate ran</p>')
    for g in ev.checks["gates"]:
        out.append(f"<p><code>{_e(g['evaluation'])}</code>: {_yes(g['passed'])}</p>")
        out.append(
            _table(
                ("gate", "result", "detail", "asset check"),
                [
                    (
                        _e(gate.get("name")),
                        _yes(gate.get("passed")),
                        _e(gate.get("detail")),
                        _yes(
                            next(
                                (c["passed"] for c in g["asset_checks"] if c["name"] == gate.get("name")),
                                None,
                            ),
                            none="no check evaluation",
                        ),
                    )
                    for gate in g["gates"]
                ],
            )
        )
    out.append("<h3>Asset checks of the chain's partitions</h3>")
    rows = []
    for a in ev.checks["assets"]:
        if not a["checks"]:
            rows.append(
                (
                    _e(a["asset"]),
                    _e(a["partitions"]),
                    '<span class="note">declares no checks</span>',
                    "",
                    "",
                    "",
                )
            )
        for c in a["checks"]:
            rows.append(
                (
                    _e(a["asset"]),
                    _e(a["partitions"]),
                    _e(c["name"]),
                    f'<span class="ok">{c["passed"]}</span>',
                    f'<span class="{"bad" if c["failed"] else "ok"}">{c["failed"]}</span>',
                    f'<span class="{"warn" if c["not_recorded"] else "ok"}">{c["not_recorded"]}</span>',
                )
            )
    out.append(
        _table(("asset", "partitions", "check", "passed", "failed", "not recorded"), rows, (1, 3, 4, 5))
    )
    failures = [(a["asset"], f) for a in ev.checks["assets"] for f in a["failures"]]
    if failures:
        out.append("<h4>Failures</h4>")
        out.append(
            _table(
                ("asset", "partition", "check", "severity", "description"),
                [
                    (_e(a), _e(f["partition"]), _e(f["check"]), _e(f["severity"]), _e(f["description"]))
                    for a, f in failures
                ],
            )
        )
    else:
        out.append('<p class="ok">No check of the chain\'s partitions failed.</p>')
    out.append("</section>")
    return out


_SEVERITY = {"ok": "ok", "warn": "warn"}


def _drift_rows(entries: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        ("day", "severity", "against", "errors", "warnings", "report"),
        [
            (
                _e(d["partition"]),
                f'<span class="{_SEVERITY.get(str(d["severity"]), "bad")}">{_e(d["severity"])}</span>',
                _e(f"v{d['model_version']} ({d['reference_window']})"),
                "<br>".join(_e(f["describe"]) for f in d["errors"]) or "-",
                "<br>".join(_e(f["describe"]) for f in d["warnings"]) or "-",
                f"<code>{_e(d['report'])}</code>",
            )
            for d in entries
        ],
    )


def _data_section(ev: Evidence) -> list[str]:
    d = ev.data
    p = d["profiles"]
    out = [
        '<section id="data"><h2>4. Data profiles and drift at training time</h2>',
        "<h3>Profiles of the training data</h3>",
    ]
    out.append(f'<p class="{"note" if p["entries"] else "warn"}">{_e(p["note"])}</p>')
    if p["entries"]:
        out.append(
            _table(
                (
                    "day",
                    "profile",
                    "columns",
                    "rows",
                    "bytes",
                    "profile table version",
                    "profiled",
                    "source content",
                ),
                [
                    (
                        _e(x["partition"]),
                        f"<code>{_e(x['profile'])}</code>",
                        _e(x["columns"]),
                        _e(x["rows"]),
                        _e(x["bytes"]),
                        _e(x["commit"] or x["table_version"]),
                        _e("before training" if x["before_training"] else "after training"),
                        _e((x.get("content_hash") or "")[:12]),
                    )
                    for x in p["entries"]
                ],
                (2, 3, 4),
            )
        )
    if p["entries"] and p["not_recorded"]:
        out.append(
            f'<p class="warn">No profile of the version trained on: {_e(", ".join(p["not_recorded"]))}</p>'
        )
    for key, head in (
        ("drift_training_window", "Drift of the training days, recorded before training"),
        ("drift_against_this_model", "Drift judged against this version's training window"),
    ):
        section = d[key]
        out.append(f"<h3>{_e(head)}</h3>")
        out.append(f'<p class="{"note" if section["entries"] else "warn"}">{_e(section["note"])}</p>')
        if section["entries"]:
            out.append(_drift_rows(section["entries"]))
    out.append("<h3>Quarantine of the validated partitions</h3>")
    if not d["quarantine"]:
        out.append('<p class="warn">not recorded: no validated partition on the chain</p>')
    for q in d["quarantine"]:
        out.append(
            f"<p><b>{_e(q['asset'])}</b>: {q['partitions']} partitions,"
            f" {q['quarantined_rows']} quarantined rows"
            + (f", {q['not_recorded']} partitions record no quarantine count" if q["not_recorded"] else "")
            + "</p>"
        )
        if q["with_quarantine"]:
            out.append(
                _table(
                    ("partition", "quarantined rows", "share", "failures by check"),
                    [
                        (
                            _e(w["partition"]),
                            _e(w["quarantined_rows"]),
                            _e(w["share"]),
                            _e(json.dumps(w["failures_by_check"])),
                        )
                        for w in q["with_quarantine"]
                    ],
                    (1, 2),
                )
            )
    out.append("</section>")
    return out


def _approvals_section(ev: Evidence) -> list[str]:
    a = ev.approvals
    out = ['<section id="approvals"><h2>5. Approvals and alias history</h2>']
    verified = (
        '<span class="ok">hash chain verified</span>'
        if a["verified"]
        else f'<span class="bad">does NOT verify: {_e(a["verify_error"])}</span>'
        if a["verified"] is False
        else '<span class="warn">empty: nothing to verify</span>'
    )
    out.append(
        f"<p>Audit log <code>{_e(a['audit_table'])}</code>: {verified};"
        f" {len(a['events'])} event(s) about v{_e(ev.model['version'])}.</p>"
    )
    if a["events"]:
        rows = []
        for e in a["events"]:
            moved = (
                f"{e['alias']}: {e['previous_version'] or 'none'} -> {e['version']}"
                if e["alias"]
                else f"v{e['version']}"
            )
            rows.append(
                (
                    _e(e["occurred_at"]),
                    _e(e["action"]) + (' <span class="ok">(approval)</span>' if e.get("approval") else ""),
                    _e(moved),
                    _e(e["actor"]),
                    _e(e["reason"]),
                    f"<details><summary>evidence</summary>{_pre(e['evidence'])}</details>",
                    f"<code>{_e(e['event_hash'][:16])}</code> "
                    + _yes(e["hash_ok"], "hash ok", "HASH MISMATCH"),
                )
            )
        out.append(
            _table(("time (UTC)", "action", "alias", "actor", "reason", "evidence", "event hash"), rows)
        )
    else:
        out.append('<p class="warn">not recorded: the audit log has no event about this version</p>')
    dep = a["deployment"]
    out.append("<h3>Deployment</h3>")
    if dep is None:
        out.append('<p class="note">no deployment record was read (see the header for a missing link)</p>')
    else:
        log = {
            True: '<span class="ok">hash chain verified</span>',
            None: '<span class="warn">empty</span>',
        }.get(dep["log_verified"], f'<span class="bad">does NOT verify: {_e(dep["log_error"])}</span>')
        out.append(
            f"<p>Desired state <code>{_e(dep['desired_path'])}</code>:"
            f" generation {_e(dep['desired_generation'])}"
            f" ({_e(dep['desired_mode'])}), requested by {_e(dep['desired_requested_by'])} at"
            f" {_e(dep['desired_requested_at'])}."
            f" Deployment log <code>{_e(dep['log_table'])}</code>: {log}.</p>"
        )
        if dep["events"]:
            out.append(
                _table(
                    ("time (UTC)", "action", "Bento", "mode", "share", "actor", "reason", "event hash"),
                    [
                        (
                            _e(e["occurred_at"]),
                            _e(e["action"]),
                            f"<code>{_e(e['bento_tag'])}</code>",
                            _e(e["mode"]),
                            _e(e["share"]),
                            _e(e["actor"]),
                            _e(e["reason"]),
                            f"<code>{_e(str(e['event_hash'])[:16])}</code>",
                        )
                        for e in dep["events"]
                    ],
                )
            )
    out.append("</section>")
    return out


def _reproduce_section(ev: Evidence) -> list[str]:
    r = ev.reproduce
    out = ['<section id="reproduce"><h2>6. How to reproduce</h2>']
    out.append(
        _table(
            ("", ""),
            [
                (
                    "trained by",
                    f"<code>{_e(r.get('delay_model'))}</code>"
                    f" (Dagster run <code>{_e(r.get('dagster_run_id'))}</code>)",
                ),
                ("code version", f"<code>{_e(r['code_version'])}</code> ({_e(r.get('code_version_from'))})"),
                ("git commit", f"<code>{_e(r['git_commit'])}</code>"),
                (
                    "MLflow run",
                    f"<code>{_e(r['mlflow_run_id'])}</code> (experiment {_e(r.get('mlflow_experiment_id'))})",
                ),
            ],
        )
    )
    out.append("<h3>Commands</h3>")
    for c in r["commands"]:
        out.append(f"<pre>{_e(c['command'])}</pre><p><b>{_e(c['status'])}</b>: {_e(c['note'])}</p>")
    for note in r["notes"]:
        out.append(f'<p class="note">{_e(note)}</p>')
    out.append(
        f"<h3>Pinned training inputs ({len(r['pins'])}, as the model's lineage/upstream recorded them)</h3>"
    )
    if r["pins"]:
        out.append(
            _table(
                (
                    "table[partition]",
                    "table version / commit",
                    "content hash",
                    "rows",
                    "materialization",
                    "Dagster data version",
                    "still the latest",
                ),
                [
                    (
                        _e(f"{p['recorded'].get('table')}[{p['recorded'].get('partition')}]"),
                        _e(p["recorded"].get("commit") or p["recorded"].get("table_version")),
                        f"<code>{_e(p['recorded'].get('content_hash'))}</code>",
                        _e(p["recorded"].get("row_count")),
                        f"<code>{_e(p['materialization'])}</code>",
                        f"<code>{_e(p['data_version'])}</code>",
                        _yes(p["still_latest"], "yes", "NO")
                        + (f" (now {_e(p['latest_now']['materialization'])})" if p.get("latest_now") else ""),
                    )
                    for p in r["pins"]
                ],
                (3,),
            )
        )
    else:
        out.append('<p class="bad">not recorded: the model recorded no training pins</p>')
    if r["holdout_pins"]:
        out.append(f"<h3>Evaluation holdout pins ({len(r['holdout_pins'])})</h3>")
        out.append(
            _table(
                ("table[partition]", "table version / commit", "content hash", "rows"),
                [
                    (
                        _e(f"{p.get('table')}[{p.get('partition')}]"),
                        _e(p.get("commit") or p.get("table_version")),
                        f"<code>{_e(p.get('content_hash'))}</code>",
                        _e(p.get("row_count")),
                    )
                    for p in r["holdout_pins"]
                ],
                (3,),
            )
        )
    out.append("<h3>MLflow params</h3>")
    out.append(
        _table(("param", "value"), [(_e(k), _e(v)) for k, v in r["params"].items()])
        if r["params"]
        else '<p class="warn">not recorded: no MLflow run</p>'
    )
    if r.get("training_config"):
        out.append(f"<h3>training/config</h3>{_pre(r['training_config'])}")
    out.append("</section>")
    return out
