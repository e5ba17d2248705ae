"""Training benchmark: loop throughput, HPO trials per minute, and the cost of Dagster + MLflow around it.

Everything uses the same training window: the first model week (default 2013-03-04), whose
``delay_model`` partition trains on the flight_features days 2013-01-07..2013-03-03 (8 weeks; the
last 7 days are the validation split) and is evaluated on the week itself (2013-03-04..03-10).

Setup (not timed as part of any mode): a fresh sqlite ``DAGSTER_HOME`` and store in the workdir get
the feature days 2013-01-01..2013-03-10 through ``daily_data_job`` (``ml_platform.demo.run_partitions``,
one range run per layer), because the model assets read their upstreams through Dagster's
materialization records. ``--workdir`` keeps that template between invocations; a template that is
already complete is reused. The checkout's ``storage/`` and ``.dagster/`` are never touched.

Modes (``--modes``, all by default; each repeats ``--repeats`` times, the report gives medians):

* ``throughput``: ``loop.train`` with a fixed config (defaults, ``--epochs`` epochs, patience 100 so
  every epoch runs), single process and with ``world_size=2`` (DDP; gloo on CPU, where the two
  processes compete for the same cores; skipped on a single GPU, nccl needs one per process).
  ``--world-sizes`` entries ``W:T`` also pin T torch threads per process (OMP_NUM_THREADS for the
  workers). Reports the loop's own samples/s (training passes only) and the wall time (for DDP
  including spawning the workers).
* ``hpo``: ``hpo.run_study`` with sqlite storage in the workdir, ``--hpo-trials`` trials of up to
  ``--hpo-epochs`` epochs (the platform's patience), no observer. Reports trials/min and pruned trials.
* ``overhead``: the same model partition three ways, with the platform's settings (``--trials``,
  ``--max-epochs``, ``--patience``: MLP_HPO_TRIALS, MLP_MAX_EPOCHS, MLP_PATIENCE):

  - ``plain``: read the window with polars (``scan_delta``), split, fit and encode, ``run_study``,
    the selection ``train`` with the best parameters and, as ``train_partition`` does with
    MLP_REFIT_FULL_WINDOW (the default), the refit on the whole window for the epochs early
    stopping chose. No MLflow, no Dagster.
  - ``pipeline``: the same frame through ``pipeline.train_partition`` (MLflow sqlite tracking: a
    parent run, one nested run per trial, per-epoch metrics, dataset inputs, pyfunc model logged
    and registered).
  - ``dagster``: ``weekly_model_job`` for the week (delay_model, model_evaluation with its gates,
    model_promotion) via ``ml_platform.demo.run_week`` (``execute_in_process``) on a copy of the
    template instance, so every repeat starts with the same registry (no champion).

  Every mode gets a fresh Optuna sqlite DB, and the MLflow modes a fresh MLflow sqlite DB. Both are
  created *before* timing (their creation, a one-off cost per deployment, is reported separately).
  The repeats interleave the modes (plain, pipeline, dagster, plain, ...), so drifting machine load
  hits each mode alike. Phases inside the pipeline are timed by wrapping library functions
  (``run_study``, ``train``, ``log_model``, the trial observer, ``read_pinned``) for the run only.
  Same seed everywhere: all three modes must end with the same weights (checked by their digests).
  Training time swings from run to run on a shared machine, so besides the wall-time ratios the
  report gives each mode's seconds outside training (wall minus HPO trials and final trainings)
  and the ratio with those seconds added to the same (plain's median) training time.

``--device cuda`` trains on the GPU in every mode (MLP_TRAINING_DEVICE for the Dagster job); the JSON
records the CUDA device names. ``--snapshot`` runs HEAD's ``ml_platform`` from a ``git archive``.

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--repeats 3]
        [--modes throughput,hpo,overhead] [--world-sizes 1,1:1,2,2:1] [--threads N] [--snapshot]
        [--workdir DIR] [--out benchmarks/results/train_<date>.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Phases,
    code_digest,
    cpu_model,
    finish_report,
    git,
    imported_package_dir,
    loadavg,
    log,
    step_durations,
)

MODES = ("throughput", "hpo", "overhead")
FEATURES = "flight_features"
MODEL_NAME = "delay_model"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def environment(device: str, snapshot: bool) -> dict[str, Any]:
    import torch

    from ml_platform.lib.training.loop import resolve_device

    packages = ("torch", "mlflow", "optuna", "dagster", "polars", "deltalake", "numpy")
    cuda = torch.cuda.is_available()
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "ml_platform")
    return {
        "git_head": git("rev-parse", "HEAD"),
        "tree_dirty_files": [line for line in dirty.splitlines() if line.strip()],
        "code_package": str(imported_package_dir()),
        "snapshot": snapshot,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "device_requested": device,
        "device_resolved": str(resolve_device(device)),  # type: ignore[arg-type]
        **{p: version(p) for p in packages},
    }


@contextlib.contextmanager
def measured(record: dict[str, Any]) -> Iterator[None]:
    """Wall and CPU seconds (this process, all threads) and the load average around a block."""
    record["loadavg_before"] = loadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record["wall_s"] = round(time.perf_counter() - wall, 3)
        record["cpu_s"] = round(time.process_time() - cpu, 3)
        record["loadavg_after"] = loadavg()


# --------------------------------------------------------------------------------------------------
# Setup: settings, the template instance with the feature days, the training window
# --------------------------------------------------------------------------------------------------


def settings_for(root: Path, args: argparse.Namespace) -> Any:
    """The platform settings of one benchmark root: its own DAGSTER_HOME, store, MLflow and Optuna DBs."""
    from ml_platform.settings import PlatformSettings

    return PlatformSettings(
        root_dir=REPO,  # dagster.yaml and the git commit come from the checkout
        dagster_home=root / "dagster_home",
        storage_root=root / "storage",
        executor="in_process",
        partition_start=date.fromisoformat(args.first_day),
        hpo_trials=args.trials,
        max_epochs=args.max_epochs,
        patience=args.patience,
        training_device=args.device,
        training_processes=1,
    )


def window_days(settings: Any, week: str) -> tuple[list[str], list[str]]:
    """The training window and holdout days of ``week``, from the platform's own mappings."""
    from ml_platform.partitions import build_partitioning, upstream_keys

    parts = build_partitioning(settings)
    train = upstream_keys(parts.training_window, parts.weekly, week, parts.daily)
    holdout = upstream_keys(parts.holdout_window, parts.weekly, week, parts.daily)
    return train, holdout


