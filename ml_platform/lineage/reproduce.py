"""``mlp reproduce <version>``: train a registered model version again from what it recorded.

A reproduction reads only the records of the version's own ``delay_model`` materialization:

* the training window through the exact pins it recorded (``lineage/upstream``: Delta table
  version or lakeFS commit, content hash verified on read), never the latest version of a day; the
  days whose latest recorded version differs from the pin since are listed, to show that they were
  not read;
* the configuration it was trained with (``training/config``: the hyperparameters the search chose,
  the seed, whether the final model was refitted on the whole window); the search itself is not run
  again, because its outcome is that recorded configuration;
* the code: the training code version recorded must be this checkout's, or the reproduction refuses
  (``allow_code_change`` measures the difference instead, and the report says so).

It then fits through the very function the asset trains with
(:func:`ml_platform.lib.training.pipeline.fit_final`), compares the weights digest, the selection's
validation loss and best epoch with the recorded ones, and scores the reproduced model on the
holdout rows of the evaluation on record (read through that evaluation's pins), against the metrics
the evaluation recorded. Nothing is registered and no alias moves: the reproduced weights and the
report go to a folder of their own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from ml_platform.lib import metadata as keys
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import LineageError
from ml_platform.lineage.sources import LineageSources

if TYPE_CHECKING:
    from ml_platform.lib.storage import PartitionStore, PartitionVersion
    from ml_platform.settings import PlatformSettings

DELAY_MODEL = "delay_model"
EVALUATION = "model_evaluation"
FEATURES = "flight_features"
#: The holdout metrics compared (those the evaluation records per predictor).
HOLDOUT_METRICS = ("mae", "rmse", "roc_auc", "pr_auc", "brier")
#: Default tolerance: relative difference allowed per metric (1 %).
DEFAULT_TOLERANCE = 0.01


class ReproduceError(LineageError):
    """The version cannot be reproduced here; the message says what is missing and what to do."""


@dataclass(frozen=True)
class MetricDiff:
    """One metric of the original against the reproduction."""

    name: str
    original: float | None
    reproduced: float
    tolerance: float

    @property
    def abs_diff(self) -> float | None:
        return None if self.original is None else abs(self.reproduced - self.original)

    @property
    def rel_diff(self) -> float | None:
        if self.original is None:
            return None
        return abs(self.reproduced - self.original) / max(abs(self.original), 1e-12)

    @property
    def within(self) -> bool | None:
        """None where the original did not record the metric (nothing to compare)."""
        rel = self.rel_diff
        return None if rel is None else rel <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "original": self.original,
            "reproduced": self.reproduced,
            "abs_diff": self.abs_diff,
            "rel_diff": self.rel_diff,
            "tolerance": self.tolerance,
            "within": self.within,
        }


@dataclass
class ReproduceReport:
    """What a reproduction read, ran and measured, against the original's records."""

    model_name: str
    version: str
    partition: str
    training_materialization: str
    mlflow_run_id: str | None
    recorded_code_version: str | None
    current_code_version: str
    recorded_git_commit: str | None
    config: dict[str, Any]
    #: The pins read (as recorded), and the days whose latest recorded version is another one now
    #: (rematerialized with other content since: not read).
    pins: list[dict[str, Any]]
    changed_since: list[str]
    original_weights_digest: str | None
    reproduced_weights_digest: str
    training: list[MetricDiff]
    holdout: list[MetricDiff] = field(default_factory=list)
    #: The baseline on the same rows: equal when the holdout and window read are the same data.
    holdout_baseline: list[MetricDiff] = field(default_factory=list)
    evaluation_materialization: str | None = None
    holdout_rows: int | None = None
    device: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    artifacts: str | None = None

    @property
    def code_matches(self) -> bool:
        return self.recorded_code_version == self.current_code_version

    @property
    def weights_identical(self) -> bool:
        return self.original_weights_digest == self.reproduced_weights_digest

    @property
    def compared(self) -> list[MetricDiff]:
        return [d for d in [*self.training, *self.holdout, *self.holdout_baseline] if d.within is not None]

    @property
    def within_tolerance(self) -> bool:
        """Every recorded metric reproduced within tolerance (and at least one was compared)."""
        compared = self.compared
        return bool(compared) and all(d.within for d in compared)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("training", "holdout", "holdout_baseline"):
            data[name] = [d.to_dict() for d in getattr(self, name)]
        data["code_matches"] = self.code_matches
        data["weights_identical"] = self.weights_identical
        data["within_tolerance"] = self.within_tolerance
        return data


