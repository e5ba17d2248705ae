"""One partition end to end against a sqlite MLflow: tracked run, nested trials, lineage, pyfunc.

The trainings of this module share one MLflow database (creating its schema takes seconds).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from ml_platform.lib.training.data import (
    INPUT_COLUMNS,
    canonical_order,
    fit_preprocessor,
    labelled,
    split_by_time,
)
from ml_platform.lib.training.loop import EpochStats, build_model, predict
from ml_platform.lib.training.pipeline import (
    TrainingOutcome,
    TrainingRequest,
    train_partition,
    weights_digest,
)
from ml_platform.lib.training.pyfunc import OUTPUT_COLUMNS
from ml_platform.lib.training.tracking import (
    TAG_DAGSTER_RUN,
    TAG_GIT_COMMIT,
    TAG_PARTITION,
    DatasetRef,
    MlflowTracking,
    load_model,
    model_lineage,
)
from ml_platform_tests.lib.training.conftest import FIRST_DAY, SMALL, make_features

pytestmark = pytest.mark.slow

MODEL = "flight-delay-test"
DAYS = 10
VALIDATION_DAYS = 2
PER_DAY = 150
CONFIG = SMALL.with_params(max_epochs=3)
TAGS = {TAG_DAGSTER_RUN: "run-123", TAG_PARTITION: "2013-03-11", TAG_GIT_COMMIT: "abc123"}


@dataclass(frozen=True)
class Trained:
    tracking: MlflowTracking
    request: TrainingRequest
    outcome: TrainingOutcome
    log: list[str]


def _refs(frame: pl.DataFrame) -> list[DatasetRef]:
    counts = dict(frame.group_by("flight_date").len().iter_rows())
    return [
        DatasetRef(
            table="flight_features",
            partition=str(day),
            table_uri="file:///lake/flight_features",
            table_version=10 + i,
            content_hash=f"{i:02d}" * 32,
            rows=int(counts[day]),
            context="training",
        )
        for i, day in enumerate(FIRST_DAY + timedelta(days=d) for d in range(DAYS))
    ]


def _request(frame: pl.DataFrame, storage: str, study: str) -> TrainingRequest:
    return TrainingRequest(
        model_name=MODEL,
        partition="2013-03-11",
        features=frame,
        datasets=_refs(frame),
        config=CONFIG,
        validation_days=VALIDATION_DAYS,
        hpo_trials=2,
        optuna_storage=storage,
        study_name=study,
        tags=TAGS,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("training-pipeline")


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_features(days=DAYS, per_day=PER_DAY, seed=3)


@pytest.fixture(scope="module")
def trained(root: Path, frame: pl.DataFrame) -> Trained:
    tracking = MlflowTracking(f"sqlite:///{root}/mlflow.db", "delay-tests", (root / "art").as_uri())
    request = _request(frame, f"sqlite:///{root}/optuna.db", "study-a")
    log: list[str] = []
    return Trained(tracking, request, train_partition(request, tracking, log.append), log)


def _split_heights(frame: pl.DataFrame) -> tuple[int, int]:
    train, validation = split_by_time(labelled(frame), VALIDATION_DAYS)
    return train.height, validation.height


def _metric_history(client: mlflow.MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _epochs(history: list[EpochStats], key: str) -> list[tuple[int, float]]:
    return [(s.epoch, getattr(s, key)) for s in history]


def test_parent_run_has_params_tags_and_history(trained: Trained) -> None:
    outcome, client = trained.outcome, trained.tracking.client
    run = client.get_run(outcome.logged.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == trained.tracking.experiment_id()
    assert run.info.run_name == f"{MODEL}-2013-03-11"
    params = run.data.params
    split_train, split_validation = _split_heights(trained.request.features)
    assert params["partition"] == "2013-03-11" and params["hpo_trials"] == "2"
    # the rows of the selection split; the refit then fits all labelled rows of the window
    assert params["selection_train_rows"] == str(split_train)
    assert params["validation_rows"] == str(split_validation)
    assert params["final_train_rows"] == str(split_train + split_validation)
    assert outcome.validation_rows == split_validation
    assert (
        outcome.train_rows == split_train + split_validation == trained.request.features["has_target"].sum()
    )
    assert params["window_first_day"] == str(FIRST_DAY) and params["window_partitions"] == str(DAYS)
    assert params["window_last_day"] == str(FIRST_DAY + timedelta(days=DAYS - 1))
    assert params["max_epochs"] == "3" and params["seed"] == "0"
    assert params["validation_days"] == str(VALIDATION_DAYS)
    assert outcome.study is not None
    assert {k: v for k, v in params.items() if k.startswith("best_")} == {
        f"best_{k}": str(v) for k, v in outcome.study.best_params.items()
    }
    assert outcome.config == CONFIG.with_params(**outcome.study.best_params)
    tags = run.data.tags
    assert {k: tags[k] for k in TAGS} == TAGS
    assert tags["optuna.study"] == "study-a"
    assert tags["training.device"] == "cpu" and tags["training.world_size"] == "1"
    selection = outcome.selection
    metrics = run.data.metrics
    assert metrics["best_val_loss"] == selection.best_val_loss
    assert metrics["best_epoch"] == selection.best_epoch
    assert metrics["epochs"] == len(selection.history)
    assert metrics["hpo_best_val_loss"] == pytest.approx(outcome.study.best_value)
    assert metrics["hpo_pruned_trials"] == 0  # the median pruner needs two completed trials first
    for key in ("train_loss", "val_loss", "val_delay_loss", "val_class_loss"):
        # per epoch: the selection run under select_*, the refit (the registered model) plain;
        # MLflow stores doubles, so the values come back exactly
        assert _metric_history(client, run.info.run_id, f"select_{key}") == _epochs(selection.history, key)
        assert _metric_history(client, run.info.run_id, key) == _epochs(outcome.result.history, key)
    assert any(f"registered {MODEL} v{outcome.logged.version}" in line for line in trained.log)


def test_refit_trains_the_chosen_epochs_on_the_whole_window(trained: Trained) -> None:
    outcome = trained.outcome
    selection, refit = outcome.selection, outcome.result
    assert refit is not selection
    assert len(refit.history) == selection.best_epoch + 1
    assert refit.best_epoch == len(refit.history) - 1 and not refit.stopped_early  # the last epoch's weights
    assert refit.train_samples == outcome.train_rows * len(refit.history)
    assert outcome.preprocessor == fit_preprocessor(canonical_order(labelled(trained.request.features)))
    assert outcome.weights_digest == weights_digest(refit.state_dict) != weights_digest(selection.state_dict)


def test_dataset_inputs_are_the_feature_partitions(trained: Trained) -> None:
    run = trained.tracking.client.get_run(trained.outcome.logged.run_id)
    assert run.inputs is not None
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    refs = trained.request.datasets
    assert sorted(inputs) == sorted(f"flight_features[{r.partition}]" for r in refs)
    for ref in refs:
        item = inputs[f"flight_features[{ref.partition}]"]
        source = json.loads(item.dataset.source)
        assert source == {
            "uri": ref.table_uri,
            "partition": ref.partition,
            "delta_table_version": ref.table_version,
        }
        assert item.dataset.source_type == "delta"
        assert item.dataset.digest == ref.content_hash[:36]
        assert json.loads(str(item.dataset.profile)) == {"num_rows": ref.rows}
        tags = {t.key: t.value for t in item.tags}
        assert tags["mlflow.data.context"] == "training"
        assert tags["data_version"] == ref.content_hash
        assert tags["delta_table_version"] == str(ref.table_version)


def test_trials_are_nested_runs(trained: Trained) -> None:
    outcome, client = trained.outcome, trained.tracking.client
    parent = outcome.logged.run_id
    trials = client.search_runs(
        [trained.tracking.experiment_id()], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert outcome.study is not None
    assert len(trials) == len(outcome.study.trials) == 2
    by_number = {int(r.data.tags["optuna.trial"]): r for r in trials}
    for summary in outcome.study.trials:
        run = by_number[summary.number]
        assert run.info.run_name == f"trial-{summary.number:03d}"
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        assert run.data.params == {k: str(v) for k, v in summary.params.items()}
        assert run.data.metrics["best_val_loss"] == pytest.approx(summary.value)
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(summary.epochs))


def test_model_is_registered_with_signature_and_example(trained: Trained) -> None:
    logged, client = trained.outcome.logged, trained.tracking.client
    assert logged.registered_name == MODEL
    version = client.get_model_version(MODEL, logged.version)
    assert version.run_id == logged.run_id
    info = mlflow.models.get_model_info(logged.model_uri)
    assert info.signature is not None
    assert info.signature.inputs.input_names() == list(INPUT_COLUMNS)
    assert info.signature.outputs.input_names() == list(OUTPUT_COLUMNS)
    assert info.saved_input_example_info is not None
    example = mlflow.models.Model.load(logged.model_uri).load_input_example()
    assert isinstance(example, pd.DataFrame)
    assert list(example.columns) == list(INPUT_COLUMNS) and len(example) == 5


def test_registered_model_predicts_like_the_trained_weights(trained: Trained) -> None:
    outcome, logged = trained.outcome, trained.outcome.logged
    frame = trained.request.features.tail(300)
    model = load_model(trained.tracking.tracking_uri, MODEL, logged.version)
    delay, probability = model.predict_frame(frame)
    assert delay.shape == probability.shape == (300,)
    assert np.isfinite(delay).all() and ((probability >= 0) & (probability <= 1)).all()
    # the same numbers as the in-memory network: weights, preprocessor and architecture round-trip
    pre = outcome.preprocessor
    network = build_model(pre.cardinalities, len(pre.numeric_columns), outcome.config)
    network.load_state_dict(outcome.result.state_dict)
    expected_delay, expected_probability = predict(network, pre.encode(frame.select(INPUT_COLUMNS)))
    np.testing.assert_array_equal(delay, pre.delay_minutes(expected_delay))
    np.testing.assert_array_equal(probability, expected_probability)
    assert model.preprocessor == pre
    assert weights_digest(dict(model.network.state_dict())) == outcome.weights_digest
    # and through the generic pyfunc interface, with pandas in and out
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{logged.version}")
    out = pyfunc.predict(frame.select(INPUT_COLUMNS).to_pandas())
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    np.testing.assert_allclose(out[OUTPUT_COLUMNS[0]].to_numpy(), delay, rtol=1e-6)


def test_lineage_leads_back_to_the_datasets(trained: Trained) -> None:
    logged = trained.outcome.logged
    lineage = model_lineage(trained.tracking.client, MODEL, logged.version)
    assert lineage.run_id == logged.run_id and lineage.version == logged.version
    assert lineage.datasets == sorted(
        (f"flight_features[{r.partition}]", "training", str(r.table_version), r.content_hash)
        for r in trained.request.datasets
    )
    assert {k: lineage.tags[k] for k in TAGS} == TAGS
    assert lineage.metrics["best_val_loss"] == trained.outcome.selection.best_val_loss


def test_retraining_the_same_partition_is_reproducible(trained: Trained, root: Path) -> None:
    # same rows, seed and config; a new study (a study is never extended) and a new version
    again = train_partition(
        _request(trained.request.features, f"sqlite:///{root}/optuna.db", "study-b"), trained.tracking
    )
    first = trained.outcome
    assert again.logged.run_id != first.logged.run_id
    assert int(again.logged.version) == int(first.logged.version) + 1
    assert again.study is not None and first.study is not None
    assert again.study.best_params == first.study.best_params
    # CPU training is bit-reproducible: seeded init, permutation and dropout, deterministic kernels
    assert again.weights_digest == first.weights_digest
    assert abs(again.selection.best_val_loss - first.selection.best_val_loss) <= 1e-9
    assert abs(again.result.best_val_loss - first.result.best_val_loss) <= 1e-9
    assert again.selection.best_epoch == first.selection.best_epoch
    assert again.preprocessor == first.preprocessor


def test_row_order_from_storage_does_not_change_the_model(trained: Trained, root: Path) -> None:
    # Delta returns a partition's rows in whatever order they were written; the content (and so
    # the data version) is the same, and so must the model be
    shuffled = trained.request.features.sample(fraction=1.0, shuffle=True, seed=7)
    assert not shuffled.equals(trained.request.features)
    again = train_partition(
        _request(shuffled, f"sqlite:///{root}/optuna.db", "study-shuffled"), trained.tracking
    )
    assert again.weights_digest == trained.outcome.weights_digest


def test_without_refit_the_selection_run_is_the_model(trained: Trained, root: Path) -> None:
    request = dataclasses.replace(
        _request(trained.request.features, f"sqlite:///{root}/optuna.db", "study-no-refit"),
        refit_full_window=False,
    )
    outcome = train_partition(request, trained.tracking)
    assert outcome.result is outcome.selection
    split_train, _ = _split_heights(request.features)
    assert outcome.train_rows == split_train
    assert outcome.preprocessor == fit_preprocessor(
        split_by_time(canonical_order(labelled(request.features)), VALIDATION_DAYS)[0]
    )
    # the same search and selection run as the refitting training of the same rows
    assert outcome.selection.best_val_loss == trained.outcome.selection.best_val_loss
    assert outcome.weights_digest == weights_digest(trained.outcome.selection.state_dict)
    client = trained.tracking.client
    run = client.get_run(outcome.logged.run_id)
    assert "select_val_loss" not in run.data.metrics
    assert _metric_history(client, run.info.run_id, "val_loss") == _epochs(
        outcome.selection.history, "val_loss"
    )
    assert client.get_model_version(MODEL, outcome.logged.version).run_id == outcome.logged.run_id
