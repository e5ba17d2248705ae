"""One model partition end to end: split, standardize, search, train, track, register.

This is what the ``delay_model`` asset calls; it is plain Python (no Dagster) so tests, the
benchmark and ``mlp`` run exactly the same steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
import polars as pl
import torch

from ml_platform.lib.training.data import (
    Encoded,
    Preprocessor,
    canonical_order,
    fit_preprocessor,
    labelled,
    split_by_time,
)
from ml_platform.lib.training.hpo import StudyOutcome, run_study
from ml_platform.lib.training.loop import TrainConfig, TrainResult, train
from ml_platform.lib.training.tracking import DatasetRef, LoggedModel, MlflowTracking, config_params


@dataclass(frozen=True)
class TrainingRequest:
    """Everything one weekly model partition is trained from."""

    model_name: str
    partition: str
    #: Feature rows of the whole training window, read through the recorded versions.
    features: pl.DataFrame
    datasets: list[DatasetRef]
    config: TrainConfig
    #: The window's last days judge early stopping and HPO trials.
    validation_days: int
    hpo_trials: int
    optuna_storage: str
    study_name: str
    tags: dict[str, str]
    #: After early stopping has chosen the epoch count on the validation days, train the final
    #: model on the whole window (validation days included) for that many epochs, so the model
    #: has seen the most recent week, as the per-route baseline has.
    refit_full_window: bool = True


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training produced and how."""

    logged: LoggedModel
    study: StudyOutcome | None
    #: The final model's training (the refit on the whole window, or the selection run itself).
    result: TrainResult
    #: The early-stopped training on the window minus its validation days; its best validation
    #: loss is the out-of-sample figure of the chosen configuration.
    selection: TrainResult
    config: TrainConfig
    preprocessor: Preprocessor
    #: Rows the final model was fitted on.
    train_rows: int
    validation_rows: int
    weights_digest: str


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the weights (names, shapes and bytes), the model's content version."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Window:
    """A training window split by time and encoded: what the search and the final fit read."""

    rows: pl.DataFrame
    train_frame: pl.DataFrame
    validation_frame: pl.DataFrame
    preprocessor: Preprocessor
    train_data: Encoded
    validation: Encoded


@dataclass(frozen=True)
class Fitted:
    """The final fit of one configuration on a window."""

    #: The early-stopped training on the window minus its validation days.
    selection: TrainResult
    #: The model's training: the refit on the whole window, or the selection itself.
    result: TrainResult
    preprocessor: Preprocessor
    #: Rows the final model was fitted on.
    final_rows: int


def prepare_window(features: pl.DataFrame, validation_days: int) -> Window:
    """Order the labelled rows, hold out the last ``validation_days``, fit and encode."""
    rows = canonical_order(labelled(features))
    train_frame, validation_frame = split_by_time(rows, validation_days)
    preprocessor = fit_preprocessor(train_frame)
    return Window(
        rows=rows,
        train_frame=train_frame,
        validation_frame=validation_frame,
        preprocessor=preprocessor,
        train_data=preprocessor.encode(train_frame),
        validation=preprocessor.encode(validation_frame),
    )


def fit_final(
    window: Window,
    config: TrainConfig,
    *,
    refit_full_window: bool,
    log: Callable[[str], None] = lambda _: None,
) -> Fitted:
    """Early-stop ``config`` on the validation days; then, if asked, refit on the whole window.

    The same steps for a training (:func:`train_partition`, after its search) and for a
    reproduction of one (``mlp reproduce``), so that the two can only differ by their inputs.
    """
    selection = train(window.train_data, window.validation, window.preprocessor.cardinalities, config)
    if not refit_full_window:
        return Fitted(selection, selection, window.preprocessor, window.train_frame.height)
    preprocessor = fit_preprocessor(window.rows)  # the whole window; the holdout week is not in it
    epochs = selection.best_epoch + 1
    refit = config.with_params(max_epochs=epochs, patience=epochs + 1, restore_best=False)
    result = train(
        preprocessor.encode(window.rows),
        preprocessor.encode(window.validation_frame),
        preprocessor.cardinalities,
        refit,
    )
    log(
        f"refit on the whole window ({window.rows.height} rows) for the {epochs} epoch(s)"
        " that early stopping chose"
    )
    return Fitted(selection, result, preprocessor, window.rows.height)