def materialize_template(template: Path, args: argparse.Namespace, last_day: str) -> dict[str, Any]:
    """Feature days ``--first-day``..``last_day`` in ``template`` via the data job (skipped when done)."""
    from ml_platform.definitions import DATA_JOB, build_definitions
    from ml_platform.demo import days, partitions_to_run, run_partitions
    from ml_platform.instance import open_instance

    settings = settings_for(template, args)
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(DATA_JOB)
    partitions = days(date.fromisoformat(args.first_day), date.fromisoformat(last_day))
    todo = partitions_to_run(instance, job, partitions)
    out: dict[str, Any] = {
        "root": str(template),
        "days": f"{partitions[0]}..{partitions[-1]}",
        "todo": len(todo),
    }
    if not todo:
        log(f"template {template}: {len(partitions)} feature days already materialized, reused")
        out["wall_s"] = 0.0
        return out
    log(f"materializing {len(todo)} days {todo[0]}..{todo[-1]} in {template} (one range run per layer)")
    t0 = time.perf_counter()
    outcomes = run_partitions(instance, job, todo, chunk_days=len(todo))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    failed = [o for o in outcomes if not o.success]
    if failed:
        raise RuntimeError(f"materializing the template failed: {failed[0].layer}: {failed[0].error}")
    log(f"  done in {out['wall_s']:.0f}s ({len(outcomes)} runs)")
    return out


def read_window(delta_root: Path, days: list[str]) -> Any:
    """The training window as a plain script reads it: polars over the Delta table, no pins, no hashes."""
    import polars as pl

    from ml_platform.lib.storage.delta import PARTITION_COLUMN

    return (
        pl.scan_delta(str(delta_root / FEATURES))
        .filter(pl.col(PARTITION_COLUMN).is_between(pl.lit(days[0]), pl.lit(days[-1])))
        .collect()
        .sort(PARTITION_COLUMN, maintain_order=True)  # the day order the pinned read has
        .drop(PARTITION_COLUMN)
    )


def encode_window(frame: Any, validation_days: int) -> tuple[Any, Any, Any]:
    from ml_platform.lib.training.data import fit_preprocessor, labelled, split_by_time

    train_frame, validation_frame = split_by_time(labelled(frame), validation_days)
    pre = fit_preprocessor(train_frame)
    return pre, pre.encode(train_frame), pre.encode(validation_frame)


