"""Optuna studies in a sqlite database: search space, persistence, refusals and median pruning."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from ml_platform.lib.training.hpo import StudyOutcome, _redact, run_study, suggest
from ml_platform.lib.training.loop import EpochStats
from ml_platform_tests.lib.training.conftest import SMALL, Prepared

BASE = SMALL.with_params(max_epochs=3)


class Recorder:
    """A TrialObserver that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.calls.append(("started", number, params))

    def trial_epoch(self, number: int, stats: EpochStats) -> None:
        self.calls.append(("epoch", number, stats.epoch))

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        self.calls.append(("finished", number, state, value))

    def finished(self) -> dict[int, tuple[str, float | None]]:
        return {c[1]: (c[2], c[3]) for c in self.calls if c[0] == "finished"}

    def epochs(self, number: int) -> list[int]:
        return [c[2] for c in self.calls if c[0] == "epoch" and c[1] == number]


def _study(p: Prepared, storage: str, name: str, n_trials: int, **kw: Any) -> StudyOutcome:
    return run_study(
        p.train,
        p.validation,
        p.preprocessor.cardinalities,
        BASE,
        storage=storage,
        study_name=name,
        n_trials=n_trials,
        **kw,
    )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('optuna')}/optuna.db"


@pytest.fixture(scope="module")
def searched(small_prepared: Prepared, storage: str) -> tuple[StudyOutcome, Recorder]:
    recorder = Recorder()
    return _study(small_prepared, storage, "search", 4, observer=recorder), recorder


def test_study_finds_params_in_the_search_space(searched: tuple[StudyOutcome, Recorder]) -> None:
    outcome, recorder = searched
    assert outcome.study_name == "search"
    assert [t.number for t in outcome.trials] == [0, 1, 2, 3]
    assert {t.state for t in outcome.trials} <= {"COMPLETE", "PRUNED"}
    complete = [t for t in outcome.trials if t.state == "COMPLETE"]
    assert len(complete) >= 2  # the median pruner only judges once two trials completed
    assert outcome.pruned == 4 - len(complete)
    assert outcome.best_value == min(t.value for t in complete if t.value is not None)
    best = outcome.best_params
    assert set(best) == {"lr", "weight_decay", "hidden", "layers", "dropout", "embedding_dim"}
    # the best parameters are those of the completed trial with the lowest validation loss
    assert best == min(complete, key=lambda t: t.value if t.value is not None else float("inf")).params
    # every suggestion lies in the space hpo.suggest declares (a changed space shows up here)
    for t in outcome.trials:
        assert 5e-4 <= t.params["lr"] <= 1e-2 and 1e-6 <= t.params["weight_decay"] <= 1e-2
        assert t.params["hidden"] in (32, 64, 128) and t.params["embedding_dim"] in (4, 8, 16)
        assert t.params["layers"] in (1, 2, 3) and t.params["dropout"] <= 0.4
    assert BASE.patience >= BASE.max_epochs  # so early stopping cannot end a trial here
    for t in outcome.trials:
        if t.state == "COMPLETE":
            assert t.epochs == BASE.max_epochs, t  # ran every epoch
        else:
            assert t.epochs >= 2, t  # the median pruner's warm-up step is epoch 0
    # the observer saw every trial start, each of its epochs, and its end
    assert sorted(recorder.finished()) == [0, 1, 2, 3]
    for t in outcome.trials:
        assert ("started", t.number, t.params) in recorder.calls
        assert recorder.epochs(t.number) == list(range(t.epochs))
        # optuna keeps a pruned trial's last reported loss as its value; the observer sees none
        assert recorder.finished()[t.number] == (t.state, t.value if t.state == "COMPLETE" else None)