def train_partition(
    request: TrainingRequest, tracking: MlflowTracking, log: Callable[[str], None] = lambda _: None
) -> TrainingOutcome:
    """Train, track and register the model of ``request.partition``."""
    window = prepare_window(request.features, request.validation_days)
    rows, train_frame, validation_frame = window.rows, window.train_frame, window.validation_frame
    log(
        f"{request.model_name}[{request.partition}]: {train_frame.height} training rows,"
        f" {validation_frame.height} validation rows ({request.validation_days} last days)"
    )
    with tracking.run(f"{request.model_name}-{request.partition}", request.tags) as run_id:
        mlflow.log_params(
            {
                **config_params(request.config),
                "partition": request.partition,
                "window_first_day": request.datasets[0].partition if request.datasets else "",
                "window_last_day": request.datasets[-1].partition if request.datasets else "",
                "window_partitions": len(request.datasets),
                "validation_days": request.validation_days,
                "hpo_trials": request.hpo_trials,
                "selection_train_rows": train_frame.height,
                "validation_rows": validation_frame.height,
                "final_train_rows": rows.height if request.refit_full_window else train_frame.height,
            }
        )
        tracking.log_datasets(run_id, request.datasets)
        study = None
        config = request.config
        if request.hpo_trials > 0:
            study = run_study(
                window.train_data,
                window.validation,
                window.preprocessor.cardinalities,
                request.config.with_params(world_size=1),  # trials run in this process
                storage=request.optuna_storage,
                study_name=request.study_name,
                n_trials=request.hpo_trials,
                observer=tracking.trial_observer(),
            )
            config = request.config.with_params(**study.best_params)
            mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
            mlflow.set_tag("optuna.study", request.study_name)
            mlflow.log_metrics({"hpo_best_val_loss": study.best_value, "hpo_pruned_trials": study.pruned})
            log(
                f"HPO {request.study_name}: {len(study.trials)} trials ({study.pruned} pruned),"
                f" best validation loss {study.best_value:.4f} with {study.best_params}"
            )
        fitted = fit_final(window, config, refit_full_window=request.refit_full_window, log=log)
        selection, result, preprocessor = fitted.selection, fitted.result, fitted.preprocessor
        if request.refit_full_window:
            tracking.log_history(selection.history, prefix="select_")
        tracking.log_history(result.history)
        mlflow.log_metrics(
            {
                "best_val_loss": selection.best_val_loss,
                "best_epoch": selection.best_epoch,
                "epochs": len(selection.history),
                "samples_per_second": result.samples_per_second,
            }
        )
        mlflow.set_tags({"training.device": result.device, "training.world_size": str(result.world_size)})
        logged = tracking.log_model(
            result=result,
            preprocessor=preprocessor,
            config=config,
            example=validation_frame.head(5),
            registered_name=request.model_name,
        )
        log(
            f"trained on {result.device} (world size {result.world_size}): best epoch {selection.best_epoch}"
            f" of {len(selection.history)}, validation loss {selection.best_val_loss:.4f},"
            f" {result.samples_per_second:,.0f} samples/s; registered {logged.registered_name}"
            f" v{logged.version} (run {run_id})"
        )
    return TrainingOutcome(
        logged=logged,
        study=study,
        result=result,
        selection=selection,
        config=config,
        preprocessor=preprocessor,
        train_rows=fitted.final_rows,
        validation_rows=validation_frame.height,
        weights_digest=weights_digest(result.state_dict),
    )
