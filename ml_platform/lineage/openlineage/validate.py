"""Strict validation of serialized OpenLineage events, without the spec's schema files.

openlineage-python ships no JSON Schema of the spec (``OpenLineage.json`` and the facet schemas),
and the platform has no network to openlineage.io, so events are checked against what the client
*does* ship: its attrs model of the spec (``openlineage.client.event_v2`` and the generated facet
classes). :func:`validate_event` walks the JSON of an event (what ``Serde.to_json`` wrote, what a
transport sends) along those classes:

* every required field is there (attrs fields without a default, plus ``producer``/``schemaURL`` of
  events and ``_producer``/``_schemaURL`` of facets, which the spec requires), no unknown key is;
* every value has the field's type (strings, integers, booleans, lists, objects, the ``eventType``
  enum), and ``null`` is refused (a missing value is a missing key);
* ``runId`` is a UUID, ``eventTime`` and the nominal times are ISO 8601 date-times with a time and a
  UTC offset, ``producer`` and ``_schemaURL`` are URIs with a scheme;
* each facet is known by its key: a standard facet is checked against its generated class (and its
  ``_schemaURL`` must be that class's), a custom ``mlp_*`` facet against the JSON Schema of
  ``schemas/`` that its ``_schemaURL`` names (``jsonschema``, Draft 2020-12); any other key is an
  error;
* the typed objects are then built from the JSON, so the client's own validators run too.

:func:`validate_against_spec` checks an event against the official schema files too, when a folder
of them is at hand (``OPENLINEAGE_SPEC_DIR`` in the contract test).
"""

from __future__ import annotations

import functools
import json
import types
import typing
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attr
from openlineage.client.generated import base

from ml_platform.lineage.openlineage import facets as F

DATETIME_FIELDS = frozenset({"eventTime", "nominalStartTime", "nominalEndTime"})
URI_FIELDS = frozenset({"producer", "schemaURL", "_producer", "_schemaURL"})
UUID_FIELDS = frozenset({"runId"})
#: Fields the spec requires although openlineage-python gives them a default.
SPEC_REQUIRED: dict[type[Any], frozenset[str]] = {
    base.BaseEvent: frozenset({"producer", "schemaURL"}),
    base.BaseFacet: frozenset({"_producer", "_schemaURL"}),
}
_FACET_CONTAINERS: dict[type[Any], tuple[str, dict[str, type[Any]]]] = {
    base.RunFacet: ("run", F.STANDARD_RUN_FACETS),
    base.JobFacet: ("job", F.STANDARD_JOB_FACETS),
    base.DatasetFacet: ("dataset", F.STANDARD_DATASET_FACETS),
    base.InputDatasetFacet: ("input", F.STANDARD_INPUT_FACETS),
    base.OutputDatasetFacet: ("output", F.STANDARD_OUTPUT_FACETS),
}
_CUSTOM_CONTAINER = {
    **{k: "run" for k in F.CUSTOM_RUN_FACETS},
    **{k: "dataset" for k in F.CUSTOM_DATASET_FACETS},
}
_BAD = object()


class OpenLineageValidationError(ValueError):
    """An event does not validate; the message names what it was exported from and each bad field."""

    def __init__(self, context: str, problems: list[str]) -> None:
        self.context = context
        self.problems = problems
        super().__init__(f"{context}: invalid OpenLineage event: " + "; ".join(problems))


def validate_event(event: Mapping[str, Any] | str) -> list[str]:
    """The problems of one serialized event (``path: problem``); empty when it is valid."""
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError as exc:
            return [f"(event): not JSON: {exc}"]
    if not isinstance(event, Mapping):
        return [f"(event): an event is a JSON object, not {_kind(event)}"]
    if "run" in event:
        cls: type[Any] = base.RunEvent
    elif "dataset" in event:
        cls = base.DatasetEvent
    else:
        cls = base.JobEvent
    walker = _Walker()
    walker.build(cls, event, "")
    return walker.errors


def check_event(event: Mapping[str, Any], context: str) -> None:
    """Raise :class:`OpenLineageValidationError` naming ``context`` and every bad field of ``event``."""
    problems = validate_event(event)
    if problems:
        raise OpenLineageValidationError(context, problems)