def create_optuna_db(path: Path) -> tuple[str, float]:
    """A fresh Optuna sqlite DB with its schema; returns its URL and the seconds creating it took."""
    import optuna

    url = f"sqlite:///{path}"
    path.unlink(missing_ok=True)  # a kept workdir may hold the last invocation's study
    t0 = time.perf_counter()
    storage = optuna.storages.RDBStorage(url)
    storage.engine.dispose()
    return url, time.perf_counter() - t0


def create_mlflow_db(uri: str, experiment: str, artifact_root: str | None) -> float:
    """Create the MLflow sqlite DB (schema migrations), the experiment and the registry tables."""
    from ml_platform.lib.training.tracking import MlflowTracking

    t0 = time.perf_counter()
    tracking = MlflowTracking(uri, experiment, artifact_root)
    tracking.experiment_id()
    tracking.client.search_registered_models(max_results=1)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# Phase timers: wrap library functions for the duration of one run
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def instrumented(phases: Phases) -> Iterator[None]:
    """Time run_study, the final train, log_model, the trial observer and pinned reads (then restore)."""
    from ml_platform.defs.evaluation import assets as eval_assets
    from ml_platform.defs.training import assets as train_assets
    from ml_platform.lib.training import pipeline, tracking

    patches = [
        (pipeline, "run_study", "hpo"),
        (pipeline, "train", "final_train"),
        (tracking.MlflowTracking, "log_model", "mlflow_log_model"),
        (tracking.MlflowTracking, "log_history", "mlflow_log_history"),
        (tracking.MlflowTracking, "log_datasets", "mlflow_log_datasets"),
        (tracking.MlflowTrialObserver, "trial_started", "mlflow_trial_observer"),
        (tracking.MlflowTrialObserver, "trial_epoch", "mlflow_trial_observer"),
        (tracking.MlflowTrialObserver, "trial_finished", "mlflow_trial_observer"),
        (train_assets, "read_pinned", "delay_model_read_pinned"),
        (eval_assets, "read_pinned", "evaluation_read_pinned"),
        (tracking, "load_model", "evaluation_load_model"),
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, name in patches:
        setattr(owner, attr, phases.wrap(name, getattr(owner, attr)))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


# --------------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Intra-op threads of this process and of spawned DDP workers (OMP_NUM_THREADS), then restore."""
    import torch

    if threads is None:
        yield
        return
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by each spawned worker when it imports torch
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def run_throughput(data: tuple[Any, Any, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ml_platform.lib.training.loop import TrainConfig, resolve_device, train

    pre, train_data, validation = data
    out: dict[str, Any] = {}
    on_cuda = resolve_device(args.device).type == "cuda"
    for spec in args.world_sizes.split(","):
        # "W" trains with W processes at torch's default threads; "W:T" with T threads per process
        world_text, _, threads_text = spec.strip().partition(":")
        world, threads = int(world_text), int(threads_text) if threads_text else None
        key = f"world_size_{world}" + (f"_threads_{threads}" if threads else "")
        if world > 1 and on_cuda and torch.cuda.device_count() < world:
            out[key] = {"skipped": f"DDP over {world} processes needs {world} GPUs (nccl)"}
            log(f"throughput {key}: skipped, {out[key]['skipped']}")
            continue
        config = TrainConfig(max_epochs=args.epochs, patience=100, device=args.device, world_size=world)
        runs = []
        for r in range(args.repeats):
            record: dict[str, Any] = {"repeat": r}
            with torch_threads(threads), measured(record):
                result = train(train_data, validation, pre.cardinalities, config)
            record.update(
                samples_per_s=round(result.samples_per_second, 1),
                epochs=len(result.history),
                epoch_s=[round(h.seconds, 3) for h in result.history],
                device=result.device,
                mixed_precision=result.mixed_precision,
                train_samples_per_epoch=len(train_data),
                best_val_loss=round(result.best_val_loss, 5),
            )
            runs.append(record)
            log(
                f"throughput {key} #{r}: {record['samples_per_s']:,.0f} samples/s on {result.device},"
                f" {record['epochs']} epochs in {record['wall_s']:.1f}s wall"
            )
        out[key] = {
            "config": {
                "max_epochs": args.epochs,
                "patience": 100,
                "world_size": world,
                "batch_size": config.batch_size,
                "threads_per_process": threads or torch.get_num_threads(),
            },
            "runs": runs,
            "median_samples_per_s": median([x["samples_per_s"] for x in runs]),
            "median_wall_s": median([x["wall_s"] for x in runs]),
            "device": runs[0]["device"],
        }
    return out


def run_hpo(data: tuple[Any, Any, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from ml_platform.lib.training.hpo import run_study
    from ml_platform.lib.training.loop import TrainConfig

    pre, train_data, validation = data
    base = TrainConfig(max_epochs=args.hpo_epochs, patience=args.patience, device=args.device)
    runs = []
    for r in range(args.repeats):
        url, create_s = create_optuna_db(work / f"hpo-{r}-optuna.db")
        record: dict[str, Any] = {"repeat": r, "optuna_db_create_s": round(create_s, 3)}
        with measured(record):
            study = run_study(
                train_data,
                validation,
                pre.cardinalities,
                base,
                storage=url,
                study_name=f"bench-hpo-{r}",
                n_trials=args.hpo_trials,
            )
        epochs = sum(t.epochs for t in study.trials)
        record.update(
            trials=len(study.trials),
            pruned=study.pruned,
            completed=sum(t.state == "COMPLETE" for t in study.trials),
            epochs=epochs,
            trials_per_min=round(len(study.trials) / record["wall_s"] * 60, 2),
            epochs_per_min=round(epochs / record["wall_s"] * 60, 1),
            best_value=round(study.best_value, 5),
            trial_epochs=[t.epochs for t in study.trials],
        )
        runs.append(record)
        log(
            f"hpo #{r}: {record['trials']} trials ({record['pruned']} pruned, {epochs} epochs) in"
            f" {record['wall_s']:.1f}s = {record['trials_per_min']:.2f} trials/min"
        )
    return {
        "config": {"trials": args.hpo_trials, "max_epochs": args.hpo_epochs, "patience": args.patience},
        "runs": runs,
        "median_trials_per_min": median([x["trials_per_min"] for x in runs]),
        "median_wall_s": median([x["wall_s"] for x in runs]),
        "median_pruned": median([x["pruned"] for x in runs]),
    }


def overhead_plain(
    template_settings: Any,
    days: list[str],
    base: Any,
    refit: bool,
    args: argparse.Namespace,
    root: Path,
    r: int,
) -> dict[str, Any]:
    from ml_platform.lib.training.data import fit_preprocessor, labelled, split_by_time
    from ml_platform.lib.training.hpo import run_study
    from ml_platform.lib.training.loop import train
    from ml_platform.lib.training.pipeline import weights_digest

    root.mkdir(parents=True)
    url, create_s = create_optuna_db(root / "optuna.db")
    record: dict[str, Any] = {"mode": "plain", "repeat": r, "optuna_db_create_s": round(create_s, 3)}
    phases: dict[str, float] = {}
    with measured(record):
        t = time.perf_counter()
        frame = read_window(template_settings.delta_root, days)
        phases["read"] = time.perf_counter() - t
        t = time.perf_counter()
        rows = labelled(frame)
        train_frame, validation_frame = split_by_time(rows, args.validation_days)
        pre = fit_preprocessor(train_frame)
        train_data, validation = pre.encode(train_frame), pre.encode(validation_frame)
        phases["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        study = run_study(
            train_data,
            validation,
            pre.cardinalities,
            base.with_params(world_size=1),
            storage=url,
            study_name=f"bench-plain-{r}",
            n_trials=args.trials,
        )
        phases["hpo"] = time.perf_counter() - t
        config = base.with_params(**study.best_params)
        t = time.perf_counter()
        result = selection = train(train_data, validation, pre.cardinalities, config)
        phases["final_train"] = time.perf_counter() - t
        if refit:
            # as train_partition does: refit on the whole window for the epochs early stopping chose
            t = time.perf_counter()
            pre = fit_preprocessor(rows)
            window, holdout = pre.encode(rows), pre.encode(validation_frame)
            phases["refit_preprocess"] = time.perf_counter() - t
            epochs = selection.best_epoch + 1
            refit_config = config.with_params(max_epochs=epochs, patience=epochs + 1, restore_best=False)
            t = time.perf_counter()
            result = train(window, holdout, pre.cardinalities, refit_config)
            phases["final_train"] += time.perf_counter() - t
        digest = weights_digest(result.state_dict)
    record.update(
        phases_s={k: round(v, 3) for k, v in phases.items()},
        rows=frame.height,
        pruned=study.pruned,
        hpo_epochs=sum(t.epochs for t in study.trials),
        final_epochs=len(selection.history) + (len(result.history) if refit else 0),
        weights_digest=digest,
    )
    return record


def overhead_pipeline(
    template_settings: Any,
    days: list[str],
    base: Any,
    refit: bool,
    args: argparse.Namespace,
    root: Path,
    r: int,
) -> dict[str, Any]:
    import dagster as dg

    from ml_platform.defs.publish import RecordedVersions
    from ml_platform.instance import open_instance
    from ml_platform.lib.training.pipeline import TrainingRequest, train_partition
    from ml_platform.lib.training.tracking import (
        TAG_ASSET,
        TAG_DAGSTER_RUN,
        TAG_PARTITION,
        DatasetRef,
        MlflowTracking,
    )

    root.mkdir(parents=True)
    optuna_url, optuna_s = create_optuna_db(root / "optuna.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    artifacts = (root / "mlartifacts").as_uri()
    mlflow_s = create_mlflow_db(uri, "benchmark", artifacts)
    # Lineage of the window as the asset records it (dataset inputs of the MLflow run): the pins
    # come from the template's Dagster records, looked up outside the timed part.
    instance = open_instance(template_settings)
    pins = RecordedVersions(instance, dg.AssetKey(FEATURES), days, table=FEATURES).require(days)
    table_uri = str(template_settings.delta_root / FEATURES)
    datasets = [
        DatasetRef(FEATURES, p.partition, table_uri, p.table_version, p.content_hash, p.row_count, "training")
        for p in pins
    ]
    record: dict[str, Any] = {
        "mode": "pipeline",
        "repeat": r,
        "optuna_db_create_s": round(optuna_s, 3),
        "mlflow_db_create_s": round(mlflow_s, 3),
    }
    phases = Phases()
    with instrumented(phases), measured(record):
        t = time.perf_counter()
        frame = read_window(template_settings.delta_root, days)
        read_s = time.perf_counter() - t
        request = TrainingRequest(
            model_name=MODEL_NAME,
            partition=args.week,
            features=frame,
            datasets=datasets,
            config=base,
            validation_days=args.validation_days,
            hpo_trials=args.trials,
            optuna_storage=optuna_url,
            study_name=f"bench-pipeline-{r}",
            refit_full_window=refit,
            tags={TAG_DAGSTER_RUN: "benchmark", TAG_ASSET: MODEL_NAME, TAG_PARTITION: args.week},
        )
        outcome = train_partition(request, MlflowTracking(uri, "benchmark", artifacts))
    record.update(
        phases_s={"read": round(read_s, 3), **phases.rounded()},
        rows=frame.height,
        pruned=outcome.study.pruned if outcome.study else 0,
        hpo_epochs=sum(t.epochs for t in outcome.study.trials) if outcome.study else 0,
        final_epochs=len(outcome.selection.history)
        + (len(outcome.result.history) if outcome.result is not outcome.selection else 0),
        weights_digest=outcome.weights_digest,
        model_version=outcome.logged.version,
    )
    return record


def overhead_dagster(template: Path, args: argparse.Namespace, root: Path, r: int) -> dict[str, Any]:
    import dagster as dg

    from ml_platform.definitions import MODEL_JOB, build_definitions
    from ml_platform.defs.publish import latest_materializations
    from ml_platform.demo import run_week
    from ml_platform.instance import open_instance
    from ml_platform.lib import metadata as keys

    t = time.perf_counter()
    shutil.copytree(template, root)
    copy_s = time.perf_counter() - t
    settings = settings_for(root, args)
    optuna_s = create_optuna_db(Path(settings.optuna_storage.removeprefix("sqlite:///")))[1]
    mlflow_s = create_mlflow_db(
        settings.mlflow_tracking_uri, settings.mlflow_experiment, settings.mlflow_artifact_root
    )
    t = time.perf_counter()
    instance = open_instance(settings)
    job = build_definitions(settings).resolve_job_def(MODEL_JOB)
    setup_s = time.perf_counter() - t
    record: dict[str, Any] = {
        "mode": "dagster",
        "repeat": r,
        "template_copy_s": round(copy_s, 3),
        "optuna_db_create_s": round(optuna_s, 3),
        "mlflow_db_create_s": round(mlflow_s, 3),
        "instance_and_definitions_s": round(setup_s, 3),
    }
    phases = Phases()
    with instrumented(phases), measured(record):
        outcome = run_week(instance, job, args.week)
    if outcome.error and not outcome.gates_failed:
        raise RuntimeError(f"{MODEL_JOB}[{args.week}] failed (run {outcome.run_id}): {outcome.error}")
    record["steps_s"] = step_durations(instance, [outcome.run_id], record["wall_s"])
    record["phases_s"] = phases.rounded()
    model = latest_materializations(instance, dg.AssetKey(MODEL_NAME), [args.week]).get(args.week)
    meta = model.asset_materialization.metadata if model and model.asset_materialization else {}
    record.update(
        success=outcome.success,
        gates_failed=outcome.gates_failed,
        summary=outcome.summary,
        run_id=outcome.run_id,
        weights_digest=str(meta[keys.TRAINING_WEIGHTS_DIGEST].value) if meta else None,
    )
    return record


def run_overhead(template: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from ml_platform.definitions import model_spec
    from ml_platform.lib.training.loop import TrainConfig

    template_settings = settings_for(template, args)
    days, _ = window_days(template_settings, args.week)
    # The config the delay_model asset builds from the same settings, so the three modes train alike.
    spec = model_spec(template_settings)
    base = TrainConfig(**spec.train_config)
    refit = spec.refit_full_window  # MLP_REFIT_FULL_WINDOW
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "pipeline": [], "dagster": []}
    for r in range(args.repeats):
        for mode in runs:
            root = work / f"overhead-{mode}-{r}"
            shutil.rmtree(root, ignore_errors=True)
            if mode == "plain":
                record = overhead_plain(template_settings, days, base, refit, args, root, r)
            elif mode == "pipeline":
                record = overhead_pipeline(template_settings, days, base, refit, args, root, r)
            else:
                record = overhead_dagster(template, args, root, r)
            runs[mode].append(record)
            log(
                f"overhead {mode} #{r}: {record['wall_s']:.1f}s wall, {record['cpu_s']:.1f}s CPU;"
                f" phases {json.dumps(record.get('phases_s'))}"
                + (f"; steps {json.dumps(record['steps_s'])}" if "steps_s" in record else "")
            )
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {
        "config": {
            "week": args.week,
            "window": f"{days[0]}..{days[-1]}",
            "validation_days": args.validation_days,
            "hpo_trials": args.trials,
            "refit_full_window": refit,
            "train_config": base.__dict__,
        },
        "runs": runs,
    }
    summary.update(summarize_overhead(runs))
    if not summary["same_weights"]:
        log(f"WARNING: the modes trained different weights: {summary['weights_digests']}")
    return summary


def training_seconds(record: dict[str, Any]) -> float:
    """Seconds of a run spent training (HPO trials without the MLflow trial observer, final training)."""
    phases = record["phases_s"]
    return phases["hpo"] - phases.get("mlflow_trial_observer", 0.0) + phases["final_train"]


def summarize_overhead(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians, ratios to plain and the seconds outside training of the overhead modes.

    On a shared machine the training itself (identical in every mode) swings by several times from
    run to run, which swamps the wall-time ratios. The seconds outside training (wall minus the
    training phases) are measured in the same runs and hardly depend on training speed, so the
    report also gives each mode's ratio with its median outside-training seconds added to the same
    (plain's median) training time.
    """
    out: dict[str, Any] = {}
    for record in (x for rs in runs.values() for x in rs):
        record["training_s"] = round(training_seconds(record), 3)
        record["outside_training_s"] = round(record["wall_s"] - record["training_s"], 3)
    med = {m: median([x["wall_s"] for x in rs]) for m, rs in runs.items()}
    cpu = {m: median([x["cpu_s"] for x in rs]) for m, rs in runs.items()}
    low = {m: min(x["wall_s"] for x in rs) for m, rs in runs.items()}
    outside = {m: median([x["outside_training_s"] for x in rs]) for m, rs in runs.items()}
    training = {m: median([x["training_s"] for x in rs]) for m, rs in runs.items()}
    out["median_wall_s"], out["median_cpu_s"], out["min_wall_s"] = med, cpu, low
    out["median_training_s"], out["median_outside_training_s"] = training, outside
    base = training["plain"] + outside["plain"]
    out["ratio_wall"] = {m: round(v / med["plain"], 3) for m, v in med.items()}
    out["ratio_cpu"] = {m: round(v / cpu["plain"], 3) for m, v in cpu.items()}
    out["ratio_min_wall"] = {m: round(v / low["plain"], 3) for m, v in low.items()}
    out["extra_outside_training_s"] = {m: round(v - outside["plain"], 3) for m, v in outside.items()}
    out["ratio_same_training"] = {m: round((training["plain"] + v) / base, 3) for m, v in outside.items()}
    creates = [x["mlflow_db_create_s"] for rs in runs.values() for x in rs if "mlflow_db_create_s" in x]
    out["mlflow_db_create_s"] = {"median": median(creates), "all": creates}
    out["optuna_db_create_s"] = median([x["optuna_db_create_s"] for rs in runs.values() for x in rs])
    dagster = runs["dagster"]
    for record in dagster:
        record["steps_s"]["delay_model_outside_training"] = round(
            record["steps_s"].get("delay_model", 0.0) - record["training_s"], 3
        )
    steps = sorted({k for x in dagster for k in x["steps_s"] if k != "event_records"})
    out["median_dagster_steps_s"] = {k: median([x["steps_s"].get(k, 0.0) for x in dagster]) for k in steps}
    phase_names = sorted({k for rs in runs.values() for x in rs for k in x["phases_s"]})
    out["median_phases_s"] = {
        m: {k: median([x["phases_s"][k] for x in rs]) for k in phase_names if k in rs[0]["phases_s"]}
        for m, rs in runs.items()
    }
    digests = {m: sorted({x["weights_digest"] for x in rs}) for m, rs in runs.items()}
    out["weights_digests"] = digests
    out["same_weights"] = len({d for ds in digests.values() for d in ds}) == 1
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def walls(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{x['wall_s']:.1f}" for x in runs)


def summary_text(report: dict[str, Any]) -> str:
    lines = []
    env = report["environment"]
    lines.append(
        f"device {env['device_resolved']} ({', '.join(env['cuda_devices']) or env['cpu_model']}),"
        f" nproc {env['nproc']}, torch {env['torch']} ({env['torch_threads']} threads)"
    )
    if "throughput" in report:
        lines += [
            "",
            "| training | processes x threads | samples/s (median) | wall s (median) | runs |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, t in report["throughput"].items():
            if "skipped" in t:
                lines.append(f"| loop.train ({key}) | - | skipped: {t['skipped']} | - | 0 |")
                continue
            config = t["config"]
            lines.append(
                f"| loop.train {config['max_epochs']} epochs on {t['device']}"
                f" | {config['world_size']} x {config['threads_per_process']} threads"
                f" | {fmt(t['median_samples_per_s'], ',.0f')} | {fmt(t['median_wall_s'], '.1f')}"
                f" | {len(t['runs'])} |"
            )
    if "hpo" in report:
        h = report["hpo"]
        lines += [
            "",
            f"HPO: {h['config']['trials']} trials x <= {h['config']['max_epochs']} epochs:"
            f" {fmt(h['median_trials_per_min'], '.2f')} trials/min (median of {len(h['runs'])}),"
            f" wall {fmt(h['median_wall_s'], '.1f')} s, pruned {[x['pruned'] for x in h['runs']]}",
        ]
    if "overhead" in report:
        o = report["overhead"]
        lines += [
            "",
            "| overhead mode | wall s (median) | runs (wall s) | x plain (median) | x plain (min)"
            " | training s (median) | outside training s (median) | x plain (same training) |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for mode, rs in o["runs"].items():
            lines.append(
                f"| {mode} | {fmt(o['median_wall_s'][mode], '.1f')} | {walls(rs)}"
                f" | {fmt(o['ratio_wall'][mode], '.2f')} | {fmt(o['ratio_min_wall'][mode], '.2f')}"
                f" | {fmt(o['median_training_s'][mode], '.1f')}"
                f" | {fmt(o['median_outside_training_s'][mode], '.2f')}"
                f" | {fmt(o['ratio_same_training'][mode], '.2f')} |"
            )
        lines.append(
            "MLflow sqlite DB creation (one-off, excluded): median"
            f" {fmt(o['mlflow_db_create_s']['median'], '.2f')} s;"
            f" Optuna DB creation {fmt(o['optuna_db_create_s'], '.2f')} s; same weights in every mode:"
            f" {o['same_weights']}"
        )
        lines.append(
            "dagster steps (median s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in o["median_dagster_steps_s"].items())
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode; the report gives medians")
    parser.add_argument("--week", default="2013-03-04", help="model week (Monday) whose window is used")
    parser.add_argument("--first-day", default="2013-01-01", help="first daily partition of the template")
    parser.add_argument("--validation-days", type=int, default=7, help="MLP_VALIDATION_DAYS")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the throughput runs (all run)")
    parser.add_argument(
        "--world-sizes",
        default="1,1:1,2,2:1",
        help="processes of the throughput runs; W:T also sets T torch threads per process",
    )
    parser.add_argument("--hpo-trials", type=int, default=8, help="trials of the hpo mode")
    parser.add_argument("--hpo-epochs", type=int, default=10, help="max epochs per trial of the hpo mode")
    parser.add_argument("--trials", type=int, default=6, help="MLP_HPO_TRIALS of the overhead modes")
    parser.add_argument("--max-epochs", type=int, default=15, help="MLP_MAX_EPOCHS of the overhead modes")
    parser.add_argument("--patience", type=int, default=3, help="MLP_PATIENCE (overhead and hpo modes)")
    parser.add_argument(
        "--threads", type=int, help="torch threads of this process (default: torch's, one per core)"
    )
    parser.add_argument("--workdir", help="keeps the template instance between invocations (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep every mode's store and DBs")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/train_<date>.json)")
    parser.add_argument(
        "--snapshot", action="store_true", help="run HEAD's ml_platform (git archive), not the working tree"
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES):
        sys.exit(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; choose from {', '.join(MODES)}")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlp-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.snapshot:
        # Benchmark HEAD's ml_platform, not a working tree that others may edit while this runs.
        # Spawned DDP workers inherit sys.path, and PYTHONPATH covers any other child.
        src = work / "src"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "ml_platform"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        sys.path.insert(0, str(src))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))

    # Imports first, timed: a one-off cost of the process, kept out of every mode.
    imports: dict[str, float] = {}
    for group, names in {
        "torch + training lib": ["torch", "ml_platform.lib.training.loop", "ml_platform.lib.training.hpo"],
        "mlflow + pipeline": [
            "mlflow",
            "mlflow.pyfunc",
            "mlflow.models",
            "ml_platform.lib.training.pipeline",
            "ml_platform.lib.training.pyfunc",
        ],
        "dagster + definitions": [
            "dagster",
            "ml_platform.definitions",
            "ml_platform.demo",
            "ml_platform.lib.evaluation.evaluate",
            "ml_platform.lib.evaluation.metrics",
            "ml_platform.lib.evaluation.gates",
            "ml_platform.lib.evaluation.plots",
            "ml_platform.lib.registry.promotion",
            "ml_platform.lib.registry.audit",
        ],
    }.items():
        t = time.perf_counter()
        for name in names:
            __import__(name)
        imports[group] = round(time.perf_counter() - t, 2)
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    digest_start = code_digest(imported_package_dir())
    env = environment(args.device, args.snapshot)
    env["code_digest"] = digest_start
    env["loadavg_start"] = loadavg()
    log(f"training benchmark, week {args.week}, modes {modes}, workdir {work}\n{json.dumps(env)}")
    log(f"imports: {imports}")

    template = work / "template"
    settings = settings_for(template, args)
    train_days, holdout_days = window_days(settings, args.week)
    setup = materialize_template(template, args, holdout_days[-1])
    setup["imports_s"] = imports
    t = time.perf_counter()
    frame = read_window(settings.delta_root, train_days)
    data = encode_window(frame, args.validation_days)
    setup["window"] = f"{train_days[0]}..{train_days[-1]} ({len(train_days)} days)"
    setup["holdout"] = f"{holdout_days[0]}..{holdout_days[-1]}"
    setup["rows"] = frame.height
    setup["train_rows"], setup["validation_rows"] = len(data[1]), len(data[2])
    setup["read_and_encode_s"] = round(time.perf_counter() - t, 3)
    log(
        f"window {setup['window']}: {frame.height} rows, {setup['train_rows']} train,"
        f" {setup['validation_rows']} validation; holdout {setup['holdout']}"
    )

    report: dict[str, Any] = {
        "benchmark": "train_throughput",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "setup": setup,
    }
    if "throughput" in modes:
        report["throughput"] = run_throughput(data, args)
    if "hpo" in modes:
        report["hpo"] = run_hpo(data, args, work)
    if "overhead" in modes:
        report["overhead"] = run_overhead(template, args, work)
    finish_report(
        report,
        digest_start,
        Path(args.out or REPO / "benchmarks" / "results" / f"train_{report['date']}.json"),
        summary_text,
        changed_warning="WARNING: ml_platform changed during the run (DDP workers import it afresh)",
        remove=None if args.workdir or args.keep else work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
