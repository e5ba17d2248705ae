"""The training loop: seeded, early-stopped, on CUDA when present, optionally data-parallel (DDP).

No Dagster and no MLflow here: callers observe progress through ``on_epoch`` and get a
:class:`TrainResult` with the best weights, the per-epoch history and the measured throughput.
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml_platform.lib.training.data import Encoded, FloatArray
from ml_platform.lib.training.model import DelayNet

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and run options of one training."""

    embedding_dim: int = 8
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    separate_heads: bool = False
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    max_epochs: int = 20
    patience: int = 3
    #: Weight of the classification loss against the regression loss.
    classification_weight: float = 1.0
    #: Huber's delta on the standardized delay; heavy delay tails dominate a plain squared error.
    huber_delta: float = 1.0
    seed: int = 0
    #: Return the weights of the best validation epoch (early stopping); False returns the last
    #: epoch's, for a refit on the whole window whose epoch count was already chosen.
    restore_best: bool = True
    device: Device = "auto"
    #: Processes of data-parallel training (torch.distributed DDP); 1 trains in this process.
    world_size: int = 1

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments of :class:`DelayNet`."""
        return {
            "embedding_dim": self.embedding_dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
            "separate_heads": self.separate_heads,
        }

    def with_params(self, **params: Any) -> TrainConfig:
        """A copy with ``params`` replaced (HPO suggestions)."""
        return TrainConfig(**{**asdict(self), **params})


@dataclass(frozen=True)
class EpochStats:
    """One epoch's losses (validation losses are what early stopping and HPO judge)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_delay_loss: float
    val_class_loss: float
    seconds: float


@dataclass
class TrainResult:
    """The best weights and how training went."""

    state_dict: dict[str, torch.Tensor]
    history: list[EpochStats]
    best_epoch: int
    best_val_loss: float
    device: str
    world_size: int
    train_samples: int
    #: Training samples processed per second of training (validation passes excluded).
    samples_per_second: float
    mixed_precision: str | None = None
    stopped_early: bool = field(default=False)


class TrainingError(RuntimeError):
    """Training could not produce a model (diverged, no data, a worker process failed)."""


def resolve_device(device: Device) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was requested but torch sees no CUDA device")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and make torch pick deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_model(cardinalities: list[int], n_numeric: int, config: TrainConfig) -> DelayNet:
    """A freshly initialized network for ``config``."""
    return DelayNet(cardinalities, n_numeric, **config.model_kwargs())