def validate_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, list[str]]]:
    """(line number, event or None, problems) for every non-empty line of a JSON-lines file."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as exc:
                yield number, None, [f"(line): not JSON: {exc}"]
                continue
            yield number, event if isinstance(event, dict) else None, validate_event(event)


def describe(event: Mapping[str, Any] | None) -> str:
    """How an event is named in messages: job, event type, run id."""
    if not event:
        return "?"
    job, run = event.get("job"), event.get("run")
    name = job.get("name", "?") if isinstance(job, Mapping) else "?"
    run_id = run.get("runId", "?") if isinstance(run, Mapping) else "?"
    return f"{name} {event.get('eventType', '?')} run {run_id}"


# ----------------------------------------------------------------------------------- the model walk


class _Walker:
    """Checks JSON against attrs classes, building the typed objects on the way (their validators run)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, problem: str) -> None:
        self.errors.append(f"{path or '(event)'}: {problem}")

    def build(self, cls: type[Any], data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            self.error(path, f"must be an object ({cls.__name__}), not {_kind(data)}")
            return _BAD
        before = len(self.errors)
        fields = {f.name: f for f in attr.fields(cls)}
        hints = _hints(cls)
        required = {n for n, f in fields.items() if f.init and f.default is attr.NOTHING}
        for parent, names in SPEC_REQUIRED.items():
            if issubclass(cls, parent):
                required |= names
        for name in sorted(required - set(data)):
            self.error(_join(path, name), f"required by {cls.__name__}, missing")
        for name in sorted(set(data) - set(fields)):
            self.error(_join(path, name), f"not a field of {cls.__name__}")
        kwargs: dict[str, Any] = {}
        fixed: dict[str, Any] = {}
        for name, value in data.items():
            field = fields.get(name)
            if field is None:
                continue
            where = _join(path, name)
            checked = self.value(value, hints[name], where)
            if checked is _BAD:
                continue
            flagged = len(self.errors)
            self.format(name, checked, where)
            if field.validator is not None and len(self.errors) == flagged:
                try:
                    field.validator(None, field, checked)
                except Exception as exc:  # the client's own check of the field
                    self.error(where, f"{type(exc).__name__}: {exc}")
            if field.init:
                kwargs[field.alias or name] = checked
            else:
                fixed[name] = checked
        if len(self.errors) > before:
            return _BAD
        try:
            built = cls(**kwargs)
        except Exception as exc:
            self.error(path, f"{cls.__name__} rejects it: {type(exc).__name__}: {exc}")
            return _BAD
        for name, value in fixed.items():  # schemaURL / _schemaURL: set by the class itself
            if getattr(built, name) != value:
                self.error(_join(path, name), f"must be {getattr(built, name)!r} for {cls.__name__}")
        return built if len(self.errors) == before else _BAD

    def value(self, value: Any, tp: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            if value is None:
                self.error(path, "null is not allowed (leave the key out)")
                return _BAD
            if len(options) == 1:
                return self.value(value, options[0], path)
            for option in options:  # the first type the value has
                probe = _Walker()
                checked = probe.value(value, option, path)
                if checked is not _BAD:
                    return checked
            self.error(path, f"{_kind(value)} is none of {tp}")
            return _BAD
        if value is None:
            self.error(path, "null is not allowed (leave the key out)")
            return _BAD
        if tp is str:
            return value if isinstance(value, str) else self._type(path, "a string", value)
        if tp is bool:
            return value if isinstance(value, bool) else self._type(path, "a boolean", value)
        if tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return value if ok else self._type(path, "an integer", value)
        if tp is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return value if ok else self._type(path, "a number", value)
        if isinstance(tp, type) and issubclass(tp, Enum):
            allowed = [m.value for m in tp]
            if value not in allowed:
                self.error(path, f"{value!r} is not one of {', '.join(map(str, allowed))}")
                return _BAD
            return tp(value)
        if origin is list:
            if not isinstance(value, list):
                return self._type(path, "an array", value)
            items = [self.value(item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]
            return _BAD if any(i is _BAD for i in items) else items
        if origin is dict:
            if not isinstance(value, Mapping):
                return self._type(path, "an object", value)
            bad_keys = [k for k in value if not isinstance(k, str)]
            if bad_keys:
                self.error(path, f"keys must be strings: {bad_keys[:3]!r}")
                return _BAD
            item_type = args[1]
            if isinstance(item_type, type) and item_type in _FACET_CONTAINERS:
                return self.facets(value, item_type, path)
            out = {k: self.value(v, item_type, _join(path, k)) for k, v in value.items()}
            return _BAD if any(v is _BAD for v in out.values()) else out
        if isinstance(tp, type) and attr.has(tp):
            return self.build(tp, value, path)
        self.error(path, f"cannot check type {tp!r}")
        return _BAD

    def facets(self, value: Mapping[str, Any], facet_base: type[Any], path: str) -> Any:
        container, standard = _FACET_CONTAINERS[facet_base]
        out: dict[str, Any] = {}
        for key, facet in value.items():
            where = _join(path, key)
            if key in standard:
                out[key] = self.build(standard[key], facet, where)
            elif key.startswith(F.CUSTOM_PREFIX):
                expected = _CUSTOM_CONTAINER.get(key)
                if expected is None:
                    self.error(where, f"unknown custom facet (known: {', '.join(sorted(F.CUSTOM_FACETS))})")
                    out[key] = _BAD
                elif expected != container:
                    self.error(where, f"a {expected} facet, not allowed among {container} facets")
                    out[key] = _BAD
                else:
                    out[key] = self.custom(key, facet, where)
            else:
                self.error(
                    where,
                    f"unknown {container} facet: not a standard facet this exporter emits"
                    f" ({', '.join(sorted(standard)) or 'none'}) nor an {F.CUSTOM_PREFIX}* facet",
                )
                out[key] = _BAD
        return _BAD if any(v is _BAD for v in out.values()) else out

    def custom(self, key: str, facet: Any, path: str) -> Any:
        if not isinstance(facet, Mapping):
            self.error(path, f"a facet is an object, not {_kind(facet)}")
            return _BAD
        problems = custom_facet_problems(key, facet)
        for sub, problem in problems:
            self.error(_join(path, sub) if sub else path, problem)
        if problems:
            return _BAD
        for name in URI_FIELDS & set(facet):
            self.format(name, facet[name], _join(path, name))
        return dict(facet)

    def format(self, name: str, value: Any, path: str) -> None:
        if not isinstance(value, str):
            return
        if name in DATETIME_FIELDS:
            problem = datetime_problem(value)
            if problem:
                self.error(path, problem)
        elif name in URI_FIELDS and not uri_ok(value):
            self.error(path, f"{value!r} is not a URI (it needs a scheme, e.g. https:)")
        elif name in UUID_FIELDS:
            try:
                uuid.UUID(value)
            except ValueError:
                self.error(path, f"{value!r} is not a UUID")

    def _type(self, path: str, expected: str, value: Any) -> Any:
        self.error(path, f"must be {expected}, not {_kind(value)}")
        return _BAD


def datetime_problem(value: str) -> str | None:
    """Why ``value`` is not an ISO 8601 date-time with a time and a UTC offset (None when it is)."""
    if "t" not in value.lower():
        return f"{value!r} has no time (an ISO 8601 date-time like 2013-01-21T00:00:00+00:00)"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an ISO 8601 date-time"
    if parsed.tzinfo is None:
        return f"{value!r} has no UTC offset"
    return None


def uri_ok(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) and value.startswith(parts.scheme + ":") and len(value) > len(parts.scheme) + 1


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


# ------------------------------------------------------------------------------ custom facets' schemas


@functools.cache
def custom_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the custom facets shipped in ``schemas/``, by ``$id``."""
    out = {}
    for item in resources.files("ml_platform.lineage.openlineage").joinpath("schemas").iterdir():
        if item.name.endswith(".json"):
            doc = json.loads(item.read_text(encoding="utf-8"))
            out[doc["$id"]] = doc
    return out


@functools.cache
def _registry() -> Any:
    from referencing import Registry, Resource

    return Registry().with_resources(
        (uri, Resource.from_contents(doc)) for uri, doc in custom_schemas().items()
    )


def format_checker() -> Any:
    """jsonschema's format checker, with ``date-time`` and ``uri`` checked as this module checks them
    (jsonschema checks them only with optional packages the platform does not install)."""
    from jsonschema import FormatChecker

    checker = FormatChecker()
    checker.checks("date-time")(lambda v: not isinstance(v, str) or datetime_problem(v) is None)
    checker.checks("uri")(lambda v: not isinstance(v, str) or uri_ok(v))
    return checker


def custom_facet_problems(key: str, facet: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(sub-path, problem) of custom facet ``key`` against the schema its ``_schemaURL`` names."""
    from jsonschema import Draft202012Validator

    url = facet.get("_schemaURL")
    if not isinstance(url, str):
        return [("_schemaURL", "required: the URL of the facet's JSON Schema")]
    document = url.split("#", 1)[0]
    schema = custom_schemas().get(document)
    if schema is None:
        known = ", ".join(sorted(u.rsplit("/", 1)[-1] for u in custom_schemas()))
        return [("_schemaURL", f"{url!r} names no schema shipped with ml_platform ({known})")]
    if key not in schema.get("properties", {}):
        return [("", f"the facet key {key!r} is not the key {document.rsplit('/', 1)[-1]} defines")]
    expected = F.schema_url(F.CUSTOM_FACETS[key].__name__)
    if url != expected:
        return [("_schemaURL", f"must be {expected!r} for {key}")]
    validator = Draft202012Validator({"$ref": url}, registry=_registry(), format_checker=format_checker())
    return [
        (".".join(str(p) for p in error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(dict(facet)), key=lambda e: list(e.absolute_path))
    ]


# --------------------------------------------------------------------- against the official schemas


class SpecSchemas:
    """The official OpenLineage JSON Schemas in a folder: ``OpenLineage.json`` and ``facets/*.json``.

    Schemas ``$ref`` one another by their openlineage.io URLs (of several spec versions); every such
    URL is resolved to the file of the same name in the folder, so nothing is fetched.
    """

    def __init__(self, folder: Path) -> None:
        from referencing import Registry, Resource

        self.folder = folder
        spec = folder / "OpenLineage.json"
        if not spec.is_file():
            raise FileNotFoundError(f"{spec}: not found (the folder must hold the spec's OpenLineage.json)")
        self.files: dict[str, Path] = {spec.name: spec}
        facets = folder / "facets"
        if facets.is_dir():
            self.files.update({p.name: p for p in facets.glob("*.json")})
        self.spec = json.loads(spec.read_text(encoding="utf-8"))
        self.spec_id = str(self.spec.get("$id") or "https://openlineage.io/spec/OpenLineage.json")

        def retrieve(uri: str) -> Any:
            name = uri.split("#", 1)[0].rsplit("/", 1)[-1]
            if name in self.files:
                return Resource.from_contents(json.loads(self.files[name].read_text(encoding="utf-8")))
            if uri in custom_schemas():
                return Resource.from_contents(custom_schemas()[uri])
            from referencing.exceptions import NoSuchResource

            raise NoSuchResource(ref=uri)

        self.registry = Registry(retrieve=retrieve).with_resource(  # type: ignore[call-arg]
            self.spec_id, Resource.from_contents(self.spec)
        )

    def problems(self, event: Mapping[str, Any]) -> list[str]:
        """The event against ``OpenLineage.json``'s RunEvent, and each facet against its facet schema."""
        from jsonschema import Draft202012Validator

        checker = format_checker()
        defs = "$defs" if "$defs" in self.spec else "definitions"
        kind = "RunEvent" if "run" in event else ("DatasetEvent" if "dataset" in event else "JobEvent")
        out = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '(event)'}: {e.message}"
            for e in Draft202012Validator(
                {"$ref": f"{self.spec_id}#/{defs}/{kind}"}, registry=self.registry, format_checker=checker
            ).iter_errors(dict(event))
        ]
        for path, key, facet in _all_facets(event):
            url = facet.get("_schemaURL") if isinstance(facet, Mapping) else None
            if not isinstance(url, str):
                out.append(f"{path}: no _schemaURL")
                continue
            if key.startswith(F.CUSTOM_PREFIX):
                out.extend(
                    f"{path}.{sub}: {p}" if sub else f"{path}: {p}"
                    for sub, p in custom_facet_problems(key, facet)
                )
                continue
            name = url.split("#", 1)[0].rsplit("/", 1)[-1]
            if name not in self.files:
                out.append(f"{path}: {self.folder} has no schema {name} (its _schemaURL is {url})")
                continue
            doc = json.loads(self.files[name].read_text(encoding="utf-8"))
            if key not in doc.get("properties", {}):
                out.append(
                    f"{path}: {name} defines the key(s) {sorted(doc.get('properties', {}))}, not {key!r}"
                )
                continue
            validator = Draft202012Validator(doc, registry=self.registry, format_checker=checker)
            out.extend(
                f"{path}.{'.'.join(str(p) for p in e.absolute_path)[len(key) + 1 :]}: {e.message}".replace(
                    ".:", ":"
                )
                for e in validator.iter_errors({key: dict(facet)})
            )
        return out


def validate_against_spec(event: Mapping[str, Any], folder: Path) -> list[str]:
    """The problems of ``event`` against the official schema files in ``folder``."""
    return SpecSchemas(folder).problems(event)


def _all_facets(event: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    def each(obj: Any, field: str, where: str) -> Iterator[tuple[str, str, Any]]:
        facets = obj.get(field) if isinstance(obj, Mapping) else None
        if isinstance(facets, Mapping):
            for key, facet in facets.items():
                yield f"{where}.{field}.{key}", key, facet

    yield from each(event.get("run"), "facets", "run")
    yield from each(event.get("job"), "facets", "job")
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for i, dataset in enumerate(event.get(side) or []):
            yield from each(dataset, "facets", f"{side}[{i}]")
            yield from each(dataset, extra, f"{side}[{i}]")