def test_study_persists_with_per_epoch_values(searched: tuple[StudyOutcome, Recorder], storage: str) -> None:
    outcome, _ = searched
    study = optuna.load_study(study_name="search", storage=storage)
    assert len(study.trials) == 4
    assert study.best_value == outcome.best_value and study.best_params == outcome.best_params
    for trial, summary in zip(study.trials, outcome.trials, strict=True):
        assert trial.state.name == summary.state
        assert trial.intermediate_values, f"trial {trial.number} reported no epoch"
        assert sorted(trial.intermediate_values) == list(range(summary.epochs))
        assert trial.user_attrs["epochs"] == summary.epochs
        if summary.state == "COMPLETE":
            # the objective is the best epoch's validation loss
            assert trial.value == min(trial.intermediate_values.values())
            assert trial.intermediate_values[trial.user_attrs["best_epoch"]] == trial.value


def test_duplicate_study_name_is_refused(
    searched: tuple[StudyOutcome, Recorder], small_prepared: Prepared, storage: str
) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="'search' already exists"):
        _study(small_prepared, storage, "search", 1, observer=recorder)
    assert recorder.calls == []  # refused before any trial ran
    assert len(optuna.load_study(study_name="search", storage=storage).trials) == 4


def test_same_seed_same_search(small_prepared: Prepared, storage: str) -> None:
    first = _study(small_prepared, storage, "repeat-a", 2)
    second = _study(small_prepared, storage, "repeat-b", 2)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]


def test_bad_trials_are_pruned(small_prepared: Prepared, storage: str) -> None:
    # trials 0-2 train with a good rate (identical, so the median is their value); trials 3 and 4
    # barely move from the initial weights and are worse than that median from epoch 1 on
    def space(trial: optuna.Trial) -> dict[str, Any]:
        lr = 1e-2 if trial.number < 3 else 1e-7
        return {"lr": trial.suggest_float("lr", lr, lr)}

    recorder = Recorder()
    base = BASE.with_params(max_epochs=4)
    outcome = run_study(
        small_prepared.train,
        small_prepared.validation,
        small_prepared.preprocessor.cardinalities,
        base,
        storage=storage,
        study_name="pruning",
        n_trials=5,
        observer=recorder,
        space=space,
    )
    states = [t.state for t in outcome.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert outcome.pruned == 2
    assert outcome.best_params == {"lr": 1e-2}
    values = {
        t.number: t.intermediate_values
        for t in optuna.load_study(study_name="pruning", storage=storage).trials
    }
    for t in outcome.trials[3:]:
        assert t.params == {"lr": 1e-7}
        assert t.value == values[t.number][1] > max(values[n][1] for n in range(3))
        # judged from epoch 1 on (n_warmup_steps=1), so stopped after 2 of 4 epochs
        assert t.epochs == 2 and recorder.epochs(t.number) == [0, 1]
        assert recorder.finished()[t.number] == ("PRUNED", None)
    for t in outcome.trials[:3]:
        assert t.epochs == base.max_epochs and recorder.finished()[t.number] == ("COMPLETE", t.value)
    assert sorted(values[3]) == sorted(values[4]) == [0, 1]
    assert sorted(values[0]) == [0, 1, 2, 3]


def test_a_failing_trial_raises(small_prepared: Prepared, storage: str) -> None:
    recorder = Recorder()
    with pytest.raises(TypeError):
        _study(small_prepared, storage, "failing", 2, observer=recorder, space=lambda t: {"no_such": 1})
    assert recorder.finished() == {0: ("FAIL", None)}


def test_search_space_and_redaction() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # in memory
    for _ in range(20):
        config = SMALL.with_params(**suggest(study.ask()))  # every suggestion is a valid config
        assert 5e-4 <= config.lr <= 1e-2 and 1 <= config.layers <= 3
        assert config.hidden in (32, 64, 128) and config.embedding_dim in (4, 8, 16)
    assert _redact("postgresql://user:secret@db:5432/optuna") == "postgresql://***@db:5432/optuna"
    assert _redact("sqlite:///tmp/optuna.db") == "sqlite:///tmp/optuna.db"


def test_no_completed_trial_is_an_error(small_prepared: Prepared, storage: str) -> None:
    def always_pruned(trial: optuna.Trial) -> dict[str, Any]:
        raise optuna.TrialPruned

    with pytest.raises(ValueError, match="none of 2 trials completed"):
        _study(small_prepared, storage, "all-pruned", 2, space=always_pruned)