def reproduce(
    instance: dg.DagsterInstance,
    settings: PlatformSettings,
    start: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_code_change: bool = False,
    out_dir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ReproduceReport:
    """Reproduce model version ``start`` (``3``, ``v3``, or an alias such as ``champion``).

    Raises:
        ReproduceError: the version is unknown, was not trained by the graph, its records lack
            what a reproduction needs, its pinned data cannot be read, or the training code
            changed since (without ``allow_code_change``).
    """
    begun = time.perf_counter()
    if not (0 <= tolerance < 1) or math.isnan(tolerance):
        raise ReproduceError(f"tolerance must be a fraction in [0, 1), got {tolerance}")
    sources = LineageSources.from_settings(settings)
    name = sources.model_name
    version = _resolve_version(sources, start)
    model = _training_record(instance, sources, name, version)
    where = f"{name} v{version} ({rec.materialization(model).id})"
    partition = str(model.asset_materialization.partition)  # type: ignore[union-attr]
    config, refit = _config(model, where)
    pins = _pins(model, where)

    from ml_platform.defs.training.assets import TRAINING_MODULES
    from ml_platform.lib.versioning import code_version_of_names

    current_code = code_version_of_names(*TRAINING_MODULES)
    recorded_code = rec.text(model, keys.LINEAGE_CODE_VERSION)
    commit = rec.text(model, keys.LINEAGE_GIT_COMMIT)
    notes: list[str] = []
    if recorded_code != current_code:
        message = (
            f"{where} was trained by training code version {recorded_code or 'not recorded'}"
            f" (git commit {commit or 'not recorded'}); this checkout's is {current_code}"
        )
        if not allow_code_change:
            raise ReproduceError(
                f"{message}. Check out that commit and run again, or pass --allow-code-change to measure"
                " what the change does to the same data"
            )
        notes.append(message + ": reproduced with this checkout's code (--allow-code-change)")

    from ml_platform.defs.publish import latest_materializations

    latest = latest_materializations(instance, dg.AssetKey(FEATURES), [p.partition for p in pins])
    changed = sorted(
        p.partition
        for p in pins
        if (r := latest.get(p.partition)) is not None and rec.record_pin(r) != _pin_key(p)
    )
    store = _store(settings)
    log(
        f"{where}: reading the {len(pins)} pinned {FEATURES} partitions"
        f" {pins[0].partition}..{pins[-1].partition}"
        + (f" (changed since, not read: {', '.join(changed)})" if changed else "")
    )
    window_frame = _read(store, pins, where)

    import torch

    from ml_platform.lib.storage import PARTITION_COLUMN
    from ml_platform.lib.training.loop import TrainConfig
    from ml_platform.lib.training.pipeline import fit_final, prepare_window, weights_digest

    train_config = TrainConfig(**config)
    if train_config.device == "cuda" and not torch.cuda.is_available():
        notes.append("the original asked for CUDA; torch sees none here, so this ran on the CPU")
        train_config = train_config.with_params(device="cpu")
    validation_days = _validation_days(model, settings)
    log(
        f"fitting {name} v{version}'s configuration on {window_frame.height} rows"
        f" ({validation_days} validation days, refit on the whole window: {refit})"
    )
    window = prepare_window(window_frame.drop(PARTITION_COLUMN), validation_days)
    fitted = fit_final(window, train_config, refit_full_window=refit, log=log)
    digest = weights_digest(fitted.result.state_dict)
    original_digest = rec.text(model, keys.TRAINING_WEIGHTS_DIGEST)
    recorded_config = rec.value(model, keys.TRAINING_CONFIG) or {}
    training = [
        MetricDiff(
            "validation loss (selection)",
            _float(rec.value(model, "training/best_val_loss")),
            float(fitted.selection.best_val_loss),
            tolerance,
        ),
        MetricDiff(
            "best epoch",
            _float(recorded_config.get("best_epoch")),
            float(fitted.selection.best_epoch),
            0.0,
        ),
        MetricDiff(
            "final training rows",
            _float(rec.value(model, keys.TRAINING_ROWS)),
            float(fitted.final_rows),
            0.0,
        ),
    ]
    report = ReproduceReport(
        model_name=name,
        version=version,
        partition=partition,
        training_materialization=rec.materialization(model).id,
        mlflow_run_id=rec.text(model, keys.MLFLOW_RUN_ID),
        recorded_code_version=recorded_code,
        current_code_version=current_code,
        recorded_git_commit=commit,
        config={**config, "refit_full_window": refit, "validation_days": validation_days},
        pins=[p.to_metadata() for p in pins],
        changed_since=changed,
        original_weights_digest=original_digest,
        reproduced_weights_digest=digest,
        training=training,
        device=f"{fitted.result.device} x{fitted.result.world_size}",
        notes=notes,
    )
    folder = (out_dir or settings.storage_root / "lineage" / "reproduce") / f"{name}-v{version}"
    predictor = _predictor(folder, fitted, train_config)
    report.artifacts = str(folder)
    _holdout(instance, store, report, model, window_frame, predictor, tolerance, log)
    if original_digest is None:
        notes.append(f"{keys.TRAINING_WEIGHTS_DIGEST} is not recorded: the weights cannot be compared")
    report.seconds = round(time.perf_counter() - begun, 1)
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    return report


# ---------------------------------------------------------------------------------- the records


def _resolve_version(sources: LineageSources, start: str) -> str:
    text = start.strip()
    bare = text[1:] if text[:1] in ("v", "V") and text[1:].isdigit() else text
    if bare.isdigit():
        return bare
    from mlflow.exceptions import MlflowException

    try:
        mv = sources.client().get_model_version_by_alias(sources.model_name, text)
    except MlflowException as exc:
        raise ReproduceError(
            f"{text!r} is neither a model version (3, v3) nor an alias of {sources.model_name}"
            f" ({sources.tracking_uri}): {exc.message}"
        ) from exc
    return str(mv.version)


def _training_record(
    instance: dg.DagsterInstance, sources: LineageSources, name: str, version: str
) -> dg.EventLogRecord:
    found = [
        r
        for r in rec.fetch(instance, DELAY_MODEL)
        if rec.text(r, keys.MLFLOW_MODEL_VERSION) == version
        and rec.text(r, keys.MLFLOW_MODEL_NAME) in (None, name)
    ]
    if not found:
        raise ReproduceError(
            f"{name} v{version}: no {DELAY_MODEL} materialization registered it, so its training data and"
            " configuration are not recorded (registered outside the graph, or an unknown version)"
        )
    if len(found) == 1:
        return found[0]
    from mlflow.exceptions import MlflowException

    try:
        run_id = sources.client().get_model_version(name, version).run_id
    except MlflowException as exc:
        raise ReproduceError(
            f"{name} v{version}: {len(found)} {DELAY_MODEL} materializations record it and the registry,"
            f" which says whose run registered it, cannot be read: {exc.message}"
        ) from exc
    same = [r for r in found if rec.text(r, keys.MLFLOW_RUN_ID) == run_id]
    if len(same) != 1:
        raise ReproduceError(
            f"{name} v{version}: {len(found)} {DELAY_MODEL} materializations record it"
            f" ({', '.join(rec.materialization(r).id for r in found)}) and {len(same)} of them name"
            f" its MLflow run {run_id}"
        )
    return same[0]


def _config(model: dg.EventLogRecord, where: str) -> tuple[dict[str, Any], bool]:
    from ml_platform.lib.training.loop import TrainConfig

    recorded = rec.value(model, keys.TRAINING_CONFIG)
    if not isinstance(recorded, Mapping):
        raise ReproduceError(
            f"{where} records no {keys.TRAINING_CONFIG}: the configuration it was trained with"
        )
    known = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in recorded.items() if k in known}
    missing = sorted(known - set(config))
    if missing:
        raise ReproduceError(f"{where}: {keys.TRAINING_CONFIG} lacks {', '.join(missing)}")
    if "refit_full_window" not in recorded:
        raise ReproduceError(f"{where}: {keys.TRAINING_CONFIG} lacks refit_full_window")
    return config, bool(recorded["refit_full_window"])


