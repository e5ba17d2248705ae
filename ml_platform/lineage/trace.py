"""``trace``: from a served request, a Bento, an alias or a model version down to the raw partitions.

The chain (docs/lineage.md)::

    deployment -> bento -> model version (+ alias history, approvals, evaluations, promotions)
      -> MLflow run -> training-window feature partitions -> validated partitions -> raw partitions

Every link is read from what was recorded, following the exact record the downstream names:

* a request id -> the prediction-log line(s) (and the ``prediction_log`` materializations whose
  ``lineage/source`` read that line) -> the line's ``bento_tag``, the Bento that served it, then as
  from that Bento; a line without one (logged before the service recorded it, or served from
  source) -> its ``model_name``/``model_version``, with the Bento a missing hop;
* beside it, a request id -> the ``online_features`` materialization whose snapshot answered it:
  the line's ``online_snapshot_day`` (the partition) and ``online_snapshot_hash`` (recorded as
  ``online/content_hash``, the materialization's data version); of several materializations of that
  content, the first recorded at or after the line's ``online_snapshot_written_at`` (the run that
  wrote what the store held), the others listed. Its ``lineage/upstream`` names the feature and
  weather partitions the snapshot was built from;
* the desired state -> the ``delay_bento`` partition and run that built the served Bento;
* a Bento tag -> the ``delay_bento`` materialization that recorded it -> its ``lineage/upstream``
  names the ``delay_model`` partition and run (and the evaluation and promotion runs);
* a model version -> the ``delay_model`` materialization that registered it (``mlflow/model_version``);
* ``delay_model`` -> ``mlflow/run_id`` and its ``lineage/upstream`` pins (table version, content hash)
  -> for each pin the ``flight_features`` materialization that recorded that pin before the model's
  (the one its ``RecordedVersions`` read) -> its pins -> ``validated_*`` -> its pin -> ``raw_*``.

A link that is not recorded becomes a :class:`~ml_platform.lineage.model.Missing` hop with the
reason; nothing is taken from "the latest materialization of a partition".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import (
    AliasChange,
    BentoHop,
    DeploymentHop,
    DeploymentMaterializationRef,
    Evaluation,
    LineageChain,
    LineageError,
    Materialization,
    Missing,
    ModelHop,
    PartitionNode,
    PredictionHop,
    PredictionLine,
    Promotion,
    RunHop,
    Start,
    StartKind,
)
from ml_platform.lineage.sources import (
    FoundLine,
    LineageSources,
    deployment_events,
    desired_roles,
    find_request,
    find_request_in_table,
    prefix_sha256,
    read_desired,
)

if TYPE_CHECKING:
    from ml_platform.settings import PlatformSettings

ONLINE_FEATURES = "online_features"
DELAY_MODEL = "delay_model"
EVALUATION = "model_evaluation"
PROMOTION = "model_promotion"
DELAY_BENTO = "delay_bento"
DEPLOYMENT = "deployment"
FEATURES = "flight_features"
PREDICTION_LOG = "prediction_log"
#: The checks each data asset declares (``ml_platform_tests/lineage`` checks them against the
#: Definitions, so they cannot drift): importing the asset modules would cost pandera's import.
CHECKS: dict[str, tuple[str, ...]] = {
    "validated_flights": ("quarantine_share_within_threshold", "no_quarantined_rows"),
    "validated_weather": ("quarantine_share_within_threshold", "no_quarantined_rows"),
    FEATURES: ("no_look_ahead", "complete", "targets_consistent"),
    EVALUATION: ("beats_naive_baseline", "not_worse_than_champion"),
}
DEPLOYMENT_NAMES = ("deployment", "deployed", "served")
_VERSION = re.compile(r"^v?(\d+)$")


@dataclass(frozen=True)
class OnlineFeaturesHop:
    """The ``online_features`` snapshot a request's features came from, and the materialization
    that wrote it (request start only; one per distinct snapshot the request's lines name)."""

    #: What the log lines recorded: the snapshot's day, content hash and write time.
    day: str
    content_hash: str
    written_at: str | None
    #: The lines answered from it (``<day>/<file>:<line>``) and how many of them were stale.
    lines: list[str]
    stale_lines: int
    materialization: Materialization
    #: What the materialization recorded: whether the store held its day after the write, its
    #: aggregates' cutoff, and the partitions it was built from (``lineage/upstream``).
    served: bool | None
    aggregates_as_of: str | None
    upstream: list[dict[str, Any]]
    #: Other materializations of the same day that recorded the same content.
    same_content_also: list[str] = field(default_factory=list)


@dataclass
class RequestChain(LineageChain):
    """:class:`LineageChain` of a request id, with the hop to the online features that served it."""

    online_features: list[OnlineFeaturesHop | Missing] = field(default_factory=list)


def trace(
    instance: dg.DagsterInstance,
    settings: PlatformSettings | LineageSources,
    start: str,
    *,
    kind: StartKind | None = None,
) -> LineageChain:
    """The full recorded chain from ``start`` down to the raw partitions.

    Args:
        instance: The Dagster instance that recorded the materializations.
        settings: The platform settings (or :class:`LineageSources` naming the stores directly).
        start: A Bento tag (``delay_service:v3-...``), a registry alias (``champion``), a model
            version (``3`` or ``v3``), a prediction request id, or ``deployment`` (the Bento the
            desired state serves as champion).
        kind: Force how ``start`` is read (otherwise: a number is a version, a tag has a colon, then
            the registered model's aliases, then the prediction log's request ids).

    Raises:
        LineageError: ``start`` names nothing recorded (the message says what was tried).
    """
    return _Tracer(instance, LineageSources.of(settings)).run(start.strip(), kind)


class _Tracer:
    def __init__(self, instance: dg.DagsterInstance, sources: LineageSources) -> None:
        self.instance = instance
        self.src = sources
        self._client: Any = None
        self._bentos: list[dg.EventLogRecord] | None = None
        self._alias_cache: dict[str, dict[str, str]] = {}

    # ---------------------------------------------------------------------------- the start

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.src.client()
        return self._client

    def aliases(self, model_name: str) -> dict[str, str]:
        """The registered model's aliases now (empty when it is not registered)."""
        from mlflow.exceptions import MlflowException

        if model_name not in self._alias_cache:
            try:
                model = self.client.get_registered_model(model_name)
                found = {str(k): str(v) for k, v in (model.aliases or {}).items()}
            except MlflowException:
                found = {}
            self._alias_cache[model_name] = found
        return self._alias_cache[model_name]

    def run(self, start: str, kind: StartKind | None) -> LineageChain:
        if not start:
            raise LineageError(
                "nothing to trace: give a Bento tag, an alias, a model version or a request id"
            )
        name = self.src.model_name
        if kind is None:
            kind = self._guess(start)
        if kind == "deployment":
            return self._from_deployment(start)
        if kind == "bento":
            chain = LineageChain(Start("bento", start, start), name)
            self._from_bento(chain, start, exact=None)
            return chain
        if kind == "alias":
            version = self.aliases(name).get(start)
            if version is None:
                known = ", ".join(sorted(self.aliases(name))) or "none"
                raise LineageError(f"{name} has no alias {start!r} (aliases now: {known})")
            chain = LineageChain(Start("alias", start, f"{name} v{version}"), name)
            self._from_version(chain, name, version)
            return chain
        if kind == "version":
            match = _VERSION.match(start)
            if match is None:
                raise LineageError(f"{start!r} is not a model version (a number, e.g. 3 or v3)")
            version = match.group(1)
            chain = LineageChain(Start("version", start, f"{name} v{version}"), name)
            self._from_version(chain, name, version)
            return chain
        return self._from_request(start)

    def _guess(self, start: str) -> StartKind:
        if start.lower() in DEPLOYMENT_NAMES:
            return "deployment"
        if _VERSION.match(start):
            return "version"
        if ":" in start:
            return "bento"
        if start in self.aliases(self.src.model_name):
            return "alias"
        return "request"

    def _from_deployment(self, start: str) -> LineageChain:
        state, error = read_desired(self.src.desired_path)
        if error is not None:
            raise LineageError(error)
        if state is None:
            raise LineageError(f"nothing is deployed: no desired state at {self.src.desired_path}")
        release = state.champion
        chain = LineageChain(
            Start("deployment", start, f"{release.bento_tag} (champion of generation {state.generation})"),
            release.model_name,
        )
        exact = (
            (release.bento_partition, release.bento_run_id)
            if release.bento_partition is not None and release.bento_run_id is not None
            else None
        )
        if exact is None:
            chain.note(
                Missing(
                    "bento",
                    f"desired state generation {state.generation}",
                    "the desired state's champion records no delay_bento partition and run"
                    " (Release.bento_partition / bento_run_id); the Bento is looked up by its tag",
                )
            )
        self._from_bento(chain, release.bento_tag, exact=exact)
        return chain

    def _from_request(self, request_id: str) -> LineageChain:
        lines = find_request(self.src.prediction_log_dir, request_id)
        found_in = f"{self.src.prediction_log_dir}/<day>/*.jsonl"
        if not lines and self.src.delta_root is not None:
            lines = find_request_in_table(self.src.delta_root, request_id)
            found_in = f"{self.src.delta_root / PREDICTION_LOG} (published rows)"
        if not lines:
            raise LineageError(
                f"{request_id!r} is not a model version, a Bento tag (name:version), an alias of"
                f" {self.src.model_name} ({', '.join(sorted(self.aliases(self.src.model_name))) or 'none'})"
                f" or a request id of the prediction log ({self.src.prediction_log_dir})"
            )
        versions = sorted({(str(f.data.get("model_name")), str(f.data.get("model_version"))) for f in lines})
        name, version = versions[0]
        chain = RequestChain(Start("request", request_id, f"{name} v{version}"), name)
        chain.prediction = PredictionHop(request_id, found_in, self._prediction_lines(lines))
        chain.online_features = self._online_features(chain, request_id, lines)
        if len(versions) > 1:
            chain.check(
                "one model answered the request",
                False,
                f"the log names {', '.join(f'{n} v{v}' for n, v in versions)};"
                f" the chain follows {name} v{version}",
            )
        tags = sorted({str(f.data["bento_tag"]) for f in lines if f.data.get("bento_tag")})
        candidates = sorted({t for r in self._bentos_of_version(name, version) if (t := self._tag(r))})
        if tags:
            chain.served_by = tags[0]
            if len(tags) > 1:
                chain.check(
                    "one Bento answered the request",
                    False,
                    f"the log names {', '.join(tags)}; the chain follows {tags[0]}",
                )
            if any(self._tag(r) == tags[0] for r in self._all_bentos()):
                self._from_bento(chain, tags[0], exact=None)
                bento = chain.bentos[0] if chain.bentos else None
                if bento is not None:
                    chain.check(
                        "the Bento that served the request was built for the logged model version",
                        bento.model_version == version and bento.model_name in (None, name),
                        f"the log names {name} v{version}; {DELAY_BENTO} records {bento.tag} for"
                        f" {bento.model_name} v{bento.model_version}",
                    )
                return chain
            chain.note(
                Missing(
                    "bento",
                    f"Bento {tags[0]} (request {request_id})",
                    f"no {DELAY_BENTO} materialization recorded the Bento tag the log line names (a Bento"
                    " built outside the platform?); the chain follows the line's model version, the"
                    " Bentos built for it are listed",
                    candidates=candidates,
                )
            )
            self._from_version(chain, name, version)
            return chain
        chain.served_by = chain.note(
            Missing(
                "served_by",
                f"request {request_id}",
                "the prediction log line records model_name and model_version but no Bento tag (a line"
                " logged before the service recorded it, or by a service served from source, not from"
                " a Bento); the Bentos built for that version are the candidates, none is picked",
                candidates=candidates,
            )
        )
        self._from_version(chain, name, version)
        return chain

    def _prediction_lines(self, lines: Sequence[FoundLine]) -> list[PredictionLine]:
        days = sorted({f.day for f in lines})
        collected: dict[str, list[dg.EventLogRecord]] = {}
        for record in rec.fetch(self.instance, PREDICTION_LOG, partitions=days):
            collected.setdefault(str(record.asset_materialization.partition), []).append(record)  # type: ignore[union-attr]
        out = []
        for found in lines:
            by: list[str] = []
            sha_ok: bool | None = None
            for record in collected.get(found.day, []):
                source = rec.value(record, keys.LINEAGE_SOURCE) or {}
                for entry in source.get("files") or []:
                    if entry.get("file") == found.file and int(entry.get("lines") or 0) >= found.line:
                        by.append(rec.materialization(record).id)
                        digest = prefix_sha256(
                            self.src.prediction_log_dir / found.day / found.file, int(entry["bytes_read"])
                        )
                        if digest is not None:  # None: the file is gone, nothing to compare
                            ok = digest == entry.get("sha256")
                            sha_ok = ok if sha_ok is None else sha_ok and ok
            data = found.data
            out.append(
                PredictionLine(
                    file=found.file,
                    line=found.line,
                    flight_day=found.day,
                    logged_at=data.get("logged_at"),
                    endpoint=data.get("endpoint"),
                    index=data.get("index"),
                    model_name=data.get("model_name"),
                    model_version=None if data.get("model_version") is None else str(data["model_version"]),
                    bento_tag=None if data.get("bento_tag") is None else str(data["bento_tag"]),
                    latency_ms=data.get("latency_ms"),
                    request=dict(data.get("request") or {}),
                    prediction=dict(data.get("prediction") or {}),
                    collected_by=by,
                    collected_sha256_ok=sha_ok,
                )
            )
        return out

    # ---------------------------------------------------------------------- online features

    def _online_features(
        self, chain: LineageChain, request_id: str, lines: Sequence[FoundLine]
    ) -> list[OnlineFeaturesHop | Missing]:
        """The ``online_features`` materialization of each snapshot the lines name (see the module doc)."""
        from ml_platform.defs.serving.online import ONLINE_AS_OF, ONLINE_CONTENT_HASH, ONLINE_SERVED

        named: dict[tuple[str, str, str | None], list[FoundLine]] = {}
        unnamed: list[str] = []
        for found in lines:
            day, content = found.data.get("online_snapshot_day"), found.data.get("online_snapshot_hash")
            if day is None or content is None:
                unnamed.append(f"{found.day}/{found.file}:{found.line}")
                continue
            written = found.data.get("online_snapshot_written_at")
            named.setdefault((str(day), str(content), None if written is None else str(written)), []).append(
                found
            )
        hops: list[OnlineFeaturesHop | Missing] = []
        if unnamed:
            hops.append(
                chain.note(
                    Missing(
                        ONLINE_FEATURES,
                        f"request {request_id} ({', '.join(unnamed)})",
                        "the prediction log line records no online snapshot (online_snapshot_day and"
                        " online_snapshot_hash: a line logged before the service recorded them); which"
                        " online_features materialization served it is unknown, none is picked",
                    )
                )
            )
        recorded = rec.fetch(self.instance, ONLINE_FEATURES, partitions={day for day, _, _ in named})
        for (day, content, written), found in sorted(named.items()):
            where = [f"{f.day}/{f.file}:{f.line}" for f in found]
            of_day = [r for r in recorded if r.asset_materialization.partition == day]  # type: ignore[union-attr]
            same = [r for r in of_day if rec.text(r, ONLINE_CONTENT_HASH) == content]
            if not same:
                seen = sorted({h[:12] for r in of_day if (h := rec.text(r, ONLINE_CONTENT_HASH))})
                hops.append(
                    chain.note(
                        Missing(
                            ONLINE_FEATURES,
                            f"{ONLINE_FEATURES}[{day}] content {content[:12]} (request {request_id})",
                            f"no {ONLINE_FEATURES} materialization of {day} recorded the content hash the"
                            f" log line names (recorded: {', '.join(seen) or 'none of that day'})",
                            candidates=[rec.materialization(r).id for r in of_day],
                        )
                    )
                )
                continue
            record = _writer_of(same, written)
            upstream = rec.upstream_entries(record) or []
            served = rec.value(record, ONLINE_SERVED)
            hops.append(
                OnlineFeaturesHop(
                    day=day,
                    content_hash=content,
                    written_at=written,
                    lines=where,
                    stale_lines=sum(f.data.get("stale") is True for f in found),
                    materialization=rec.materialization(record),
                    served=None if served is None else bool(served),
                    aggregates_as_of=rec.text(record, ONLINE_AS_OF),
                    upstream=upstream,
                    same_content_also=[
                        rec.materialization(r).id for r in same if r.storage_id != record.storage_id
                    ],
                )
            )
            chain.check(
                "the online_features materialization's data version is the logged snapshot hash",
                rec.materialization(record).data_version == content,
                f"{rec.materialization(record).id} records data version"
                f" {rec.materialization(record).data_version}; the log line names {content}",
            )
        return hops

    # ------------------------------------------------------------------------------- bentos

    @staticmethod
    def _tag(record: dg.EventLogRecord) -> str | None:
        return rec.text(record, keys.BENTO_TAG)

    def _all_bentos(self) -> list[dg.EventLogRecord]:
        """Every ``delay_bento`` materialization (weekly: a few per week), fetched once per trace."""
        if self._bentos is None:
            self._bentos = rec.fetch(self.instance, DELAY_BENTO)
        return self._bentos

    def _bentos_of_version(self, name: str, version: str) -> list[dg.EventLogRecord]:
        return [
            r
            for r in self._all_bentos()
            if rec.text(r, keys.MLFLOW_MODEL_VERSION) == version
            and rec.text(r, keys.MLFLOW_MODEL_NAME) in (None, name)
        ]

    def _from_bento(self, chain: LineageChain, tag: str, exact: tuple[str, str] | None) -> None:
        builds = [r for r in self._all_bentos() if self._tag(r) == tag]
        if not builds:
            known = sorted({t for r in self._all_bentos() if (t := self._tag(r))})
            raise LineageError(
                f"no {DELAY_BENTO} materialization recorded the Bento tag {tag!r}"
                f" (recorded tags: {', '.join(known[-5:]) or 'none'})"
            )
        if exact is not None:
            chosen = [
                r
                for r in builds
                if r.asset_materialization.partition == exact[0] and r.run_id == exact[1]  # type: ignore[union-attr]
            ]
            if not chosen:
                chain.bentos = []
                gap = Missing(
                    "bento",
                    f"{DELAY_BENTO}[{exact[0]}] run {exact[1]}",
                    f"that run recorded no materialization of {tag}",
                    candidates=[rec.materialization(r).id for r in builds],
                )
                chain.model = chain.note(gap)
                self._deployment(chain, {tag}, [])
                return
            build = chosen[0]
        else:
            fresh = [r for r in builds if not rec.value(r, keys.BENTO_REUSED)]
            build = (fresh or builds)[0]  # the build that made the tag; rebuilds are listed
        others = [rec.materialization(r).id for r in builds if r.storage_id != build.storage_id]
        chain.bentos = [self._bento_hop(build, others)]
        self._deployment(chain, {tag}, [build])
        model_record = self._model_of_bento(chain, build)
        if isinstance(model_record, Missing):
            chain.model = chain.note(model_record)
            return
        name = rec.text(model_record, keys.MLFLOW_MODEL_NAME) or chain.model_name
        version = rec.text(model_record, keys.MLFLOW_MODEL_VERSION) or ""
        chain.model_name = name
        bento = chain.bentos[0]
        chain.check(
            "bento serves the version its model materialization registered",
            bento.model_version == version,
            f"{DELAY_BENTO} records v{bento.model_version},"
            f" {rec.materialization(model_record).label} registered v{version}",
        )
        chain.check(
            "bento and model record the same MLflow run",
            bento.mlflow_run_id == rec.text(model_record, keys.MLFLOW_RUN_ID),
            f"{bento.mlflow_run_id} vs {rec.text(model_record, keys.MLFLOW_RUN_ID)}",
        )
        self._down_from_model(chain, model_record, name, version, bento_upstream=bento.upstream)

    def _bento_hop(self, record: dg.EventLogRecord, others: list[str]) -> BentoHop:
        from ml_platform.defs.serving import bento as b

        aliases = rec.value(record, b.ALIASES_AT_BUILD)
        return BentoHop(
            tag=str(self._tag(record)),
            materialization=rec.materialization(record),
            model_name=rec.text(record, keys.MLFLOW_MODEL_NAME),
            model_version=rec.text(record, keys.MLFLOW_MODEL_VERSION),
            mlflow_run_id=rec.text(record, keys.MLFLOW_RUN_ID),
            bento_model_tag=rec.text(record, b.BENTO_MODEL_TAG),
            lock_sha256=rec.text(record, b.LOCK_SHA256),
            aliases_at_build=[str(a) for a in aliases] if isinstance(aliases, list) else [],
            built_at=rec.text(record, b.BENTO_BUILT_AT),
            reused=rec.value(record, b.BENTO_REUSED),
            path=rec.text(record, b.BENTO_PATH),
            upstream=rec.upstream_entries(record) or [],
            also_built_by=others,
        )

    def _model_of_bento(self, chain: LineageChain, bento: dg.EventLogRecord) -> dg.EventLogRecord | Missing:
        """The ``delay_model`` materialization the Bento's ``lineage/upstream`` names (partition and run)."""
        label = rec.materialization(bento).id
        entries = rec.upstream_entries(bento)
        if entries is None:
            return Missing(
                "model",
                label,
                f"the {DELAY_BENTO} materialization records no {keys.LINEAGE_UPSTREAM}, so the"
                f" {DELAY_MODEL} run that trained its model is unknown",
                candidates=[f"{keys.MLFLOW_MODEL_VERSION}={rec.text(bento, keys.MLFLOW_MODEL_VERSION)}"]
                if rec.text(bento, keys.MLFLOW_MODEL_VERSION)
                else [],
            )
        named = [e for e in entries if e.get("asset") == DELAY_MODEL]
        if not named or "run_id" not in named[0] or "partition" not in named[0]:
            return Missing(
                "model", label, f"its {keys.LINEAGE_UPSTREAM} names no {DELAY_MODEL} partition and run"
            )
        partition, run_id = str(named[0]["partition"]), str(named[0]["run_id"])
        found = [
            r for r in rec.fetch(self.instance, DELAY_MODEL, partitions=[partition]) if r.run_id == run_id
        ]
        if not found:
            return Missing(
                "model",
                f"{label} names {DELAY_MODEL}[{partition}] run {run_id}",
                f"run {run_id} recorded no {DELAY_MODEL}[{partition}] materialization",
            )
        return found[-1]

    # ----------------------------------------------------------------------- model version

    def _from_version(self, chain: LineageChain, name: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        records = [
            r
            for r in rec.fetch(self.instance, DELAY_MODEL)
            if rec.text(r, keys.MLFLOW_MODEL_VERSION) == version
            and rec.text(r, keys.MLFLOW_MODEL_NAME) in (None, name)
        ]
        try:
            mv = self.client.get_model_version(name, version)
        except MlflowException:
            mv = None
        if not records and mv is None:
            raise LineageError(
                f"{name} v{version}: no such version in the registry ({self.src.tracking_uri}) and no"
                f" {DELAY_MODEL} materialization registered it"
            )
        bentos = self._bentos_of_version(name, version)
        if records:
            model_record = records[0]
            if len(records) > 1:
                runs = [r for r in records if mv is not None and rec.text(r, keys.MLFLOW_RUN_ID) == mv.run_id]
                model_record = runs[0] if runs else records[0]
                chain.check(
                    "one delay_model materialization registered the version",
                    False,
                    f"{len(records)} did ({', '.join(rec.materialization(r).id for r in records)});"
                    f" following {rec.materialization(model_record).id}",
                )
            linked = [b for b in bentos if self._names_model(b, model_record)]
            unlinked = [b for b in bentos if b not in linked]
            for bento in unlinked:
                chain.note(
                    Missing(
                        "bento",
                        rec.materialization(bento).id,
                        f"records {keys.MLFLOW_MODEL_VERSION}={version} but its {keys.LINEAGE_UPSTREAM}"
                        f" does not name {rec.materialization(model_record).id}'s run",
                    )
                )
            chain.bentos = [self._bento_hop(b, []) for b in linked]
            self._deployment(chain, {t for b in linked if (t := self._tag(b))}, linked)
            self._down_from_model(chain, model_record, name, version, bento_upstream=None)
            return
        chain.bentos = [self._bento_hop(b, []) for b in bentos]
        self._deployment(chain, {t for b in bentos if (t := self._tag(b))}, bentos)
        chain.model = chain.note(
            Missing(
                "model",
                f"{name} v{version} (MLflow run {mv.run_id})",
                f"no {DELAY_MODEL} materialization recorded registering this version (it was registered"
                " outside the graph): its training data is not recorded",
            )
        )
        self._run(chain, str(mv.run_id), name, version, None)

    @staticmethod
    def _names_model(bento: dg.EventLogRecord, model: dg.EventLogRecord) -> bool:
        for entry in rec.upstream_entries(bento) or []:
            if entry.get("asset") == DELAY_MODEL and entry.get("run_id") == model.run_id:
                return str(entry.get("partition")) == model.asset_materialization.partition  # type: ignore[union-attr]
        return False

    def _down_from_model(
        self,
        chain: LineageChain,
        model: dg.EventLogRecord,
        name: str,
        version: str,
        *,
        bento_upstream: list[dict[str, Any]] | None,
    ) -> None:
        chain.model = self._model_hop(chain, model, name, version, bento_upstream)
        run_id = rec.text(model, keys.MLFLOW_RUN_ID)
        if run_id is None:
            chain.mlflow_run = chain.note(
                Missing("mlflow_run", rec.materialization(model).id, f"records no {keys.MLFLOW_RUN_ID}")
            )
        else:
            self._run(chain, run_id, name, version, model)
        self._data(chain, model)

    def _model_hop(
        self,
        chain: LineageChain,
        model: dg.EventLogRecord,
        name: str,
        version: str,
        bento_upstream: list[dict[str, Any]] | None,
    ) -> ModelHop:
        from mlflow.exceptions import MlflowException

        from ml_platform.lib.registry.audit import AuditIntegrityError, AuditLog

        mat = rec.materialization(model)
        partition = mat.partition
        try:
            mv = self.client.get_model_version(name, version)
        except MlflowException as exc:
            mv = None
            chain.note(
                Missing("registry", f"{name} v{version}", f"not in the MLflow registry: {exc.message}")
            )
        audit = AuditLog(self.src.audit_table)
        events = [e for e in audit.events(name) if version in (e.version, e.previous_version)]
        verified: bool | None = None
        audit_error = None
        try:
            audit.verify(name)
            verified = True
        except AuditIntegrityError as exc:
            verified, audit_error = False, str(exc)
        history = [
            AliasChange(
                event_id=e.event_id,
                occurred_at=e.occurred_at.isoformat(),
                action=e.action,
                alias=e.alias,
                version=e.version,
                previous_version=e.previous_version,
                actor=e.actor,
                reason=e.reason,
                event_hash=e.event_hash,
            )
            for e in events
        ]
        approvals = [h for h in history if h.action == "promote" and h.version == version]
        # who is champion now, by the audit log (promotions and rollbacks move it) and by the registry
        champion_by_log = None
        for e in audit.events(name):
            if e.alias == "champion":
                champion_by_log = e.version
        live = self.aliases(name)
        chain.check(
            "champion alias agrees with the audit log",
            live.get("champion") == champion_by_log,
            f"registry: {live.get('champion')}, audit log: {champion_by_log}",
        )
        registered_event = rec.text(model, keys.REGISTRY_EVENT)
        if registered_event is not None:
            chain.check(
                "the model's registration is in the audit log",
                any(h.event_id == registered_event for h in history),
                f"{keys.REGISTRY_EVENT}={registered_event}",
            )
        evaluations, promotions = self._decisions(chain, model, version, partition, bento_upstream)
        if mv is not None:
            chain.check(
                "registry version was registered from the recorded MLflow run",
                str(mv.run_id) == rec.text(model, keys.MLFLOW_RUN_ID),
                f"registry run {mv.run_id},"
                f" {mat.id} {keys.MLFLOW_RUN_ID}={rec.text(model, keys.MLFLOW_RUN_ID)}",
            )
        return ModelHop(
            model_name=name,
            version=version,
            materialization=mat,
            training_window=rec.text(model, keys.TRAINING_WINDOW),
            weights_digest=rec.text(model, keys.TRAINING_WEIGHTS_DIGEST),
            registry_run_id=None if mv is None else str(mv.run_id),
            aliases_now=sorted(a for a, v in live.items() if v == version),
            source=None if mv is None else str(mv.source),
            alias_history=history,
            approvals=approvals,
            audit_verified=verified,
            audit_error=audit_error,
            evaluations=evaluations,
            promotions=promotions,
        )

    def _decisions(
        self,
        chain: LineageChain,
        model: dg.EventLogRecord,
        version: str,
        partition: str | None,
        bento_upstream: list[dict[str, Any]] | None,
    ) -> tuple[list[Evaluation], list[Promotion]]:
        """The evaluations that judged this materialization's version, and the promotions that decided it.

        An evaluation is linked by its ``lineage/upstream`` naming the model's run; a Bento names the
        exact evaluation and promotion runs it was built after, and only those are followed then.
        A promotion records the version it decided on (``mlflow/model_version``) but no
        ``lineage/upstream``: which evaluation it re-read is not recorded.
        """
        if partition is None:
            return [], []
        named = {str(e.get("asset")): str(e.get("run_id")) for e in bento_upstream or [] if e.get("run_id")}
        evaluations = []
        eval_records = [
            r
            for r in rec.fetch(
                self.instance, EVALUATION, partitions=[partition], after_storage_id=model.storage_id
            )
            if any(
                e.get("asset") == DELAY_MODEL and e.get("run_id") == model.run_id
                for e in rec.upstream_entries(r) or []
            )
            and (EVALUATION not in named or r.run_id == named[EVALUATION])
        ]
        checks = rec.check_results(
            self.instance,
            EVALUATION,
            CHECKS[EVALUATION],
            [(r.run_id, None) for r in eval_records],
            since=min((r.timestamp for r in eval_records), default=None),
        )
        for r in eval_records:
            gates = rec.value(r, keys.EVALUATION_GATES)
            evaluations.append(
                Evaluation(
                    materialization=rec.materialization(r),
                    passed=rec.value(r, keys.EVALUATION_PASSED),
                    gates=[
                        {k: g.get(k) for k in ("name", "passed", "detail")}
                        for g in (gates if isinstance(gates, list) else [])
                    ],
                    champion_version=rec.text(r, keys.EVALUATION_CHAMPION_VERSION),
                    holdout=rec.text(r, keys.EVALUATION_HOLDOUT),
                    metrics={
                        k.removeprefix("evaluation/"): float(rec.value(r, k))
                        for k in rec.meta_of(r)
                        if k.startswith("evaluation/model_") or k.startswith("evaluation/baseline_")
                    },
                    checks=checks.get((r.run_id, None), []),
                )
            )
            chain.check(
                "evaluation judged the model's version",
                rec.text(r, keys.MLFLOW_MODEL_VERSION) == version,
                f"{rec.materialization(r).id} records v{rec.text(r, keys.MLFLOW_MODEL_VERSION)}",
            )
        if EVALUATION in named and not eval_records:
            chain.note(
                Missing(
                    "evaluation",
                    f"bento names {EVALUATION}[{partition}] run {named[EVALUATION]}",
                    f"that run recorded no {EVALUATION} materialization naming the model's run",
                )
            )
        if bento_upstream is not None:
            for ev in evaluations:
                chain.check(
                    "the bento's evaluation passed its gates", ev.passed is True, ev.materialization.id
                )
        promotions = []
        unlinked: list[str] = []
        for r in rec.fetch(
            self.instance, PROMOTION, partitions=[partition], after_storage_id=model.storage_id
        ):
            if rec.text(r, keys.MLFLOW_MODEL_VERSION) != version:
                continue
            if PROMOTION in named and r.run_id != named[PROMOTION]:
                continue
            entries = rec.upstream_entries(r)
            if entries is None:
                unlinked.append(rec.materialization(r).id)
            else:
                read = {str(e.get("run_id")) for e in entries if e.get("asset") == EVALUATION}
                chain.check(
                    "the promotion re-checked this evaluation's gates",
                    bool(read) and read <= {ev.run_id for ev in eval_records},
                    f"{rec.materialization(r).id} read {EVALUATION} run(s)"
                    f" {', '.join(sorted(read)) or 'none'}",
                )
            promotions.append(
                Promotion(
                    materialization=rec.materialization(r),
                    decision=rec.text(r, keys.REGISTRY_DECISION),
                    reason=rec.text(r, "registry/reason"),
                    champion_before=rec.text(r, "registry/champion_before"),
                    champion_after=rec.text(r, keys.REGISTRY_CHAMPION),
                    audit_event=rec.text(r, keys.REGISTRY_EVENT),
                )
            )
        if PROMOTION in named and not promotions:
            chain.note(
                Missing(
                    "promotion",
                    f"bento names {PROMOTION}[{partition}] run {named[PROMOTION]}",
                    f"that run recorded no {PROMOTION} materialization deciding v{version}",
                )
            )
        if unlinked:
            chain.note(
                Missing(
                    "promotion -> evaluation",
                    ", ".join(unlinked),
                    f"{PROMOTION} records no {keys.LINEAGE_UPSTREAM}: which {EVALUATION} materialization"
                    " it re-read the gates from is not recorded (it reads the latest one)",
                    on_path=False,
                )
            )
        return evaluations, promotions

    def _run(
        self, chain: LineageChain, run_id: str, name: str, version: str, model: dg.EventLogRecord | None
    ) -> None:
        from mlflow.exceptions import MlflowException

        from ml_platform.lib.training.tracking import model_lineage

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            chain.mlflow_run = chain.note(
                Missing("mlflow_run", f"run {run_id}", f"not found in {self.src.tracking_uri}: {exc.message}")
            )
            return
        try:
            lineage = model_lineage(self.client, name, version)
            datasets = [list(d) for d in lineage.datasets] if lineage.run_id == run_id else []
        except (MlflowException, ValueError):
            lineage, datasets = None, []
        if lineage is None or lineage.run_id != run_id:
            datasets = _datasets(run)
        info = run.info
        chain.mlflow_run = RunHop(
            run_id=run_id,
            experiment_id=str(info.experiment_id),
            status=str(info.status),
            start_time=_ms(info.start_time),
            end_time=_ms(info.end_time),
            tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            params=dict(run.data.params),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            datasets=datasets,
        )
        if model is None:
            return
        tags = run.data.tags
        mat = rec.materialization(model)
        for tag, expected, what in (
            ("dagster.run_id", model.run_id, "the Dagster run"),
            ("dagster.partition", mat.partition, "the partition"),
            ("git.commit", mat.git_commit, keys.LINEAGE_GIT_COMMIT),
            ("dagster.code_version", mat.code_version, keys.LINEAGE_CODE_VERSION),
        ):
            chain.check(
                f"MLflow run tag {tag} matches {what}",
                tags.get(tag) == expected,
                f"run {run_id}: {tags.get(tag)!r}, {mat.id}: {expected!r}",
            )
        pins = [p for e in rec.upstream_entries(model) or [] if (p := rec.upstream_pin(e))]
        recorded = {(f"{p[0]}[{p[1]}]", p[4]) for p in pins}
        inputs = {(d[0], d[3]) for d in datasets if d[1] == "training"}
        chain.check(
            "MLflow dataset inputs are the recorded feature pins",
            recorded == inputs,
            f"{len(inputs)} training inputs, {len(recorded)} pins"
            + (f"; differ: {sorted(recorded ^ inputs)[:3]}" if recorded != inputs else ""),
        )

    # ----------------------------------------------------------------------- data partitions

    def _data(self, chain: LineageChain, model: dg.EventLogRecord) -> None:
        """features -> validated -> raw, each pin resolved to the materialization that recorded it."""
        label = rec.materialization(model).id
        if rec.upstream_entries(model) is None:
            chain.features = [chain.note(Missing(FEATURES, label, f"records no {keys.LINEAGE_UPSTREAM}"))]
            return
        features, feature_records = self._layer(chain, [model], FEATURES)
        chain.features = features
        validated, validated_records = self._layer(chain, feature_records, "validated_")
        chain.validated = validated
        raw, _ = self._layer(chain, validated_records, "raw_")
        chain.raw = raw

    def _layer(
        self, chain: LineageChain, referrers: Sequence[dg.EventLogRecord], prefix: str
    ) -> tuple[list[PartitionNode | Missing], list[dg.EventLogRecord]]:
        """The upstream partitions (tables starting with ``prefix``) the ``referrers`` recorded, resolved.

        One fetch per upstream table for every partition any referrer names; each referrer's pins are
        resolved among the materializations recorded before it. Sets each referrer node's
        ``upstream`` ids (the nodes are rebuilt by the caller's layer, so ids are returned in order).
        """
        wanted: dict[str, set[str]] = {}
        per_referrer: list[tuple[dg.EventLogRecord, list[rec.PinKey]]] = []
        for referrer in referrers:
            entries = rec.upstream_entries(referrer)
            if entries is None:
                chain.note(
                    Missing(
                        prefix.rstrip("_"),
                        rec.materialization(referrer).id,
                        f"records no {keys.LINEAGE_UPSTREAM}",
                    )
                )
                per_referrer.append((referrer, []))
                continue
            pins = [p for e in entries if (p := rec.upstream_pin(e)) and p[0].startswith(prefix)]
            per_referrer.append((referrer, pins))
            for pin in pins:
                wanted.setdefault(pin[0], set()).add(pin[1])
        latest = max((r.storage_id for r in referrers), default=0)
        indexes = {
            table: rec.PinIndex(
                table, rec.fetch(self.instance, table, partitions=parts, before_storage_id=latest)
            )
            for table, parts in wanted.items()
        }
        nodes: dict[int, PartitionNode] = {}
        chosen_records: dict[int, dg.EventLogRecord] = {}
        gaps: dict[str, Missing] = {}
        links: dict[int, list[str]] = {}
        for referrer, pins in per_referrer:
            ids = []
            for pin in pins:
                found = indexes[pin[0]].resolve(pin, referrer.storage_id, rec.materialization(referrer).id)
                if isinstance(found, Missing):
                    gaps.setdefault(found.ref, found)
                    ids.append(f"missing: {rec.describe_pin(pin)}")
                    continue
                record, same = found
                chosen_records[record.storage_id] = record
                ids.append(rec.materialization(record).id)
                if record.storage_id not in nodes:
                    nodes[record.storage_id] = self._node(record, same)
            links[referrer.storage_id] = ids
        self._link_upstream(chain, links)
        self._attach_checks(nodes, chosen_records)
        ordered = sorted(
            nodes.values(), key=lambda n: (n.materialization.asset, n.materialization.partition or "")
        )
        for gap in gaps.values():
            chain.note(gap)
        return [*ordered, *gaps.values()], sorted(chosen_records.values(), key=lambda r: r.storage_id)

    def _link_upstream(self, chain: LineageChain, links: dict[int, list[str]]) -> None:
        """Set ``upstream`` on the nodes of the layer below (the referrers) from ``links``."""
        for layer in (chain.features, chain.validated):
            for i, node in enumerate(layer):
                if isinstance(node, PartitionNode) and node.materialization.storage_id in links:
                    layer[i] = PartitionNode(
                        **{**node.__dict__, "upstream": links[node.materialization.storage_id]}
                    )

    @staticmethod
    def _node(record: dg.EventLogRecord, same: Iterable[dg.EventLogRecord]) -> PartitionNode:
        mat = rec.materialization(record)
        quality = {
            k: rec.value(record, k)
            for k in (
                keys.QUALITY_QUARANTINED_ROWS,
                keys.QUALITY_QUARANTINE_SHARE,
                keys.QUALITY_FAILURES_BY_CHECK,
                keys.QUALITY_QUARANTINE_TABLE,
            )
            if rec.value(record, k) is not None
        }
        source = rec.value(record, keys.LINEAGE_SOURCE)
        return PartitionNode(
            id=mat.id,
            materialization=mat,
            storage=rec.storage(record),
            quality=quality,
            source=dict(source) if isinstance(source, dict) else {},
            same_pin_also=[rec.materialization(r).id for r in same],
        )

    def _attach_checks(self, nodes: dict[int, PartitionNode], records: dict[int, dg.EventLogRecord]) -> None:
        by_asset: dict[str, list[dg.EventLogRecord]] = {}
        for record in records.values():
            by_asset.setdefault(record.asset_materialization.asset_key.to_user_string(), []).append(record)  # type: ignore[union-attr]
        for asset, group in by_asset.items():
            names = CHECKS.get(asset)
            if not names:
                continue
            found = rec.check_results(
                self.instance,
                asset,
                names,
                [(r.run_id, r.asset_materialization.partition) for r in group],  # type: ignore[union-attr]
                since=min(r.timestamp for r in group),
            )
            for r in group:
                results = found.get((r.run_id, r.asset_materialization.partition), [])  # type: ignore[union-attr]
                node = nodes[r.storage_id]
                nodes[r.storage_id] = PartitionNode(**{**node.__dict__, "checks": results})

    # --------------------------------------------------------------------------- deployment

    def _deployment(self, chain: LineageChain, tags: set[str], builds: Sequence[dg.EventLogRecord]) -> None:
        state, error = read_desired(self.src.desired_path)
        if error is not None:
            chain.note(Missing("deployment", str(self.src.desired_path), error))
        events, verified, log_error = deployment_events(self.src.deployment_log_table, tags)
        built = {(r.asset_materialization.partition, r.run_id) for r in builds}  # type: ignore[union-attr]
        materializations = deployments_of(self.instance, builds)
        roles = desired_roles(state, tags)
        for role in roles:
            if (
                role.bento_run_id is not None
                and (role.bento_partition, role.bento_run_id) not in built
                and builds
            ):
                chain.check(
                    "the desired state names the bento build of the chain",
                    False,
                    f"{role.role} {role.bento_tag} was built by {DELAY_BENTO}[{role.bento_partition}] run"
                    f" {role.bento_run_id}",
                )
        if materializations and not any(m.materialization.git_commit for m in materializations):
            chain.note(
                Missing(
                    "deployment git commit",
                    materializations[-1].materialization.id,
                    f"the {DEPLOYMENT} asset records no {keys.LINEAGE_GIT_COMMIT}",
                    on_path=False,
                )
            )
        chain.deployment = DeploymentHop(
            desired_path=str(self.src.desired_path),
            desired_generation=None if state is None else state.generation,
            desired_mode=None if state is None else state.mode,
            desired_requested_by=None if state is None else state.requested_by,
            desired_requested_at=None if state is None else state.requested_at.isoformat(),
            roles=roles,
            rolled_back=[] if state is None else sorted(set(state.rolled_back) & tags),
            events=events,
            log_table=str(self.src.deployment_log_table),
            log_verified=verified,
            log_error=log_error,
            materializations=materializations,
        )


def _writer_of(same: Sequence[dg.EventLogRecord], written_at: str | None) -> dg.EventLogRecord:
    """Of the materializations that recorded one snapshot's content (oldest first), the one that wrote
    what the store held at ``written_at``: the first recorded at or after that write (its event follows
    the write). Without a write time (or with a clock that disagrees), the first one: the content is
    the same, the others are listed beside it."""
    if written_at is not None:
        moment = datetime.fromisoformat(written_at).timestamp()
        after = [r for r in same if r.timestamp >= moment]
        if after:
            return after[0]
    return same[0]


def deployments_of(
    instance: dg.DagsterInstance, builds: Sequence[dg.EventLogRecord]
) -> list[DeploymentMaterializationRef]:
    """The ``deployment`` materializations whose ``lineage/upstream`` names one of these Bento builds."""
    from ml_platform.defs.serving import deployment as d

    if not builds:
        return []
    built = {(r.asset_materialization.partition, r.run_id) for r in builds}  # type: ignore[union-attr]
    out = []
    for record in rec.fetch(instance, DEPLOYMENT, after_storage_id=min(r.storage_id for r in builds)):
        for entry in rec.upstream_entries(record) or []:
            if entry.get("asset") == DELAY_BENTO and (entry.get("partition"), entry.get("run_id")) in built:
                generation = rec.value(record, d.GENERATION)
                out.append(
                    DeploymentMaterializationRef(
                        materialization=rec.materialization(record),
                        bento_tag=None if entry.get("bento_tag") is None else str(entry["bento_tag"]),
                        role=None if entry.get("role") is None else str(entry["role"]),
                        generation=None if generation is None else int(generation),
                        applied=rec.text(record, d.APPLIED),
                    )
                )
    return out


def _ms(value: int | None) -> str | None:
    from datetime import UTC, datetime

    return None if value is None else datetime.fromtimestamp(value / 1000, UTC).isoformat()


def _datasets(run: Any) -> list[list[str]]:
    """The run's dataset inputs, as :func:`~ml_platform.lib.training.tracking.model_lineage` lists them."""
    import json

    out = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in item.tags}
        source = json.loads(item.dataset.source) if item.dataset.source_type in ("delta", "lakefs") else {}
        pinned = source.get("delta_table_version", tags.get("delta_table_version"))
        out.append(
            [
                item.dataset.name,
                tags.get("mlflow.data.context", ""),
                "" if pinned is None else str(pinned),
                tags.get("data_version", item.dataset.digest),
            ]
        )
    return sorted(out)