def train(
    train_data: Encoded,
    validation: Encoded,
    cardinalities: list[int],
    config: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train on ``train_data``, early-stopping on ``validation``; return the best epoch's weights.

    ``on_epoch`` is called after every epoch (in this process; with ``world_size > 1`` it is
    called afterwards, once per epoch of the history). An exception it raises (for example
    ``optuna.TrialPruned``) stops training and propagates.
    """
    if len(train_data) == 0 or len(validation) == 0:
        raise TrainingError(f"need rows to train on: {len(train_data)} train, {len(validation)} validation")
    if config.world_size > 1:
        result = _train_distributed(train_data, validation, cardinalities, config)
        if on_epoch:
            for stats in result.history:
                on_epoch(stats)
        return result
    return _train_process(train_data, validation, cardinalities, config, on_epoch, rank=0)


def _train_process(
    train_data: Encoded,
    validation: Encoded,
    cardinalities: list[int],
    config: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None,
    rank: int,
) -> TrainResult:
    seed_everything(config.seed)
    world = config.world_size
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    model: nn.Module = build_model(cardinalities, train_data.numeric.shape[1], config).to(device)
    core = model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.index is not None else None
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    amp_dtype = _amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    tensors = _to_tensors(train_data, device)
    val_tensors = _to_tensors(validation, device)
    rng = np.random.default_rng(config.seed)
    n = len(train_data)
    best_loss, best_epoch, best_state, bad_epochs = float("inf"), -1, None, 0
    history: list[EpochStats] = []
    train_seconds, samples = 0.0, 0
    stopped_early = False
    for epoch in range(config.max_epochs):
        model.train()
        started = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n)).to(device)
        total, count = 0.0, 0
        for begin in range(0, n, config.batch_size):
            batch = order[begin : begin + config.batch_size]
            shard = batch[rank::world]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                delay_pred, logit = model(tensors[0][shard], tensors[1][shard])
                per_row = _per_row_loss(delay_pred, logit, tensors[2][shard], tensors[3][shard], config)
            # sum over the shard / global batch size: DDP's gradient average then equals the
            # full batch's mean gradient, whatever the world size (tested against one process)
            loss = per_row.sum() * (world / len(batch))
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
            total += float(per_row.detach().sum())
            count += len(shard)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - started
        samples += count
        val_delay, val_class = _validation_losses(core, val_tensors, config, amp_dtype)
        val_loss = val_delay + config.classification_weight * val_class
        if not np.isfinite(val_loss):
            raise TrainingError(f"training diverged at epoch {epoch}: validation loss {val_loss}")
        stats = EpochStats(
            epoch, total / max(count, 1), val_loss, val_delay, val_class, time.perf_counter() - started
        )
        history.append(stats)
        if on_epoch:
            on_epoch(stats)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in core.state_dict().items()})
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                stopped_early = True
                break
    if not config.restore_best:
        last = history[-1]
        best_loss, best_epoch = last.val_loss, last.epoch
        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in core.state_dict().items()})
    assert best_state is not None  # at least one finite epoch ran
    return TrainResult(
        state_dict=best_state,
        history=history,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        device=str(device),
        world_size=world,
        train_samples=samples,
        samples_per_second=samples * world / train_seconds if train_seconds > 0 else float("nan"),
        mixed_precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
        stopped_early=stopped_early,
    )


def _per_row_loss(
    delay_pred: torch.Tensor,
    logit: torch.Tensor,
    delay: torch.Tensor,
    delayed: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    reg = F.huber_loss(delay_pred.float(), delay, reduction="none", delta=config.huber_delta)
    cls = F.binary_cross_entropy_with_logits(logit.float(), delayed, reduction="none")
    return reg + config.classification_weight * cls


def _validation_losses(
    model: nn.Module, tensors: tuple[torch.Tensor, ...], config: TrainConfig, amp_dtype: torch.dtype | None
) -> tuple[float, float]:
    model.eval()
    reg_sum, cls_sum, n = 0.0, 0.0, int(tensors[0].shape[0])
    with torch.no_grad():
        for begin in range(0, n, 8192):
            sl = slice(begin, begin + 8192)
            with torch.autocast(tensors[0].device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                delay_pred, logit = model(tensors[0][sl], tensors[1][sl])
            reg_sum += float(
                F.huber_loss(delay_pred.float(), tensors[2][sl], reduction="sum", delta=config.huber_delta)
            )
            cls_sum += float(
                F.binary_cross_entropy_with_logits(logit.float(), tensors[3][sl], reduction="sum")
            )
    return reg_sum / n, cls_sum / n


def predict(
    model: nn.Module, data: Encoded, device: torch.device | None = None, batch: int = 8192
) -> tuple[FloatArray, FloatArray]:
    """Return ``(standardized delay, delay probability)`` for every row of ``data``."""
    device = device or torch.device("cpu")
    model.eval().to(device)
    cat = torch.from_numpy(data.categorical)
    num = torch.from_numpy(data.numeric)
    delays, probs = [], []
    with torch.no_grad():
        for begin in range(0, len(data), batch):
            d, logit = model(cat[begin : begin + batch].to(device), num[begin : begin + batch].to(device))
            delays.append(d.float().cpu().numpy())
            probs.append(torch.sigmoid(logit.float()).cpu().numpy())
    if not delays:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(delays).astype(np.float32), np.concatenate(probs).astype(np.float32)


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on GPU only: bfloat16 where supported, else float16 with a grad scaler."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _to_tensors(data: Encoded, device: torch.device) -> tuple[torch.Tensor, ...]:
    if np.isnan(data.delay).any() or np.isnan(data.delayed).any():
        raise TrainingError("training and validation rows need both targets; filter with data.labelled()")
    return tuple(
        torch.from_numpy(a).to(device) for a in (data.categorical, data.numeric, data.delay, data.delayed)
    )


# --- data-parallel training ------------------------------------------------------------------


def _train_distributed(
    train_data: Encoded, validation: Encoded, cardinalities: list[int], config: TrainConfig
) -> TrainResult:
    from torch.multiprocessing.spawn import start_processes

    with tempfile.TemporaryDirectory(prefix="mlp-ddp-") as tmp:
        out = Path(tmp) / "result.pt"
        try:
            start_processes(  # type: ignore[no-untyped-call]
                _ddp_worker,
                args=(
                    config.world_size,
                    str(Path(tmp) / "rendezvous"),
                    str(out),
                    train_data,
                    validation,
                    cardinalities,
                    config,
                ),
                nprocs=config.world_size,
                start_method="spawn",
            )
        except Exception as exc:  # ProcessRaisedException carries the worker's traceback
            raise TrainingError(
                f"data-parallel training with {config.world_size} processes failed: {exc}"
            ) from exc
        payload: dict[str, Any] = torch.load(out, weights_only=False)
    return TrainResult(**payload)


def _ddp_worker(
    rank: int,
    world: int,
    rendezvous: str,
    out: str,
    train_data: Encoded,
    validation: Encoded,
    cardinalities: list[int],
    config: TrainConfig,
) -> None:
    import torch.distributed as dist

    device = resolve_device(config.device)
    if device.type == "cpu":
        # share the cores: N workers with the default thread count each oversubscribe the CPU
        # (measured 6x slower with 2 workers x 2 threads on 2 cores, docs/benchmarks.md)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world,
    )
    try:
        result = _train_process(train_data, validation, cardinalities, config, None, rank=rank)
        if rank == 0:
            torch.save(result.__dict__, out)
    finally:
        dist.destroy_process_group()