def _pins(model: dg.EventLogRecord, where: str) -> list[PartitionVersion]:
    from ml_platform.lib.storage import PartitionVersion

    entries = rec.upstream_entries(model)
    if not entries:
        raise ReproduceError(f"{where} records no {keys.LINEAGE_UPSTREAM}: the data it read is unknown")
    try:
        pins = [PartitionVersion.from_metadata(e) for e in entries if e.get("table") == FEATURES]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReproduceError(f"{where}: a {keys.LINEAGE_UPSTREAM} entry is malformed ({exc!r})") from exc
    if not pins:
        raise ReproduceError(f"{where}: {keys.LINEAGE_UPSTREAM} names no {FEATURES} partition")
    return sorted(pins, key=lambda p: p.partition)


def _pin_key(pin: PartitionVersion) -> rec.PinKey:
    return (pin.table, pin.partition, pin.table_version, pin.commit, pin.content_hash)


def _validation_days(model: dg.EventLogRecord, settings: PlatformSettings) -> int:
    """The validation days of the training: its MLflow params, else the settings (noted by the caller)."""
    run_id = rec.text(model, keys.MLFLOW_RUN_ID)
    if run_id:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=str(settings.mlflow_tracking_uri))
        try:
            params = client.get_run(run_id).data.params
        except Exception as exc:  # say which store and run could not be read
            raise ReproduceError(
                f"MLflow run {run_id} ({settings.mlflow_tracking_uri}) cannot be read:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        if "validation_days" in params:
            return int(params["validation_days"])
    raise ReproduceError(
        f"{rec.materialization(model).id}: the number of validation days is not recorded (MLflow param"
        " validation_days of its run)"
    )


def _store(settings: PlatformSettings) -> PartitionStore:
    if settings.storage_backend == "delta":
        from ml_platform.lib.storage import DeltaPartitionStore

        return DeltaPartitionStore(settings.delta_root)
    from ml_platform.definitions import _versioned_store

    # pins carry lakeFS commits; a read never creates the branch
    return _versioned_store(settings).lakefs_store("reproduce")


def _read(store: PartitionStore, pins: Sequence[PartitionVersion], where: str) -> Any:
    try:
        return store.read(pins)
    except Exception as exc:
        raise ReproduceError(
            f"{where}: its pinned data cannot be read ({type(exc).__name__}: {exc}). A vacuumed Delta"
            " version or a deleted lakeFS commit cannot be reproduced"
        ) from exc


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------- the holdout


def _predictor(folder: Path, fitted: Any, config: Any) -> Any:
    """The reproduced model, saved and loaded the way MLflow's pyfunc loads a registered one."""
    from ml_platform.lib.training.pyfunc import DelayModel, save_artifacts

    files = save_artifacts(folder, fitted.result.state_dict, fitted.preprocessor, config.model_kwargs())
    model = DelayModel()
    model.load(Path(files["weights"]), Path(files["spec"]))
    return model


def _holdout(
    instance: dg.DagsterInstance,
    store: PartitionStore,
    report: ReproduceReport,
    model: dg.EventLogRecord,
    window: Any,
    predictor: Any,
    tolerance: float,
    log: Callable[[str], None],
) -> None:
    """Score the reproduction on the evaluation on record's holdout pins; compare its metrics."""
    from ml_platform.lib.storage import PARTITION_COLUMN, PartitionVersion

    evaluations = [
        r
        for r in rec.fetch(instance, EVALUATION, partitions=[report.partition])
        if rec.text(r, keys.MLFLOW_MODEL_VERSION) == report.version
        and any(
            e.get("asset") == DELAY_MODEL and e.get("run_id") == model.run_id
            for e in rec.upstream_entries(r) or []
        )
    ]
    if not evaluations:
        report.notes.append(
            f"no {EVALUATION} materialization evaluated this version: no holdout metrics to compare"
        )
        return
    evaluation = evaluations[-1]  # the newest evaluation on record of this very training
    report.evaluation_materialization = rec.materialization(evaluation).id
    if len(evaluations) > 1:
        report.notes.append(
            f"{len(evaluations)} evaluations of this training are recorded; compared with the newest,"
            f" {report.evaluation_materialization}"
        )
    holdout_pins = sorted(
        (
            PartitionVersion.from_metadata(e)
            for e in rec.upstream_entries(evaluation) or []
            if e.get("table") == FEATURES
        ),
        key=lambda p: p.partition,
    )
    if not holdout_pins:
        report.notes.append(
            f"{report.evaluation_materialization} records no holdout pins: holdout not compared"
        )
        return
    where = report.evaluation_materialization
    holdout = _read(store, holdout_pins, where).drop(PARTITION_COLUMN)
    from ml_platform.lib.evaluation.evaluate import evaluate

    log(
        f"scoring the reproduction on the holdout of {where}"
        f" ({holdout_pins[0].partition}..{holdout_pins[-1].partition})"
    )
    scored = evaluate(holdout, window, predictor, champion=None, champion_version=None, tolerance=0.0)
    report.holdout_rows = scored.rows
    for who, metrics, target in (
        ("model", scored.model.metrics, report.holdout),
        ("baseline", scored.baseline.metrics, report.holdout_baseline),
    ):
        for metric in HOLDOUT_METRICS:
            if metric in metrics:
                original = _float(rec.value(evaluation, f"evaluation/{who}_{metric}"))
                target.append(MetricDiff(metric, original, float(metrics[metric]), tolerance))


def report_rows(report: ReproduceReport) -> list[tuple[str, str, str, str, str]]:
    """(what, original, reproduced, difference, verdict) rows for a table."""

    def fmt(value: float | None) -> str:
        return "not recorded" if value is None else f"{value:.6g}"

    rows = []
    for group, diffs in (
        ("training", report.training),
        ("holdout", report.holdout),
        ("holdout baseline", report.holdout_baseline),
    ):
        for d in diffs:
            verdict = "-" if d.within is None else ("ok" if d.within else f"over {d.tolerance:.2%}")
            diff = "-" if d.rel_diff is None else f"{d.abs_diff:.3g} ({d.rel_diff:.3%})"
            rows.append((f"{group}: {d.name}", fmt(d.original), fmt(d.reproduced), diff, verdict))
    return rows


__all__ = [
    "DEFAULT_TOLERANCE",
    "MetricDiff",
    "ReproduceError",
    "ReproduceReport",
    "report_rows",
    "reproduce",
]
