"""Data-parallel training (DDP over gloo, 2 spawned CPU processes) matches one process.

Each rank computes the loss of its shard of every batch scaled by world / batch size, and DDP
averages the gradients, so one optimizer step sees the full batch's mean gradient whatever the
world size. With dropout off (each rank would draw its own masks) the two trainings are the
same computation up to float summation order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from ml_platform.lib.training.loop import EpochStats, TrainingError, TrainResult, train
from ml_platform_tests.lib.training.conftest import SMALL, Prepared

pytestmark = pytest.mark.slow

CONFIG = SMALL.with_params(dropout=0.0, max_epochs=4, batch_size=128, device="cpu")
#: Measured: weights differ by at most ~1.2e-7 and validation losses by ~1e-7 (relative) after
#: 4 epochs. The gradients are summed in a different order (per shard, then all-reduced, instead
#: of over the whole batch at once), so float32 rounding differs; 100x headroom over that.
WEIGHTS_ATOL = 1e-5
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_worker() -> Iterator[None]:
    """Two workers on two cores: one intra-op thread each (spawned processes read the variable)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def single(small_prepared: Prepared) -> TrainResult:
    p = small_prepared
    return train(p.train, p.validation, p.preprocessor.cardinalities, CONFIG)


def test_two_processes_match_one(small_prepared: Prepared, single: TrainResult) -> None:
    p = small_prepared
    seen: list[EpochStats] = []
    ddp = train(
        p.train, p.validation, p.preprocessor.cardinalities, CONFIG.with_params(world_size=2), seen.append
    )
    assert ddp.world_size == 2 and ddp.device == "cpu"
    # on_epoch is replayed in the caller's process once the workers are done
    assert seen == ddp.history
    assert len(ddp.history) == len(single.history) == CONFIG.max_epochs
    assert ddp.best_epoch == single.best_epoch
    assert ddp.best_val_loss == pytest.approx(single.best_val_loss, rel=LOSS_RTOL)
    np.testing.assert_allclose(
        [s.val_loss for s in ddp.history], [s.val_loss for s in single.history], rtol=LOSS_RTOL
    )
    # (train_loss is not compared: each rank averages only its own shard, and rank 0 reports)
    assert ddp.state_dict.keys() == single.state_dict.keys()
    for name, tensor in single.state_dict.items():
        torch.testing.assert_close(ddp.state_dict[name], tensor, atol=WEIGHTS_ATOL, rtol=0, msg=name)
    # it did learn, it is not two untrained copies that happen to agree
    assert ddp.best_val_loss < ddp.history[0].val_loss
    assert ddp.samples_per_second > 0


def test_a_failing_worker_raises_training_error(small_prepared: Prepared) -> None:
    p = small_prepared
    bad = dataclasses.replace(p.train, delay=np.full_like(p.train.delay, np.nan))
    with pytest.raises(TrainingError, match="data-parallel training with 2 processes failed") as info:
        train(bad, p.validation, p.preprocessor.cardinalities, CONFIG.with_params(world_size=2))
    assert "both targets" in str(info.value)  # the worker's own error travels with it
