"""Gathering an evidence bundle from the recorded lineage: :func:`build_evidence`."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import DeploymentHop, PartitionNode, to_json
from ml_platform.lineage.sources import LineageSources
from ml_platform.lineage.trace import CHECKS, trace

if TYPE_CHECKING:
    import dagster as dg

    from ml_platform.settings import PlatformSettings
from ml_platform.lineage.evidence.data import _DataSections
from ml_platform.lineage.evidence.graph import _GraphSection
from ml_platform.lineage.evidence.schema import (
    _IMAGE,
    _VERSION,
    METRIC_ORDER,
    PNG_MAGIC,
    SCHEMA_ID,
    WHO,
    Evidence,
    _clean,
)


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


class _Builder(_GraphSection, _DataSections):
    """Reads one traced chain's recorded metadata into an :class:`Evidence`, section by section."""

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
