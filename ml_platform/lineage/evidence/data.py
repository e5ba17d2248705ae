"""The evidence bundle's data and reproduce sections: the pins, profiles, drift, quarantine, commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import PartitionNode
from ml_platform.lineage.trace import DELAY_MODEL

if TYPE_CHECKING:
    import dagster as dg

from ml_platform.lineage.evidence.base import _BuilderBase
from ml_platform.lineage.evidence.schema import (
    _COMMIT,
    DRIFT,
    DRIFT_ERRORS,
    DRIFT_MODEL_PARTITION,
    DRIFT_MODEL_VERSION,
    DRIFT_REFERENCE,
    DRIFT_SEVERITY,
    DRIFT_WARNINGS,
    PROFILES,
)


class _DataSections(_BuilderBase):
    """The ``data`` and ``reproduce`` sections of :class:`~ml_platform.lineage.evidence.gather._Builder`."""

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
