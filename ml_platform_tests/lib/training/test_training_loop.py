"""The training loop in one process: it learns, it is deterministic, it stops early, it refuses bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from ml_platform.lib.training.data import Encoded
from ml_platform.lib.training.loop import (
    EpochStats,
    TrainConfig,
    TrainingError,
    TrainResult,
    build_model,
    predict,
    resolve_device,
    seed_everything,
    train,
)
from ml_platform.lib.training.model import DelayNet
from ml_platform_tests.lib.training.conftest import SMALL, Prepared


def _train(p: Prepared, config: TrainConfig = SMALL, **kw: object) -> TrainResult:
    return train(p.train, p.validation, p.preprocessor.cardinalities, config, **kw)  # type: ignore[arg-type]


def _losses(history: list[EpochStats]) -> list[tuple[float, ...]]:
    """The history without the wall-clock seconds."""
    return [(s.epoch, s.train_loss, s.val_loss, s.val_delay_loss, s.val_class_loss) for s in history]


def _val_loss(model: torch.nn.Module, data: Encoded, config: TrainConfig) -> float:
    model.eval()
    with torch.no_grad():
        delay, logit = model(torch.from_numpy(data.categorical), torch.from_numpy(data.numeric))
        reg = F.huber_loss(delay, torch.from_numpy(data.delay), delta=config.huber_delta)
        cls = F.binary_cross_entropy_with_logits(logit, torch.from_numpy(data.delayed))
    return float(reg) + config.classification_weight * float(cls)


@pytest.fixture(scope="module")
def trained(prepared: Prepared) -> TrainResult:
    return _train(prepared)


def test_training_lowers_the_losses(prepared: Prepared, trained: TrainResult) -> None:
    history = trained.history
    assert [s.epoch for s in history] == list(range(SMALL.max_epochs))
    assert history[-1].train_loss < 0.8 * history[0].train_loss
    assert trained.best_val_loss == min(s.val_loss for s in history)
    assert trained.best_epoch > 0 and trained.best_val_loss < history[0].val_loss
    for s in history:
        assert s.val_loss == pytest.approx(s.val_delay_loss + SMALL.classification_weight * s.val_class_loss)
    # and better than the best constant guess (the training mean delay and delay rate)
    val = prepared.validation
    rate = float(prepared.train.delayed.mean())
    constant = float(
        F.huber_loss(torch.zeros(len(val)), torch.from_numpy(val.delay))
        + F.binary_cross_entropy(torch.full((len(val),), rate), torch.from_numpy(val.delayed))
    )
    assert trained.best_val_loss < 0.8 * constant
    assert trained.device == "cpu" and trained.world_size == 1 and trained.mixed_precision is None
    assert trained.train_samples == len(prepared.train) * len(history)
    assert trained.samples_per_second > 0 and not trained.stopped_early


def test_returned_weights_are_the_best_epochs(prepared: Prepared, trained: TrainResult) -> None:
    model = build_model(prepared.preprocessor.cardinalities, prepared.train.numeric.shape[1], SMALL)
    model.load_state_dict(trained.state_dict)
    assert _val_loss(model, prepared.validation, SMALL) == pytest.approx(trained.best_val_loss, rel=1e-5)
    delay, probability = predict(model, prepared.validation)
    assert delay.shape == probability.shape == (len(prepared.validation),)
    assert np.isfinite(delay).all() and ((probability >= 0) & (probability <= 1)).all()
    # the model ranks: delayed flights get higher probabilities and delays on average
    delayed = prepared.validation.delayed == 1
    assert probability[delayed].mean() > probability[~delayed].mean() + 0.1
    assert np.corrcoef(delay, prepared.validation.delay)[0, 1] > 0.5


def test_same_seed_same_weights_and_history(prepared: Prepared, trained: TrainResult) -> None:
    config = SMALL.with_params(max_epochs=3)
    first, second = _train(prepared, config), _train(prepared, config)
    assert first.state_dict.keys() == second.state_dict.keys()
    for name, tensor in first.state_dict.items():
        assert torch.equal(tensor, second.state_dict[name]), name
    assert _losses(first.history) == _losses(second.history)
    # the module fixture (6 epochs, same seed) went through the very same first 3 epochs
    assert _losses(first.history) == _losses(trained.history[:3])
    other = _train(prepared, config.with_params(seed=1))
    assert any(not torch.equal(t, other.state_dict[k]) for k, t in first.state_dict.items())
    assert _losses(other.history) != _losses(first.history)


def test_same_seed_same_weights_with_two_threads(small_prepared: Prepared) -> None:
    # the other tests train on one thread; intra-op parallelism must not break determinism
    # (results differ *between* thread counts by float rounding, ~1e-7: compare like with like)
    config = SMALL.with_params(max_epochs=2)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = _train(small_prepared, config), _train(small_prepared, config)
    finally:
        torch.set_num_threads(previous)
    for name, tensor in first.state_dict.items():
        assert torch.equal(tensor, second.state_dict[name]), name
    assert _losses(first.history) == _losses(second.history)


def _inverted(p: Prepared) -> Encoded:
    """The training rows with inverted targets: every epoch fits them better and validation worse."""
    return Encoded(p.train.categorical, p.train.numeric, -p.train.delay, 1 - p.train.delayed)


def test_early_stopping_keeps_the_best_epoch(prepared: Prepared) -> None:
    inverted = _inverted(prepared)
    config = SMALL.with_params(patience=2, max_epochs=10)
    seen: list[EpochStats] = []
    result = train(inverted, prepared.validation, prepared.preprocessor.cardinalities, config, seen.append)
    assert result.stopped_early
    assert result.best_epoch == 0
    assert len(result.history) == config.patience + 1 < config.max_epochs
    assert seen == result.history
    val = [s.val_loss for s in result.history]
    assert val == sorted(val) and result.best_val_loss == val[0]
    assert result.history[-1].train_loss < result.history[0].train_loss
    # the weights returned are epoch 0's, not the last epoch's
    one_epoch = train(
        inverted, prepared.validation, prepared.preprocessor.cardinalities, config.with_params(max_epochs=1)
    )
    for name, tensor in result.state_dict.items():
        assert torch.equal(tensor, one_epoch.state_dict[name]), name


def test_restore_best_false_returns_the_last_epoch(prepared: Prepared) -> None:
    # what the refit on the whole window uses: a fixed epoch count, the last weights
    inverted, cards = _inverted(prepared), prepared.preprocessor.cardinalities
    config = SMALL.with_params(max_epochs=3, patience=4, restore_best=False)
    last = train(inverted, prepared.validation, cards, config)
    best = train(inverted, prepared.validation, cards, config.with_params(restore_best=True))
    assert _losses(last.history) == _losses(best.history)
    assert best.best_epoch == 0 and last.best_epoch == 2 and not last.stopped_early
    assert last.best_val_loss == last.history[-1].val_loss > best.best_val_loss
    assert any(not torch.equal(t, best.state_dict[k]) for k, t in last.state_dict.items())
    model = build_model(cards, inverted.numeric.shape[1], config)
    model.load_state_dict(last.state_dict)
    assert _val_loss(model, prepared.validation, config) == pytest.approx(last.history[-1].val_loss, rel=1e-5)


def test_on_epoch_exceptions_stop_training(prepared: Prepared) -> None:
    class Stop(Exception):
        pass

    def stop_at_second(stats: EpochStats) -> None:
        if stats.epoch == 1:
            raise Stop

    seen: list[int] = []

    def record_then_stop(stats: EpochStats) -> None:
        seen.append(stats.epoch)
        stop_at_second(stats)

    with pytest.raises(Stop):
        _train(prepared, SMALL, on_epoch=record_then_stop)
    assert seen == [0, 1]


def test_resolve_device() -> None:
    assert resolve_device("auto") == torch.device("cpu")  # no CUDA on the test machines
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="cuda"):
            resolve_device("cuda")


def test_separate_heads_train_two_trunks(prepared: Prepared) -> None:
    config = SMALL.with_params(separate_heads=True, max_epochs=4)
    result = _train(prepared, config)
    trunk = {k.removeprefix("trunk.") for k in result.state_dict if k.startswith("trunk.")}
    class_trunk = {k.removeprefix("class_trunk.") for k in result.state_dict if k.startswith("class_trunk.")}
    assert trunk and trunk == class_trunk
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_val_loss < result.history[0].val_loss
    shared = _train(prepared, config.with_params(separate_heads=False))
    assert not any(k.startswith("class_trunk.") for k in shared.state_dict)


def test_separate_heads_are_independent(prepared: Prepared) -> None:
    # without the classification loss (and without weight decay), the classification trunk and
    # head get zero gradients: they keep their initial weights while the delay trunk learns
    config = SMALL.with_params(separate_heads=True, classification_weight=0.0, weight_decay=0.0, max_epochs=2)
    result = _train(prepared, config)
    seed_everything(config.seed)
    initial = build_model(prepared.preprocessor.cardinalities, prepared.train.numeric.shape[1], config)
    assert isinstance(initial, DelayNet) and initial.class_trunk is not None
    init = initial.state_dict()
    for name, tensor in result.state_dict.items():
        if name.startswith(("class_trunk.", "class_head.")):
            assert torch.equal(tensor, init[name]), name
    assert not torch.equal(result.state_dict["trunk.0.weight"], init["trunk.0.weight"])
    assert not torch.equal(result.state_dict["delay_head.weight"], init["delay_head.weight"])


def test_refuses_rows_without_targets(prepared: Prepared) -> None:
    bad = dataclasses.replace(prepared.train, delay=prepared.train.delay.copy())
    bad.delay[7] = np.nan
    with pytest.raises(TrainingError, match="both targets"):
        train(bad, prepared.validation, prepared.preprocessor.cardinalities, SMALL)
    bad_val = dataclasses.replace(prepared.validation, delayed=prepared.validation.delayed.copy())
    bad_val.delayed[0] = np.nan
    with pytest.raises(TrainingError, match="both targets"):
        train(prepared.train, bad_val, prepared.preprocessor.cardinalities, SMALL)


def test_refuses_unlabelled_feature_rows(features: pl.DataFrame, prepared: Prepared) -> None:
    # forgetting data.labelled(): cancelled flights carry null targets
    encoded = prepared.preprocessor.encode(features)
    assert np.isnan(encoded.delay).any()
    with pytest.raises(TrainingError, match=r"data\.labelled"):
        train(encoded, prepared.validation, prepared.preprocessor.cardinalities, SMALL)


def test_refuses_empty_splits(prepared: Prepared) -> None:
    empty = prepared.train.subset(np.zeros(0, np.int64))
    with pytest.raises(TrainingError, match="need rows"):
        train(empty, prepared.validation, prepared.preprocessor.cardinalities, SMALL)
    with pytest.raises(TrainingError, match="need rows"):
        train(prepared.train, empty, prepared.preprocessor.cardinalities, SMALL)


def test_divergence_is_reported(prepared: Prepared) -> None:
    # a NaN input poisons the weights after the first step: the validation loss is not finite
    bad = dataclasses.replace(prepared.train, numeric=prepared.train.numeric.copy())
    bad.numeric[0, 0] = np.nan
    with pytest.raises(TrainingError, match="diverged at epoch 0"):
        train(bad, prepared.validation, prepared.preprocessor.cardinalities, SMALL.with_params(max_epochs=2))
