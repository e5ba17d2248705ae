"""Hyperparameter search with Optuna: one study per model partition, TPE sampler, median pruner.

The study lives in a database (sqlite on the embedded default, Postgres in production), so its
trials stay inspectable after the run. Trials are observed through :class:`TrialObserver`, which
the MLflow tracking implements with one nested run per trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from ml_platform.lib.training.data import Encoded
from ml_platform.lib.training.loop import EpochStats, TrainConfig, train


class TrialObserver(Protocol):
    """Sees each trial start, each of its epochs, and its end."""

    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...

    def trial_epoch(self, number: int, stats: EpochStats) -> None: ...

    def trial_finished(self, number: int, state: str, value: float | None) -> None: ...


@dataclass(frozen=True)
class TrialSummary:
    """One finished trial."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int


@dataclass(frozen=True)
class StudyOutcome:
    """The best parameters and every trial of one study."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    trials: list[TrialSummary]

    @property
    def pruned(self) -> int:
        """How many trials the median pruner stopped."""
        return sum(t.state == "PRUNED" for t in self.trials)


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The search space."""
    return {
        "lr": trial.suggest_float("lr", 5e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
        "layers": trial.suggest_int("layers", 1, 3),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "embedding_dim": trial.suggest_categorical("embedding_dim", [4, 8, 16]),
    }


def objective(
    train_data: Encoded,
    validation: Encoded,
    cardinalities: list[int],
    base: TrainConfig,
    observer: TrialObserver | None = None,
    space: Callable[[optuna.Trial], dict[str, Any]] = suggest,
) -> Callable[[optuna.Trial], float]:
    """The objective: best validation loss of a training with the trial's parameters.

    The validation loss of every epoch is reported to the trial, and the median pruner may stop
    it (``optuna.TrialPruned``) once it is worse than the median of earlier trials at that epoch.
    """

    def run(trial: optuna.Trial) -> float:
        params = space(trial)
        if observer:
            observer.trial_started(trial.number, params)
        epochs = 0

        def on_epoch(stats: EpochStats) -> None:
            nonlocal epochs
            epochs += 1
            if observer:
                observer.trial_epoch(trial.number, stats)
            trial.report(stats.val_loss, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {stats.epoch}: validation loss {stats.val_loss:.4f}")

        try:
            result = train(train_data, validation, cardinalities, base.with_params(**params), on_epoch)
        except optuna.TrialPruned:
            trial.set_user_attr("epochs", epochs)
            if observer:
                observer.trial_finished(trial.number, "PRUNED", None)
            raise
        except Exception:
            if observer:
                observer.trial_finished(trial.number, "FAIL", None)
            raise
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("best_epoch", result.best_epoch)
        if observer:
            observer.trial_finished(trial.number, "COMPLETE", result.best_val_loss)
        return result.best_val_loss

    return run


def run_study(
    train_data: Encoded,
    validation: Encoded,
    cardinalities: list[int],
    base: TrainConfig,
    *,
    storage: str,
    study_name: str,
    n_trials: int,
    observer: TrialObserver | None = None,
    space: Callable[[optuna.Trial], dict[str, Any]] = suggest,
) -> StudyOutcome:
    """Create ``study_name`` in ``storage`` and run ``n_trials`` trials; the sampler is seeded.

    Raises:
        ValueError: when ``study_name`` already exists (a study is never silently extended, which
            would make the search depend on an earlier run) or no trial completed.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=min(4, n_trials)),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
    except optuna.exceptions.DuplicatedStudyError as exc:
        raise ValueError(f"Optuna study {study_name!r} already exists in {_redact(storage)}") from exc
    # a failing trial is a bug (bad data, divergence), not a bad point of the space: let it raise
    study.optimize(objective(train_data, validation, cardinalities, base, observer, space), n_trials=n_trials)
    trials = [
        TrialSummary(
            t.number,
            t.state.name,
            t.value,
            dict(t.params),
            int(t.user_attrs.get("epochs", 0)),
        )
        for t in study.trials
    ]
    if not any(t.state == "COMPLETE" for t in trials):
        raise ValueError(f"Optuna study {study_name!r}: none of {n_trials} trials completed")
    return StudyOutcome(study_name, dict(study.best_params), float(study.best_value), trials)


def _redact(url: str) -> str:
    """The storage URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
